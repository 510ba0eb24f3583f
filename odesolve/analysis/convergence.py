"""Convergence studies on exact problems: error against NFE, the fitted order, and an assertion
for users' property tests.

The error of a method at a number of steps is the root-mean-square difference between its final
states and the exact ones (float64 states, exact model, reference at rtol = 1e-12). The order is the
least-squares slope of log error against log NFE over the points left after dropping

- the round-off floor: errors below ``floor`` (default: 1e3 float64 epsilons times the size of the
  states, or 10 times the reference's own error estimate) and points where the error stopped
  decreasing;
- the pre-asymptotic points: coarse points whose local slope differs from the finest local slope
  by more than ``tol`` (0.3).

The indices of both are returned, so a test can see what was fitted. Grid families (see
[`families`][odesolve.analysis.families]) stop at ``sigma_end > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..execute import execute
from ..grids import Grid
from . import families as _families
from ._fit import fit_slope
from ._plan import as_method
from .problems import as_ivp

__all__ = ["ConvergenceResult", "assert_order", "convergence", "nominal_steps"]

_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class ConvergenceResult:
    """Errors of one method along one grid family on one problem, and the fitted order."""

    method: str
    problem: str
    grids: str
    steps: tuple[int, ...]
    nfe: tuple[int, ...]
    errors: tuple[float, ...]
    h_max: tuple[float, ...]  # largest lambda-step of each grid
    slope: float  # the measured order: error ~ C NFE^-slope on the used points
    constant: float  # C
    used: tuple[int, ...]
    dropped_floor: tuple[int, ...]
    dropped_preasymptotic: tuple[int, ...]
    local_slopes: tuple[float, ...]
    floor: float
    reference_error: float

    @property
    def order(self) -> float:
        return self.slope

    def table(self) -> str:
        lines = [
            f"{self.method} on {self.problem}, {self.grids}: measured order {self.slope:.2f}",
            f"  {'steps':>6} {'nfe':>5} {'h_max':>8} {'error':>10}  note",
        ]
        for i, (s, n, h, e) in enumerate(zip(self.steps, self.nfe, self.h_max, self.errors)):
            note = "floor" if i in self.dropped_floor else "pre-asymptotic" if i in self.dropped_preasymptotic else ""
            lines.append(f"  {s:>6} {n:>5} {h:>8.4f} {e:>10.3e}  {note}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def nominal_steps(method, nfe: int) -> int:
    """``max(1, round(nfe / calls_per_step))``: the step count that spends about ``nfe`` model calls
    (warm-up calls and a step to sigma = 0 may change the real count; the exact budget rule of
    ``odesolve sample`` is `odesolve.commands.sample.steps_for_nfe`)."""
    m = as_method(method)
    return max(1, round(nfe / m.calls_per_step))


def convergence(
    method: object,
    problem: object = "gmm2d",
    grids: object = "karras",
    nfe: Sequence[int] = (16, 32, 64, 128),
    *,
    steps: Sequence[int] | None = None,
    options: dict | None = None,
    tol: float = 0.3,
    floor: float | None = None,
    **problem_kw: object,
) -> ConvergenceResult:
    """Run ``method`` on ``problem`` along a grid family and fit the order.

    Args:
        method: a registered name or a method table.
        problem: a problem name (`odesolve.analysis.problems.get`), an
            [`InitialValueProblem`][odesolve.analysis.problems.InitialValueProblem], an `odesolve.toy.problems.Problem`,
            or anything with ``.model(path, prediction)`` (then pass ``x=`` and/or ``reference=``, see
            `as_ivp`).
        grids: a family kind (``"karras"``, ``"uniform"``, ``"smooth"``, ``"random"``), a
            [`Family`][odesolve.analysis.families.Family], or a callable ``steps -> Grid``.
        nfe: model-call budgets; the steps are ``nfe / calls per step`` (or give ``steps``).
        options: passed to ``compile``.
        problem_kw: ``path``, ``sigma_start``, ``sigma_end``, ``n``, ``seed``, ``x``, ``reference`` for
            `as_ivp`.
    """
    m = as_method(method)
    P = as_ivp(problem, **problem_kw)
    if isinstance(grids, str):
        if P.sigma_end <= 0:
            raise ValueError("problem.sigma_end must be > 0 for a grid family (order studies stop at sigma > 0)")
        fam = _families.Family(grids, path=P.path, sigma_start=P.sigma_start, sigma_end=P.sigma_end)
        label = str(fam)
    elif callable(grids):
        fam, label = grids, getattr(grids, "__name__", str(grids))
    else:
        raise TypeError(
            f"grids must be a family kind, a Family or a callable steps -> Grid, got {type(grids).__name__}"
        )
    steps = list(steps) if steps is not None else [nominal_steps(m, n) for n in nfe]
    if len(steps) < 2:
        raise ValueError("a convergence study needs at least 2 resolutions")
    exact = P.exact()
    if floor is None:
        ref_err = P.reference_error
        floor = max(1e3 * _EPS * float(exact.abs().max()), 10 * ref_err if np.isfinite(ref_err) else 0.0)
    errs, nfes, hmax = [], [], []
    for N in steps:
        grid = fam(N)
        if not isinstance(grid, Grid):
            raise TypeError(f"the grid family returned {type(grid).__name__}, not an odesolve Grid")
        plan = m.compile(grid.path, grid, **(options or {}))
        out = execute(plan, P.model(plan.prediction), P.x)
        errs.append(P.error(out))
        nfes.append(plan.calls)
        lam = grid.lambdas
        hmax.append(float(torch.diff(lam[torch.isfinite(lam)]).max()) if lam.numel() > 1 else float("nan"))
    fit = fit_slope(np.array(nfes, dtype=float), np.array(errs), floor=floor, tol=tol)
    return ConvergenceResult(
        m.name,
        P.name,
        label,
        tuple(steps),
        tuple(nfes),
        tuple(errs),
        tuple(hmax),
        fit.slope,
        fit.constant,
        fit.used,
        fit.dropped_floor,
        fit.dropped_preasymptotic,
        fit.local,
        floor,
        P.reference_error,
    )


def assert_order(method, problem, expected: float, tol: float = 0.2, **kw) -> ConvergenceResult:
    """Assert that ``method`` converges with order ``expected`` (within ``tol``) on ``problem``;
    ``kw`` go to [`convergence`][odesolve.analysis.convergence.convergence]. Returns the study; raises
    ``AssertionError`` with its table."""
    res = convergence(method, problem, **kw)
    if not np.isfinite(res.slope) or len(res.used) < 2:
        raise AssertionError(f"{res.method}: too few points above the round-off floor to fit an order\n{res.table()}")
    if abs(res.slope - expected) > tol:
        raise AssertionError(
            f"{res.method}: measured order {res.slope:.3f}, expected {expected} +- {tol}\n{res.table()}"
        )
    return res
