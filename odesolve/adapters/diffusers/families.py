"""Model families: what a diffusers scheduler config says about the network it was trained with.

One small class per family, registered in `FAMILIES`; [`family_for`][odesolve.adapters.diffusers.families.family_for]
picks the one a config describes (by its scheduler class name when it has one, else by its fields) and checks the
config against it. A family knows

- the path and the prediction type of the network (`Family.path`,
  [`Family.prediction`][odesolve.adapters.diffusers.families.Family.prediction]),
- the network's time as a function of the path's time and back
  ([`Family.network_time`][odesolve.adapters.diffusers.families.Family.network_time],
  [`Family.path_time`][odesolve.adapters.diffusers.families.Family.path_time]),
- how to turn the network's raw output into a prediction
  ([`Family.output_coefficients`][odesolve.adapters.diffusers.families.Family.output_coefficients],
  with the EDM preconditioning of Karras et al. 2022, Table 1, where the family has one),
- its default grid ([`Family.grid`][odesolve.adapters.diffusers.families.Family.grid]), as the diffusers schedulers of
  the family build it.

A new family is one class here with ``@register``; nothing else dispatches on the family.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ... import grids as _grids
from ...grids import Grid
from ...models import conversion
from ...paths import EDM, FlowMatching, Path, VPDiscrete, rescale_betas_zero_snr
from .config import check_common, num_train_timesteps, positive, read_config, refuse
from .namesakes import NAMESAKES, vp_schedule
from .timesteps import flow_shift, flow_sigmas_multistep, flow_times, karras_sigmas

__all__ = ["FAMILIES", "EDMFamily", "Family", "FlowFamily", "VPFamily", "family_for", "marks", "register"]

FAMILIES: dict[str, type[Family]] = {}  # in order of precedence: the first that describes a config is its family


def register(cls: type[Family]) -> type[Family]:
    """Add a family to `FAMILIES` (class decorator)."""
    FAMILIES[cls.name] = cls
    return cls


def marks() -> tuple[str, ...]:
    """The config fields that identify a family: kept even where they hold their class's defaults."""
    return tuple(dict.fromkeys(m for f in FAMILIES.values() for m in f.marks))


def family_for(config) -> Family:
    """The family a scheduler config describes, its config checked (a ``ValueError`` names the field).

    A config whose scheduler class name starts with a family's `class_prefix`
    (``EDMEulerScheduler``, ``FlowMatchEulerDiscreteScheduler``) is of that family; otherwise the
    first family in `FAMILIES` whose [`describes`][odesolve.adapters.diffusers.families.Family.describes] accepts its
    fields, and the
    `default` family (VP) when none does."""
    cfg = read_config(config, keep=marks())
    name = str(cfg.get("_class_name") or "")
    by_name = [f for f in FAMILIES.values() if f.class_prefix and name.startswith(f.class_prefix)]
    ordered = sorted(FAMILIES.values(), key=lambda f: f.default)  # the default family last, whatever its place
    cls = by_name[0] if by_name else next(f for f in ordered if f.default or f.describes(cfg))
    family = cls(cfg)
    check_common(cfg)
    family.check()
    return family


