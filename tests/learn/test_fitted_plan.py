"""FittedPlan: a plan as data; its consistency (order >= 1, exact linear part) is kept by the fit."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import learn
from odesolve.analysis import step_exactness
from odesolve.analysis.symbolic import SymbolicLimitError
from odesolve.methods.fitted import FittedPlan
from odesolve.paths import EDM


def test_fitted_plan_has_order_at_least_one(gmm, fitted_finite):
    prob, _ = gmm
    f = fitted_finite
    plan = f.method.compile(prob.path, f.grid)
    init = ods.methods.get("dpmpp-2m").compile(prob.path, f.grid)
    assert not torch.allclose(plan.update_hist[:, : init.window], init.update_hist)  # the fit changed the rows
    ex = step_exactness(plan, max_degree=2)
    assert (ex.degrees >= 0).all() and ex.bound() >= 1  # every step exact for constants: order >= 1
    # the same rows with one coefficient moved (row sum broken) lose it: the check can fail
    first_column = torch.zeros_like(plan.update_hist)
    first_column[:, 0] = 0.01
    broken = dataclasses.replace(plan, update_hist=plan.update_hist + first_column)
    bad = step_exactness(broken, max_degree=1)
    assert (bad.degrees < 0).any() and bad.bound() < 1


def test_the_linear_part_stays_exact(gmm, fitted_finite):
    prob, _ = gmm
    f = fitted_finite
    plan = f.method.compile(prob.path, f.grid)
    init = ods.methods.get("dpmpp-2m").compile(prob.path, f.grid)
    assert torch.equal(plan.update_state, init.update_state) and torch.equal(plan.input_state, init.input_state)
    # a zero prediction: the exact solution of the linear part, x_N = sigma_N / sigma_0 x_0
    zero = ods.Model(lambda x, t: torch.zeros_like(x), prob.path, "x0")
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = f.grid.t
    assert torch.allclose(ods.sample(zero, x, f.grid, method=f.method), x * g[-1] / g[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["dpmpp-2m", "dpmpp-2s", "unipc-bh2-3", "heun", "deis-3"])
def test_from_plan_reproduces_registered_methods(gmm, name):
    prob, _ = gmm
    m = ods.methods.get(name)
    model = prob.model(m.prediction)
    grid = ods.grids.karras(prob.path, 6 // m.calls_per_step)
    f = FittedPlan.from_plan(m.compile(prob.path, grid), f"copy-{name}", interpolation=m.variable)
    x = prob.prior(16, torch.Generator().manual_seed(1))
    assert torch.equal(ods.sample(model, x, grid, method=f), ods.sample(model, x, grid, method=m))
    assert (f.prediction, f.variable, f.calls_per_step, f.history) == (
        m.prediction,
        m.variable,
        m.calls_per_step,
        m.history,
    )


def test_fitted_plan_as_a_method(gmm):
    prob, _ = gmm
    grid = ods.grids.karras(prob.path, 4, to_zero=False)
    f = FittedPlan.from_plan(ods.methods.get("dpmpp-2m").compile(prob.path, grid), "copy")
    assert f.order == 1 and f.options == () and f.grid.steps == 4
    with pytest.raises(SymbolicLimitError):
        f.derivation()
    with pytest.raises(ValueError, match="compiles only for it"):
        f.compile(prob.path, ods.grids.karras(prob.path, 5, to_zero=False))
    with pytest.raises(TypeError, match="options"):
        f.compile(prob.path, grid, lower_order_final=True)
    with pytest.raises(ValueError, match="one entry per call"):
        dataclasses.replace(f, update_state=f.update_state[:-1])
    with pytest.raises(ValueError, match="finite float"):
        dataclasses.replace(f, update_state=(float("nan"),) + f.update_state[1:])
    with pytest.raises(ValueError, match="step"):
        dataclasses.replace(f, step=tuple(reversed(f.step)))
    with pytest.raises(TypeError, match="path"):
        dataclasses.replace(f, path=None)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 7), st.integers(1, 4), st.booleans(), st.integers(0, 2**31 - 1))
def test_parametrisations_keep_consistency(steps, window, to_zero, seed):
    path = EDM()
    grid = ods.grids.karras(path, steps + int(to_zero), to_zero=to_zero)
    logits = learn.GridLogits(grid)
    assert torch.allclose(logits.grid(logits.initial).t, grid.t, rtol=1e-12, atol=0)
    gen = torch.Generator().manual_seed(seed)
    theta = logits.initial + torch.randn(logits.initial.shape, dtype=torch.float64, generator=gen)
    g = logits.grid(theta)
    assert g.steps == grid.steps and bool((g.t[1:] < g.t[:-1]).all())
    assert g.t[0] == grid.t[0] and g.t[-1] == grid.t[-1]
    if not to_zero:
        assert g.t[-2] != grid.t[-2] or steps == 1
    plan = ods.methods.get("dpmpp-3m").compile(path, g)
    corr = learn.RowCorrection(plan, window, shift_times=True)
    up, inp, shift = (torch.randn(c.shape, dtype=torch.float64, generator=gen) for c in corr.zeros())
    new = corr.apply(plan, up, inp, 5 * shift)
    moved = path.lambda_(new.times) - path.lambda_(plan.times)  # the call times, by at most 1 in lambda
    assert bool((moved.abs() <= 1 + 1e-12).all()) and bool((moved != 0).any())
    for a, b in ((new.update_hist, plan.update_hist), (new.input_hist, plan.input_hist)):
        assert bool(((a.sum(1) - b.sum(1)).abs() <= 1e-13 * (a.abs().sum(1) + 1)).all())
    assert bool((new.input_hist[:, 0] == 0).all()) and torch.equal(new.update_state, plan.update_state)
    k = torch.arange(plan.calls)[:, None]
    j = torch.arange(new.window)[None, :]
    assert bool((new.update_hist[j > k] == 0).all())  # no output from before the first call
