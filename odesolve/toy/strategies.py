"""Hypothesis strategies for property-based tests: random valid mixtures, paths, times and grids.

Needs ``hypothesis`` (a test extra); [`odesolve.toy`][odesolve.toy] does not import this module.

    from hypothesis import given
    from odesolve.toy import strategies as ts

    @given(ts.mixtures(), ts.paths())
    def test_something(gmm, path): ...

Every random matrix is built from floats drawn by hypothesis (no hidden seeds), so failures shrink.
"""

from __future__ import annotations

import math
import random

import torch
from hypothesis import strategies as st

from ..paths import EDM, VE, VP, FlowMatching, Path
from .gaussian import Gaussian
from .gmm import GaussianMixture
from .lowrank import LowRankMixture

__all__ = [
    "gaussians",
    "grids",
    "lowrank_mixtures",
    "mixtures",
    "noise_times",
    "orthogonal",
    "paths",
    "spd_matrices",
    "times",
    "vectors",
    "weights",
]

_F = {"allow_nan": False, "allow_infinity": False}
Real = int | float  # hypothesis users pass ints for float bounds; runtime type checkers need both


def _value(draw, value, default: st.SearchStrategy):
    """``value`` itself, or drawn from it if it is a strategy; ``default`` (a strategy) when None."""
    value = default if value is None else value
    return draw(value) if isinstance(value, st.SearchStrategy) else value


def vectors(n: int, lo: Real = -1.0, hi: Real = 1.0) -> st.SearchStrategy[torch.Tensor]:
    """float64 vectors of length ``n`` with entries in ``[lo, hi]``."""
    return st.lists(st.floats(lo, hi, **_F), min_size=n, max_size=n).map(
        lambda v: torch.tensor(v, dtype=torch.float64).reshape(n)
    )


def orthogonal(d: int, cols: int | None = None) -> st.SearchStrategy[torch.Tensor]:
    """``d x cols`` matrices with orthonormal columns (Householder QR of a drawn matrix: always orthonormal)."""
    cols = d if cols is None else cols
    return vectors(d * cols).map(
        lambda v: torch.linalg.qr(v.reshape(d, cols) + 1e-3 * torch.eye(d, cols, dtype=torch.float64))[0]
    )


@st.composite
def spd_matrices(draw, d: int, condition: Real = 100.0, scale: tuple[Real, Real] = (0.05, 2.0)):
    """Symmetric positive definite ``d x d`` matrices ``Q diag(ev) Q^T``: the largest eigenvalue in
    ``scale`` (a range of variances) and condition number at most ``condition``."""
    top = draw(st.floats(*scale, **_F))
    logs = draw(vectors(d, 0.0, 1.0))
    ev = top * torch.exp(-math.log(condition) * logs)
    Q = draw(orthogonal(d))
    return (Q * ev) @ Q.T


def weights(k: int, min_weight: Real = 0.05) -> st.SearchStrategy[torch.Tensor]:
    """Probability vectors of length ``k`` with every entry at least ``min_weight / k``-ish."""
    return vectors(k, min_weight, 1.0).map(lambda w: w / w.sum())


@st.composite
def mixtures(draw, dims=None, components=None, condition: Real = 100.0, spread: Real = 3.0) -> GaussianMixture:
    """Random [`GaussianMixture`][odesolve.toy.gmm.GaussianMixture]: ``dims`` and ``components`` are strategies (or
    ints), means
    in ``[-spread, spread]^d``, covariances from `spd_matrices` with the given conditioning."""
    d = _value(draw, dims, st.integers(1, 4))
    K = _value(draw, components, st.integers(1, 4))
    w = draw(weights(K))
    mu = torch.stack([draw(vectors(d, -spread, spread)) for _ in range(K)])
    covs = torch.stack([draw(spd_matrices(d, condition)) for _ in range(K)])
    return GaussianMixture(w, mu, covs)


@st.composite
def lowrank_mixtures(draw, dims=None, components=None, ranks=None, orthonormal: bool | None = None) -> LowRankMixture:
    """Random [`LowRankMixture`][odesolve.toy.lowrank.LowRankMixture] with rank ``r < dim``; factors
    orthonormal-times-scales or general."""
    d = _value(draw, dims, st.integers(2, 24))
    K = _value(draw, components, st.integers(1, 4))
    r = min(_value(draw, ranks, st.integers(1, 3)), d - 1)
    ortho = draw(st.booleans()) if orthonormal is None else orthonormal
    w = draw(weights(K))
    mu = torch.stack([draw(vectors(d, -2.0, 2.0)) for _ in range(K)])
    if ortho:
        U = torch.stack([draw(orthogonal(d, r)) * draw(vectors(r, 0.3, 2.0)) for _ in range(K)])
    else:
        U = torch.stack([draw(vectors(d * r)).reshape(d, r) for _ in range(K)])
    noise = draw(vectors(K, 0.05, 0.5))
    return LowRankMixture(w, mu, U, noise)


@st.composite
def gaussians(draw, dims=None, condition: Real = 100.0) -> Gaussian:
    """Random [`Gaussian`][odesolve.toy.gaussian.Gaussian] (``dims``: an int or a strategy, default 1 to 6)."""
    d = _value(draw, dims, st.integers(1, 6))
    return Gaussian(draw(vectors(d, -2.0, 2.0)), draw(spd_matrices(d, condition)))


