"""Time grids: the decreasing times t_0 > t_1 > ... > t_N at which a sampler steps.

A [`Grid`][odesolve.grids.Grid] holds a path and its times (float64). Noise levels follow k-diffusion's meaning,
``sigma = sigma(t)/alpha(t) = exp(-lambda)``, so the same Karras grid means the same thing on a
VP and on an EDM path. A grid may end at sigma = 0 and may start at alpha = 0 (zero terminal SNR).

Shapes (jaxtyping): ``" points"`` is the number of grid points, ``steps + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float64
from torch import Tensor

from .paths import Path, VPDiscrete, as_time, check_int, check_real

__all__ = [
    "MAX_STEPS",
    "Grid",
    "discrete",
    "from_sigmas",
    "from_times",
    "karras",
    "spaced_timesteps",
    "time_quadratic",
    "uniform_lambda",
    "uniform_time",
]

MAX_STEPS = 100_000  # compiling a plan costs about 1 ms per step: beyond this a typo, not a sampler


@dataclass(frozen=True, eq=False)
class Grid:
    """Times ``t`` (decreasing, float64, length ``steps + 1``) on ``path``.

    Consecutive equal times (zero-length steps, as some schedulers' Karras grids produce) are
    merged: a zero-length step changes nothing, and keeping it would make step ratios 0/0.
    """

    path: Path
    t: Float64[Tensor, " points"]

    def __post_init__(self):
        if not isinstance(self.path, Path):
            raise TypeError(f"path must be an odesolve.paths.Path, got {type(self.path).__name__}")
        t = as_time(self.t, "times")
        t = t if t.requires_grad else t.detach()
        if t.ndim != 1 or t.numel() < 2:
            raise ValueError(f"times must be a 1-D sequence of at least 2 times, got shape {tuple(t.shape)}")
        if t.numel() > MAX_STEPS + 1:
            raise ValueError(f"times must hold at most MAX_STEPS + 1 = {MAX_STEPS + 1} times, got {t.numel()}")
        self.path.check_times(t, "times")
        if bool(torch.isinf(t).any()):
            raise ValueError(f"times must be finite (an infinite time is an infinite noise level on {self.path!r})")
        d = t[1:] - t[:-1]
        if bool((d > 0).any()):
            i = int(torch.nonzero(d > 0)[0])
            raise ValueError(
                f"times must be decreasing (noise end first); times[{i}] = {float(t[i])} < "
                f"times[{i + 1}] = {float(t[i + 1])}"
            )
        keep = torch.cat([torch.ones(1, dtype=torch.bool), d != 0])
        t = t[keep]
        if t.numel() < 2:
            raise ValueError("times must contain at least 2 distinct times")
        object.__setattr__(self, "t", t)

    @property
    def steps(self) -> int:
        return self.t.numel() - 1

    @property
    def lambdas(self) -> Float64[Tensor, " points"]:
        return self.path.lambda_(self.t)

    @property
    def sigmas(self) -> Float64[Tensor, " points"]:
        """Noise levels sigma/alpha (k-diffusion's sigmas); 0 at a clean end, inf at alpha = 0."""
        return self.path.noise_level(self.t)

    @property
    def alphas(self) -> Float64[Tensor, " points"]:
        return self.path.alpha(self.t)

    def strength(self, strength: float) -> Grid:
        """The last ``round(steps * strength)`` steps: img2img / SDEdit start mid-way (diffusers #1866)."""
        check_real(strength, "strength", 0.0, 1.0, lo_open=True)
        k = max(1, round(self.steps * strength))
        return Grid(self.path, self.t[self.steps - k :])

    def __len__(self):
        return self.t.numel()

    def __repr__(self):
        s = self.sigmas
        return f"Grid({self.path!r}, steps={self.steps}, sigma {float(s[0]):.4g} -> {float(s[-1]):.4g})"


def from_times(path: Path, times) -> Grid:
    """A grid from explicit times in the path's own time."""
    t = as_time(times, "times")
    if t.ndim != 1:
        raise ValueError(f"times must be a 1-D sequence of at least 2 times, got shape {tuple(t.shape)}")
    return Grid(path, t)


def from_sigmas(path: Path, sigmas) -> Grid:
    """A grid from noise levels ``sigma/alpha`` (decreasing; may end at 0 and start at inf where the
    path reaches alpha = 0)."""
    _check_path(path)
    s = as_time(sigmas, "sigmas")
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D sequence of at least 2 noise levels, got shape {tuple(s.shape)}")
    if bool((torch.isnan(s) | (s < 0)).any()):
        raise ValueError(f"sigmas must be non-negative noise levels, got {s.tolist()[:6]}")
    d = s[1:] - s[:-1]
    if bool((d > 0).any()):
        i = int(torch.nonzero(d > 0)[0])
        raise ValueError(
            f"sigmas must be decreasing (noise end first); sigmas[{i}] = {float(s[i])} < "
            f"sigmas[{i + 1}] = {float(s[i + 1])}"
        )
    t = path.t_of_noise_level(s)
    if bool(torch.isinf(s).any()) and not bool(torch.isfinite(t[torch.isinf(s)]).all()):
        raise ValueError(f"sigmas: an infinite noise level needs a path that reaches alpha = 0; {path!r} does not")
    return Grid(path, t)


def _check_path(path):
    if not isinstance(path, Path):
        raise TypeError(f"path must be an odesolve.paths.Path, got {type(path).__name__}")


def _level_range(path: Path, sigma_min, sigma_max):
    lo, hi = (float(path.noise_level(torch.tensor(v, dtype=torch.float64))) for v in (path.t_min, path.t_max))
    sigma_max = hi if sigma_max is None else check_real(sigma_max, "sigma_max", 0.0, lo_open=True)
    sigma_min = lo if sigma_min is None else check_real(sigma_min, "sigma_min", 0.0)
    if math.isinf(sigma_max):
        raise ValueError(f"sigma_max must be finite for this grid; {path!r} reaches sigma = inf, pass sigma_max")
    if not lo - 1e-12 <= sigma_min < sigma_max <= hi * (1 + 1e-12):
        raise ValueError(
            f"sigma_min, sigma_max must satisfy {lo:.4g} <= sigma_min < sigma_max <= {hi:.4g} on "
            f"{path!r}; got {sigma_min}, {sigma_max}"
        )
    return sigma_min, sigma_max


def _steps(steps):
    return check_int(steps, "steps", 1, MAX_STEPS)


def karras(
    path: Path,
    steps: int = 10,
    sigma_min: float | None = 0.002,
    sigma_max: float | None = 80.0,
    rho: float = 7.0,
    to_zero: bool = True,
) -> Grid:
    """Karras et al. (2022), eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.

    With ``to_zero`` (default, as in EDM and k-diffusion) the ``steps - 1`` ramp steps end at
    sigma_min and a last step goes to sigma = 0; otherwise all ``steps`` steps end at sigma_min.
    """
    _check_path(path)
    steps = _steps(steps)
    sigma_min, sigma_max = _level_range(path, sigma_min, sigma_max)
    rho = check_real(rho, "rho", 0.0, lo_open=True)
    if not isinstance(to_zero, bool):
        raise TypeError(f"to_zero must be a bool, got {to_zero!r}")
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
    _check_path(path)
    t_start = path.t_max if t_start is None else check_real(t_start, "t_start", path.t_min, path.t_max)
    t_end = path.t_min if t_end is None else check_real(t_end, "t_end", path.t_min, path.t_max)
    if need_finite_lambda:
        lam = path.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64))
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(
                f"t_start, t_end must have finite log-SNR on {path!r} for this grid (got t_start="
                f"{t_start}, t_end={t_end}, lambda={lam.tolist()}); pass them explicitly"
            )
    if not math.isfinite(t_start):
        raise ValueError(f"t_start must be finite on {path!r}; pass it explicitly")
    if not t_start > t_end:
        raise ValueError(f"t_start must be larger than t_end, got {t_start} <= {t_end}")
    return t_start, t_end


