"""phi-functions (sympy, mpmath, numpy) and exact truncated power series in h."""

from __future__ import annotations

import math
from fractions import Fraction as Fr

import numpy as np
import sympy as sp

from ._core import SERIES_TERMS

__all__ = ["Series", "phi", "phi_numpy"]


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


class Series:
    """Truncated power series in h with Fraction coefficients."""

    __slots__ = ("c",)

    def __init__(self, c):
        self.c = list(c)[:SERIES_TERMS]
        self.c += [Fr(0)] * (SERIES_TERMS - len(self.c))

    @staticmethod
    def const(v):
        return Series([Fr(v)])

    @staticmethod
    def phi(k: int, scale: Fr):
        """phi_k(scale * h)."""
        return Series([Fr(scale) ** n / math.factorial(n + k) for n in range(SERIES_TERMS)])

    def __add__(self, o):
        o = o if isinstance(o, Series) else Series.const(o)
        return Series([a + b for a, b in zip(self.c, o.c)])

    __radd__ = __add__

    def __neg__(self):
        return Series([-a for a in self.c])

    def __sub__(self, o):
        return self + (-(o if isinstance(o, Series) else Series.const(o)))

    def __mul__(self, o):
        if not isinstance(o, Series):
            return Series([a * Fr(o) for a in self.c])
        out = [Fr(0)] * SERIES_TERMS
        for i, a in enumerate(self.c):
            if a:
                for j in range(SERIES_TERMS - i):
                    out[i + j] += a * o.c[j]
        return Series(out)

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
