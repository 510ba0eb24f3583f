"""Symbolic derivations: closed-form coefficients equal the compiled plans, known order conditions,
refusals of requests beyond the implementation or the time budget."""

from fractions import Fraction as Fr

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve.analysis import SymbolicLimitError, adams_bashforth, adams_moulton, derive, numeric_order
from odesolve.analysis.families import Family
from odesolve.analysis.lmm import LinearMultistep
from odesolve.analysis.symbolic import phi_numpy, rooted_trees
from odesolve.methods import ExponentialMultistep, ExponentialRK, RungeKutta, Weight

EDM = ods.paths.EDM()


def _grid(seed, steps=12):
    return Family("random", sigma_start=3.0, sigma_end=0.04, seed=seed)(steps)


def _geometry(m, g, n):
    lam = g.lambdas.numpy()
    rho = g.sigmas.numpy()
    u = lam if m.variable == "lambda" else rho
    h = u[n + 1] - u[n]
    r = [(u[n - j] - u[n]) / h for j in range(1, m.nodes)]
    if m.variable == "lambda":
        scale = float(EDM.alpha(g.t[n + 1])) if m.prediction == "x0" else -float(EDM.sigma(g.t[n + 1]))
    else:
        scale = float(EDM.alpha(g.t[n + 1]))
    return h, r, scale


# a weight row of one's own: w_1 = chi_1(h)/3 + h/6 (= h/2 + O(h^2): still second order)
MINE = ExponentialMultistep(
    "mine-2",
    order=2,
    prediction="eps",
    nodes=2,
    weights=((2, 1, Weight(chi=(Fr(1, 3),), h=Fr(1, 6))),),
    paper="a user's variant",
)


@pytest.mark.parametrize(
    "name",
    [
        "dpmpp-2m",
        "dpmpp-2m-taylor",
        "dpmpp-3m",
        "dpm-solver-2m",
        "dpm-solver-3m",
        "unip-bh1-2",
        "unip-bh1-3",
        "unip-bh2-3",
        "lms-2",
        "lms-3",
        MINE,
    ],
)
@settings(settings.get_profile("analysis"))
@given(seed=st.integers(0, 2**16 - 1))
def test_symbolic_predictor_equals_plan(name, seed):
    """The lambdified closed-form weights equal the plan's update row at every interior step: compile
    and the derivation read the same weight rows."""
    m = ods.methods.get(name)
    g = _grid(seed)
    plan = m.compile(EDM, g)
    f = derive(m).lambdify("predictor")
    for n in range(m.nodes - 1, g.steps):
        h, r, scale = _geometry(m, g, n)
        sym = scale * np.array(f(h, *r), dtype=float)
        num = plan.update_hist[n, : m.nodes].numpy()
        assert np.abs(sym - num).max() <= 1e-12 * np.abs(num).max(), (n, sym, num)


@pytest.mark.parametrize("name", ["unipc-bh1-2", "unipc-bh2-3"])
def test_symbolic_corrector_equals_plan(name):
    """UniPC's update row of step n is  ratio * (corrector - predictor of step n-1) + predictor of step n."""
    m = ods.methods.get(name)
    g = _grid(7)
    plan = m.compile(EDM, g)
    d = derive(m)
    fp, fc = d.lambdify("predictor"), d.lambdify("corrector")
    q = m.nodes
    sig = g.sigmas.numpy()
    for n in range(q, g.steps):
        h0, r0, a1 = _geometry(m, g, n)  # step n
        h1, r1, a0 = _geometry(m, g, n - 1)  # step n-1 (scale alpha_n)
        ratio = sig[n + 1] / sig[n]  # EDM: sigma_{n+1}/sigma_n
        row = np.zeros(q + 1)
        row[:q] += a1 * np.array(fp(h0, *r0), dtype=float)  # nodes t_n, t_{n-1}, ...
        row[: q + 1] += ratio * a0 * np.array(fc(h1, *r1), dtype=float)  # nodes t_n (r = 1), t_{n-1}, ...
        row[1 : q + 1] -= ratio * a0 * np.array(fp(h1, *r1), dtype=float)  # nodes t_{n-1}, ...
        num = plan.update_hist[n, : q + 1].numpy()
        assert np.abs(row - num).max() <= 1e-12 * np.abs(num).max(), (n, row, num)
        assert abs(float(plan.update_state[n]) - ratio) <= 1e-14


