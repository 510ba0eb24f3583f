"""The tables built on deterministic ones (odesolve.methods.ancestral): their plans reduce to known
tables where they must, and their weak order is measured where it differs from the variance's.

Ancestral steps: with the exact score on a Gaussian the mean error is first order and the variance
error second (tests/sde/test_orders.py measures weak order by the variance, so it leaves these to
this file); the strong order is measured there for every stochastic table."""

import importlib.util
from pathlib import Path

import pytest
import torch

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.methods.ancestral import Ancestral, ExponentialMultistepSDE, SinglestepSchedule
from odesolve.methods.exponential_rk import DDIM, DPM_SOLVER_3

_spec = importlib.util.spec_from_file_location("_sde_orders", Path(__file__).with_name("test_orders.py"))
orders = importlib.util.module_from_spec(_spec)  # the weak-error reader of test_orders.py (not collected twice)
_spec.loader.exec_module(orders)

EDM, VP = P.EDM(), P.VP.linear()
ANCESTRAL = [n for n in ods.methods.names() if isinstance(ods.methods.get(n), Ancestral)]
PLAN_FIELDS = ("times", "step", "input_state", "input_hist", "update_state", "update_hist", "update_noise")


def same_plan(a, b, tol=1e-13):
    for f in PLAN_FIELDS:
        u, v = getattr(a, f), getattr(b, f)
        if u.shape != v.shape:
            W = max(u.shape[-1], v.shape[-1]) if u.ndim == 2 else None
            if W is None:
                return False
            u, v = (torch.nn.functional.pad(w, (0, W - w.shape[-1])) for w in (u, v))
        if not torch.allclose(u.double(), v.double(), rtol=tol, atol=tol):
            return False
    return True


def grids_for_tests():
    return [
        (EDM, G.karras(EDM, 9, sigma_min=0.02, sigma_max=80.0)),  # ends at sigma = 0
        (EDM, G.karras(EDM, 9, sigma_min=0.02, sigma_max=80.0, to_zero=False)),
        (VP, G.uniform_lambda(VP, 7, 0.9, 1e-2)),
    ]


@pytest.mark.parametrize("eta", [0.0, 0.4, 1.0, 2.5])
def test_ancestral_ddim_is_ddpm(eta):
    """Ancestral steps of DDIM are DDPM with eta (Euler ancestral), on every path and at sigma = 0."""
    table = Ancestral("ancestral-ddim", order=1, base=DDIM, paper="test")
    for path, grid in grids_for_tests():
        assert same_plan(table.compile(path, grid, eta=eta), ods.methods.get("ddpm").compile(path, grid, eta=eta))


@pytest.mark.parametrize("name", ANCESTRAL)
def test_ancestral_with_eta_0_is_its_base_table(name):
    m = ods.methods.get(name)
    for path, grid in grids_for_tests():
        plan = m.compile(path, grid, eta=0.0)
        assert not plan.stochastic
        assert same_plan(plan, m.base.compile(path, grid))


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_multistep_sde_of_2m_is_dpmpp_2m_sde(eta):
    """The SDE steps of dpmpp-2m (midpoint) and dpmpp-2m-taylor are dpmpp-2m-sde and its heun variant."""
    for base, target in (("dpmpp-2m", "dpmpp-2m-sde"), ("dpmpp-2m-taylor", "dpmpp-2m-sde-heun")):
        table = ExponentialMultistepSDE("sde-of-" + base, order=2, weak_order=2, base=ods.methods.get(base), paper="x")
        for path, grid in grids_for_tests():
            got, want = table.compile(path, grid, eta=eta), ods.methods.get(target).compile(path, grid, eta=eta)
            assert same_plan(got, want), (base, path)


def test_3m_sde_with_eta_0_is_k_diffusions_3m():
    m = ods.methods.get("dpmpp-3m-sde")
    for path, grid in grids_for_tests():
        assert same_plan(m.compile(path, grid, eta=0.0), ods.methods.get("dpmpp-3m-taylor").compile(path, grid))


def test_3m_taylor_differs_from_dpmpp_3m_in_the_second_step_only():
    grid = G.karras(EDM, 8, sigma_min=0.02, sigma_max=80.0)
    a, b = (ods.methods.get(n).compile(EDM, grid) for n in ("dpmpp-3m-taylor", "dpmpp-3m"))
    differs = ((a.update_hist - b.update_hist).abs() > 1e-14).any(1) | ((a.update_state - b.update_state).abs() > 0)
    assert torch.nonzero(differs).flatten().tolist() == [1]


