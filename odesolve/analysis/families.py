"""Grid families for order studies: sequences of grids on one interval whose steps shrink.

A family maps a number of steps to a grid between two noise levels (``sigma_start`` at the noisy
end, ``sigma_end > 0`` at the clean end: a step to sigma = 0 is a limit with no order to measure
-- the exponential and Runge-Kutta methods take their first-order (DDIM / Euler) limit there, while
fixed-coefficient Adams (plms, ipndm) and the methods interpolating in t or rho (deis-N, lms-N)
still use their history). Four kinds:

- ``"karras"``: Karras et al. (2022) rho = 7 spacing, ``to_zero=False``: smooth, non-uniform;
- ``"uniform"``: equal steps in lambda;
- ``"smooth"``: ``lambda_i = lambda_a + L phi(i/N)`` with a random smooth increasing ``phi``
  (``phi(x) = x + sum_k a_k sin(k pi x) / (k pi)``, k = 1, 2, ``0.1 <= sum |a_k| <= 0.3``): step ratios
  ``1 + O(1/N)``, the grids on which equal-step coefficients (iPNDM, PLMS) keep their order;
- ``"random"``: arbitrary step ratios at every resolution (the family for ``grid_requirement ==
  "any"``): step widths (before normalising to the
  interval) ``w_i = 1 + a(i/N) xi_{i mod 4}`` with a random pattern ``xi`` in [-1, 1]^4 and an
  amplitude ``a(x) = 0.15 + 0.6 x`` that grows along the interval, so neighbouring steps have ratios
  from about 1.3 (first steps) up to 7 (last steps) however fine the grid. The family is consistent
  (each step's neighbourhood converges as N grows), so errors are smooth functions of N and fitted
  slopes carry no sampling noise; the varying amplitude averages the step-ratio dependent error
  constants over many geometries, so that no single pattern can make a leading term vanish.

- ``"iid"``: independent random widths uniform in [0.4, 1.6] (a fixed random stream, drawn afresh
  for each N). Nothing is periodic, so no cancellation over a pattern can hide an inconsistency:
  equal-step coefficients (iPNDM, PLMS) show their first order here, while a periodic pattern
  partly averages their defects out. The errors carry sampling noise of relative size ~1/sqrt(N),
  so use more and finer steps (e.g. 16 .. 256) for slopes.

Families are deterministic given ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .. import paths as _paths
from ..grids import Grid, karras
from ..paths import Path
from ._plan import grid_from_lambdas

Kind = Literal["karras", "uniform", "smooth", "random", "iid"]

__all__ = ["KINDS", "Family", "family"]

KINDS = ("karras", "uniform", "smooth", "random", "iid")


@dataclass(frozen=True)
class Family:
    """A grid family: ``family(steps) -> Grid``. See the module docstring."""

    kind: str
    path: Path = field(default_factory=_paths.EDM)
    sigma_start: float = 2.0
    sigma_end: float = 0.05
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.sigma_start) and 0 < self.sigma_end < self.sigma_start):
            raise ValueError(
                f"sigma_start, sigma_end must satisfy 0 < sigma_end < sigma_start < inf (order studies "
                f"stop at sigma > 0), got {self.sigma_start}, {self.sigma_end}"
            )

    @property
    def lambda_range(self) -> tuple[float, float]:
        return -math.log(self.sigma_start), -math.log(self.sigma_end)

    def lambdas(self, steps: int) -> np.ndarray:
        if not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        la, lb = self.lambda_range
        L = lb - la
        x = np.linspace(0.0, 1.0, steps + 1)
        if self.kind == "uniform":
            return la + L * x
        if self.kind == "karras":
            r = 7.0
            s = (self.sigma_start ** (1 / r) + x * (self.sigma_end ** (1 / r) - self.sigma_start ** (1 / r))) ** r
            return -np.log(s)
        if self.kind == "smooth":
            rng = np.random.default_rng(self.seed)
            a = rng.uniform(-1, 1, 2)
            a *= rng.uniform(0.1, 0.3) / np.abs(a).sum()
            k = np.arange(1, 3)
            phi = x + (a[None, :] * np.sin(np.pi * k[None, :] * x[:, None]) / (np.pi * k[None, :])).sum(1)
            return la + L * phi
        if self.kind == "iid":
            w = np.random.default_rng(self.seed).uniform(0.4, 1.6, steps)
            return la + L * np.concatenate([[0.0], np.cumsum(w) / w.sum()])
        return la + L * self._random_fractions(steps)

    def _random_fractions(self, steps: int) -> np.ndarray:
        xi = np.random.default_rng(self.seed).uniform(-1.0, 1.0, 4)
        i = np.arange(steps)
        w = 1.0 + (0.15 + 0.6 * i / steps) * xi[i % 4]
        return np.concatenate([[0.0], np.cumsum(w) / w.sum()])

    def __call__(self, steps: int) -> Grid:
        if self.kind == "karras":
            return karras(self.path, steps, sigma_min=self.sigma_end, sigma_max=self.sigma_start, to_zero=False)
        return grid_from_lambdas(self.path, self.lambdas(steps))

    def __str__(self):
        extra = f", seed={self.seed}" if self.kind in ("smooth", "random") else ""
        return f"{self.kind} (sigma {self.sigma_start:g} -> {self.sigma_end:g}{extra})"


def family(kind: Kind | Family | Callable = "auto", method=None, **kw) -> Family | Callable:
    """A [`Family`][odesolve.analysis.families.Family] by kind; ``"auto"`` picks ``"random"`` for methods whose
    ``grid_requirement`` is ``"any"`` and ``"smooth"`` otherwise. Callables and families pass through."""
    if isinstance(kind, Family) or (callable(kind) and not isinstance(kind, str)):
        return kind
    if kind == "auto":
        req = getattr(method, "grid_requirement", "any") if method is not None else "any"
        kind = "random" if req == "any" else "smooth"
    return Family(kind, **kw)
