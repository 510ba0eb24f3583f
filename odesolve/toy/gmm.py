"""Gaussian mixtures with full covariances: exact marginals, scores and denoisers under any path.

``p_0 = sum_k pi_k N(mu_k, Sigma_k)`` and ``x_t = alpha x0 + sigma eps`` give
``p_t = sum_k pi_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)`` (docs/theory.md section 7.1; e.g.
Karras et al. 2022, appendix; Wang & Vastola, arXiv 2303.02490). The eigendecomposition
``Sigma_k = Q_k diag(ev_k) Q_k^T`` is computed once; ``C_k`` is diagonal in the same basis, so a
prediction costs two matrix products, ``O(B K d^2)``, and no factorization per time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._spectral import ArrayLike, SpectralMixture, as_float64, check_weights

__all__ = ["GaussianMixture"]


def _check_means(means, K: int, name: str) -> Tensor:
    mu = as_float64(means, name)
    if mu.ndim != 2 or mu.shape[0] != K or mu.shape[1] < 1:
        raise ValueError(f"{name} must have shape (K, dim) with K = {K} (the number of weights), got {tuple(mu.shape)}")
    return mu


def _eigh_spd(covs: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of symmetric positive definite matrices; refuse others, naming ``name``."""
    scale = covs.abs().amax(dim=(-2, -1)).clamp(min=torch.finfo(torch.float64).tiny)
    asym = (covs - covs.transpose(-2, -1)).abs().amax(dim=(-2, -1)) / scale
    if bool((asym > 1e-10).any()):
        raise ValueError(
            f"{name} must be symmetric positive definite: got asymmetry |C - C^T| / |C| = "
            f"{asym.max().item():.3g} (expected <= 1e-10)"
        )
    ev, Q = torch.linalg.eigh(0.5 * (covs + covs.transpose(-2, -1)))
    if bool((ev[..., 0] <= 0).any()):
        raise ValueError(
            f"{name} must be symmetric positive definite: got smallest eigenvalue "
            f"{ev[..., 0].min().item():.3g} (expected > 0)"
        )
    return ev, Q


class GaussianMixture(SpectralMixture):
    """``sum_k weights[k] N(means[k], covs[k])`` in ``dim`` dimensions (float64, any device).

    Args:
        weights: (K,) non-negative, summing to 1.
        means: (K, dim).
        covs: (K, dim, dim) symmetric positive definite.
    """

    def __init__(self, weights: ArrayLike, means: ArrayLike, covs: ArrayLike):
        self._build(weights, means, covs, ("weights", "means", "covs"))

    def _build(self, weights, means, covs, names: tuple[str, str, str]):
        w = check_weights(weights, names[0])
        mu = _check_means(means, w.numel(), names[1])
        K, d = mu.shape
        C = as_float64(covs, names[2])
        if C.shape != (K, d, d):
            raise ValueError(f"{names[2]} must have shape (K, dim, dim) = ({K}, {d}, {d}), got {tuple(C.shape)}")
        ev, Q = _eigh_spd(C, names[2])
        self._init_spectral(w, mu, Q, ev, torch.zeros(K, dtype=torch.float64))
