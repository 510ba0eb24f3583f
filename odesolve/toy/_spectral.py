"""Gaussian mixtures in spectral form: the common core of the exact toy distributions.

Component ``k`` is ``N(mu_k, Sigma_k)`` with

    Sigma_k = V_k diag(ev_k) V_k^T + f_k (I - V_k V_k^T),

where ``V_k`` is ``d x r`` with orthonormal columns, ``ev_k > 0`` its ``r`` eigenvalues and
``f_k > 0`` the eigenvalue of the ``d - r`` dimensional complement. A dense covariance is the case
``r = d`` (eigendecomposition, no complement); ``U U^T + s^2 I`` is ``V = left singular vectors of
U``, ``ev = S^2 + s^2``, ``f = s^2``. The decomposition is computed once, when the mixture is built.

Under a Gaussian path ``x_t = alpha x0 + sigma eps`` the marginal is again a mixture (docs/theory.md
section 7.1) with ``C_k = alpha^2 Sigma_k + sigma^2 I``, diagonal in the same basis:

    p_t(x)  = sum_k pi_k N(x; alpha mu_k, C_k)
    x0_hat  = sum_k w_k [mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k)]
    eps_hat = sum_k w_k sigma C_k^{-1} (x - alpha mu_k)          (= -sigma grad log p_t)

with responsibilities ``w_k`` by log-sum-exp. Every prediction type is ``c_x0 * x0_hat + c_eps *
eps_hat``, i.e. per component ``c_x0 mu_k + V_k diag(h) V_k^T r_k + h_perp (I - V_k V_k^T) r_k``
with one gain ``h`` per eigenvalue, so one routine evaluates them all in ``O(B K d r)``.

Numerics: everything is evaluated in the scaled coordinates ``x' = x / s``, ``a = alpha / s``,
``g = sigma / s`` with ``s = hypot(alpha, sigma)`` (computed from ``log alpha`` and ``log sigma``),
so that ``a^2 + g^2 = 1`` and ``a^2 ev + g^2 >= min(ev, 1)``: no overflow for huge ``sigma``, no
division by zero at ``sigma = 0`` (``eps_hat = 0``, ``x0_hat = x / alpha``) nor at ``alpha = 0``
(``x0_hat`` = the mixture mean, ``eps_hat = x / sigma``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..models import Model, Prediction, _check_prediction
from ..paths import Path, as_time

__all__ = ["ArrayLike", "SpectralMixture"]

#: what constructors accept: a tensor, a numpy array or nested sequences of numbers (or of tensors);
#: shapes and values are checked by the constructor, with errors naming the argument
ArrayLike = Tensor | np.ndarray | Sequence | float

_LOG_2PI = math.log(2 * math.pi)


def as_float64(value, name: str, device=None) -> Tensor:
    """``value`` as a float64 tensor; refuse non-numbers and non-finite entries, naming ``name``."""
    try:
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Tensor) for v in value):
            out = torch.stack([v.to(torch.float64) for v in value])  # a list of tensors
        else:
            out = torch.as_tensor(value, dtype=torch.float64)
        out = out.to(torch.float64) if device is None else out.to(device, torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}") from err
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got non-finite entries")
    return out


def check_weights(weights, name: str = "weights") -> Tensor:
    """Probability vector of shape (K,): non-negative, summing to 1 (to 1e-6; renormalized)."""
    w = as_float64(weights, name)
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector (K,), got shape {tuple(w.shape)}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative, got min {w.min().item():.3g}")
    total = w.sum().item()
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got sum {total:.10g}")
    return w / w.sum()


def softmax(logits: Tensor) -> Tensor:
    """Softmax over the last dimension as ``exp(l - logsumexp(l))`` (torch's float64 softmax is
    slow on small CPU tensors)."""
    return torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))


class _Params(NamedTuple):
    """The mixture's tensors on one device."""

    log_w: Tensor  # (K,)
    mu: Tensor  # (K, d)
    V: Tensor  # (K, d, r)
    ev: Tensor  # (K, r)
    floor: Tensor  # (K,)
    muV: Tensor  # (K, r)  V_k^T mu_k
    V_flat: Tensor  # (d, K r)


