"""The numeric order: per-step exactness, the warm-up rule, grid classes, options, bad input."""

import dataclasses

import numpy as np
import pytest
import torch

import odesolve as ods
from odesolve.analysis import numeric_order, polynomial_errors, step_exactness
from odesolve.analysis.families import Family

EDM = ods.paths.EDM()


def _plan(name, steps=12, seed=1, **options):
    g = Family("random", sigma_start=1.0, sigma_end=0.25, seed=seed)(steps)
    return ods.methods.get(name).compile(EDM, g, **options)


def test_step_exactness_shows_the_warm_up():
    """dpmpp-3m: DDIM first step (degree 0), then two nodes (degree 0: the midpoint weight chi_1/2 is
    exact only to leading order), then 3 nodes with the halved D2 weight (degree 1); the Taylor 2M is
    exactly exact for linear x0 after its first step; rk4 in rho is Simpson's rule (degree 3)."""
    se = step_exactness(_plan("dpmpp-3m"))
    assert list(se.degrees[:4]) == [0, 0, 1, 1] and set(se.degrees[2:]) == {1}
    assert se.bound() == 2
    assert list(step_exactness(_plan("dpmpp-2m-taylor")).degrees[:3]) == [0, 1, 1]
    assert set(step_exactness(_plan("rk4")).degrees) == {3}
    lms = step_exactness(_plan("lms-3"))
    assert list(lms.degrees[:3]) == [0, 1, 2] and lms.bound() == 2
    # the bound is the rule on exact degrees: a lower bound on the order (UniPC's telescoping
    # corrector and leading-order-exact weights only show in the global error)
    assert step_exactness(_plan("unipc-bh2-3")).bound() <= 3


def test_polynomial_errors_are_exact_to_roundoff():
    pe = polynomial_errors(_plan("lms-3"))
    assert pe.exact_degree == 0  # its first step is Euler
    pe = polynomial_errors(_plan("rk4"), "rho")
    assert pe.exact_degree == 3 and (pe.errors[:4] <= pe.tolerance[:4]).all()
    assert (pe.tolerance < 1e-12).all()


def test_grid_classes_of_equal_step_tables():
    """ipndm's equal-step coefficients: order 2 on smooth grids, 1 with independent random step ratios;
    variable-step methods keep their order there."""
    steps = (16, 32, 64, 128)
    assert numeric_order("ipndm", "smooth").order == 2
    assert numeric_order("ipndm", "iid", steps, refine=0).order == 1
    for name in ("dpmpp-3m", "lms-3", "dpm-solver-3"):
        assert numeric_order(name, "iid", steps).order == ods.methods.get(name).order


def test_lower_order_final_caps_the_order():
    """A first-order last step is a bounded-count boundary step of degree 0: order <= 2."""
    assert numeric_order("unipc-bh2-3").order == 3
    r = numeric_order("unipc-bh2-3", options={"lower_order_final": True})
    assert r.order == 2, r.table()


def test_plan_callables_and_the_result():
    r = numeric_order(lambda g: ods.methods.get("heun").compile(g.path, g), "uniform")
    assert r.order == 2 and r.variable == "rho" and r.nfe[0] == 2 * r.steps[0]
    text = r.table()
    assert "degree 2" in text and "order 2" in text
    assert np.isfinite(r.error_constant) and r.error_constant > 0


def test_bad_input():
    g = ods.grids.karras(EDM, 8)  # ends at sigma = 0
    with pytest.raises(ValueError, match="infinitely long in lambda"):
        polynomial_errors(ods.methods.get("ddim").compile(EDM, g))
    with pytest.raises(ValueError, match="increasing step counts"):
        numeric_order("ddim", steps=(16, 8))
    with pytest.raises(ValueError, match="sigma_end"):
        numeric_order("ddim", sigma_end=0.0)
    with pytest.raises(ValueError, match="kind must be"):
        numeric_order("ddim", "chebyshev")
    with pytest.raises(TypeError, match="Plan"):
        numeric_order(lambda g: None)
    plan = _plan("ddim")
    with pytest.raises(ValueError, match="non-finite"):  # the Plan refuses NaN coefficients itself
        dataclasses.replace(plan, update_hist=plan.update_hist * float("nan"))
    bad = dataclasses.replace(plan)  # a copy (compiled plans are cached and shared)
    object.__setattr__(bad, "update_hist", bad.update_hist * float("nan"))  # edited after the Plan's check
    with pytest.raises(ValueError, match="non-finite"):
        polynomial_errors(bad)
    with pytest.raises(ValueError, match="max_degree"):
        polynomial_errors(_plan("ddim"), max_degree=40)
    with pytest.raises(TypeError, match="odesolve.Plan"):
        step_exactness(torch.zeros(3))


def test_polynomial_errors_on_steps_longer_than_one_in_lambda():
    """Steps longer than 1 in lambda are integrated in several Gauss-Legendre panels; the panel
    weights must cover every panel (a 5-step Karras grid has steps of length > 1)."""
    g = ods.grids.karras(EDM, 5, sigma_min=0.002, sigma_max=80.0, to_zero=False)
    assert float(g.lambdas.diff().max()) > 1
    pe = polynomial_errors(ods.methods.get("dpmpp-2m-taylor").compile(EDM, g))
    # the Taylor 2M is exact for x0 linear in lambda after its DDIM first step: degree 0 over the grid
    assert pe.exact_degree == 0 and (pe.errors[:1] <= pe.tolerance[:1]).all()
    assert pe.errors[1] > pe.tolerance[1]  # the first step's degree-1 error is real, not round-off
