"""High-accuracy float64 reference solutions of the probability-flow ODE of any [`Model`][odesolve.models.Model].

Formulation. With ``s = hypot(alpha, sigma)`` the state ``w = x / s`` obeys, in half log-SNR time
``lambda = log(alpha / sigma)``,

    dw/dlambda = a (x0_hat(s w, t(lambda)) - a w),      a = alpha / s = (1 + e^{-2 lambda})^{-1/2}.

This is the data form of the PF-ODE (docs/theory.md sections 1 and 7.4: ``d(x/sigma)/dlambda = e^lambda x0_hat``,
Lu et al. 2022, arXiv 2211.01095) rewritten for the variance-preserving scaling of the path, which
every Gaussian path has up to the factor ``s`` (the PF-ODE commutes with rescaling ``x``). Why this
choice:

- ``w`` stays O(data) from pure noise (``w = x / sigma``) to the data (``w = x / alpha``), so the
  solver's ``atol + rtol |w|`` means the same thing along the whole trajectory, unlike
  ``x / sigma`` (grows like ``e^lambda``) or ``x / alpha`` (grows like ``e^{-lambda}``);
- the right-hand side is bounded and its linear part has modulus ``a^2 <= 1``: not stiff;
- it needs ``x0_hat`` only at ``0 < sigma`` and ``0 < alpha``, where every prediction type converts to
  ``x0`` without cancellation that survives the factor ``a`` (for an eps-model ``a x0_hat =
  w - g eps``; for an x0-model there is nothing to cancel);
- it decays at both ends: ``a (x0_hat - a w) = -a g eps_hat`` is ``O(e^{lambda})`` as
  ``lambda -> -inf`` and ``O(e^{-2 lambda})`` as ``lambda -> +inf`` for a smooth data density
  (``eps_hat = -sigma grad log p_t -> 0``).

Infinite ends are taken analytically. Beyond ``|lambda| = cut`` (default 20, noise level e^-20 =
2e-9) one exponential-Euler (DDIM) step in the data form covers the rest of the half line:

- end at ``sigma = 0`` (``lambda = +inf``): ``x = alpha x0_hat(x_L, t_L)``, the DDIM step with
  ``h = inf`` (k-diffusion's ``x = denoised``); its error is ``O(e^{-2 cut}) |grad log p|``;
- end at ``alpha = 0``: ``x / sigma = y_L - e^{L} x0_hat(x_L, t_L)`` with ``y = x / sigma``;
- start at ``alpha = 0``: ``y_L = x / sigma + e^{L} x0_hat(sigma_L x / sigma, t_L)``, error
  ``O(e^{2 L})``;
- start at ``sigma = 0``: ``x_L / alpha_L = x / alpha``, error ``O(e^{-2 cut})``.

Integration: scipy's ``DOP853`` (8th order, Hairer-Norsett-Wanner) over the whole flattened batch,
one vectorized model call per stage, or torchdiffeq's ``dopri8`` on the tensors' device
(``backend="torchdiffeq"``, max-norm error control). Each interval between requested times is
a separate solve, so the reported states are step end points, never interpolants.

Self-check: the problem is solved at ``(rtol, atol)`` and at ``(100 rtol, 100 atol)``. The looser
solution's error is about 100 times the tighter one's, so ``|x - x_loose|`` is a conservative
estimate of the reference's error. ``check="raise"`` (default) raises
[`ReferenceAccuracyError`][odesolve.toy.reference.ReferenceAccuracyError] where it exceeds ``1e4 (atol + rtol max|x|)``
(100 times the loose tolerance; scipy controls the RMS error over the batch, so single entries may exceed the
tolerance itself), ``"warn"`` warns, ``"off"`` skips the second solve.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..models import Model
from ..paths import VPDiscrete, as_time

__all__ = ["ReferenceAccuracyError", "halving_grid", "solve", "solve_by_halving", "trajectory"]

Backend = Literal["scipy", "torchdiffeq"]
Check = Literal["raise", "warn", "off"]


class ReferenceAccuracyError(RuntimeError):
    """A reference failed its self-check: the solutions at two tolerances
    ([`trajectory`][odesolve.toy.reference.trajectory]) or at
    two step counts ([`solve_by_halving`][odesolve.toy.reference.solve_by_halving]) disagree beyond the stated bound."""


def _softplus_a(lam: Tensor) -> Tensor:
    """``a = alpha / hypot(alpha, sigma) = (1 + e^{-2 lambda})^{-1/2}``."""
    return torch.exp(-0.5 * torch.nn.functional.softplus(-2 * lam))


class _Flow:
    """The right-hand side in ``(lambda, w)`` and the analytic tails, for one model and batch."""

    def __init__(self, model: Model, shape, device):
        self.model, self.path, self.shape, self.device = model, model.path, shape, device
        self.nfev = 0

    def at(self, lam) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(t, s, a, g)`` at a finite ``lambda`` (scalars, float64 on the device)."""
        lam_t = torch.as_tensor(lam, dtype=torch.float64).detach().cpu()  # path tables live on the CPU
        t = self.path.t_of_lambda(lam_t)
        s = torch.exp(0.5 * torch.logaddexp(2 * self.path.log_alpha(t), 2 * self.path.log_sigma(t)))
        a, g = _softplus_a(lam_t), _softplus_a(-lam_t)
        return tuple(v.to(self.device) for v in (t, s, a, g))

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfev += 1
        return self.model.x0(x, t).to(torch.float64)

    def rhs(self, lam, w: Tensor) -> Tensor:
        t, s, a, _ = self.at(lam)
        return a * (self.x0(s * w, t) - a * w)

    def start_tail(self, w: Tensor, from_inf: float, L: float) -> Tensor:
        """``w`` at the finite ``L`` from ``w`` at ``lambda = from_inf`` (+inf or -inf)."""
        t, s, a, g = self.at(L)
        if from_inf > 0:  # from the data: x / alpha is constant up to O(e^{-2L})
            return a * w
        y = w + math.exp(L) * self.x0(s * g * w, t)  # from alpha = 0: w = x / sigma
        return g * y

    def end_tail(self, w: Tensor, L: float, to_inf: float) -> Tensor:
        """``w`` at ``lambda = to_inf`` (+inf or -inf) from ``w`` at the finite ``L``."""
        t, s, _, g = self.at(L)
        d = self.x0(s * w, t)
        if to_inf > 0:  # DDIM with h = inf: x / alpha = x0_hat
            return d
        return w / g - math.exp(L) * d  # y(-inf) = y_L - e^L x0_hat


