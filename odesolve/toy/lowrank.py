"""Mixtures of low-rank Gaussians: ``Sigma_k = U_k U_k^T + s_k^2 I`` with ``U_k`` of shape (d, r).

The mixture of low-rank Gaussians (MoLRG) of Wang et al., "Diffusion Models Learn Low-Dimensional
Distributions via Subspace Clustering", arXiv 2409.02426 (docs/theory.md section 7.3), with a noise
floor ``s_k > 0`` that keeps the covariances positive definite. With the thin SVD
``U_k = P_k S_k W_k^T`` (computed once), ``Sigma_k = P_k diag(S_k^2 + s_k^2) P_k^T + s_k^2 (I - P_k
P_k^T)``, and ``C_k = alpha^2 Sigma_k + sigma^2 I`` has eigenvalue ``alpha^2 s_k^2 + sigma^2`` on
the complement: the Woodbury form ``C_k^{-1} = (I - P_k diag(1 - c_perp / c) P_k^T) / c_perp`` and
``log det C_k = sum log c + (d - r) log c_perp`` make every evaluation ``O(B K d r)``.
"""

from __future__ import annotations

import torch

from ._spectral import ArrayLike, SpectralMixture, as_float64, check_weights
from .gmm import GaussianMixture

__all__ = ["LowRankMixture"]


class LowRankMixture(SpectralMixture):
    """``sum_k weights[k] N(means[k], factors[k] factors[k]^T + noise[k]^2 I)``.

    Args:
        weights: (K,) non-negative, summing to 1.
        means: (K, dim), or None for zero means (as in MoLRG).
        factors: (K, dim, r) with r <= dim; orthonormal columns or any matrix.
        noise: the floor standard deviation ``s > 0``, a number or (K,).
    """

    def __init__(self, weights: ArrayLike, means: ArrayLike | None, factors: ArrayLike, noise: ArrayLike):
        w = check_weights(weights)
        K = w.numel()
        U = as_float64(factors, "factors")
        if U.ndim != 3 or U.shape[0] != K or U.shape[2] > U.shape[1] or U.shape[2] < 1:
            raise ValueError(
                f"factors must have shape (K, dim, r) with K = {K} (the number of weights) and "
                f"1 <= r <= dim, got {tuple(U.shape)}"
            )
        d = U.shape[1]
        mu = torch.zeros(K, d, dtype=torch.float64) if means is None else as_float64(means, "means")
        if mu.shape != (K, d):
            raise ValueError(f"means must have shape (K, dim) = ({K}, {d}), got {tuple(mu.shape)}")
        s = as_float64(noise, "noise")
        if s.ndim > 1 or (s.ndim == 1 and s.numel() != K):
            raise ValueError(f"noise must be a number or have shape (K,) = ({K},), got {tuple(s.shape)}")
        if bool((s <= 0).any()):
            raise ValueError(f"noise must be > 0 (the covariances must be positive definite), got {s.min().item():.3g}")
        s2 = (s * s).expand(K).clone()
        P, S, _ = torch.linalg.svd(U, full_matrices=False)
        self._init_spectral(w, mu, P, S * S + s2[:, None], s2)

    def dense(self) -> GaussianMixture:
        """The same distribution as a [`GaussianMixture`][odesolve.toy.gmm.GaussianMixture] with dense covariances (for
        testing)."""
        return GaussianMixture(self.weights, self.means, self.covs)