def test_dpm_solver_fast_is_dpm_solver_3_with_a_lower_order_tail():
    grid = G.uniform_lambda(EDM, 6, 60.0, 0.02)
    fast = ods.methods.ancestral.DPM_SOLVER_FAST
    plan, three = fast.compile(EDM, grid), DPM_SOLVER_3.compile(EDM, grid)
    assert plan.calls == 3 * 5 + 2 and plan.step.tolist() == sorted([*range(6)] * 3)[:-1]
    k = 15  # the first call of the last step: every row before it is DPM-Solver-3's
    for f in ("times", "input_state", "update_state", "update_noise"):
        assert torch.allclose(getattr(plan, f)[:k], getattr(three, f)[:k], rtol=1e-14, atol=1e-14)
    assert torch.allclose(plan.update_hist[:k, :3], three.update_hist[:k, :3], rtol=1e-14, atol=1e-14)
    assert torch.allclose(plan.input_hist[:k, :3], three.input_hist[:k, :3], rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="tail must hold orders"):
        SinglestepSchedule("bad", order=1, prediction="eps", tail=(4,), paper="x")
    with pytest.raises(ValueError, match="order 3 exceeds"):
        SinglestepSchedule("bad", order=3, prediction="eps", tail=(1,), paper="x")


@pytest.mark.parametrize("opts", [{}, {"s_churn": 80.0, "s_tmin": 0.1, "s_tmax": 1.0, "s_noise": 0.5}])
def test_churn_around_heun_is_edm_sde(opts):
    """Churn(heun) (EDM's churn as a wrapper of the heun table) runs edm-sde's sampler: the same samples
    from the same Brownian paths, on every path, to sigma = 0 or not."""
    from odesolve.methods.noise_jumps import HEUN_CHURN
    from odesolve.toy.gaussian import Gaussian

    gauss = Gaussian([0.5, -0.3], [[0.25, 0.05], [0.05, 0.4]])
    for path, grid in grids_for_tests():
        x = torch.linspace(-2, 2, 10, dtype=torch.float64).reshape(5, 2) * float(path.sigma(grid.t[0]))
        model = gauss.model(path, "x0")
        a = ods.sample(model, x, grid, method="edm-sde", seeds=range(5), **opts)
        b = ods.sample(model, x, grid, method=HEUN_CHURN, seeds=range(5), **opts)
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-13), path
        assert not torch.allclose(a, ods.sample(model, x, grid, method="heun"), atol=1e-3)


@pytest.mark.parametrize("name", ["euler-churn", "heun-churn", "dpm-solver-2-churn"])
def test_churn_tables_keep_the_gaussian_marginal_to_their_order(name):
    """The churn tables' marginal weak error (x_T drawn from the exact marginal) falls with the declared
    weak order (1 for Euler, 2 for Heun and DPM-Solver-2)."""
    from odesolve.methods import noise_jumps

    table = {t.name: t for t in (noise_jumps.EULER_CHURN, noise_jumps.HEUN_CHURN, noise_jumps.DPM_2_CHURN)}[name]
    path, make = orders.GRIDS["edm"]
    ns = (32, 64, 128, 256)
    opts = {"s_churn": 10.0, "s_tmin": 0.0, "s_tmax": float("inf")}
    errs = [max(abs(e) for e in orders.marginal_weak_errors(table, path, make(n), **opts)) for n in ns]
    assert abs(orders.slope(ns, errs) - table.weak_order) <= 0.2, errs


class _BrownianBasis(orders._Basis):
    brownian = True  # unit noise at one call per sample, offered to plans whose noise intervals overlap


