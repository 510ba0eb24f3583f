"""Mean-square stability of the stochastic plans (odesolve.analysis.mean_square) against closed forms
derived by hand from the papers' update formulas, against the executor (Monte Carlo of the same plan),
and a consistency property of every registered stochastic method."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.analysis import mean_square as ms
from odesolve.analysis import stability
from odesolve.plan import Rows

EDM = P.EDM()
STOCHASTIC = [n for n in ods.methods.names() if getattr(ods.methods.get(n), "stochastic", False)]
# Plans that add noise to a call's input (churn, restart jumps) are refused by the analysis (a test below)
_PLANS = {n: ods.methods.get(n).compile(P.EDM(), G.karras(P.EDM(), 6)) for n in STOCHASTIC}
NO_INPUT_NOISE = [n for n in STOCHASTIC if not bool((_PLANS[n].input_noise != 0).any())]
# The multiplicative test reads a call's noise as the reverse SDE's diffusion G dW: the samplers of other
# SDEs with the same marginals (ER-SDE's noise scales, the Langevin corrector) have other rates.
REVERSE_SDE = [n for n in NO_INPUT_NOISE if not n.startswith(("er-sde", "score-sde"))]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.floats(-2.5, 0.5),
    st.floats(-1.0, 1.0),
    st.floats(0.0, 1.2),
    st.sampled_from([0.05, 0.2, 0.7]),
)
def test_euler_maruyama_region_is_highams_closed_form(zr, zi, w, h):
    """Higham (2000), eq. 2.7: EM on dX = a X dt + nu X dW is mean-square stable iff |1 + z|^2 + |w|^2 < 1
    (z = a h, w = nu sqrt(h)); on the rho test of the EDM path the reverse SDE's EM is exactly that scheme."""
    z = complex(zr, zi)
    r = ms.ms_radius("euler-maruyama", h, z, w, "rho")
    assert r == pytest.approx(abs(1 + z) ** 2 + w**2, rel=1e-10, abs=1e-12)


def _ddpm_factor(z, h):
    """DDPM = exponential Euler-Maruyama on the lambda test: y' = R y + sqrt(1 - e^{-2h}) xi with
    R = e^{-h} + (1 + z/h) sinh h (mu = (a + 1)/2, a = z/h)."""
    return np.exp(-h) + (1 + z / h) * np.sinh(h)


@pytest.mark.parametrize("h", [0.1, 0.5, 1.5])
def test_ddpm_multiplicative_and_stationary_closed_forms(h):
    z = np.linspace(-2.5, 0.3, 15)
    w = np.linspace(0.0, 1.1, 15)
    R = _ddpm_factor(z, h)
    expected = R**2 + w**2 * (1 - np.exp(-2 * h)) / (2 * h)  # noise c_n nu y_n / sqrt(2), c_n/sigma = sqrt(1-e^-2h)
    np.testing.assert_allclose(ms.ms_radius("ddpm", h, z, w, "lambda"), expected, rtol=1e-10)
    neg = z[z < 0]
    stat = ms.stationary_variance("ddpm", h, neg)
    R = _ddpm_factor(neg, h)
    exact = np.where(R**2 < 1, -neg * (1 - np.exp(-2 * h)) / (h * (1 - R**2)), np.inf)
    np.testing.assert_allclose(stat, exact, rtol=1e-9)
    if h == 0.1:  # a = -1: close to the exact stationary variance 1/(-a)
        assert stat[-1] == pytest.approx(1.0, abs=0.01)
    else:  # a = -0.1/h: the explicit mu term makes R > 1, no stationary law (the exact SDE has one)
        assert stat[-1] == np.inf and ms.ms_radius("ddpm", h, -0.1, 0.0, "lambda", noise="additive") > 1


