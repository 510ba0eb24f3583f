r"""Symbolic analysis of method tables: :func:`derive`.

- **Exponential Adams** (:class:`~odesolve.methods.ExponentialMultistep` in lambda, q nodes): the
  coefficients in closed form as functions of the step ``h``, the node ratios ``r_m = (lambda_{n-m} -
  lambda_n)/h`` and the phi-functions, ``c = V^{-T} w`` with ``V_{mi} = r_m^i``,
  ``w_i = i! h phi_{i+1}(zeta)`` (``zeta = -h`` data form, ``+h`` noise form; THEORY.md 1.2, 1.4, 1.5),
  the published modifications (midpoint / B(h) = h weight for two nodes, the halved second
  difference of 3M), the UniC corrector, their exactness degrees, and the global order from the rule
  of :mod:`~odesolve.analysis.numeric` (warm-up and corrector included). ``rho``-interpolating tables
  (``lms-k``) give variable-step Adams-Bashforth in rho, AB-k in the equal-step limit.
- **Exponential Runge-Kutta** (:class:`~odesolve.methods.ExponentialRK`): the stiff order conditions of
  Hochbruck & Ostermann (2005, SIAM J. Numer. Anal. 43, "Explicit exponential Runge-Kutta methods for
  semilinear parabolic problems", Table 5.1; also Acta Numerica 19 (2010), Table 2.2) up to order 4,
  for ``u' = -A u + g(t, u)``. In lambda-time the data form is ``d(x/alpha)/dlambda = -(x/alpha) + x0``
  (A = 1) and the noise form ``d(x/sigma)/dlambda = (x/sigma) - eps`` (A = -1): the linear part is a
  scalar, so J = g_u commutes with it and every condition is a scalar identity in ``zeta = -hA``. With
  ``b_i(zeta) = sum_l B_il phi_l(zeta)``, ``a_ij(zeta) = sum_l A_ijl c_i phi_l(c_i zeta)`` and

      psi_j(zeta)    = phi_j(zeta) - sum_i b_i(zeta) c_i^{j-1}/(j-1)!
      psi_{j,i}(zeta) = phi_j(c_i zeta) c_i^j - sum_k a_ik(zeta) c_k^{j-1}/(j-1)!

  the conditions are: (1) psi_1 = 0; (2) psi_2 = 0; (3) psi_3 = 0; (4) sum_i b_i J psi_{2,i} = 0;
  (5) psi_4 = 0; (6) sum_i b_i J psi_{3,i} = 0; (7) sum_i b_i J sum_k a_ik J psi_{2,k} = 0;
  (8) sum_i b_i c_i K psi_{2,i} = 0, assuming the row-sum condition (C) psi_{1,i} = 0. Condition r of
  order q_r enters the local error as ``h^{q_r}`` times its residual, so a residual of valuation
  ``v_r`` in h costs ``h^{q_r + v_r}``: the *classical* order is ``min_r (q_r + v_r) - 1`` (<= 4 here),
  the *stiff* order the largest p whose conditions hold identically in ``zeta`` (uniformly in large
  steps; RES, Zhang et al. 2023, fixes this for DPM-Solver++(2S)).
- **Classical Runge-Kutta** (:class:`~odesolve.methods.RungeKutta`): the order conditions
  ``b^T Phi(t) = 1/gamma(t)`` over rooted trees (Butcher), generated up to order 8, and the stability
  function ``R(z) = 1 + z b^T (I - zA)^{-1} 1``.
- **Linear multistep** (:class:`~odesolve.analysis.lmm.LinearMultistep`, and the equal-step Adams
  formulas inside :class:`~odesolve.methods.FixedAdams`): the classical conditions ``C_q = 0``, with the
  warm-up and the grid class (uniform / smooth / arbitrary) in the global order.

Requests beyond what the implementation or the time budget (``TIME_LIMIT`` seconds, or
``timeout=``) allows are refused with :class:`SymbolicLimitError` before the work starts (cost
estimate) or when the budget runs out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction as Fr

import numpy as np
import sympy as sp

from ..methods import ExponentialMultistep, ExponentialRK, FixedAdams, RungeKutta
from .lmm import LinearMultistep, adams_bashforth

__all__ = [
    "TIME_LIMIT",
    "AdamsDerivation",
    "Condition",
    "ERKDerivation",
    "FixedAdamsDerivation",
    "LMMDerivation",
    "RKDerivation",
    "SymbolicLimitError",
    "derive",
    "phi",
    "phi_numpy",
    "rooted_trees",
]

TIME_LIMIT = 30.0  # seconds a symbolic derivation may take
MAX_ERK_ORDER = 4
MAX_RK_ORDER = 8
MAX_ADAMS_NODES = 6
SERIES_TERMS = 10


class SymbolicLimitError(ValueError):
    """A symbolic request beyond what is implemented or affordable in the time budget."""


class _Budget:
    def __init__(self, timeout, what):
        self.limit = TIME_LIMIT if timeout is None else float(timeout)
        self.t0, self.what = time.perf_counter(), what

    def check(self):
        if time.perf_counter() - self.t0 > self.limit:
            raise SymbolicLimitError(f"{self.what} exceeded the symbolic time budget of {self.limit:g} s "
                                     "(odesolve.analysis.symbolic.TIME_LIMIT or timeout=); use numeric_order")


# -- phi-functions ------------------------------------------------------------------------------------

class phi(sp.Function):
    """``phi(k, z) = sum_n z^n / (n + k)!``; ``phi(0, z) = e^z``, ``phi(k+1, z) = (phi(k, z) - 1/k!)/z``."""

    nargs = 2

    @classmethod
    def eval(cls, k, z):
        if k.is_Integer and k == 0:
            return sp.exp(z)
        if z.is_zero and k.is_Integer:
            return sp.Rational(1, math.factorial(int(k)))

    def _eval_rewrite_as_exp(self, k, z, **kw):
        k = int(k)
        return (sp.exp(z) - sum(z**j / sp.factorial(j) for j in range(k))) / z**k

    def _latex(self, printer):
        return rf"\varphi_{{{printer._print(self.args[0])}}}\left({printer._print(self.args[1])}\right)"

    def _sympystr(self, printer):
        return f"phi{self.args[0]}({printer._print(self.args[1])})"

    def _eval_evalf(self, prec):
        import mpmath

        k, z = int(self.args[0]), self.args[1]._to_mpmath(prec)
        with mpmath.workprec(prec + 60):
            val = _phi_mp(k, z)
        return sp.Expr._from_mpmath(val, prec)


def _phi_mp(k: int, z):
    import mpmath

    if abs(z) < 1:
        return mpmath.nsum(lambda n: z**n / mpmath.factorial(n + k), [0, mpmath.inf])
    v = mpmath.exp(z)
    for j in range(k):
        v = (v - 1 / mpmath.factorial(j)) / z
    return v


def phi_numpy(k, z):
    """phi_k(z) in float64 to a few ulps: the Taylor series (80 terms) for |z| < 3 (5 when k > 4),
    the recurrence ``phi_{j+1} = (phi_j - 1/j!)/z`` from ``e^z`` beyond, where it is stable."""
    k = int(k)
    z = np.asarray(z, dtype=np.float64)
    if k == 0:
        return np.exp(z)
    thr = 3.0 if k <= 4 else 5.0
    small = np.abs(z) < thr
    zs = np.where(small, z, 0.0)
    ser = np.full_like(zs, 1.0 / math.factorial(k + 79))
    for n in range(78, -1, -1):  # Horner
        ser = ser * zs + 1.0 / math.factorial(n + k)
    zb = np.where(small, thr, z)
    rec = np.exp(zb)
    for j in range(k):
        rec = (rec - 1.0 / math.factorial(j)) / zb
    return np.where(small, ser, rec)


# -- exact truncated power series in h -------------------------------------------------------------

class _Series:
    """Truncated power series in h with Fraction coefficients."""

    __slots__ = ("c",)

    def __init__(self, c):
        self.c = list(c)[:SERIES_TERMS]
        self.c += [Fr(0)] * (SERIES_TERMS - len(self.c))

    @staticmethod
    def const(v):
        return _Series([Fr(v)])

    @staticmethod
    def phi(k: int, scale: Fr):
        """phi_k(scale * h)."""
        return _Series([Fr(scale) ** n / math.factorial(n + k) for n in range(SERIES_TERMS)])

    def __add__(self, o):
        o = o if isinstance(o, _Series) else _Series.const(o)
        return _Series([a + b for a, b in zip(self.c, o.c)])

    __radd__ = __add__

    def __neg__(self):
        return _Series([-a for a in self.c])

    def __sub__(self, o):
        return self + (-(o if isinstance(o, _Series) else _Series.const(o)))

    def __mul__(self, o):
        if not isinstance(o, _Series):
            return _Series([a * Fr(o) for a in self.c])
        out = [Fr(0)] * SERIES_TERMS
        for i, a in enumerate(self.c):
            if a:
                for j in range(SERIES_TERMS - i):
                    out[i + j] += a * o.c[j]
        return _Series(out)

    __rmul__ = __mul__

    @property
    def valuation(self) -> float:
        for i, a in enumerate(self.c):
            if a != 0:
                return i
        return math.inf

    def leading(self):
        v = self.valuation
        return (v, self.c[v]) if v != math.inf else (v, Fr(0))


# -- exponential Runge-Kutta -------------------------------------------------------------------------

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
class _Derivation:
    name: str

    @property
    def order(self) -> int:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError

    def __str__(self):
        return self.summary()


@dataclass(frozen=True)
class ERKDerivation(_Derivation):
    """Stiff order conditions of an exponential RK table (see the module docstring)."""

    table: ExponentialRK = None
    zeta: sp.Expr = None  # -h (data form) or +h (noise form)
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
        lines = [(f"{t.name}: exponential RK, {len(t.c)} stages, c = {[str(c) for c in t.c]}, {t.form} form "
                 f"(zeta = {self.zeta})"),
                 f"  classical order {self.classical_order}, stiff order {self.stiff_order} (declared {t.order})"]
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


def _erk(table: ExponentialRK, max_order: int, budget: _Budget) -> ERKDerivation:
    if max_order > MAX_ERK_ORDER:
        raise SymbolicLimitError(f"the stiff order conditions are implemented up to order {MAX_ERK_ORDER} "
                                 f"(Hochbruck & Ostermann 2005, 8 conditions); order {max_order} needs the 16 "
                                 "conditions of order 5 (Luan & Ostermann 2014), which this module does not "
                                 "derive. Use numeric_order for the measured order.")
    s = len(table.c)
    if s > 8:
        raise SymbolicLimitError(f"{table.name}: {s} stages exceed the symbolic limit of 8")
    h = sp.Symbol("h", positive=True)
    sign = -1 if table.form == "data" else 1
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
            return _Series.const(0)
        return sum((_Series.phi(l + 1, sign * c[i]) * (Av * c[i]) for l, Av in enumerate(A[i, j])), _Series.const(0))

    def a_sym(i, j):
        if (i, j) not in A:
            return sp.Integer(0)
        return sum((sp.Rational(Av) * sp.Rational(c[i]) * phi(l + 1, sp.Rational(c[i]) * zeta)
                    for l, Av in enumerate(A[i, j])), sp.Integer(0))

    b_ser = [sum((_Series.phi(l + 1, Fr(sign)) * Bv for l, Bv in enumerate(B[i])), _Series.const(0)) for i in range(s)]
    b_sym = [sum((sp.Rational(Bv) * phi(l + 1, zeta) for l, Bv in enumerate(B[i])), sp.Integer(0)) for i in range(s)]
    a_rows = tuple(tuple(a_sym(i, j) for j in range(i)) for i in range(1, s))

    def psi_j(j):
        ser = _Series.phi(j, Fr(sign)) - sum((b_ser[i] * (c[i] ** (j - 1) / math.factorial(j - 1)) for i in range(s)),
                                             _Series.const(0))
        sym = phi(j, zeta) - sum((b_sym[i] * sp.Rational(c[i] ** (j - 1), math.factorial(j - 1)) for i in range(s)),
                                 sp.Integer(0))
        return ser, sym

    def psi_ji(j, i):
        ser = _Series.phi(j, sign * c[i]) * (c[i] ** j) - sum(
            (a_ser(i, k) * (c[k] ** (j - 1) / math.factorial(j - 1)) for k in range(i)), _Series.const(0))
        sym = phi(j, sp.Rational(c[i]) * zeta) * sp.Rational(c[i] ** j) - sum(
            (a_sym(i, k) * sp.Rational(c[k] ** (j - 1), math.factorial(j - 1)) for k in range(i)), sp.Integer(0))
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
        add("C", 2, "sum_i b_i J psi_{1,i} = 0", sum((b_ser[i] * p1[i][0] for i in range(s)), _Series.const(0)),
            sum((b_sym[i] * p1[i][1] for i in range(s)), sp.Integer(0)))
    if max_order >= 3:
        add("3", 3, "psi_3 = 0", *psi_j(3))
        p2 = [psi_ji(2, i) for i in range(s)]
        add("4", 3, "sum_i b_i J psi_{2,i} = 0", sum((b_ser[i] * p2[i][0] for i in range(s)), _Series.const(0)),
            sum((b_sym[i] * p2[i][1] for i in range(s)), sp.Integer(0)))
    if max_order >= 4:
        add("5", 4, "psi_4 = 0", *psi_j(4))
        p3 = [psi_ji(3, i) for i in range(s)]
        add("6", 4, "sum_i b_i J psi_{3,i} = 0", sum((b_ser[i] * p3[i][0] for i in range(s)), _Series.const(0)),
            sum((b_sym[i] * p3[i][1] for i in range(s)), sp.Integer(0)))
        inner_ser = [sum((a_ser(i, k) * p2[k][0] for k in range(i)), _Series.const(0)) for i in range(s)]
        inner_sym = [sum((a_sym(i, k) * p2[k][1] for k in range(i)), sp.Integer(0)) for i in range(s)]
        add("7", 4, "sum_i b_i J sum_k a_ik J psi_{2,k} = 0",
            sum((b_ser[i] * inner_ser[i] for i in range(s)), _Series.const(0)),
            sum((b_sym[i] * inner_sym[i] for i in range(s)), sp.Integer(0)))
        add("8", 4, "sum_i b_i c_i K psi_{2,i} = 0",
            sum((b_ser[i] * p2[i][0] * c[i] for i in range(s)), _Series.const(0)),
            sum((b_sym[i] * sp.Rational(c[i]) * p2[i][1] for i in range(s)), sp.Integer(0)))
    return ERKDerivation(table.name, table, zeta, tuple(b_sym), a_rows, tuple(conds), row_sum)


def _zero_numeric(expr, h, points=(0.37, 1.3, 2.9, 7.1)) -> bool:
    """expr == 0 at several h, at 60 digits (the series already vanishes to order SERIES_TERMS)."""
    if expr == 0:
        return True
    for v in points:
        val = sp.N(expr.subs(h, sp.Rational(str(v))), 60)
        if abs(val) > sp.Float("1e-40"):
            return False
    return True


# -- exponential Adams ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdamsDerivation(_Derivation):
    """Closed-form coefficients of an exponential Adams step (see the module docstring).

    ``predictor[j]`` multiplies the output at node ``r_j`` (``r_0 = 0`` the step start, ``r_j =
    (lambda_{n-j} - lambda_n)/h`` earlier nodes) and is the coefficient per unit of the factor in front
    of the integral (``alpha_{n+1}`` data form, ``-sigma_{n+1}`` noise form); ``corrector`` (UniC) adds the
    node ``r = 1`` first. ``variable="rho"`` tables integrate a Lagrange polynomial in rho exactly: the
    step is ``drho`` and the coefficients are pure rational functions of the ratios."""

    table: ExponentialMultistep = None
    h: sp.Symbol = None
    r: tuple = ()
    predictor: tuple = ()
    corrector: tuple | None = None
    degrees: dict = field(default_factory=dict)  # step kind -> asymptotic exactness degree
    rule: tuple = ()  # (p_int, p_boundary)

    @property
    def order(self) -> int:
        p_int, p_b = self.rule
        return min(p_int + 1, p_b + 2)

    def lambdify(self, which: str = "predictor", nodes: int | None = None) -> Callable:
        """A numpy function ``f(h, r_1, ..., r_{q-1}) -> list of coefficients`` (phi evaluated by
        :func:`phi_numpy`); ``which`` is ``"predictor"`` or ``"corrector"``, ``nodes`` another node count
        (the warm-up steps use fewer)."""
        coeffs = self.coefficients(which, nodes)
        n_r = len(coeffs) - (2 if which == "corrector" else 1)
        args = [self.h, *sp.symbols(f"r1:{n_r + 1}")]
        return sp.lambdify(args, list(coeffs), modules=[{"phi": phi_numpy}, "numpy"])

    def coefficients(self, which: str = "predictor", nodes: int | None = None) -> tuple:
        q = nodes or self.table.nodes
        if which == "predictor":
            return self.predictor if q == self.table.nodes else _adams_coefficients(self.table, q, False)[0]
        if which == "corrector":
            return (self.corrector if q == self.table.nodes and self.corrector is not None
                    else _adams_coefficients(self.table, q, True)[0])
        raise ValueError(f"which must be 'predictor' or 'corrector', got {which!r}")

    def summary(self) -> str:
        t = self.table
        kind = f"exponential Adams, {t.nodes} nodes in {t.variable}, {t.form} form"
        if t.corrector:
            kind += ", UniC corrector (PEC)"
        lines = [f"{t.name}: {kind}", (f"  order {self.order} (declared {t.order}) from the rule min(p_int + 1, "
                 f"p_b + 2) with p_int = {self.rule[0]}, p_b = {self.rule[1]}")]
        for k, v in self.degrees.items():
            lines.append(f"  degree {v}: {k}")
        names = ", ".join(f"c_{j}" for j in range(len(self.predictor)))
        lines.append(f"  predictor ({names}) =")
        for j, e in enumerate(self.predictor):
            lines.append(f"    c_{j} = {e}")
        if self.corrector is not None:
            lines.append("  corrector (node r = 1 first) =")
            for j, e in enumerate(self.corrector):
                lines.append(f"    c_{j} = {e}")
        return "\n".join(lines)


def _adams_coefficients(table: ExponentialMultistep, q: int, corrector: bool):
    """(sympy coefficients, h, r symbols) of the q-node predictor (or the (q+1)-node corrector)."""
    h = sp.Symbol("h", positive=True)
    r = sp.symbols(f"r1:{max(q, 2) + 1}")
    nodes = [sp.Integer(0), *r[: q - 1]]
    if corrector:
        nodes = [sp.Integer(1), *nodes]
    m = len(nodes)
    if table.variable == "rho":
        # Lagrange in u = (rho - rho_n)/drho at the nodes; its integral over u in [0, 1], times drho (= h)
        u = sp.Symbol("u")
        coeffs = []
        for j, xj in enumerate(nodes):
            others = [x for k, x in enumerate(nodes) if k != j]
            num = sp.Poly(sp.Mul(*[(u - x) for x in others]), u).all_coeffs()[::-1]
            den = sp.Mul(*[(xj - x) for x in others])
            coeffs.append(h * sp.factor(sp.Add(*[num[i] / (i + 1) for i in range(len(num))]) / den))
        return tuple(coeffs), h, r
    sign = -1 if table.form == "data" else 1
    zeta = sign * h
    w = [sp.factorial(i) * h * phi(i + 1, zeta) for i in range(m)]
    if m == 2 and table.two_node != "exact":
        w[1] = h * phi(1, zeta) / 2 if table.two_node == "midpoint" else h / 2
    if m == 3 and table.half_second_difference:
        w[2] = w[2] / 2
    # c = V^{-T} w in closed form: c_j = sum_i L_ji w_i with L_ji the coefficient of tau^i in the
    # Lagrange basis polynomial l_j(tau) of the nodes (sum_j l_j(tau) r_j^k = tau^k)
    tau = sp.Symbol("tau")
    c = []
    for j in range(m):
        others = [nodes[k] for k in range(m) if k != j]
        num = sp.Poly(sp.Mul(*[(tau - x) for x in others]), tau).all_coeffs()[::-1]  # lowest power first
        den = sp.Mul(*[(nodes[j] - x) for x in others])
        c.append(sp.Add(*[sp.factor(num[i] / den) * w[i] for i in range(m)]))
    return tuple(c), h, r


def _adams_degree(table: ExponentialMultistep, q: int, corrector: bool, rng) -> int:
    """Asymptotic exactness degree of the q-node predictor (or corrector) for generic ratios: the
    largest p with defect(m_d) = O(h^{p+2-d}) for every monomial degree d (exact series in h)."""
    if table.variable == "rho":
        return q - 1 + int(corrector)
    sign = -1 if table.form == "data" else 1
    ratios, r = [], Fr(0)
    for _ in range(q - 1):
        r -= Fr(int(rng.integers(5, 21)), 10)  # earlier nodes, strictly decreasing, gaps in [0.5, 2]
        ratios.append(r)
    nodes = [Fr(0), *ratios]
    if corrector:
        nodes = [Fr(1), *nodes]
    m = len(nodes)

    def chi(l):  # chi_l(h) / h = phi_l(sign h), as a series; weights carry one more power of h
        return _Series.phi(l, Fr(sign))

    w = [chi(i + 1) * math.factorial(i) for i in range(m)]
    if m == 2 and table.two_node != "exact":
        w[1] = chi(1) * Fr(1, 2) if table.two_node == "midpoint" else _Series.const(Fr(1, 2))
    if m == 3 and table.half_second_difference:
        w[2] = w[2] * Fr(1, 2)
    c = []
    for j in range(m):  # c_j = sum_i L_ji w_i, L_ji the coefficients of the Lagrange basis polynomial l_j
        poly = [Fr(1)]
        den = Fr(1)
        for k in range(m):
            if k != j:
                poly = [Fr(0)] + poly
                for i in range(len(poly) - 1):
                    poly[i] -= nodes[k] * poly[i + 1]
                den *= nodes[j] - nodes[k]
        c.append(sum((w[i] * (poly[i] / den) for i in range(m)), _Series.const(0)))
    L = math.inf
    for d in range(m + 3):
        defect = sum((c[j] * nodes[j] ** d for j in range(m)), _Series.const(0)) - chi(d + 1) * math.factorial(d)
        # the defect of ((lambda - lambda_n)/h)^d is h * defect (weights are h * series)
        L = min(L, d + 1 + defect.valuation)
    return int(L) - 2


def _adams(table: ExponentialMultistep, budget: _Budget) -> AdamsDerivation:
    if table.variable == "t":
        raise SymbolicLimitError(f"{table.name} interpolates in the path's time t (DEIS tAB): its weights are "
                                 "path-dependent integrals with no closed form; use numeric_order, or the "
                                 "rho-interpolating lms-k (identical on EDM paths, where t = rho)")
    q = table.nodes
    if q + int(table.corrector) > MAX_ADAMS_NODES:
        raise SymbolicLimitError(f"{table.name}: {q + int(table.corrector)} nodes exceed the symbolic limit of "
                                 f"{MAX_ADAMS_NODES} (the Vandermonde inverse grows factorially)")
    pred, h, r = _adams_coefficients(table, q, False)
    budget.check()
    corr = _adams_coefficients(table, q, True)[0] if table.corrector else None
    budget.check()
    rng = np.random.default_rng(12345)
    degrees = {}
    # boundary: the first step (DDIM, or the warm-up table), the steps with fewer nodes, the last step
    if table.warmup is not None:
        wd = _erk(table.warmup, MAX_ERK_ORDER, budget)
        first = wd.classical_order - 1
        degrees[f"step 0: {table.warmup.name} warm-up (order {wd.classical_order})"] = first
        early_nodes = range(len(table.warmup.c) + 1, q)  # the warm-up's stages become nodes
    else:
        first = _pec_degree(table, 1, rng)
        degrees["step 0: DDIM" + (" + corrector" if table.corrector else "")] = first
        early_nodes = range(2, q)
    bnd = [first]
    for j, k in enumerate(early_nodes, start=1):
        d = _pec_degree(table, k, rng)
        degrees[f"step {j}: {k} nodes" + (" + corrector" if table.corrector else "")] = d
        bnd.append(d)
        budget.check()
    p_int = _pec_degree(table, q, rng)
    degrees[f"interior: {q} nodes" + (" + corrector" if table.corrector else "")] = p_int
    if table.corrector:
        last = _adams_degree(table, q, False, rng)
        degrees["last step: predictor only (no corrector)"] = last
        bnd.append(last)
    return AdamsDerivation(table.name, table, h, tuple(r[: q - 1]), pred, corr, degrees, (p_int, min(bnd)))


def _pec_degree(table, q, rng) -> int:
    """Degree of one step with q predictor nodes; with the UniC corrector min(p_C, p_P + 1) (the
    corrector sees the predicted point through one more weight of size h)."""
    p_pred = _adams_degree(table, q, False, rng)
    if not table.corrector:
        return p_pred
    return min(_adams_degree(table, q, True, rng), p_pred + 1)


# -- classical Runge-Kutta (Butcher trees) ---------------------------------------------------------

def rooted_trees(order: int) -> list[tuple]:
    """All rooted trees with ``order`` vertices (1, 1, 2, 4, 9, 20, 48, 115 of them), each a sorted
    tuple of its subtrees (the single vertex is ``()``): every tree of order n + 1 is a tree of order n
    with one more leaf."""
    if order < 1:
        return []
    level = {()}
    for _ in range(order - 1):
        level = {g for t in level for g in _grow(t)}
    return sorted(level, key=lambda t: (_height(t), t))


def _grow(t) -> set:
    out = {tuple(sorted(t + ((),)))}
    for i, u in enumerate(t):
        for g in _grow(u):
            out.add(tuple(sorted(t[:i] + (g,) + t[i + 1:])))
    return out


def _height(t) -> int:
    return 1 + max((_height(u) for u in t), default=0)


def _size(t) -> int:
    return 1 + sum(_size(u) for u in t)


def _gamma(t) -> int:
    g = _size(t)
    for u in t:
        g *= _gamma(u)
    return g


@dataclass(frozen=True)
class RKDerivation(_Derivation):
    """Order conditions of a classical (Butcher) table over rooted trees."""

    table: RungeKutta = None
    conditions: tuple = ()  # (tree, order, Phi, 1/gamma, satisfied)
    stability_function: sp.Expr = None
    checked_to: int = 0

    @property
    def order(self) -> int:
        p = 0
        for q in range(1, self.checked_to + 1):
            if all(c[4] for c in self.conditions if c[1] == q):
                p = q
            else:
                break
        return p

    def summary(self) -> str:
        t = self.table
        lines = [(f"{t.name}: Runge-Kutta, {len(t.c)} stages, order {self.order} (declared {t.order}; trees "
                 f"checked to order {self.checked_to})"), f"  R(z) = {self.stability_function}"]
        for tree, q, Phi, g, ok in self.conditions:
            lines.append(f"  order {q} tree {_tree_str(tree):<16} b.Phi = {Phi!s:<10} 1/gamma = {g!s:<8} "
                         f"{'ok' if ok else 'FAILS'}")
        return "\n".join(lines)


def _tree_str(t) -> str:
    return "t" if t == () else "[" + ",".join(_tree_str(u) for u in t) + "]"


def _rk(table: RungeKutta, max_order: int, budget: _Budget) -> RKDerivation:
    if max_order > MAX_RK_ORDER:
        raise SymbolicLimitError(f"rooted-tree order conditions are generated up to order {MAX_RK_ORDER} "
                                 f"({sum(len(rooted_trees(q)) for q in range(1, MAX_RK_ORDER + 1))} trees); "
                                 f"order {max_order} was requested")
    s = len(table.c)
    cost = sum(len(rooted_trees(q)) * s * q for q in range(1, max_order + 1))
    if cost > 2e5:
        raise SymbolicLimitError(f"{table.name}: {s} stages to order {max_order} exceeds the symbolic budget")
    A = [[Fr(0)] * s for _ in range(s)]
    for i, row in enumerate(table.a, start=1):
        for j, v in enumerate(row):
            A[i][j] = Fr(v)
    b = [Fr(v) for v in table.b]

    def stage_phi(t):  # vector over stages
        v = [Fr(1)] * s
        for u in t:
            inner = stage_phi(u)
            au = [sum((A[i][j] * inner[j] for j in range(s)), Fr(0)) for i in range(s)]
            v = [v[i] * au[i] for i in range(s)]
        return v

    conds = []
    for q in range(1, max_order + 1):
        for tree in rooted_trees(q):
            budget.check()
            Phi = sum((b[i] * x for i, x in enumerate(stage_phi(tree))), Fr(0))
            g = Fr(1, _gamma(tree))
            conds.append((tree, q, Phi, g, Phi == g))
    z = sp.Symbol("z")
    Am = sp.Matrix(s, s, lambda i, j: sp.Rational(A[i][j]))
    bm = sp.Matrix(1, s, [sp.Rational(v) for v in b])
    R = sp.expand(1 + z * (bm * (sp.eye(s) - z * Am).LUsolve(sp.ones(s, 1)))[0])
    return RKDerivation(table.name, table, tuple(conds), R, max_order)


# -- linear multistep -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LMMDerivation(_Derivation):
    table: LinearMultistep = None
    conditions: tuple = ()

    @property
    def order(self) -> int:
        return self.table.order

    def summary(self) -> str:
        t = self.table
        return (f"{t.name}: {t.steps}-step linear multistep, order {t.order}, error constant {t.error_constant}\n"
                f"  C_q = {[str(c) for c in self.conditions]}")


@dataclass(frozen=True)
class FixedAdamsDerivation(_Derivation):
    """Equal-step Adams-Bashforth formulas with a warm-up: the order on uniform, smooth and arbitrary
    grids (equal-step coefficients are exact only on uniform grids; on smooth grids the step ratios are
    1 + O(h), which keeps degree <= 1; on arbitrary grids only constants are exact)."""

    table: FixedAdams = None
    formulas: tuple = ()  # LinearMultistep per step kind
    orders: dict = field(default_factory=dict)  # grid class -> global order

    @property
    def order(self) -> int:
        return self.orders["smooth"]

    def summary(self) -> str:
        t = self.table
        lines = [f"{t.name}: fixed-coefficient Adams-Bashforth (AB{t.steps_back}) in rho, warm-up {t.warmup!r}",
                 (f"  global order: uniform grid {self.orders['uniform']}, smooth grid {self.orders['smooth']}, "
                 f"arbitrary grid {self.orders['any']} (declared {t.order}, grid_requirement "
                 f"{t.grid_requirement!r})")]
        for f in self.formulas:
            lines.append(f"  {f.name}: beta = {[str(v) for v in f.beta[:-1][::-1]]}, order {f.order}")
        return "\n".join(lines)


def _fixed_adams(table: FixedAdams) -> FixedAdamsDerivation:
    k = table.steps_back
    forms = tuple(adams_bashforth(j) for j in range(1, k + 1))
    # exactness degrees: AB-j integrates degree j-1 exactly on uniform grids; equal-step coefficients on
    # smooth grids (ratios 1 + O(h)) keep degree min(j-1, 1), on arbitrary grids only constants
    ab = [f.order - 1 for f in forms]
    warm = ab[:-1] if table.warmup == "lower" else [1] + ab[1:-1]  # PLMS: Heun (RK2, degree 1), AB2, ...
    heun = table.warmup == "heun"

    def rule(cap):
        interior = min(ab[-1], cap)
        bnd = [min(d, cap) if not (heun and i == 0) else d for i, d in enumerate(warm)]
        return min(interior + 1, min(bnd, default=interior) + 2)

    orders = {"uniform": rule(99), "smooth": rule(1), "any": rule(0)}
    return FixedAdamsDerivation(table.name, table, forms, orders)


# -- entry point --------------------------------------------------------------------------------------

def derive(table: object, *, max_order: int | None = None, timeout: float | None = None):
    """Symbolic analysis of a method table (see the module docstring): an object with ``.order`` and
    ``.summary()``; the fields depend on the kind of table.

    Args:
        table: a registered name, an ExponentialRK / ExponentialMultistep / RungeKutta / FixedAdams
            table, or a :class:`~odesolve.analysis.lmm.LinearMultistep`.
        max_order: the highest order of conditions to check (exponential RK: <= 4, the default;
            Runge-Kutta: <= 8, default 4 + 1).
        timeout: seconds allowed (default ``TIME_LIMIT``).

    Raises:
        SymbolicLimitError: the request is beyond the implementation or the time budget.
    """
    from ._plan import as_method

    if isinstance(table, str):
        table = as_method(table)
    if max_order is not None and (not isinstance(max_order, int) or max_order < 1):
        raise ValueError(f"max_order must be a positive integer, got {max_order!r}")
    budget = _Budget(timeout, f"derive({getattr(table, 'name', table)!r})")
    if isinstance(table, ExponentialRK):
        return _erk(table, max_order or MAX_ERK_ORDER, budget)
    if isinstance(table, ExponentialMultistep):
        if max_order is not None and max_order > MAX_ERK_ORDER + 1:
            raise SymbolicLimitError(f"order {max_order} is beyond the exponential Adams analysis (<= 5)")
        return _adams(table, budget)
    if isinstance(table, RungeKutta):
        return _rk(table, max_order or 5, budget)
    if isinstance(table, FixedAdams):
        return _fixed_adams(table)
    if isinstance(table, LinearMultistep):
        return LMMDerivation(table.name, table, tuple(table.conditions(max_order or table.steps + 2)))
    raise TypeError(f"derive does not know tables of type {type(table).__name__}; it handles ExponentialRK, "
                    "ExponentialMultistep, RungeKutta, FixedAdams and LinearMultistep (use numeric_order for "
                    "any compiled plan)")
