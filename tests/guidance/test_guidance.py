"""The guidance wrappers against their papers' defining properties, on exact Gaussian-mixture denoisers.

A conditional toy: a random mixture is the unconditional data; its first ``k`` components (renormalized) are
one class, whose exact denoiser is the conditional model.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve.guidance import (
    adaptive_projected_guidance,
    autoguidance,
    cfg_plus_plus,
    guidance_interval,
)
from odesolve.toy import GaussianMixture
from odesolve.toy import strategies as ts

SETTINGS = settings(max_examples=15, deadline=None)
F = {"allow_nan": False, "allow_infinity": False}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def restricted(gmm: GaussianMixture, k: int) -> GaussianMixture:
    w = gmm.weights[:k]
    return GaussianMixture(w / w.sum(), gmm.means[:k], gmm.covs[:k])


@st.composite
def conditional_toys(draw):
    """(path, conditional model, unconditional model, x, t) with x drawn from the noisy marginal."""
    gmm = draw(ts.mixtures(dims=st.integers(1, 4), components=st.integers(2, 4)))
    k = draw(st.integers(1, gmm.n_components - 1))
    path = draw(ts.paths(("vp-linear", "edm", "flow")))
    t = draw(ts.noise_times(path, 1e-2, 1e2))
    seed = draw(st.integers(0, 2**16))
    x = gmm.sample_marginal(6, t, path, generator=torch.Generator().manual_seed(seed))
    return path, restricted(gmm, k).model(path), gmm.model(path), x, torch.full((6,), t, dtype=torch.float64)


def parallel(v: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    return ((v * onto).sum(1) / (onto * onto).sum(1))[:, None] * onto


# -- APG ----------------------------------------------------------------------------------------------------------


@SETTINGS
@given(conditional_toys(), st.floats(0.0, 12.0, **F))
def test_apg_with_eta_1_no_momentum_no_threshold_is_cfg(toy, scale):
    _, cond, uncond, x, t = toy
    apg = adaptive_projected_guidance(cond, uncond, scale, eta=1.0)
    d_c, d_u = cond.x0(x, t), uncond.x0(x, t)
    torch.testing.assert_close(apg.x0(x, t), d_u + scale * (d_c - d_u), rtol=1e-10, atol=1e-10)


@SETTINGS
@given(conditional_toys(), st.floats(1.5, 12.0, **F), st.floats(0.0, 1.0, **F))
def test_apg_scales_the_parallel_part_by_eta_and_keeps_the_orthogonal_part(toy, scale, eta):
    _, cond, uncond, x, t = toy
    d_c, d_u = cond.x0(x, t), uncond.x0(x, t)
    delta = d_c - d_u
    update = (adaptive_projected_guidance(cond, uncond, scale, eta=eta).x0(x, t) - d_c) / (scale - 1)
    torch.testing.assert_close(parallel(update, d_c), eta * parallel(delta, d_c), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(update - parallel(update, d_c), delta - parallel(delta, d_c), rtol=1e-8, atol=1e-10)
    if eta == 0.0:  # the update is orthogonal to D_c: no push along the prediction (over-saturation)
        bound = 1e-9 * d_c.norm(dim=1) * ((d_c - d_u).norm(dim=1) + d_c.norm(dim=1)) + 1e-30
        assert bool(((update * d_c).sum(1).abs() <= bound).all())


@SETTINGS
@given(conditional_toys(), st.floats(1.5, 12.0, **F), st.floats(0.01, 3.0, **F))
def test_apg_norm_threshold_caps_the_update_norm(toy, scale, r):
    _, cond, uncond, x, t = toy
    d_c, d_u = cond.x0(x, t), uncond.x0(x, t)
    update = (adaptive_projected_guidance(cond, uncond, scale, eta=1.0, norm_threshold=r).x0(x, t) - d_c) / (scale - 1)
    want = (d_c - d_u).norm(dim=1).clamp(max=r)
    torch.testing.assert_close(update.norm(dim=1), want, rtol=1e-9, atol=1e-12)
    cos = (update * (d_c - d_u)).sum(1) / (update.norm(dim=1) * (d_c - d_u).norm(dim=1)).clamp(min=1e-300)
    assert bool(((cos > 1 - 1e-9) | ((d_c - d_u).norm(dim=1) < 1e-8)).all())  # same direction


@SETTINGS
@given(conditional_toys(), st.floats(-0.9, 0.9, **F), st.floats(1.5, 8.0, **F))
def test_apg_momentum_runs_over_calls_and_resets_on_a_new_run(toy, beta, scale):
    _, cond, uncond, x, t = toy
    model = adaptive_projected_guidance(cond, uncond, scale, eta=1.0, momentum=beta)
    t2 = t * 0.5
    delta = {tt: cond.x0(x, t_) - uncond.x0(x, t_) for tt, t_ in (("1", t), ("2", t2))}
    first = model.x0(x, t)
    second = model.x0(x, t2)
    torch.testing.assert_close(first, cond.x0(x, t) + (scale - 1) * delta["1"], rtol=1e-10, atol=1e-10)
    want = cond.x0(x, t2) + (scale - 1) * (delta["2"] + beta * delta["1"])
    torch.testing.assert_close(second, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.x0(x, t), first, rtol=0, atol=0)  # a larger time: a new run
    model.fn.reset()
    torch.testing.assert_close(model.x0(x, t2), cond.x0(x, t2) + (scale - 1) * delta["2"], rtol=1e-10, atol=1e-10)


# -- CFG++ --------------------------------------------------------------------------------------------------------


def cfgpp_by_the_paper(cond, uncond, lam, x, grid):
    """Algorithm 1 of Chung et al. (2024) on grid: x0 from the guided prediction, renoised with eps_u."""
    a, s = grid.alphas, grid.path.sigma(grid.t)
    for i in range(grid.steps):
        t = torch.full((x.shape[0],), float(grid.t[i]), dtype=torch.float64)
        d_c, d_u = cond.x0(x, t), uncond.x0(x, t)
        x0 = d_u + lam * (d_c - d_u)
        eps_u = (x - a[i] * d_u) / s[i]
        x = a[i + 1] * x0 + s[i + 1] * eps_u
    return x


@settings(max_examples=10, deadline=None)
@given(conditional_toys(), st.floats(0.0, 1.0, **F), st.integers(2, 12), st.integers(0, 2**16))
def test_cfg_plus_plus_with_ddim_is_the_papers_algorithm(toy, lam, steps, seed):
    path, cond, uncond, _, _ = toy
    top = min(20.0, 0.9 * float(path.noise_level(torch.tensor(path.t_max, dtype=torch.float64))))
    grid = ods.grids.karras(path, steps, sigma_min=0.01, sigma_max=top, to_zero=seed % 2 == 0)
    dim = toy[3].shape[1]
    x = torch.randn(64, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x * float(path.sigma(grid.t[0]))
    ours = ods.sample(cfg_plus_plus(cond, uncond, lam, grid), x, grid, method="ddim")
    torch.testing.assert_close(ours, cfgpp_by_the_paper(cond, uncond, lam, x, grid), rtol=1e-9, atol=1e-9)


@settings(max_examples=10, deadline=None)
@given(st.floats(0.0, 1.0, **F), st.integers(0, 2**16))
def test_cfg_plus_plus_samples_stay_on_the_data_manifold(lam, seed):
    """The last DDIM step to sigma = 0 returns D_u + lam (D_c - D_u), a convex combination of two posterior means:
    on a ring of narrow modes the samples stay within the ring's radius (no extrapolation past the data)."""
    path = ods.paths.EDM()
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    ring = 0.7 * torch.stack([angle.cos(), angle.sin()], 1)
    gmm = GaussianMixture(torch.full((8,), 1 / 8), ring, 1e-4 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2))
    cond, uncond = restricted(gmm, 4).model(path), gmm.model(path)
    grid = ods.grids.karras(path, 16, sigma_min=0.002, sigma_max=80.0)
    x = 80.0 * torch.randn(200, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = ods.sample(cfg_plus_plus(cond, uncond, lam, grid), x, grid, method="ddim")
    assert float(out.norm(dim=1).max()) <= 0.7 + 0.05


def test_cfg_plus_plus_refuses_times_off_the_grid():
    path = ods.paths.VP.linear()
    gmm = GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [[[0.1]], [[0.1]]])
    grid = ods.grids.uniform_lambda(path, 6, t_start=1.0, t_end=1e-3)
    model = cfg_plus_plus(restricted(gmm, 1).model(path), gmm.model(path), 0.5, grid)
    with pytest.raises(ValueError, match="not a time of the grid"):
        ods.sample(model, torch.randn(4, 1, dtype=torch.float64), grid, method="heun")
    with pytest.raises(ValueError, match="lambda"):
        cfg_plus_plus(restricted(gmm, 1).model(path), gmm.model(path), -0.5, grid)