def test_phi_numpy_matches_mpmath():
    import mpmath

    mpmath.mp.dps = 50
    z = [-30.0, -5.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 5.0, 12.0]
    for k in range(5):
        taylor = lambda v, k=k: sum(mpmath.mpf(v) ** j / mpmath.factorial(j) for j in range(k))
        ref = [
            float((mpmath.exp(v) - taylor(v)) / mpmath.mpf(v) ** k) if v != 0 else 1 / float(mpmath.factorial(k))
            for v in z
        ]
        assert np.allclose(phi_numpy(k, np.array(z)), ref, rtol=1e-14, atol=0), k


def test_dpm_solver_2_order_conditions():
    """DPM-Solver-2 (and DPM-Solver++(2S)), r1 = 1/2 with b_2 = phi_1: psi_1 = 0 identically; psi_2 =
    phi_2 - phi_1/2 = -zeta/12 + ... (classical order 2, not stiffly); psi_3 and condition 4 fail."""
    for name in ("dpm-solver-2", "dpmpp-2s"):
        d = derive(name)
        c = {k.number: k for k in d.conditions}
        assert c["1"].identically
        assert not c["2"].identically and c["2"].valuation == 1
        assert c["3"].valuation == 0 and c["4"].valuation == 0
        assert (d.classical_order, d.stiff_order) == (2, 1)
    # the leading residual of psi_2 is -zeta/12 (zeta = +h in the eps-prediction form)
    d = derive("dpm-solver-2")
    res = next(k.residual for k in d.conditions if k.number == "2")
    h = sp.Symbol("h", positive=True)
    lead = sp.series(res.rewrite(sp.exp), h, 0, 2).removeO()
    assert sp.simplify(lead + h / 12) == 0


def test_user_exponential_rk_is_told_its_order():
    """A user's new table is analysed before it runs, and the numbers agree with the numeric order."""
    h2 = Fr(1, 2)
    res2s = ExponentialRK(
        "res-2s",
        order=2,
        prediction="x0",
        c=(Fr(0), h2),
        a=(((Fr(1),),),),
        b=((Fr(1), Fr(-2)), (Fr(0), Fr(2))),
        paper="RES (Zhang et al. 2023), 2 stages",
    )
    d = derive(res2s)
    assert (d.classical_order, d.stiff_order) == (2, 2)  # psi_2 = 0 identically: stiff order 2

    def third(r1, r2):  # DPM-Solver-3's pattern with the user's own nodes c = (0, r1, r2)
        return ExponentialRK(
            f"mine-{r1}-{r2}",
            order=3,
            prediction="x0",
            c=(Fr(0), r1, r2),
            a=(((Fr(1),),), ((Fr(1), -r2 / r1), (Fr(0), r2 / r1))),
            b=((Fr(1), -1 / r2), (Fr(0),), (Fr(0), 1 / r2)),
            paper="user table",
        )

    good, off = third(Fr(1, 4), Fr(2, 3)), third(Fr(1, 4), Fr(3, 4))
    d3 = derive(good)
    assert d3.classical_order == 3 and d3.stiff_order == 2
    assert numeric_order(lambda g: good.compile(g.path, g), "random").order == 3
    # with c_3 != 2/3 the weight on the last stage no longer matches phi_3: psi_3 = O(1), order 2
    d_off = derive(off)
    assert d_off.classical_order == 2
    assert next(c for c in d_off.conditions if c.number == "3").valuation == 0
    assert numeric_order(lambda g: off.compile(g.path, g), "random").order == 2
    r1, r2 = Fr(1, 4), Fr(2, 3)
    broken = ExponentialRK(
        "broken",
        order=3,
        prediction="x0",
        c=(Fr(0), r1, r2),
        a=(((Fr(1),),), ((Fr(1), Fr(0)), (Fr(0), Fr(0)))),
        b=((Fr(1), -1 / r2), (Fr(0),), (Fr(0), 1 / r2)),
        paper="user table",
    )
    assert derive(broken).classical_order == 2  # the third stage is only first-order accurate
    assert numeric_order(lambda g: broken.compile(g.path, g), "random").order == 2