def correlated_weak_errors(method, path, grid, x_T=1.3, **options):
    """``orders.weak_errors`` for plans whose xi_k are correlated Brownian increments: the sample is
    ``a + M x_T + sum_k c_k xi_k`` with Cov(xi_j, xi_k) = |I_j & I_k| / sqrt(|I_j| |I_k|)."""
    plan = ods.methods.get(method).compile(path, grid, **options)
    noisy = torch.nonzero((plan.update_noise != 0) | (plan.input_noise != 0)).flatten().tolist()
    x = torch.zeros(2 + len(noisy), 1, dtype=torch.float64)
    x[1] = 1.0
    out = ods.execute(plan, orders.GAUSS.model(path, "x0"), x, noise=_BrownianBasis(noisy))[:, 0]
    c, iv = out[2:] - out[0], plan.noise_interval[noisy]
    lo, hi = iv.min(1).values, iv.max(1).values
    overlap = (torch.minimum(hi[:, None], hi[None]) - torch.maximum(lo[:, None], lo[None])).clamp(min=0)
    var = c @ (overlap / torch.sqrt((hi - lo)[:, None] * (hi - lo)[None])) @ c
    exact = orders.GAUSS.reverse_sde_marginal(torch.tensor([[x_T]], dtype=torch.float64), grid.t[0], grid.t[-1], path)
    return float(out[0] + (out[1] - out[0]) * x_T - exact.mean[0, 0]), float(var - exact.cov[0, 0])


def _dpmpp_sde(r):
    from odesolve.adapters.kdiffusion.samplers import _stages

    return _stages(r)


@pytest.mark.parametrize("r", [0.5, 1 / 3])
@pytest.mark.parametrize("where", sorted(orders.GRIDS))
def test_ancestral_stages_weak_order(r, where):
    """k-diffusion's DPM-Solver++ SDE (eta = 1) against the reverse SDE's law from x_T: on the Gaussian its
    mean is exact and its variance error falls with the declared weak order 2 (slopes 2.18 / 2.12 for
    r = 1/2 over 32..256 steps; 1.8 for r = 1/3, whose last pairs approach 2)."""
    table = _dpmpp_sde(r)
    path, make = orders.GRIDS[where]
    ns = (32, 64, 128, 256) if r == 0.5 else (64, 128, 256, 512)
    errors = [correlated_weak_errors(table, path, make(n)) for n in ns]
    assert max(abs(e[0]) for e in errors) <= 1e-12
    assert abs(orders.slope(ns, [e[1] for e in errors]) - table.weak_order) <= (0.2 if r == 0.5 else 0.3), errors


@pytest.mark.slow  # ~40 s each under load (tests/sde/test_orders.py keeps its strong orders there too)
@pytest.mark.parametrize("r", [0.5, 1 / 3])
def test_ancestral_stages_strong_order(r):
    """Pathwise (the same Brownian paths on every grid, x_N - x_2N): strong order 1, within 0.15 over
    64..512 steps (0.98 for r = 1/2, 0.95 for r = 1/3); 64..256 in the reduced form (1.0 for r = 1/2)."""
    table = _dpmpp_sde(r)
    ns = (64, 128, 256, 512) if orders.FULL else (64, 128, 256)
    assert abs(orders.slope(ns, orders.strong_differences(table, "edm", ns)) - table.strong_order) <= 0.15


def test_ancestral_stages_with_eta_0_is_dpmpp_2s_and_its_plan_names_overlapping_increments():
    grid = G.karras(EDM, 8, sigma_min=0.02, sigma_max=80.0)
    table = _dpmpp_sde(0.5)
    x = torch.linspace(-2, 2, 6, dtype=torch.float64).reshape(3, 2) * 80.0
    model = orders.GAUSS.model(EDM, "x0")
    want = ods.sample(model, x[:, :1], grid, method="dpmpp-2s")
    assert torch.allclose(ods.sample(model, x[:, :1], grid, method=table, eta=0.0), want, rtol=1e-13, atol=1e-13)
    plan = table.compile(EDM, grid, eta=1.0)
    assert plan.correlated_noise and plan.calls == 2 * 7 + 1
    with pytest.raises(ValueError, match="correlated Brownian"):
        ods.sample(model, x[:, :1], grid, method=table, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ANCESTRAL)
@pytest.mark.parametrize("where", sorted(orders.GRIDS))
def test_ancestral_weak_order_is_that_of_the_mean(name, where):
    """The mean error falls with the declared weak order (1); the variance error at least as fast,
    and it is the smaller one once the steps are small."""
    path, make = orders.GRIDS[where]
    m = ods.methods.get(name)
    ns = (64, 128, 256, 512)
    errors = [orders.weak_errors(name, path, make(n)) for n in ns]
    means, variances = [e[0] for e in errors], [e[1] for e in errors]
    assert abs(orders.slope(ns, means) - m.weak_order) <= 0.15, (name, means)
    assert abs(variances[-1]) < abs(means[-1]), (name, variances, means)