# -- autoguidance -------------------------------------------------------------------------------------------------


@SETTINGS
@given(conditional_toys(), st.floats(-2.0, 12.0, **F))
def test_autoguidance_with_weak_equal_to_good_is_the_model(toy, w):
    _, good, weak, x, t = toy
    torch.testing.assert_close(autoguidance(good, good, w).x0(x, t), good.x0(x, t), rtol=1e-12, atol=1e-12)
    d_g, d_w = good.x0(x, t), weak.x0(x, t)
    torch.testing.assert_close(autoguidance(good, weak, w).x0(x, t), d_w + w * (d_g - d_w), rtol=1e-12, atol=1e-12)


# -- guidance interval --------------------------------------------------------------------------------------------


@SETTINGS
@given(conditional_toys(), st.floats(1.0, 10.0, **F), st.floats(-3.0, 1.0, **F), st.floats(0.1, 3.0, **F))
def test_guidance_interval_is_cfg_inside_and_the_conditional_model_outside(toy, scale, log_lo, width):
    path, cond, uncond, x, _ = toy
    lo, hi = math.exp(log_lo), math.exp(log_lo + width)
    sig = torch.tensor([lo * 0.5, lo, lo * 1.01, (lo * hi) ** 0.5, hi, hi * 1.5], dtype=torch.float64)
    t = path.t_of_noise_level(sig).clamp(path.t_min, path.t_max)
    cfg = ods.Model(lambda x, t: uncond.x0(x, t) + scale * (cond.x0(x, t) - uncond.x0(x, t)), path, "x0")
    out = guidance_interval(cfg, cond, lo, hi).x0(x, t)
    s = path.noise_level(t)
    inside = (s > lo) & (s <= hi)
    torch.testing.assert_close(out[inside], cfg.x0(x, t)[inside], rtol=0, atol=0)
    torch.testing.assert_close(out[~inside], cond.x0(x, t)[~inside], rtol=0, atol=0)


