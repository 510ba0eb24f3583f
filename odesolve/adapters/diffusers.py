"""diffusers interop: networks as :class:`odesolve.Model`, and a scheduler backed by a compiled plan.

Three model families are understood, each read from a scheduler config (a scheduler, its
``.config`` or a plain dict):

============================= ================================ ======================== ==================
config                        path                             prediction               network time
============================= ================================ ======================== ==================
betas (``beta_schedule``,     ``VPDiscrete`` (diffusers betas, ``epsilon`` -> ``eps``,  the timestep index
``trained_betas``, optional   ``rescale_betas_zero_snr``)      ``v_prediction`` -> v,   (VPDiscrete time)
zero terminal SNR)                                             ``sample`` -> ``x0``
flow matching (``shift``,     ``FlowMatching`` (x = (1-t) x0   ``velocity``             ``t * num_train_
``use_flow_sigmas``,          + t eps)                                                  timesteps``
``flow_prediction``)
EDM (``sigma_data``)          ``EDM`` (x = x0 + sigma eps)     EDM preconditioning      ``log(sigma) / 4``
============================= ================================ ======================== ==================

:func:`model_from_diffusers` wraps a network called as ``net(sample, timestep, **kwargs).sample``
(UNet2DModel, UNet2DConditionModel, the transformer models) as an :class:`odesolve.Model`.

:class:`OdesolveScheduler` is a diffusers scheduler (``SchedulerMixin`` + ``ConfigMixin``) that runs
any registered method: ``pipe.scheduler = OdesolveScheduler.from_config(pipe.scheduler.config,
method="unipc-bh2-3")``. A diffusers pipeline calls ``step()`` once per model call, so
``timesteps`` has one entry per row of the compiled plan and ``step()`` applies that row. The
time grid follows ``DPMSolverMultistepScheduler``'s conventions for the same config
(``timestep_spacing``, ``steps_offset``, ``final_sigmas_type``, ``use_karras_sigmas``,
``use_lu_lambdas``), and ``FlowMatchEulerDiscreteScheduler``'s for flow models. Karras and
lambda-uniform grids are used exactly: the network is called at the (fractional) time of each
noise level, where diffusers rounds the timestep but keeps the unrounded sigma in its formulas.

Unsupported configs are refused with a ``ValueError`` that names the config field.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin, SchedulerOutput
from torch import Tensor

from .. import grids as _grids
from .. import methods as _methods
from ..grids import Grid
from ..models import Model, conversion
from ..paths import EDM, FlowMatching, Path, VPDiscrete, rescale_betas_zero_snr
from ..plan import Plan

__all__ = [
    "OdesolveScheduler",
    "family_of",
    "grid_from_config",
    "model_from_diffusers",
    "network_time",
    "path_from_config",
    "path_time",
    "prediction_from_config",
]

_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "velocity"}
_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


# ---------------------------------------------------------------------------------------------
# reading configs
# ---------------------------------------------------------------------------------------------


_FAMILY_KEYS = ("shift", "sigma_data")


def _cfg(config) -> dict:
    """The config as a dict, without the fields it holds only as its class's defaults (diffusers
    drops those when a config moves to another scheduler class, so ``grid_from_config(cfg)`` is
    the grid of ``OdesolveScheduler.from_config(cfg)``); ``shift`` and ``sigma_data`` are kept,
    since they say which model family the config describes."""
    if hasattr(config, "config") and not isinstance(config, dict):
        config = config.config
    if not hasattr(config, "get"):
        raise TypeError(f"config must be a diffusers scheduler, its .config or a dict, got {type(config).__name__}")
    defaults = set(config.get("_use_default_values", None) or ()) - set(_FAMILY_KEYS)
    return {k: v for k, v in dict(config).items() if k not in defaults and k != "_use_default_values"}


def family_of(config) -> str:
    """``"vp"``, ``"flow"`` or ``"edm"``: which model family a scheduler config describes."""
    cfg = _cfg(config)
    if cfg.get("sigma_data") is not None:
        return "edm"
    if cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction" or cfg.get("shift") is not None:
        return "flow"
    return "vp"


def _refuse(cfg: dict, field: str, allowed, why: str = ""):
    value = cfg.get(field, None)
    ok = value in allowed if isinstance(allowed, tuple) else allowed(value)
    if not ok:
        raise ValueError(f"config field {field}={value!r} is not supported by odesolve's diffusers adapter"
                         + (f": {why}" if why else ""))


def _check_config(cfg: dict, family: str):
    _refuse(cfg, "timestep_type", (None, "discrete"), "the network must take the timestep index")
    _refuse(cfg, "interpolation_type", (None, "linear"))
    _refuse(cfg, "use_exponential_sigmas", (None, False))
    _refuse(cfg, "use_beta_sigmas", (None, False))
    _refuse(cfg, "invert_sigmas", (None, False))
    _refuse(cfg, "stochastic_sampling", (None, False))
    _refuse(cfg, "euler_at_final", (None, False), "use lower_order_final or a final step to sigma = 0")
    _refuse(cfg, "lambda_min_clipped", lambda v: v is None or v == -math.inf)
    _refuse(cfg, "variance_type", (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log",
                                   "learned", "learned_range"))
    if family == "vp":
        _refuse(cfg, "prediction_type", (None, "epsilon", "v_prediction", "sample"))
        if cfg.get("trained_betas") is None:
            _refuse(cfg, "beta_schedule", (None,) + _SCHEDULES)
    elif family == "flow":
        _refuse(cfg, "prediction_type", (None, "flow_prediction", "epsilon"),
                "flow-matching networks predict the velocity")
        _refuse(cfg, "use_karras_sigmas", (None, False), "Karras sigmas are defined for VP and EDM models")
        _refuse(cfg, "use_lu_lambdas", (None, False))
    else:
        _refuse(cfg, "prediction_type", (None, "epsilon", "v_prediction", "sample"))
        _refuse(cfg, "sigma_schedule", (None, "karras", "exponential"))


_PATHS: dict = {}


def path_from_config(config) -> Path:
    """The odesolve path of the model a scheduler config describes (see the module docstring).

    Equal configs give the same path object (``VPDiscrete`` compares by identity), so a model
    from :func:`model_from_diffusers` and a grid from :func:`grid_from_config` or
    :class:`OdesolveScheduler` built from the same config can be used together."""
    cfg = _cfg(config)
    family = family_of(cfg)
    _check_config(cfg, family)
    if family == "flow":
        return FlowMatching()
    if family == "edm":
        return EDM()
    T = int(cfg.get("num_train_timesteps", 1000))
    zero_snr = bool(cfg.get("rescale_betas_zero_snr", False))
    trained = cfg.get("trained_betas")
    key = (T, zero_snr, None if trained is None else tuple(np.asarray(trained, dtype=np.float64).tolist()),
           cfg.get("beta_schedule", "linear"), float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02)))
    if key not in _PATHS:
        if trained is not None:
            betas = torch.as_tensor(np.asarray(trained, dtype=np.float64))
            path = VPDiscrete(rescale_betas_zero_snr(betas) if zero_snr else betas)
        else:
            path = VPDiscrete.from_schedule(key[3], T, key[4], key[5], rescale_zero_terminal_snr=zero_snr)
        if len(_PATHS) > 64:
            _PATHS.clear()
        _PATHS[key] = path
    return _PATHS[key]


def prediction_from_config(config) -> str:
    """The odesolve prediction type of the network (``eps``, ``v``, ``x0`` or ``velocity``); EDM
    networks are preconditioned and wrapped as ``x0`` predictors."""
    cfg = _cfg(config)
    family = family_of(cfg)
    if family == "flow":
        return "velocity"
    if family == "edm":
        return "x0"
    p = cfg.get("prediction_type", "epsilon")
    if p not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(f"config field prediction_type={p!r} is not supported (expected 'epsilon', "
                         "'v_prediction' or 'sample')")
    return _PREDICTIONS[p]


def network_time(config, t: Tensor) -> Tensor:
    """The timestep the network is conditioned on at path time ``t`` (float64 in, float64 out)."""
    cfg = _cfg(config)
    family = family_of(cfg)
    t = torch.as_tensor(t, dtype=torch.float64)
    if family == "flow":
        return t * float(cfg.get("num_train_timesteps", 1000))
    if family == "edm":
        return 0.25 * torch.log(t)
    return t


def path_time(config, timestep) -> Tensor:
    """Inverse of :func:`network_time`."""
    cfg = _cfg(config)
    family = family_of(cfg)
    ts = torch.as_tensor(timestep).to(torch.float64)
    if family == "flow":
        return ts / float(cfg.get("num_train_timesteps", 1000))
    if family == "edm":
        return torch.exp(4.0 * ts)
    return ts


def _edm_coefficients(cfg, sigma: Tensor):
    """EDM preconditioning (Karras et al. 2022, Table 1): x0 = c_skip x + c_out F(c_in x, c_noise)."""
    sd = float(cfg.get("sigma_data", 0.5))
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
    if cfg.get("prediction_type", "epsilon") == "v_prediction":
        c_out = -c_out
    c_in = 1.0 / torch.sqrt(sigma**2 + sd**2)
    return c_skip, c_out, c_in


def _output(out):
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _check_device(network, x: Tensor):
    if isinstance(network, torch.nn.Module):
        p = next(network.parameters(), None)
        if p is not None and p.device != x.device:
            raise ValueError(f"the network {type(network).__name__} is on {p.device} but x is on {x.device}; "
                             f"move one of them (network.to({str(x.device)!r}) or x.to({str(p.device)!r}))")


def model_from_diffusers(network: Callable, config, *, dtype: torch.dtype | None = None, clip_sample: bool = False,
                         thresholding: bool = False, path: Path | None = None, **network_kwargs) -> Model:
    """An :class:`odesolve.Model` for a diffusers network and the scheduler config it was trained with.

    ``network(sample, timestep, **network_kwargs)`` is called with the state (cast to ``dtype``
    when given, e.g. ``torch.float16`` for a half-precision network with a float32 state; by
    default to the dtype of the network's parameters) and the
    network's timestep as float32 (:func:`network_time`); ``.sample`` (or the first element of a
    tuple) is its output. A network with a learned variance (twice the channels) gives its first
    half. ``clip_sample=True`` clips the data prediction to ``config.clip_sample_range`` (as
    DDIMScheduler does when its config says so), ``thresholding=True`` applies dynamic thresholding
    with the config's ratio and maximum (Saharia et al. 2022); both are off by default, whatever
    the config says, since the model is the network (OdesolveScheduler follows the config).

    A network on another device than the state is refused with an error naming both devices.
    """
    if not callable(network):
        raise TypeError(f"network must be callable as network(sample, timestep, ...), got {type(network).__name__}")
    cfg = _cfg(config)
    family = family_of(cfg)
    own = path_from_config(cfg)
    if path is None:
        path = own
    elif type(path) is not type(own):
        raise ValueError(f"path {path!r} does not describe the config's model ({own!r})")
    prediction = prediction_from_config(cfg)
    clip, thresh = bool(clip_sample), bool(thresholding)
    T = float(cfg.get("num_train_timesteps", 1000))

    def fn(x: Tensor, t: Tensor) -> Tensor:
        _check_device(network, x)
        if dtype is None and isinstance(network, torch.nn.Module):  # the network's own dtype by default
            p = next(network.parameters(), None)
            if p is not None and p.is_floating_point() and x.dtype != p.dtype:
                x = x.to(p.dtype)
        if family == "edm":
            c_skip, c_out, c_in = (v.to(x.device, torch.float32).view((-1,) + (1,) * (x.ndim - 1))
                                   for v in _edm_coefficients(cfg, t))
            F = _output(network((x * c_in.to(x.dtype)), (0.25 * torch.log(t)).to(torch.float32), **network_kwargs))
            F = F[:, : x.shape[1]] if F.shape[1] == 2 * x.shape[1] else F
            return (c_skip * x.float() + c_out * F.float()).to(F.dtype)
        tn = (t * T if family == "flow" else t).to(torch.float32)
        out = _output(network(x, tn, **network_kwargs))
        if out.ndim == x.ndim and out.shape[1] == 2 * x.shape[1]:  # learned variance
            out = out[:, : x.shape[1]]
        return out

    fn.__name__ = type(network).__name__
    model = Model(fn, path=path, prediction=prediction, dtype=dtype)
    if thresh:
        from ..models import dynamic_thresholding

        model = dynamic_thresholding(model, float(cfg.get("dynamic_thresholding_ratio", 0.995)),
                                     float(cfg.get("sample_max_value", 1.0)))
    elif clip:
        r = float(cfg.get("clip_sample_range", 1.0))
        inner = model
        model = Model(lambda x, t: inner.x0(x, t).clamp(-r, r), path=path, prediction="x0")
    return model


# ---------------------------------------------------------------------------------------------
# grids as the diffusers schedulers build them
# ---------------------------------------------------------------------------------------------


def _karras(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _vp_timesteps(cfg: dict, steps: int) -> np.ndarray:
    """``DPMSolverMultistepScheduler.set_timesteps`` (lambda_min_clipped = -inf)."""
    T = int(cfg.get("num_train_timesteps", 1000))
    spacing = cfg.get("timestep_spacing", "linspace")
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = T // (steps + 1)
        return (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64) + int(
            cfg.get("steps_offset", 0))
    if spacing == "trailing":
        return np.arange(T, 0, -T / steps).round().copy().astype(np.int64) - 1
    raise ValueError(f"config field timestep_spacing={spacing!r} is not supported (expected 'linspace', "
                     "'leading' or 'trailing')")


def grid_from_config(config, steps: int, *, path: Path | None = None, mu: float | None = None) -> Grid:
    """The time grid a diffusers scheduler with this config samples on, as an odesolve :class:`Grid`.

    VP models follow ``DPMSolverMultistepScheduler`` (and ``UniPCMultistepScheduler``, whose
    conventions are the same): ``timestep_spacing`` / ``steps_offset``, or ``use_karras_sigmas`` /
    ``use_lu_lambdas``, then a last point at sigma = 0 (``final_sigmas_type="zero"``, t = -1) or at
    the first training timestep (``"sigma_min"``, t = 0). Flow models follow
    ``FlowMatchEulerDiscreteScheduler`` (``shift``, or ``use_dynamic_shifting`` with ``mu``; or
    ``use_flow_sigmas`` / ``flow_shift`` as in the multistep schedulers); EDM models the Karras or
    exponential ramp of ``EDMEulerScheduler``. Zero-length steps (a duplicated last sigma) are
    merged by :class:`Grid`.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    cfg = _cfg(config)
    family = family_of(cfg)
    path = path_from_config(cfg) if path is None else path
    final = cfg.get("final_sigmas_type", "zero")
    if final not in ("zero", "sigma_min"):
        raise ValueError(f"config field final_sigmas_type={final!r} is not supported (expected 'zero' or 'sigma_min')")
    T = int(cfg.get("num_train_timesteps", 1000))
    if family == "edm":
        smin = float(cfg["sigma_min"]) if cfg.get("sigma_min") is not None else 0.002
        smax = float(cfg["sigma_max"]) if cfg.get("sigma_max") is not None else 80.0
        rho = float(cfg.get("rho") or 7.0)
        if cfg.get("sigma_schedule", "karras") == "karras":
            s = _karras(smin, smax, steps, rho)
        else:
            s = np.exp(np.linspace(math.log(smax), math.log(smin), steps))
        s = np.concatenate([s, [0.0 if final == "zero" else smin]])
        return _grids.from_sigmas(path, torch.as_tensor(np.minimum.accumulate(s)))
    if family == "flow":
        if cfg.get("use_flow_sigmas"):
            shift = float(cfg.get("flow_shift", 1.0))
            a = np.linspace(1, 1 / T, steps + 1)
            s = 1.0 - a
            s = np.flip(shift * s / (1 + (shift - 1) * s))[:-1].copy()
        else:
            shift = float(cfg.get("shift", 1.0))
            dyn = bool(cfg.get("use_dynamic_shifting", False))
            sig_min = 1.0 / T if dyn else shift * (1.0 / T) / (1 + (shift - 1) * (1.0 / T))
            s = np.linspace(1.0 * T, sig_min * T, steps) / T
            if dyn:
                if mu is None:
                    raise ValueError("mu must be passed when config field use_dynamic_shifting is True")
                if cfg.get("time_shift_type", "exponential") == "exponential":
                    s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
                else:
                    s = mu / (mu + (1 / s - 1))
            else:
                s = shift * s / (1 + (shift - 1) * s)
            if cfg.get("shift_terminal"):
                one_minus = 1 - s
                s = 1 - one_minus / (one_minus[-1] / (1 - float(cfg["shift_terminal"])))
        t = np.concatenate([s, [0.0 if final == "zero" else s[-1]]])
        return _grids.from_times(path, torch.as_tensor(np.clip(t, 0.0, 1.0), dtype=torch.float64))
    # VP, discrete time
    if cfg.get("use_karras_sigmas") or cfg.get("use_lu_lambdas"):
        lo = float(path.noise_level(torch.tensor(0.0, dtype=torch.float64)))
        hi = float(path.noise_level(torch.tensor(float(T - 1), dtype=torch.float64)))
        if cfg.get("use_karras_sigmas"):
            lo = float(cfg["sigma_min"]) if cfg.get("sigma_min") is not None else lo
            hi = float(cfg["sigma_max"]) if cfg.get("sigma_max") is not None else hi
            s = _karras(lo, hi, steps)
        else:
            s = np.exp(np.linspace(math.log(hi), math.log(lo), steps))
        s = np.concatenate([s, [0.0 if final == "zero" else s[-1]]])
        return _grids.from_sigmas(path, torch.as_tensor(s, dtype=torch.float64))
    ts = _vp_timesteps(cfg, steps).astype(np.float64)
    t = np.concatenate([ts, [-1.0 if final == "zero" else 0.0]])
    return _grids.from_times(path, torch.as_tensor(np.minimum(t, T - 1), dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# the scheduler
# ---------------------------------------------------------------------------------------------


def _accepts(method, option: str) -> bool:
    try:
        return option in inspect.signature(method._build).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


class OdesolveScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that runs an odesolve method from a compiled plan.

    ``method`` is a registered name (``odesolve.methods.names()``). The other arguments read the
    model description and the time grid from a diffusers config (see :func:`path_from_config`
    and :func:`grid_from_config`); keys of other schedulers' configs that do not apply here are
    ignored, as diffusers does.

    Stepping: ``timesteps`` has one entry per model call of the plan (``order`` calls per grid
    step for multi-stage methods) and ``step(model_output, t, sample)`` applies one row of the
    plan and returns the next model input (the final sample after the last call). The state and
    the history are kept at float32 or better, whatever the network's dtype. A pipeline may
    replace ``sample`` between single-call steps (inpainting does): the new sample is adopted.

    ``lower_order_final`` is passed to multistep methods when ``num_inference_steps <
    lower_order_final_max_steps`` (15 by default, DPMSolverMultistepScheduler's rule; ``None``
    applies it at any number of steps, as UniPCMultistepScheduler does). ``clip_sample`` and
    ``thresholding`` clip the data prediction, as DDIMScheduler does.

    img2img (a grid entered mid-way, diffusers #1866): ``set_begin_index(i)`` or a first ``step``
    at ``timesteps[i]`` recompiles the plan on the grid from that step on, so multistep methods
    warm up again from where sampling starts.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]  # noqa: RUF012 - diffusers reads it as is
    order = 1

    @register_to_config
    def __init__(
        self,
        method: str = "dpmpp-2m",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        rescale_betas_zero_snr: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        final_sigmas_type: str = "zero",
        use_karras_sigmas: bool = False,
        use_lu_lambdas: bool = False,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        lower_order_final: bool = True,
        lower_order_final_max_steps: int | None = 15,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        variance_type: str | None = None,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        shift: float | None = None,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        time_shift_type: str = "exponential",
        shift_terminal: float | None = None,
        sigma_data: float | None = None,
        sigma_schedule: str = "karras",
        rho: float = 7.0,
        invert_sigmas: bool = False,
        stochastic_sampling: bool = False,
        timestep_type: str = "discrete",
        interpolation_type: str = "linear",
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        euler_at_final: bool = False,
        lambda_min_clipped: float = -float("inf"),
    ):
        self._method = _methods.get(method)  # refuses unknown names, listing close ones
        cfg = dict(self.config)
        self._family = family_of(cfg)
        self.path = path_from_config(cfg)
        self.prediction = prediction_from_config(cfg)
        self.order = self._method.calls_per_step
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.plan: Plan | None = None
        self.grid: Grid | None = None
        self._begin_index = None
        self._k = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """``ConfigMixin.from_config``, keeping the fields that tell a flow-matching (``shift``) or
        EDM (``sigma_data``) config apart from a VP one even where they hold diffusers' defaults
        (diffusers drops default-valued keys when converting between schedulers)."""
        if config is not None and hasattr(config, "get"):
            for key in _FAMILY_KEYS:
                if key in config and key not in kwargs and config.get(key) is not None:
                    kwargs[key] = config[key]
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    # -- grid and plan ------------------------------------------------------------------------
    def _options(self, steps: int) -> dict:
        opts = {}
        if _accepts(self._method, "lower_order_final"):
            limit = self.config.lower_order_final_max_steps
            opts["lower_order_final"] = bool(self.config.lower_order_final) and (limit is None or steps < limit)
        return opts

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list | None = None, sigmas: list | None = None, mu: float | None = None, **kwargs):
        """Build the grid (from ``num_inference_steps`` and the config, or from explicit network
        ``timesteps`` / ``sigmas`` -- noise levels sigma/alpha for VP and EDM models, the flow
        time for flow models -- ending at the end point the config names) and compile the plan."""
        cfg = dict(self.config)
        if timesteps is not None or sigmas is not None:
            if timesteps is not None and sigmas is not None:
                raise ValueError("pass only one of timesteps and sigmas")
            if timesteps is not None:
                t = path_time(cfg, torch.as_tensor(np.asarray(timesteps, dtype=np.float64)))
            elif self._family == "flow":
                t = torch.as_tensor(np.asarray(sigmas, dtype=np.float64))
            else:
                t = self.path.t_of_noise_level(torch.as_tensor(np.asarray(sigmas, dtype=np.float64)))
            end = self.path.t_min if cfg.get("final_sigmas_type", "zero") == "zero" else (
                0.0 if self._family == "vp" else float(t[-1]))
            if float(t[-1]) > end:
                t = torch.cat([t, torch.tensor([end], dtype=torch.float64)])
            grid = _grids.from_times(self.path, t)
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps, timesteps or sigmas")
            grid = grid_from_config(cfg, int(num_inference_steps), path=self.path, mu=mu)
        self._use_grid(grid, device)

    def _use_grid(self, grid: Grid, device=None):
        plan = self._method.compile(self.path, grid, **self._options(grid.steps))
        self.grid, self.plan = grid, plan
        self.num_inference_steps = grid.steps
        self.timesteps = network_time(self.config, plan.times).to(torch.float32).to(device)
        self.sigmas = torch.cat([self.path.noise_level(plan.times), grid.sigmas[-1:]]).to(torch.float32)
        a0, s0 = self.path.alpha(grid.t[0]), self.path.sigma(grid.t[0])
        self.init_noise_sigma = float(torch.sqrt(a0 * a0 + s0 * s0))
        self._prepare(plan)
        self._begin_index = None
        self._k = None

    def _prepare(self, plan: Plan):
        cfg = dict(self.config)
        if self._family == "edm":
            c_skip, c_out, _ = _edm_coefficients(cfg, plan.times)
            if plan.prediction == "x0":
                cx, cf = c_skip, c_out
            else:  # eps = (x - x0) / sigma on the EDM path
                cx, cf = (1 - c_skip) / plan.times, -c_out / plan.times
        else:
            cx, cf = conversion(plan.path, self.prediction, plan.prediction, plan.times)
        self._cx, self._cf = cx.tolist(), cf.tolist()
        self._alpha, self._sigma = plan.path.alpha(plan.times).tolist(), plan.path.sigma(plan.times).tolist()
        self._in_s, self._up_s = plan.input_state.tolist(), plan.update_state.tolist()
        self._in_h, self._up_h = plan.input_hist.tolist(), plan.update_hist.tolist()
        self._noise = plan.update_noise.tolist()
        self._plain = [self._in_s[k] == 1 and not any(self._in_h[k]) for k in range(plan.calls)]

    # -- diffusers API ------------------------------------------------------------------------
    @property
    def begin_index(self):
        return self._begin_index

    @property
    def step_index(self):
        return self._k

    def set_begin_index(self, begin_index: int = 0):
        self._begin_index = int(begin_index)

    def scale_model_input(self, sample: Tensor, timestep=None, *args, **kwargs) -> Tensor:
        if self._family != "edm":
            return sample
        sigma = path_time(self.config, timestep if timestep is not None else self.timesteps[self._k or 0])
        _, _, c_in = _edm_coefficients(dict(self.config), sigma)
        return sample * c_in.to(sample.device, sample.dtype).reshape(-1, *([1] * (sample.ndim - 1)))

    def _start(self, timestep, sample: Tensor):
        if self.plan is None:
            raise ValueError("set_timesteps must be called before step")
        k0 = self._begin_index
        if k0 is None:
            ts = self.timesteps.to(torch.float64).cpu()
            t = torch.as_tensor(timestep, dtype=torch.float64).flatten()[:1].cpu()
            hit = torch.nonzero(torch.isclose(ts, t, rtol=1e-6, atol=1e-4)).flatten()
            k0 = int(hit[0]) if hit.numel() else 0
        if k0 != 0:
            self._enter_midway(k0)
        self._k = 0
        wd = torch.promote_types(sample.dtype, torch.float32)
        self._s = sample.to(wd).clone()
        self._X = self._s if self._plain[0] else self._s * self._in_s[0]
        self._hist = deque(maxlen=self.plan.window)
        self._returned = None

    def _enter_midway(self, k0: int):
        plan = self.plan
        if not 0 <= k0 < plan.calls:
            raise ValueError(f"begin_index {k0} is outside the {plan.calls} model calls of the plan")
        n = int(plan.step[k0])
        if k0 > 0 and int(plan.step[k0 - 1]) == n:
            raise ValueError(f"begin_index {k0} falls inside grid step {n} of {plan.method!r}; a sampler can only "
                             "be entered at the first call of a step")
        grid = Grid(self.path, self.grid.t[n:])
        sub = self._method.compile(self.path, grid, **self._options(self.grid.steps))
        tail = plan.times[k0:]
        if sub.calls != tail.numel() or not torch.allclose(sub.times, tail, rtol=0, atol=1e-9):
            raise ValueError(f"{plan.method!r} takes {sub.calls} model calls from grid step {n} on when it starts "
                             f"there (its warm-up differs), but the pipeline has {tail.numel()} timesteps left; "
                             "it cannot be entered mid-way (img2img): use a method with the same calls at every "
                             "step (for example dpmpp-2m, unipc-bh2-3, ddim, heun)")
        self.plan = sub
        self._prepare(sub)

    def _clip(self, F: Tensor, X: Tensor, k: int) -> Tensor:
        cfg = self.config
        if not (cfg.clip_sample or cfg.thresholding):
            return F
        a, s = self._alpha[k], self._sigma[k]
        x0 = F if self.plan.prediction == "x0" else (X - s * F) / a if a > 0 else None
        if x0 is None:
            return F
        if cfg.thresholding:
            flat = x0.reshape(x0.shape[0], -1).abs().float()
            q = torch.quantile(flat, float(cfg.dynamic_thresholding_ratio), dim=1)
            q = q.clamp(min=1.0, max=float(cfg.sample_max_value)).to(x0.dtype).view((-1,) + (1,) * (x0.ndim - 1))
            x0 = torch.maximum(torch.minimum(x0, q), -q) / q
        else:
            r = float(cfg.clip_sample_range)
            x0 = x0.clamp(-r, r)
        return x0 if self.plan.prediction == "x0" else (X - a * x0) / s

    def step(self, model_output: Tensor, timestep, sample: Tensor, generator: torch.Generator | None = None,
             return_dict: bool = True, **kwargs) -> SchedulerOutput | tuple:
        """Apply the plan's row for this model call; returns the next model input (the sample
        after the last call). ``kwargs`` of other schedulers (``eta``, ``s_churn``...) are ignored."""
        if self._k is None:
            self._start(timestep, sample)
        k, plan = self._k, self.plan
        if k >= plan.calls:
            raise ValueError(f"step called {k + 1} times but the plan has {plan.calls} model calls; call "
                             "set_timesteps again to start a new sampling run")
        if self._plain[k] and k > 0 and sample is not self._returned:
            self._s = sample.to(self._s.dtype)  # the pipeline replaced the latents (e.g. inpainting)
            self._X = self._s
        X = self._X
        out = model_output
        if out.ndim == X.ndim and out.shape[1] == 2 * X.shape[1]:  # learned variance
            out = out[:, : X.shape[1]]
        F = out.to(X.dtype) * self._cf[k] + X * self._cx[k]
        F = self._clip(F, X, k)
        self._hist.appendleft(F)  # self._hist[j] = F_{k-j}
        s = self._s
        if self._up_s[k] != 1 or any(self._up_h[k]) or self._noise[k] != 0:
            acc = s * self._up_s[k]
            for j, c in enumerate(self._up_h[k][: len(self._hist)]):
                if c != 0:
                    acc = acc + self._hist[j] * c
            if self._noise[k] != 0:
                xi = torch.randn(acc.shape, generator=generator, device=acc.device, dtype=acc.dtype)
                acc = acc + xi * self._noise[k]
            s = acc
        self._s = s
        k += 1
        self._k = k
        if k < plan.calls and not self._plain[k]:
            nxt = s * self._in_s[k]
            for j, c in enumerate(self._in_h[k][1:], start=1):
                if c != 0 and j - 1 < len(self._hist):
                    nxt = nxt + self._hist[j - 1] * c
            self._X = nxt
        else:
            self._X = s
        prev = self._X.to(sample.dtype)
        self._returned = prev
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps) -> Tensor:
        """``alpha(t) x0 + sigma(t) noise`` at the network timesteps ``timesteps`` (any value, not
        only those of the grid)."""
        t = path_time(self.config, torch.as_tensor(timesteps).reshape(-1))
        a, s = self.path.alpha(t), self.path.sigma(t)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        dev, dt = original_samples.device, original_samples.dtype
        return a.to(dev, dt).view(shape) * original_samples + s.to(dev, dt).view(shape) * noise

    def scale_noise(self, sample: Tensor, timestep, noise: Tensor | None = None) -> Tensor:
        """Flow-matching pipelines' name for :meth:`add_noise` (``sample`` is the clean sample)."""
        return self.add_noise(sample, noise, timestep)

    def __len__(self):
        return self.config.num_train_timesteps
