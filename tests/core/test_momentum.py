"""Momentum samplers (HB, GHVB; Wizadwongsa et al., ICLR 2024): the plan's rows are the velocity
recursion unrolled, GHVB keeps the Adams order for every beta while HB drops to first order, and the
real stability interval grows as beta decreases, measured on the plans by odesolve.analysis.stability
and equal to the closed forms of the interior linear multistep method."""

from fractions import Fraction as Fr

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.analysis.lmm import adams_bashforth
from odesolve.analysis.stability import amplification, spectral_radius
from odesolve.methods.classical import adams_bashforth_weights
from odesolve.methods.momentum import Momentum, backward_weights

EDM = P.EDM()
betas = st.fractions(min_value=Fr(1, 20), max_value=1, max_denominator=50).filter(lambda b: b > 0)


def momentum_by_hand(model, x, grid, kind, k, beta):
    """The paper's recursion in (rho, x/alpha) with an explicit velocity (first step Euler)."""
    rho = (grid.path.sigma(grid.t) / grid.path.alpha(grid.t)).tolist()
    alpha = grid.path.alpha(grid.t).tolist()
    xbar, v, eps = x / alpha[0], None, []
    for n in range(grid.steps):
        eps.insert(0, model.eps(xbar * alpha[n], grid.t[n].expand(x.shape[0])))
        q = min(n + 1, k)
        ab, bw = adams_bashforth_weights(q), backward_weights(q)
        if v is None:
            v = eps[0]
        else:
            w = [beta * a for a in ab] if kind == "hb" else [a - (1 - beta) * b for a, b in zip(ab, bw)]
            v = float(1 - beta) * v + sum(float(c) * e for c, e in zip(w, eps))
        xbar = xbar + (rho[n + 1] - rho[n]) * v
    return xbar * alpha[-1]


@pytest.mark.parametrize("kind, k, beta", [("hb", 1, Fr(4, 5)), ("hb", 4, Fr(1, 2)), ("ghvb", 3, Fr(3, 10))])
def test_the_plan_is_the_velocity_recursion(kind, k, beta):
    model = ods.Model(lambda x, t: torch.tanh(x) + 0.01 * t.reshape(-1, 1), EDM, "eps")
    grid = G.karras(EDM, 25, sigma_min=0.05, to_zero=False)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20
    m = Momentum("m", order=1, kind=kind, steps_back=k, beta=beta, paper="test")
    out = ods.sample(model, x, grid, method=m)
    want = momentum_by_hand(model, x, grid, kind, k, beta)
    assert torch.allclose(out, want, rtol=1e-13, atol=1e-12)
    assert m.compile(EDM, grid).window == min(25, m.history + 1)


@pytest.mark.parametrize("kind", ["hb", "ghvb"])
def test_beta_one_is_adams_bashforth_with_lower_order_warm_up(kind):
    m = Momentum("m", order=2, kind=kind, steps_back=4, beta=Fr(1), paper="test")
    assert m.history == 3
    grid = G.karras(EDM, 12)
    p, q = m.compile(EDM, grid), ods.methods.get("ipndm").compile(EDM, grid)
    assert p.window == q.window and torch.allclose(p.update_hist, q.update_hist, rtol=1e-14, atol=0)


@settings(max_examples=15, deadline=None)
@given(beta=betas, k=st.integers(1, 5))
def test_ghvb_keeps_the_adams_order_and_hb_drops_to_one(beta, k):
    """Interior conditions C_q: GHVB-k is a k-th order LMM for every beta (error constant at beta = 1
    that of AB-k); HB-k (k >= 2) is first order unless beta = 1, its C_2 = (1 - beta) (k - 1) / 2 ... != 0."""
    ghvb = Momentum("g", order=1, kind="ghvb", steps_back=k, beta=beta, paper="test").interior()
    hb = Momentum("h", order=1, kind="hb", steps_back=k, beta=beta, paper="test").interior()
    assert ghvb.order == k
    if beta == 1:
        assert ghvb.error_constant == adams_bashforth(k).error_constant
    assert hb.order == (k if beta == 1 and k > 1 else 1)


def test_ghvb_2_error_constant_grows_like_one_over_beta():
    for beta in (Fr(1), Fr(4, 5), Fr(1, 2), Fr(1, 10)):
        lmm = Momentum("g", order=2, steps_back=2, beta=beta, paper="test").interior()
        assert lmm.error_constant == (6 - beta) / (12 * beta)


