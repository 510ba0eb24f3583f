"""OdesolveScheduler(method=m) is a drop-in for m's diffusers namesake: the same timesteps, noise levels,
init_noise_sigma and final latents (float32, relative <= 1e-5) for every (scheduler, spacing, sigma option)
pair the namesake supports, at 1, 2 and 10 steps (1000 steps in a reduced form; ODESOLVE_FULL=1: all).

The network is a small deterministic nonlinear function of (x, t), so a loop costs little and any
difference in timesteps, noise levels or coefficients shows. The pairs diffusers samples differently on
purpose or by a bug are listed in docs/diffusers-differences.md and left out here (``KNOWN``).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from _adapters_lib import diffusers, rel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from odesolve.adapters.diffusers import OdesolveScheduler
from odesolve.grids import discrete, spaced_timesteps
from odesolve.paths import VPDiscrete

FULL = os.environ.get("ODESOLVE_FULL", "0") == "1"
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

# method, namesake class, the class's own arguments for the same solver
PAIRS = [
    ("euler", "EulerDiscreteScheduler", {}),
    ("heun", "HeunDiscreteScheduler", {}),
    ("lms-4", "LMSDiscreteScheduler", {}),
    ("ddim", "DDIMScheduler", {}),
    ("plms", "PNDMScheduler", {"skip_prk_steps": True}),
    ("dpmpp-2m", "DPMSolverMultistepScheduler", {}),
    ("dpmpp-3m", "DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("unipc-bh2-2", "UniPCMultistepScheduler", {}),
    ("unipc-bh2-3", "UniPCMultistepScheduler", {"solver_order": 3}),
    ("deis-logrho-2", "DEISMultistepScheduler", {}),
]
OPTIONS = {
    "leading": {"timestep_spacing": "leading", "steps_offset": 1},
    "linspace": {"timestep_spacing": "linspace"},
    "trailing": {"timestep_spacing": "trailing"},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sigma_min": {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"},
    "lu": {"use_lu_lambdas": True},
}


def _known(method, option, steps):
    """Pairs documented as different (docs/diffusers-differences.md)."""
    ddim_like = method in ("ddim", "plms")
    return (
        # DDIM / PNDM step to t - T // N, not to the next timestep
        (ddim_like and option == "linspace" and steps > 1)
        or (ddim_like and option in ("trailing", "sigma_min") and 1000 % steps != 0)
        or (method == "plms" and steps == 1)  # PNDM's single step is a DDIM step; plms takes two calls
        or (method.startswith(("unipc", "deis")) and option in ("karras", "exponential", "beta") and steps == 1)
        # LMSDiscrete integrates its coefficients by quadrature to 1e-4: 1e-3 to 2e-2 over 1000 ramp steps
        or (method.startswith("lms") and option in ("karras", "exponential", "beta") and steps >= 1000)
    )  # (UniPC, DEIS: one step on a ramp is a zero-length step; refused, diffusers returns its input)


def _supported(cls, method, option, steps):
    kw = OPTIONS[option]
    fields = cls().config
    if any(k not in fields for k in kw):  # the class does not have the option: nothing to compare
        return False
    return not _known(method, option, steps)


def _net(x, t):
    """A deterministic noise prediction that depends on x and t (any smooth function serves)."""
    tt = torch.as_tensor(t, dtype=torch.float32).reshape(-1)[0]
    return 0.6 * torch.tanh(x) + 0.3 * torch.cos(tt / 250.0) * x + 0.05 * torch.sin(3 * x + tt / 100.0)


def _loop(s, x, steps):
    s.set_timesteps(steps)
    x = x * s.init_noise_sigma
    for t in s.timesteps:
        x = s.step(_net(s.scale_model_input(x, t), t), t, x).prev_sample
    return x


def _cases(step_counts):
    out = []
    for method, name, kw in PAIRS:
        cls = getattr(diffusers, name)
        for option in OPTIONS:
            for steps in step_counts:
                if _supported(cls, method, option, steps):
                    out.append(pytest.param(method, cls, kw, option, steps, id=f"{method}-{option}-{steps}"))
    return out


X = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))


def _pair(method, cls, kw, option, prediction="epsilon"):
    cfg = diffusers.DDPMScheduler(prediction_type=prediction, **SD).config  # DDIM: clip_sample (its default)
    return OdesolveScheduler.from_config(cfg, method=method, **OPTIONS[option]), cls.from_config(
        cfg, **kw, **OPTIONS[option]
    )


@pytest.mark.parametrize("method, cls, kw, option, steps", _cases((1, 2, 10)))
def test_same_timesteps_noise_levels_and_latents_as_the_namesake(method, cls, kw, option, steps):
    ours, theirs = _pair(method, cls, kw, option)
    a, b = _loop(ours, X, steps), _loop(theirs, X, steps)
    t_ours, t_theirs = ours.timesteps.double(), theirs.timesteps.double()
    # a zero-length last step (the end repeats the last noise level) is merged: diffusers calls the
    # network once more there and does not move
    sig = getattr(theirs, "sigmas", None)
    zero_length = sig is not None and len(sig) >= 2 and float(sig[-1]) == float(sig[-2])
    zero_length |= method == "plms" and float(t_theirs[-1]) == 0.0 and not theirs.config.set_alpha_to_one
    n = len(t_theirs) - int(zero_length)
    assert len(t_ours) == n
    assert torch.allclose(t_ours, t_theirs[:n], rtol=0, atol=2e-3)  # float32 noise levels read back
    init = theirs.init_noise_sigma
    assert type(ours.init_noise_sigma) is type(init)
    assert float(ours.init_noise_sigma) == pytest.approx(float(init), rel=1e-5)
    assert torch.isfinite(a).all()
    tol = 3e-5 if method == "deis-logrho-2" else 1e-5  # DEIS's closed-form weights cancel in float32
    assert rel(a, b) <= tol, f"{method} {option} N={steps}: {rel(a, b):.2e}"


@pytest.mark.parametrize(
    "method, cls, kw, option, steps",
    _cases((1000,)) if FULL else [p for p in _cases((1000,)) if p.values[0] in ("euler", "dpmpp-2m")][:2],
)
@pytest.mark.slow
def test_a_thousand_steps(method, cls, kw, option, steps):
    ours, theirs = _pair(method, cls, kw, option)
    try:
        theirs.set_timesteps(steps)
    except (ValueError, IndexError):
        return
    try:
        ours.set_timesteps(steps)
    except ValueError as e:  # refused: where the namesake would repeat a timestep or leave [0, T-1]
        assert "repeat a timestep" in str(e) or "steps_offset must be in" in str(e)
        return
    a, b = _loop(ours, X, steps), _loop(theirs, X, steps)
    assert torch.isfinite(a).all()
    if not torch.isfinite(b).all():  # diffusers' order-3 step over a zero-length last step (h = 0)
        assert option == "sigma_min" and method == "dpmpp-3m"
        return
    assert rel(a, b) <= (3e-5 if method.startswith("deis") else 1e-5)


def test_leading_and_linspace_at_a_thousand_steps_are_refused_or_exact():
    """The issue: 1000 leading steps ran one model call, 1000 linspace steps silently became 999."""
    cfg = diffusers.DDPMScheduler(**SD).config
    s = OdesolveScheduler.from_config(cfg, method="dpmpp-2m", timestep_spacing="leading")
    with pytest.raises(ValueError, match="num_inference_steps=1000.*repeat a timestep"):
        s.set_timesteps(1000)
    s = OdesolveScheduler.from_config(cfg, method="dpmpp-2m", timestep_spacing="linspace")
    with pytest.raises(ValueError, match="repeat a timestep"):
        s.set_timesteps(1000)
    for method in ("ddim", "euler"):  # DDIM / Euler: every training timestep once
        s = OdesolveScheduler.from_config(cfg, method=method, timestep_spacing="leading")
        s.set_timesteps(1000)
        assert len(s.timesteps) == 1000 and s.timesteps.tolist() == list(range(999, -1, -1))


def test_discrete_grid_and_adapter_agree_on_leading():
    """odesolve.grids.discrete is DDIM's leading (T // N); with extra_point it is DPM-Solver's (T // (N + 1))."""
    path = VPDiscrete.from_schedule("scaled_linear", 1000, 0.00085, 0.012)
    cfg = diffusers.DDPMScheduler(**SD, timestep_spacing="leading", steps_offset=1).config
    for method, extra in (("ddim", False), ("dpmpp-2m", True)):
        s = OdesolveScheduler.from_config(cfg, method=method, float64_schedule=True)
        s.set_timesteps(10)
        g = discrete(path, 10, "leading", 1, final="zero", extra_point=extra)
        assert torch.equal(s.grid.t, g.t), method
    assert spaced_timesteps(1000, 10, "leading", 1).tolist()[:2] == [901.0, 801.0]
    assert spaced_timesteps(1000, 10, "leading", 1, extra_point=True).tolist()[:2] == [901.0, 811.0]


@pytest.mark.parametrize("method, cls", [("ddim", diffusers.DDIMScheduler), ("plms", diffusers.PNDMScheduler)])
def test_set_alpha_to_one_false_ends_at_alphas_cumprod_0(method, cls):
    cfg = diffusers.DDPMScheduler(**SD, timestep_spacing="leading", steps_offset=1).config
    s = OdesolveScheduler.from_config(cfg, method=method, set_alpha_to_one=False, float64_schedule=True)
    s.set_timesteps(10)
    assert float(s.grid.t[-1]) == 0.0  # alpha^2 = alphas_cumprod[0], not 1
    s = OdesolveScheduler.from_config(cfg, method=method, set_alpha_to_one=True, float64_schedule=True)
    s.set_timesteps(10)
    assert float(s.grid.t[-1]) == -1.0
    s = OdesolveScheduler.from_config(
        cfg, method=method, set_alpha_to_one=False, final_step_to_zero=True, float64_schedule=True
    )
    s.set_timesteps(10)
    assert float(s.grid.sigmas[-1]) == 0.0


def test_deis_ends_at_the_first_training_timestep():
    cfg = diffusers.DDPMScheduler(**SD).config
    s = OdesolveScheduler.from_config(cfg, method="deis-logrho-2", final_sigmas_type="zero", float64_schedule=True)
    s.set_timesteps(10)
    assert float(s.grid.t[-1]) == 0.0


@pytest.mark.parametrize("method, name, kw", PAIRS)
def test_a_saved_ddpm_config_with_clip_sample_clips_only_where_the_namesake_does(method, name, kw, tmp_path):
    """A DDPM scheduler_config.json carries clip_sample: true; the schedulers these methods stand in for
    have no clip_sample (or do not clip by it), so nothing is clipped: the namesake's latents."""
    diffusers.DDPMScheduler(**SD, clip_sample=True).save_pretrained(tmp_path)
    saved = OdesolveScheduler.from_pretrained(tmp_path, method=method)
    theirs = getattr(diffusers, name).from_pretrained(tmp_path, **kw)
    assert saved.config.clip_sample is True and saved._clips is (method in ("heun", "ddim"))  # these clip x0
    assert rel(_loop(saved, 3 * X, 5), _loop(theirs, 3 * X, 5)) <= 1e-5


def test_betas_alphas_cumprod_and_step_before_set_timesteps_as_diffusers():
    cfg = diffusers.DDPMScheduler(**SD, rescale_betas_zero_snr=True).config
    for method, cls in (("euler", diffusers.EulerDiscreteScheduler), ("ddim", diffusers.DDIMScheduler)):
        ours, theirs = OdesolveScheduler.from_config(cfg, method=method), cls.from_config(cfg)
        for name in ("betas", "alphas", "alphas_cumprod"):
            assert torch.allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-6, atol=0), (method, name)
    # EulerDiscrete has a schedule before set_timesteps (every training timestep); DDIM refuses
    cfg = diffusers.DDPMScheduler(**SD).config
    ours, theirs = (
        OdesolveScheduler.from_config(cfg, method="euler"),
        diffusers.EulerDiscreteScheduler.from_config(cfg),
    )
    t = theirs.timesteps[0]
    x = X * theirs.init_noise_sigma
    a = ours.step(_net(x, t), ours.timesteps[0], x).prev_sample
    b = theirs.step(_net(x, t), t, x).prev_sample
    assert len(ours.timesteps) == 1000 and rel(a, b) <= 1e-5
    with pytest.raises(ValueError, match="set_timesteps"):
        OdesolveScheduler.from_config(cfg, method="ddim").step(X, 999, X)


