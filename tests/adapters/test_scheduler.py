"""OdesolveScheduler: a diffusers scheduler backed by a compiled plan.

It must give the images diffusers' own scheduler gives for the same method (within 1e-4) in a
pipeline with a tiny random UNet on CPU in float32, and equal odesolve.sample with the network
wrapped by model_from_diffusers.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from _adapters_lib import diffusers, gmm_x0, loop, rel, tiny_unet

import odesolve as ods
from odesolve.adapters.diffusers import OdesolveScheduler, grid_from_config, model_from_diffusers

# the random UNet's noise prediction is not consistent with its input, so an eps-model's data
# prediction is huge and the pipeline's images saturate; v- and x0-prediction keep them in (0, 1)
PREDICTIONS = ["v_prediction", "sample"]


def _pipe(prediction, **kw):
    pipe = diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler(prediction_type=prediction, **kw))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _images(pipe, scheduler, steps, seed=0):
    pipe.scheduler = scheduler
    with torch.no_grad():
        return pipe(
            batch_size=2, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps, output_type="pt"
        ).images


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize(
    "method, make, steps",
    [
        ("dpmpp-2m", lambda c: diffusers.DPMSolverMultistepScheduler.from_config(c), 8),
        ("dpmpp-2m", lambda c: diffusers.DPMSolverMultistepScheduler.from_config(c), 16),  # lower_order_final off
        ("dpmpp-3m", lambda c: diffusers.DPMSolverMultistepScheduler.from_config(c, solver_order=3), 10),
        ("dpmpp-2m-taylor", lambda c: diffusers.DPMSolverMultistepScheduler.from_config(c, solver_type="heun"), 10),
        ("ddim", lambda c: diffusers.DDIMScheduler.from_config(c, timestep_spacing="trailing", clip_sample=False), 10),
    ],
)
def test_ddpm_pipeline_same_images_as_diffusers(prediction, method, make, steps):
    pipe = _pipe(prediction)
    cfg = pipe.scheduler.config
    extra = {"timestep_spacing": "trailing", "clip_sample": False} if method == "ddim" else {}
    ours = _images(pipe, OdesolveScheduler.from_config(cfg, method=method, **extra), steps)
    theirs = _images(pipe, make(cfg), steps)
    assert 0.05 < float(ours.mean()) < 0.95 and float(ours.std()) > 0.01  # not saturated
    assert float((ours - theirs).abs().max()) <= 1e-4


@pytest.mark.parametrize(
    "method, make, cfg_kw",
    [
        ("unipc-bh2-3", lambda c: diffusers.UniPCMultistepScheduler.from_config(c, solver_order=3), {}),
        (
            "unipc-bh1-2",
            lambda c: diffusers.UniPCMultistepScheduler.from_config(
                c, solver_type="bh1", final_sigmas_type="sigma_min"
            ),
            {"final_sigmas_type": "sigma_min"},
        ),
        (
            "unip-bh2-2",
            lambda c: diffusers.UniPCMultistepScheduler.from_config(c, disable_corrector=list(range(99))),
            {},
        ),
        ("plms", lambda c: diffusers.PNDMScheduler.from_config(c, skip_prk_steps=True), None),
    ],
)
def test_manual_loop_same_result_as_diffusers(method, make, cfg_kw):
    """UniPC's and PNDM's step() take no generator, so DDPMPipeline cannot run them; a pipeline's loop.
    (PNDM with v-prediction combines raw v outputs across steps: docs/diffusers-differences.md.)"""
    cfg = diffusers.DDPMScheduler(prediction_type="epsilon" if method == "plms" else "v_prediction").config
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    if method == "plms":  # PNDM's grid: leading spacing with T // N, then the end at alphas_cumprod[0]
        theirs_s = make(cfg)
        theirs = loop(theirs_s, unet, x, 10)
        ts = torch.tensor(theirs_s._timesteps[::-1].astype(float).tolist() + [0.0], dtype=torch.float64)
        ours_s = OdesolveScheduler.from_config(cfg, method="plms", final_sigmas_type="sigma_min")
        ours = loop(ours_s, unet, x, None, timesteps=ts[:-1].tolist())
    else:
        ours = loop(
            OdesolveScheduler.from_config(cfg, method=method, lower_order_final_max_steps=None, **cfg_kw), unet, x, 10
        )
        theirs = loop(make(cfg), unet, x, 10)
    assert rel(ours, theirs) <= 1e-4


@pytest.mark.parametrize("method", ["dpmpp-2m", "unipc-bh2-3", "heun", "dpm-solver-3", "dpmpp-3m-corrected", "plms"])
def test_scheduler_equals_odesolve_sample(method):
    """With float64 tables on integer timesteps the network times are the grid's path times, so the
    scheduler is odesolve.sample (heun's namesake samples in k-diffusion coordinates x / alpha)."""
    cfg = diffusers.DDPMScheduler(prediction_type="v_prediction", timestep_spacing="leading").config
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    s = OdesolveScheduler.from_config(cfg, method=method, float64_schedule=True)
    ours = loop(s, unet, x, 6, scale_input=True)
    assert len(s.timesteps) == s.plan.calls  # one timestep per model call
    model = model_from_diffusers(unet, cfg)
    assert model.path == s.path
    x_state = x * s.init_noise_sigma * s.path.alpha(s.grid.t[0]) if method == "heun" else x
    with torch.no_grad():
        want = ods.sample(model, x_state.float(), s.grid, method=method, **s._options(6))
    assert rel(ours, want) <= 1e-5


def test_timesteps_one_per_model_call_and_order():
    cfg = diffusers.DDPMScheduler().config
    for method, calls in (
        ("heun", 2 * 10 - 1),
        ("dpm-solver-3", 3 * 10 - 2),
        ("dpmpp-3m-corrected", 11),
        ("plms", 10),  # PNDM's 11th call is at t = 0 where the schedule ends: a zero-length step, merged
        ("dpmpp-2m", 10),
    ):
        s = OdesolveScheduler.from_config(cfg, method=method)
        s.set_timesteps(10)
        assert len(s.timesteps) == calls, method
        assert s.order == ods.methods.get(method).calls_per_step
        assert s.timesteps.dtype == torch.float32 and float(s.timesteps[0]) == 999.0


def test_euler_and_heun_match_k_diffusion_style_schedulers():
    """EulerDiscrete / HeunDiscrete run in k-diffusion coordinates (init_noise_sigma, scale_model_input);
    OdesolveScheduler runs in the model's own coordinates: the final samples agree. (The betas are
    passed explicitly: HeunDiscreteScheduler's defaults differ from DDPM's, and diffusers does not
    carry default-valued fields from one scheduler class to another.)"""
    cfg = diffusers.DDPMScheduler(
        prediction_type="v_prediction", beta_schedule="linear", beta_start=1e-4, beta_end=0.02
    ).config
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    for method, cls in (("euler", diffusers.EulerDiscreteScheduler), ("heun", diffusers.HeunDiscreteScheduler)):
        theirs_s = cls.from_config(cfg)
        theirs = loop(theirs_s, unet, x, 10, scale_input=True)
        sig = theirs_s.sigmas[[0] + list(range(1, len(theirs_s.sigmas), 2 if method == "heun" else 1))].double()
        ours = loop(
            OdesolveScheduler.from_config(cfg, method=method), unet, x, None, scale_input=True, sigmas=sig[:-1].tolist()
        )
        assert rel(ours, theirs) <= 1e-4, method


def test_clip_sample_matches_ddim_clipping_x0_but_not_the_noise():
    """DDIMScheduler clips x0 but, by default, keeps the unclipped noise in its update; the ddim method on
    DDIMScheduler's schedule takes the same step (other methods clip on the model side)."""
    cfg = diffusers.DDPMScheduler(prediction_type="v_prediction", clip_sample=True).config
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    results = {}
    for clipped_output in (False, True):
        ddim = diffusers.DDIMScheduler.from_config(cfg, timestep_spacing="trailing")
        ddim.set_timesteps(10)
        xx = x.clone()
        with torch.no_grad():
            for t in ddim.timesteps:
                xx = ddim.step(unet(xx, t).sample, t, xx, use_clipped_model_output=clipped_output).prev_sample
        results[clipped_output] = xx
    ours = loop(OdesolveScheduler.from_config(cfg, method="ddim", timestep_spacing="trailing"), unet, x, 10)
    assert rel(ours, results[False]) <= 1e-5
    assert rel(results[True], results[False]) > 1e-2  # the clipping mattered


def test_pipeline_scheduler_swap_and_config_round_trip(tmp_path):
    pipe = _pipe("v_prediction")
    pipe.scheduler = OdesolveScheduler.from_config(pipe.scheduler.config, method="unipc-bh2-3")
    a = _images(pipe, pipe.scheduler, 7)
    pipe.scheduler.save_pretrained(tmp_path)
    loaded = OdesolveScheduler.from_pretrained(tmp_path)
    assert loaded.config.method == "unipc-bh2-3" and loaded.config.prediction_type == "v_prediction"
    b = _images(pipe, loaded, 7)
    assert torch.equal(a, b)
    # diffusers' own schedulers load the saved config back
    assert diffusers.DPMSolverMultistepScheduler.from_config(loaded.config).config.prediction_type == "v_prediction"


def test_add_noise_and_init_noise_sigma():
    s = OdesolveScheduler.from_config(diffusers.DDPMScheduler().config)
    ref = diffusers.DDPMScheduler()
    x0, noise = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([999, 500, 0])
    assert rel(s.add_noise(x0, noise, t), ref.add_noise(x0, noise, t)) <= 1e-5
    s.set_timesteps(10)
    assert s.init_noise_sigma == pytest.approx(1.0)
    edm = OdesolveScheduler.from_config(diffusers.EDMEulerScheduler().config, method="euler")
    edm.set_timesteps(10)
    assert edm.init_noise_sigma == pytest.approx(math.sqrt(80.0**2 + 1))


def _img2img(scheduler, unet, init, noise, steps, strength):
    """diffusers' img2img: start at step int(N * strength) from the end, noised with add_noise."""
    scheduler.set_timesteps(steps)
    init_t = min(int(steps * strength), steps)
    t_start = max(steps - init_t, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    x = scheduler.add_noise(init, noise, timesteps[:1].repeat(init.shape[0]))
    with torch.no_grad():
        for t in timesteps:
            x = scheduler.step(unet(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x, t_start


@pytest.mark.parametrize(
    "method, theirs",
    [
        ("dpmpp-2m", lambda c: diffusers.DPMSolverMultistepScheduler.from_config(c)),
        ("unipc-bh2-3", lambda c: diffusers.UniPCMultistepScheduler.from_config(c, solver_order=3)),
        ("heun", None),
        ("dpm-solver-3", None),
    ],
)
def test_img2img_strength(method, theirs):
    cfg = diffusers.DDPMScheduler(prediction_type="v_prediction", timestep_spacing="leading").config
    unet = tiny_unet()
    g = torch.Generator().manual_seed(5)
    init, noise = torch.randn(2, 3, 8, 8, generator=g).clamp(-1, 1), torch.randn(2, 3, 8, 8, generator=g)
    s = OdesolveScheduler.from_config(cfg, method=method, float64_schedule=True)
    ours, t_start = _img2img(s, unet, init, noise, 10, 0.6)
    assert s.plan.grid.steps == 10 - t_start  # recompiled from where sampling starts
    if theirs is not None:
        want, _ = _img2img(theirs(cfg), unet, init, noise, 10, 0.6)
        assert rel(ours, want) <= 1e-4
    # and it is odesolve.sample on the grid from that step on (float64 tables: network time = path time)
    full = s.grid
    assert torch.equal(full.t, grid_from_config(cfg, 10, path=s.path, method=method).t.round())
    sub = ods.Grid(s.path, full.t[t_start:])
    t0 = sub.t[:1]
    x = (s.path.alpha(t0) * init + s.path.sigma(t0) * noise).float()
    with torch.no_grad():
        want = ods.sample(model_from_diffusers(unet, cfg), x, sub, method=method, **s._options(10))
    assert rel(ours, want) <= 1e-5


def test_img2img_refused_for_methods_with_a_warm_up_call():
    cfg = diffusers.DDPMScheduler().config
    s = OdesolveScheduler.from_config(cfg, method="plms")
    s.set_timesteps(10)
    s.set_begin_index(5)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="warm-up|mid-way"):
        s.step(torch.zeros_like(x), s.timesteps[5], x)


def test_unknown_method_is_refused_with_suggestions():
    with pytest.raises(ValueError, match="dpmpp-2m"):
        OdesolveScheduler(method="dpmpp2m")


def test_flow_matching_scheduler_equals_flowmatch_euler():
    """FlowMatchEulerDiscreteScheduler is DDIM on the flow path (x = (1-t) x0 + t eps), started at
    alpha = 0; odesolve's ddim takes that first step in its exact limit."""
    cfg = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config

    def velocity(x, t):  # the exact velocity (eps - x0) of the Gaussian mixture
        tt = t.double().reshape(-1)[0] / 1000.0
        x0 = gmm_x0(x, 1 - tt, tt)
        return ((x.double() - x0) / tt).to(x.dtype) if tt > 0 else (x - x0).to(x.dtype)

    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    theirs = loop(diffusers.FlowMatchEulerDiscreteScheduler.from_config(cfg), velocity, x, 12)
    s = OdesolveScheduler.from_config(cfg, method="ddim")
    ours = loop(s, velocity, x, 12)
    assert isinstance(s.path, ods.paths.FlowMatching) and float(s.grid.t[0]) == 1.0
    assert rel(ours, theirs) <= 1e-5


def test_edm_scheduler_equals_edm_euler():
    cfg = diffusers.EDMEulerScheduler().config

    def net(x_in, c_noise):  # the EDM-preconditioned network of the exact denoiser
        sigma = torch.exp(4 * c_noise.double().reshape(-1)[0])
        sd = 0.5
        x = x_in.double() * torch.sqrt(sigma**2 + sd**2)
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / torch.sqrt(sigma**2 + sd**2)
        return ((gmm_x0(x, 1.0, sigma) - c_skip * x) / c_out).to(x_in.dtype)

    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    theirs = loop(diffusers.EDMEulerScheduler.from_config(cfg), net, x, 12, scale_input=True)
    ours = loop(OdesolveScheduler.from_config(cfg, method="euler"), net, x, 12, scale_input=True)
    assert rel(ours, theirs) <= 1e-5


# -- bad inputs: refused with errors that name them ------------------------------------------------


def _ready(method="dpmpp-2m", steps=10, **kw):
    s = OdesolveScheduler.from_config(
        diffusers.DDPMScheduler(prediction_type="v_prediction").config, method=method, **kw
    )
    s.set_timesteps(steps)
    return s


def test_step_at_a_timestep_off_the_grid_or_out_of_order_is_refused():
    s, x = _ready(), torch.randn(1, 3, 8, 8)
    out = torch.zeros_like(x)
    with pytest.raises(ValueError, match=r"500\.5.*not in scheduler.timesteps"):
        s.step(out, 500.5, x)  # the first call names where sampling starts: it must be on the grid
    t = s.timesteps
    x = s.step(out, t[0], x).prev_sample
    with pytest.raises(ValueError, match=rf"timestep {float(t[2]):g}.*next model call is at timestep {float(t[1]):g}"):
        s.step(out, t[2], x)  # skipping a call
    with pytest.raises(ValueError, match=rf"timestep {float(t[0]):g}.*timestep {float(t[1]):g}"):
        s.step(out, t[0], x)  # repeating one
    x = s.step(out, t[1], x).prev_sample  # the right one is still accepted, and the run goes on
    assert s.step_index == 2


def test_fractional_timesteps_in_half_precision_are_accepted():
    """Karras grids call the network at fractional timesteps; a pipeline may hand them back rounded
    to its own dtype (float16 rounds 421.37 to 421.5)."""
    cfg = diffusers.DDPMScheduler(prediction_type="v_prediction").config
    unet = tiny_unet()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    s = OdesolveScheduler.from_config(cfg, method="dpmpp-2m", use_karras_sigmas=True, fractional_timesteps=True)
    s.set_timesteps(8)
    assert any(float(t) != round(float(t)) for t in s.timesteps)
    y = x
    with torch.no_grad():
        for t in s.timesteps:
            y = s.step(unet(y, t).sample, t.half(), y).prev_sample
    assert (
        rel(
            y,
            loop(
                OdesolveScheduler.from_config(
                    cfg, method="dpmpp-2m", use_karras_sigmas=True, fractional_timesteps=True
                ),
                unet,
                x,
                8,
            ),
        )
        == 0.0
    )


@pytest.mark.parametrize("shape", [(1, 3, 4, 4), (2, 3, 8, 8), (1, 5, 8, 8)])
def test_wrong_shaped_model_output_is_refused_naming_both_shapes(shape):
    s, x = _ready(), torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=re.escape(f"{tuple(shape)}") + ".*" + re.escape("(1, 3, 8, 8)")):
        s.step(torch.zeros(shape), s.timesteps[0], x)


def test_learned_variance_output_keeps_the_mean_channels():
    s, x = _ready(steps=4), torch.randn(1, 3, 8, 8)
    mean, var = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    a = s.step(torch.cat([mean, var], 1), s.timesteps[0], x).prev_sample
    b = _ready(steps=4).step(mean, s.timesteps[0], x).prev_sample
    assert torch.equal(a, b)


def test_model_output_on_another_device_or_of_a_wrong_dtype_is_refused():
    s, x = _ready(), torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"meta.*cpu"):
        s.step(torch.zeros(1, 3, 8, 8, device="meta"), s.timesteps[0], x)
    with pytest.raises(TypeError, match=r"model_output.*complex"):
        s.step(torch.zeros(1, 3, 8, 8, dtype=torch.complex64), s.timesteps[0], x)
    with pytest.raises(TypeError, match=r"model_output.*bool"):
        s.step(torch.zeros(1, 3, 8, 8, dtype=torch.bool), s.timesteps[0], x)
    with pytest.raises(TypeError, match=r"sample.*int64"):
        s.step(torch.zeros(1, 3, 8, 8), s.timesteps[0], torch.zeros(1, 3, 8, 8, dtype=torch.int64))


def test_sample_shape_changed_mid_run_is_refused():
    s, x = _ready(), torch.randn(2, 3, 8, 8)
    x = s.step(torch.zeros_like(x), s.timesteps[0], x).prev_sample
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\).*\(2, 3, 8, 8\)"):
        s.step(torch.zeros(1, 3, 8, 8), s.timesteps[1], x[:1])