def test_guidance_interval_composes_with_a_stateful_guide_and_samples_like_cfg_inside():
    path = ods.paths.EDM()
    gmm = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [[[0.1, 0.0], [0.0, 0.2]]] * 2)
    cond, uncond = restricted(gmm, 1).model(path), gmm.model(path)
    grid = ods.grids.karras(path, 12, sigma_min=0.02, sigma_max=40.0)
    x = 40.0 * torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    apg = adaptive_projected_guidance(cond, uncond, 4.0, momentum=-0.5, norm_threshold=1.0)
    whole = ods.sample(guidance_interval(apg, cond, 0.0, math.inf), x, grid, method="ddim")
    apg.fn.reset()
    torch.testing.assert_close(whole, ods.sample(apg, x, grid, method="ddim"), rtol=0, atol=0)
    none = ods.sample(guidance_interval(apg, cond, 100.0, 200.0), x, grid, method="dpmpp-2m")
    torch.testing.assert_close(none, ods.sample(cond, x, grid, method="dpmpp-2m"), rtol=0, atol=0)


def test_bad_arguments_are_refused():
    path = ods.paths.VP.linear()
    gmm = GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [[[0.1]], [[0.1]]])
    c, u = restricted(gmm, 1).model(path), gmm.model(path)
    with pytest.raises(TypeError, match="uncond"):
        adaptive_projected_guidance(c, lambda x, t: x, 2.0)
    with pytest.raises(ValueError, match="momentum"):
        adaptive_projected_guidance(c, u, 2.0, momentum=1.5)
    with pytest.raises(ValueError, match="norm_threshold"):
        adaptive_projected_guidance(c, u, 2.0, norm_threshold=0.0)
    with pytest.raises(ValueError, match="share one path"):
        autoguidance(c, gmm.model(ods.paths.EDM()), 2.0)
    with pytest.raises(ValueError, match="sigma_hi"):
        guidance_interval(c, u, 2.0, 1.0)