class _State(NamedTuple):
    """Per-sample quantities at one (x, t): scaled coordinates, projections, responsibilities."""

    a: Tensor  # (B, 1, 1) alpha / s
    g: Tensor  # (B, 1, 1) sigma / s
    log_s: Tensor  # (B,)
    z: Tensor  # (B, K, r) V_k^T (x' - a mu_k)
    c: Tensor  # (B, K, r) a^2 ev + g^2
    rp: Tensor | None  # (B, K, d) (I - V_k V_k^T)(x' - a mu_k), if r < d
    cp: Tensor | None  # (B, K) a^2 f + g^2
    logits: Tensor  # (B, K) log pi_k + log N(x; alpha mu_k, C_k)


class SpectralMixture:
    """A Gaussian mixture stored in the spectral form above. Build it with
    [`GaussianMixture`][odesolve.toy.gmm.GaussianMixture], [`LowRankMixture`][odesolve.toy.lowrank.LowRankMixture] or
    [`Gaussian`][odesolve.toy.gaussian.Gaussian]; all methods live here."""

    def _init_spectral(self, weights: Tensor, means: Tensor, basis: Tensor, eigvals: Tensor, floor: Tensor):
        self._weights = weights
        self._means = means
        self._V = basis
        self._ev = eigvals
        self._floor = floor
        self._cache: dict = {}

    @classmethod
    def _from_spectral(cls, weights, means, basis, eigvals, floor):
        new = cls.__new__(cls)
        new._init_spectral(weights, means, basis, eigvals, floor)
        return new

    # -- shape and parameters --------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._means.shape[1]

    @property
    def n_components(self) -> int:
        return self._means.shape[0]

    @property
    def rank(self) -> int:
        """Number of eigen-directions stored per component (``dim`` for a dense covariance)."""
        return self._V.shape[2]

    @property
    def device(self) -> torch.device:
        return self._means.device

    @property
    def weights(self) -> Float[Tensor, " K"]:
        return self._weights

    @property
    def means(self) -> Float[Tensor, "K dim"]:
        return self._means

    @property
    def mean(self) -> Float[Tensor, " dim"]:
        """Mean of the mixture, ``sum_k pi_k mu_k``."""
        return self._weights @ self._means

    @property
    def covs(self) -> Float[Tensor, "K dim dim"]:
        """Dense component covariances ``V diag(ev) V^T + f (I - V V^T)`` (built on demand)."""
        V, ev, f = self._V, self._ev, self._floor
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.device)
        return torch.einsum("kdr,kr,ker->kde", V, ev - f[:, None], V) + f[:, None, None] * eye

    @property
    def eigenvalues(self) -> Float[Tensor, "K r"]:
        return self._ev

    @property
    def eigenvectors(self) -> Float[Tensor, "K dim r"]:
        return self._V

    def to(self, device) -> SpectralMixture:
        """The same mixture with its tensors on ``device``."""
        return self._from_spectral(
            *(v.to(device) for v in (self._weights, self._means, self._V, self._ev, self._floor))
        )

    def _params(self, device) -> _Params:
        key = torch.device(device)
        if key not in self._cache:
            w, mu, V, ev, f = (v.to(key) for v in (self._weights, self._means, self._V, self._ev, self._floor))
            K, d, r = V.shape
            self._cache[key] = _Params(
                torch.log(w), mu, V, ev, f, torch.einsum("kd,kdr->kr", mu, V), V.permute(1, 0, 2).reshape(d, K * r)
            )
        return self._cache[key]

    def marginal(self, t, path: Path) -> SpectralMixture:
        """The law ``p_t`` of ``alpha x0 + sigma eps`` at one time ``t``, as a mixture of the same kind:
        means ``alpha mu_k``, eigenvalues ``alpha^2 ev + sigma^2``."""
        t = path.check_times(t, "t")
        if t.ndim != 0:
            raise ValueError(f"t must be a scalar time, got shape {tuple(t.shape)}")
        a, s = path.alpha(t).item(), path.sigma(t).item()
        if not (math.isfinite(a) and math.isfinite(s)):
            raise ValueError(f"t must give finite alpha and sigma, got alpha={a}, sigma={s}")
        return self._from_spectral(
            self._weights, a * self._means, self._V, a * a * self._ev + s * s, a * a * self._floor + s * s
        )

    # -- inputs ------------------------------------------------------------------------------------
    def _check_x(self, x, name: str = "x") -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor of shape (batch, {self.dim}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (batch, dim) = (batch, {self.dim}), got {tuple(x.shape)}")
        return x.to(torch.float64)

    def _log_coefficients(self, x: Tensor, t, path: Path | None, name: str = "t") -> tuple[Tensor, Tensor]:
        """``(log alpha, log sigma)`` of shape (batch,); ``t = path = None`` is the data (alpha=1, sigma=0)."""
        B = x.shape[0]
        if t is None and path is None:
            zero = torch.zeros(B, dtype=torch.float64, device=x.device)
            return zero, torch.full_like(zero, -math.inf)
        if t is None or path is None:
            raise ValueError(f"give both {name} and path (or neither, for the data distribution)")
        if not isinstance(path, Path):
            raise TypeError(f"path must be an odesolve.paths.Path, got {type(path).__name__}")
        t = path.check_times(as_time(t, name).to(x.device), name)
        if t.ndim == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"{name} must be a scalar or have shape (batch,) = ({B},), got {tuple(t.shape)}")
        la, ls = path.log_alpha(t), path.log_sigma(t)
        if bool(((la == math.inf) | (ls == math.inf)).any()):
            raise ValueError(f"{name} must give finite alpha and sigma (got an infinite noise level)")
        return la, ls

    # -- the core ------------------------------------------------------------------------------------
    def _state(self, x: Tensor, la: Tensor, ls: Tensor) -> _State:
        p = self._params(x.device)
        K, d, r = p.V.shape
        B = x.shape[0]
        log_s = 0.5 * torch.logaddexp(2 * la, 2 * ls)
        a = torch.exp(la - log_s).view(B, 1, 1)
        g = torch.exp(ls - log_s).view(B, 1, 1)
        xs = x * torch.exp(-log_s)[:, None]
        z = (xs @ p.V_flat).view(B, K, r) - a * p.muV
        c = a * a * p.ev + g * g
        quad = (z * z / c).sum(-1)
        logdet = torch.log(c).sum(-1)
        rp = cp = None
        if r < d:
            rp = xs[:, None, :] - a * p.mu - torch.einsum("bkr,kdr->bkd", z, p.V)
            cp = (a * a)[:, :, 0] * p.floor + (g * g)[:, :, 0]
            quad = quad + (rp * rp).sum(-1) / cp
            logdet = logdet + (d - r) * torch.log(cp)
        log_n = -0.5 * (quad + logdet + d * _LOG_2PI) - d * log_s[:, None]
        return _State(a, g, log_s, z, c, rp, cp, p.log_w + log_n)

    def _combine(self, x: Tensor, st: _State, c_x0: Tensor, c_e: Tensor) -> Tensor:
        """``sum_k w_k [c_x0 mu_k + V_k diag(h) z_k + h_perp rp_k]``, ``h = (c_x0 a ev + c_e) / c``."""
        p = self._params(x.device)
        K, _, r = p.V.shape
        B = x.shape[0]
        w = softmax(st.logits)
        cx, ce = c_x0.view(B, 1, 1), c_e.view(B, 1, 1)
        h = (cx * st.a * p.ev + ce) / st.c
        out = ((w[:, :, None] * h * st.z).reshape(B, K * r) @ p.V_flat.T) + c_x0[:, None] * (w @ p.mu)
        if st.rp is not None:
            hp = (cx[:, :, 0] * st.a[:, :, 0] * p.floor + ce[:, :, 0]) / st.cp
            out = out + torch.einsum("bk,bkd->bd", w * hp, st.rp)
        return out

    # -- densities -------------------------------------------------------------------------------------
    def log_prob(self, x: Float[Tensor, "batch dim"], t=None, path: Path | None = None) -> Float[Tensor, " batch"]:
        """``log p_t(x)``; without ``t`` and ``path``, the log density of the data."""
        x = self._check_x(x)
        la, ls = self._log_coefficients(x, t, path)
        return torch.logsumexp(self._state(x, la, ls).logits, dim=1)

    def responsibilities(
        self, x: Float[Tensor, "batch dim"], t=None, path: Path | None = None
    ) -> Float[Tensor, "batch K"]:
        """Posterior component probabilities ``w_k(x)`` under ``p_t`` (or the data)."""
        x = self._check_x(x)
        la, ls = self._log_coefficients(x, t, path)
        return softmax(self._state(x, la, ls).logits)

    def assign(self, x: Float[Tensor, "batch dim"], t=None, path: Path | None = None) -> Int[Tensor, " batch"]:
        """Index of the most responsible component for each sample."""
        return self.responsibilities(x, t, path).argmax(dim=1)

    # -- predictions -----------------------------------------------------------------------------------
    def predict(
        self, x: Float[Tensor, "batch dim"], t, path: Path, target: Prediction = "x0"
    ) -> Float[Tensor, "batch dim"]:
        """The exact prediction ``target`` (eps, x0, v, velocity, score) of ``p_t`` at ``(x, t)``, float64."""
        _check_prediction(target, "target")
        x = self._check_x(x)
        if path is None:
            raise ValueError("path must be given for a prediction")
        la, ls = self._log_coefficients(x, t, path)
        st = self._state(x, la, ls)
        g = st.g.view(-1)
        zero, one = torch.zeros_like(g), torch.ones_like(g)
        if target == "x0":
            c_x0, c_e = one, zero
        elif target == "eps":
            c_x0, c_e = zero, g
        elif target == "score":  # -eps / sigma = -C^{-1}(x - alpha mu), scaled: -1/(s c')
            c_x0, c_e = zero, -torch.exp(-st.log_s)
        elif target == "v":  # alpha eps - sigma x0
            c_x0, c_e = -torch.exp(ls), torch.exp(la) * g
        else:  # velocity alpha' x0 + sigma' eps
            t = as_time(t).to(x.device).expand(x.shape[0])
            da, ds = path.derivatives(t)
            c_x0, c_e = da.to(x.device), ds.to(x.device) * g
        return self._combine(x, st, c_x0, c_e)

    def denoiser(self, x: Float[Tensor, "batch dim"], t, path: Path) -> Float[Tensor, "batch dim"]:
        """``E[x0 | x_t = x]`` (the x0 prediction)."""
        return self.predict(x, t, path, "x0")

    def eps(self, x: Float[Tensor, "batch dim"], t, path: Path) -> Float[Tensor, "batch dim"]:
        """``E[eps | x_t = x] = -sigma grad log p_t(x)``."""
        return self.predict(x, t, path, "eps")

    def score(self, x: Float[Tensor, "batch dim"], t, path: Path) -> Float[Tensor, "batch dim"]:
        """``grad_x log p_t(x) = sum_k w_k C_k^{-1} (alpha mu_k - x)``."""
        return self.predict(x, t, path, "score")

    def v(self, x: Float[Tensor, "batch dim"], t, path: Path) -> Float[Tensor, "batch dim"]:
        """``alpha eps - sigma x0`` (Salimans & Ho 2022)."""
        return self.predict(x, t, path, "v")

    def velocity(self, x: Float[Tensor, "batch dim"], t, path: Path) -> Float[Tensor, "batch dim"]:
        """The probability-flow velocity ``dx/dt = alpha' x0 + sigma' eps`` (uses ``path.derivatives``)."""
        return self.predict(x, t, path, "velocity")

    def model(self, path: Path, prediction: Prediction = "x0") -> Model:
        """The exact network of this distribution under ``path``: an [`odesolve.models.Model`][odesolve.models.Model].
        It computes in float64 and returns the dtype of its input."""
        _check_prediction(prediction)

        def fn(x: Tensor, t: Tensor) -> Tensor:
            return self.predict(x, t, path, prediction).to(x.dtype)

        fn.__name__ = f"{type(self).__name__}.{prediction}"
        return Model(fn, path, prediction)

    # -- sampling ----------------------------------------------------------------------------------------
    def sample(
        self, n: int, generator: torch.Generator | None = None, *, return_components: bool = False
    ) -> Float[Tensor, "n dim"] | tuple[Tensor, Tensor]:
        """``n`` exact samples of the data (and their component indices if ``return_components``).

        ``x = mu_k + sqrt(f_k) e + V_k diag(sqrt(ev_k) - sqrt(f_k)) V_k^T e`` with ``e ~ N(0, I_d)``.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        p = self._params(self.device)
        dev, d = self.device, self.dim
        k = (
            torch.multinomial(self._weights, n, replacement=True, generator=generator)
            if n
            else torch.zeros(0, dtype=torch.long, device=dev)
        )
        e = torch.randn(n, d, dtype=torch.float64, device=dev, generator=generator)
        x = torch.empty_like(e)
        sf = torch.sqrt(p.floor)
        for j in range(self.n_components):  # a loop over components, not samples
            idx = torch.nonzero(k == j).flatten()
            ej = e[idx]
            x[idx] = p.mu[j] + sf[j] * ej + ((ej @ p.V[j]) * (torch.sqrt(p.ev[j]) - sf[j])) @ p.V[j].T
        return (x, k) if return_components else x

    def sample_marginal(
        self, n: int, t, path: Path, generator: torch.Generator | None = None
    ) -> Float[Tensor, "n dim"]:
        """``n`` exact samples of ``p_t``: ``alpha x0 + sigma eps`` with ``x0`` from
        [`sample`][odesolve.toy._spectral.SpectralMixture.sample]."""
        x0 = self.sample(n, generator)
        la, ls = self._log_coefficients(x0, t, path)
        e = torch.randn(x0.shape, dtype=torch.float64, device=x0.device, generator=generator)
        return torch.exp(la)[:, None] * x0 + torch.exp(ls)[:, None] * e

    def sample_prior(
        self,
        n: int,
        path: Path,
        t=None,
        generator: torch.Generator | None = None,
        kind: Literal["exact", "gaussian"] = "exact",
    ) -> Float[Tensor, "n dim"]:
        """Starting points at time ``t`` (default ``path.t_max``): ``kind="exact"`` samples ``p_t``;
        ``"gaussian"`` samples the usual approximate prior ``N(0, sigma_t^2 I)``, which ignores the
        data (its mismatch is ``KL ~ (alpha^2 / sigma^2) (|mean|^2 + tr Cov) / 2``)."""
        if t is None:
            if not math.isfinite(path.t_max):
                raise ValueError(f"t must be given: the path {path!r} has t_max = inf")
            t = path.t_max
        if kind == "exact":
            return self.sample_marginal(n, t, path, generator)
        if kind != "gaussian":
            raise ValueError(f"kind must be 'exact' or 'gaussian', got {kind!r}")
        e = torch.randn(n, self.dim, dtype=torch.float64, device=self.device, generator=generator)
        _, ls = self._log_coefficients(e, t, path)
        return torch.exp(ls)[:, None] * e

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, n_components={self.n_components}, rank={self.rank})"
