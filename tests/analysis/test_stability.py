"""Linear stability of plans: known values (Adams-Bashforth intervals, RK4's stability function,
DDIM's interval), the table of docs/theory.md (stability intervals) recomputed against closed forms,
the plan interpreter against the executor, and guidance (including the last step to sigma = 0)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve.analysis import (
    adams_bashforth,
    amplification,
    boundary_locus,
    derive,
    guidance_mu,
    guidance_stability,
    plan_transfer,
    stability_function,
    stability_interval,
    stability_region,
    step_matrices,
)
from odesolve.analysis.families import Family
from odesolve.analysis.stability import final_step_factor

EDM = ods.paths.EDM()
AB_INTERVALS = {1: -2.0, 2: -1.0, 3: -6.0 / 11.0, 4: -0.3}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_adams_bashforth_real_intervals(k):
    assert adams_bashforth(k).stability_interval() == pytest.approx(AB_INTERVALS[k], abs=1e-9)


@pytest.mark.parametrize("name,k", [("lms-1", 1), ("lms-2", 2), ("lms-3", 3), ("ipndm", 4), ("plms", 4)])
def test_plans_in_the_equal_step_limit_are_adams_bashforth(name, k):
    """On a uniform rho-grid the interior step of lms-k (and the fixed AB4 of ipndm / plms) is AB-k:
    the interval in z = mu * drho is AB-k's."""
    h = 0.05
    assert stability_interval(name, h, "rho") * h == pytest.approx(AB_INTERVALS[k], abs=1e-7)


def test_boundary_locus_of_a_plan_is_the_classical_one():
    h = 0.1
    locus = boundary_locus("lms-2", h, "rho", n=361).ravel()
    locus = locus[np.isfinite(locus)] * h
    ref = adams_bashforth(2).boundary_locus(361)
    # every classical locus point is on the plan's locus and vice versa
    d = np.abs(ref[:, None] - locus[None, :])
    assert d.min(1).max() < 2e-2 and d.min(0).max() < 2e-2


def test_rk4_stability_function():
    h = 0.3
    R = stability_function("rk4", h, "rho")
    assert np.allclose(R.coef, [1, h, h**2 / 2, h**3 / 6, h**4 / 24], rtol=1e-12, atol=1e-15)
    assert stability_interval("rk4", h, "rho") * h == pytest.approx(-2.785293563405, abs=1e-8)
    # the symbolic stability function of the table is the same polynomial in z = mu h
    z = derive("rk4").stability_function.free_symbols.pop()
    assert [float(derive("rk4").stability_function.coeff(z, i)) for i in range(5)] == pytest.approx(
        [1, 1, 1 / 2, 1 / 6, 1 / 24]
    )


@settings(settings.get_profile("analysis"))
@given(h=st.floats(0.05, 3.0))
def test_ddim_interval_closed_form(h):
    assert stability_interval("ddim", h) == pytest.approx(-2 / math.expm1(h), rel=1e-8)
    R = stability_function("ddim", h)
    assert np.allclose(R.coef, [1.0, math.expm1(h)], rtol=1e-12)
    # Euler in rho on the lambda test is DDIM
    assert np.allclose(stability_function("euler", h, "lambda").coef, R.coef, rtol=1e-12)


def _closed_form(name, h):
    """The boundary locus of docs/theory.md section 6, mu(theta) = (e^{iq theta} - e^{i(q-1) theta}) /
    sum_j c_j e^{(j+1)h} e^{i(q-1-j) theta}, with the weights c_j of the symbolic derivation at equal
    steps (r_j = -j): the interval ends at the real locus point nearest 0 on the negative side (0 when
    the principal root leaves the disc at once, i.e. sum_j c_j e^{(j+1)h} < 0)."""
    m = ods.methods.get(name)
    q = m.nodes
    c = np.array(derive(m).lambdify("predictor")(h, *[-float(j) for j in range(1, q)]), dtype=float)
    e = np.exp(h * np.arange(1, q + 1))
    if float(c @ e) < -1e-9 * np.abs(c * e).max():  # (h = 1 for 2M is the tangent case: = 0 exactly)
        return 0.0

    def mu(theta):
        z = np.exp(1j * theta)
        return (z**q - z ** (q - 1)) / sum(c[j] * e[j] * z ** (q - 1 - j) for j in range(q))

    th = np.linspace(1e-6, np.pi, 20001)
    im = mu(th).imag
    reals = [mu(np.pi).real]
    for k in np.nonzero(np.sign(im[:-1]) != np.sign(im[1:]))[0]:
        a, b = th[k], th[k + 1]
        for _ in range(80):
            mid = 0.5 * (a + b)
            a, b = (mid, b) if np.sign(mu(mid).imag) == np.sign(mu(a).imag) else (a, mid)
        reals.append(mu(0.5 * (a + b)).real)
    neg = [r for r in reals if r < -1e-12]
    return max(neg)


