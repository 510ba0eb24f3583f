"""The diffusers schedulers' timestep and noise-level conventions, as plain float64 numpy arrays.

These are the numbers a diffusers scheduler computes in ``set_timesteps``; the model families
(:mod:`.families`) turn them into odesolve grids.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["flow_sigmas_multistep", "flow_times", "karras_sigmas"]


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022), eq. 5: ``(sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``."""
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(
            f"sigma_min, sigma_max must satisfy 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}"
        )
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


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
