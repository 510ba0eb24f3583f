"""Stochastic interpolants with a Gaussian base, and the kinetic energy of a Gaussian path.

**Stochastic interpolants** (Albergo, Boffi & Vanden-Eijnden 2023, "Stochastic Interpolants: A
Unifying Framework for Flows and Diffusions", arXiv:2303.08797) join a base ``x_base`` to the data
``x_data`` in the interpolant time ``tau`` (0 at the base, 1 at the data):

    x = alpha(tau) x_base + beta(tau) x_data + gamma(tau) z,       z ~ N(0, I),

with ``alpha(0) = beta(1) = 1``, ``alpha(1) = beta(0) = 0`` and a latent noise ``gamma >= 0`` that
vanishes at both ends. With a Gaussian base ``x_base ~ N(0, I)`` independent of the data, the
Gaussian part ``alpha x_base + gamma z`` is one normal vector of standard deviation
``sqrt(alpha^2 + gamma^2)``, so the interpolant **is** the Gaussian path

    signal = beta(tau),    noise = sqrt(alpha(tau)^2 + gamma(tau)^2),     path time t = 1 - tau,

exactly, at every time and for every data law: same marginals, and the same velocity
``b = E[alpha' x_base + beta' x_data + gamma' z | x]`` (because ``E[alpha' x_base + gamma' z | x] =
noise' E[eps | x]``). [`StochasticInterpolant`][odesolve.interpolants.StochasticInterpolant] is that
path, so every sampler of odesolve runs on it, the ODE samplers integrate the paper's probability flow
``dx/dtau = b`` and ``euler-maruyama`` with its ``diffusion`` option is the paper's SDE
``dx = [b + eps s] dtau + sqrt(2 eps) dW`` (with ``diffusion = eps(1 - t)``).

Not covered: a two-sided interpolant with a non-Gaussian base. There ``b`` needs ``E[x_base | x]`` and
``E[z | x]`` separately, which no Gaussian path's (x0, eps) pair carries, so no odesolve path or model
represents it (with ``gamma = 0`` the deterministic interpolant would still fit, with ``x_base`` in the
role of eps).

**Kinetic energy** (Shaul, Chen, Nickel, Le & Lipman 2023, "On Kinetic Optimal Probability Paths for
Generative Models", arXiv:2306.06626): ``KE = int E ||u_t(x_t)||^2 dt`` of the velocity ``u`` that
transports the marginals, the quantity their kinetic-optimal paths minimise;
[`kinetic_energy`][odesolve.interpolants.kinetic_energy] measures it on an exact toy, and
[`kinetic_optimal`][odesolve.interpolants.kinetic_optimal] fits the least-KE path of a small family. The conditional-OT
path (``alpha_t = t``, ``sigma_t = 1 - t`` in their time, noise at 0) is
[`FlowMatching`][odesolve.paths.FlowMatching] with the time reversed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, no_type_check

import numpy as np
import torch
from torch import Tensor

from .paths import FromCallables, Path, as_time, check_int, check_real

__all__ = ["KineticOptimal", "StochasticInterpolant", "kinetic_energy", "kinetic_optimal"]


def _tensor(value, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(torch.float64)
    return torch.as_tensor(np.asarray(value, dtype=np.float64)).expand(like.shape)


def _latent(a: float):
    """``gamma^2 = a tau (1 - tau)`` (None for a = 0)."""
    return None if a == 0 else (lambda tau: (a * tau * (1 - tau)).clamp(min=0.0))


class StochasticInterpolant(FromCallables):
    """The one-sided stochastic interpolant ``x = alpha(tau) x_base + beta(tau) x_data + gamma(tau) z`` with
    ``x_base ~ N(0, I)``, as the Gaussian path ``alpha_path(t) = beta(1 - t)``,
    ``sigma_path(t) = sqrt(alpha(1 - t)^2 + gamma(1 - t)^2)`` on ``t in [0, 1]`` (Albergo, Boffi &
    Vanden-Eijnden 2023; module docstring).

    Args:
        alpha: ``alpha(tau)``, the base's coefficient: a callable of the interpolant time ``tau`` (a float64
            tensor), as in the paper. Torch code is differentiated by autograd, other code by finite
            differences (see [`FromCallables`][odesolve.paths.FromCallables]).
        beta: ``beta(tau)``, the data's coefficient, likewise.
        gamma: ``gamma(tau)``, the latent noise, likewise; None is ``gamma = 0``.
        gamma_squared: ``gamma^2`` instead of ``gamma``, for a ``gamma`` whose derivative is infinite at
            the ends (``sqrt(a tau (1 - tau))``): the noise ``sqrt(alpha^2 + gamma^2)`` is then
            differentiated without an infinite intermediate.
        derivatives: ``"auto"``, ``"autograd"`` or ``"finite-difference"``, as in ``FromCallables``.
        table_size: the number of times at which lambda is tabulated, as in ``FromCallables``.

    The ends are checked: ``beta(0) = 0``, ``beta(1) = 1``, ``alpha(0)^2 + gamma(0)^2 = 1`` (the base) and
    ``alpha(1) = gamma(1) = 0`` (the data), to 1e-9.
    """

    @no_type_check  # our own checks name the argument and what it should be
    def __init__(
        self,
        alpha: Callable,
        beta: Callable,
        gamma: Callable | None = None,
        *,
        gamma_squared: Callable | None = None,
        derivatives: str = "auto",
        table_size: int = 4097,
    ):
        if gamma is not None and gamma_squared is not None:
            raise ValueError("give gamma or gamma_squared, not both")
        for fn, name in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma"), (gamma_squared, "gamma_squared")):
            if not callable(fn) and not (name.startswith("gamma") and fn is None):
                raise TypeError(f"{name} must be a callable tau -> {name}(tau), got {type(fn).__name__}")
        if gamma_squared is None:
            gamma_squared = None if gamma is None else (lambda tau: _tensor(gamma(tau), tau) ** 2)
        self.coefficient_fns = (alpha, beta, gamma_squared)

        def signal(t):
            return beta(1 - t)

        def noise(t):
            a = alpha(1 - t)
            if gamma_squared is None:
                return abs(a)
            a = _tensor(a, t)
            return torch.sqrt(a * a + _tensor(gamma_squared(1 - t), a))

        super().__init__(signal, noise, 0.0, 1.0, derivatives=derivatives, table_size=table_size)
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        with torch.no_grad():
            a, b, g = self.coefficients(1 - ends)
        checks = {
            "beta(0) = 0": float(b[0]),
            "beta(1) = 1": float(b[1]) - 1,
            "alpha(0)^2 + gamma(0)^2 = 1": float(a[0] ** 2 + g[0] ** 2) - 1,
            "alpha(1) = 0": float(a[1]),
            "gamma(1) = 0": float(g[1]),
        }
        for what, err in checks.items():
            if not abs(err) <= 1e-9:
                raise ValueError(
                    f"a stochastic interpolant needs {what} (base at tau = 0, data at tau = 1); off by {err:g}"
                )

    # -- the paper's examples ------------------------------------------------------------------------
    @classmethod
    def linear(cls, gamma_scale: float = 0.0) -> StochasticInterpolant:
        """``alpha = 1 - tau``, ``beta = tau``, ``gamma = sqrt(a tau (1 - tau))`` (the paper's linear
        interpolant; ``a = 0`` is the conditional-OT / flow-matching path)."""
        a = check_real(gamma_scale, "gamma_scale", 0.0)
        return cls(lambda tau: 1 - tau, lambda tau: tau.clone(), gamma_squared=_latent(a))

    @classmethod
    def trigonometric(cls, gamma_scale: float = 0.0) -> StochasticInterpolant:
        """``alpha = cos(pi tau / 2)``, ``beta = sin(pi tau / 2)``, ``gamma = sqrt(a tau (1 - tau))`` (the
        paper's trigonometric interpolant; ``a = 0`` is the cosine VP path with ``s = 0``)."""
        a = check_real(gamma_scale, "gamma_scale", 0.0)
        return cls(
            lambda tau: torch.cos(0.5 * math.pi * tau),
            lambda tau: torch.sin(0.5 * math.pi * tau),
            gamma_squared=_latent(a),
        )

    # -- the interpolant itself ----------------------------------------------------------------------
    def coefficients(self, t) -> tuple[Tensor, Tensor, Tensor]:
        """``(alpha, beta, gamma)`` of the paper at path times ``t`` (``tau = 1 - t``), float64."""
        t = as_time(t)
        tau = 1 - t
        alpha, beta, gamma2 = self.coefficient_fns
        a = _tensor(alpha(tau), t)
        return a, _tensor(beta(tau), t), torch.zeros_like(a) if gamma2 is None else torch.sqrt(_tensor(gamma2(tau), t))

    def interpolate(self, x_base: Tensor, x_data: Tensor, z: Tensor, t) -> Tensor:
        """The definition ``alpha x_base + beta x_data + gamma z`` at path time ``t`` (a scalar or one per sample)."""
        if not (x_base.shape == x_data.shape == z.shape):
            raise ValueError(
                f"x_base, x_data and z must have one shape, got {tuple(x_base.shape)}, {tuple(x_data.shape)}, "
                f"{tuple(z.shape)}"
            )
        t = self.check_times(t)
        a, b, g = (v.reshape(v.shape + (1,) * (x_data.ndim - v.ndim)) for v in self.coefficients(t))
        return a * x_base + b * x_data + g * z

    def __repr__(self):
        names = (getattr(f, "__name__", type(f).__name__) for f in self.coefficient_fns)
        return "StochasticInterpolant(alpha={}, beta={}, gamma_squared={})".format(*names)


def kinetic_energy(
    path: Path,
    distribution,
    t_start: float | None = None,
    t_end: float | None = None,
    *,
    n_samples: int = 4096,
    n_times: int = 32,
    seed: int = 0,
) -> float:
    """``KE = int_{t_end}^{t_start} E ||u_t(x_t)||^2 dt`` (Shaul et al. 2023) of the velocity
    ``u = dx/dt = alpha' x0_hat + sigma' eps_hat`` of the exact model of ``distribution`` (an
    ``odesolve.toy`` mixture) on ``path``: Gauss-Legendre in ``t`` with ``n_times`` nodes and, at each,
    ``x_t = alpha x0 + sigma eps`` from ``n_samples`` draws of ``(x0, eps)`` fixed by ``seed`` (the same
    draws for every path: differences between paths have little Monte-Carlo noise).

    The default range is the whole domain (finite domains only)."""
    if not isinstance(path, Path):
        raise TypeError(f"path must be an odesolve.paths.Path, got {type(path).__name__}")
    lo = path.t_min if t_end is None else check_real(t_end, "t_end")
    hi = path.t_max if t_start is None else check_real(t_start, "t_start")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"t_end < t_start must be finite times of {path!r}, got t_end = {lo}, t_start = {hi}")
    path.check_times(torch.tensor([lo, hi], dtype=torch.float64), "t_start, t_end")
    n = check_int(n_samples, "n_samples")
    m = check_int(n_times, "n_times")
    gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    x0 = distribution.sample(n, gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    nodes, weights = np.polynomial.legendre.leggauss(m)
    ts = torch.as_tensor(lo + (hi - lo) * (nodes + 1) / 2, dtype=torch.float64)
    ws = torch.as_tensor(weights * (hi - lo) / 2, dtype=torch.float64)
    model = distribution.model(path, "x0")
    a, s = path.alpha(ts), path.sigma(ts)
    da, ds = path.derivatives(ts)
    total = 0.0
    for i in range(m):
        x = a[i] * x0 + s[i] * eps
        d = model.fn(x, ts[i].expand(n))
        u = da[i] * d + ds[i] * (x - a[i] * d) / s[i]
        total += float(ws[i] * (u * u).sum(-1).mean())
    return total


class KineticOptimal(NamedTuple):
    """What [`kinetic_optimal`][odesolve.interpolants.kinetic_optimal] returns."""

    path: FromCallables  # the fitted path, t in [0, 1], data at 0
    kinetic_energy: float  # its KE (the same draws as cond_ot_energy)
    cond_ot_energy: float  # KE of the conditional-OT path (FlowMatching), the starting point
    coefficients: tuple[tuple[float, ...], tuple[float, ...]]  # (P, Q), increasing powers of t


def _bent_path(p: Tensor, q: Tensor) -> FromCallables:
    """``alpha = (1 - t) exp(t (1 - t) P(t))``, ``sigma = t exp(t (1 - t) Q(t))``: the ends of conditional OT."""

    def poly(c, t):
        return sum(ck * t**k for k, ck in enumerate(c.tolist()))

    return FromCallables(
        lambda t: (1 - t) * torch.exp(t * (1 - t) * poly(p, t)), lambda t: t * torch.exp(t * (1 - t) * poly(q, t))
    )


def kinetic_optimal(
    distribution,
    degree: int = 1,
    *,
    n_samples: int = 512,
    n_times: int = 16,
    seed: int = 0,
    max_evaluations: int = 200,
) -> KineticOptimal:
    """An approximate kinetic-optimal Gaussian path for ``distribution`` (an ``odesolve.toy`` mixture):
    the path of least [`kinetic_energy`][odesolve.interpolants.kinetic_energy] in the family

        alpha(t) = (1 - t) exp(t (1 - t) P(t)),    sigma(t) = t exp(t (1 - t) Q(t)),    t in [0, 1],

    with ``P``, ``Q`` polynomials of degree ``degree`` (the ends of conditional OT: data at t = 0, N(0, I)
    at t = 1; ``P = Q = 0`` is conditional OT itself). The coefficients are found by Nelder-Mead from
    ``P = Q = 0``, every KE with the same draws (``seed``). This is the data-dependent route of Shaul et
    al. (2023, section (iii): minimise the KE over paths), in a small family; members whose lambda is not
    decreasing are skipped."""
    from scipy.optimize import minimize

    deg = check_int(degree, "degree", 0, 4)
    kw = dict(n_samples=n_samples, n_times=n_times, seed=seed)
    cache: dict = {}

    def energy(c) -> float:
        key = tuple(np.round(c, 12))
        if key not in cache:
            c = torch.as_tensor(c, dtype=torch.float64)
            try:
                cache[key] = kinetic_energy(_bent_path(c[: deg + 1], c[deg + 1 :]), distribution, **kw)
            except ValueError:  # lambda not decreasing, or a non-finite coefficient: outside the family
                cache[key] = math.inf
        return cache[key]

    start = np.zeros(2 * (deg + 1))
    base = energy(start)
    res = minimize(
        energy,
        start,
        method="Nelder-Mead",
        options={"maxfev": check_int(max_evaluations, "max_evaluations"), "initial_simplex": _simplex(start, 0.3)},
    )
    c = res.x if energy(res.x) <= base else start
    p, q = (tuple(float(v) for v in part) for part in (c[: deg + 1], c[deg + 1 :]))
    path = _bent_path(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64))
    return KineticOptimal(path, energy(c), base, (p, q))


def _simplex(x0: np.ndarray, step: float) -> np.ndarray:
    return np.vstack([x0] + [x0 + step * np.eye(x0.size)[i] for i in range(x0.size)])
