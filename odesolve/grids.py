"""Time grids: the decreasing times t_0 > t_1 > ... > t_N at which a sampler steps.

A :class:`Grid` holds a path and its times (float64). Noise levels follow k-diffusion's meaning,
``sigma = sigma(t)/alpha(t) = exp(-lambda)``, so the same Karras grid means the same thing on a
VP and on an EDM path. A grid may end at sigma = 0 and may start at alpha = 0 (zero terminal SNR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .paths import Path, VPDiscrete, as_time

__all__ = ["Grid", "from_times", "from_sigmas", "karras", "uniform_lambda", "uniform_time", "time_quadratic",
           "discrete"]


@dataclass(frozen=True, eq=False)
class Grid:
    """Times ``t`` (decreasing, float64, length ``steps + 1``) on ``path``.

    Consecutive equal times (zero-length steps, as some schedulers' Karras grids produce) are
    merged: a zero-length step changes nothing, and keeping it would make step ratios 0/0.
    """

    path: Path
    t: Tensor

    def __post_init__(self):
        t = as_time(self.t, "times").detach() if not as_time(self.t).requires_grad else as_time(self.t)
        if t.ndim != 1 or t.numel() < 2:
            raise ValueError(f"times must be a 1-D sequence of at least 2 times, got shape {tuple(t.shape)}")
        self.path.check_times(t, "times")
        d = t[1:] - t[:-1]
        if bool((d > 0).any()):
            i = int(torch.nonzero(d > 0)[0])
            raise ValueError(f"times must be decreasing (noise end first); times[{i}] = {float(t[i])} < "
                             f"times[{i + 1}] = {float(t[i + 1])}")
        keep = torch.cat([torch.ones(1, dtype=torch.bool), d != 0])
        t = t[keep]
        if t.numel() < 2:
            raise ValueError("times must contain at least 2 distinct times")
        object.__setattr__(self, "t", t)

    @property
    def steps(self) -> int:
        return self.t.numel() - 1

    @property
    def lambdas(self) -> Tensor:
        return self.path.lambda_(self.t)

    @property
    def sigmas(self) -> Tensor:
        """Noise levels sigma/alpha (k-diffusion's sigmas); 0 at a clean end, inf at alpha = 0."""
        return self.path.noise_level(self.t)

    @property
    def alphas(self) -> Tensor:
        return self.path.alpha(self.t)

    def strength(self, strength: float) -> "Grid":
        """The last ``round(steps * strength)`` steps: img2img / SDEdit start mid-way (diffusers #1866)."""
        if not 0 < strength <= 1:
            raise ValueError(f"strength must lie in (0, 1], got {strength}")
        k = max(1, round(self.steps * strength))
        return Grid(self.path, self.t[self.steps - k:])

    def __len__(self):
        return self.t.numel()

    def __repr__(self):
        s = self.sigmas
        return f"Grid({self.path!r}, steps={self.steps}, sigma {float(s[0]):.4g} -> {float(s[-1]):.4g})"


def from_times(path: Path, times) -> Grid:
    """A grid from explicit times in the path's own time."""
    return Grid(path, as_time(times, "times"))


def from_sigmas(path: Path, sigmas) -> Grid:
    """A grid from noise levels ``sigma/alpha`` (decreasing; may end at 0 and start at inf)."""
    s = as_time(sigmas, "sigmas")
    if bool((torch.isnan(s) | (s < 0)).any()):
        raise ValueError(f"sigmas must be non-negative noise levels, got {s.tolist()[:6]}")
    return Grid(path, path.t_of_noise_level(s))


def _level_range(path: Path, sigma_min, sigma_max):
    lo, hi = (float(path.noise_level(torch.tensor(v, dtype=torch.float64))) for v in (path.t_min, path.t_max))
    if sigma_max is None:
        sigma_max = hi
    if sigma_min is None:
        sigma_min = lo
    if not lo - 1e-12 <= sigma_min < sigma_max <= hi * (1 + 1e-12):
        raise ValueError(f"sigma_min, sigma_max must satisfy {lo:.4g} <= sigma_min < sigma_max <= {hi:.4g} on "
                         f"{path!r}; got {sigma_min}, {sigma_max}")
    return sigma_min, sigma_max


def _steps(steps):
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def karras(path: Path, steps: int = 10, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
           to_zero: bool = True) -> Grid:
    """Karras et al. (2022), eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.

    With ``to_zero`` (default, as in EDM and k-diffusion) the ``steps - 1`` ramp steps end at
    sigma_min and a last step goes to sigma = 0; otherwise all ``steps`` steps end at sigma_min.
    """
    _steps(steps)
    sigma_min, sigma_max = _level_range(path, sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    n = steps if to_zero else steps + 1
    if n < 2:
        raise ValueError("steps must be at least 2 with to_zero=True (one ramp step and the step to 0)")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (hi + ramp * (lo - hi)) ** rho
    if to_zero:
        s = torch.cat([s, torch.zeros(1, dtype=torch.float64)])
    return from_sigmas(path, s)


def _time_range(path, t_start, t_end, need_finite_lambda):
    t_start = path.t_max if t_start is None else float(t_start)
    t_end = path.t_min if t_end is None else float(t_end)
    if need_finite_lambda:
        lam = path.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64))
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(f"t_start, t_end must have finite log-SNR on {path!r} for this grid (got t_start="
                             f"{t_start}, t_end={t_end}, lambda={lam.tolist()}); pass them explicitly")
    if not math.isfinite(t_start):
        raise ValueError(f"t_start must be finite on {path!r}; pass it explicitly")
    if not t_start > t_end:
        raise ValueError(f"t_start must be larger than t_end, got {t_start} <= {t_end}")
    return t_start, t_end


def uniform_lambda(path: Path, steps: int, t_start: float | None = None, t_end: float | None = None) -> Grid:
    """Steps of equal length in the half log-SNR lambda (DPM-Solver's "logSNR" spacing)."""
    _steps(steps)
    t_start, t_end = _time_range(path, t_start, t_end, True)
    lam = path.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64))
    return Grid(path, path.t_of_lambda(torch.linspace(float(lam[0]), float(lam[1]), steps + 1, dtype=torch.float64)))