def test_symbolic_conditions_hold_for_every_beta():
    d = ods.analysis.derive(ods.methods.get("ghvb-4"))
    assert [str(c) for c in d.conditions[:5]] == ["0"] * 5 and d.interior_order == 4
    assert d.orders == {"uniform": 2, "smooth": 2, "any": 1}
    hb = ods.analysis.derive(ods.methods.get("hb-plms4"))
    assert str(hb.conditions[2]) == "1 - beta" and hb.order == 1


def interval_closed_form(kind, k, beta):
    """The real stability interval's end: the root zeta = -1 of rho - z sigma, z = rho(-1)/sigma(-1)."""
    m = Momentum("m", order=1, kind=kind, steps_back=k, beta=beta, paper="test")
    a, b = m.interior_coefficients()
    return float(sum(v * (-1) ** j for j, v in enumerate(a)) / sum(v * (-1) ** j for j, v in enumerate(b)))


@pytest.mark.parametrize("kind, k", [("hb", 1), ("hb", 4), ("ghvb", 2), ("ghvb", 4)])
def test_the_stability_interval_of_the_plan_grows_as_beta_decreases(kind, k):
    ab = adams_bashforth(k).stability_interval()
    ends = []
    for beta in (Fr(1), Fr(4, 5), Fr(3, 5)):
        z = interval_closed_form(kind, k, beta)
        m = Momentum("m", order=1, kind=kind, steps_back=k, beta=beta, paper="test")
        assert m.interior().stability_interval(z_max=40) == pytest.approx(z, rel=1e-9)
        if kind == "hb":  # HB: the Adams interval times (2 - beta) / beta
            assert z == pytest.approx(ab * float((2 - beta) / beta), rel=1e-8)
        # the plan's interior step (rho test, h = 1): stable on [z, 0], unstable just beyond z
        mu = np.concatenate([np.linspace(z, 0, 41)[:-1] * (1 - 1e-7), [z * (1 + 1e-6)]])
        rad = spectral_radius(amplification(m, 1.0, mu, "rho"))
        assert (rad[:-1] <= 1 + 1e-9).all() and rad[-1] > 1 + 1e-8, (beta, rad.max())
        ends.append(z)
    assert ends[0] == pytest.approx(ab, rel=1e-8) and ends[0] > ends[1] > ends[2]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(beta=Fr(0)), r"beta must be an exact rational .* in \(0, 1\]"),
        (dict(beta=0.8), "beta must be an exact rational"),
        (dict(beta=Fr(3, 2)), "beta"),
        (dict(kind="nesterov"), "kind must be one of"),
        (dict(steps_back=7), r"steps_back must be an integer in \[1, 6\]"),
        (dict(prediction="x0"), "prediction must be 'eps'"),
        (dict(kind="hb", steps_back=4, order=2), "has order 1 on smooth grids"),
        (dict(kind="ghvb", steps_back=4, order=3), "has order 2 on smooth grids"),
    ],
)
def test_bad_tables_are_refused(kw, match):
    args = dict(order=1, paper="test") | kw
    with pytest.raises(ValueError, match=match):
        Momentum("m", **args)


def test_the_boundary_locus_of_the_plan_is_the_closed_form():
    """stability.boundary_locus on the plan's rows = rho(e^{i theta}) / sigma(e^{i theta}) of the interior LMM."""
    m = Momentum("m", order=1, kind="ghvb", steps_back=2, beta=Fr(4, 5), paper="test")
    locus = ods.analysis.boundary_locus(m, 1.0, "rho", n=181)
    assert np.isfinite(locus[:, 0]).all() and np.isnan(locus[:, 1:]).all()  # one branch: linear in mu
    closed = m.interior().boundary_locus(182)[:-1]
    assert np.abs(locus[:, 0] - closed).max() < 1e-9


@pytest.mark.parametrize("name", ["ghvb-2", "hb-plms4"])
def test_derived_orders_per_grid_class_are_measured_on_the_plans(name):
    """Equal-step coefficients: the derivation's uniform and arbitrary-grid orders, measured by numeric_order."""
    m = ods.methods.get(name)
    orders = ods.analysis.derive(m).orders
    assert ods.analysis.numeric_order(m, "uniform").order == orders["uniform"]
    assert ods.analysis.numeric_order(m, "iid", (16, 32, 64, 128)).order == orders["any"] == 1