class Family:
    """A model family, bound to one config (a dict from `read_config`)."""

    name: ClassVar[str]
    class_prefix: ClassVar[str | None] = None  # diffusers scheduler classes that belong to this family
    default: ClassVar[bool] = False  # the family of a config no other family describes
    marks: ClassVar[tuple[str, ...]] = ()  # fields that identify the family even at their default values
    predictions: ClassVar[dict[str, str]]  # config prediction_type -> odesolve prediction

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.T = num_train_timesteps(cfg)

    def __repr__(self):
        return f"{type(self).__name__}(T={self.T})"

    @classmethod
    def describes(cls, cfg: dict) -> bool:
        """Whether a config's fields say it is of this family."""
        raise NotImplementedError

    def check(self) -> None:
        """Refuse fields this family cannot honour, naming them."""
        refuse(self.cfg, "prediction_type", (None, *self.predictions))

    @cached_property
    def path(self) -> Path:
        raise NotImplementedError

    @property
    def prediction(self) -> str:
        """The odesolve prediction type of the network's output (after preconditioning)."""
        return self.predictions[self.cfg.get("prediction_type") or next(iter(self.predictions))]

    def network_time(self, t) -> Tensor:
        """The timestep the network is conditioned on at path time ``t`` (float64)."""
        return torch.as_tensor(t, dtype=torch.float64)

    def path_time(self, timestep) -> Tensor:
        """Inverse of `network_time` (float64)."""
        return torch.as_tensor(timestep).to(torch.float64)

    def preconditioning(self, t) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(c_skip, c_out, c_in)`` with prediction ``= c_skip x + c_out F(c_in x)``, or None when the
        network's output is the prediction itself."""
        return None

    def output_coefficients(self, path: Path, target: str, t) -> tuple[Tensor, Tensor]:
        """``(c_x, c_F)`` with ``target = c_x x + c_F F`` for the raw network output ``F`` (called on
        ``c_in x``) at times ``t``; ``target`` is ``"x0"`` or ``"eps"``."""
        pre = self.preconditioning(t)
        if pre is None:
            return conversion(path, self.prediction, target, t)
        c_skip, c_out, _ = pre
        cx, cf = conversion(path, self.prediction, target, t)  # target from the preconditioned prediction
        return cx + cf * c_skip, cf * c_out

    def grid(self, steps: int, path: Path, mu: float | None, final: str) -> Grid:
        """The grid of ``steps`` steps a diffusers scheduler of this family samples on, ending at
        sigma = 0 (``final="zero"``) or at the family's smallest noise level (``"sigma_min"``)."""
        raise NotImplementedError

    def schedule(self, steps: int, path: Path, mu: float | None, namesake, opts: dict) -> tuple[Grid, Tensor | None]:
        """The grid of ``steps`` steps the ``namesake`` scheduler samples on for this config, and the
        network timestep of each grid point (None: the family's ``network_time`` of the point).
        ``opts``: ``float64`` (float64 tables), ``to_zero`` (end at sigma = 0)."""
        final = "zero" if opts.get("to_zero") else (self.cfg.get("final_sigmas_type") or "zero")
        if final not in ("zero", "sigma_min"):
            raise ValueError(
                f"config field final_sigmas_type={final!r} is not supported (expected 'zero' or 'sigma_min')"
            )
        return self.grid(steps, path, mu, final), None

    def times_of_sigmas(self, path: Path, sigmas, mu: float | None = None) -> Tensor:
        """Path times of the ``sigmas`` a pipeline passes to ``set_timesteps`` (with ``mu``)."""
        return path.t_of_noise_level(torch.as_tensor(np.asarray(sigmas, dtype=np.float64)))

    def end_time(self, path: Path, final: str, last: float) -> float:
        """Where a grid of explicit timesteps ending at ``last`` ends."""
        return path.t_min if final == "zero" else last