@pytest.mark.parametrize(
    "steps, match",
    [
        (2000, "num_inference_steps=2000 is more than the model's num_train_timesteps=1000"),
        (10.7, "num_inference_steps must be an integer"),
        (True, "num_inference_steps must be an integer"),
        (0, "num_inference_steps must be an integer >= 1"),
        ("10", "num_inference_steps must be an integer"),
    ],
)
def test_bad_step_counts_are_refused(steps, match):
    s = OdesolveScheduler.from_config(diffusers.DDPMScheduler().config)
    with pytest.raises(ValueError, match=match):
        s.set_timesteps(steps)
    with pytest.raises(ValueError, match="steps"):
        grid_from_config(diffusers.DDPMScheduler().config, steps)


def test_step_counts_up_to_num_train_timesteps_give_that_many_distinct_timesteps():
    s = OdesolveScheduler.from_config(diffusers.DDPMScheduler().config, method="ddim", timestep_spacing="trailing")
    for steps in (1000, 61, 10.0):
        s.set_timesteps(steps)
        ts = s.timesteps
        assert len(ts) == int(steps) and bool((ts[1:] < ts[:-1]).all()) and float(ts[-1]) >= 0
    # linspace cannot hold 1000 distinct integer timesteps in [0, 999]: it would repeat one
    s = OdesolveScheduler.from_config(diffusers.DDPMScheduler().config, timestep_spacing="linspace")
    with pytest.raises(ValueError, match="repeat a timestep"):
        s.set_timesteps(1000)
    # a steps_offset past the end would clip the timesteps onto one
    s = OdesolveScheduler.from_config(diffusers.DDPMScheduler().config, timestep_spacing="leading", steps_offset=5000)
    with pytest.raises(ValueError, match="steps_offset=5000"):
        s.set_timesteps(10)


