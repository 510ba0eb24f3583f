"""What every method table shares: the phi-functions, the step geometry, the base class."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..grids import Grid
from ..paths import Path
from ..plan import LinComb, Plan, PlanBuilder

__all__ = ["phi", "chi", "Method", "Form"]

Form = Literal["data", "noise"]
_PLANS: "OrderedDict" = OrderedDict()


def phi(k: int, z: Tensor) -> Tensor:
    """phi_k(z) = sum_{n>=0} z^n / (n+k)!  (phi_0 = e^z, phi_{k+1}(z) = (phi_k(z) - 1/k!) / z).

    Float64, differentiable, accurate for all z: a 30-term series for |z| < 2, the recurrence
    elsewhere; phi_k(-inf) = 0 for k >= 1.
    """
    z = torch.as_tensor(z, dtype=torch.float64)
    small = z.abs() < 2.0
    zs = torch.where(small, z, torch.zeros_like(z))
    series = torch.full_like(z, 1.0 / math.factorial(k + 29))
    for n in range(28, -1, -1):  # Horner: 30 terms, error < 2^30/30! relative
        series = series * zs + 1.0 / math.factorial(n + k)
    zb = torch.where(small, torch.full_like(z, 2.0), z)
    rec = torch.exp(zb)
    for j in range(k):
        rec = (rec - 1.0 / math.factorial(j)) / zb
    if k >= 1:
        rec = torch.where(torch.isneginf(z), torch.zeros_like(z), rec)
    return torch.where(small, series, rec)


def chi(l: int, h: Tensor, form: Form) -> Tensor:
    """The exponential weight of the l-th Taylor term over a step of length h in lambda:

    data form  ``h phi_l(-h) = int_0^h e^{-(h-tau)} tau^{l-1}/(l-1)! dtau / h^{l-1}``,
    noise form ``h phi_l(+h)``.  The data form tends to 1/(l-1)! as h -> inf (a step to sigma = 0).
    """
    h = torch.as_tensor(h, dtype=torch.float64)
    finite = torch.isfinite(h)
    hf = torch.where(finite, h, torch.ones_like(h))  # no inf inside: keeps gradients finite
    if form == "data":
        return torch.where(finite, hf * phi(l, -hf), torch.full_like(h, 1.0 / math.factorial(l - 1)))
    return torch.where(finite, hf * phi(l, hf), torch.full_like(h, math.inf))


@dataclass(frozen=True)
class Method:
    """Base of the method tables. A table declares ``order`` and documents its source; the
    compile step turns it into a :class:`~odesolve.plan.Plan` for a path and a grid."""

    name: str
    order: int
    form: Form
    paper: str = ""
    grid_requirement: ClassVar[str] = "any"  # "any", or the variable in which steps must be uniform

    @property
    def prediction(self) -> str:
        return "x0" if self.form == "data" else "eps"

    @property
    def calls_per_step(self) -> int:
        return 1

    @property
    def history(self) -> int:
        """Number of earlier model outputs one step uses."""
        return 0

    def compile(self, path: Path, grid: Grid, **options) -> Plan:
        """The plan of this table on ``grid`` (float64, differentiable in the grid's times).

        Plans of grids that need no gradient are cached (the last 64), so sampling repeatedly on
        one grid compiles once."""
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
        if grid.path != path:
            raise ValueError(f"grid was built for {grid.path!r}, not for path {path!r}")
        key = None
        if not grid.t.requires_grad:
            key = (self, path, grid.t.numpy().tobytes(),
                   tuple(sorted(options.items())))
            if key in _PLANS:
                _PLANS.move_to_end(key)
                return _copy(_PLANS[key])
        b = PlanBuilder(self.name, grid, self.prediction)
        self._build(b, Geometry(path, grid), **options)
        plan = b.build(path, order=self.order, form=self.form, options=options)
        if key is not None:
            _PLANS[key] = _copy(plan)
            if len(_PLANS) > 64:
                _PLANS.popitem(last=False)
        return plan

    def _build(self, b: PlanBuilder, g: "Geometry", **options):
        raise NotImplementedError

    def __str__(self):
        return self.name


def _copy(plan: Plan) -> Plan:
    """A plan with its own tensors: a cached plan must not be edited through a returned one."""
    fields = ("times", "step", "input_state", "input_hist", "update_state", "update_hist", "update_noise")
    return dataclasses.replace(plan, **{f: getattr(plan, f).clone() for f in fields}, meta=dict(plan.meta))


class Geometry:
    """Per-step quantities of a grid on a path, float64: alpha, sigma, lambda, rho = sigma/alpha."""

    def __init__(self, path: Path, grid: Grid):
        self.path, self.grid = path, grid
        t = grid.t
        self.t = t
        self.log_alpha, self.log_sigma = path.log_alpha(t), path.log_sigma(t)
        self.lam = self.log_alpha - self.log_sigma
        self.h = self.lam[1:] - self.lam[:-1]
        self.steps = grid.steps
        self._chi = {}

    def chi(self, l: int, n: int, form: Form, c: float = 1.0) -> Tensor:
        """chi_l(c h_n) (see :func:`chi`), computed for all steps at once and cached."""
        key = (l, form, c)
        if key not in self._chi:
            self._chi[key] = chi(l, c * self.h, form)
        return self._chi[key][n]

    def ratio(self, i: int, j: int, form: Form) -> Tensor:
        """sigma_j/sigma_i (data form) or alpha_j/alpha_i (noise form): the exact linear part."""
        la = self.log_sigma if form == "data" else self.log_alpha
        return torch.exp(la[j] - la[i])

    def scale(self, j: int, form: Form) -> Tensor:
        """alpha_j (data form) or -sigma_j (noise form): the factor in front of the integral."""
        return torch.exp(self.log_alpha[j]) if form == "data" else -torch.exp(self.log_sigma[j])

    def at_lambda(self, lam: Tensor):
        """(t, ratio helpers) at an intermediate lambda: returns t, log alpha, log sigma."""
        t = self.path.t_of_lambda(lam)
        return t, self.path.log_alpha(t), self.path.log_sigma(t)

    def ddim(self, n: int, F: int, form: Form) -> LinComb:
        """The first-order (DDIM) update of step n from output F at its start, exact at both ends:
        data form  x_{n+1} = sigma_{n+1}/sigma_n x_n + alpha_{n+1} (1 - e^{-h}) x0,
        noise form x_{n+1} = alpha_{n+1}/alpha_n x_n + (sigma_{n+1} - alpha_{n+1} sigma_n/alpha_n) eps."""
        if form == "data":
            h = self.lam[n + 1] - self.lam[n]
            return LinComb({"s": self.ratio(n, n + 1, form), F: torch.exp(self.log_alpha[n + 1]) * -torch.expm1(-h)})
        a1, s1 = torch.exp(self.log_alpha[n + 1]), torch.exp(self.log_sigma[n + 1])
        rho0 = torch.exp(self.log_sigma[n] - self.log_alpha[n])
        return LinComb({"s": self.ratio(n, n + 1, form), F: s1 - a1 * rho0})

    def sigma_zero(self, i: int) -> bool:
        return bool(torch.isposinf(self.lam[i]))

    def singular(self, n: int) -> bool:
        """Step n has infinite length in lambda: it starts at alpha = 0 or ends at sigma = 0."""
        return not bool(torch.isfinite(self.lam[n]) & torch.isfinite(self.lam[n + 1]))