def test_theory_2_2_table_recomputed():
    """Most negative stable mu of DDIM / DPM-Solver++(2M, Taylor) / 3M as coded / 3M with the Taylor
    D2 weight, at h = 0.1 ... 1.5, against the closed forms (DDIM: -2/(e^h - 1); the multistep
    methods: the r = -1 crossing of their characteristic polynomial), and against the
    three-digit values of an independent computation (the table of docs/theory.md section 6)."""
    hs = [0.1, 0.25, 0.5, 1.0, 1.5]
    names = ["ddim", "dpmpp-2m-taylor", "dpmpp-3m", "dpmpp-3m-corrected"]
    theory = {
        0.1: [-19.0, -9.18, -5.31, -4.80],
        0.25: [-7.04, -3.22, -1.75, -1.57],
        0.5: [-3.08, -1.27, -0.62, -0.54],
        1.0: [-1.16, -0.37, -0.135, -0.115],
        1.5: [-0.57, 0.0, -0.033, -0.025],
    }
    for h in hs:
        got = [stability_interval(n, h) for n in names]
        assert got[0] == pytest.approx(-2 / math.expm1(h), rel=1e-9)
        for n, g in zip(names[1:], got[1:]):
            assert g == pytest.approx(_closed_form(n, h), rel=1e-7, abs=1e-9), (n, h)
        assert np.allclose(got, theory[h], rtol=0.02, atol=0.006), (h, got)


@pytest.mark.parametrize("name", ["dpmpp-3m", "unipc-bh2-3", "dpm-solver-3", "heun", "plms"])
def test_plan_interpreter_matches_the_executor(name):
    """The step matrices, multiplied along a random non-uniform grid, give what the executor
    computes with the linear test model itself (both tests, complex mu through real and imaginary parts)."""
    g = Family("random", sigma_start=2.0, sigma_end=0.05, seed=3)(9)
    plan = ods.methods.get(name).compile(EDM, g)
    mus = np.array([-3.0, -0.4, 0.7])
    for test in ("lambda", "rho"):
        T = plan_transfer(plan, mus, test).real

        def fn(x, t, test=test):
            a, s = EDM.alpha(t)[:, None], EDM.sigma(t)[:, None]
            mu = torch.as_tensor(mus)[:, None]
            if test == "lambda":
                return mu * x / a if plan.prediction == "x0" else (1 - mu) * x / s
            return -mu * x / a if plan.prediction == "eps" else (1 + s / a * mu) * x / a

        x0 = torch.ones(3, 1, dtype=torch.float64)
        scale = (EDM.sigma if test == "lambda" else EDM.alpha)(g.t)
        out = ods.execute(plan, ods.Model(fn, EDM, plan.prediction), x0 * scale[0])[:, 0] / scale[-1]
        assert np.allclose(T, out.numpy(), rtol=1e-10), (test, T, out)


def test_multistep_amplification_matrix_is_companion_like():
    M = amplification("dpmpp-3m", 0.5, np.array([-1.0, 0.0]))
    assert M.shape == (2, 3, 3)
    ev = np.abs(np.linalg.eigvals(M[1]))
    assert ev.max() == pytest.approx(1.0, abs=1e-12)  # consistency: the principal root at mu = 0
    reg = stability_region("ddim", 0.5, re=(-4.0, 0.5), im=(-2.0, 2.0), n=(91, 61))
    mu = reg.mu
    assert np.array_equal(reg.stable, np.abs(1 + mu * math.expm1(0.5)) <= 1 + 1e-10)
    with pytest.raises(ValueError, match="amplification matrix"):
        stability_function("dpmpp-2m", 0.5)


