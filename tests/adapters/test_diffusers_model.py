"""odesolve.adapters.diffusers: paths, predictions and networks from diffusers configs."""

from __future__ import annotations

import math

import pytest
import torch
from _adapters_lib import diffusers, rel, tiny_cond_unet, tiny_unet

import odesolve as ods
from odesolve.adapters import diffusers as ad


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
        {"trained_betas": torch.linspace(1e-4, 0.03, 500).tolist(), "num_train_timesteps": 500},
    ],
    ids=["linear", "scaled_linear", "squaredcos_cap_v2", "zero-snr", "trained_betas"],
)
def test_path_matches_diffusers_alphas_cumprod(kw):
    sched = diffusers.DDIMScheduler(**kw)
    path = ad.path_from_config(sched.config)
    assert isinstance(path, ods.paths.VPDiscrete)
    ac = sched.alphas_cumprod.double()
    T = ac.numel()
    ours = path.alpha(torch.arange(T, dtype=torch.float64)) ** 2
    # diffusers accumulates the product in float32: 1e-5 relative, 1e-4 where it falls to 1e-7
    assert torch.allclose(ours[:-1], ac[:-1], rtol=2e-4, atol=0)
    if kw.get("rescale_betas_zero_snr"):
        assert float(ours[-1]) == 0.0 and path.zero_terminal_snr
    else:
        assert math.isclose(float(ours[-1]), float(ac[-1]), rel_tol=2e-4)
    assert ad.path_from_config(sched.config) == path  # equal configs give equal paths


@pytest.mark.parametrize("diffusers_name, ours", [("epsilon", "eps"), ("v_prediction", "v"), ("sample", "x0")])
def test_prediction(diffusers_name, ours):
    cfg = diffusers.DDPMScheduler(prediction_type=diffusers_name).config
    assert ad.prediction_from_config(cfg) == ours
    assert ad.model_from_diffusers(tiny_unet(), cfg).prediction == ours


def test_flow_matching_config():
    cfg = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config
    assert ad.family_of(cfg) == "flow"
    assert isinstance(ad.path_from_config(cfg), ods.paths.FlowMatching)
    assert ad.prediction_from_config(cfg) == "velocity"
    cfg2 = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction").config
    assert isinstance(ad.path_from_config(cfg2), ods.paths.FlowMatching)


@pytest.mark.parametrize(
    "field, value, cls",
    [
        ("beta_schedule", "exp", diffusers.DDPMScheduler),
        ("prediction_type", "mystery", diffusers.DDPMScheduler),
        ("timestep_type", "continuous", diffusers.EulerDiscreteScheduler),
        ("interpolation_type", "log_linear", diffusers.EulerDiscreteScheduler),
        ("use_exponential_sigmas", True, diffusers.FlowMatchEulerDiscreteScheduler),
        ("use_beta_sigmas", True, diffusers.FlowMatchEulerDiscreteScheduler),
        ("euler_at_final", True, diffusers.DPMSolverMultistepScheduler),
        ("lambda_min_clipped", -5.1, diffusers.DPMSolverMultistepScheduler),
        ("invert_sigmas", True, diffusers.FlowMatchEulerDiscreteScheduler),
        ("use_karras_sigmas", True, diffusers.FlowMatchEulerDiscreteScheduler),
    ],
)
def test_unsupported_config_is_refused_naming_the_field(field, value, cls):
    cfg = dict(cls().config)
    cfg[field] = value
    cfg["_use_default_values"] = [k for k in cfg.get("_use_default_values", []) if k != field]
    with pytest.raises(ValueError, match=field):
        ad.path_from_config(cfg)
    with pytest.raises(ValueError, match=field):
        ad.OdesolveScheduler.from_config(cfg)


def test_unet_model_calls_the_network_at_the_timestep_index():
    unet = tiny_unet()
    model = ad.model_from_diffusers(unet, diffusers.DDPMScheduler().config)
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([999.0, 421.0], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(x, t), unet(x, t.float()).sample)
        # a fractional time (a stage of a multi-stage method) goes to the network unrounded
        assert torch.equal(model(x, torch.tensor(421.5)), unet(x, torch.tensor([421.5, 421.5])).sample)