@pytest.mark.parametrize("T", [-5, 0, 1, 10.5, "1000", True])
def test_bad_num_train_timesteps_is_refused(T):
    with pytest.raises(ValueError, match="num_train_timesteps"):
        OdesolveScheduler(num_train_timesteps=T)
    cfg = {"num_train_timesteps": T, "shift": 3.0}
    with pytest.raises(ValueError, match="num_train_timesteps"):
        grid_from_config(cfg, 10)


ZERO_SNR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True}


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_eps_network_from_alpha_zero_is_refused_up_front(spacing):
    """Zero terminal SNR: the grid starts at alpha = 0, where eps = x carries nothing about x0. DDIM, Heun
    and LMS keep alphas_cumprod[-1] = 0 (diffusers returns NaN there): refused."""
    cfg = diffusers.DDPMScheduler(prediction_type="epsilon", timestep_spacing=spacing, **ZERO_SNR).config
    for method in ("ddim", "heun", "lms-3"):
        s = OdesolveScheduler.from_config(cfg, method=method)
        with pytest.raises(ValueError, match=r"alpha = 0"):
            s.set_timesteps(10)
        assert s.plan is None  # nothing half set up


@pytest.mark.parametrize(
    "method, cls",
    [
        ("dpmpp-2m", diffusers.DPMSolverMultistepScheduler),
        ("unipc-bh2-2", diffusers.UniPCMultistepScheduler),
        ("euler", diffusers.EulerDiscreteScheduler),
    ],
)
def test_zero_terminal_snr_eps_network_runs_where_the_namesake_clamps(method, cls):
    """DPMSolverMultistep, UniPC and EulerDiscrete set alphas_cumprod[-1] = 2**-24 at a zero terminal SNR:
    the first step starts at alpha = 2**-12, where an eps-network's prediction is defined."""
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    cfg = diffusers.DDPMScheduler(prediction_type="epsilon", timestep_spacing="trailing", **ZERO_SNR).config
    s = OdesolveScheduler.from_config(cfg, method=method)
    ours = loop(s, unet, x, 10, scale_input=True)
    theirs = loop(cls.from_config(cfg), unet, x, 10, scale_input=True)
    assert float(s.timesteps[0]) == 999.0 and float(s.path.alpha(s.grid.t[0])) == pytest.approx(2**-12, rel=1e-5)
    assert torch.isfinite(ours).all() and rel(ours, theirs) <= 1e-5


