"""One contract over the whole registry: every method's declared order equals its derived order
(numeric, on random grids drawn by hypothesis; and symbolic where the table has a closed form) and
its measured order on an exact mixture (within 0.2). A new method is tested by being registered."""

import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve.analysis import SymbolicLimitError, convergence, derive, numeric_order

FULL = os.environ.get("ODESOLVE_FULL", "0") == "1"
NAMES = ods.methods.names()
MEASURE_STEPS = (16, 32, 64, 128)
_MEASURED: dict = {}


def _measured(name, problem):
    if name not in _MEASURED:
        _MEASURED[name] = convergence(name, problem, "karras", steps=MEASURE_STEPS)
    return _MEASURED[name]


@pytest.mark.parametrize("name", NAMES)
@settings(settings.get_profile("analysis"))
@given(seed=st.integers(0, 2**16 - 1))
def test_declared_derived_and_measured_orders_agree(name, seed, mixture_problem):
    m = ods.methods.get(name)
    # derived from the plan: random step ratios ("any") or random smooth grids (equal-step tables)
    derived = numeric_order(m, seed=seed)
    assert derived.order == m.order, derived.table()
    assert derived.bound <= m.order  # the per-step exactness bound is a lower bound
    # derived symbolically, where the table has a closed form
    try:
        assert derive(m).order == m.order, derive(m).summary()
    except SymbolicLimitError:
        assert getattr(m, "variable", None) == "t"  # DEIS tAB: path-dependent weights, no closed form
    # measured on the exact mixture
    res = _measured(name, mixture_problem)
    assert len(res.used) >= 2 and math.isfinite(res.slope), res.table()
    assert abs(res.slope - m.order) <= 0.2, res.table()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["uniform", "karras", "iid"])
@pytest.mark.parametrize("name", NAMES if FULL else ["dpmpp-3m", "unipc-bh2-3", "rk4", "deis-3"])
def test_derived_order_on_other_families(name, family):
    """Every method keeps its order on smooth grids, and methods for any grid also with independent
    random step ratios (no periodic pattern to average defects out)."""
    m = ods.methods.get(name)
    if family == "iid" and m.grid_requirement != "any":
        pytest.skip("equal-step coefficients are first order on arbitrary grids (tested in test_numeric)")
    assert numeric_order(m, family, (16, 32, 64, 128)).order == m.order