def _integrate(
    flow: _Flow, w: Tensor, l0: float, l1: float, rtol: float, atol: float, method: str, backend: Backend
) -> Tensor:
    if l0 == l1:
        return w
    if backend == "scipy":
        import scipy.integrate

        solver_cls = getattr(scipy.integrate, method, None)
        if not (isinstance(solver_cls, type) and issubclass(solver_cls, scipy.integrate.OdeSolver)):
            raise ValueError(f"method must name a scipy.integrate OdeSolver (e.g. 'DOP853'), got {method!r}")

        def fun(lam, y):
            out = flow.rhs(lam, torch.from_numpy(y).view(flow.shape).to(flow.device))
            return out.reshape(-1).cpu().numpy()

        y0 = w.reshape(-1).cpu().numpy().copy()
        solver = solver_cls(fun, l0, y0, l1, rtol=rtol, atol=atol)
        while solver.status == "running":
            msg = solver.step()
            if solver.status == "failed":
                raise RuntimeError(f"reference integration failed at lambda={solver.t}: {msg}")
        return torch.from_numpy(np.asarray(solver.y)).view(flow.shape).to(flow.device)
    if backend == "torchdiffeq":
        from torchdiffeq import odeint

        lams = torch.tensor([l0, l1], dtype=torch.float64, device=flow.device)
        method = "dopri8" if method == "DOP853" else method
        out = odeint(
            lambda lam, y: flow.rhs(lam, y),
            w,
            lams,
            rtol=rtol,
            atol=atol,
            method=method,
            options={"norm": lambda u: u.abs().max()},
        )
        return out[-1]
    raise ValueError(f"backend must be 'scipy' or 'torchdiffeq', got {backend!r}")


