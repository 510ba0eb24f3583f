"""Time grids from a scheduler config: the grid a diffusers scheduler samples on, as an odesolve Grid."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ... import grids as _grids
from ...grids import Grid
from ...paths import Path
from .config import count
from .families import Family, family_for
from .namesakes import namesake_of

__all__ = ["explicit_grid", "grid_from_config"]

_FINALS = ("zero", "sigma_min")


def _final(cfg: dict) -> str:
    final = cfg.get("final_sigmas_type") or "zero"
    if final not in _FINALS:
        raise ValueError(f"config field final_sigmas_type={final!r} is not supported (expected 'zero' or 'sigma_min')")
    return final


def grid_from_config(
    config, steps: int, *, path: Path | None = None, mu: float | None = None, method: str | None = None
) -> Grid:
    """The time grid a diffusers scheduler with this config samples on, as an odesolve ``Grid``.

    VP models follow ``method``'s namesake (``odesolve.adapters.diffusers.namesakes.namesake_of``;
    ``DPMSolverMultistepScheduler`` when ``method`` is None): ``timestep_spacing`` / ``steps_offset``,
    or the Karras / exponential / beta / lambda-uniform sigmas the class offers, then its end point
    (``final_sigmas_type``, ``set_alpha_to_one``). Flow models follow ``FlowMatchEulerDiscreteScheduler``
    (``shift``, or ``use_dynamic_shifting`` with ``mu``; or ``use_flow_sigmas`` / ``flow_shift`` as in
    the multistep schedulers); EDM models the Karras or exponential ramp of ``EDMEulerScheduler``.
    Zero-length steps (a duplicated last sigma) are merged by ``Grid``. A step count the
    spacing cannot hold (repeated timesteps) is refused.
    """
    family = family_for(config)
    ns = namesake_of(method or "dpmpp-2m")
    return family_grid(family, count(steps, "steps"), path=path, mu=mu, namesake=ns)[0]


def family_grid(
    family: Family, steps: int, *, path: Path | None = None, mu: float | None = None, namesake=None, opts=None
) -> tuple[Grid, Tensor | None]:
    """``grid_from_config`` for a family already read from its config, with the network timestep of
    each grid point (None: the family's ``network_time``)."""
    path = family.path if path is None else path
    ns = namesake_of("dpmpp-2m") if namesake is None else namesake
    return family.schedule(steps, path, mu, ns, opts or {})


def explicit_grid(family: Family, path: Path, *, timesteps=None, sigmas=None, mu: float | None = None) -> Grid:
    """The grid of the explicit network ``timesteps`` or noise levels ``sigmas`` (sigma/alpha for VP
    and EDM models, the flow time for flow models) a pipeline passes to ``set_timesteps``, ending
    where the config's ``final_sigmas_type`` says."""
    if (timesteps is None) == (sigmas is None):
        raise ValueError("pass exactly one of timesteps and sigmas")
    values = timesteps if timesteps is not None else sigmas
    name = "timesteps" if timesteps is not None else "sigmas"
    arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    if arr.ndim != 1 or arr.size < 1 or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got {values!r}")
    arr = arr.astype(np.float64)
    if timesteps is not None:
        t = family.path_time(torch.as_tensor(arr))
    else:
        t = family.times_of_sigmas(path, arr, mu)
    end = family.end_time(path, _final(family.cfg), float(t[-1]))
    if float(t[-1]) > end:
        t = torch.cat([t, torch.tensor([end], dtype=torch.float64)])
    return _grids.from_times(path, t)
