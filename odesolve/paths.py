"""Gaussian noising paths x_t = alpha(t) x0 + sigma(t) eps.

Every path works in its own time variable ``t`` (the time its networks are conditioned on) and
gives, in float64 and vectorized over ``t``:

- ``alpha(t)``, ``sigma(t)`` and their logarithms;
- ``lambda_(t) = log(alpha/sigma)``, the half log-SNR, decreasing in ``t``;
- ``t_of_lambda(lam)``, its exact inverse.

The ends are taken analytically: ``sigma = 0`` gives ``lambda = +inf`` and ``alpha = 0`` gives
``lambda = -inf``; neither produces NaN.

The methods take times as numbers, sequences or tensors of any real dtype ([`as_time`][odesolve.paths.as_time] refuses
the rest, naming the argument), so only their results carry a jaxtyping annotation:
``Float64[Tensor, "*t"]``, the shape of the times given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import no_type_check

import numpy as np
import torch
from jaxtyping import Float64
from torch import Tensor

__all__ = [
    "EDM",
    "VE",
    "VP",
    "FlowMatching",
    "FromCallables",
    "Path",
    "VPCosine",
    "VPDiscrete",
    "VPLinear",
    "as_time",
    "check_int",
    "check_real",
]


Times = Float64[Tensor, "*t"]  # float64 values at the times given, of their shape


def as_time(t, name: str = "t") -> Times:
    """``t`` as a float64 tensor (scalars, sequences and tensors of any real dtype accepted; complex
    and bool values are refused rather than silently cast)."""
    if isinstance(t, Tensor):
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers, got a tensor of {t.dtype}")
        return t.to(torch.float64)
    if isinstance(t, (bool, complex, str, bytes)):
        raise TypeError(f"{name} must be a number or a tensor of times, got {t!r}")
    try:
        kind = np.asarray(t).dtype.kind
    except (TypeError, ValueError, RuntimeError):
        kind = "f"  # for example a list of device tensors: torch decides below
    if kind in "bcOUSV":
        raise TypeError(f"{name} must be real numbers, got {type(t).__name__} of dtype kind {kind!r}")
    try:
        return torch.as_tensor(t, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number or a tensor of times, got {type(t).__name__}") from err


def check_real(
    value,
    name: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a float, refused unless it is a real number (not a bool, a string or a complex;
    a one-element real tensor is taken), not NaN, finite unless ``allow_inf``, and within ``lo .. hi``
    (open ends where asked). The error names ``name`` and the expected range."""
    kind = "a real number (inf allowed)" if allow_inf else "a finite real number"
    if math.isinf(hi):
        expected = kind if math.isinf(lo) else f"{kind} {'>' if lo_open else '>='} {lo:g}"
    else:
        expected = f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}, got {value!r} of type {type(value).__name__}")
    v = float(value)
    if (
        math.isnan(v)
        or (math.isinf(v) and not allow_inf)
        or not lo <= v <= hi
        or (lo_open and v == lo)
        or (hi_open and v == hi)
    ):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return v


