"""Fitted plans: a non-stationary table (one row per model call) learned for one model on one grid.

Where a registered table derives its coefficients from the grid, a `FittedPlan` *is* its
coefficients: the float64 rows of a [`Plan`][odesolve.plan.Plan] (semantics in the module docstring
of [`odesolve.plan`][odesolve.plan]), stored as exact data, as BNS (Shaul et al. 2024) and S4S (Frankel et al.
2025) learn them. It compiles only for the grid it was fitted on and refuses any other.
[`odesolve.learn.fit`][odesolve.learn.fit] builds them; they are not registered (they belong to one model).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..grids import Grid
from ..paths import Path
from ..plan import Plan, Rows
from .base import Geometry, Method, Variable, table

__all__ = ["FittedPlan"]

_Rows = tuple[tuple[float, ...], ...]


@table
class FittedPlan(Method):
    """The rows of a deterministic plan on one grid, as data.

    ``grid_times`` (the grid, float64), ``times`` / ``step`` (time and grid step of each call), and
    per call ``input_state``, ``input_hist`` (window columns, column 0 zero), ``update_state``,
    ``update_hist``; ``interpolation`` is the variable of the table it started from (the analysis
    builds its test polynomials in it). ``order`` is the order it guarantees (1: exact for constant
    predictions and for the linear part)."""

    order: int = 1
    path: Path | None = None
    grid_times: tuple[float, ...] = ()
    times: tuple[float, ...] = ()
    step: tuple[int, ...] = ()
    input_state: tuple[float, ...] = ()
    input_hist: _Rows = ()
    update_state: tuple[float, ...] = ()
    update_hist: _Rows = ()
    interpolation: Variable = "lambda"
    options: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.path, Path):
            raise TypeError(f"{self.name}: path must be an odesolve.paths.Path, got {type(self.path).__name__}")
        K = len(self.times)
        if K < 1:
            raise ValueError(f"{self.name}: times must hold at least one call time")
        for field in ("step", "input_state", "update_state", "input_hist", "update_hist"):
            if len(getattr(self, field)) != K:
                raise ValueError(
                    f"{self.name}: {field} must have one entry per call ({K}), got {len(getattr(self, field))}"
                )
        W = {len(r) for r in (*self.input_hist, *self.update_hist)}
        if len(W) != 1 or 0 in W:
            raise ValueError(
                f"{self.name}: input_hist and update_hist rows must all have one length >= 1, got lengths {sorted(W)}"
            )
        values = [
            *self.grid_times,
            *self.times,
            *self.input_state,
            *self.update_state,
            *(v for r in (*self.input_hist, *self.update_hist) for v in r),
        ]
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            raise ValueError(f"{self.name}: every time and coefficient must be a finite float")
        if any(r[0] != 0.0 for r in self.input_hist):
            raise ValueError(f"{self.name}: input_hist[k][0] must be 0 (a call cannot use its own output)")
        steps = len(self.grid_times) - 1
        if (
            steps < 1
            or any(not isinstance(s, int) or not 0 <= s < steps for s in self.step)
            or list(self.step) != sorted(self.step)
        ):
            raise ValueError(
                f"{self.name}: step must be non-decreasing grid-step indices in [0, {steps}), got {list(self.step)}"
            )
        if self.interpolation not in ("lambda", "rho", "t"):
            raise ValueError(f"{self.name}: interpolation must be 'lambda', 'rho' or 't', got {self.interpolation!r}")
        Grid(self.path, torch.tensor(self.grid_times, dtype=torch.float64))  # decreasing, in the path's domain

    @property
    def variable(self) -> Variable:
        return self.interpolation

    @property
    def calls_per_step(self) -> int:
        return max(self.step.count(s) for s in set(self.step))

    @property
    def history(self) -> int:
        """The most outputs of earlier grid steps that one step reads."""
        W = len(self.update_hist[0])
        used = {}
        for k, s in enumerate(self.step):
            for j in range(W):
                if k - j >= 0 and self.step[k - j] < s and (self.update_hist[k][j] or self.input_hist[k][j]):
                    used.setdefault(s, set()).add(k - j)
        return max((len(v) for v in used.values()), default=0)

    @property
    def grid(self) -> Grid:
        """The grid this plan was fitted on (the only one it compiles for)."""
        return Grid(self.path, torch.tensor(self.grid_times, dtype=torch.float64))

    @classmethod
    def from_plan(cls, plan: Plan, name: str, *, interpolation: Variable = "lambda", paper: str = "") -> FittedPlan:
        """The table holding ``plan``'s rows exactly (a deterministic plan; gradients are dropped)."""
        if not isinstance(plan, Plan):
            raise TypeError(f"plan must be an odesolve.Plan, got {type(plan).__name__}")
        if plan.stochastic:
            raise ValueError(f"plan {plan.method!r} injects noise; a FittedPlan holds deterministic plans only")
        rows = lambda v: tuple(tuple(r) for r in v.detach().tolist())
        return cls(
            name=name,
            prediction=plan.prediction,
            paper=paper,
            path=plan.path,
            grid_times=tuple(plan.grid.t.detach().tolist()),
            times=tuple(plan.times.detach().tolist()),
            step=tuple(plan.step.tolist()),
            input_state=tuple(plan.input_state.detach().tolist()),
            input_hist=rows(plan.input_hist),
            update_state=tuple(plan.update_state.detach().tolist()),
            update_hist=rows(plan.update_hist),
            interpolation=interpolation,
        )

    def _rows(self, g: Geometry) -> Rows:
        mine = torch.tensor(self.grid_times, dtype=torch.float64)
        if g.path != self.path or not torch.equal(g.t.detach(), mine):
            raise ValueError(
                f"{self.name} was fitted on one grid and compiles only for it (fitted.grid, "
                f"{len(mine) - 1} steps, times {[float(v) for v in mine]}); got {g.grid!r} with times "
                f"{g.t.detach().tolist()}"
            )
        K, W = len(self.times), len(self.update_hist[0])
        rows = Rows(K)
        k = torch.arange(K)
        rows.call(k, torch.tensor(self.step), torch.tensor(self.times, dtype=torch.float64))
        rows.input_state(k, torch.tensor(self.input_state, dtype=torch.float64))
        rows.update_state(k, torch.tensor(self.update_state, dtype=torch.float64))
        inp = torch.tensor(self.input_hist, dtype=torch.float64)
        up = torch.tensor(self.update_hist, dtype=torch.float64)
        for j in range(W):  # column j: the output of call k - j
            ks = k[(k - j >= 0) & ((inp[:, j] != 0) | (up[:, j] != 0))]
            if j >= 1:
                rows.input(ks, ks - j, inp[ks, j])
            rows.update(ks, ks - j, up[ks, j])
        return rows