def test_guidance_moves_eigenvalues_out_of_the_region():
    lam = np.array([-2.0, 0.0, 2.0])
    mu = guidance_mu(lam, [0.04], [1.0], 5.0)[:, 0]
    e2 = np.exp(2 * lam)
    ref = 6 * 0.04 * e2 / (0.04 * e2 + 1) - 5 * e2 / (e2 + 1)
    assert np.allclose(mu, ref, rtol=1e-13)
    g = ods.grids.karras(EDM, 10, sigma_min=0.002, sigma_max=80.0)
    free = [guidance_stability(n, g, [0.04, 0.5], [1.0, 0.5], 0.0) for n in ("ddim", "dpmpp-2m", "dpmpp-3m")]
    assert all(r.stable.all() for r in free)  # no guidance: mu in (0, 1), nothing decays unstably
    guided = {n: guidance_stability(n, g, [0.04, 0.5], [1.0, 0.5], 7.5) for n in ("ddim", "dpmpp-2m", "dpmpp-3m")}
    bad = {n: int((~r.stable).sum()) for n, r in guided.items()}
    assert bad["dpmpp-3m"] >= bad["dpmpp-2m"] >= 1 and bad["dpmpp-3m"] > bad["ddim"], bad
    assert guided["dpmpp-2m"].mu.min() < -4  # the guided eigenvalue is large and negative
    # a full covariance pair gives the same mu as its eigenvalues when they commute
    full = guidance_mu(lam, np.diag([0.04, 0.5]), np.diag([1.0, 0.5]), 5.0)
    assert np.allclose(np.sort(full, 1), np.sort(guidance_mu(lam, [0.04, 0.5], [1.0, 0.5], 5.0), 1))


@pytest.mark.parametrize("name", ["ddim", "dpmpp-2m", "dpmpp-3m", "plms", "deis-3", "dpm-solver-3"])
def test_final_step_factor_matches_the_executor(name):
    """The factor of a last step to sigma = 0, in data units, equals what the executor computes with
    the frozen linear test model (x0 = mu x / alpha) on the same grid; for DDIM it is mu itself,
    where the exact frozen flow gives 0 (du/dlambda = (mu - 1) u over an infinite lambda step)."""
    g = ods.grids.from_sigmas(EDM, torch.tensor([2.0, 1.3, 0.9, 0.6, 0.4, 0.25, 0.0], dtype=torch.float64))
    plan = ods.methods.get(name).compile(EDM, g)
    mus = np.array([-3.0, -0.4, 0.7])
    F = final_step_factor(plan, mus, "lambda")

    def fn(x, t):
        a, s = EDM.alpha(t)[:, None], EDM.sigma(t)[:, None]
        mu = torch.as_tensor(mus)[:, None]
        return mu * x / a if plan.prediction == "x0" else (1 - mu) * x / s

    x = torch.ones(3, 1, dtype=torch.float64) * EDM.sigma(g.t[0])
    _, traj = ods.sample(ods.Model(fn, EDM, plan.prediction), x, g, method=name, return_trajectory=True)
    a = EDM.alpha(g.t)
    out = (traj[-1, :, 0] / a[-1]) / (traj[-2, :, 0] / a[-2])
    assert np.allclose(F, out.numpy(), rtol=1e-9), (F, out)
    if name == "ddim":
        assert np.allclose(F, mus, rtol=1e-12)


def test_guided_last_step_to_sigma_zero_is_judged_not_assumed_exact():
    """DDIM's step from sigma = 0.5 to 0 multiplies a guided mode by mu_w(0.5) = -4.83 (w = 7.5,
    variances 0.04 and 1 on EDM: mu_w = 8.5 * 0.16 / 1.16 - 7.5 * 4 / 5): amplified, so unstable,
    and the executor running the guided model agrees on the factor."""
    w, sc, su = 7.5, 0.04, 1.0
    g = ods.grids.from_sigmas(EDM, torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=torch.float64))
    r = guidance_stability("ddim", g, [sc], [su], w)
    expected = (1 + w) * sc * 4 / (sc * 4 + 1) - w * su * 4 / (su * 4 + 1)
    assert expected == pytest.approx(-4.8276, abs=1e-4)
    assert r.mu[-1, 0] == pytest.approx(expected, rel=1e-12)
    assert r.radius[-1, 0] == pytest.approx(-expected, rel=1e-12) and not r.stable[-1]

    def guided(x, t):
        a, s = EDM.alpha(t)[:, None], EDM.sigma(t)[:, None]
        return (1 + w) * a * sc / (a * a * sc + s * s) * x - w * a * su / (a * a * su + s * s) * x

    _, traj = ods.sample(
        ods.Model(guided, EDM, "x0"), torch.ones(1, 1, dtype=torch.float64), g, method="ddim", return_trajectory=True
    )
    assert float(traj[-1, 0, 0] / traj[-2, 0, 0]) == pytest.approx(expected, rel=1e-12)


def test_bad_inputs():
    g = ods.grids.karras(EDM, 6)  # ends at sigma = 0
    plan = ods.methods.get("ddim").compile(EDM, g)
    with pytest.raises(ValueError, match="finite lambda"):
        step_matrices(plan, [0.0])
    with pytest.raises(ValueError, match="test must be"):
        stability_interval("ddim", 0.5, "sigma")
    with pytest.raises(ValueError, match="positive step"):
        stability_interval("ddim", -1.0)
    with pytest.raises(ValueError, match="not registered"):
        stability_interval("no-such-method", 0.5)
