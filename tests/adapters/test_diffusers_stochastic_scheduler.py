"""Stochastic methods in OdesolveScheduler: the same generator(s) give the samples diffusers' own stochastic
schedulers give, and per-sample noise is an opt-in.

Oracles: DDPMScheduler (method "ddpm") and DDIMScheduler with eta (method "ddim", eta passed to step) in
their pipelines, EulerAncestralDiscreteScheduler ("euler-ancestral") and DPMSolverMultistepScheduler with
algorithm_type="sde-dpmsolver++" ("dpmpp-2m-sde") in a pipeline's loop; a tiny random UNet on CPU in float32,
one torch.Generator or a list of them (one per sample). Agreement is float32 round-off (rel <= 1e-5).
"""

from __future__ import annotations

import pytest
import torch
from _adapters_lib import diffusers, rel, tiny_unet
from diffusers.utils.torch_utils import randn_tensor
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve.adapters.diffusers import OdesolveScheduler
from odesolve.adapters.diffusers.namesakes import namesake_of

PREDICTION = "v_prediction"  # the random UNet's eps prediction saturates the images (see test_scheduler.py)


def _generators(kind, batch=2, seed=0):
    if kind == "one":
        return torch.Generator().manual_seed(seed)
    return [torch.Generator().manual_seed(seed + 10 * i) for i in range(batch)]


