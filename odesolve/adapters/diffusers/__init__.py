"""diffusers interop: networks as [`odesolve.Model`][odesolve.models.Model], and a scheduler backed by a compiled plan.

Three model families are understood, each read from a scheduler config (a scheduler, its
``.config`` or a plain dict), one class each in [`families`][odesolve.adapters.diffusers.families]:

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

[`model_from_diffusers`][odesolve.adapters.diffusers.model.model_from_diffusers] wraps a network called as
``net(sample, timestep, **kwargs).sample`` (UNet2DModel, UNet2DConditionModel, the transformer models) as an
[`odesolve.Model`][odesolve.models.Model].

[`OdesolveScheduler`][odesolve.adapters.diffusers.scheduler.OdesolveScheduler] is a diffusers scheduler
(``SchedulerMixin`` + ``ConfigMixin``) that runs any registered method: ``pipe.scheduler =
OdesolveScheduler.from_config(pipe.scheduler.config,
method="unipc-bh2-3")``. A diffusers pipeline calls ``step()`` once per model call, so
``timesteps`` has one entry per row of the compiled plan and ``step()`` applies that row. By
default the schedule is the one the method's diffusers *namesake* computes for the same config
(``odesolve.adapters.diffusers.namesakes``: ``euler`` -> EulerDiscreteScheduler, ``ddim`` ->
DDIMScheduler, ``plms`` -> PNDMScheduler, ``unipc-*`` -> UniPCMultistepScheduler, ...): the same
timesteps, network timesteps, noise levels, end point, ``init_noise_sigma`` and sample coordinates.
odesolve's own choices are options: ``fractional_timesteps`` (the network at the exact time of
each noise level), ``float64_schedule``, ``final_step_to_zero``. Flow-matching configs follow
``FlowMatchEulerDiscreteScheduler`` (``set_timesteps(sigmas=..., mu=...)`` shifted as it does).

Unsupported configs are refused with a ``ValueError`` that names the config field.

Modules: ``config`` (reading and checking a config), ``families`` (the model families and their
registry), ``namesakes`` (each diffusers scheduler's schedule rule, as data), ``flowmatch`` (Heun in the
flow time, FlowMatchHeun's), ``timesteps`` (flow and
Karras conventions), ``grids`` (grids from a config),
``model`` (networks as models), ``scheduler`` (the stateful scheduler).
"""

from __future__ import annotations

from torch import Tensor

from ...paths import Path
from .families import family_for
from .grids import grid_from_config
from .model import model_from_diffusers
from .scheduler import OdesolveScheduler

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


def family_of(config) -> str:
    """``"vp"``, ``"flow"`` or ``"edm"``: which model family a scheduler config describes."""
    return family_for(config).name


def path_from_config(config) -> Path:
    """The odesolve path of the model a scheduler config describes (see the module docstring).
    Equal configs give equal paths, so a model from
    [`model_from_diffusers`][odesolve.adapters.diffusers.model.model_from_diffusers] and a grid from
    [`grid_from_config`][odesolve.adapters.diffusers.grids.grid_from_config] or
    [`OdesolveScheduler`][odesolve.adapters.diffusers.scheduler.OdesolveScheduler] built from the same config go
    together."""
    return family_for(config).path


def prediction_from_config(config) -> str:
    """The odesolve prediction type of the network (``eps``, ``v``, ``x0`` or ``velocity``); EDM
    networks are preconditioned and wrapped as ``x0`` predictors."""
    return family_for(config).prediction


def network_time(config, t) -> Tensor:
    """The timestep the network is conditioned on at path time ``t`` (float64 in, float64 out)."""
    return family_for(config).network_time(t)


def path_time(config, timestep) -> Tensor:
    """Inverse of [`network_time`][odesolve.adapters.diffusers.network_time]."""
    return family_for(config).path_time(timestep)