def test_zero_terminal_snr_with_v_prediction_or_a_later_start_runs():
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    cfg = diffusers.DDPMScheduler(prediction_type="v_prediction", timestep_spacing="trailing", **ZERO_SNR).config
    s = OdesolveScheduler.from_config(cfg, method="dpmpp-2m", float64_schedule=True)
    ours = loop(s, unet, x, 10)
    assert float(s.timesteps[0]) == 999.0 and float(s.path.alpha(torch.tensor(999.0))) == 0.0
    with torch.no_grad():
        want = ods.sample(model_from_diffusers(unet, cfg), x, s.grid, method="dpmpp-2m", **s._options(10))
    assert torch.isfinite(ours).all() and rel(ours, want) <= 1e-5
    # an eps network from a grid that starts below alpha = 0
    eps_cfg = diffusers.DDPMScheduler(prediction_type="epsilon", timestep_spacing="leading", **ZERO_SNR).config
    s = OdesolveScheduler.from_config(eps_cfg, method="dpmpp-2m")
    ours = loop(s, unet, x, 10)
    assert float(s.timesteps[0]) < 999.0 and torch.isfinite(ours).all()


def test_lower_order_final_reaches_exactly_the_methods_that_declare_it():
    """Each namesake's rule: DPMSolverMultistep below 15 steps, UniPC at any step count, LMS never."""
    for method, above in (("dpmpp-2m", False), ("unipc-bh2-3", True), ("heun", False), ("lms-4", False)):
        m = ods.methods.get(method)
        declared = "lower_order_final" in m.options and method != "lms-4"
        for steps, final in ((8, True), (16, above)):  # below / above 15 steps
            s = _ready(method, steps)
            want = m.compile(s.path, s.grid, **({"lower_order_final": final} if declared else {}))
            assert torch.equal(s.plan.update_hist, want.update_hist) and torch.equal(s.plan.times, want.times)
    s = _ready("unipc-bh2-3", 8)
    other = ods.methods.get("unipc-bh2-3").compile(s.path, s.grid, lower_order_final=False)
    assert not torch.equal(s.plan.update_hist, other.update_hist)  # the option changes the last steps


