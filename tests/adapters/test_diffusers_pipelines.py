"""OdesolveScheduler in real diffusers pipelines: StableDiffusion (txt2img, img2img), StableDiffusionXL,
StableDiffusion3 and Flux, built from tiny random components (fixed seeds, no downloads; prompt
embeddings given, no tokenizer or text encoder), run with each method's diffusers namesake and then with
``OdesolveScheduler.from_config(pipe.scheduler.config, method=m)``, the same generator: the final
latents agree to 1e-5 relative in float32 (1, 2 and 10 steps; 1000 steps for one case, marked slow).
Measured numbers and the pairs that differ on purpose: docs/diffusers-differences.md, "Pipelines".
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from _adapters_lib import diffusers, rel, tiny_cond_unet

pytest.importorskip("transformers")  # diffusers exposes its text-conditioned pipelines only with it

from odesolve.adapters.diffusers import OdesolveScheduler

FULL = os.environ.get("ODESOLVE_FULL", "0") == "1"
# SD 1.5's scheduler_config.json (PNDM); SDXL ships the same fields for EulerDiscrete
SD = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "clip_sample": False,
}
# method -> its namesake (the scheduler the pipeline had)
VP_METHODS = {
    "dpmpp-2m": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "plms": "PNDMScheduler",
    "unipc-bh2-2": "UniPCMultistepScheduler",
}
GUIDANCE = 5.0


def _vae(seed=1, **kw):
    """A three-level AutoencoderKL: 32x32 images, 4-channel 8x8 latents."""
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
        **kw,
    ).eval()


def _embeddings(*shapes, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


@functools.cache
def _sd(img2img=False):
    cls = diffusers.StableDiffusionImg2ImgPipeline if img2img else diffusers.StableDiffusionPipeline
    pipe = cls(
        vae=_vae(),
        text_encoder=None,
        tokenizer=None,
        unet=tiny_cond_unet(),
        scheduler=diffusers.PNDMScheduler.from_config(SD),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, scheduler, steps, output_type="latent", **kw):
    """The pipeline's output with ``scheduler`` in it (its own scheduler put back afterwards)."""
    original, pipe.scheduler = pipe.scheduler, scheduler
    try:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(3)
            return pipe(num_inference_steps=steps, generator=gen, output_type=output_type, **kw)[0]
    finally:
        pipe.scheduler = original


def _pair(pipe, namesake, method, steps, namesake_kw=None, **kw):
    """(odesolve's final latents, the namesake's) in ``pipe``, after checking that both ran on the same
    timesteps; the namesake is built from the pipeline's own scheduler config, odesolve from the namesake's."""
    theirs = namesake.from_config(pipe.scheduler.config, **(namesake_kw or {}))
    ours = OdesolveScheduler.from_config(theirs.config, method=method)
    b = _run(pipe, theirs, steps, **kw)
    a = _run(pipe, ours, steps, **kw)
    assert torch.isfinite(a).all()
    assert ours.timesteps.shape == theirs.timesteps.shape
    assert torch.allclose(ours.timesteps.double(), theirs.timesteps.double(), rtol=0, atol=2e-3)
    return a, b


def _sd_inputs():
    prompt, negative = _embeddings((1, 3, 8), (1, 3, 8))
    return {"prompt_embeds": prompt, "negative_prompt_embeds": negative, "guidance_scale": GUIDANCE}


def _vp_cases(step_counts):
    # PNDM's single step is one DDIM step, odesolve's plms two calls (below)
    return [(m, n) for m in VP_METHODS for n in step_counts if not (m == "plms" and n == 1)]


@pytest.mark.parametrize("method, steps", _vp_cases((1, 2, 10)))
def test_stable_diffusion(method, steps):
    pipe = _sd()
    a, b = _pair(pipe, getattr(diffusers, VP_METHODS[method]), method, steps, height=32, width=32, **_sd_inputs())
    assert rel(a, b) <= 1e-5, rel(a, b)