@pytest.mark.parametrize("variant", ["midpoint", "heun"])
def test_dpmpp_2m_sde_companion_matrix(variant):
    """DPM-Solver++(2M) SDE (eta = 1) on a uniform lambda grid, in y = x/sigma and f = e^lambda x0:
    y' = e^{-h} y + (2 sinh h + w e^h) f_n - w e^{2h} f_{n-1} + sqrt(1 - e^{-2h}) xi, f_n = mu y_n,
    w = (1 - e^{-2h})/2 (midpoint) or 1 - (1 - e^{-2h})/(2h) (heun); the multiplicative noise is
    sqrt((1 - e^{-2h})/2) nu y_n xi. L = M (x) M + B (x) B on the second moments of (y, f_{n-1})."""
    name = "dpmpp-2m-sde" if variant == "midpoint" else "dpmpp-2m-sde-heun"
    h = 0.4
    z = np.array([-2.0, -1.0, -0.3, 0.2])
    wn = np.array([0.2, 0.9, 0.5, 0.1])
    mu, nu = (z / h + 1) / 2, wn / math.sqrt(h)
    em = 1 - math.exp(-2 * h)
    w = em / 2 if variant == "midpoint" else 1 - em / (2 * h)
    for i in range(z.size):
        M = np.array([[math.exp(-h) + mu[i] * (2 * math.sinh(h) + w * math.exp(h)), -w * math.exp(2 * h)], [mu[i], 0]])
        B = np.array([[math.sqrt(em / 2) * nu[i], 0], [0, 0]])
        L = np.kron(M, M) + np.kron(B, B)
        expected = np.abs(np.linalg.eigvals(L)).max()
        assert ms.ms_radius(name, h, z[i], wn[i], "lambda") == pytest.approx(expected, rel=1e-9)


def test_sde_dpm_solver_1_on_a_rho_grid():
    """SDE-DPM-Solver-1 (noise form) on the rho test: xbar' = (1 + 2 mu (rho_n - rho_{n+1})) xbar +
    sqrt(rho_n^2 - rho_{n+1}^2) xi; the multiplicative noise divides the plan's noise by G = alpha sqrt(2 rho_n):
    radius |1 + z|^2 + nu^2 (rho_n^2 - rho_{n+1}^2) / (2 rho_n) at every step of any grid."""
    sig = np.array([8.0, 3.0, 1.2, 0.5, 0.1])
    grid = G.from_sigmas(EDM, torch.as_tensor(sig))
    plan = ods.methods.get("sde-dpm-solver-1").compile(EDM, grid)
    mu, nu = np.array([-0.7, 0.3, -2.0]), np.array([0.4, 1.3, 0.0])
    for n, L in enumerate(ms.moment_operators(plan, mu, nu, "rho")):
        r0, r1 = sig[n], sig[n + 1]
        expected = np.abs(1 + 2 * mu * (r0 - r1)) ** 2 + nu**2 * (r0**2 - r1**2) / (2 * r0)
        np.testing.assert_allclose(L[:, 0, 0].real, expected, rtol=1e-10)
        add = ms.moment_operators(plan, mu, 0.0, "rho", [n], noise="additive")[0]  # (y, 1) moments: noise enters
        np.testing.assert_allclose(add[:, 0, 3].real, r0**2 - r1**2, rtol=1e-10)


@pytest.mark.parametrize("name", NO_INPUT_NOISE)
def test_consistency_mean_square_rate(name):
    """Every stochastic method, at a small step, grows the second moment at the exact rate of
    dX = a X dt + nu X dW: E|X|^2 ~ exp((2 a + nu^2) t), so log(radius)/h -> 2a + nu^2 (first order in h);
    the additive test's radius is the deterministic step's spectral radius squared (for every sampler;
    the rate only for the reverse SDE's own discretisations)."""
    a, nu = -1.0, 0.8
    for h, tol in ((0.02, 0.05), (0.005, 0.0125)) if name in REVERSE_SDE else ():
        r = ms.ms_radius(name, h, a * h, nu * math.sqrt(h), "lambda")
        assert abs(math.log(float(r)) / h - (2 * a + nu**2)) < tol, (name, h, float(r))
    mu = np.array([0.1, -0.8, 0.45 + 0.2j])
    it = stability._Interior(name, 0.3, "lambda", None)
    det = stability.spectral_radius(it.matrix(mu))
    add = ms.ms_radius(name, 0.3, 2 * mu * 0.3 - 0.3, 0.0, "lambda", noise="additive")
    np.testing.assert_allclose(add, det**2, rtol=1e-9)


