"""Plan-level helpers shared by the analysis: the interpolation variable of a method, the
structure of a plan (which calls belong to which grid step, which earlier outputs a step reads),
and the reference interpreter of plan rows over plain numbers (numpy arrays, complex and sympy
values) that the linear analyses (stability, truncation error) use. It is the only interpreter
besides the executor's ([`odesolve.execute.Program.steps`][odesolve.execute.Program.steps]), and the tests check that
the two agree.

The interpreter follows the semantics in the docstring of [`odesolve.plan`][odesolve.plan] exactly:

    X_k = input_state[k] s + sum_{j>=1} input_hist[k, j] F_{k-j}
    F_k = prediction at (X_k, times[k])
    s  <- update_state[k] s + sum_{j>=0} update_hist[k, j] F_{k-j}

and lets the caller choose what the values are (tensors for a real model, coefficient vectors
for a linear test model) and what "the model" does. Noise inputs are ignored (it interprets the
mean of a stochastic plan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch

from .. import methods as _methods
from ..grids import Grid
from ..paths import Path
from ..plan import Plan

Variable = Literal["lambda", "rho", "t"]

__all__ = [
    "PlanStructure",
    "Variable",
    "as_method",
    "check_plan",
    "grid_from_lambdas",
    "interpolation_variable",
    "structure",
]


def as_method(method):
    """A registered name or a method table -> the table (refused with the registry's message)."""
    if isinstance(method, str):
        return _methods.get(method)
    if isinstance(method, _methods.Method):
        return method
    raise TypeError(
        f"method must be a registered name or an odesolve.methods.Method table, got {type(method).__name__}"
    )


def interpolation_variable(method) -> Variable:
    """The variable in which ``method`` integrates polynomials exactly, as the table declares it
    (``method.variable``): ``"lambda"`` for exponential methods, ``"rho"`` (= sigma/alpha) for classical
    tables in k-diffusion's variables and ``lms-*``, ``"t"`` for DEIS's tAB. A [`Plan`][odesolve.plan.Plan] falls back
    on its buffer: x0 -> lambda, eps -> rho."""
    if isinstance(method, Plan):
        return "lambda" if method.prediction == "x0" else "rho"
    return as_method(method).variable


def check_plan(plan) -> Plan:
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be an odesolve.Plan, got {type(plan).__name__}")
    for name in ("input_state", "input_hist", "update_state", "update_hist", "times"):
        v = getattr(plan, name)
        if not bool(torch.isfinite(v).all()):  # a Plan refuses these itself; this catches edited copies
            raise ValueError(f"plan.{name} of {plan.method!r} has non-finite coefficients")
    return plan


@dataclass(frozen=True, eq=False)
class PlanStructure:
    """Numpy float64 copies of a plan's rows and its step structure."""

    plan: Plan

    @cached_property
    def rows(self):
        p = self.plan
        f = lambda v: v.detach().cpu().to(torch.float64).numpy()
        return {
            "in_s": f(p.input_state),
            "in_h": f(p.input_hist),
            "up_s": f(p.update_state),
            "up_h": f(p.update_hist),
            "times": f(p.times),
            "in_xi": f(p.input_noise),
            "up_xi": f(p.update_noise),
        }

    @cached_property
    def steps(self) -> list[tuple[int, int]]:
        """``(k0, k1)``: the calls ``k0 <= k < k1`` of grid step n, for n = 0 .. steps-1."""
        st = self.plan.step.cpu().numpy()
        N = self.plan.grid.steps
        out = []
        for n in range(N):
            idx = np.nonzero(st == n)[0]
            if idx.size == 0:
                raise ValueError(f"plan {self.plan.method!r} makes no model call in grid step {n}")
            if idx[-1] - idx[0] + 1 != idx.size:
                raise ValueError(f"plan {self.plan.method!r}: the calls of grid step {n} are not contiguous")
            out.append((int(idx[0]), int(idx[-1]) + 1))
        return out

    @cached_property
    def reads(self) -> list[set[int]]:
        """For every call k, the earlier outputs its input and its update read."""
        r = self.rows
        K, W = r["up_h"].shape
        out = []
        for k in range(K):
            s = {k - j for j in range(1, W) if r["in_h"][k, j] != 0}
            s |= {k - j for j in range(W) if r["up_h"][k, j] != 0 and k - j < k}
            out.append(s)
        return out

    def live(self, n: int) -> list[int]:
        """Calls before grid step n whose outputs are read at or after step n (the history a
        multistep method carries across the boundary), oldest first."""
        steps = self.steps
        if n >= len(steps):
            return []
        k0 = steps[n][0]
        used = set()
        for k in range(k0, self.plan.calls):
            used |= {c for c in self.reads[k] if c < k0}
        return sorted(used)

    def stencil(self, n: int) -> list[int]:
        """Every call whose output grid step n's rows read (its own calls included)."""
        k0, k1 = self.steps[n]
        used = set(range(k0, k1))
        for k in range(k0, k1):
            used |= self.reads[k]
        return sorted(used)

    def run(self, k0: int, k1: int, s, hist: dict, model: Callable[[int, object], object], xi=None):
        """Execute rows ``k0 <= k < k1`` from state ``s`` with earlier outputs ``hist`` (call -> value);
        ``model(k, X_k)`` returns ``F_k``; ``xi(k)`` the normal of a noisy call (None: the noise terms
        are left out, the plan's mean). Returns the new state and ``hist`` extended by F_k."""
        r = self.rows
        W = r["up_h"].shape[1]
        hist = dict(hist)
        for k in range(k0, k1):
            X = s * r["in_s"][k] if r["in_s"][k] != 1 else s
            for j in range(1, W):
                c = r["in_h"][k, j]
                if c != 0:
                    X = X + c * hist[k - j]
            z = xi(k) if xi is not None and (r["in_xi"][k] != 0 or r["up_xi"][k] != 0) else None
            if z is not None and r["in_xi"][k] != 0:
                X = X + r["in_xi"][k] * z
            hist[k] = model(k, X)
            s_new = s * r["up_s"][k] if r["up_s"][k] != 1 else s
            for j in range(W):
                c = r["up_h"][k, j]
                if c != 0:
                    s_new = s_new + c * hist[k - j]
            if z is not None and r["up_xi"][k] != 0:
                s_new = s_new + r["up_xi"][k] * z
            s = s_new
        return s, hist


def structure(plan: Plan) -> PlanStructure:
    return PlanStructure(check_plan(plan))


def grid_from_lambdas(path: Path, lambdas) -> Grid:
    """A grid through the half log-SNR values ``lambdas`` (increasing: noise end first)."""
    lam = torch.as_tensor(np.asarray(lambdas, dtype=np.float64))
    if lam.ndim != 1 or lam.numel() < 2 or not bool((lam[1:] > lam[:-1]).all()):
        raise ValueError("lambdas must be a strictly increasing 1-D sequence of at least 2 values")
    return Grid(path, path.t_of_lambda(lam))


def variable_of_lambda(path: Path, variable: Variable, lam: np.ndarray) -> np.ndarray:
    """u(lambda) for the interpolation variable."""
    lam = np.asarray(lam, dtype=np.float64)
    if variable == "lambda":
        return lam
    if variable == "rho":
        return np.exp(-lam)
    if variable == "t":
        return path.t_of_lambda(torch.as_tensor(lam)).numpy()
    raise ValueError(f"variable must be 'lambda', 'rho' or 't', got {variable!r}")