def test_runge_kutta_trees_and_stability_function():
    assert [len(rooted_trees(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]
    d = derive("rk4")
    assert d.order == 4 and all(ok for *_, ok in d.conditions if _[1] <= 4)
    z = sp.Symbol("z")
    assert sp.expand(d.stability_function - (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24)) == 0
    assert derive("heun").order == 2 and derive("euler").order == 1


def test_linear_multistep_conditions():
    consts = {1: Fr(1, 2), 2: Fr(5, 12), 3: Fr(3, 8), 4: Fr(251, 720)}
    for k, c in consts.items():
        ab = adams_bashforth(k)
        assert ab.order == k and ab.error_constant == c
        assert derive(ab).order == k
    assert [adams_moulton(k).order for k in (1, 2, 3)] == [2, 3, 4]
    # lms-k in the equal-step limit is AB-k: r_j = -j
    for k in (2, 3):
        f = derive(f"lms-{k}").lambdify("predictor")
        beta = np.array(f(1.0, *[-float(j) for j in range(1, k)]), dtype=float)
        assert np.allclose(beta, [float(b) for b in adams_bashforth(k).beta[:-1][::-1]], rtol=1e-14)


def test_fixed_adams_orders_by_grid_class():
    d = derive("ipndm")
    assert d.orders == {"uniform": 2, "smooth": 2, "any": 1}
    assert derive("plms").orders == {"uniform": 3, "smooth": 2, "any": 1}


def test_a_weight_row_of_ones_own_is_derived_and_measured():
    assert derive(MINE).order == 2 == numeric_order(MINE, "random").order
    other = ExponentialMultistep("mine-1", order=1, prediction="eps", nodes=2, weights=((2, 1, Weight(h=Fr(1))),))
    assert derive(other).order == 1 == numeric_order(other, "random").order  # w_1 = h: not h/2, first order


def test_refusals():
    with pytest.raises(SymbolicLimitError, match="order 4"):
        derive("dpm-solver-3", max_order=5)
    with pytest.raises(SymbolicLimitError, match="up to order 8"):
        derive("rk4", max_order=9)
    with pytest.raises(SymbolicLimitError, match="path's time t"):
        derive("deis-3")
    big = ExponentialMultistep("adams-7", order=2, prediction="x0", nodes=7)
    with pytest.raises(SymbolicLimitError, match="symbolic limit"):
        derive(big)
    with pytest.raises(SymbolicLimitError, match="time budget"):
        derive("unipc-bh1-3", timeout=1e-9)
    with pytest.raises(TypeError, match="does not know tables"):
        derive(object())
    with pytest.raises(ValueError, match="max_order"):
        derive("rk4", max_order=0)


def test_inconsistent_tables_are_refused():
    with pytest.raises(ValueError, match="sum"):
        ExponentialRK("bad", order=2, prediction="x0", c=(Fr(0), Fr(1, 2)), a=(((Fr(1, 2),),),), b=((Fr(0),), (Fr(1),)))
    with pytest.raises(ValueError, match="row 1 of a sums"):
        RungeKutta("bad-rk", order=2, c=(Fr(0), Fr(1)), a=((Fr(1, 2),),), b=(Fr(1, 2), Fr(1, 2)))
    with pytest.raises(ValueError, match="not consistent"):
        LinearMultistep((Fr(-1), Fr(2)), (Fr(1), Fr(0)), name="bad-lmm")
