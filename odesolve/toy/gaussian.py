"""A single Gaussian: the probability-flow ODE and the reverse SDE are linear and solved in closed form.

With ``Sigma = Q diag(ev) Q^T`` and ``c_i(t) = alpha_t^2 ev_i + sigma_t^2`` (the eigenvalues of
``C_t = alpha_t^2 Sigma + sigma_t^2 I``), along each eigen-direction ``y = q_i^T (x - alpha_t mu)``:

- PF-ODE (Wang & Vastola, arXiv 2303.02490; docs/theory.md section 7.2):
  ``y_t = sqrt(c_t / c_s) y_s``, i.e. ``x_t = alpha_t mu + C_t^{1/2} C_s^{-1/2} (x_s - alpha_s mu)``.
- Reverse SDE ``dx = [f x - g^2 grad log p_t] dt + g dW`` run from ``s`` to a less noisy ``t``: with
  the exact score it is the time reversal of the forward process (Anderson 1982; Song et al. 2021),
  so its transition is the forward posterior ``p(x_t | x_s)``. ``(y_t, y_s)`` are jointly Gaussian
  with ``Var y_t = c_t``, ``Var y_s = c_s``, ``Cov = (alpha_s / alpha_t) c_t``, hence

      y_t | y_s ~ N( (alpha_s c_t) / (alpha_t c_s) * y_s,  c_t sigma_s^2 (1 - e^{2 (lambda_s - lambda_t)}) / c_s ),

  using ``c_s - (alpha_s / alpha_t)^2 c_t = sigma_s^2 - (alpha_s sigma_t / alpha_t)^2``.

All ratios are formed from ``log c = logaddexp(2 log alpha + log ev, 2 log sigma)``, so the limits
``sigma_t = 0`` (end at the data) and ``alpha_s = 0`` (start at zero SNR) are exact, not NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from ..paths import Path
from ._spectral import ArrayLike, as_float64
from .gmm import GaussianMixture

__all__ = ["Gaussian", "ReverseSDEMarginal"]


class ReverseSDEMarginal(NamedTuple):
    """Law ``N(mean, cov)`` of the reverse-SDE solution; ``cov`` is (dim, dim) for scalar times,
    (batch, dim, dim) for per-sample times."""

    mean: Tensor
    cov: Tensor


class Gaussian(GaussianMixture):
    """``N(mean, cov)``: a [`GaussianMixture`][odesolve.toy.gmm.GaussianMixture] with one component, plus closed-form
    flows.

    Args:
        mean: (dim,).
        cov: (dim, dim) symmetric positive definite.
    """

    def __init__(self, mean: ArrayLike, cov: ArrayLike):
        mu = as_float64(mean, "mean")
        if mu.ndim != 1 or mu.numel() < 1:
            raise ValueError(f"mean must be a 1-D vector (dim,), got shape {tuple(mu.shape)}")
        C = as_float64(cov, "cov")
        d = mu.numel()
        if C.shape != (d, d):
            raise ValueError(f"cov must have shape (dim, dim) = ({d}, {d}), got {tuple(C.shape)}")
        self._build(torch.ones(1, dtype=torch.float64), mu[None], C[None], ("weights", "mean", "cov"))

    @property
    def cov(self) -> Float[Tensor, "dim dim"]:
        return self.covs[0]

    def _log_c(self, x: Tensor, t, path: Path, name: str) -> tuple[Tensor, Tensor, Tensor]:
        """``(log alpha, log sigma, log c_i)`` with shapes (B,), (B,), (B, dim)."""
        la, ls = self._log_coefficients(x, t, path, name)
        log_ev = torch.log(self._params(x.device).ev[0])
        return la, ls, torch.logaddexp(2 * la[:, None] + log_ev, 2 * ls[:, None])

    def _in_basis(self, x: Tensor, la_s: Tensor, la_t: Tensor, gain: Tensor) -> Tensor:
        """``alpha_t mu + Q diag(gain) Q^T (x - alpha_s mu)``."""
        p = self._params(x.device)
        Q, mu = p.V[0], p.mu[0]
        r = x - torch.exp(la_s)[:, None] * mu
        return torch.exp(la_t)[:, None] * mu + ((r @ Q) * gain) @ Q.T

    def flow(self, x: Float[Tensor, "batch dim"], t_from, t_to, path: Path) -> Float[Tensor, "batch dim"]:
        """Exact PF-ODE solution from ``t_from`` to ``t_to`` (either direction, scalar or per sample):
        ``x_t = alpha_t mu + C_t^{1/2} C_s^{-1/2} (x_s - alpha_s mu)``."""
        x = self._check_x(x)
        la_s, _, lc_s = self._log_c(x, t_from, path, "t_from")
        la_t, _, lc_t = self._log_c(x, t_to, path, "t_to")
        return self._in_basis(x, la_s, la_t, torch.exp(0.5 * (lc_t - lc_s)))

    def reverse_sde_marginal(self, x: Float[Tensor, "batch dim"], t_from, t_to, path: Path) -> ReverseSDEMarginal:
        """Law of the exact-score reverse-SDE solution at ``t_to`` started from ``x`` at ``t_from``
        (``t_to`` no noisier than ``t_from``): per eigen-direction mean factor
        ``alpha_s c_t / (alpha_t c_s)`` and variance ``c_t sigma_s^2 (1 - e^{2(lambda_s - lambda_t)}) / c_s``."""
        x = self._check_x(x)
        la_s, ls_s, lc_s = self._log_c(x, t_from, path, "t_from")
        la_t, ls_t, lc_t = self._log_c(x, t_to, path, "t_to")
        lam_s, lam_t = la_s - ls_s, la_t - ls_t
        dl = torch.where(lam_s == lam_t, torch.zeros_like(lam_s), lam_s - lam_t)
        if bool((dl > 0).any()):
            raise ValueError("t_to must be no noisier than t_from (lambda(t_to) >= lambda(t_from)) for the reverse SDE")
        mean = self._in_basis(x, la_s, la_t, torch.exp((la_s - la_t)[:, None] + lc_t - lc_s))
        var = torch.exp(lc_t + 2 * ls_s[:, None] - lc_s) * (-torch.expm1(2 * dl))[:, None]
        Q = self._params(x.device).V[0]
        cov = torch.einsum("dr,br,er->bde", Q, var, Q)
        scalar = torch.as_tensor(t_from).ndim == 0 and torch.as_tensor(t_to).ndim == 0
        return ReverseSDEMarginal(mean, cov[0] if scalar and x.shape[0] > 0 else cov)