def test_stable_diffusion_plms_single_step_is_a_ddim_step():
    """PNDMScheduler at one step takes one DDIM step (one network call); odesolve's ``plms`` takes its
    pseudo improved Euler step (two calls): its DDIM is the drop-in there."""
    pipe = _sd()
    inputs = {"height": 32, "width": 32, **_sd_inputs()}
    pndm = diffusers.PNDMScheduler.from_config(pipe.scheduler.config)
    ddim, plms = (OdesolveScheduler.from_config(pndm.config, method=m) for m in ("ddim", "plms"))
    latents = {s: _run(pipe, s, 1, **inputs) for s in (pndm, ddim, plms)}
    assert (len(pndm.timesteps), len(ddim.timesteps), len(plms.timesteps)) == (1, 1, 2)
    ddim, plms, pndm = latents[ddim], latents[plms], latents[pndm]
    assert rel(ddim, pndm) <= 1e-5, rel(ddim, pndm)
    assert rel(plms, pndm) > 1e-5


def _image():
    (x,) = _embeddings((1, 3, 32, 32), seed=4)
    return (x.tanh() + 1) / 2  # an image in [0, 1]


@pytest.mark.parametrize("method, steps", [c for c in _vp_cases((2, 10)) if c[0] != "plms"])
def test_stable_diffusion_img2img(method, steps):
    """strength 0.6: the pipeline keeps the last int(0.6 N) timesteps (set_begin_index) and noises the
    encoded image to the first of them with the scheduler's add_noise (one step: none left, refused)."""
    pipe = _sd(img2img=True)
    inputs = {"image": _image(), "strength": 0.6, **_sd_inputs()}
    a, b = _pair(pipe, getattr(diffusers, VP_METHODS[method]), method, steps, **inputs)
    assert rel(a, b) <= 1e-5, rel(a, b)


@pytest.mark.parametrize("steps", [2, 10])
def test_stable_diffusion_img2img_plms_is_refused(steps):
    """PNDMScheduler entered mid-grid restarts its warm-up: its first step takes two calls, and its
    duplicated timestep was cut away, so each later call gets the timestep one grid step below its
    sample's. odesolve's plms cannot be entered there and says so (docs, "Pipelines")."""
    pipe = _sd(img2img=True)
    with pytest.raises(ValueError, match="cannot be entered mid-way|can only be entered at the first call"):
        _pair(pipe, diffusers.PNDMScheduler, "plms", steps, image=_image(), strength=0.6, **_sd_inputs())