def uniform_lambda(path: Path, steps: int, t_start: float | None = None, t_end: float | None = None) -> Grid:
    """Steps of equal length in the half log-SNR lambda (DPM-Solver's "logSNR" spacing)."""
    steps = _steps(steps)
    t_start, t_end = _time_range(path, t_start, t_end, True)
    lam = path.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64))
    return Grid(path, path.t_of_lambda(torch.linspace(float(lam[0]), float(lam[1]), steps + 1, dtype=torch.float64)))


def uniform_time(path: Path, steps: int, t_start: float | None = None, t_end: float | None = None) -> Grid:
    """Steps of equal length in the path's own time."""
    steps = _steps(steps)
    t_start, t_end = _time_range(path, t_start, t_end, False)
    return Grid(path, torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64))


def time_quadratic(path: Path, steps: int, t_start: float | None = None, t_end: float | None = None) -> Grid:
    """Uniform in sqrt(t - t_min), shifted (DPM-Solver's "time_quadratic" spacing): dense near the data end."""
    steps = _steps(steps)
    t_start, t_end = _time_range(path, t_start, t_end, False)
    u = torch.linspace(math.sqrt(t_start - path.t_min), math.sqrt(t_end - path.t_min), steps + 1, dtype=torch.float64)
    return Grid(path, u * u + path.t_min)


