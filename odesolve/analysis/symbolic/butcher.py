"""Order conditions of classical Runge-Kutta tables over rooted trees (Butcher), and the
stability function ``R(z) = 1 + z b^T (I - zA)^{-1} 1``."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as Fr

import sympy as sp

from ._core import MAX_RK_ORDER, SymbolicLimitError, _Derivation, budget_for

__all__ = ["RKDerivation", "rooted_trees", "tree_order_conditions"]


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
            out.add(tuple(sorted(t[:i] + (g,) + t[i + 1 :])))
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

    table: object = None
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
        lines = [
            (
                f"{t.name}: Runge-Kutta, {len(t.c)} stages, order {self.order} (declared {t.order}; trees "
                f"checked to order {self.checked_to})"
            ),
            f"  R(z) = {self.stability_function}",
        ]
        for tree, q, Phi, g, ok in self.conditions:
            lines.append(
                f"  order {q} tree {_tree_str(tree):<16} b.Phi = {Phi!s:<10} 1/gamma = {g!s:<8} "
                f"{'ok' if ok else 'FAILS'}"
            )
        return "\n".join(lines)


def _tree_str(t) -> str:
    return "t" if t == () else "[" + ",".join(_tree_str(u) for u in t) + "]"


def tree_order_conditions(table, max_order: int | None = None, budget=None) -> RKDerivation:
    """The rooted-tree conditions of ``table`` (c, a, b) up to ``max_order`` (default 5, at most 8)."""
    max_order = max_order or 5
    budget = budget_for(budget, f"derive({table.name!r})")
    if max_order > MAX_RK_ORDER:
        raise SymbolicLimitError(
            f"rooted-tree order conditions are generated up to order {MAX_RK_ORDER} "
            f"({sum(len(rooted_trees(q)) for q in range(1, MAX_RK_ORDER + 1))} trees); "
            f"order {max_order} was requested"
        )
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
