"""Local truncation errors along an exact trajectory, and how they accumulate into the global error.

Definition (local truncation error with exact history). Let ``x*(t)`` be the exact solution through
the problem's starting states. Step n of a plan reads the state and the outputs of earlier calls
still in its window (`PlanStructure.live`). Its local truncation error is what the step adds
when everything it reads is exact:

    s      <- x*(t_n)
    F_c    <- model(x*(t_c), t_c)       for every earlier call c that step n reads
    LTE_n   = (step n's rows, run with the real model for its own calls) - x*(t_{n+1})

For singlestep methods this is the usual "one step from the exact state". For multistep methods the
history is the exact model along the exact solution, at the times of the earlier calls (so a warm-up
stage used as a node, as in dpmpp-3m-corrected, is evaluated on the exact solution at its own time).
A plan whose state is a prediction corrected in the next step (UniPC's PEC mode) has LTE_n of the
predictor's size, O(h^(p+1)): its correction of step n-1 arrives in step n, and consecutive
corrections telescope in the sum; use the fan below to see what actually accumulates.

Accumulation (Lady Windermere's fan, Hairer-Norsett-Wanner I.7). With ``Phi_{a->b}`` the exact flow
and ``x_n`` the numerical states,

    x_N - x*(t_N) = sum_n [ Phi_{t_{n+1} -> t_N}(x_{n+1}) - Phi_{t_n -> t_N}(x_n) ]

exactly: term n is the error step n commits (from the numerical state and history), carried to
the end by the exact flow. Computing it costs one reference solve per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..execute import execute
from ..grids import Grid
from . import families as _families
from ._plan import as_method, structure
from .problems import InitialValueProblem, as_ivp

__all__ = ["LocalErrors", "local_errors"]


@dataclass(frozen=True)
class LocalErrors:
    """Per-step local truncation errors (RMS over the batch) and the fan decomposition."""

    method: str
    problem: str
    sigmas: np.ndarray  # (steps + 1,) grid noise levels
    h: np.ndarray  # (steps,) lambda-steps
    local: np.ndarray  # (steps,) RMS of LTE_n
    fan: np.ndarray | None  # (steps,) RMS of the propagated error committed in step n
    fan_signed: np.ndarray | None  # (steps, batch, ...) the fan terms themselves
    global_error: float  # RMS of x_N - x*(t_N)
    fan_residual: float  # RMS of sum(fan) - (x_N - x*(t_N)): the identity's check (reference error)

    def table(self) -> str:
        lines = [
            f"{self.method} on {self.problem}: global error {self.global_error:.3e}",
            f"  {'n':>3} {'sigma_n':>9} {'h':>7} {'local':>10} {'propagated':>11}",
        ]
        for n in range(len(self.h)):
            fan = f"{self.fan[n]:>11.3e}" if self.fan is not None else ""
            lines.append(f"  {n:>3} {self.sigmas[n]:>9.4g} {self.h[n]:>7.3f} {self.local[n]:>10.3e} {fan}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def _rms(v: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean(v.to(torch.float64) ** 2)))


def _flow(P: InitialValueProblem, x, t0, t1):
    return P.flow(x, t0, t1)


def local_errors(
    method,
    problem="gmm2d",
    grid: Grid | None = None,
    steps: int = 10,
    *,
    fan: bool = True,
    options: dict | None = None,
    **problem_kw,
) -> LocalErrors:
    """Local truncation errors (exact history, see the module docstring) of ``method`` on ``grid``
    (default: a Karras grid of ``steps`` steps between the problem's noise levels), and with ``fan``
    the per-step contributions to the global error (one reference solve per step)."""
    m = as_method(method)
    P = as_ivp(problem, **problem_kw)
    if grid is None:
        grid = _families.Family("karras", path=P.path, sigma_start=P.sigma_start, sigma_end=max(P.sigma_end, 1e-3))(
            steps
        )
    if grid.path != P.path:
        raise ValueError(f"grid.path {grid.path!r} differs from the problem's path {P.path!r}")
    plan = m.compile(grid.path, grid, **(options or {}))
    st = structure(plan)
    model = P.model(plan.prediction)
    N = grid.steps
    times = plan.times
    # the exact solution at every grid time and every call time
    all_t = torch.unique(torch.cat([grid.t, times])).flip(0)
    if abs(float(grid.t[0]) - float(P.t_start)) > 1e-12 * max(1.0, abs(float(P.t_start))):
        raise ValueError("grid must start at the problem's sigma_start")
    states = P.trajectory(P.x, all_t)
    exact = {float(t): states[i] for i, t in enumerate(all_t)}
    F_exact = {}
    for c in range(plan.calls):
        tc = times[c]
        F_exact[c] = model(exact[float(tc)], tc)
    local = np.zeros(N)
    for n in range(N):
        k0, k1 = st.steps[n]
        hist = {c: F_exact[c] for c in st.live(n)}
        s, _ = st.run(k0, k1, exact[float(grid.t[n])], hist, lambda k, X: model(X, times[k]))
        local[n] = _rms(s - exact[float(grid.t[n + 1])])
    out, traj = execute(plan, model, P.x, return_trajectory=True)
    xN_exact = exact[float(grid.t[-1])]
    gerr = out - xN_exact
    fan_rms = fan_signed = None
    residual = float("nan")
    if fan:
        carried = [_flow(P, traj[n], grid.t[n], grid.t[-1]) for n in range(N + 1)]
        terms = torch.stack([carried[n + 1] - carried[n] for n in range(N)])
        fan_signed = terms.numpy()
        fan_rms = np.array([_rms(t) for t in terms])
        residual = _rms(terms.sum(0) - gerr)
    lam = grid.lambdas.numpy()
    return LocalErrors(
        m.name, P.name, grid.sigmas.numpy(), np.diff(lam), local, fan_rms, fan_signed, _rms(gerr), residual
    )