@register
class EDMFamily(Family):
    """EDM (Karras et al. 2022): x = x0 + sigma eps, t = sigma, the network preconditioned (Table 1)

    ``x0 = c_skip x + c_out F(c_in x, log(sigma) / 4)``, ``c_skip = sd^2 / (sigma^2 + sd^2)``,
    ``c_out = sigma sd / sqrt(sigma^2 + sd^2)`` (negated for ``v_prediction``), ``c_in = 1 / sqrt(sigma^2 + sd^2)``
    with ``sd = sigma_data``. Default grid: Karras' rho-ramp or a geometric one (``sigma_schedule``)."""

    name = "edm"
    class_prefix = "EDM"
    marks = ("sigma_data",)
    predictions: ClassVar = {"epsilon": "x0", "v_prediction": "x0"}  # preconditioned: the result predicts x0

    @classmethod
    def describes(cls, cfg):
        return cfg.get("sigma_data") is not None

    def check(self):
        super().check()
        refuse(self.cfg, "sigma_schedule", (None, "karras", "exponential"))
        refuse(self.cfg, "use_exponential_sigmas", (None, False))
        refuse(self.cfg, "use_beta_sigmas", (None, False))
        positive(self.cfg, "sigma_data", 0.5)
        positive(self.cfg, "rho", 7.0)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(
                f"config fields sigma_min={self.sigma_min} and sigma_max={self.sigma_max} must satisfy "
                "sigma_min < sigma_max"
            )

    @property
    def sigma_min(self) -> float:
        return positive(self.cfg, "sigma_min", 0.002)

    @property
    def sigma_max(self) -> float:
        return positive(self.cfg, "sigma_max", 80.0)

    @cached_property
    def path(self):
        return EDM()

    def network_time(self, t):
        return 0.25 * torch.log(torch.as_tensor(t, dtype=torch.float64))

    def path_time(self, timestep):
        return torch.exp(4.0 * torch.as_tensor(timestep).to(torch.float64))

    def preconditioning(self, t):
        sigma = torch.as_tensor(t, dtype=torch.float64)
        sd = positive(self.cfg, "sigma_data", 0.5)
        norm = torch.sqrt(sigma**2 + sd**2)
        c_out = sigma * sd / norm
        if self.cfg.get("prediction_type") == "v_prediction":
            c_out = -c_out
        return sd**2 / norm**2, c_out, 1.0 / norm

    def grid(self, steps, path, mu, final):
        lo, hi = self.sigma_min, self.sigma_max
        if (self.cfg.get("sigma_schedule") or "karras") == "karras":
            s = karras_sigmas(lo, hi, steps, positive(self.cfg, "rho", 7.0))
        else:
            s = np.exp(np.linspace(math.log(hi), math.log(lo), steps))
        s = np.concatenate([s, [0.0 if final == "zero" else lo]])
        return _grids.from_sigmas(path, torch.as_tensor(np.minimum.accumulate(s)))


@register
class FlowFamily(Family):
    """Flow matching (rectified flow): x = (1 - t) x0 + t eps, t in [0, 1], a velocity network called at
    ``t * num_train_timesteps``. Default grid: ``FlowMatchEulerDiscreteScheduler``'s shifted times
    (``shift``, or ``use_dynamic_shifting`` with ``mu``), or the multistep schedulers' ``use_flow_sigmas``."""

    name = "flow"
    class_prefix = "FlowMatch"
    marks = ("shift",)
    # diffusers' flow configs often carry the multistep schedulers' prediction_type="epsilon" default
    predictions: ClassVar = {"flow_prediction": "velocity", "epsilon": "velocity"}

    @classmethod
    def describes(cls, cfg):
        return (
            bool(cfg.get("use_flow_sigmas"))
            or cfg.get("prediction_type") == "flow_prediction"
            or cfg.get("shift") is not None
        )

    def check(self):
        refuse(self.cfg, "prediction_type", (None, *self.predictions), "flow-matching networks predict the velocity")
        refuse(self.cfg, "use_karras_sigmas", (None, False), "Karras sigmas are defined for VP and EDM models")
        refuse(self.cfg, "use_exponential_sigmas", (None, False))
        refuse(self.cfg, "use_beta_sigmas", (None, False))
        refuse(self.cfg, "use_lu_lambdas", (None, False))
        positive(self.cfg, "shift", 1.0)
        positive(self.cfg, "flow_shift", 1.0)

    @cached_property
    def path(self):
        return FlowMatching()

    def network_time(self, t):
        return torch.as_tensor(t, dtype=torch.float64) * float(self.T)

    def path_time(self, timestep):
        return torch.as_tensor(timestep).to(torch.float64) / float(self.T)

    def grid(self, steps, path, mu, final):
        cfg = self.cfg
        if cfg.get("use_flow_sigmas"):
            s = flow_sigmas_multistep(self.T, steps, positive(cfg, "flow_shift", 1.0))
        else:
            s = flow_times(self.T, steps, **self._shift_options(mu))
        t = np.concatenate([s, [0.0 if final == "zero" else s[-1]]])
        return _grids.from_times(path, torch.as_tensor(np.clip(t, 0.0, 1.0), dtype=torch.float64))

    def _shift_options(self, mu):
        cfg = self.cfg
        return {
            "shift": positive(cfg, "shift", 1.0),
            "dynamic": bool(cfg.get("use_dynamic_shifting")),
            "mu": mu,
            "time_shift_type": cfg.get("time_shift_type") or "exponential",
            "shift_terminal": cfg.get("shift_terminal"),
        }

    def times_of_sigmas(self, path, sigmas, mu=None):
        """diffusers' flow "sigmas" are flow times; FlowMatchEulerDiscreteScheduler shifts them (``shift``,
        or ``mu`` with dynamic shifting, then ``shift_terminal``) as it shifts its own."""
        s = np.asarray(sigmas, dtype=np.float64)
        if not self.cfg.get("use_flow_sigmas"):
            s = flow_shift(s, **self._shift_options(mu))
        return torch.as_tensor(np.clip(s, 0.0, 1.0))