def check_int(value, name: str, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int, refused unless it is an integer (``int``, a numpy integer or a one-element
    integer tensor; not a bool, not a float such as 10.7 or 10.0) in ``lo .. hi``, naming ``name``."""
    rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
    if (
        isinstance(value, Tensor)
        and value.numel() == 1
        and not value.is_floating_point()
        and not value.is_complex()
        and value.dtype != torch.bool
    ):
        value = value.item()
    if isinstance(value, (bool, Tensor)) or not hasattr(value, "__index__") or type(value).__name__ == "bool_":
        raise TypeError(f"{name} must be an integer {rng}, got {value!r} of type {type(value).__name__}")
    v = int(value.__index__())
    if v < lo or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an integer {rng}, got {v}")
    return v


def _log_sigma_vp(log_alpha: Tensor) -> Tensor:
    # sigma^2 = 1 - alpha^2, without cancellation when alpha is close to 1
    return 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))


def _log_alpha_vp_of_lambda(lam: Tensor) -> Tensor:
    # alpha^2 = 1 / (1 + exp(-2 lambda)) on a VP path
    return -0.5 * torch.nn.functional.softplus(-2.0 * lam)


class Path:
    """A Gaussian path. Subclasses give ``log_alpha``, ``log_sigma``, ``t_of_lambda`` and the domain."""

    t_min: float  # data end (least noise)
    t_max: float  # noise end

    # -- to be given by subclasses ------------------------------------------------------------
    def log_alpha(self, t) -> Times:
        raise NotImplementedError

    def log_sigma(self, t) -> Times:
        raise NotImplementedError

    def t_of_lambda(self, lam) -> Times:
        raise NotImplementedError

    # -- derived -------------------------------------------------------------------------------
    def alpha(self, t) -> Times:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t) -> Times:
        return torch.exp(self.log_sigma(t))

    def lambda_(self, t) -> Times:
        """Half log-SNR ``log(alpha/sigma)``; +inf where sigma = 0, -inf where alpha = 0."""
        return self.log_alpha(t) - self.log_sigma(t)

    def noise_level(self, t) -> Times:
        """``sigma/alpha = exp(-lambda)``: k-diffusion's "sigma" (rho in DEIS)."""
        return torch.exp(-self.lambda_(t))

    def t_of_noise_level(self, rho) -> Times:
        rho = as_time(rho, "sigmas")
        return self.t_of_lambda(-torch.log(rho))

    def derivatives(self, t) -> tuple[Times, Times]:
        """``(d alpha/dt, d sigma/dt)`` by automatic differentiation, float64."""
        t = as_time(t).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            a, s = self.alpha(t), self.sigma(t)
            da, ds = (
                torch.autograd.grad(v.sum(), t, retain_graph=True, allow_unused=True, materialize_grads=True)[0]
                if v.requires_grad
                else torch.zeros_like(t)
                for v in (a, s)
            )
        return da, ds

    def check_times(self, t, name: str = "t") -> Times:
        """Refuse times outside ``[t_min, t_max]`` or NaN, naming ``name``."""
        t = as_time(t, name)
        bad = torch.isnan(t) | (t < self.t_min - 1e-12) | (t > self.t_max + 1e-12)
        if bool(bad.any()):
            raise ValueError(
                f"{name} must lie in the domain [{self.t_min}, {self.t_max}] of {self!r}; "
                f"got {t[bad].flatten()[:4].tolist()}"
            )
        return t

    @property
    def is_vp(self) -> bool:
        return False


# --------------------------------------------------------------------------------------------
# Variance preserving
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VPLinear(Path):
    """VP path with linear beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1] (Song et al. 2021).

    log alpha(t) = -beta_min t / 2 - (beta_max - beta_min) t^2 / 4.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = field(default=0.0, init=False)
    t_max: float = field(default=1.0, init=False)

    def __post_init__(self):
        b0 = check_real(self.beta_min, "beta_min", 0.0)
        b1 = check_real(self.beta_max, "beta_max", 0.0, lo_open=True)
        if not b0 < b1:
            raise ValueError(
                f"beta_min, beta_max must satisfy 0 <= beta_min < beta_max; got {self.beta_min}, {self.beta_max}"
            )
        object.__setattr__(self, "beta_min", b0)
        object.__setattr__(self, "beta_max", b1)

    def log_alpha(self, t) -> Times:
        t = as_time(t)
        return -0.5 * self.beta_min * t - 0.25 * (self.beta_max - self.beta_min) * t * t

    def log_sigma(self, t) -> Times:
        return _log_sigma_vp(self.log_alpha(t))

    def t_of_lambda(self, lam) -> Times:
        L = -_log_alpha_vp_of_lambda(as_time(lam))  # -log alpha >= 0
        b, a = 0.5 * self.beta_min, 0.25 * (self.beta_max - self.beta_min)
        return 2.0 * L / (b + torch.sqrt(b * b + 4.0 * a * L))

    @property
    def is_vp(self):
        return True


@dataclass(frozen=True)
class VPCosine(Path):
    """Cosine schedule of Nichol & Dhariwal (2021): alpha(t) = cos(pi/2 (t+s)/(1+s)) / cos(pi/2 s/(1+s)).

    alpha(1) = 0 exactly (lambda = -inf), so a grid starting at t = 1 has zero terminal SNR.
    """

    s: float = 0.008
    t_min: float = field(default=0.0, init=False)
    t_max: float = field(default=1.0, init=False)

    def __post_init__(self):
        # s < 0 makes alpha(0) > alpha(0+) (not monotone) and s <= -1 divides by zero
        object.__setattr__(self, "s", check_real(self.s, "s", 0.0))

    def _c0(self):
        return math.cos(0.5 * math.pi * self.s / (1 + self.s))

    def log_alpha(self, t) -> Times:
        t = as_time(t)
        # cos(pi/2 (t+s)/(1+s)) = sin(pi/2 (1-t)/(1+s)): exactly 0 at t = 1
        la = torch.log(torch.sin(0.5 * math.pi * (1 - t) / (1 + self.s))) - math.log(self._c0())
        return torch.where(t <= 0, torch.zeros_like(la), la.clamp(max=0.0))  # alpha(0) = 1 exactly

    def log_sigma(self, t) -> Times:
        return _log_sigma_vp(self.log_alpha(t))

    def alpha(self, t) -> Times:  # direct form: its derivative is finite at t = 1, where alpha = 0
        t = as_time(t)
        return torch.sin(0.5 * math.pi * (1 - t).clamp(max=1.0) / (1 + self.s)).clamp(max=self._c0()) / self._c0()

    def sigma(self, t) -> Times:
        a = self.alpha(t)
        return torch.sqrt((1 - a) * (1 + a))

    def t_of_lambda(self, lam) -> Times:
        la = _log_alpha_vp_of_lambda(as_time(lam))
        # sin(pi/2 (1-t)/(1+s)) = alpha c0
        return 1 - (2 * (1 + self.s) / math.pi) * torch.asin(torch.clamp(torch.exp(la) * self._c0(), max=1.0))

    @property
    def is_vp(self):
        return True


@dataclass(frozen=True, eq=False)
class VPDiscrete(Path):
    """VP path of a discrete-time model (DDPM): alphas_cumprod[i] = prod_{j<=i} (1 - betas[j]).

    Time is the model's timestep index, continuous in [-1, T-1]: log alpha is interpolated
    linearly between the integer points, and t = -1 is the clean end (alpha = 1, sigma = 0), as in
    DDIM's ``set_alpha_to_one`` and DPM-Solver's discrete schedule. With zero terminal SNR
    (alphas_cumprod[T-1] = 0) the last segment interpolates alpha itself linearly, so alpha
    reaches 0 exactly at t = T-1.
    """

    betas: Tensor | Sequence[float]
    t_min: float = field(default=-1.0, init=False)
    t_max: float = field(init=False)

    def __post_init__(self):
        if isinstance(self.betas, (str, bytes)):
            raise TypeError(f"betas must be a 1-D sequence of numbers, got {self.betas!r}")
        if isinstance(self.betas, Tensor) and (self.betas.is_complex() or self.betas.dtype == torch.bool):
            raise TypeError(f"betas must be real numbers, got a tensor of {self.betas.dtype}")
        betas = as_time(self.betas, "betas")
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D sequence of at least 2 values, got shape {tuple(betas.shape)}")
        # beta = 1 (alpha reaches 0: zero terminal SNR) only as the last value: alpha stays 0 after it
        bad = torch.isnan(betas) | (betas <= 0) | (betas > 1)
        bad[:-1] |= betas[:-1] >= 1
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"betas must lie in (0, 1) (the last may be 1: zero terminal SNR); got betas[{i}] = {float(betas[i])}"
            )
        object.__setattr__(self, "betas", betas)
        log_a = 0.5 * torch.cumsum(torch.log1p(-betas.clamp(max=1.0)), 0)
        log_a = torch.cat([torch.zeros(1, dtype=torch.float64), log_a])  # t = -1 first
        object.__setattr__(self, "_log_a", log_a)
        object.__setattr__(self, "t_max", float(betas.numel() - 1))
        object.__setattr__(self, "zero_terminal_snr", bool(torch.isinf(log_a[-1])))

    # -- constructors with the diffusers names ---------------------------------------------------
    @classmethod
    def from_schedule(
        cls,
        schedule: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        rescale_zero_terminal_snr: bool = False,
    ) -> VPDiscrete:
        """Betas as diffusers builds them: ``linear``, ``scaled_linear`` or ``squaredcos_cap_v2``."""
        T = check_int(num_train_timesteps, "num_train_timesteps", 2)
        beta_start = check_real(beta_start, "beta_start", 0.0, 1.0, lo_open=True, hi_open=True)
        beta_end = check_real(beta_end, "beta_end", 0.0, 1.0, lo_open=True, hi_open=True)
        if not isinstance(rescale_zero_terminal_snr, bool):
            raise TypeError(f"rescale_zero_terminal_snr must be a bool, got {rescale_zero_terminal_snr!r}")
        if schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        elif schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
        elif schedule == "squaredcos_cap_v2":
            f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
        else:
            raise ValueError(f"schedule must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2', got {schedule!r}")
        if rescale_zero_terminal_snr:
            betas = rescale_betas_zero_snr(betas)
        return cls(betas)

    @property
    def breakpoints(self) -> Tensor:
        """The integer times, where the interpolated schedule has kinks."""
        return torch.arange(-1.0, self.t_max + 1.0, dtype=torch.float64)

    @property
    def alphas_cumprod(self) -> Tensor:
        return torch.exp(2 * self._log_a[1:])

    def _segment(self, t):
        t = as_time(t)
        u = (t + 1.0).clamp(0.0, self.t_max + 1.0)
        i = torch.clamp(torch.floor(u).long(), max=int(self.t_max))  # segment [i, i+1] in u
        return u - i, i

    def log_alpha(self, t) -> Times:
        w, i = self._segment(t)
        table = self._log_a.to(w.device)
        la0, la1 = table[i], table[i + 1]
        if not self.zero_terminal_snr:
            return la0 + w * (la1 - la0)
        last = i + 1 == self._log_a.numel() - 1
        lin = la0 + w * (torch.where(last, la0, la1) - la0)
        a_last = torch.exp(la0) * (1 - w)  # alpha linear to 0 on the last segment
        return torch.where(last, torch.log(a_last), lin)

    def log_sigma(self, t) -> Times:
        return _log_sigma_vp(self.log_alpha(t))

    def _alpha_sigma(self, t) -> tuple[Times, Times]:
        # direct forms, so that automatic derivatives stay finite where alpha = 0 (zero terminal SNR):
        # every branch is computed from finite inputs, so torch.where passes no NaN gradient back
        w, i = self._segment(t)
        table = self._log_a.to(w.device)
        la0 = table[i]
        last = (i + 1 == self._log_a.numel() - 1) & self.zero_terminal_snr
        la1 = torch.where(last, la0, table[i + 1])
        log_a = la0 + w * (la1 - la0)  # finite: on the last segment it is not used
        direct = torch.exp(la0) * (1 - w)  # alpha linear to 0 on the last segment
        alpha = torch.where(last, direct, torch.exp(log_a))
        sigma = torch.where(last, torch.sqrt((1 - direct) * (1 + direct)), torch.exp(_log_sigma_vp(log_a)))
        return alpha, sigma

    def alpha(self, t) -> Times:
        return self._alpha_sigma(t)[0] if self.zero_terminal_snr else super().alpha(t)

    def sigma(self, t) -> Times:
        return self._alpha_sigma(t)[1] if self.zero_terminal_snr else super().sigma(t)

    def t_of_lambda(self, lam) -> Times:
        la = _log_alpha_vp_of_lambda(as_time(lam))  # decreasing table self._log_a, increasing in -la
        neg = -self._log_a.to(la.device)
        finite = neg[torch.isfinite(neg)]
        idx = torch.searchsorted(finite.contiguous(), (-la).contiguous(), right=False).clamp(1, finite.numel() - 1)
        lo, hi = finite[idx - 1], finite[idx]
        t = (idx - 1).to(torch.float64) + ((-la) - lo) / (hi - lo) - 1.0
        if self.zero_terminal_snr:
            n = finite.numel()  # segment from the last finite point to alpha = 0
            a0 = torch.exp(-finite[-1])
            t_last = (n - 1) + (1 - torch.exp(la) / a0) - 1.0
            t = torch.where(-la > finite[-1], t_last, t)
        return t.clamp(self.t_min, self.t_max)

    def __repr__(self):
        return f"VPDiscrete(T={int(self.t_max) + 1}, zero_terminal_snr={self.zero_terminal_snr})"

    def __eq__(self, other):
        return isinstance(other, VPDiscrete) and torch.equal(self.betas, other.betas)

    def __hash__(self):
        return hash(self.betas.numpy().tobytes())

    @property
    def is_vp(self):
        return True


def rescale_betas_zero_snr(betas: Tensor) -> Tensor:
    """Lin et al. (2024), "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1:
    shift and scale sqrt(alphas_cumprod) so that the last is exactly 0 and the first unchanged."""
    a = torch.sqrt(torch.cumprod(1 - as_time(betas), 0))
    a0, aT = a[0].clone(), a[-1].clone()
    a = (a - aT) * a0 / (a0 - aT)
    ac = a**2
    ac_prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
    return 1 - ac / ac_prev


class VP:
    """Constructors of the variance-preserving paths."""

    linear = VPLinear
    cosine = VPCosine
    discrete = VPDiscrete.from_schedule

    @staticmethod
    def from_betas(betas) -> VPDiscrete:
        return VPDiscrete(betas)


# --------------------------------------------------------------------------------------------
# Variance exploding, EDM, flow matching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EDM(Path):
    """Karras et al. (2022): alpha = 1, sigma = t, t in [0, t_max]."""

    t_max: float = math.inf
    t_min: float = field(default=0.0, init=False)

    def __post_init__(self):
        object.__setattr__(self, "t_max", check_real(self.t_max, "t_max", 0.0, lo_open=True, allow_inf=True))

    def log_alpha(self, t) -> Times:
        return torch.zeros_like(as_time(t))

    def log_sigma(self, t) -> Times:
        return torch.log(as_time(t))

    def t_of_lambda(self, lam) -> Times:
        return torch.exp(-as_time(lam))

    def noise_level(self, t) -> Times:
        return as_time(t).clone()

    def alpha(self, t) -> Times:
        return torch.ones_like(as_time(t))

    def sigma(self, t) -> Times:
        return as_time(t).clone()

    def t_of_noise_level(self, rho) -> Times:
        return as_time(rho, "sigmas").clone()


@dataclass(frozen=True)
class VE(Path):
    """Variance exploding SDE of Song et al. (2021): alpha = 1, sigma(t) = sigma_min (sigma_max/sigma_min)^t,
    t in [0, 1]."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = field(default=0.0, init=False)
    t_max: float = field(default=1.0, init=False)

    def __post_init__(self):
        object.__setattr__(self, "sigma_min", check_real(self.sigma_min, "sigma_min", 0.0, lo_open=True))
        object.__setattr__(self, "sigma_max", check_real(self.sigma_max, "sigma_max", 0.0, lo_open=True))
        if not (0 < self.sigma_min < self.sigma_max):
            raise ValueError(
                f"sigma_min, sigma_max must satisfy 0 < sigma_min < sigma_max; got {self.sigma_min}, {self.sigma_max}"
            )

    def log_alpha(self, t) -> Times:
        return torch.zeros_like(as_time(t))

    def log_sigma(self, t) -> Times:
        return math.log(self.sigma_min) + as_time(t) * math.log(self.sigma_max / self.sigma_min)

    def t_of_lambda(self, lam) -> Times:
        return (-as_time(lam) - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)


@dataclass(frozen=True)
class FlowMatching(Path):
    """Flow matching / rectified flow with the linear (OT) path: alpha = 1 - t, sigma = t, t in [0, 1]."""

    t_min: float = field(default=0.0, init=False)
    t_max: float = field(default=1.0, init=False)

    def log_alpha(self, t) -> Times:
        return torch.log1p(-as_time(t))

    def log_sigma(self, t) -> Times:
        return torch.log(as_time(t))

    def t_of_lambda(self, lam) -> Times:
        return torch.sigmoid(-as_time(lam))  # alpha/sigma = e^lambda  =>  t = 1 / (1 + e^lambda)

    # direct forms: exact at the ends, and their derivatives are finite there (exp(log 0) is not)
    def alpha(self, t) -> Times:
        return 1 - as_time(t)

    def sigma(self, t) -> Times:
        return as_time(t).clone()


# --------------------------------------------------------------------------------------------
# A path from user callables
# --------------------------------------------------------------------------------------------

_FD_STEP = 2.0**-17  # about eps^(1/3): balances the O(h^2) truncation and the O(eps/h) rounding
_BISECTIONS = 60


class FromCallables(Path):
    """A path from user functions ``alpha(t)``, ``sigma(t)`` on a finite domain ``[t_min, t_max]``
    (``t_min`` the data end, ``t_max`` the noise end).

    The callables receive a float64 tensor of times and return values of its shape (or a number);
    each value must be a finite number >= 0 (``sigma`` may be 0 only at ``t_min`` and ``alpha`` only
    at ``t_max``), else the call raises a ValueError naming the function and the time.

    - Derivatives (for [`derivatives`][odesolve.paths.Path.derivatives] and every method that
      differentiates the path): ``derivatives="autograd"`` differentiates the callables with torch (a
      constant has derivative 0); ``"finite-difference"`` uses central differences of step
      ``2^-17 max(1, |t|)`` (second-order one-sided within a step of the domain's ends), attached to
      the values so that autograd sees them (first derivatives only); ``"auto"`` (default) takes
      autograd for a callable whose output carries a gradient and finite differences for the others
      (numpy code, constants). Finite differences lose accuracy where a callable is not smooth on the
      scale of the step (``sqrt(t)`` near ``t = 0``): write such callables with torch.
    - ``t_of_lambda``: ``lambda = log(alpha/sigma)`` is tabulated at ``table_size`` equally spaced
      times when the path is built and must be strictly decreasing there (a ValueError names the
      first pair of times where it is not); the inverse brackets ``lambda`` in the table and bisects
      the callables to float64 precision. Values of ``lambda`` outside ``[lambda(t_max), lambda(t_min)]``
      give the domain's ends.
    """

    @no_type_check  # our own checks name the argument and what it should be
    def __init__(
        self,
        alpha: Callable,
        sigma: Callable,
        t_min: float = 0.0,
        t_max: float = 1.0,
        *,
        derivatives: str = "auto",
        table_size: int = 4097,
    ):
        for fn, name in ((alpha, "alpha"), (sigma, "sigma")):
            if not callable(fn):
                raise TypeError(f"{name} must be a callable t -> {name}(t), got {type(fn).__name__}")
        self.t_min = check_real(t_min, "t_min")
        self.t_max = check_real(t_max, "t_max")
        if not self.t_min < self.t_max:
            raise ValueError(f"t_min, t_max must satisfy t_min < t_max; got {t_min}, {t_max}")
        if derivatives not in ("auto", "autograd", "finite-difference"):
            raise ValueError(f"derivatives must be 'auto', 'autograd' or 'finite-difference', got {derivatives!r}")
        n = check_int(table_size, "table_size", 3)
        self._fns = {"alpha": alpha, "sigma": sigma}
        probe = torch.linspace(self.t_min, self.t_max, 5, dtype=torch.float64)[1:-1].requires_grad_(True)
        self._autograd = {}
        for name in self._fns:
            try:
                with torch.enable_grad():
                    carries = self._call(name, probe).requires_grad  # False: numpy code or a constant
            except (RuntimeError, TypeError) as err:  # numpy code refuses a tensor that requires grad
                if derivatives == "autograd":
                    raise ValueError(
                        f"derivatives='autograd' needs a {name} written with torch operations ({name}(t) failed "
                        f"on a tensor that requires grad: {err}); use derivatives='finite-difference' or 'auto'"
                    ) from err
                carries = False
            self._autograd[name] = carries if derivatives == "auto" else derivatives == "autograd"
        t = torch.linspace(self.t_min, self.t_max, n, dtype=torch.float64)
        with torch.no_grad():
            a, s = self._call("alpha", t), self._call("sigma", t)
        both = (a == 0) & (s == 0)
        if bool(both.any()):
            raise ValueError(f"alpha and sigma are both 0 at t = {float(t[both][0]):g}: lambda is undefined there")
        lam = torch.log(a) - torch.log(s)
        bad = ~(lam[1:] < lam[:-1])
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            hint = " (the noise end must be t_max)" if bool(lam[-1] > lam[0]) else ""
            raise ValueError(
                "lambda(t) = log(alpha(t)/sigma(t)) must be strictly decreasing on [t_min, t_max]"
                f"{hint}; it is not between t = {float(t[i]):.6g} and t = {float(t[i + 1]):.6g} "
                f"(lambda = {float(lam[i]):.6g}, then {float(lam[i + 1]):.6g}; checked at {n} times)"
            )
        self._table = (t, lam)

    def __repr__(self):
        names = (getattr(f, "__name__", type(f).__name__) for f in self._fns.values())
        return "FromCallables(alpha={}, sigma={}, t_min={:g}, t_max={:g})".format(*names, self.t_min, self.t_max)

    def _call(self, name: str, t: Tensor) -> Tensor:
        out = self._fns[name](t)
        if not isinstance(out, Tensor):
            try:
                out = torch.as_tensor(np.asarray(out, dtype=np.float64))
            except (TypeError, ValueError) as err:
                raise TypeError(f"{name}(t) must return real numbers, got {type(out).__name__}") from err
        if out.is_complex() or out.dtype == torch.bool:
            raise TypeError(f"{name}(t) must return real numbers, got a tensor of {out.dtype}")
        out = out.to(device=t.device, dtype=torch.float64)
        if out.shape != t.shape:
            if out.numel() != 1:
                raise ValueError(
                    f"{name}(t) must return values of the shape of t {tuple(t.shape)}, got {tuple(out.shape)}"
                )
            out = out.reshape(()).expand(t.shape)
        bad = ~(torch.isfinite(out) & (out >= 0))
        if bool(bad.any()):
            i = torch.nonzero(bad.reshape(-1))[0]
            raise ValueError(
                f"{name}(t) must be a finite number >= 0; got {float(out.detach().reshape(-1)[i]):g} at "
                f"t = {float(t.detach().reshape(-1)[i]):g}"
            )
        return out

    def _finite_difference(self, name: str, t: Tensor) -> Tensor:
        h = _FD_STEP * t.abs().clamp(min=1.0)
        lo, hi = t - h < self.t_min, t + h > self.t_max
        c = torch.where(lo, t + h, torch.where(hi, t - h, t))  # a centre whose stencil lies in the domain
        c = c.clamp(self.t_min + h, self.t_max - h)
        fm, f0, fp = (self._call(name, c + k * h) for k in (-1.0, 0.0, 1.0))
        central = (fp - fm) / (2 * h)
        second = (fp - 2 * f0 + fm) / (h * h)
        return central + (t - c) * second  # at the centre: central; at c -+ h: the one-sided second-order forms

    def _value(self, name: str, t) -> Times:
        t = as_time(t)
        if self._autograd[name] or not t.requires_grad:
            return self._call(name, t)
        value = self._call(name, t.detach())
        return value + (t - t.detach()) * self._finite_difference(name, t.detach())  # value, with d/dt attached

    def alpha(self, t) -> Times:
        return self._value("alpha", t)

    def sigma(self, t) -> Times:
        return self._value("sigma", t)

    def log_alpha(self, t) -> Times:
        return torch.log(self.alpha(t))

    def log_sigma(self, t) -> Times:
        return torch.log(self.sigma(t))

    def derivatives(self, t) -> tuple[Times, Times]:
        if all(self._autograd.values()):
            return super().derivatives(t)
        t = as_time(t).detach()
        da, ds = (
            super().derivatives(t)[i] if self._autograd[name] else self._finite_difference(name, t)
            for i, name in enumerate(("alpha", "sigma"))
        )
        return da, ds

    def t_of_lambda(self, lam) -> Times:
        lam = as_time(lam)
        target = lam.detach()
        tt, tl = (v.to(target.device) for v in self._table)
        # the table is decreasing in lambda: bracket [t_{i-1}, t_i] with lambda(t_{i-1}) >= lam >= lambda(t_i)
        i = torch.searchsorted(-tl, -target.reshape(-1).contiguous()).clamp(1, tt.numel() - 1).reshape(target.shape)
        lo, hi = tt[i - 1], tt[i]
        with torch.no_grad():
            for _ in range(_BISECTIONS):
                mid = 0.5 * (lo + hi)
                if bool(((mid == lo) | (mid == hi)).all()):  # float64 resolution reached everywhere
                    break
                above = self.lambda_(mid) > target
                lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        t = 0.5 * (lo + hi)
        t = torch.where(target >= tl[0], self.t_min, torch.where(target <= tl[-1], self.t_max, t))
        t = torch.where(torch.isnan(target), torch.nan, t)
        if lam.requires_grad:  # implicit derivative dt/dlambda = 1 / lambda'(t)
            da, ds = self.derivatives(t)
            dlam = da / self.alpha(t) - ds / self.sigma(t)
            t = t + (lam - target) / dlam
        return t
