"""Error metrics for samplers on exact problems (docs/theory.md section 7.5).

Pass the distribution the samples should follow: the data mixture, or ``mixture.marginal(t, path)``
for ``p`` at the last time of the grid (``p_{sigma_min} = p_0 * N(0, sigma_min^2)``), which is the
right target for a sampler that stops at ``sigma_min > 0``.

- [`endpoint_error`][odesolve.toy.metrics.endpoint_error]: RMSE ``sqrt(mean_i |x_i - x*_i|^2 / d)`` of samples against
  reference end points from the same starting points, the median of the per-sample RMS error, and the rate at which
  a sample lands in the same mode (most responsible component) as its reference;
- [`nll`][odesolve.toy.metrics.nll]: exact mean negative log-likelihood ``-mean_i log p(x_i)`` (cross-entropy);
- [`sliced_w2`][odesolve.toy.metrics.sliced_w2]: sliced Wasserstein-2 distance between two sample sets (Rabin et al.
  2011; Bonneel et al. 2015) over a fixed number of random directions;
- [`mode_coverage`][odesolve.toy.metrics.mode_coverage]: the histogram of most-responsible components and its
  total-variation
  distance ``(1/2) sum_k |hat pi_k - pi_k|`` from the weights.

For samples of a learned model ([`odesolve.toy.zoo`][odesolve.toy.zoo]), where no density is known:

- [`frechet_distance`][odesolve.toy.metrics.frechet_distance]: the Frechet distance between Gaussians fitted to two
  feature sets
  (FID's formula, Heusel et al. 2017, arXiv 1706.08500);
- [`digits_classifier`][odesolve.toy.metrics.digits_classifier]: a small classifier of the ``digits`` images
  ([`DigitsClassifier`][odesolve.toy.metrics.DigitsClassifier]),
  whose second hidden layer gives the features of the Frechet distance.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn import functional as F

from ._spectral import SpectralMixture

__all__ = [
    "DIGITS_FEATURES",
    "DigitsClassifier",
    "EndpointError",
    "ModeCoverage",
    "digits_classifier",
    "endpoint_error",
    "frechet_distance",
    "mode_coverage",
    "nll",
    "sliced_w2",
]


class EndpointError(NamedTuple):
    rmse: float  # sqrt(mean_i |x_i - x*_i|^2 / d)
    median: float  # median_i |x_i - x*_i| / sqrt(d) (the mean of the two middle values for even n)
    same_mode: float | None  # fraction of samples in the mode of their reference (None without a mixture)


class ModeCoverage(NamedTuple):
    histogram: Tensor  # (K,) fraction of samples assigned to each component
    tv: float  # (1/2) sum_k |histogram_k - weights_k|


def _flat(x, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError(
            f"{name} must be a tensor of shape (n, ...) with at least 2 dimensions, got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
        )
    return x.reshape(x.shape[0], -1).to(torch.float64)


def endpoint_error(
    x: Float[Tensor, " n *shape"], reference: Float[Tensor, " m *other"], mixture: SpectralMixture | None = None
) -> EndpointError:
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


def sliced_w2(
    x: Float[Tensor, "n dim"],
    y: Float[Tensor, "m dim"],
    projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
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


# --------------------------------------------------------------------------------------------
# Learned models: a classifier of the digits, and the Frechet distance of its features
# --------------------------------------------------------------------------------------------


DIGITS_FEATURES = 128  # the dimension of DigitsClassifier.features, the space of the Frechet distance


class DigitsClassifier(nn.Module):
    """An MLP 64 -> hidden -> hidden -> 10 on the flattened 8x8 images in [-1, 1].
    ``features(x)`` is the second hidden layer (after its ReLU), the space of the Frechet distance."""

    def __init__(self, hidden: int = DIGITS_FEATURES):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.to(torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def probabilities(self, x: Tensor) -> Tensor:
        return torch.softmax(self(x), dim=1)


def digits_classifier(
    seed: int = 0, train_fraction: float = 0.75, epochs: int = 60, noise: float = 0.1
) -> tuple[DigitsClassifier, Tensor, Tensor]:
    """Train [`DigitsClassifier`][odesolve.toy.metrics.DigitsClassifier] on a seeded random ``train_fraction`` of the
    digits (Adam,
    mini-batches of 128, ``epochs`` epochs, inputs jittered by Gaussian noise of std ``noise``;
    about 3 s of one CPU core; 98 % test accuracy). Returns ``(classifier, train_index, test_index)``."""
    with torch.inference_mode(False), torch.enable_grad():  # callable from inside inference_mode
        return _train_classifier(seed, train_fraction, epochs, noise)


def _train_classifier(seed, train_fraction, epochs, noise):
    from .zoo import data, labels

    g = torch.Generator().manual_seed(seed)
    x, y = data("digits"), labels("digits")
    perm = torch.randperm(x.shape[0], generator=g)
    n_train = round(train_fraction * x.shape[0])
    tr, te = perm[:n_train], perm[n_train:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = DigitsClassifier()
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = tr[torch.randperm(tr.numel(), generator=g)]
        for i in range(0, order.numel(), 128):
            idx = order[i : i + 128]
            xb = x[idx] + noise * torch.randn(x[idx].shape, generator=g)
            loss = F.cross_entropy(clf(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval().requires_grad_(False)
    return clf, tr, te


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b`` (FID's formula,
    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)``, Heusel et al. 2017), in float64.

    Each set needs more rows than features (``n > d``): with ``n <= d`` the sample covariance has
    rank ``n - 1 < d``, is singular, and the distance is dominated by the missing directions."""
    a, b = (v.detach().to(torch.float64).flatten(1).cpu() for v in (a, b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (n, d) feature sets of equal d; got {tuple(a.shape)}, {tuple(b.shape)}")
    for name, v in (("a", a), ("b", b)):
        if v.shape[0] <= v.shape[1]:
            raise ValueError(
                f"{name} must have more rows (samples) than features for a non-singular covariance: "
                f"got {v.shape[0]} samples of {v.shape[1]} features"
            )
    mu = a.mean(0) - b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    ea, va = torch.linalg.eigh(ca)
    sa = (va * ea.clamp(min=0).sqrt()) @ va.T  # C_a^1/2
    m = sa @ cb @ sa
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float(mu @ mu + torch.trace(ca) + torch.trace(cb) - 2 * tr_sqrt)
