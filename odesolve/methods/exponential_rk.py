"""Singlestep exponential Runge-Kutta tables (DDIM, DPM-Solver-2/3, DPM-Solver++(2S)).

With x0 prediction (x0 in the buffer) a stage at lambda_i = lambda_n + c_i h takes

    X_i = sigma_i/sigma_n x_n + alpha_i sum_j a_ij(c_i h) F_j,   a_ij(z) = sum_l A_ijl chi_l(z),
    chi_l(z) = z phi_l(-z),

and the step ends with the same formula at c = 1 and weights b_j. Eps prediction (eps in the
buffer) uses alpha_i/alpha_n, -sigma_i and chi_l(z) = z phi_l(+z). These are the exponential RK
methods of Hochbruck & Ostermann (2005) in lambda-time; a table is c, A and b with rational
entries. Steps of infinite length (to sigma = 0 or from alpha = 0) take the DDIM limit, since
their stages would sit at the singular end.
"""

from __future__ import annotations

from fractions import Fraction as Fr

import torch

from ..plan import Rows
from .base import Method, Rational, chi, fraction_rows, refuse_alpha_zero_start, table

Row = tuple[tuple[Rational, ...], ...]  # per earlier stage j: coefficients of chi_1, chi_2, ...


@table
class ExponentialRK(Method):
    """Explicit exponential RK table in lambda-time; see the module docstring. Consistency (every
    row exact for a constant output): in each row the chi_1 coefficients sum to 1 and those of
    chi_l, l >= 2, to 0."""

    c: tuple[Rational, ...] = (Fr(0),)
    a: tuple[Row, ...] = ()  # a[i-1] is the row of stage i >= 1
    b: Row = ((Fr(1),),)

    def __post_init__(self):
        super().__post_init__()
        for what in ("c", "a", "b"):
            object.__setattr__(self, what, fraction_rows(self.name, what, getattr(self, what)))
        s = len(self.c)
        if s < 1 or self.c[0] != 0:
            raise ValueError(f"{self.name}: c must start with 0 (the first stage is the step start), got {self.c}")
        if any(not 0 <= ci <= 1 for ci in self.c):
            raise ValueError(f"{self.name}: every node c_i must lie in [0, 1] (inside the step), got {self.c}")
        if len(self.a) != s - 1 or any(len(row) != i + 1 for i, row in enumerate(self.a)) or len(self.b) != s:
            raise ValueError(f"{self.name}: a must have rows of lengths 1..{s - 1} and b length {s}")
        for i, row in enumerate((*self.a, self.b)):
            where = f"row {i + 1} of a" if i < s - 1 else "b"
            for l in range(max(len(cf) for cf in row)):
                total = sum(cf[l] for cf in row if len(cf) > l)
                if total != (1 if l == 0 else 0):
                    raise ValueError(
                        f"{self.name}: the chi_{l + 1} weights of {where} sum to {total}, not "
                        f"{1 if l == 0 else 0} (the row must be exact for a constant output)"
                    )
        if self.order > s:
            raise ValueError(f"{self.name}: order {self.order} exceeds the number of stages {s}")

    @property
    def calls_per_step(self) -> int:
        return len(self.c)

    @property
    def options(self) -> tuple[str, ...]:
        """A one-stage table is first order on every step, so ``lower_order_final`` leaves its plan
        unchanged: it accepts the option, as the one-output multistep names aliased to it did."""
        return ("lower_order_final",) if len(self.c) == 1 else ()

    def derivation(self, max_order=None, budget=None):
        """Hochbruck-Ostermann stiff order conditions
        ([`odesolve.analysis.symbolic.erk`][odesolve.analysis.symbolic.erk])."""
        from ..analysis.symbolic.erk import stiff_order_conditions

        return stiff_order_conditions(self, max_order, budget)

    def _weights(self, row: Row, h: torch.Tensor, c: Fr, cache: dict) -> list:
        """a_ij(c h) of one row for the steps h, as float64 tensors."""
        out = []
        for coeffs in row:
            w = torch.zeros_like(h)
            for l, A in enumerate(coeffs):
                if A:
                    if (l, c) not in cache:
                        cache[l, c] = chi(l + 1, float(c) * h, self.prediction)
                    w = w + float(A) * cache[l, c]
            out.append(w)
        return out

    def _rows(self, g, lower_order_final: bool = False) -> Rows:
        refuse_alpha_zero_start(self, g)
        return singlestep_rows(self, g, ~g.singular)  # DDIM, exact at both singular ends, on singular steps

    def stage_rows(self, rows: Rows, g, n: torch.Tensor, first: torch.Tensor) -> list[torch.Tensor]:
        """The rows of regular steps n whose first call (already made, on the state) is ``first``:
        the other stages' calls, their inputs and the update. Returns the lambda of every stage
        (multistep tables that warm up with this one use the stages as interpolation nodes)."""
        x0 = self.prediction == "x0"
        lam0, h = g.lam[n], g.h[n]
        lin0 = g.log_sigma[n] if x0 else g.log_alpha[n]
        cache: dict = {}
        lams = [lam0]
        for i, row in enumerate(self.a, start=1):
            lam_i = lam0 + float(self.c[i]) * h
            t_i, la_i, ls_i = g.at_lambda(lam_i)
            rows.call(first + i, n, t_i)
            rows.input_state(first + i, torch.exp((ls_i if x0 else la_i) - lin0))
            scale = torch.exp(la_i) if x0 else -torch.exp(ls_i)
            for j, w in enumerate(self._weights(row, h, self.c[i], cache)):
                rows.input(first + i, first + j, scale * w)
            lams.append(lam_i)
        last = first + len(self.c) - 1
        rows.update_state(last, g.ratio(n, self.prediction))
        scale = g.scale(n + 1, self.prediction)
        for j, w in enumerate(self._weights(self.b, h, Fr(1), cache)):
            rows.update(last, first + j, scale * w)
        return lams