def uniform_time(path: Path, steps: int, t_start: float | None = None, t_end: float | None = None) -> Grid:
    """Steps of equal length in the path's own time."""
    _steps(steps)
    t_start, t_end = _time_range(path, t_start, t_end, False)
    return Grid(path, torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64))


def time_quadratic(path: Path, steps: int, t_start: float | None = None, t_end: float | None = None) -> Grid:
    """Uniform in sqrt(t - t_min), shifted (DPM-Solver's "time_quadratic" spacing): dense near the data end."""
    _steps(steps)
    t_start, t_end = _time_range(path, t_start, t_end, False)
    u = torch.linspace(math.sqrt(t_start - path.t_min), math.sqrt(t_end - path.t_min), steps + 1, dtype=torch.float64)
    return Grid(path, u * u + path.t_min)


def discrete(path: VPDiscrete, steps: int, spacing: Literal["leading", "trailing", "linspace"] = "trailing",
             steps_offset: int = 0, final: Literal["zero", "first"] = "zero") -> Grid:
    """Integer timesteps of a discrete-time model, spaced as diffusers does (Lin et al. 2024, Table 2).

    ``final="zero"`` ends at t = -1 (alpha = 1, sigma = 0: DDIM's ``set_alpha_to_one``),
    ``final="first"`` at t = 0 (the first training timestep).
    """
    if not isinstance(path, VPDiscrete):
        raise TypeError(f"path must be a VPDiscrete path for discrete spacings, got {path!r}")
    _steps(steps)
    T = int(path.t_max) + 1
    if steps > T:
        raise ValueError(f"steps must be at most num_train_timesteps = {T}, got {steps}")
    if spacing == "linspace":
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().flip(0)
    elif spacing == "leading":
        ts = (torch.arange(steps, dtype=torch.float64) * (T // steps)).round().flip(0) + steps_offset
    elif spacing == "trailing":
        ts = torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)) - 1
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    if final not in ("zero", "first"):
        raise ValueError(f"final must be 'zero' or 'first', got {final!r}")
    end = -1.0 if final == "zero" else 0.0
    if float(ts[-1]) > end:
        ts = torch.cat([ts, torch.tensor([end], dtype=torch.float64)])
    return Grid(path, ts.clamp(max=path.t_max))
