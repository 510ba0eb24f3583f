"""Exact problems: Gaussian mixtures under any path with closed-form scores and denoisers, a single
Gaussian with closed-form ODE and SDE solutions, mixtures of low-rank Gaussians, high-accuracy
reference solutions, distribution metrics, a registry of named problems, and perturbed (biased) models
(``odesolve.toy.perturbed``).

The hypothesis strategies live in [`odesolve.toy.strategies`][odesolve.toy.strategies] (a test extra; not imported
here).
"""

from . import metrics, perturbed, problems, reference
from .gaussian import Gaussian
from .gmm import GaussianMixture
from .lowrank import LowRankMixture

__all__ = ["Gaussian", "GaussianMixture", "LowRankMixture", "metrics", "perturbed", "problems", "reference"]