def test_heun_entered_mid_grid_picks_the_step_start_of_a_repeated_timestep():
    """Heun's timesteps repeat (t0, t1, t1, t2, t2, ...): a run started at a repeated value without
    set_begin_index starts the grid step there, as diffusers' index_for_timestep does."""
    cfg = diffusers.DDPMScheduler(**SD, timestep_spacing="leading", steps_offset=1).config
    ours, theirs = (
        OdesolveScheduler.from_config(cfg, method="heun"),
        diffusers.HeunDiscreteScheduler.from_config(cfg),
    )
    results = []
    for s in (ours, theirs):
        s.set_timesteps(6)
        ts = s.timesteps[6:]  # grid step 3 starts at call 2 * 3; its timestep is also call 5's
        x = s.add_noise(X, X.flip(0), ts[:1].repeat(2))
        for t in ts:
            x = s.step(_net(s.scale_model_input(x, t.clone()), t), t.clone(), x).prev_sample
        results.append(x)
    assert rel(results[0], results[1]) <= 1e-5


def test_init_noise_sigma_is_a_tensor_where_diffusers_has_one():
    cfg = diffusers.DDPMScheduler(**SD, timestep_spacing="trailing").config
    s = OdesolveScheduler.from_config(cfg, method="euler")
    s.set_timesteps(10)
    theirs = diffusers.EulerDiscreteScheduler.from_config(cfg)
    theirs.set_timesteps(10)
    assert isinstance(s.init_noise_sigma, torch.Tensor)
    assert float(s.init_noise_sigma) == pytest.approx(float(theirs.sigmas.max()), rel=1e-6)  # sigma_max, not
    assert float(s.init_noise_sigma) < math.sqrt(float(theirs.sigmas.max()) ** 2 + 1) - 1e-3  # sqrt(sigma^2 + 1)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=st.sampled_from(PAIRS[:6] + PAIRS[7:8]),
    option=st.sampled_from(["leading", "trailing", "karras", "exponential"]),
    steps=st.integers(3, 40),
    offset=st.integers(0, 2),
    # the betas explicit: diffusers drops default-valued fields between classes, and Heun's defaults differ
    schedule=st.sampled_from(
        [SD, {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}, {"beta_schedule": "squaredcos_cap_v2"}]
    ),
    prediction=st.sampled_from(["epsilon", "v_prediction"]),
)
def test_random_configs_match_the_namesake(pair, option, steps, offset, schedule, prediction):
    method, name, kw = pair
    cls = getattr(diffusers, name)
    opts = dict(OPTIONS[option])
    if option == "leading":
        opts["steps_offset"] = offset
    if any(k not in cls().config for k in opts) or _known(method, option, steps):
        return
    if method == "plms" and prediction == "v_prediction":
        return  # PNDM combines raw v outputs across steps (docs/diffusers-differences.md)
    if schedule["beta_schedule"] == "squaredcos_cap_v2" and option in ("karras", "exponential"):
        return  # diffusers truncates these to repeated timesteps and looks up the wrong step (or fails)
    cfg = diffusers.DDPMScheduler(prediction_type=prediction, **schedule).config
    ours = OdesolveScheduler.from_config(cfg, method=method, **opts)
    theirs = cls.from_config(cfg, **kw, **opts)
    a, b = _loop(ours, X, steps), _loop(theirs, X, steps)
    # squaredcos_cap_v2 starts at alpha = 5e-5: diffusers' float32 x0 = (x - sigma eps) / alpha loses ~4e-4
    tol = 1e-3 if schedule["beta_schedule"] == "squaredcos_cap_v2" else 2e-5
    assert rel(a, b) <= tol, f"{method} {option} {schedule} N={steps}: {rel(a, b):.2e}"


