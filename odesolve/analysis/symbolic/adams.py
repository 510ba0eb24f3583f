r"""Exponential Adams methods in closed form: the coefficients as functions of the step h, the node
ratios and the phi-functions, their exactness degrees and the global order (warm-up and corrector
included). The weight of each Taylor term is read from the table (`ExponentialMultistep.weight`),
the same exact rows that compile uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction as Fr

import numpy as np
import sympy as sp

from ._core import MAX_ADAMS_NODES, MAX_ERK_ORDER, SymbolicLimitError, _Derivation, budget_for
from .erk import stiff_order_conditions
from .series import Series, phi, phi_numpy

__all__ = ["AdamsDerivation", "exponential_adams"]


@dataclass(frozen=True)
class AdamsDerivation(_Derivation):
    """Closed-form coefficients of an exponential Adams step (see the module docstring).

    ``predictor[j]`` multiplies the output at node ``r_j`` (``r_0 = 0`` the step start, ``r_j =
    (lambda_{n-j} - lambda_n)/h`` earlier nodes) and is the coefficient per unit of the factor in front
    of the integral (``alpha_{n+1}`` for x0 prediction, ``-sigma_{n+1}`` for eps prediction); ``corrector``
    (UniC) adds the node ``r = 1`` first. ``variable="rho"`` tables integrate a Lagrange polynomial in rho exactly: the
    step is ``drho`` and the coefficients are pure rational functions of the ratios."""

    table: object = None
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
        [`phi_numpy`][odesolve.analysis.symbolic.series.phi_numpy]); ``which`` is ``"predictor"`` or ``"corrector"``,
        ``nodes`` another node count
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
            return (
                self.corrector
                if q == self.table.nodes and self.corrector is not None
                else _adams_coefficients(self.table, q, True)[0]
            )
        raise ValueError(f"which must be 'predictor' or 'corrector', got {which!r}")

    def summary(self) -> str:
        t = self.table
        kind = f"exponential Adams, {t.nodes} nodes in {t.variable}, {t.prediction} prediction"
        if t.corrector:
            kind += ", UniC corrector (PEC)"
        lines = [
            f"{t.name}: {kind}",
            (
                f"  order {self.order} (declared {t.order}) from the rule min(p_int + 1, "
                f"p_b + 2) with p_int = {self.rule[0]}, p_b = {self.rule[1]}"
            ),
        ]
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


def _adams_coefficients(table, q: int, corrector: bool):
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
    sign = -1 if table.prediction == "x0" else 1
    zeta = sign * h
    w = [_weight_sympy(table.weight(m, i), h, zeta) for i in range(m)]
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


def _adams_degree(table, q: int, corrector: bool, rng) -> int:
    """Asymptotic exactness degree of the q-node predictor (or corrector) for generic ratios: the
    largest p with defect(m_d) = O(h^{p+2-d}) for every monomial degree d (exact series in h)."""
    if table.variable == "rho":
        return q - 1 + int(corrector)
    sign = -1 if table.prediction == "x0" else 1
    ratios, r = [], Fr(0)
    for _ in range(q - 1):
        r -= Fr(int(rng.integers(5, 21)), 10)  # earlier nodes, strictly decreasing, gaps in [0.5, 2]
        ratios.append(r)
    nodes = [Fr(0), *ratios]
    if corrector:
        nodes = [Fr(1), *nodes]
    m = len(nodes)

    def chi(l):  # chi_l(h) / h = phi_l(sign h), as a series; weights carry one more power of h
        return Series.phi(l, Fr(sign))

    w = [_weight_series(table.weight(m, i), sign) for i in range(m)]
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
        c.append(sum((w[i] * (poly[i] / den) for i in range(m)), Series.const(0)))
    L = math.inf
    for d in range(m + 3):
        defect = sum((c[j] * nodes[j] ** d for j in range(m)), Series.const(0)) - chi(d + 1) * math.factorial(d)
        # the defect of ((lambda - lambda_n)/h)^d is h * defect (weights are h * series)
        L = min(L, d + 1 + defect.valuation)
    return int(L) - 2


def _weight_sympy(w, h, zeta):
    """A weight row ``h_coeff h + sum_l chi_l`` with chi_l(h) = h phi_l(zeta), in sympy."""
    return sp.Rational(w.h) * h + sum(
        (sp.Rational(cf) * h * phi(l, zeta) for l, cf in enumerate(w.chi, start=1) if cf), sp.Integer(0)
    )


def _weight_series(w, sign: int) -> Series:
    """The same weight divided by h, as an exact series in h."""
    return sum((Series.phi(l, Fr(sign)) * cf for l, cf in enumerate(w.chi, start=1) if cf), Series.const(w.h))


def exponential_adams(table, max_order: int | None = None, budget=None) -> AdamsDerivation:
    """Closed-form coefficients and global order of an
    [`ExponentialMultistep`][odesolve.methods.exponential_multistep.ExponentialMultistep]."""
    if max_order is not None and max_order > MAX_ERK_ORDER + 1:
        raise SymbolicLimitError(f"order {max_order} is beyond the exponential Adams analysis (<= 5)")
    budget = budget_for(budget, f"derive({table.name!r})")
    if table.variable == "t":
        raise SymbolicLimitError(
            f"{table.name} interpolates in the path's time t (DEIS tAB): its weights are "
            "path-dependent integrals with no closed form; use numeric_order, or the "
            "rho-interpolating lms-k (identical on EDM paths, where t = rho)"
        )
    q = table.nodes
    if q + int(table.corrector) > MAX_ADAMS_NODES:
        raise SymbolicLimitError(
            f"{table.name}: {q + int(table.corrector)} nodes exceed the symbolic limit of "
            f"{MAX_ADAMS_NODES} (the Vandermonde inverse grows factorially)"
        )
    pred, h, r = _adams_coefficients(table, q, False)
    budget.check()
    corr = _adams_coefficients(table, q, True)[0] if table.corrector else None
    budget.check()
    rng = np.random.default_rng(12345)
    degrees = {}
    # boundary: the first step (DDIM, or the warm-up table), the steps with fewer nodes, the last step
    if table.warmup is not None:
        wd = stiff_order_conditions(table.warmup, MAX_ERK_ORDER, budget)
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
