"""Error metrics for samplers on exact problems (THEORY.md section 5.5).

Pass the distribution the samples should follow: the data mixture, or ``mixture.marginal(t, path)``
for ``p`` at the last time of the grid (``p_{sigma_min} = p_0 * N(0, sigma_min^2)``), which is the
right target for a sampler that stops at ``sigma_min > 0``.

- :func:`endpoint_error`: RMSE ``sqrt(mean_i |x_i - x*_i|^2 / d)`` of samples against reference end
  points from the same starting points, the median of the per-sample RMS error, and the rate at which
  a sample lands in the same mode (most responsible component) as its reference;
- :func:`nll`: exact mean negative log-likelihood ``-mean_i log p(x_i)`` (cross-entropy);
- :func:`sliced_w2`: sliced Wasserstein-2 distance between two sample sets (Rabin et al. 2011;
  Bonneel et al. 2015) over a fixed number of random directions;
- :func:`mode_coverage`: the histogram of most-responsible components and its total-variation
  distance ``(1/2) sum_k |hat pi_k - pi_k|`` from the weights.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from ._spectral import SpectralMixture

__all__ = ["EndpointError", "ModeCoverage", "endpoint_error", "mode_coverage", "nll", "sliced_w2"]


class EndpointError(NamedTuple):
    rmse: float  # sqrt(mean_i |x_i - x*_i|^2 / d)
    median: float  # median_i |x_i - x*_i| / sqrt(d) (the mean of the two middle values for even n)
    same_mode: float | None  # fraction of samples in the mode of their reference (None without a mixture)


class ModeCoverage(NamedTuple):
    histogram: Tensor  # (K,) fraction of samples assigned to each component
    tv: float  # (1/2) sum_k |histogram_k - weights_k|


def _flat(x, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError(f"{name} must be a tensor of shape (n, ...) with at least 2 dimensions, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def endpoint_error(x: Float[Tensor, " n *shape"], reference: Float[Tensor, " m *other"],
                   mixture: SpectralMixture | None = None) -> EndpointError:
    """Errors of samples ``x`` against reference end points from the same starting points."""
    a, b = _flat(x, "x"), _flat(reference, "reference")
    if a.shape != b.shape:
        raise ValueError(f"reference must have the shape of x {tuple(x.shape)}, got {tuple(reference.shape)}")
    per = ((a - b) ** 2).mean(dim=1)
    same = None
    if mixture is not None:
        same = (mixture.assign(a) == mixture.assign(b.to(a.device))).double().mean().item()
    return EndpointError(per.mean().sqrt().item(), per.sqrt().quantile(0.5).item(), same)


def nll(x: Float[Tensor, "n dim"], mixture: SpectralMixture) -> float:
    """``-mean_i log p(x_i)`` under ``mixture`` (in nats)."""
    return -mixture.log_prob(_flat(x, "x")).mean().item()


def _quantiles(sorted_: Tensor, m: int) -> Tensor:
    """Values at levels ``(i + 1/2) / m`` of the empirical quantile function (linear interpolation)
    of each column of ``sorted_`` (n, P)."""
    n = sorted_.shape[0]
    if n == m:
        return sorted_
    pos = ((torch.arange(m, dtype=torch.float64, device=sorted_.device) + 0.5) * n / m - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = (pos - lo)[:, None]
    return sorted_[lo] * (1 - frac) + sorted_[hi] * frac


def sliced_w2(x: Float[Tensor, "n dim"], y: Float[Tensor, "m dim"], projections: int = 256,
              generator: torch.Generator | None = None) -> float:
    """``sqrt(mean_theta W2^2(theta^T x, theta^T y))`` over ``projections`` uniform random unit vectors
    (a fixed generator, seed 0, when none is given); 1-D W2 by sorting."""
    a, b = _flat(x, "x"), _flat(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"y must have the dimension of x ({a.shape[1]}), got {b.shape[1]}")
    if projections < 1:
        raise ValueError(f"projections must be >= 1, got {projections}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    theta = torch.randn(a.shape[1], projections, dtype=torch.float64, generator=generator).to(a.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    m = max(a.shape[0], b.shape[0])
    pa = _quantiles(torch.sort(a @ theta, dim=0).values, m)
    pb = _quantiles(torch.sort(b.to(a.device) @ theta, dim=0).values, m)
    return ((pa - pb) ** 2).mean().sqrt().item()


def mode_coverage(x: Float[Tensor, "n dim"], mixture: SpectralMixture) -> ModeCoverage:
    """Fractions of samples whose most responsible component is ``k``, and the TV distance of this
    histogram from ``mixture.weights``."""
    k = mixture.assign(_flat(x, "x"))
    hist = torch.bincount(k, minlength=mixture.n_components).to(torch.float64) / max(k.numel(), 1)
    return ModeCoverage(hist, 0.5 * (hist - mixture.weights.to(hist.device)).abs().sum().item())
