"""Named exact problems shared by tests, docs and benchmarks.

    from odesolve.toy import problems
    problems.names()                 # ['gaussian', 'gmm2d', 'lowrank1024', 'lowrank64']
    prob = problems.get("gmm2d")     # frozen; built once from fixed seeds
    model = prob.model("eps")        # exact model under prob.path (EDM by default)
    x_T = prob.prior(1000, torch.Generator().manual_seed(0))
    prob.with_path(VP.cosine())      # the same distribution under another path

Each problem carries the noise-level range ``[sigma_min, sigma_max]`` of a benchmark grid
(``sigma/alpha``, default EDM's 0.002 and 80); [`Problem.times`][odesolve.toy.problems.Problem.times] gives it in the
path's time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..models import Model, Prediction
from ..paths import EDM, Path
from ._spectral import SpectralMixture
from .gaussian import Gaussian
from .gmm import GaussianMixture
from .lowrank import LowRankMixture

__all__ = ["Problem", "get", "names", "register"]


@dataclass(frozen=True, eq=False)
class Problem:
    """An exact distribution with a default path and the noise-level range of its benchmark grids."""

    name: str
    distribution: SpectralMixture
    path: Path = dataclasses.field(default_factory=EDM)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    description: str = ""

    @property
    def dim(self) -> int:
        return self.distribution.dim

    def with_path(self, path: Path) -> Problem:
        """The same problem under another path (the noise-level range is kept)."""
        if not isinstance(path, Path):
            raise TypeError(f"path must be an odesolve.paths.Path, got {type(path).__name__}")
        return dataclasses.replace(self, path=path)

    def times(self) -> tuple[float, float]:
        """``(t_start, t_end)``: the path times of ``sigma_max`` and ``sigma_min``, clipped to the domain."""
        t = self.path.t_of_noise_level(torch.tensor([self.sigma_max, self.sigma_min], dtype=torch.float64))
        t = t.clamp(self.path.t_min, self.path.t_max)
        return float(t[0]), float(t[1])

    def model(self, prediction: Prediction = "x0") -> Model:
        """The exact model of the distribution under ``self.path``."""
        return self.distribution.model(self.path, prediction)

    def prior(
        self, n: int, generator: torch.Generator | None = None, kind: Literal["exact", "gaussian"] = "exact"
    ) -> Tensor:
        """``n`` starting points at ``t_start``: exact samples of ``p_t`` or ``N(0, sigma^2 I)``."""
        return self.distribution.sample_prior(n, self.path, self.times()[0], generator, kind)

    def data(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples of the data."""
        return self.distribution.sample(n, generator)

    def target(self) -> SpectralMixture:
        """``p`` at ``t_end`` (noise level ``sigma_min``): what a sampler stopping there should produce."""
        return self.distribution.marginal(self.times()[1], self.path)

    def __repr__(self):
        return f"Problem({self.name!r}, {self.distribution!r}, path={self.path!r})"


_FACTORIES: dict[str, Callable[[], Problem]] = {}


def register(name: str, factory: Callable[[], Problem]) -> None:
    """Add a problem: ``factory()`` builds it (deterministically) on first [`get`][odesolve.toy.problems.get]."""
    if name in _FACTORIES:
        raise ValueError(f"name {name!r} is already registered")
    _FACTORIES[name] = factory


def names() -> list[str]:
    return sorted(_FACTORIES)


@functools.cache
def get(name: str) -> Problem:
    """The problem registered under ``name`` (built once)."""
    if name not in _FACTORIES:
        raise ValueError(f"name must be one of {names()}, got {name!r}")
    return _FACTORIES[name]()


def _rotation(angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _orthonormal(generator: torch.Generator, *shape: int) -> Tensor:
    """Random matrices with orthonormal columns (QR of Gaussian matrices)."""
    q, r = torch.linalg.qr(torch.randn(*shape, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # the Haar-distributed choice


def _gmm2d() -> Problem:
    K = 6
    weights = torch.tensor([0.25, 0.20, 0.18, 0.15, 0.12, 0.10], dtype=torch.float64)
    angles = [2 * math.pi * k / K for k in range(K)]
    means = torch.tensor([[4 * math.cos(a), 4 * math.sin(a)] for a in angles], dtype=torch.float64)
    stds = [(0.60, 0.12), (0.45, 0.20), (0.30, 0.30), (0.55, 0.10), (0.40, 0.15), (0.25, 0.08)]
    covs = torch.stack(
        [
            _rotation(a + 0.4 * k) @ torch.diag(torch.tensor(s, dtype=torch.float64) ** 2) @ _rotation(a + 0.4 * k).T
            for k, (a, s) in enumerate(zip(angles, stds))
        ]
    )
    return Problem(
        "gmm2d",
        GaussianMixture(weights, means, covs),
        description="6 anisotropic, unequally weighted modes on a circle of radius 4 (2-D)",
    )


def _lowrank(name: str, d: int, K: int, r: int, seed: int) -> Callable[[], Problem]:
    def build() -> Problem:
        g = torch.Generator().manual_seed(seed)
        weights = 1.0 / torch.arange(2, K + 2, dtype=torch.float64)
        weights = weights / weights.sum()
        scales = torch.linspace(1.0, 0.5, r, dtype=torch.float64)  # within-subspace standard deviations
        factors = _orthonormal(g, K, d, r) * scales
        return Problem(
            name,
            LowRankMixture(weights, None, factors, noise=0.05),
            description=f"{K} zero-mean Gaussians on random {r}-dimensional subspaces of R^{d} "
            f"(MoLRG, arXiv 2409.02426) with noise floor 0.05",
        )

    return build


def _gaussian() -> Problem:
    d = 8
    g = torch.Generator().manual_seed(8)
    Q = _orthonormal(g, d, d)
    eigenvalues = torch.logspace(-2, 0, d, dtype=torch.float64)
    mean = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
    return Problem(
        "gaussian",
        Gaussian(mean, Q @ torch.diag(eigenvalues) @ Q.T),
        description="8-D Gaussian, eigenvalues log-spaced over two decades, random rotation",
    )


register("gmm2d", _gmm2d)
register("lowrank64", _lowrank("lowrank64", 64, 5, 4, seed=64))
register("lowrank1024", _lowrank("lowrank1024", 1024, 8, 8, seed=1024))
register("gaussian", _gaussian)
