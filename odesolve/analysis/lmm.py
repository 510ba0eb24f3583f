"""Classical linear multistep methods ``sum_j alpha_j y_{n+j} = z sum_j beta_j f_{n+j}`` (j = 0..k):
Adams-Bashforth / Adams-Moulton tables with exact rational coefficients, their order conditions,
error constants, characteristic polynomials, boundary loci and real stability intervals.

They are the equal-step limit of odesolve's ``lms-k`` (variable-step Adams in rho) and of the
fixed-coefficient tables inside ``ipndm`` / ``plms``; the analysis of compiled plans
(`stability`) must reproduce their numbers, and the tests check that it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as Fr
from math import factorial

import numpy as np

__all__ = ["LinearMultistep", "adams_bashforth", "adams_moulton"]


@dataclass(frozen=True)
class LinearMultistep:
    """``alpha``, ``beta``: coefficients of ``y_{n+j}`` and ``f_{n+j}``, j = 0..k (``alpha[k] = 1``)."""

    alpha: tuple[Fr, ...]
    beta: tuple[Fr, ...]
    name: str = "lmm"

    def __post_init__(self):
        a, b = tuple(Fr(v) for v in self.alpha), tuple(Fr(v) for v in self.beta)
        if len(a) != len(b) or len(a) < 2:
            raise ValueError(f"{self.name}: alpha and beta must have the same length k + 1 >= 2")
        if a[-1] == 0:
            raise ValueError(f"{self.name}: alpha[k] must be nonzero")
        if sum(a) != 0:
            raise ValueError(
                f"{self.name}: the alpha coefficients sum to {sum(a)}, not 0: the method is not "
                "consistent (it does not reproduce constant solutions)"
            )
        object.__setattr__(self, "alpha", a)
        object.__setattr__(self, "beta", b)

    @property
    def steps(self) -> int:
        return len(self.alpha) - 1

    @property
    def explicit(self) -> bool:
        return self.beta[-1] == 0

    def conditions(self, up_to: int = 8) -> list[Fr]:
        """``C_q = sum_j j^q alpha_j / q! - sum_j j^(q-1) beta_j / (q-1)!`` for q = 0..up_to (the method
        has order p iff C_0 = .. = C_p = 0; C_{p+1}/sigma(1) is its error constant)."""
        out = []
        for q in range(up_to + 1):
            c = sum(Fr(j) ** q * a for j, a in enumerate(self.alpha)) / factorial(q)
            if q >= 1:
                c -= sum(Fr(j) ** (q - 1) * b for j, b in enumerate(self.beta)) / factorial(q - 1)
            out.append(c)
        return out

    @property
    def order(self) -> int:
        cs = self.conditions(2 * self.steps + 3)
        p = 0
        while p + 1 < len(cs) and cs[p + 1] == 0:
            p += 1
        return p

    @property
    def error_constant(self) -> Fr:
        """``C_{p+1} / sigma(1)``: the local error is ``C h^(p+1) y^(p+1)``."""
        return self.conditions(self.order + 1)[self.order + 1] / sum(self.beta)

    def derivation(self, max_order: int | None = None, budget=None):
        """The conditions C_q (`odesolve.analysis.symbolic.lmm.lmm_conditions`)."""
        from .symbolic.lmm import lmm_conditions

        return lmm_conditions(self, max_order)

    def rho(self, zeta):
        return np.polyval([float(a) for a in self.alpha[::-1]], zeta)

    def sigma(self, zeta):
        return np.polyval([float(b) for b in self.beta[::-1]], zeta)

    def roots(self, z) -> np.ndarray:
        """Roots of ``rho(r) - z sigma(r)`` for each ``z`` (array (..., k))."""
        z = np.atleast_1d(np.asarray(z, dtype=complex))
        a = np.array([float(v) for v in self.alpha], dtype=complex)
        b = np.array([float(v) for v in self.beta], dtype=complex)
        out = []
        for zi in z.ravel():
            c = (a - zi * b)[::-1]
            while abs(c[0]) == 0 and len(c) > 1:
                c = c[1:]
            r = np.roots(c)
            out.append(np.pad(r, (0, self.steps - len(r)), constant_values=0))
        return np.array(out).reshape(*z.shape, self.steps)

    def spectral_radius(self, z) -> np.ndarray:
        return np.abs(self.roots(z)).max(-1)

    def boundary_locus(self, n: int = 721) -> np.ndarray:
        """``z(theta) = rho(e^{i theta}) / sigma(e^{i theta})``: the stability region's boundary lies on it."""
        zeta = np.exp(1j * np.linspace(0, 2 * np.pi, n))
        return self.rho(zeta) / self.sigma(zeta)

    def stability_interval(self, z_max: float = 10.0, tol: float = 1e-12) -> float:
        """The most negative ``z`` with all roots in the unit disc on ``[z, 0]``."""
        from .stability import _first_crossing

        return _first_crossing(lambda z: self.spectral_radius(z), z_max, tol)


def _integrate_lagrange(nodes: list[int], lo: int, hi: int) -> list[Fr]:
    """Exact integrals over [lo, hi] of the Lagrange basis polynomials on integer ``nodes``."""
    out = []
    for m, xm in enumerate(nodes):
        poly = [Fr(1)]  # coefficients, lowest first
        denom = Fr(1)
        for j, xj in enumerate(nodes):
            if j == m:
                continue
            poly = [Fr(0)] + poly  # times x
            for i in range(len(poly) - 1):
                poly[i] -= xj * poly[i + 1]
            denom *= xm - xj
        val = sum(c * (Fr(hi) ** (i + 1) - Fr(lo) ** (i + 1)) / (i + 1) for i, c in enumerate(poly))
        out.append(val / denom)
    return out


def adams_bashforth(k: int) -> LinearMultistep:
    """The k-step Adams-Bashforth method (order k): AB1 = Euler, AB2 = (3, -1)/2, ..."""
    if not isinstance(k, int) or not 1 <= k <= 12:
        raise ValueError(f"k must be an integer in [1, 12], got {k!r}")
    w = _integrate_lagrange(list(range(k)), k - 1, k)  # nodes 0..k-1 (y_{n}..y_{n+k-1}), step k-1 -> k
    alpha = [Fr(0)] * (k + 1)
    alpha[k], alpha[k - 1] = Fr(1), Fr(-1)
    return LinearMultistep(tuple(alpha), tuple(w) + (Fr(0),), name=f"AB{k}")


def adams_moulton(k: int) -> LinearMultistep:
    """The k-step Adams-Moulton method (order k + 1)."""
    if not isinstance(k, int) or not 1 <= k <= 12:
        raise ValueError(f"k must be an integer in [1, 12], got {k!r}")
    w = _integrate_lagrange(list(range(k + 1)), k - 1, k)
    alpha = [Fr(0)] * (k + 1)
    alpha[k], alpha[k - 1] = Fr(1), Fr(-1)
    return LinearMultistep(tuple(alpha), tuple(w), name=f"AM{k}")
