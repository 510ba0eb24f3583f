r"""Stiff order conditions of exponential Runge-Kutta tables (Hochbruck & Ostermann 2005).

See [`odesolve.analysis.symbolic`][odesolve.analysis.symbolic] for the conditions and how the orders are read from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction as Fr

import sympy as sp

from ._core import MAX_ERK_ORDER, SymbolicLimitError, _Derivation, _zero_numeric, budget_for
from .series import Series, phi

__all__ = ["Condition", "ERKDerivation", "stiff_order_conditions"]


@dataclass(frozen=True)
class Condition:
    """One order condition: its number, tree order ``q``, formula, residual (sympy, in h), whether it
    holds identically in h (stiff sense), and the valuation of the residual in h."""

    number: str
    q: int
    formula: str
    residual: sp.Expr
    identically: bool
    valuation: float  # math.inf when identically zero

    @property
    def local_power(self) -> float:
        """The power of h this condition contributes to the local error."""
        return self.q + self.valuation


@dataclass(frozen=True)
class ERKDerivation(_Derivation):
    """Stiff order conditions of an exponential RK table (see the module docstring)."""

    table: object = None
    zeta: sp.Expr = None  # -h (x0 prediction) or +h (eps prediction)
    b: tuple = ()  # b_i(zeta), sympy
    a: tuple = ()  # rows of a_ij(zeta), sympy
    conditions: tuple[Condition, ...] = ()
    row_sum: tuple[bool, ...] = ()  # (C) identically, per stage

    @property
    def classical_order(self) -> int:
        """``min_r (q_r + v_r) - 1``, capped at 4 (conditions of order 5 are not checked)."""
        powers = [c.local_power for c in self.conditions]
        p = int(min(min(powers) - 1, MAX_ERK_ORDER)) if powers else MAX_ERK_ORDER
        return p if all(self.row_sum) else min(p, 2)

    @property
    def stiff_order(self) -> int:
        """The largest p <= 4 such that every condition of order <= p holds identically."""
        if not all(self.row_sum):
            return min(1, self.classical_order)
        p = 0
        for q in range(1, MAX_ERK_ORDER + 1):
            if all(c.identically for c in self.conditions if c.q == q):
                p = q
            else:
                break
        return p

    @property
    def order(self) -> int:
        return self.classical_order

    def summary(self) -> str:
        t = self.table
        lines = [
            (
                f"{t.name}: exponential RK, {len(t.c)} stages, c = {[str(c) for c in t.c]}, {t.prediction} "
                f"(zeta = {self.zeta})"
            ),
            f"  classical order {self.classical_order}, stiff order {self.stiff_order} (declared {t.order})",
        ]
        if not all(self.row_sum):
            bad = [i + 1 for i, ok in enumerate(self.row_sum) if not ok]
            lines.append(f"  row-sum condition (C) fails for stages {bad}: orders above 2 are not certified")
        for c in self.conditions:
            if c.identically:
                st = "holds identically"
            else:
                st = f"residual ~ h^{c.valuation}  (local error h^{c.local_power})"
            lines.append(f"  ({c.number}) order {c.q}: {c.formula:<38} {st}")
        return "\n".join(lines)


def stiff_order_conditions(table, max_order: int | None = None, budget=None) -> ERKDerivation:
    """The conditions of ``table`` (an [`ExponentialRK`][odesolve.methods.exponential_rk.ExponentialRK]) up to
    ``max_order`` (<= 4)."""
    max_order = max_order or MAX_ERK_ORDER
    budget = budget_for(budget, f"derive({table.name!r})")
    if max_order > MAX_ERK_ORDER:
        raise SymbolicLimitError(
            f"the stiff order conditions are implemented up to order {MAX_ERK_ORDER} "
            f"(Hochbruck & Ostermann 2005, 8 conditions); order {max_order} needs the 16 "
            "conditions of order 5 (Luan & Ostermann 2014), which this module does not "
            "derive. Use numeric_order for the measured order."
        )
    s = len(table.c)
    if s > 8:
        raise SymbolicLimitError(f"{table.name}: {s} stages exceed the symbolic limit of 8")
    h = sp.Symbol("h", positive=True)
    sign = -1 if table.prediction == "x0" else 1
    zeta = sign * h
    c = [Fr(v) for v in table.c]
    A = {}  # (i, j) -> list of chi coefficients, stage i >= 1
    for i, row in enumerate(table.a, start=1):
        for j, coeffs in enumerate(row):
            A[i, j] = [Fr(v) for v in coeffs]
    B = [[Fr(v) for v in coeffs] for coeffs in table.b]

    # exact series in h and sympy forms
    def a_ser(i, j):
        if i == 0 or (i, j) not in A:
            return Series.const(0)
        return sum((Series.phi(l + 1, sign * c[i]) * (Av * c[i]) for l, Av in enumerate(A[i, j])), Series.const(0))

    def a_sym(i, j):
        if (i, j) not in A:
            return sp.Integer(0)
        return sum(
            (
                sp.Rational(Av) * sp.Rational(c[i]) * phi(l + 1, sp.Rational(c[i]) * zeta)
                for l, Av in enumerate(A[i, j])
            ),
            sp.Integer(0),
        )

    b_ser = [sum((Series.phi(l + 1, Fr(sign)) * Bv for l, Bv in enumerate(B[i])), Series.const(0)) for i in range(s)]
    b_sym = [sum((sp.Rational(Bv) * phi(l + 1, zeta) for l, Bv in enumerate(B[i])), sp.Integer(0)) for i in range(s)]
    a_rows = tuple(tuple(a_sym(i, j) for j in range(i)) for i in range(1, s))

    def psi_j(j):
        ser = Series.phi(j, Fr(sign)) - sum(
            (b_ser[i] * (c[i] ** (j - 1) / math.factorial(j - 1)) for i in range(s)), Series.const(0)
        )
        sym = phi(j, zeta) - sum(
            (b_sym[i] * sp.Rational(c[i] ** (j - 1), math.factorial(j - 1)) for i in range(s)), sp.Integer(0)
        )
        return ser, sym

    def psi_ji(j, i):
        ser = Series.phi(j, sign * c[i]) * (c[i] ** j) - sum(
            (a_ser(i, k) * (c[k] ** (j - 1) / math.factorial(j - 1)) for k in range(i)), Series.const(0)
        )
        sym = phi(j, sp.Rational(c[i]) * zeta) * sp.Rational(c[i] ** j) - sum(
            (a_sym(i, k) * sp.Rational(c[k] ** (j - 1), math.factorial(j - 1)) for k in range(i)), sp.Integer(0)
        )
        return ser, sym

    conds = []

    def add(number, q, formula, ser, sym):
        budget.check()
        ident = ser.valuation == math.inf and _zero_numeric(sym, h)
        conds.append(Condition(number, q, formula, sym, ident, math.inf if ident else ser.valuation))

    row_sum = tuple(psi_ji(1, i)[0].valuation == math.inf and _zero_numeric(psi_ji(1, i)[1], h) for i in range(s))
    for j, q in ((1, 1), (2, 2)):
        if q <= max_order:
            add(str(j), q, f"psi_{j} = 0", *psi_j(j))
    if not all(row_sum) and max_order >= 2:
        p1 = [psi_ji(1, i) for i in range(s)]
        add(
            "C",
            2,
            "sum_i b_i J psi_{1,i} = 0",
            sum((b_ser[i] * p1[i][0] for i in range(s)), Series.const(0)),
            sum((b_sym[i] * p1[i][1] for i in range(s)), sp.Integer(0)),
        )
    if max_order >= 3:
        add("3", 3, "psi_3 = 0", *psi_j(3))
        p2 = [psi_ji(2, i) for i in range(s)]
        add(
            "4",
            3,
            "sum_i b_i J psi_{2,i} = 0",
            sum((b_ser[i] * p2[i][0] for i in range(s)), Series.const(0)),
            sum((b_sym[i] * p2[i][1] for i in range(s)), sp.Integer(0)),
        )
    if max_order >= 4:
        add("5", 4, "psi_4 = 0", *psi_j(4))
        p3 = [psi_ji(3, i) for i in range(s)]
        add(
            "6",
            4,
            "sum_i b_i J psi_{3,i} = 0",
            sum((b_ser[i] * p3[i][0] for i in range(s)), Series.const(0)),
            sum((b_sym[i] * p3[i][1] for i in range(s)), sp.Integer(0)),
        )
        inner_ser = [sum((a_ser(i, k) * p2[k][0] for k in range(i)), Series.const(0)) for i in range(s)]
        inner_sym = [sum((a_sym(i, k) * p2[k][1] for k in range(i)), sp.Integer(0)) for i in range(s)]
        add(
            "7",
            4,
            "sum_i b_i J sum_k a_ik J psi_{2,k} = 0",
            sum((b_ser[i] * inner_ser[i] for i in range(s)), Series.const(0)),
            sum((b_sym[i] * inner_sym[i] for i in range(s)), sp.Integer(0)),
        )
        add(
            "8",
            4,
            "sum_i b_i c_i K psi_{2,i} = 0",
            sum((b_ser[i] * p2[i][0] * c[i] for i in range(s)), Series.const(0)),
            sum((b_sym[i] * sp.Rational(c[i]) * p2[i][1] for i in range(s)), sp.Integer(0)),
        )
    return ERKDerivation(table.name, table, zeta, tuple(b_sym), a_rows, tuple(conds), row_sum)