def test_learned_variance_keeps_the_mean_channels():
    unet = tiny_unet(out_channels=6)
    model = ad.model_from_diffusers(unet, diffusers.DDPMScheduler(variance_type="learned_range").config)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out = model(x, torch.tensor(500.0))
        assert out.shape == x.shape and torch.equal(out, unet(x, torch.tensor([500.0])).sample[:, :3])


def test_conditional_unet_with_network_kwargs_and_guidance():
    unet = tiny_cond_unet()
    cfg = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config
    cond, uncond = torch.randn(1, 5, 8), torch.zeros(1, 5, 8)
    model = ad.model_from_diffusers(unet, cfg, encoder_hidden_states=cond)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(
            model(x, torch.tensor(300.0)), unet(x, torch.tensor([300.0]), encoder_hidden_states=cond).sample
        )
        # classifier-free guidance on the raw network, then wrapped
        guided = ods.models.classifier_free_guidance(
            lambda xx, tt, c: unet(xx, tt.float(), encoder_hidden_states=c).sample, 5.0, cond, uncond
        )
        gm = ods.Model(guided, path=ad.path_from_config(cfg), prediction="eps")
        grid = ad.grid_from_config(cfg, 6)
        out = ods.sample(gm, x, grid, method="dpmpp-2m")
    assert torch.isfinite(out).all() and out.shape == x.shape


def test_transformer_style_flow_network_gets_time_times_num_train_timesteps():
    seen = []

    class Out:
        def __init__(self, sample):
            self.sample = sample

    class FlowNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, hidden_states, timestep, encoder_hidden_states=None):
            seen.append(timestep.clone())
            return Out(hidden_states * self.w)

    cfg = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config
    model = ad.model_from_diffusers(FlowNet(), cfg, encoder_hidden_states=torch.zeros(1))
    assert model.prediction == "velocity" and isinstance(model.path, ods.paths.FlowMatching)
    x = torch.randn(2, 4)
    with torch.no_grad():
        model(x, torch.tensor(0.25, dtype=torch.float64))
    assert torch.allclose(seen[-1], torch.tensor([250.0, 250.0]))


def test_network_on_another_device_is_refused():
    unet = torch.nn.Conv2d(3, 3, 1).to("meta")
    model = ad.model_from_diffusers(unet, diffusers.DDPMScheduler().config)
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"meta.*cpu|cpu.*meta"):
        model(x, torch.tensor(10.0))
    grid = ad.grid_from_config(diffusers.DDPMScheduler().config, 4)
    with pytest.raises(ValueError, match="device|meta"):
        ods.sample(model, x, grid, method="ddim")


def test_edm_preconditioned_network():
    cfg = diffusers.EDMEulerScheduler(sigma_data=0.5).config
    unet = tiny_unet()
    model = ad.model_from_diffusers(unet, cfg)
    assert isinstance(model.path, ods.paths.EDM) and model.prediction == "x0"
    x = torch.randn(2, 3, 8, 8) * 3.0
    sigma = torch.tensor(2.0, dtype=torch.float64)
    c_skip, c_out, c_in = 0.25 / 4.25, 2.0 * 0.5 / math.sqrt(4.25), 1 / math.sqrt(4.25)
    with torch.no_grad():
        want = c_skip * x + c_out * unet(x * c_in, torch.tensor([0.25 * math.log(2.0)] * 2)).sample
        assert rel(model(x, sigma), want) <= 1e-6


