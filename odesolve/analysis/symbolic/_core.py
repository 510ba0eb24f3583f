"""Shared pieces of the symbolic analysis: limits, the time budget, the derivation base class."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp

MAX_ERK_ORDER = 4
MAX_RK_ORDER = 8
MAX_ADAMS_NODES = 6
SERIES_TERMS = 10


class SymbolicLimitError(ValueError):
    """A symbolic request beyond what is implemented or affordable in the time budget."""


class _Budget:
    def __init__(self, timeout, what):
        self.limit = _limit() if timeout is None else float(timeout)
        self.t0, self.what = time.perf_counter(), what

    def check(self):
        if time.perf_counter() - self.t0 > self.limit:
            raise SymbolicLimitError(
                f"{self.what} exceeded the symbolic time budget of {self.limit:g} s "
                "(odesolve.analysis.symbolic.TIME_LIMIT or timeout=); use numeric_order"
            )


def _limit() -> float:
    from . import TIME_LIMIT as limit  # the package attribute, so that callers may change it

    return limit


def budget_for(budget, what: str) -> _Budget:
    return budget if budget is not None else _Budget(None, what)


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


def _zero_numeric(expr, h, points=(0.37, 1.3, 2.9, 7.1)) -> bool:
    """expr == 0 at several h, at 60 digits (the series already vanishes to order SERIES_TERMS)."""
    if expr == 0:
        return True
    for v in points:
        val = sp.N(expr.subs(h, sp.Rational(str(v))), 60)
        if abs(val) > sp.Float("1e-40"):
            return False
    return True