@functools.cache
def _sdxl():
    """SDXL's layout: a UNet with text-time additional embeddings (pooled text + six size numbers),
    no text encoders; EulerDiscreteScheduler with SD's fields, SDXL's default."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=4,
        attention_head_dim=2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=8 + 6 * 4,
    ).eval()
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler.from_config(SD),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sdxl_inputs():
    prompt, negative, pooled, negative_pooled = _embeddings((1, 3, 8), (1, 3, 8), (1, 8), (1, 8))
    return {
        "prompt_embeds": prompt,
        "negative_prompt_embeds": negative,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
        "guidance_scale": GUIDANCE,
        "height": 32,
        "width": 32,
    }


@pytest.mark.parametrize("method, steps", _vp_cases((1, 2, 10)))
def test_stable_diffusion_xl(method, steps):
    pipe = _sdxl()
    a, b = _pair(pipe, getattr(diffusers, VP_METHODS[method]), method, steps, **_sdxl_inputs())
    assert rel(a, b) <= 1e-5, rel(a, b)


@functools.cache
def _sd3():
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        pos_embed_max_size=16,
    ).eval()
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _flow_inputs(pooled=8, seq=3, dim=16, negative=True):
    prompt, negative_prompt, p, np_ = _embeddings((1, seq, dim), (1, seq, dim), (1, pooled), (1, pooled))
    out = {"prompt_embeds": prompt, "pooled_prompt_embeds": p, "height": 32, "width": 32, "guidance_scale": 1.0}
    if negative:
        out.update(negative_prompt_embeds=negative_prompt, negative_pooled_prompt_embeds=np_, guidance_scale=GUIDANCE)
    return out


@pytest.mark.parametrize("steps", [1, 2, 10])
def test_stable_diffusion_3(steps):
    pipe = _sd3()
    a, b = _pair(pipe, diffusers.FlowMatchEulerDiscreteScheduler, "euler", steps, **_flow_inputs())
    assert rel(a, b) <= 1e-5, rel(a, b)


@functools.cache
def _flux(dynamic):
    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2 x 2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        axes_dims_rope=(2, 2, 4),
    ).eval()
    shift = {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15} if dynamic else {"shift": 3.0}
    pipe = diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**shift),
        vae=_vae(shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("steps", [1, 2, 10])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_flux(dynamic, steps):
    """FluxPipeline passes its own sigmas (1 to 1/N) and mu to set_timesteps: shifted as diffusers does
    (issue: the shift was ignored; an unshifted schedule moves the latents by 1e-2 at 10 steps)."""
    pipe = _flux(dynamic)
    inputs = _flow_inputs(negative=False)
    a, b = _pair(pipe, diffusers.FlowMatchEulerDiscreteScheduler, "euler", steps, **inputs)
    assert rel(a, b) <= 1e-5, rel(a, b)
    if steps == 10:
        unshifted = _run(pipe, diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0), steps, **inputs)
        assert rel(unshifted, b) > 1e-3


@pytest.mark.parametrize("method", ["dpmpp-2m", "euler"])
def test_stable_diffusion_decoded_images(method):
    """The decoded images too (the VAE is deterministic; this checks the pipeline's post-processing sees
    the same latents and scaling)."""
    pipe = _sd()
    inputs = {"height": 32, "width": 32, "output_type": "pt", **_sd_inputs()}
    a, b = _pair(pipe, getattr(diffusers, VP_METHODS[method]), method, 10, **inputs)
    assert a.shape == (1, 3, 32, 32)
    assert rel(a, b) <= 1e-5, rel(a, b)


# more namesakes and sigma options in StableDiffusionPipeline: (method, namesake, its own arguments)
MORE = [
    ("heun", "HeunDiscreteScheduler", {}),
    ("lms-4", "LMSDiscreteScheduler", {}),
    ("dpmpp-3m", "DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("unipc-bh2-3", "UniPCMultistepScheduler", {"solver_order": 3}),
    ("deis-logrho-2", "DEISMultistepScheduler", {}),
    ("dpmpp-2m", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("euler", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("euler", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("dpmpp-2m", "DPMSolverMultistepScheduler", {"prediction_type": "v_prediction"}),
]
_MORE_CASES = [
    pytest.param(m, n, kw, steps, id=f"{m}-{'-'.join(map(str, kw.values())) or 'sd'}-{steps}")
    for m, n, kw in MORE
    for steps in (2, 10)
]


@pytest.mark.slow
@pytest.mark.parametrize("method, name, kw, steps", _MORE_CASES if FULL else _MORE_CASES[1::4])
def test_stable_diffusion_more_namesakes(method, name, kw, steps):
    """ODESOLVE_FULL=1: every pair at 2 and 10 steps; by default a quarter of them."""
    pipe = _sd()
    inputs = {"height": 32, "width": 32, **_sd_inputs()}
    a, b = _pair(pipe, getattr(diffusers, name), method, steps, namesake_kw=kw, **inputs)
    assert rel(a, b) <= (3e-5 if method.startswith("deis") else 1e-5), rel(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["sd3", "flux-static", "flux-dynamic"] if FULL else ["sd3"])
def test_a_thousand_steps(pipeline):
    """1000 steps: SD3 by default (a few seconds), Flux with ODESOLVE_FULL=1."""
    pipe = _sd3() if pipeline == "sd3" else _flux(pipeline == "flux-dynamic")
    a, b = _pair(pipe, diffusers.FlowMatchEulerDiscreteScheduler, "euler", 1000, **_flow_inputs(negative=False))
    assert rel(a, b) <= 1e-5, rel(a, b)