@pytest.mark.parametrize(
    "cls, kw",
    [
        (diffusers.DPMSolverMultistepScheduler, {}),
        (diffusers.DPMSolverMultistepScheduler, {"timestep_spacing": "leading", "steps_offset": 1}),
        (diffusers.DPMSolverMultistepScheduler, {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}),
        (diffusers.UniPCMultistepScheduler, {"use_karras_sigmas": True}),
        (diffusers.DPMSolverMultistepScheduler, {"use_lu_lambdas": True}),
        (
            diffusers.DPMSolverMultistepScheduler,
            {
                "beta_schedule": "scaled_linear",
                "beta_start": 0.00085,
                "beta_end": 0.012,
                "rescale_betas_zero_snr": True,
                "timestep_spacing": "trailing",
            },
        ),
        (diffusers.FlowMatchEulerDiscreteScheduler, {"shift": 3.0}),
        (diffusers.FlowMatchEulerDiscreteScheduler, {"use_dynamic_shifting": True}),
        (diffusers.EDMEulerScheduler, {}),
        (diffusers.EDMDPMSolverMultistepScheduler, {"sigma_schedule": "exponential"}),
    ],
)
def test_grid_matches_the_schedulers_sigmas(cls, kw):
    sched = cls(**kw)
    mu = {"mu": 0.8} if kw.get("use_dynamic_shifting") else {}
    sched.set_timesteps(12, **mu)
    grid = ad.grid_from_config(sched.config, 12, **mu)
    family = ad.family_of(sched.config)
    theirs = sched.sigmas.double()
    if family == "flow":  # diffusers' flow "sigmas" are the flow time t
        ours = grid.t
    else:
        ours = grid.sigmas
    # Karras / lambda grids: diffusers keeps the unrounded sigmas; a duplicated last sigma is merged by odesolve
    theirs = torch.unique_consecutive(theirs)
    assert ours.shape == theirs.shape
    if kw.get("rescale_betas_zero_snr"):  # DPMSolverMultistep replaces alphas_cumprod[-1] = 0 by 2**-24
        assert math.isclose(float(ours[0]), 4096.0, rel_tol=1e-5) and math.isclose(
            float(theirs[0]), 4096.0, rel_tol=1e-6
        )
    if family == "vp" and not (kw.get("use_karras_sigmas") or kw.get("use_lu_lambdas")):
        # the same integer timesteps, read back from diffusers' float32 noise levels
        k = 1 if kw.get("rescale_betas_zero_snr") else 0  # sigma = 4096 lies between timesteps 998 and 999
        assert torch.equal(grid.t[k:-1].round(), sched.timesteps[k:].double())
        assert float((grid.t[k:-1] - grid.t[k:-1].round()).abs().max()) < 1e-3
    inner = theirs > 0
    # diffusers' sigmas come from alphas_cumprod accumulated in float32 (up to 1e-4 off at the noisy end)
    assert torch.allclose(ours[inner], theirs[inner], rtol=2e-4 if family == "vp" else 1e-5, atol=0)
    assert torch.equal(ours[~inner], theirs[~inner])


def test_flow_velocity_model_from_t_equal_one():
    path = ods.paths.FlowMatching()
    model = ods.Model(lambda x, t: x, path, "velocity")
    out = ods.sample(model, torch.randn(2, 3), ods.grids.from_times(path, torch.linspace(1, 0, 5)), method="ddim")
    assert torch.isfinite(out).all()


# -- the family registry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, family",
    [
        ({"_class_name": "FlowMatchHeunDiscreteScheduler"}, "flow"),  # a saved config: its class name decides
        ({"_class_name": "EDMDPMSolverMultistepScheduler", "sigma_schedule": "exponential"}, "edm"),
        ({"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear"}, "vp"),
        ({"num_train_timesteps": 1000}, "vp"),  # no marks: the default family
        ({"use_flow_sigmas": True}, "flow"),
        ({"prediction_type": "flow_prediction"}, "flow"),
        ({"sigma_data": 0.5}, "edm"),
    ],
)
def test_family_from_class_name_or_fields(config, family):
    assert ad.family_of(config) == family


def test_family_of_a_scheduler_object_uses_its_class():
    assert ad.family_of(diffusers.FlowMatchEulerDiscreteScheduler()) == "flow"
    assert ad.family_of(diffusers.EDMEulerScheduler()) == "edm"
    assert ad.family_of(diffusers.DDIMScheduler()) == "vp"


def test_edm_sample_prediction_is_refused():
    """EDM preconditioning is defined for eps- and v-networks (diffusers' EDM schedulers raise too)."""
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        ad.path_from_config({"sigma_data": 0.5, "prediction_type": "sample"})


