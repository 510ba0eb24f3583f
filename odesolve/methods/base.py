"""What every method table shares: the phi-functions, the step geometry, the base class.

A table is data: every consumer (executor, analysis, adapters, benchmarks) reads what it needs from
the declared attributes of [`Method`][odesolve.methods.base.Method] and never from its class or name:

- ``order: int``                        the global order on the grids of ``grid_requirement``;
- ``prediction: "x0" | "eps"``          what the plan's buffer holds (data or noise prediction);
- ``variable: "lambda" | "rho" | "t"``  the variable in which the method integrates polynomials exactly;
- ``options: tuple[str, ...]``          the keyword options ``compile`` accepts;
- ``calls_per_step: int``, ``history: int``   model calls per step and earlier outputs one step reads;
- ``grid_requirement: "any" | "smooth"``      grids on which ``order`` holds;
- ``derivation(max_order, budget)``     the symbolic derivation of the family (in the family's file).

Compile is vectorised over all steps: a family computes the coefficients of every step as tensors
and fills [`odesolve.plan.Rows`][odesolve.plan.Rows] with them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..grids import Grid
from ..paths import Path
from ..plan import Plan, Rows

__all__ = ["Geometry", "Method", "Prediction", "Rational", "Variable", "chi", "phi", "table"]

Prediction = Literal["x0", "eps"]
Rational = Fraction | int  # exact table entries; floats are refused
Variable = Literal["lambda", "rho", "t"]
_PLANS: OrderedDict = OrderedDict()
_PLAN_CACHE_SIZE = 64


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


def chi(l: int, h: Tensor, prediction: Prediction) -> Tensor:
    """The exponential weight of the l-th Taylor term over a step of length h in lambda:

    x0 prediction  ``h phi_l(-h) = int_0^h e^{-(h-tau)} tau^{l-1}/(l-1)! dtau / h^{l-1}``,
    eps prediction ``h phi_l(+h)``.  The x0 weight tends to 1/(l-1)! as h -> inf (a step to sigma = 0).
    """
    h = torch.as_tensor(h, dtype=torch.float64)
    finite = torch.isfinite(h)
    hf = torch.where(finite, h, torch.ones_like(h))  # no inf inside: keeps gradients finite
    if prediction == "x0":
        return torch.where(finite, hf * phi(l, -hf), torch.full_like(h, 1.0 / math.factorial(l - 1)))
    return torch.where(finite, hf * phi(l, hf), torch.full_like(h, math.inf))


def table(cls):
    """Method tables are frozen dataclasses: immutable, hashable, compared by their entries.

    Their ``__post_init__`` checks every field and names it in the error; the flag
    ``__no_type_check__`` keeps a runtime type checker (jaxtyping's import hook in the test suite)
    from refusing a field's type before that clearer message."""
    cls = dataclass(frozen=True)(cls)
    cls.__no_type_check__ = True
    return cls


@table
class Method:
    """Base of the method tables (see the module docstring for what a table declares). Subclasses
    give ``_rows(g, **options)`` (the vectorised compile) and ``derivation``."""

    name: str
    order: int
    prediction: Prediction = "x0"
    paper: str = ""
    variable: ClassVar[Variable] = "lambda"
    options: ClassVar[tuple[str, ...]] = ()
    grid_requirement: ClassVar[str] = "any"  # "any", or "smooth": steps whose ratios are 1 + O(h)
    stochastic: ClassVar[bool] = False  # True: the plan injects noise (strong_order, weak_order declared)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty string, got {self.name!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"{self.name}: order must be a positive integer, got {self.order!r}")
        if self.prediction not in ("x0", "eps"):
            raise ValueError(f"{self.name}: prediction must be 'x0' or 'eps', got {self.prediction!r}")
        if self.variable not in ("lambda", "rho", "t"):
            raise ValueError(f"{self.name}: variable must be 'lambda', 'rho' or 't', got {self.variable!r}")

    @property
    def calls_per_step(self) -> int:
        return 1

    @property
    def history(self) -> int:
        """Number of earlier model outputs one step uses."""
        return 0

    def derivation(self, max_order: int | None = None, budget=None):
        """The symbolic analysis of this table (see [`odesolve.analysis.derive`][odesolve.analysis.symbolic.derive])."""
        from ..analysis.symbolic import SymbolicLimitError

        raise SymbolicLimitError(f"{type(self).__name__} tables have no symbolic derivation; use numeric_order")

    def compile(self, path: Path, grid: Grid, **options) -> Plan:
        """The plan of this table on ``grid`` (float64, differentiable in the grid's times).

        Plans of grids that need no gradient are cached (the last 64, keyed on the table, the path,
        the times and the options), so sampling repeatedly on one grid compiles once."""
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
        if grid.path != path:
            raise ValueError(f"grid was built for {grid.path!r}, not for path {path!r}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(
                f"{self.name} does not take the options {unknown}; the options it accepts: "
                f"{list(self.options) or 'none'} (method.options)"
            )
        key = None
        if not grid.t.requires_grad:
            key = (self, path, grid.t.numpy().tobytes(), tuple(sorted(options.items())))
            if key in _PLANS:
                _PLANS.move_to_end(key)
                return _copy(_PLANS[key])
        g = Geometry(path, grid)
        meta = {"order": self.order, "prediction": self.prediction, "options": options}
        plan = self._rows(g, **options).plan(self.name, path, grid, self.prediction, meta=meta)
        if key is not None:
            _PLANS[key] = _copy(plan)
            if len(_PLANS) > _PLAN_CACHE_SIZE:
                _PLANS.popitem(last=False)
        return plan

    def _rows(self, g: Geometry, **options) -> Rows:
        raise NotImplementedError

    def __str__(self):
        return self.name


def _copy(plan: Plan) -> Plan:
    """A plan with its own tensors: a cached plan must not be edited through a returned one."""
    fields = (
        "times",
        "step",
        "input_state",
        "input_hist",
        "update_state",
        "update_hist",
        "update_noise",
        "input_noise",
    )
    copies = {f: getattr(plan, f).clone() for f in fields}
    if plan.noise_interval is not None:
        copies["noise_interval"] = plan.noise_interval.clone()
    return dataclasses.replace(plan, **copies, meta=dict(plan.meta))


class Geometry:
    """Per-step quantities of a grid on a path, float64 tensors over all steps at once:
    t, log alpha, log sigma, lambda (length N + 1), the steps h in lambda (length N).

    ``t``: per-sample times of shape (N + 1, batch) instead of ``grid.t`` (the steps of a
    per-sample plan, `odesolve.plan`; ``grid`` is then their envelope)."""

    def __init__(self, path: Path, grid: Grid, t: Tensor | None = None):
        self.path, self.grid = path, grid
        self.t = grid.t if t is None else t
        self.log_alpha, self.log_sigma = path.log_alpha(self.t), path.log_sigma(self.t)
        self.lam = self.log_alpha - self.log_sigma
        self.h = self.lam[1:] - self.lam[:-1]
        self.steps = self.t.shape[0] - 1
        finite = torch.isfinite(self.lam)
        self.singular = ~(finite[:-1] & finite[1:])  # (N,) steps of infinite length in lambda
        self.sigma_zero_end = torch.isposinf(self.lam[1:])  # (N,) steps that end at sigma = 0
        self.alpha_zero_start = bool(torch.isneginf(self.lam[0]).any())

    def rho(self, i=slice(None)) -> Tensor:
        """sigma/alpha at grid points ``i``."""
        return torch.exp(self.log_sigma[i] - self.log_alpha[i])

    def ratio(self, n: Tensor, prediction: Prediction) -> Tensor:
        """sigma_{n+1}/sigma_n (x0) or alpha_{n+1}/alpha_n (eps) of steps n: the exact linear part."""
        la = self.log_sigma if prediction == "x0" else self.log_alpha
        return torch.exp(la[n + 1] - la[n])

    def scale(self, j: Tensor, prediction: Prediction) -> Tensor:
        """alpha_j (x0) or -sigma_j (eps): the factor in front of the integral."""
        return torch.exp(self.log_alpha[j]) if prediction == "x0" else -torch.exp(self.log_sigma[j])

    def at_lambda(self, lam: Tensor):
        """(t, log alpha, log sigma) at intermediate lambdas."""
        t = self.path.t_of_lambda(lam)
        return t, self.path.log_alpha(t), self.path.log_sigma(t)

    def ddim(self, n: Tensor, prediction: Prediction) -> tuple[Tensor, Tensor]:
        """(state factor, output weight) of the first-order (DDIM) update of steps n from the output
        at their start, exact at both singular ends:
        x0  x_{n+1} = sigma_{n+1}/sigma_n x_n + alpha_{n+1} (1 - e^{-h}) x0,
        eps x_{n+1} = alpha_{n+1}/alpha_n x_n + (sigma_{n+1} - alpha_{n+1} sigma_n/alpha_n) eps."""
        if prediction == "x0":
            return self.ratio(n, "x0"), torch.exp(self.log_alpha[n + 1]) * -torch.expm1(-self.h[n])
        a1, s1 = torch.exp(self.log_alpha[n + 1]), torch.exp(self.log_sigma[n + 1])
        return self.ratio(n, "eps"), s1 - a1 * self.rho(n)


def refuse_alpha_zero_start(method: Method, g: Geometry):
    """eps-prediction methods are undefined at alpha = 0 (x = sigma eps carries no information on x0)."""
    if method.prediction == "eps" and g.alpha_zero_start:
        raise ValueError(
            f"grid starts at alpha = 0 (zero terminal SNR), where {method.name!r}, a noise-prediction "
            "method, is undefined; use a data-prediction method (ddim, dpmpp-*, unipc-*)"
        )


def fraction_rows(name: str, what: str, rows):
    """Nested tuples of exact rationals (int or Fraction entries); floats are refused."""

    def conv(v):
        if isinstance(v, (tuple, list)):
            return tuple(conv(u) for u in v)
        if isinstance(v, bool) or not isinstance(v, (int, Fraction)):
            raise TypeError(f"{name}: {what} must hold exact rationals (int or fractions.Fraction), got {v!r}")
        return Fraction(v)

    return conv(rows)
