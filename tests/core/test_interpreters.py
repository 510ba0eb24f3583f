"""The two interpreters of plan rows agree: the executor's (odesolve.execute) and the analysis'
reference interpreter over plain numbers (odesolve.analysis._plan.PlanStructure.run); and the
analysis compiles through Method.compile, whose cache keys on path equality."""

import dataclasses

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.analysis import guidance_stability
from odesolve.analysis._plan import structure
from odesolve.models import PREDICTIONS, conversion

PATHS = {"edm": P.EDM(), "vp": P.VP.linear()}
DETERMINISTIC = [n for n in ods.methods.names() if not ods.methods.get(n).stochastic]  # the interpreter has no noise


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(DETERMINISTIC),
    path=st.sampled_from(sorted(PATHS)),
    steps=st.integers(2, 9),
    sigma_min=st.floats(0.01, 0.5),
    sigma_max=st.floats(1.0, 20.0),
    to_zero=st.booleans(),
    kappa=st.floats(-2.0, 2.0),
    prediction=st.sampled_from(PREDICTIONS),
    seed=st.integers(0, 2**16),
)
def test_reference_interpreter_agrees_with_the_executor(
    name, path, steps, sigma_min, sigma_max, to_zero, kappa, prediction, seed
):
    """Random registered method, random grid, linear model D(x) = kappa x in any prediction type:
    the executor (float64) and the numpy interpreter give the same final state to ~1e-12."""
    path = PATHS[path]
    grid = G.karras(path, steps, sigma_min=sigma_min, sigma_max=sigma_max, to_zero=to_zero)
    plan = ods.methods.get(name).compile(path, grid)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = ods.execute(plan, ods.Model(lambda x, t: kappa * x, path, prediction), x)
    # the interpreter sees the model's output converted into the plan's buffer, F = cx X + cf (kappa X)
    cx, cf = (v.numpy() for v in conversion(path, prediction, plan.prediction, plan.times))
    ref, _ = structure(plan).run(0, plan.calls, x.numpy(), {}, lambda k, X: cx[k] * X + cf[k] * (kappa * X))
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(out.numpy() - ref).max() <= 1e-12 * scale, (name, float(np.abs(out.numpy() - ref).max()))


def test_analysis_plans_follow_path_equality_not_repr():
    """Two discrete schedules with the same repr (T = 1000, no zero terminal SNR) on the same
    timesteps: each analysis gets its own path's plan (a cache keyed on repr(path) swapped them)."""
    lin = P.VPDiscrete.from_schedule("linear")
    scaled = P.VPDiscrete.from_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert repr(lin) == repr(scaled) and lin != scaled
    m = ods.methods.get("dpmpp-2m")
    radius = {}
    for path in (lin, scaled):
        grid = G.from_times(path, [900.0, 700.0, 500.0, 300.0, 100.0])
        radius[path] = guidance_stability(m, grid, [1.0, 0.05], [1.2, 0.5], 3.0).radius
    fresh = dataclasses.replace(m)  # an equal table, another object: nothing cached for it elsewhere
    grid = G.from_times(scaled, [900.0, 700.0, 500.0, 300.0, 100.0])
    assert np.array_equal(radius[scaled], guidance_stability(fresh, grid, [1.0, 0.05], [1.2, 0.5], 3.0).radius)
    assert not np.allclose(radius[lin], radius[scaled], rtol=1e-3)


def test_a_call_at_sigma_zero_keeps_the_conversion_exact():
    """An eps model's output has no weight in x0 = (x - sigma eps) / alpha at sigma = 0: the executor
    then stores x0 = x / alpha itself (no division by the zero weight)."""
    path = PATHS["edm"]
    plan = ods.methods.get("dpmpp-2m").compile(path, G.karras(path, 5, sigma_min=0.05, sigma_max=3.0, to_zero=False))
    times = plan.times.clone()
    times[-1] = 0.0  # the last call at sigma = 0
    plan = dataclasses.replace(plan, times=times)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = ods.execute(plan, ods.Model(lambda x, t: 0.7 * x, path, "eps"), x)
    cx, cf = (v.numpy() for v in conversion(path, "eps", "x0", plan.times))
    assert cf[-1] == 0
    ref, _ = structure(plan).run(0, plan.calls, x.numpy(), {}, lambda k, X: cx[k] * X + cf[k] * (0.7 * X))
    assert np.abs(out.numpy() - ref).max() <= 1e-13 * max(1.0, float(np.abs(ref).max()))