@pytest.mark.parametrize(
    "config, field",
    [
        ({"sigma_data": -0.5}, "sigma_data"),
        ({"sigma_data": 0.5, "sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min"),
        ({"shift": float("nan")}, "shift"),
        ({"beta_start": "0.1"}, "beta_start"),
        ({"trained_betas": [[0.1, 0.2], [0.1, 0.2]]}, "trained_betas"),
        ({"num_train_timesteps": 2.5}, "num_train_timesteps"),
    ],
)
def test_bad_config_values_are_refused_naming_the_field(config, field):
    with pytest.raises(ValueError, match=field):
        ad.grid_from_config(config, 10)


def test_a_family_added_in_one_place_works_everywhere():
    """A variance-exploding family (ScoreSdeVeScheduler's configs), written here: registering it is all
    model_from_diffusers, path_from_config and grid_from_config need."""
    from odesolve.adapters.diffusers import families

    class VEFamily(families.Family):
        name = "ve"
        class_prefix = "ScoreSdeVe"
        marks = ("snr",)
        predictions = {"epsilon": "eps"}  # noqa: RUF012

        @classmethod
        def describes(cls, cfg):
            return cfg.get("snr") is not None

        @property
        def path(self):
            return ods.paths.VE(float(self.cfg.get("sigma_min", 0.01)), float(self.cfg.get("sigma_max", 1348.0)))

        def network_time(self, t):  # the network is conditioned on the noise level
            return self.path.sigma(torch.as_tensor(t, dtype=torch.float64))

        def path_time(self, timestep):
            return self.path.t_of_noise_level(torch.as_tensor(timestep, dtype=torch.float64))

        def grid(self, steps, path, mu, final):
            return ods.grids.uniform_lambda(path, steps)

    saved = dict(families.FAMILIES)
    families.register(VEFamily)
    try:
        cfg = diffusers.ScoreSdeVeScheduler(sigma_max=50.0).config
        assert ad.family_of(cfg) == "ve" and ad.family_of({"snr": 0.15}) == "ve"
        c = 0.7  # data N(0, c^2 I): eps(x, sigma) = sigma x / (c^2 + sigma^2), exactly

        def net(x, sigma):
            s = sigma.double().reshape(-1, 1)
            return (s * x.double() / (c * c + s * s)).to(x.dtype)

        model = ad.model_from_diffusers(net, cfg)
        x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 50.0
        # the probability-flow ODE scales x by sqrt(c^2 + sigma^2) / sqrt(c^2 + sigma_T^2)
        want = x * math.sqrt(c * c + 0.01**2) / math.sqrt(c * c + 50.0**2)
        errors = []
        for steps in (40, 80):
            grid = ad.grid_from_config(cfg, steps)
            assert model.path == grid.path and float(grid.sigmas[0]) == pytest.approx(50.0)
            errors.append(rel(ods.sample(model, x, grid, method="dpmpp-2m"), want))
        assert errors[0] <= 5e-3 and math.log2(errors[0] / errors[1]) == pytest.approx(2.0, abs=0.2)
    finally:
        families.FAMILIES.clear()
        families.FAMILIES.update(saved)
    assert ad.family_of({"snr": 0.15}) == "vp"


# -- networks in another dtype or on another device ------------------------------------------------


def test_explicit_dtype_other_than_the_networks_is_refused_naming_both():
    half = tiny_unet().to(torch.float16)
    model = ad.model_from_diffusers(half, diffusers.DDPMScheduler().config, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"float16.*float32"):
        model(torch.randn(1, 3, 8, 8), torch.tensor(10.0))


def test_half_precision_network_behind_a_plain_function_gets_a_clear_error():
    half = tiny_unet().to(torch.float16)
    model = ad.model_from_diffusers(lambda x, t: half(x, t), diffusers.DDPMScheduler().config)
    with pytest.raises(ValueError, match=r"torch.float32.*dtype="):
        model(torch.randn(1, 3, 8, 8), torch.tensor(10.0))
    # as the error says: the dtype the network computes in
    fixed = ad.model_from_diffusers(lambda x, t: half(x, t), diffusers.DDPMScheduler().config, dtype=torch.float16)
    with torch.no_grad():
        out = fixed(torch.randn(1, 3, 8, 8), torch.tensor(10.0))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", ["float16", torch.int32, 16])
def test_dtype_must_be_a_floating_torch_dtype(dtype):
    with pytest.raises(TypeError, match="dtype"):
        ad.model_from_diffusers(tiny_unet(), diffusers.DDPMScheduler().config, dtype=dtype)


def test_network_returning_a_non_tensor_is_refused():
    model = ad.model_from_diffusers(lambda x, t: "image", diffusers.DDPMScheduler().config)
    with pytest.raises(TypeError, match="str"):
        model(torch.randn(1, 3), torch.tensor(10.0))
