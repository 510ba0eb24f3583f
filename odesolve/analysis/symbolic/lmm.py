"""Linear multistep conditions: classical tables ([`LinearMultistep`][odesolve.analysis.lmm.LinearMultistep]) and
the equal-step Adams-Bashforth formulas with a warm-up ([`FixedAdams`][odesolve.methods.classical.FixedAdams])."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..lmm import LinearMultistep, adams_bashforth
from ._core import _Derivation

__all__ = ["FixedAdamsDerivation", "LMMDerivation", "fixed_adams_orders", "lmm_conditions"]


@dataclass(frozen=True)
class LMMDerivation(_Derivation):
    table: LinearMultistep = None
    conditions: tuple = ()

    @property
    def order(self) -> int:
        return self.table.order

    def summary(self) -> str:
        t = self.table
        return (
            f"{t.name}: {t.steps}-step linear multistep, order {t.order}, error constant {t.error_constant}\n"
            f"  C_q = {[str(c) for c in self.conditions]}"
        )


@dataclass(frozen=True)
class FixedAdamsDerivation(_Derivation):
    """Equal-step Adams-Bashforth formulas with a warm-up: the order on uniform, smooth and arbitrary
    grids (equal-step coefficients are exact only on uniform grids; on smooth grids the step ratios are
    1 + O(h), which keeps degree <= 1; on arbitrary grids only constants are exact)."""

    table: object = None
    formulas: tuple = ()  # LinearMultistep per step kind
    orders: dict = field(default_factory=dict)  # grid class -> global order

    @property
    def order(self) -> int:
        return self.orders["smooth"]

    def summary(self) -> str:
        t = self.table
        lines = [
            f"{t.name}: fixed-coefficient Adams-Bashforth (AB{t.steps_back}) in rho, warm-up {t.warmup!r}",
            (
                f"  global order: uniform grid {self.orders['uniform']}, smooth grid {self.orders['smooth']}, "
                f"arbitrary grid {self.orders['any']} (declared {t.order}, grid_requirement "
                f"{t.grid_requirement!r})"
            ),
        ]
        for f in self.formulas:
            lines.append(f"  {f.name}: beta = {[str(v) for v in f.beta[:-1][::-1]]}, order {f.order}")
        return "\n".join(lines)


def fixed_adams_orders(table) -> FixedAdamsDerivation:
    """Orders of a FixedAdams table on uniform, smooth and arbitrary grids."""
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


def lmm_conditions(table: LinearMultistep, max_order: int | None = None) -> LMMDerivation:
    """The conditions C_0 .. C_max_order of a classical linear multistep table."""
    return LMMDerivation(table.name, table, tuple(table.conditions(max_order or table.steps + 2)))