@register
class VPFamily(Family):
    """Discrete-time variance-preserving models (DDPM): the path [`VPDiscrete`][odesolve.paths.VPDiscrete] of the
    config's betas (``beta_schedule`` or ``trained_betas``, ``rescale_betas_zero_snr``), its time the
    timestep index, the network called at it. Default grid: ``DPMSolverMultistepScheduler``'s
    (``timestep_spacing``, ``steps_offset``, ``use_karras_sigmas``, ``use_lu_lambdas``). The default family."""

    name = "vp"
    predictions: ClassVar = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}

    default = True

    @classmethod
    def describes(cls, cfg):
        return cfg.get("trained_betas") is not None or cfg.get("beta_schedule") is not None

    def check(self):
        super().check()
        if self.cfg.get("trained_betas") is None:
            refuse(self.cfg, "beta_schedule", (None, "linear", "scaled_linear", "squaredcos_cap_v2"))
            positive(self.cfg, "beta_start", 0.0001)
            positive(self.cfg, "beta_end", 0.02)

    @cached_property
    def path(self):
        cfg = self.cfg
        trained = cfg.get("trained_betas")
        zero_snr = bool(cfg.get("rescale_betas_zero_snr", False))
        if trained is not None:
            betas = torch.as_tensor(np.asarray(trained, dtype=np.float64))
            if betas.ndim != 1:
                raise ValueError(f"config field trained_betas must be 1-D, got shape {tuple(betas.shape)}")
            return VPDiscrete(rescale_betas_zero_snr(betas) if zero_snr else betas)
        return VPDiscrete.from_schedule(
            cfg.get("beta_schedule") or "linear",
            self.T,
            positive(cfg, "beta_start", 0.0001),
            positive(cfg, "beta_end", 0.02),
            rescale_zero_terminal_snr=zero_snr,
        )

    def grid(self, steps, path, mu, final):
        """DPMSolverMultistepScheduler's grid (``schedule`` gives any namesake's)."""
        ns = NAMESAKES["DPMSolverMultistepScheduler"]
        return self.schedule(steps, path, mu, ns, {"to_zero": final == "zero"} if final == "zero" else {})[0]

    def schedule(self, steps, path, mu, namesake, opts):
        ts, sigmas = vp_schedule(
            namesake, self.cfg, path, steps, float64=bool(opts.get("float64")), to_zero=bool(opts.get("to_zero"))
        )
        s = torch.as_tensor(sigmas, dtype=torch.float64)
        t = path.t_of_noise_level(s).clamp(path.t_min, path.t_max)
        if opts.get("float64"):  # the round trip through sigma leaves ~1e-12 off integer timesteps
            near = (t - t.round()).abs() < 1e-7
            t = torch.where(near, t.round(), t)
        net = torch.cat([torch.as_tensor(ts, dtype=torch.float64), self.network_time(t[-1:])])  # the end: no call
        keep = torch.cat([torch.ones(1, dtype=torch.bool), t[1:] != t[:-1]])  # a zero-length step is merged
        if int(keep.sum()) < 2:
            raise ValueError(
                f"num_inference_steps={steps}: {namesake.name}'s schedule for this config is a single noise level "
                f"(sigma {float(sigmas[0]):.4g}, then a zero-length step): it would return its input; take more steps"
            )
        return Grid(path, t[keep]), net[keep]

    def end_time(self, path, final, last):
        return path.t_min if final == "zero" else 0.0  # "sigma_min": the first training timestep
