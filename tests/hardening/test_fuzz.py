"""Fuzz of the public API: random paths, grids, methods, predictions, dtypes and batch shapes with the
exact Gaussian-mixture network of odesolve.toy.

Every call either returns a finite state of the input's shape and dtype, or raises a ValueError or
TypeError whose message names an argument of the call. Nothing else is allowed: no NonFiniteError,
no error from inside torch, no NaN.
"""

from __future__ import annotations

import random
import re

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.toy import GaussianMixture

PATHS = {
    "edm": P.EDM(),
    "vp-linear": P.VP.linear(),
    "vp-cosine": P.VP.cosine(),
    "vp-discrete": P.VP.discrete(),
    "vp-discrete-scaled": P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012),
    "vp-discrete-zero-snr": P.VP.discrete(rescale_zero_terminal_snr=True),
    "flow-matching": P.FlowMatching(),
    "ve": P.VE(),
}
PREDICTIONS = ["eps", "x0", "v", "velocity", "score"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
ARGUMENTS = {
    "path",
    "steps",
    "sigma_min",
    "sigma_max",
    "rho",
    "t_start",
    "t_end",
    "spacing",
    "steps_offset",
    "final",
    "times",
    "sigmas",
    "grid",
    "method",
    "x",
    "model",
    "prediction",
    "dtype",
}
NAMES_AN_ARGUMENT = re.compile(r"\b(" + "|".join(sorted(ARGUMENTS, key=len, reverse=True)) + r")\b")


def _grid_call(rng: random.Random, path):
    """A grid constructor with random arguments, unevaluated: it may refuse them (mostly valid
    draws; some ask for what the path cannot give, such as discrete spacings of a continuous path)."""
    steps = rng.randint(1, 12)
    kinds = ["karras", "karras-ramp", "uniform_lambda", "uniform_time", "time_quadratic", "discrete"]
    kinds += ["discrete"] * (5 if isinstance(path, P.VPDiscrete) else 0)
    kind = rng.choice(kinds)
    if kind == "discrete":
        spacing, final = rng.choice(["leading", "trailing", "linspace"]), rng.choice(["zero", "first"])
        return lambda: G.discrete(path, steps, spacing=spacing, final=final)
    if kind.startswith("karras"):
        sigma_max, sigma_min = rng.choice([80.0, 14.6, 1.0, None]), rng.choice([0.002, 0.03, None])
        return lambda: G.karras(path, steps, sigma_min=sigma_min, sigma_max=sigma_max, to_zero=kind == "karras")
    lo, hi = path.t_min, min(path.t_max, 80.0)
    t_start = rng.choice([hi, lo + 0.9 * (hi - lo), lo + 0.5 * (hi - lo), None])
    t_end = rng.choice([lo + 1e-3 * (hi - lo), lo + 0.05 * (hi - lo), None])
    return lambda: getattr(G, kind)(path, steps, t_start=t_start, t_end=t_end)


def _mixture(rng: random.Random, dim: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(rng.getrandbits(32))
    means = torch.randn(2, dim, generator=g, dtype=torch.float64)
    covs = torch.diag_embed(0.05 + torch.rand(2, dim, generator=g, dtype=torch.float64))
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), means, covs)


# One integer per example, expanded by random.Random: every example draws all of its choices afresh
# (hypothesis's own draws of many small choices repeat most of them over 60 examples).
@settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**63 - 1))
def test_every_call_returns_a_finite_state_or_names_an_argument(seed):
    rng = random.Random(seed)
    path_name = rng.choice(sorted(PATHS))
    path = PATHS[path_name]
    make_grid = _grid_call(rng, path)
    method, prediction, dtype = (
        rng.choice([n for n in ods.methods.names() if not ods.methods.get(n).stochastic]),
        rng.choice(PREDICTIONS),
        rng.choice(DTYPES),
    )
    batch, dim = rng.randint(1, 4), rng.randint(1, 3)
    mixture = _mixture(rng, dim)
    try:
        grid = make_grid()
        g = torch.Generator().manual_seed(seed % 2**32)
        x0 = mixture.sample(batch, generator=g)
        t0 = grid.t[:1]
        x = path.alpha(t0) * x0 + path.sigma(t0) * torch.randn(batch, dim, generator=g, dtype=torch.float64)
        x = x.to(dtype)
        out = ods.sample(mixture.model(path, prediction), x, grid, method=method)
    except (ValueError, TypeError) as err:
        assert not isinstance(err, ods.NonFiniteError)
        assert NAMES_AN_ARGUMENT.search(str(err)), f"{type(err).__name__}: {err}"
        return
    assert out.shape == x.shape and out.dtype == dtype
    assert bool(torch.isfinite(out).all()), (path_name, grid, method, prediction)