@pytest.mark.parametrize("name", NO_INPUT_NOISE)
def test_second_moments_agree_with_the_executor(name):
    """The moment operators (additive noise, the plan's own) propagated over a whole non-uniform grid give
    the second moment the executor reaches with the linear model x0 = mu x / alpha (Monte Carlo, 40000
    samples: 5 standard errors)."""
    sig = torch.tensor([6.0, 2.5, 1.1, 0.55, 0.3, 0.12])
    grid = G.from_sigmas(EDM, sig)
    plan = ods.methods.get(name).compile(EDM, grid)
    mu = 0.35
    ops = ms.moment_operators(plan, mu, 0.0, "lambda", noise="additive")
    v = np.array([1.0, 1.0])  # scaled start y_0 = 1, the constant
    Pm = np.outer(v, v).ravel()
    for L in ops:
        Pm = L[0] @ Pm
    D = round(math.sqrt(Pm.size))
    y2 = Pm.reshape(D, D)[0, 0].real
    B = 40000
    model = ods.Model(lambda x, t: mu * x, EDM, prediction="x0")
    x_T = torch.full((B, 1), float(sig[0]), dtype=torch.float64)
    x = ods.sample(model, x_T, grid, plan, generator=torch.Generator().manual_seed(0))
    emp = (x[:, 0] / sig[-1]) ** 2
    assert abs(float(emp.mean()) - y2) < 5 * float(emp.std()) / math.sqrt(B), (float(emp.mean()), y2)


def test_correlated_normals_within_a_step():
    """Two calls of one step that add the same Brownian increment (C = 1) add variance (c0 + c1)^2, not
    c0^2 + c1^2; half-overlapping intervals have correlation 1/2."""
    grid = G.from_sigmas(EDM, torch.tensor([2.0, 1.0]))

    def plan(b1):
        rows = Rows(2)
        rows.call([0, 1], [0, 0], [2.0, 1.5])
        rows.noise([0], 0.3, 2.0, 1.0)
        rows.noise([1], 0.5, 2.0, b1)
        return rows.plan("test", EDM, grid, "x0")

    for b1, corr in ((1.0, 1.0), (1.5, 1 / math.sqrt(2)), (1.999, math.sqrt(0.001))):
        L = ms.moment_operators(plan(b1), 0.0, 0.0, "lambda", noise="additive")[0]
        var = L[0, 0, 3].real  # E y_1^2 from the constant, y = x / sigma_1 = x
        assert var == pytest.approx(0.3**2 + 0.5**2 + 2 * corr * 0.3 * 0.5, rel=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="noise must be"):
        ms.ms_radius("ddpm", 0.3, -0.5, 0.1, noise="white")
    with pytest.raises(ValueError, match="z must be negative"):
        ms.stationary_variance("ddpm", 0.3, [0.1])
    with pytest.raises(ValueError, match="test must be"):
        ms.ms_radius("ddpm", 0.3, -0.5, 0.1, "sigma")
    grid = G.from_sigmas(EDM, torch.tensor([2.0, 1.0, 0.5]))
    rows = Rows(2)
    rows.call([0, 1], [0, 1], [2.0, 1.0])
    rows.noise([0, 1], 0.3, [2.0, 2.0], [1.0, 0.5])  # step 1 re-uses step 0's increment
    with pytest.raises(ValueError, match="independent noise across steps"):
        ms.moment_operators(rows.plan("test", EDM, grid, "x0"), 0.1, 0.1)
    with pytest.raises(ValueError, match="finite lambda"):
        ms.moment_operators(ods.methods.get("ddpm").compile(EDM, G.karras(EDM, 4)), 0.1)


def test_region_and_figure(tmp_path):
    r = ms.ms_stability_region("euler-maruyama", 0.1, "rho", n=(41, 21))
    Z, W2 = np.meshgrid(r.z, r.w2)
    closed = (1 + Z) ** 2 + W2 < 1
    boundary = np.abs((1 + Z) ** 2 + W2 - 1) < 1e-9
    assert np.array_equal(r.stable[~boundary], closed[~boundary]) and closed.any() and (~closed).any()
    pytest.importorskip("matplotlib")
    fig = ms.plot_ms_regions(["ddpm", "euler-maruyama"], 0.3, n=(31, 15))
    fig.savefig(tmp_path / "ms.png")
    assert (tmp_path / "ms.png").stat().st_size > 1000


@pytest.mark.parametrize("name", sorted(set(STOCHASTIC) - set(NO_INPUT_NOISE)))
def test_plans_with_input_noise_are_refused(name):
    plan = ods.methods.get(name).compile(P.EDM(), G.karras(P.EDM(), 6))
    with pytest.raises(ValueError, match="input_noise"):
        ms.moment_operators(plan, 0.3, 0.0, "lambda", noise="additive")