def _run(model: Model, x: Tensor, lam: list[float], rtol, atol, method, backend, cut) -> Tensor:
    """States (len(lam), *x.shape) in ``w = x / s`` coordinates."""
    flow = _Flow(model, x.shape, x.device)
    cut = float(cut)
    finite = [v for v in lam if math.isfinite(v)]
    hi, lo = max([cut] + finite), min([-cut] + finite)
    w = x
    out = [w]
    for l0, l1 in itertools.pairwise(lam):
        a0, a1 = (hi if v == math.inf else lo if v == -math.inf else v for v in (l0, l1))
        if l0 != l1 and not math.isfinite(l0):
            w = flow.start_tail(w, l0, a0)
        w = _integrate(flow, w, a0, a1, rtol, atol, method, backend)
        if l0 != l1 and not math.isfinite(l1):
            w = flow.end_tail(w, a1, l1)
        out.append(w)
    return torch.stack(out)


def trajectory(
    model: Model,
    x: Float[Tensor, " batch *shape"],
    times,
    *,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    method: str = "DOP853",
    backend: Backend = "scipy",
    check: Check = "raise",
    return_error: bool = False,
    cut: float = 20.0,
):
    """States of the PF-ODE of ``model`` at every time in ``times`` (strictly monotone, in the
    path's time, the first being the time of ``x``): a float64 tensor ``(len(times), *x.shape)``.

    With ``return_error=True`` returns ``(states, error)`` where ``error = |states - states_loose|``
    (elementwise; zero when ``check="off"``). See the module docstring for the formulation, the
    treatment of ``sigma = 0`` and ``alpha = 0`` and the meaning of ``check``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an odesolve.models.Model, got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor with a batch dimension, got {type(x).__name__}")
    if check not in ("raise", "warn", "off"):
        raise ValueError(f"check must be 'raise', 'warn' or 'off', got {check!r}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got {rtol}, {atol}")
    rtol, atol = float(rtol), float(atol)
    if not cut > 0:
        raise ValueError(f"cut must be > 0, got {cut}")
    path = model.path
    t = path.check_times(as_time(times, "times"), "times").flatten().cpu()
    if t.numel() < 1:
        raise ValueError("times must hold at least one time")
    dt = t[1:] - t[:-1]
    if t.numel() > 1 and not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError(f"times must be strictly monotone, got {t.tolist()[:8]}")
    la, ls = path.log_alpha(t), path.log_sigma(t)
    if bool(((la == math.inf) | (ls == math.inf)).any()):
        raise ValueError("times must give finite alpha and sigma (t = inf is not a state)")
    lam = (la - ls).tolist()
    s = torch.exp(0.5 * torch.logaddexp(2 * la, 2 * ls)).to(torch.float64)
    shape = (-1,) + (1,) * x.ndim
    s = s.to(x.device).view(shape)
    x = x.to(torch.float64)
    w0 = x / s[0]
    ws = _run(model, w0, lam, rtol, atol, method, backend, cut)
    states = ws * s
    err = torch.zeros_like(states)
    if check != "off":
        loose = _run(model, w0, lam, 100 * rtol, 100 * atol, method, backend, cut) * s
        err = (states - loose).abs()
        bound = 1e4 * (atol + rtol * states.abs().max().item())
        worst = err.max().item() if err.numel() else 0.0
        if not worst <= bound:
            msg = (
                f"reference solutions at rtol={rtol:g} and {100 * rtol:g} differ by {worst:.3g} > bound "
                f"{bound:.3g} = 1e4 (atol + rtol max|x|): the reference is not converged"
            )
            if check == "raise":
                raise ReferenceAccuracyError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return (states, err) if return_error else states


def solve(
    model: Model,
    x: Float[Tensor, " batch *shape"],
    t_from,
    t_to,
    *,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    method: str = "DOP853",
    backend: Backend = "scipy",
    check: Check = "raise",
    return_error: bool = False,
    cut: float = 20.0,
):
    """The PF-ODE solution at ``t_to`` of ``model`` started from ``x`` at ``t_from`` (scalars, either
    direction; ``t_to`` may be the data end ``sigma = 0`` and ``t_from`` a zero-SNR start ``alpha = 0``).
    Returns float64 ``x_to`` (or ``(x_to, error)`` with ``return_error``); see
    [`trajectory`][odesolve.toy.reference.trajectory]."""
    t_from, t_to = as_time(t_from, "t_from"), as_time(t_to, "t_to")
    if t_from.ndim or t_to.ndim:
        raise ValueError("t_from and t_to must be scalars (the whole batch shares the interval)")
    if float(t_from) == float(t_to):
        x = x.to(torch.float64)
        return (x, torch.zeros_like(x)) if return_error else x
    out = trajectory(
        model,
        x,
        torch.stack([t_from, t_to]),
        rtol=rtol,
        atol=atol,
        method=method,
        backend=backend,
        check=check,
        return_error=return_error,
        cut=cut,
    )
    return (out[0][-1], out[1][-1]) if return_error else out[-1]


# --------------------------------------------------------------------------------------------
# References for learned models: a fine-step odesolve method, checked by halving the steps
# --------------------------------------------------------------------------------------------


def halving_grid(path: VPDiscrete, steps: int, t_start: float | None = None, t_end: float = 0.0):
    """``steps - 1`` steps uniform in lambda from ``t_start`` (default the noise end) to ``t_end``
    (default 0, the first training time of a discrete model), then the step to ``t = -1``
    (sigma = 0), one model call (for the exponential methods the DDIM limit ``x = x0_hat(x, t_end)``
    of their step as ``h -> inf``; docs/theory.md section 2). The grid of
    [`solve_by_halving`][odesolve.toy.reference.solve_by_halving]."""
    from .. import grids

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    t_start = path.t_max if t_start is None else t_start
    body = grids.uniform_lambda(path, steps - 1, t_start=t_start, t_end=t_end).t
    return grids.Grid(path, torch.cat([body, torch.tensor([path.t_min], dtype=torch.float64)]))


def solve_by_halving(
    model: Model,
    x_T: Tensor,
    *,
    steps: int = 256,
    method: str = "dpm-solver-3",
    tol: float = 1e-3,
    t_start: float | None = None,
    return_error: bool = False,
):
    """A reference solution of the probability-flow ODE of a learned discrete-time ``model`` (a
    [`VPDiscrete`][odesolve.paths.VPDiscrete] path, e.g. [`odesolve.toy.zoo.load`][odesolve.toy.zoo.load]) from ``x_T``
    at
    ``t_start`` (default the noise end) to sigma = 0, by a fine-step high-order odesolve method.

    Where [`solve`][odesolve.toy.reference.solve] adapts its steps to 1e-12 (right for exact float64 models), a float32
    network is solved on [`halving_grid`][odesolve.toy.reference.halving_grid] with ``steps`` steps of ``method``
    (default DPM-Solver-3, third order: ``3 (steps - 1) + 1`` model calls) in float64 state, and again with
    ``steps // 2`` steps. The largest difference between the two over all entries must be below
    ``tol`` (in the data's units; ``digits`` has grey levels 0.125 apart), else
    [`ReferenceAccuracyError`][odesolve.toy.reference.ReferenceAccuracyError]; for a third-order method the fine
    solve's error is about 1/8
    of that difference. The end point is ``x0_hat`` at ``t_end = 0`` (sigma = 0.01 for ``digits``):
    the network was not trained closer to the data.

    Returns the solution in ``x_T``'s dtype, with ``return_error`` also the difference (a float).
    """
    from ..execute import sample

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 4:
        raise ValueError(f"steps must be an integer >= 4, got {steps!r}")
    if not isinstance(model.path, VPDiscrete):
        raise TypeError(
            f"model.path must be a VPDiscrete path (a discrete-time model), got {type(model.path).__name__}"
        )
    x = x_T.to(torch.float64)
    with torch.inference_mode():
        fine = sample(model, x, halving_grid(model.path, steps, t_start), method=method)
        coarse = sample(model, x, halving_grid(model.path, steps // 2, t_start), method=method)
    err = float((fine - coarse).abs().max())
    if not err < tol:
        raise ReferenceAccuracyError(
            f"solve_by_halving: {method} with {steps} and {steps // 2} steps differ by "
            f"{err:.3g} >= tol = {tol:g}; raise steps"
        )
    out = fine.to(x_T.dtype)
    return (out, err) if return_error else out