@pytest.mark.parametrize(
    "field, value",
    [
        ("clip_sample_range", 0.0),
        ("clip_sample_range", -1.0),
        ("clip_sample_range", float("nan")),
        ("sample_max_value", -1.0),
        ("dynamic_thresholding_ratio", 1.5),
    ],
)
def test_bad_clipping_options_are_refused(field, value):
    on = {"clip_sample": True} if field == "clip_sample_range" else {"thresholding": True}
    with pytest.raises(ValueError, match=field):
        OdesolveScheduler(**on, **{field: value})


def test_add_noise_outside_the_models_timesteps_is_refused():
    s = OdesolveScheduler.from_config(diffusers.DDPMScheduler().config)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"add_noise: timesteps \[5000"):
        s.add_noise(x, torch.randn_like(x), torch.tensor([5000]))
    assert torch.equal(s.add_noise(x, x, torch.tensor([999])), s.add_noise(x, x, 999))


# -- step drives the executor's program: the pipeline's side of the protocol ----------------------


def test_timesteps_of_the_schedulers_own_tensor_are_checked_without_reading_them(monkeypatch):
    """Iterating (or slicing) scheduler.timesteps yields views of its entries: step recognises them by
    address, so a timestep on a GPU costs no device synchronisation; other timesteps are read."""
    import odesolve.adapters.diffusers.scheduler as sched

    unet = tiny_unet()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    want = loop(_ready(steps=6), unet, x, 6)

    def read(timestep):
        raise AssertionError(f"timestep {timestep!r} was read")

    monkeypatch.setattr(sched, "_timestep_value", read)
    s = _ready(steps=6)
    assert torch.equal(loop(s, unet, x, 6), want)
    s.set_timesteps(6)
    with pytest.raises(AssertionError, match="was read"):
        s.step(torch.zeros_like(x), s.timesteps[0].clone(), x)  # a copy: its value must be read