SD_SCHEDULER = {**SD, "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False}


@pytest.mark.parametrize("steps", [2, 10])
@pytest.mark.parametrize(
    "method, name, kw",
    [p for p in PAIRS if p[0] in ("euler", "heun", "lms-4", "ddim", "plms", "dpmpp-2m", "unipc-bh2-2")],
)
def test_stable_diffusion_style_loop_with_guidance(method, name, kw, steps):
    """StableDiffusionPipeline's loop with a tiny random conditional UNet (no downloads): SD's scheduler
    config (PNDM: leading, steps_offset 1, set_alpha_to_one False), classifier-free guidance 7.5."""
    from _adapters_lib import tiny_cond_unet

    if method == "plms" and steps == 1:
        return  # PNDM's single step (docs/diffusers-differences.md)
    unet = tiny_cond_unet()
    g = torch.Generator().manual_seed(3)
    latents0 = torch.randn(1, 4, 8, 8, generator=g)
    cond = torch.randn(2, 3, 8, generator=g)  # (uncond, text) embeddings
    cfg = {**diffusers.PNDMScheduler(**SD_SCHEDULER).config, "clip_sample": False}  # SD's scheduler_config.json
    results = []
    for s in (OdesolveScheduler.from_config(cfg, method=method), getattr(diffusers, name).from_config(cfg, **kw)):
        s.set_timesteps(steps)
        latents = latents0 * s.init_noise_sigma
        with torch.no_grad():
            for t in s.timesteps:
                inp = s.scale_model_input(torch.cat([latents] * 2), t)
                uncond, text = unet(inp, t, encoder_hidden_states=cond).sample.chunk(2)
                latents = s.step(uncond + 7.5 * (text - uncond), t, latents).prev_sample
        results.append(latents)
    assert torch.isfinite(results[0]).all()
    assert rel(results[0], results[1]) <= 1e-5


def _velocity(x, t):
    """The exact velocity eps - x0 = (x - E[x0 | x]) / t of a Gaussian mixture on the flow path."""
    from _adapters_lib import gmm_x0

    tt = torch.as_tensor(t).double().reshape(-1)[0] / 1000.0
    x0 = gmm_x0(x, 1 - tt, tt)
    return ((x.double() - x0) / tt).to(x.dtype)


def _flow_loop(s, x, steps, **kw):
    s.set_timesteps(steps, **kw)
    for t in s.timesteps:
        x = s.step(_velocity(x, t), t, x).prev_sample
    return x


FLOW_CONFIGS = {
    "sd3": ({"shift": 3.0}, {}),
    "flux-dynamic": ({"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}, {"mu": 0.9}),
    "ltx-terminal": ({"use_dynamic_shifting": True, "shift_terminal": 0.1}, {"mu": 0.7}),
    "flux-sigmas": ({"use_dynamic_shifting": True}, {"mu": 1.1, "sigmas": True}),
    "static-sigmas": ({"shift": 3.0}, {"sigmas": True}),
}


@pytest.mark.parametrize("steps", [1, 2, 10])
@pytest.mark.parametrize("config", list(FLOW_CONFIGS))
def test_flow_euler_is_flowmatch_euler_with_shift_mu_and_sigmas(config, steps):
    """Flux-family pipelines call set_timesteps(sigmas=linspace(1, 1/N, N), mu=...): the sigmas are shifted
    as FlowMatchEulerDiscreteScheduler shifts them; scheduler.sigmas holds the flow time t, as there."""
    cfg_kw, set_kw = FLOW_CONFIGS[config]
    if config == "ltx-terminal" and steps == 1:
        return  # diffusers cannot step a one-point stretched schedule
    kw = dict(set_kw)
    n = steps
    if kw.pop("sigmas", False):
        kw["sigmas"], n = torch.linspace(1.0, 1.0 / steps, steps).tolist(), None
    cfg = diffusers.FlowMatchEulerDiscreteScheduler(**cfg_kw).config
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(6))
    theirs = diffusers.FlowMatchEulerDiscreteScheduler.from_config(cfg)
    b = _flow_loop(theirs, x, n, **kw)
    ours = OdesolveScheduler.from_config(cfg, method="euler")
    a = _flow_loop(ours, x, n, **kw)
    assert torch.allclose(ours.timesteps, theirs.timesteps, rtol=1e-6, atol=1e-3)
    assert torch.allclose(ours.sigmas, theirs.sigmas, rtol=1e-6, atol=1e-7)
    assert rel(a, b) <= 1e-5


@pytest.mark.parametrize("steps", [1, 2, 10])
def test_flow_heun_is_flowmatch_heun(steps):
    cfg = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(7))
    theirs = diffusers.FlowMatchHeunDiscreteScheduler.from_config(cfg)
    ours = OdesolveScheduler.from_config(cfg, method="heun")
    b, a = _flow_loop(theirs, x, steps), _flow_loop(ours, x, steps)
    assert len(ours.timesteps) == len(theirs.timesteps) == 2 * steps - 1
    assert torch.allclose(ours.timesteps, theirs.timesteps, rtol=1e-6, atol=1e-3)
    assert rel(a, b) <= 1e-5
    # and it is second order on the exact flow: halving the steps' length divides the error by ~4
    ref = _flow_loop(OdesolveScheduler.from_config(cfg, method="heun", float64_schedule=True), x.double(), 400)
    errs = [rel(_flow_loop(OdesolveScheduler.from_config(cfg, method="heun"), x.double(), m), ref) for m in (20, 40)]
    assert 2.8 < errs[0] / errs[1] < 5.5
