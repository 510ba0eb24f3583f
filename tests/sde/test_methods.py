"""The stochastic tables against their papers' formulas and k-diffusion, their singular ends, and the
executor's noise arguments (per-sample seeds, Brownian intervals, generator)."""

import importlib.util
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

import odesolve as ods
from odesolve import grids as G
from odesolve import noise as N
from odesolve import paths as P
from odesolve.plan import Rows
from odesolve.toy.gmm import GaussianMixture

EDM = P.EDM()
DISCRETE = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012)
ZSNR = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
STOCHASTIC = [n for n in ods.methods.names() if ods.methods.get(n).stochastic]
MIXTURE = GaussianMixture(
    [0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [[[0.2, 0.05], [0.05, 0.1]], [[0.3, 0.0], [0.0, 0.2]]]
)


# (weak order, strong order) as declared; tests/sde/test_orders.py measures them
ORDERS = {
    "ddpm": (1, 1.0),
    "dpmpp-2m-sde": (2, 1.0),
    "dpmpp-2m-sde-heun": (2, 1.0),
    "sde-dpm-solver-1": (1, 1.0),
    "euler-maruyama": (1, 1.0),
    "score-sde-pc": (0, 0.0),
    "sa-solver": (2, 1.0),
    "er-sde-1": (1, 1.0),
    "er-sde-2": (2, 1.0),
    "er-sde-3": (2, 1.0),
    "edm-sde": (2, 1.0),
    "restart": (2, 2.0),
}


def test_the_stochastic_tables_are_registered_with_their_orders():
    ancestral = {t.name for t in ods.methods.ancestral.TABLES if t.stochastic}  # tests/sde/test_ancestral.py
    assert set(STOCHASTIC) == set(ORDERS) | ancestral
    assert ods.methods.aliases()["euler-ancestral"] == "ddpm"
    for name in ORDERS:
        m = ods.methods.get(name)
        assert (m.weak_order, m.strong_order) == ORDERS[name] and m.order == max(m.weak_order, 1) and m.paper
        assert m.compile(EDM, G.karras(EDM, 5)).stochastic
    with pytest.raises(ValueError, match="order must be the weak order"):
        ods.methods.stochastic.ExponentialSDE("x", order=1, weak_order=2, paper="x")
    with pytest.raises(ValueError, match="nodes"):
        ods.methods.stochastic.ExponentialSDE("x", order=1, nodes=2, noise="ancestral", paper="x")
    with pytest.raises(ValueError, match="eta"):
        ods.methods.get("ddpm").compile(EDM, G.karras(EDM, 5), eta=-0.1)
    with pytest.raises(TypeError, match="eta"):
        ods.methods.get("ddpm").compile(EDM, G.karras(EDM, 5), eta="1")
    with pytest.raises(ValueError, match="eta = 1"):
        ods.methods.get("sde-dpm-solver-1").compile(EDM, G.karras(EDM, 5), eta=0.5)
    with pytest.raises(ValueError, match="noise form"):
        ods.methods.stochastic.ExponentialSDE("x", order=1, prediction="eps", eta=0.5, paper="x")


# -- the papers' formulas -------------------------------------------------------------------------


def _abar(path, t):
    return path.alpha(t) ** 2


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ddpm_table_is_ddim_with_eta(eta):
    """Song et al. (2021), eq. 12 and 16, on a discrete schedule with skipped steps:
    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - s_eta^2) (x_t - sqrt(abar_t) x0)/sqrt(1 - abar_t) + s_eta z,
    s_eta = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s);
    eta = 1 is DDPM's posterior (Ho et al. 2020, eq. 7)."""
    grid = G.discrete(DISCRETE, 13, spacing="trailing")
    plan = ods.methods.get("ddpm").compile(DISCRETE, grid, eta=eta)
    at, as_ = _abar(DISCRETE, grid.t[:-1]), _abar(DISCRETE, grid.t[1:])
    s_eta = eta * torch.sqrt((1 - as_) / (1 - at) * (1 - at / as_))
    state = torch.sqrt(1 - as_ - s_eta**2) / torch.sqrt(1 - at)
    assert torch.allclose(plan.update_state, state, rtol=1e-12, atol=1e-14)
    assert torch.allclose(plan.update_hist[:, 0], torch.sqrt(as_) - state * torch.sqrt(at), rtol=1e-10, atol=1e-14)
    assert torch.allclose(plan.update_noise, s_eta, rtol=1e-12, atol=1e-14)
    if eta == 1.0:  # Ho et al.: posterior mean and variance beta_tilde with beta = 1 - abar_t/abar_s
        beta = 1 - at / as_
        assert torch.allclose(plan.update_state, torch.sqrt(1 - beta) * (1 - as_) / (1 - at), rtol=1e-12)
        assert torch.allclose(plan.update_hist[:, 0], torch.sqrt(as_) * beta / (1 - at), rtol=1e-10)
        assert torch.allclose(plan.update_noise**2, (1 - as_) / (1 - at) * beta, rtol=1e-12)
    if eta == 0.0:
        assert not plan.stochastic
        ddim = ods.methods.get("ddim").compile(DISCRETE, grid)
        assert torch.allclose(plan.update_state, ddim.update_state, rtol=1e-13)
        assert torch.allclose(plan.update_hist[:, 0], ddim.update_hist[:, 0], rtol=1e-12)


def test_ddpm_and_the_first_2m_sde_step_are_dpmpp_1_sde():
    """Lu et al. (2022), DPM-Solver++(1) SDE: x_t = sigma_t/sigma_s e^{-h} x_s + alpha_t (1 - e^{-2h}) x0
    + sigma_t sqrt(1 - e^{-2h}) z; the same on a VP path (alpha != 1) for the 2M SDE's eta = 1 first step."""
    for path, grid in ((EDM, G.karras(EDM, 9, to_zero=False)), (DISCRETE, G.discrete(DISCRETE, 9))):
        la, ls = path.log_alpha(grid.t), path.log_sigma(grid.t)
        h = (la - ls)[1:] - (la - ls)[:-1]
        state = torch.exp(ls[1:] - ls[:-1] - h)
        w = torch.exp(la[1:]) * -torch.expm1(-2 * h)
        c = torch.exp(ls[1:]) * torch.sqrt(-torch.expm1(-2 * h))
        ddpm = ods.methods.get("ddpm").compile(path, grid)
        assert torch.allclose(ddpm.update_state, state, rtol=1e-12)
        assert torch.allclose(ddpm.update_hist[:, 0], w, rtol=1e-12)
        assert torch.allclose(ddpm.update_noise, c, rtol=1e-12)
        for name in ("dpmpp-2m-sde", "dpmpp-2m-sde-heun"):
            p = ods.methods.get(name).compile(path, grid)
            assert torch.allclose(p.update_state, state, rtol=1e-12) and torch.allclose(p.update_noise, c, rtol=1e-12)
            assert math.isclose(float(p.update_hist[0, 0]), float(w[0]), rel_tol=1e-12)


def test_sde_dpm_solver_1_is_the_noise_form_of_exponential_euler_maruyama():
    """Lu et al. (2022), eq. 13: x_t = alpha_t/alpha_s x_s - 2 sigma_t (e^h - 1) eps + sigma_t sqrt(e^{2h} - 1) z,
    e^h = alpha_t sigma_s / (alpha_s sigma_t); on a VP schedule and on EDM, where it is
    x_t = x_s - 2 (sigma_s - sigma_t) eps + sqrt(sigma_s^2 - sigma_t^2) z."""
    grid = G.discrete(DISCRETE, 11, spacing="trailing")
    plan = ods.methods.get("sde-dpm-solver-1").compile(DISCRETE, grid)
    a0, a1 = DISCRETE.alpha(grid.t[:-1]), DISCRETE.alpha(grid.t[1:])
    s0, s1 = DISCRETE.sigma(grid.t[:-1]), DISCRETE.sigma(grid.t[1:])
    eh = a1 * s0 / (a0 * s1)
    assert torch.allclose(plan.update_state, a1 / a0, rtol=1e-12)
    ok = s1 > 0
    assert torch.allclose(plan.update_hist[ok, 0], (-2 * s1 * (eh - 1))[ok], rtol=1e-9)
    assert torch.allclose(plan.update_noise[ok], (s1 * torch.sqrt(eh**2 - 1))[ok], rtol=1e-9)
    sig = torch.tensor([80.0, 9.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    edm = ods.methods.get("sde-dpm-solver-1").compile(EDM, G.from_sigmas(EDM, sig))
    assert torch.allclose(edm.update_hist[:, 0], -2 * (sig[:-1] - sig[1:]), rtol=1e-12)
    assert torch.allclose(edm.update_noise, torch.sqrt(sig[:-1] ** 2 - sig[1:] ** 2), rtol=1e-12)


def test_the_2m_sde_at_eta_zero_is_dpmpp_2m():
    grid = G.karras(EDM, 10, to_zero=False)
    a = ods.methods.get("dpmpp-2m-sde").compile(EDM, grid, eta=0.0)
    b = ods.methods.get("dpmpp-2m").compile(EDM, grid)
    assert not a.stochastic
    assert torch.allclose(a.update_state, b.update_state, rtol=1e-13)
    assert torch.allclose(a.update_hist, b.update_hist, rtol=1e-10, atol=1e-14)


def test_euler_maruyama_is_the_reverse_sde_euler_step():
    """Song et al. (2021): on VP-linear f = -beta/2, g^2 = beta, so
    x_{n+1} = x_n - dt [beta/2 x_n + beta score] + sqrt(beta |dt|) z, score = (alpha x0 - x)/sigma^2."""
    path = P.VP.linear()
    grid = G.uniform_lambda(path, 7, 0.95, 1e-2)
    plan = ods.methods.get("euler-maruyama").compile(path, grid)
    t, dt = grid.t[:-1], grid.t[1:] - grid.t[:-1]
    beta = path.beta_min + t * (path.beta_max - path.beta_min)
    a, s2 = path.alpha(t), path.sigma(t) ** 2
    assert torch.allclose(plan.update_state, 1 - dt * beta / 2 + dt * beta / s2, rtol=1e-10)
    assert torch.allclose(plan.update_hist[:, 0], -dt * beta * a / s2, rtol=1e-10)
    assert torch.allclose(plan.update_noise, torch.sqrt(beta * dt.abs()), rtol=1e-10)
    assert torch.equal(plan.noise_interval, torch.stack([grid.t[:-1], grid.t[1:]], 1))


def test_euler_maruyama_covers_ve():
    """On the VE (EDM) path sigma = t, alpha = 1: f = 0, g^2 = d sigma^2/dt = 2t, so
    x_{n+1} = x_n + dt (2/t) (x_n - x0) + sqrt(2 t |dt|) z (Song et al.'s VE reverse diffusion, Euler step)."""
    grid = G.karras(EDM, 7, sigma_min=0.05, sigma_max=20.0, to_zero=False)
    plan = ods.methods.get("euler-maruyama").compile(EDM, grid)
    t, dt = grid.t[:-1], grid.t[1:] - grid.t[:-1]
    assert torch.allclose(plan.update_state, 1 + 2 * dt / t, rtol=1e-12)
    assert torch.allclose(plan.update_hist[:, 0], -2 * dt / t, rtol=1e-12)
    assert torch.allclose(plan.update_noise, torch.sqrt(2 * t * dt.abs()), rtol=1e-12)


@pytest.mark.parametrize("grad", [False, True])
def test_input_noise_enters_the_input_and_the_update_with_the_same_xi(grad):
    """Plan.input_noise: call k's input is input_state s + input_noise xi_k and its update adds
    update_noise xi_k, one xi_k (with gradients and without)."""
    grid = G.karras(EDM, 2, sigma_min=0.5, sigma_max=2.0, to_zero=False)
    rows = Rows(2)
    rows.call([0, 1], [0, 1], grid.t[:-1])
    rows.input_state(0, 0.5)
    rows.update_state([0, 1], 0.9)
    rows.update(1, 0, 0.25)
    rows.noise([0, 1], [0.3, 0.2], grid.t[:-1], grid.t[1:], input=[0.7, 0.0])
    plan = rows.plan("jump", EDM, grid, "x0")
    assert plan.stochastic and plan.input_noise.tolist() == [0.7, 0.0]
    seen = []
    model = ods.Model(lambda x, t: (seen.append(x.detach().clone()), 2 * x)[1], EDM, "x0")
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_(grad)
    src = N.BrownianPaths(range(3))
    out = ods.execute(plan, model, x, noise=src)
    xi = [src.standard_normal(k, (float(grid.t[k]), float(grid.t[k + 1])), x.shape) for k in range(2)]
    X0 = 0.5 * x.detach() + 0.7 * xi[0]
    s1 = 0.9 * x.detach() + 0.3 * xi[0]
    assert torch.allclose(seen[0], X0, rtol=1e-14) and torch.allclose(seen[1], s1, rtol=1e-14)
    want = 0.9 * s1 + 0.25 * 2 * X0 + 0.2 * xi[1]
    assert torch.allclose(out.detach(), want, rtol=1e-14)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_the_reference_interpreter_agrees_with_the_executor_on_noisy_plans(name):
    """odesolve.analysis's interpreter over plain numbers, given the executor's normals, reproduces
    its samples: input and update noise read the same way in both."""
    from odesolve.analysis._plan import structure

    grid = G.karras(EDM, 6, sigma_min=0.05, sigma_max=20.0)
    plan = ods.methods.get(name).compile(EDM, grid)
    model = MIXTURE.model(EDM, plan.prediction)
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 20
    src = N.PerSampleNormal(range(3))
    got = ods.execute(plan, model, x, noise=src)
    F = lambda k, X: model(X, plan.times[k].expand(3))
    want, _ = structure(plan).run(0, plan.calls, x, {}, F, xi=lambda k: src.standard_normal(k, None, x.shape))
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


# -- k-diffusion: same noise in, same samples out -------------------------------------------------------


def _kdiffusion():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("torchsde") is None:
        pytest.skip("k-diffusion (and torchsde) not installed")
    pkg = types.ModuleType("_kdiffusion_sde")
    pkg.__path__ = []
    utils = types.ModuleType("_kdiffusion_sde.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules.setdefault(pkg.__name__, pkg)
    sys.modules.setdefault(utils.__name__, utils)
    s = importlib.util.spec_from_file_location(
        "_kdiffusion_sde.sampling", Path(spec.submodule_search_locations[0]) / "sampling.py"
    )
    mod = importlib.util.module_from_spec(s)
    sys.modules[s.name] = mod
    s.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "ours,theirs,kwargs",
    [
        ("euler-ancestral", "sample_euler_ancestral", {}),
        ("dpmpp-2m-sde", "sample_dpmpp_2m_sde", {"solver_type": "midpoint"}),
        ("dpmpp-2m-sde-heun", "sample_dpmpp_2m_sde", {"solver_type": "heun"}),
    ],
)
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_same_noise_same_samples_as_k_diffusion(ours, theirs, kwargs, eta):
    K = _kdiffusion()
    sigmas = torch.cat([G.karras(EDM, 12, 0.03, 40.0, to_zero=False).sigmas, torch.zeros(1, dtype=torch.float64)])
    grid = G.from_sigmas(EDM, sigmas)
    model = MIXTURE.model(EDM, "x0")
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 40.0
    src = N.BrownianPaths(range(5))
    noise = lambda s, sn: src.standard_normal(0, (float(s), float(sn)), x.shape)
    want = K.__dict__[theirs](
        lambda xx, s: model(xx, s), x, sigmas, disable=True, eta=eta, noise_sampler=noise, **kwargs
    )
    got = ods.sample(model, x, grid, method=ours, noise=src, eta=eta)
    assert float((got - want).abs().max()) <= 1e-11 * float(want.abs().max())


# -- singular ends ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STOCHASTIC)
def test_zero_terminal_snr_start_and_the_step_to_sigma_zero(name):
    """From alpha = 0 the first step is the exact limit x_1 = alpha_1 D(x_T) + sigma_1 u xi (u = 1 at
    eta = 1: a draw from the forward marginal around D); the step to sigma = 0 is x_N = alpha_N D(x_{N-1})
    with no noise. Euler-Maruyama in t is undefined at alpha = 0 and says so."""
    grid = G.discrete(ZSNR, 8, spacing="trailing")
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = MIXTURE.model(ZSNR, "x0")
    src = N.BrownianPaths(range(6))
    if name in ("euler-maruyama", "sde-dpm-solver-1", "score-sde-pc") or ods.methods.get(name).prediction == "eps":
        with pytest.raises(ValueError, match="alpha = 0"):
            ods.sample(model, x, grid, method=name, noise=src)
        grid = G.discrete(DISCRETE, 8, spacing="trailing")
        model = MIXTURE.model(DISCRETE, "x0")
        out = ods.sample(model, x, grid, method=name, noise=src)
        assert bool(torch.isfinite(out).all())
        return
    out, traj = ods.sample(model, x, grid, method=name, noise=src, return_trajectory=True)
    assert bool(torch.isfinite(traj).all())
    a1, s1 = ZSNR.alpha(grid.t[1]), ZSNR.sigma(grid.t[1])
    assert float(ZSNR.sigma(grid.t[-1])) == 0.0
    if name in ("edm-sde", "restart"):  # Heun's first step from rho = inf is the Euler (DDIM) step, no churn
        assert torch.allclose(traj[1], a1 * model.x0(x, grid.t[0]) + s1 * x, rtol=1e-12, atol=1e-12)
        return
    xi = src.standard_normal(0, (float(grid.t[0]), float(grid.t[1])), x.shape)
    assert torch.allclose(traj[1], a1 * model.x0(x, grid.t[0]) + s1 * xi, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out, ZSNR.alpha(grid.t[-1]) * model.x0(traj[-2], grid.t[-2]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_steps_to_sigma_zero_on_the_edm_path(name):
    grid = G.karras(EDM, 10)
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80
    model = MIXTURE.model(EDM, "x0")
    out, traj = ods.sample(model, x, grid, method=name, seeds=range(8), return_trajectory=True)
    assert bool(torch.isfinite(traj).all())
    m = ods.methods.get(name)
    if m.prediction == "x0" and m.variable == "lambda":  # exponential x0 steps take the x0 limit
        assert torch.allclose(out, model.x0(traj[-2], grid.t[-2]), rtol=1e-12, atol=1e-12)


# -- the executor's noise arguments ----------------------------------------------------------------------


def _setup(B=4):
    grid = G.karras(EDM, 8, sigma_min=0.05, sigma_max=10.0, to_zero=False)
    x = torch.randn(B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 10
    return grid, x, MIXTURE.model(EDM, "eps")


def test_seeds_is_brownian_paths_and_generator_keeps_torchs_stream():
    grid, x, model = _setup()
    a = ods.sample(model, x, grid, method="dpmpp-2m-sde", seeds=[7, 8, 9, 10])
    assert torch.equal(a, ods.sample(model, x, grid, method="dpmpp-2m-sde", noise=N.BrownianPaths([7, 8, 9, 10])))
    assert not torch.equal(a, ods.sample(model, x, grid, method="dpmpp-2m-sde", noise=N.PerSampleNormal([7, 8, 9, 10])))
    g = lambda: torch.Generator().manual_seed(5)
    b = ods.sample(model, x, grid, method="dpmpp-2m-sde", generator=g())
    assert torch.equal(b, ods.sample(model, x, grid, method="dpmpp-2m-sde", generator=g()))
    plan = ods.methods.get("dpmpp-2m-sde").compile(EDM, grid)  # execute takes the same arguments
    assert torch.equal(ods.execute(plan, model, x, seeds=[7, 8, 9, 10]), a)


def test_noise_arguments_are_checked():
    grid, x, model = _setup()
    with pytest.raises(ValueError, match="seeds=.*noise=.*Generator"):
        ods.sample(model, x, grid, method="ddpm")
    with pytest.raises(ValueError, match="one of noise=, seeds= and generator="):
        ods.sample(model, x, grid, method="ddpm", seeds=range(4), generator=torch.Generator())
    with pytest.raises(ValueError, match="3 seeds for a batch of 4"):
        ods.sample(model, x, grid, method="ddpm", seeds=range(3))
    with pytest.raises(TypeError, match="noise"):  # the annotation, or the check by name without typechecks
        ods.sample(model, x, grid, method="ddpm", noise=torch.Generator())
    # a deterministic method with seeds draws nothing: the same result
    assert torch.equal(
        ods.sample(model, x, grid, method="dpmpp-2m", seeds=range(4)), ods.sample(model, x, grid, method="dpmpp-2m")
    )


def _overlapping_plan():
    """Two calls of one step consuming W over [1, 0.5] and over [1, 0]: correlated increments."""
    grid = G.from_sigmas(EDM, torch.tensor([1.0, 0.0], dtype=torch.float64))
    rows = Rows(2)
    rows.call([0, 1], 0, 1.0)
    rows.update_state([0, 1], 1.0)
    rows.noise(0, 2.0, 1.0, 0.5)
    rows.noise(1, 3.0, 1.0, 0.0)
    return rows.plan("overlap", EDM, grid, "x0")


def test_a_plan_names_its_brownian_increments():
    plan = _overlapping_plan()
    assert plan.correlated_noise and "dW[1, 0.5]" in plan.table()
    x = torch.zeros(3, 2, dtype=torch.float64)
    model = ods.Model(lambda x, t: torch.zeros_like(x), EDM, "x0")
    src = N.BrownianPaths([1, 2, 3])
    out = ods.execute(plan, model, x, noise=src)
    w1, w0 = src.increment(1.0, 0.5, x.shape), src.increment(1.0, 0.0, x.shape)
    assert torch.allclose(out, 2.0 * w1 / math.sqrt(0.5) + 3.0 * w0, rtol=1e-14, atol=1e-14)
    for bad in ({"generator": torch.Generator()}, {"noise": N.PerSampleNormal([1, 2, 3])}):
        with pytest.raises(ValueError, match="correlated Brownian increments"):
            ods.execute(plan, model, x, **bad)
    plain = ods.methods.get("ddpm").compile(EDM, G.karras(EDM, 6))
    assert not plain.correlated_noise  # one step, one interval: independent normals are its law


def test_plans_refuse_bad_noise_intervals():
    plan = _overlapping_plan()
    import dataclasses

    # a wrong shape is refused by the plan itself, or first by its shape annotation under the test suite's
    # jaxtyping hook: either way the error names the field
    with pytest.raises((ValueError, TypeCheckError), match="noise_interval"):
        dataclasses.replace(plan, noise_interval=torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="noisy call 1 needs a finite interval"):
        dataclasses.replace(plan, noise_interval=torch.tensor([[1.0, 0.5], [0.3, 0.3]], dtype=torch.float64))
    with pytest.raises(ValueError, match="noisy call 0 needs a finite interval"):
        dataclasses.replace(plan, noise_interval=torch.tensor([[1.0, math.nan], [1.0, 0.0]], dtype=torch.float64))
    # a call without an interval (NaN, NaN) draws an independent normal: with one named interval
    # left, nothing overlaps, and a Brownian source answers the named call and the other alike
    mixed = dataclasses.replace(
        plan, noise_interval=torch.tensor([[math.nan, math.nan], [1.0, 0.0]], dtype=torch.float64)
    )
    assert not mixed.correlated_noise
    x = torch.zeros(2, 1, dtype=torch.float64)
    src = N.BrownianPaths([5, 6])
    out = ods.execute(mixed, ods.Model(lambda x, t: torch.zeros_like(x), EDM, "x0"), x, noise=src)
    want = 2.0 * N.PerSampleNormal([5, 6]).standard_normal(0, None, x.shape) + 3.0 * src.increment(1.0, 0.0, x.shape)
    assert torch.allclose(out, want, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="both ends"):
        Rows(1).noise(0, 1.0, 0.5)


class _Recording(N.BrownianPaths):
    def __init__(self, seeds):
        super().__init__(seeds)
        self.seen = []

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu"):
        xi = super().standard_normal(call, interval, shape, dtype, device)
        self.seen.append((interval, xi * math.sqrt(abs(interval[1] - interval[0]))))
        return xi


def test_a_refined_grid_follows_the_same_brownian_path():
    """The increments a 10-step grid consumes are the sums of those of the 40-step grid that refines it."""
    coarse = G.karras(EDM, 10, sigma_min=0.05, sigma_max=10.0, to_zero=False)
    t = coarse.t
    fine_t = torch.cat([torch.stack([t[:-1] + (t[1:] - t[:-1]) * j / 4 for j in range(4)], 1).flatten(), t[-1:]])
    fine = G.from_sigmas(EDM, fine_t)
    _, x, model = _setup()
    a, b = _Recording(range(4)), _Recording(range(4))
    ods.sample(model, x, coarse, method="ddpm", noise=a)
    ods.sample(model, x, fine, method="ddpm", noise=b)
    assert len(a.seen) == 10 and len(b.seen) == 40
    for i, (interval, dw) in enumerate(a.seen):
        parts = sum(d for _, d in b.seen[4 * i : 4 * i + 4])
        assert interval == (float(t[i]), float(t[i + 1]))
        assert torch.allclose(parts, dw, rtol=0, atol=1e-12)


def test_gradients_flow_through_a_stochastic_sample():
    """With a zero output in the plan's buffer the sample is prod_n A_n x_T + noise: d(sum out)/d x_T = prod_n A_n."""
    grid = G.karras(EDM, 6, sigma_min=0.05, sigma_max=10.0, to_zero=False)
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    for name in STOCHASTIC:
        model = ods.Model(lambda x, t: torch.zeros_like(x), EDM, ods.methods.get(name).prediction)  # F = 0
        out = ods.sample(model, x, grid, method=name, seeds=range(3))
        (g,) = torch.autograd.grad(out.sum(), x)
        want = torch.prod(ods.methods.get(name).compile(EDM, grid).update_state)
        assert torch.allclose(g, torch.full_like(g, float(want)), rtol=1e-12), name
        with torch.no_grad():
            assert torch.allclose(out, ods.sample(model, x.detach(), grid, method=name, seeds=range(3)), rtol=1e-13)


_PATHS = {
    "edm": EDM,
    "vp-linear": P.VP.linear(),
    "vp-cosine": P.VPCosine(),
    "flow": P.FlowMatching(),
    "discrete": DISCRETE,
    "zsnr": ZSNR,
}


@given(
    name=st.sampled_from(STOCHASTIC),
    path=st.sampled_from(sorted(_PATHS)),
    steps=st.integers(2, 16),
    to_end=st.booleans(),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=400 if os.environ.get("ODESOLVE_FULL", "0") == "1" else 40, deadline=None, derandomize=True)
def test_every_stochastic_table_on_every_path_is_finite_or_refused(name, path, steps, to_end, seed):
    """Random path, grid and seed: finite coefficients and a finite sample, or (only at an alpha = 0
    start, for the tables undefined there) a ValueError that says so."""
    path = _PATHS[path]
    if isinstance(path, P.VPDiscrete):
        grid = G.discrete(path, steps, spacing="trailing")
    elif isinstance(path, P.EDM):
        grid = G.karras(path, steps, to_zero=to_end)
    else:
        grid = G.uniform_time(path, steps, path.t_max, path.t_min if to_end else path.t_min + 0.01)
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    model = MIXTURE.model(path, "x0")
    try:
        plan = ods.methods.get(name).compile(path, grid)
    except ValueError as err:
        assert "alpha = 0" in str(err) and float(path.alpha(grid.t[0])) == 0.0
        return
    assert all(bool(torch.isfinite(getattr(plan, f)).all()) for f in ("update_state", "update_hist", "update_noise"))
    out = ods.sample(model, x * float(path.sigma(grid.t[0])), grid, method=plan, seeds=[seed, seed + 1, seed + 2])
    assert bool(torch.isfinite(out).all())


def test_cached_plans_do_not_share_their_noise_intervals():
    grid = G.karras(EDM, 6, sigma_min=0.02, sigma_max=20.0)
    m = ods.methods.get("dpmpp-2m-sde")
    a, b = m.compile(EDM, grid), m.compile(EDM, grid)  # the second comes from the plan cache
    assert a.noise_interval is not None and torch.equal(a.noise_interval, b.noise_interval)
    a.noise_interval.zero_()
    assert not torch.equal(a.noise_interval, m.compile(EDM, grid).noise_interval)