def spaced_timesteps(
    T: int,
    steps: int,
    spacing: Literal["leading", "trailing", "linspace"] = "trailing",
    steps_offset: int = 0,
    *,
    extra_point: bool = False,
    rounded: bool = True,
) -> Tensor:
    """The ``steps`` decreasing timesteps (float64) of a ``T``-step discrete model, spaced as diffusers does
    (Lin et al. 2024, Table 2):

    ``leading``   ``(n-1, ..., 1, 0) * (T // n) + steps_offset``;
    ``trailing``  ``round(T - k T / n) - 1`` for k = 0 .. n-1 (``steps_offset`` unused);
    ``linspace``  ``n`` evenly spaced points from ``T - 1`` down to 0, rounded unless ``rounded=False``
    (``steps_offset`` unused).

    ``n`` is ``steps``, or for leading and linspace ``steps + 1`` with ``extra_point`` (the DPM-Solver,
    UniPC and DEIS schedulers space one point more and drop the smallest, so that their last timestep is not 0).
    ``rounded=False`` keeps the fractional linspace timesteps of EulerDiscrete, HeunDiscrete and LMSDiscrete.

    Refused (``ValueError`` naming ``steps`` or ``steps_offset``) where the spacing cannot hold ``steps``
    distinct timesteps in [0, T - 1]: diffusers' schedulers would repeat a timestep there (a zero-length step).
    """
    T = check_int(T, "T", 2)
    steps = check_int(steps, "steps", 1)
    steps_offset = check_int(steps_offset, "steps_offset", 0)
    if spacing not in ("leading", "trailing", "linspace"):
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    if steps > T:
        raise ValueError(
            f"steps must be at most num_train_timesteps = {T} (one model call per training timestep), got {steps}"
        )
    n = steps + int(bool(extra_point) and spacing != "trailing")
    if spacing == "linspace":  # numpy's linspace: its rounding of halves is diffusers'
        ts = torch.from_numpy(np.linspace(0, T - 1, n))
        ts = (ts.round() if rounded else ts).flip(0)
    elif spacing == "leading":
        ts = (torch.arange(n, dtype=torch.float64) * (T // n)).flip(0) + steps_offset
    else:  # trailing; [:n]: for some n (61 of T = 1000) rounding leaves a spurious point at -1
        ts = torch.from_numpy(np.arange(T, 0, -T / n)[:n]).round() - 1
    ts = ts[:steps]
    if bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError(
            f"steps={steps} {spacing} timesteps of a {T}-step model repeat a timestep ({ts[:6].tolist()}...): "
            f"take fewer steps or another spacing"
        )
    if float(ts[0]) > T - 1:
        first = int(ts[0]) - steps_offset
        raise ValueError(
            f"steps_offset must be in [0, {T - 1 - first}] for {steps} leading steps of a {T}-step model "
            f"(the first timestep {first} + steps_offset must be at most {T - 1}), got steps_offset={steps_offset}"
        )
    return ts


def discrete(
    path: VPDiscrete,
    steps: int,
    spacing: Literal["leading", "trailing", "linspace"] = "trailing",
    steps_offset: int = 0,
    final: Literal["zero", "first"] = "zero",
    *,
    extra_point: bool = False,
) -> Grid:
    """Integer timesteps of a discrete-time model, spaced as diffusers does (``spaced_timesteps``).

    ``final="zero"`` ends at t = -1 (alpha = 1, sigma = 0: DDIM's ``set_alpha_to_one``),
    ``final="first"`` at t = 0 (the first training timestep). ``steps_offset`` shifts the
    ``leading`` timesteps only (the other spacings ignore it, as diffusers does). ``extra_point``:
    the DPM-Solver / UniPC / DEIS schedulers' variant (see ``spaced_timesteps``); without it, the
    DDIM / PNDM / Euler schedulers' (and Lin et al.'s) meaning.
    """
    if not isinstance(path, VPDiscrete):
        raise TypeError(f"path must be a VPDiscrete path for discrete spacings, got {path!r}")
    if final not in ("zero", "first"):
        raise ValueError(f"final must be 'zero' or 'first', got {final!r}")
    ts = spaced_timesteps(int(path.t_max) + 1, steps, spacing, steps_offset, extra_point=extra_point)
    end = -1.0 if final == "zero" else 0.0
    if float(ts[-1]) > end:
        ts = torch.cat([ts, torch.tensor([end], dtype=torch.float64)])
    return Grid(path, ts)
