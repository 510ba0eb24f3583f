"""The diffusers schedulers' timestep and noise-level conventions, as plain float64 numpy arrays.

These are the numbers a diffusers scheduler computes in ``set_timesteps``; the model families
([`families`][odesolve.adapters.diffusers.families]) turn them into odesolve grids.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["flow_shift", "flow_sigmas_multistep", "flow_times", "karras_sigmas"]


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022), eq. 5: ``(sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``."""
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(
            f"sigma_min, sigma_max must satisfy 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}"
        )
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def flow_shift(
    s: np.ndarray,
    *,
    shift: float = 1.0,
    dynamic: bool = False,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    shift_terminal: float | None = None,
) -> np.ndarray:
    """``FlowMatchEulerDiscreteScheduler``'s shift of flow times ``s`` (its default times, or the ``sigmas`` a
    pipeline passes): ``shift t / (1 + (shift - 1) t)``, or with dynamic shifting ``e^mu / (e^mu + 1/t - 1)``
    (``time_shift_type="linear"``: ``mu / (mu + 1/t - 1)``); then ``shift_terminal`` rescales ``1 - t`` so that
    the last time is ``shift_terminal`` (Esser et al. 2024, SD3, eq. 23; the Flux / LTX resolution shift)."""
    s = np.asarray(s, dtype=np.float64)
    if dynamic:
        if mu is None:
            raise ValueError("mu must be passed when config field use_dynamic_shifting is True")
        with np.errstate(divide="ignore"):
            odds = 1 / s - 1
        if time_shift_type == "exponential":
            s = math.exp(mu) / (math.exp(mu) + odds)
        elif time_shift_type == "linear":
            s = mu / (mu + odds)
        else:
            raise ValueError(
                f"config field time_shift_type={time_shift_type!r} is not supported (expected "
                "'exponential' or 'linear')"
            )
    else:
        s = shift * s / (1 + (shift - 1) * s)
    if shift_terminal:
        one_minus = 1 - s
        s = 1 - one_minus / (one_minus[-1] / (1 - float(shift_terminal)))
    return s


def flow_times(T: int, steps: int, *, shift: float = 1.0, dynamic: bool = False, **kw) -> np.ndarray:
    """The flow times ``FlowMatchEulerDiscreteScheduler.set_timesteps`` steps through (before the end point):
    ``steps`` evenly spaced from 1 to the smallest training time (shifted once more when the shift is
    static: the class stores its training times shifted), then ``flow_shift``."""
    t_min = 1.0 / T if dynamic else shift * (1.0 / T) / (1 + (shift - 1) * (1.0 / T))
    s = np.linspace(1.0 * T, t_min * T, steps) / T
    return flow_shift(s, shift=shift, dynamic=dynamic, **kw)


def flow_sigmas_multistep(T: int, steps: int, flow_shift: float = 1.0) -> np.ndarray:
    """``use_flow_sigmas`` in the multistep schedulers: t = 1 - linspace(1, 1/T, steps+1), shifted, reversed,
    without the last."""
    t = 1.0 - np.linspace(1, 1 / T, steps + 1)
    return np.flip(flow_shift * t / (1 + (flow_shift - 1) * t))[:-1].copy()