def _loop(scheduler, unet, steps, generator, batch=2, **step_kw):
    """A pipeline's loop: latents from randn_tensor, then scale_model_input / unet / step(generator=...)."""
    scheduler.set_timesteps(steps)
    x = randn_tensor((batch, 3, 8, 8), generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(out, t, x, generator=generator, **step_kw).prev_sample
    return x


def _pipe_images(pipe, generator, steps, **kw):
    with torch.no_grad():
        return pipe(batch_size=2, generator=generator, num_inference_steps=steps, output_type="pt", **kw).images


def _not_saturated(images):
    return 0.05 < float(images.mean()) < 0.95 and float(images.std()) > 0.01


def test_stochastic_methods_stand_in_for_their_diffusers_namesakes():
    assert namesake_of("ddpm").name == "DDPMScheduler"
    assert namesake_of("euler-ancestral").name == "EulerAncestralDiscreteScheduler"
    assert namesake_of("euler").name == "EulerDiscreteScheduler"
    assert namesake_of("dpmpp-2m-sde").name == "DPMSolverMultistepScheduler"


@pytest.mark.parametrize("gens", ["one", "list"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_pipeline_same_images_as_ddpm_scheduler(gens, clip):
    """DDPMPipeline, its DDPMScheduler's config (leading spacing, clip_sample by default) swapped as is."""
    pipe = diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler(prediction_type=PREDICTION))
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.scheduler.config
    theirs = _pipe_images(pipe, _generators(gens), 10) if clip else None
    if not clip:
        pipe.scheduler = diffusers.DDPMScheduler.from_config(cfg, clip_sample=False)
        theirs = _pipe_images(pipe, _generators(gens), 10)
    pipe.scheduler = OdesolveScheduler.from_config(cfg, method="ddpm", **({} if clip else {"clip_sample": False}))
    ours = _pipe_images(pipe, _generators(gens), 10)
    assert _not_saturated(ours)
    assert rel(ours, theirs) <= 1e-5


@pytest.mark.slow
def test_ddpm_1000_steps_same_as_ddpm_scheduler():
    """The pipeline's default: every training timestep (round-off accumulates over 1000 noisy steps)."""
    cfg = diffusers.DDPMScheduler(prediction_type=PREDICTION, clip_sample=False).config
    unet = tiny_unet()
    theirs = _loop(diffusers.DDPMScheduler.from_config(cfg), unet, 1000, _generators("one"), batch=1)
    ours = _loop(OdesolveScheduler.from_config(cfg, method="ddpm"), unet, 1000, _generators("one"), batch=1)
    assert rel(ours, theirs) <= 5e-5


@pytest.mark.parametrize("gens", ["one", "list"])
def test_ddim_pipeline_with_eta_same_images_as_ddim_scheduler(gens):
    """DDIMPipeline passes eta to step: method "ddim" then runs DDIM with that eta, as DDIMScheduler does
    (its clip_sample keeps the unclipped noise prediction in the update)."""
    pipe = diffusers.DDIMPipeline(unet=tiny_unet(), scheduler=diffusers.DDIMScheduler(prediction_type=PREDICTION))
    pipe.set_progress_bar_config(disable=True)
    cfg = pipe.scheduler.config
    theirs = _pipe_images(pipe, _generators(gens), 10, eta=0.5)
    pipe.scheduler = OdesolveScheduler.from_config(cfg, method="ddim")
    ours = _pipe_images(pipe, _generators(gens), 10, eta=0.5)
    assert _not_saturated(ours)
    assert rel(ours, theirs) <= 1e-5
    deterministic = _pipe_images(pipe, _generators(gens), 10, eta=0.0)  # the same scheduler, back to eta = 0
    pipe.scheduler = diffusers.DDIMScheduler.from_config(cfg)
    assert rel(deterministic, _pipe_images(pipe, _generators(gens), 10, eta=0.0)) <= 1e-5
    assert rel(deterministic, ours) > 1e-2


@pytest.mark.parametrize("gens", ["one", "list"])
@pytest.mark.parametrize(
    "method, make, cfg_kw, step_kw",
    [
        (
            "ddim",
            lambda c: diffusers.DDIMScheduler.from_config(
                c, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False
            ),
            {"timestep_spacing": "trailing", "clip_sample": False, "set_alpha_to_one": False},
            {"eta": 1.0},
        ),
        ("euler-ancestral", lambda c: diffusers.EulerAncestralDiscreteScheduler.from_config(c), {}, {}),
        (
            "euler-ancestral",
            lambda c: diffusers.EulerAncestralDiscreteScheduler.from_config(c, timestep_spacing="leading"),
            {"timestep_spacing": "leading"},
            {},
        ),
        (
            "dpmpp-2m-sde",
            lambda c: diffusers.DPMSolverMultistepScheduler.from_config(c, algorithm_type="sde-dpmsolver++"),
            {},
            {},
        ),
    ],
)
def test_pipeline_loop_same_result_as_diffusers(gens, method, make, cfg_kw, step_kw):
    cfg = diffusers.DDPMScheduler(prediction_type=PREDICTION).config
    unet = tiny_unet()
    theirs = _loop(make(cfg), unet, 10, _generators(gens), **step_kw)
    ours = _loop(OdesolveScheduler.from_config(cfg, method=method, **cfg_kw), unet, 10, _generators(gens), **step_kw)
    assert rel(ours, theirs) <= 1e-5
    other = _loop(make(cfg), unet, 10, _generators(gens, seed=5), **step_kw)
    assert rel(other, theirs) > 1e-2  # the noise matters: the agreement is not the deterministic part's


def test_list_of_generators_draws_sample_i_from_generator_i():
    """diffusers' convention: with one generator per sample, sample i does not depend on the others."""
    cfg = diffusers.DDPMScheduler(prediction_type=PREDICTION).config
    unet = tiny_unet()
    s = OdesolveScheduler.from_config(cfg, method="dpmpp-2m-sde")
    batch = _loop(s, unet, 6, _generators("list", batch=3), batch=3)
    alone = _loop(s, unet, 6, [torch.Generator().manual_seed(10)], batch=1)
    assert rel(batch[1:2], alone) <= 1e-5


def _elementwise(x, t):
    """A network that treats samples (and elements) independently: per-sample results are exact."""
    return 0.5 * torch.tanh(x) + 1e-3 * t


def _manual(scheduler, x, steps, generator=None):
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        out = _elementwise(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


@settings(max_examples=8, deadline=None)
@given(
    seeds=st.lists(st.integers(0, 2**40), min_size=2, max_size=5, unique=True),
    pick=st.integers(0, 4),
    method=st.sampled_from(["ddpm", "dpmpp-2m-sde", "euler-ancestral"]),
    brownian=st.booleans(),
)
def test_set_noise_makes_sample_i_independent_of_its_batch(seeds, pick, method, brownian):
    i = pick % len(seeds)
    source = ods.noise.BrownianPaths if brownian else ods.noise.PerSampleNormal
    cfg = diffusers.DDPMScheduler(prediction_type=PREDICTION).config
    s = OdesolveScheduler.from_config(cfg, method=method)
    x = torch.randn(len(seeds), 3, 4, 4, generator=torch.Generator().manual_seed(seeds[0] % 1000))
    s.set_noise(source(seeds))
    batch = _manual(s, x, 5, generator=torch.Generator().manual_seed(0))  # step's generator is not read
    s.set_noise(source([seeds[i]]))
    alone = _manual(s, x[i : i + 1].clone(), 5)
    assert torch.equal(batch[i : i + 1], alone)


def test_set_noise_ignores_the_generator_and_none_returns_to_diffusers_draw():
    cfg = diffusers.DDPMScheduler(prediction_type=PREDICTION).config
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    s = OdesolveScheduler.from_config(cfg, method="ddpm")
    s.set_noise(ods.noise.BrownianPaths([7, 8]))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    a = _manual(s, x, 5, generator=g)
    assert torch.equal(g.get_state(), state)  # not drawn from
    assert torch.equal(a, _manual(s, x, 5, generator=None))
    s.set_noise(None)
    b = _manual(s, x, 5, generator=torch.Generator().manual_seed(0))
    c = _manual(s, x, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b, c) and rel(a, b) > 1e-2


def _first_step(s, batch=2, **kw):
    s.set_timesteps(4)
    x = torch.randn(batch, 3, 4, 4)
    t = s.timesteps[0]
    return s.step(_elementwise(x, t), t, x, **kw)


def test_refusals_name_the_argument():
    cfg = diffusers.DDPMScheduler(prediction_type=PREDICTION).config
    s = OdesolveScheduler.from_config(cfg, method="ddpm")
    with pytest.raises(ValueError, match=r"generator: 3 generators for a batch of 2"):
        _first_step(s, generator=_generators("list", batch=3))
    with pytest.raises(TypeError, match=r"torch.Generator objects only, got int"):
        _first_step(s, generator=[torch.Generator(), 3])
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator, a list"):
        _first_step(s, generator="seed")
    with pytest.raises(ValueError, match=r"variance_noise is not supported"):
        _first_step(s, variance_noise=torch.zeros(2, 3, 4, 4))
    _first_step(s, generator=torch.Generator())
    t = s.timesteps[1]
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"pass that same generator to every step"):
        s.step(_elementwise(x, t), t, x, generator=torch.Generator())
    with pytest.raises(TypeError, match=r"noise must be an odesolve.noise source"):
        s.set_noise(torch.Generator())
    s.set_noise(ods.noise.PerSampleNormal([1, 2, 3]))
    with pytest.raises(ValueError, match=r"noise: 3 seeds for a batch of 2"):
        _first_step(s)
    with pytest.raises(ValueError, match=r"eta=0.5: method 'dpmpp-2m' takes no eta"):
        OdesolveScheduler.from_config(cfg, method="dpmpp-2m", eta=0.5)
    with pytest.raises(ValueError, match=r"eta must be a finite number >= 0"):
        OdesolveScheduler.from_config(cfg, method="ddpm", eta=-1.0)
    with pytest.raises(ValueError, match=r"eta must be a finite number >= 0"):
        _first_step(OdesolveScheduler.from_config(cfg, method="ddim"), eta=-0.5)
    with pytest.raises(ValueError, match=r"variance_type='learned_range' is not supported"):
        OdesolveScheduler.from_config(cfg, method="ddpm", variance_type="learned_range")


def test_config_eta_scales_the_noise():
    """eta in the config: the method's option (eta = 0: DDIM, deterministic)."""
    cfg = diffusers.DDPMScheduler(prediction_type=PREDICTION, clip_sample=False).config
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    ddpm0 = _manual(OdesolveScheduler.from_config(cfg, method="ddpm", eta=0.0), x, 6, torch.Generator())
    ddim = _manual(OdesolveScheduler.from_config(cfg, method="ddim", set_alpha_to_one=True), x, 6)
    assert rel(ddpm0, ddim) <= 1e-5
    theirs = _loop(diffusers.DDIMScheduler.from_config(cfg), tiny_unet(), 6, _generators("one"), eta=0.3)
    ours = _loop(OdesolveScheduler.from_config(cfg, method="ddim", eta=0.3), tiny_unet(), 6, _generators("one"))
    assert rel(ours, theirs) <= 1e-5


@pytest.mark.parametrize("method, cls", [("ddpm", "DDPMScheduler"), ("ddim", "DDIMScheduler")])
def test_default_spacing_is_the_namesakes_and_survives_a_saved_config(method, cls, tmp_path):
    """DDPM and DDIM default to leading spacing; a saved config names it, so either class loads the same grid."""
    theirs = getattr(diffusers, cls)()
    ours = OdesolveScheduler(method=method)
    ours.save_config(tmp_path)
    loaded = [OdesolveScheduler.from_pretrained(tmp_path), getattr(diffusers, cls).from_pretrained(tmp_path)]
    for s in (theirs, ours, *loaded):
        s.set_timesteps(7)
    assert ours.config.timestep_spacing == "leading"
    for s in (ours, *loaded):
        assert s.timesteps.tolist() == theirs.timesteps.tolist()