def _keeping_random_state(build):
    """``build`` with Python's ``random`` state restored afterwards (hypothesis refuses strategies that
    touch it; runtime type checkers such as beartype sample container items with it)."""

    def run(*args):
        state = random.getstate()
        try:
            return build(*args)
        finally:
            random.setstate(state)

    return run


@_keeping_random_state
def _vp_discrete(schedule: str, T: int, zero_snr: bool) -> Path:
    """diffusers' schedules with T training steps, betas scaled so that the total noise matches T = 1000."""
    return VP.discrete(
        schedule,
        num_train_timesteps=T,
        beta_start=1e-4 * 1000 / T,
        beta_end=0.02 * 1000 / T,
        rescale_zero_terminal_snr=zero_snr,
    )


def paths(
    kinds: tuple[str, ...] = ("vp-linear", "vp-cosine", "vp-discrete", "edm", "ve", "flow"),
) -> st.SearchStrategy[Path]:
    """Paths of [`odesolve.paths`][odesolve.paths] with random valid parameters."""
    options = {
        "vp-linear": st.builds(
            lambda b0, db: VP.linear(beta_min=b0, beta_max=b0 + db),
            st.floats(0.01, 1.0, **_F),
            st.floats(5.0, 25.0, **_F),
        ),
        "vp-cosine": st.builds(lambda s: VP.cosine(s=s), st.floats(0.001, 0.02, **_F)),
        "vp-discrete": st.builds(
            _vp_discrete,
            st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"]),
            st.integers(50, 1000),
            st.booleans(),
        ),
        "edm": st.just(EDM()),
        "ve": st.builds(
            lambda lo, ratio: VE(sigma_min=lo, sigma_max=lo * ratio),
            st.floats(0.001, 0.1, **_F),
            st.floats(100.0, 1e5, **_F),
        ),
        "flow": st.just(FlowMatching()),
    }
    unknown = set(kinds) - set(options)
    if unknown:
        raise ValueError(f"kinds must be among {sorted(options)}, got {sorted(unknown)}")
    return st.one_of(*(options[k] for k in kinds))


def noise_times(path: Path, lo: Real = 1e-3, hi: Real = 1e3) -> st.SearchStrategy[float]:
    """Times of ``path`` whose noise level ``sigma/alpha`` is log-uniform in ``[lo, hi]`` (clipped to the path)."""
    return st.floats(math.log(lo), math.log(hi), **_F).map(
        lambda u: float(
            path.t_of_noise_level(torch.tensor(math.exp(u), dtype=torch.float64)).clamp(path.t_min, path.t_max)
        )
    )


def times(path: Path) -> st.SearchStrategy[float]:
    """Any time of ``path``'s domain, ends included (``sigma = 0``, and ``alpha = 0`` where the path has it)."""
    hi = path.t_max if math.isfinite(path.t_max) else 1e4
    return st.one_of(st.sampled_from([path.t_min, hi]), st.floats(path.t_min, hi, **_F))


@st.composite
def grids(
    draw,
    path: Path,
    steps=None,
    ratio: Real = 2.0,
    sigma_max=(10.0, 100.0),
    sigma_min=(1e-3, 1e-1),
    end_at_zero=None,
    kind=None,
):
    """Random non-uniform grids from [`odesolve.grids.from_times`][odesolve.grids.from_times] or
    [`from_sigmas`][odesolve.grids.from_sigmas].

    The steps in ``lambda = -log(noise level)`` between ``sigma_max`` and ``sigma_min`` (clipped to
    the path) have consecutive ratios ``h_{i+1} / h_i`` in ``[1/ratio, ratio]``; with ``end_at_zero``
    a last step to ``sigma = 0`` is appended. ``steps`` (default 2 to 20), ``end_at_zero`` (default
    either) and ``kind`` (``"times"`` or ``"sigmas"``, default either) are values or strategies.
    """
    from .. import grids as _grids  # imported lazily: the grids module is optional for this module

    n = _value(draw, steps, st.integers(2, 20))
    zero = _value(draw, end_at_zero, st.booleans())
    how = _value(draw, kind, st.sampled_from(["times", "sigmas"]))
    lam_lo = (
        float(path.lambda_(torch.tensor(path.t_max, dtype=torch.float64))) if math.isfinite(path.t_max) else -math.inf
    )
    lam_hi = float(path.lambda_(torch.tensor(path.t_min, dtype=torch.float64)))
    zero = zero and lam_hi == math.inf  # only where the path reaches sigma = 0 (not VE)
    top = max(-math.log(draw(st.floats(*sigma_max, **_F))), lam_lo)
    bottom = min(-math.log(draw(st.floats(*sigma_min, **_F))), lam_hi)
    if not bottom > top:
        bottom = top + 1.0
    m = n - 1 if zero else n  # finite steps
    log_r = draw(vectors(max(m - 1, 0), -math.log(ratio), math.log(ratio)))
    h = torch.exp(torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(log_r, 0)]))
    lam = top + (bottom - top) * torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(h, 0) / h.sum()])
    if how == "sigmas":
        sig = torch.exp(-lam)
        if zero:
            sig = torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
        return _grids.from_sigmas(path, sig)
    t = path.t_of_lambda(lam).clamp(path.t_min, path.t_max)
    if zero:
        t = torch.cat([t, torch.tensor([path.t_min], dtype=torch.float64)])
    return _grids.from_times(path, t)