def _heun_steps(s, unet, x, replace_at=None, new=None):
    """A pipeline's loop that replaces the latents before grid step ``replace_at`` (inpainting)."""
    with torch.no_grad():
        for k, t in enumerate(s.timesteps):
            if replace_at is not None and k == replace_at * s.order:
                x = new
            x = s.step(unet(s.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


def test_latents_replaced_between_steps_become_the_state():
    """Heun keeps no history across grid steps, so replacing the latents before step j equals
    sampling from the replacement on the grid from step j on (img2img from there)."""
    cfg = diffusers.DDPMScheduler(prediction_type="v_prediction", timestep_spacing="leading").config
    unet = tiny_unet()
    g = torch.Generator().manual_seed(11)
    x, new = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    s = OdesolveScheduler.from_config(cfg, method="heun", float64_schedule=True)
    s.set_timesteps(6)
    ours = _heun_steps(s, unet, x, replace_at=3, new=new)
    sub = ods.Grid(s.path, s.grid.t[3:])
    with torch.no_grad():  # heun's namesake samples in k-diffusion coordinates x / alpha
        want = ods.sample(model_from_diffusers(unet, cfg), new * s.path.alpha(sub.t[0]).float(), sub, method="heun")
    assert rel(ours, want) <= 1e-5
    s.set_timesteps(6)
    assert rel(_heun_steps(s, unet, x), ours) > 1e-2  # the replacement mattered


def test_latents_modified_in_place_become_the_state():
    unet = tiny_unet()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(12))
    results = []
    for in_place in (False, True):
        s = _ready("dpmpp-2m", steps=5)
        y = x
        with torch.no_grad():
            for k, t in enumerate(s.timesteps):
                if k == 2:
                    y = y.mul_(0.5) if in_place else y * 0.5
                y = s.step(unet(y, t).sample, t, y).prev_sample
        results.append(y)
    assert torch.equal(results[0], results[1])


class _Noisy:
    """ddim with noise injected after every call: a stochastic plan for the scheduler."""

    calls_per_step, options = 1, ()

    def compile(self, path, grid, **options):
        import dataclasses

        plan = ods.methods.get("ddim").compile(path, grid)
        return dataclasses.replace(plan, method="noisy-ddim", update_noise=torch.full_like(plan.update_noise, 0.05))


def test_a_stochastic_plan_draws_from_the_generator_of_the_first_step():
    cfg = diffusers.DDPMScheduler(prediction_type="v_prediction").config
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(13))
    s = OdesolveScheduler.from_config(cfg, method="ddim", clip_sample=False)
    s._method = _Noisy()
    s.set_timesteps(5)
    assert s.plan.stochastic
    g, y = torch.Generator().manual_seed(0), x
    with torch.no_grad():
        for t in s.timesteps:
            y = s.step(unet(y, t).sample, t, y, generator=g).prev_sample
        want = ods.execute(s.plan, model_from_diffusers(unet, cfg), x, generator=torch.Generator().manual_seed(0))
    assert rel(y, want) <= 1e-6
    s.set_timesteps(5)
    t = s.timesteps
    y = s.step(torch.zeros_like(x), t[0], x, generator=g).prev_sample
    with pytest.raises(ValueError, match="generator.*same generator"):
        s.step(torch.zeros_like(x), t[1], y, generator=torch.Generator())
    s.set_timesteps(5)
    with pytest.raises(ValueError, match="generator: 3 generators for a batch of 2"):
        s.step(torch.zeros_like(x), t[0], x, generator=[g, g, g])


def test_a_run_stopped_by_an_error_is_not_continued():
    s, x = _ready(), torch.randn(1, 3, 8, 8)
    x = s.step(torch.zeros_like(x), s.timesteps[0], x).prev_sample
    with pytest.raises(ods.NonFiniteError, match="call 1"):
        s.step(torch.full_like(x, float("nan")), s.timesteps[1], x)
    with pytest.raises(ValueError, match="stopped with an error at call 1.*set_timesteps"):
        s.step(torch.zeros_like(x), s.timesteps[1], x)


def test_a_finished_run_refuses_more_steps_and_the_scheduler_can_be_copied():
    import copy

    s, x = _ready(steps=3), torch.randn(1, 3, 8, 8)
    for t in s.timesteps:
        x = s.step(torch.zeros_like(x), t, x).prev_sample
    assert s.step_index == 3
    with pytest.raises(ValueError, match="step called 4 times but the plan has 3 model calls"):
        s.step(torch.zeros_like(x), s.timesteps[2], x)
    c = copy.deepcopy(s)  # pipelines copy schedulers; a finished run holds no interpreter
    c.set_timesteps(3)
    assert c.step_index is None and s.step_index == 3