def singlestep_rows(table, g, staged: torch.Tensor) -> Rows:
    """Rows of a singlestep table (``c`` nodes, ``stage_rows``): step n makes ``len(table.c)`` calls
    where ``staged[n]``, and elsewhere one call and the first-order (DDIM) step."""
    n = torch.arange(g.steps)
    staged = staged & (len(table.c) > 1)
    counts = torch.where(staged, len(table.c), 1)
    first = torch.cumsum(counts, 0) - counts
    rows = Rows(int(counts.sum()))
    rows.call(first, n, g.t[:-1])
    ddim_rows(rows, g, n[~staged], first[~staged], table.prediction)
    table.stage_rows(rows, g, n[staged], first[staged])
    return rows


def ddim_rows(rows: Rows, g, n: torch.Tensor, k: torch.Tensor, prediction: str):
    """Steps n take the first-order (DDIM) update from their call k."""
    state, w = g.ddim(n, prediction)
    rows.update_state(k, state)
    rows.update(k, k, w)


h2 = Fr(1, 2)
DDIM = ExponentialRK(
    "ddim",
    order=1,
    prediction="x0",
    c=(Fr(0),),
    a=(),
    b=((Fr(1),),),
    paper="Song, Meng & Ermon, DDIM, ICLR 2021; = DPM-Solver-1 (Lu et al. 2022), exponential Euler",
)
DPM_SOLVER_1 = ExponentialRK(
    "dpm-solver-1",
    order=1,
    prediction="eps",
    c=(Fr(0),),
    a=(),
    b=((Fr(1),),),
    paper="Lu et al., DPM-Solver, NeurIPS 2022, eq. 3.7 (eps-prediction form of DDIM)",
)
# DPM-Solver-2 with r1 = 1/2 (Lu et al. 2022, Alg. 4): u = DDIM to the lambda-midpoint, then
# x_t = alpha_t/alpha_s x_s - sigma_t (e^h - 1) eps(u): the eps_s weight (1 - 1/(2 r1)) vanishes.
DPM_SOLVER_2 = ExponentialRK(
    "dpm-solver-2",
    order=2,
    prediction="eps",
    c=(Fr(0), h2),
    a=(((Fr(1),),),),
    b=((Fr(0),), (Fr(1),)),
    paper="Lu et al., DPM-Solver, NeurIPS 2022, Alg. 4 (r1 = 1/2)",
)
DPMPP_2S = ExponentialRK(
    "dpmpp-2s",
    order=2,
    prediction="x0",
    c=(Fr(0), h2),
    a=(((Fr(1),),),),
    b=((Fr(0),), (Fr(1),)),
    paper="Lu et al., DPM-Solver++, 2022, Alg. 1 (r = 1/2)",
)
# DPM-Solver-3 (Lu et al. 2022, Alg. 5) with r1 = 1/3, r2 = 2/3:
#   u2 uses (r2/r1) chi_2(r2 h) (eps(u1) - eps_s); x_t uses (1/r2) chi_2(h) (eps(u2) - eps_s).
_R1, _R2 = Fr(1, 3), Fr(2, 3)
_DPM3 = {
    "c": (Fr(0), _R1, _R2),
    "a": (((Fr(1),),), ((Fr(1), -_R2 / _R1), (Fr(0), _R2 / _R1))),
    "b": ((Fr(1), -1 / _R2), (Fr(0),), (Fr(0), 1 / _R2)),
}
DPM_SOLVER_3 = ExponentialRK(
    "dpm-solver-3",
    order=3,
    prediction="eps",
    **_DPM3,
    paper="Lu et al., DPM-Solver, NeurIPS 2022, Alg. 5 (r1 = 1/3, r2 = 2/3)",
)
DPMPP_3S = ExponentialRK(
    "dpmpp-3s",
    order=3,
    prediction="x0",
    **_DPM3,
    paper="Lu et al., DPM-Solver++, 2022, App. (singlestep 3rd order, x0-prediction form)",
)

TABLES = [DDIM, DPM_SOLVER_1, DPM_SOLVER_2, DPMPP_2S, DPM_SOLVER_3, DPMPP_3S]
