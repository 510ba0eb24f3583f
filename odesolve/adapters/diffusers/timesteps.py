"""The diffusers schedulers' timestep and noise-level conventions, as plain float64 numpy arrays.

These are the numbers a diffusers scheduler computes in ``set_timesteps``; the model families
([`families`][odesolve.adapters.diffusers.families]) turn them into odesolve grids.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["flow_sigmas_multistep", "flow_times", "karras_sigmas", "spaced_timesteps"]


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022), eq. 5: ``(sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``."""
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(
            f"sigma_min, sigma_max must satisfy 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}"
        )
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def spaced_timesteps(T: int, steps: int, spacing: str, steps_offset: int = 0) -> np.ndarray:
    """The integer timesteps of ``DPMSolverMultistepScheduler.set_timesteps`` (lambda_min_clipped = -inf):

    ``linspace``  round(linspace(0, T-1, steps+1)) reversed, without the last (0);
    ``leading``   (0, 1, ..., steps) * (T // (steps+1)) reversed, without the last, plus ``steps_offset``;
    ``trailing``  round(arange(T, 0, -T/steps)) - 1.

    Refused when they are not ``steps`` distinct timesteps in [0, T-1] (more steps than the model
    was trained with, or an offset past the end): diffusers' grids would repeat or clip timesteps.
    """
    if steps > T:
        raise ValueError(
            f"num_inference_steps={steps} is more than the model's num_train_timesteps={T}: a discrete "
            f"model has only {T} timesteps (use use_karras_sigmas or use_lu_lambdas for finer grids)"
        )
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    elif spacing == "leading":
        ts = (np.arange(0, steps + 1) * (T // (steps + 1))).round()[::-1][:-1].astype(np.int64) + int(steps_offset)
    elif spacing == "trailing":
        # [:steps]: for some steps (61 of T = 1000) rounding in arange leaves a spurious last point near 0
        ts = np.arange(T, 0, -T / steps)[:steps].round().astype(np.int64) - 1
    else:
        raise ValueError(
            f"config field timestep_spacing={spacing!r} is not supported (expected 'linspace', 'leading' or 'trailing')"
        )
    if ts.size != steps or bool((np.diff(ts) >= 0).any()):
        raise ValueError(
            f"timestep_spacing={spacing!r} gives repeated timesteps for num_inference_steps={steps} on "
            f"a model with num_train_timesteps={T} ({ts[:8].tolist()}...); take fewer steps or another "
            "timestep_spacing"
        )
    if int(ts[0]) > T - 1 or int(ts[-1]) < 0:
        raise ValueError(
            f"config field steps_offset={steps_offset} puts the timesteps outside [0, {T - 1}] "
            f"(from {int(ts[0])} to {int(ts[-1])})"
        )
    return ts.astype(np.float64)


def flow_times(
    T: int,
    steps: int,
    *,
    shift: float = 1.0,
    dynamic: bool = False,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    shift_terminal: float | None = None,
) -> np.ndarray:
    """The flow times ``FlowMatchEulerDiscreteScheduler.set_timesteps`` steps through (before the end point):
    linspace(1, t_min, steps) then the shift ``s t / (1 + (s - 1) t)``, or with dynamic shifting
    ``e^mu / (e^mu + 1/t - 1)`` (``time_shift_type="linear"``: ``mu / (mu + 1/t - 1)``); ``shift_terminal``
    rescales ``1 - t`` so that the last time is ``shift_terminal``."""
    if dynamic:
        if mu is None:
            raise ValueError("mu must be passed when config field use_dynamic_shifting is True")
        s = np.linspace(1.0 * T, 1.0, steps) / T
        if time_shift_type == "exponential":
            s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
        elif time_shift_type == "linear":
            s = mu / (mu + (1 / s - 1))
        else:
            raise ValueError(
                f"config field time_shift_type={time_shift_type!r} is not supported (expected "
                "'exponential' or 'linear')"
            )
    else:
        t_min = shift * (1.0 / T) / (1 + (shift - 1) * (1.0 / T))
        s = np.linspace(1.0 * T, t_min * T, steps) / T
        s = shift * s / (1 + (shift - 1) * s)
    if shift_terminal:
        one_minus = 1 - s
        s = 1 - one_minus / (one_minus[-1] / (1 - float(shift_terminal)))
    return s


def flow_sigmas_multistep(T: int, steps: int, flow_shift: float = 1.0) -> np.ndarray:
    """``use_flow_sigmas`` in the multistep schedulers: t = 1 - linspace(1, 1/T, steps+1), shifted, reversed,
    without the last."""
    t = 1.0 - np.linspace(1, 1 / T, steps + 1)
    return np.flip(flow_shift * t / (1 + (flow_shift - 1) * t))[:-1].copy()
