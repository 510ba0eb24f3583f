"""Momentum samplers: heavy ball (HB) and generalised heavy ball (GHVB) on Adams-Bashforth in rho.

Wizadwongsa, Chinchuthakun, Khungurn, Raj & Suwajanakorn, "Diffusion sampling with momentum for
mitigating divergence artifacts", ICLR 2024 (arXiv 2307.11118). In k-diffusion's variables
(xbar = x/alpha, rho = sigma/alpha, d xbar/d rho = eps) with steps ``delta_n = rho_{n+1} - rho_n``:

    xbar_{n+1} = xbar_n + delta_n v_{n+1},     v_{n+1} = (1 - beta) v_n + sum_i g_i eps_{n-i}

- HB (Polyak's heavy ball on the AB-k direction): ``g = beta AB_k``;
- GHVB: ``g = AB_k - (1 - beta) B_k``, where ``AB_k`` integrates the interpolant of the last k outputs
  over the next step and ``B_k`` over the previous one (per unit step). If ``v_n`` is the mean of eps
  over step n - 1, ``v_{n+1}`` is its mean over step n up to O(delta^k): GHVB-k keeps the order of
  AB-k for every beta in (0, 1] (its error constant grows like 1/beta), while HB with beta < 1 is
  first order (``B_k`` and ``AB_k`` differ by O(delta)).

Eliminating v gives the (k+1)-step linear multistep method
``xbar_{n+1} - (2 - beta) xbar_n + (1 - beta) xbar_{n-1} = delta sum_i g_i eps_{n-i}`` (equal steps),
whose first characteristic polynomial ``zeta^(k-1) (zeta - 1)(zeta - 1 + beta)`` has the parasitic
root 1 - beta: `Momentum.interior` gives it, and its real stability interval
grows as beta decreases (HB on Euler: ``-2 (2 - beta) / beta``).

The plan carries no velocity: unrolled, ``v_{n+1} = sum_m W_{n,m} eps_m`` with weights that decay
geometrically, ``W_n = (1 - beta) W_{n-1} + g`` (``W_0 = (1)``: the first step is Euler, and the first
k - 1 steps use AB-q on the q outputs they have). The rows keep the weights of the last
``history`` outputs: those further back are below ``2^-53`` relative ((1 - beta)^lag), so the plan is
the recursion to float64 precision with a bounded window. Coefficients assume equal steps in rho
(as the paper's and PLMS's): first order on arbitrary grids, at most second order on smooth ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction as Fr
from typing import ClassVar

import torch

from ..plan import Rows
from .base import Method, Prediction, Rational, Variable, refuse_alpha_zero_start, table
from .classical import adams_bashforth_weights, lagrange_integrals

__all__ = ["TABLES", "Momentum", "MomentumDerivation", "backward_weights", "global_orders", "truncation_lag"]

KINDS = ("hb", "ghvb")


def backward_weights(q: int) -> tuple[Fr, ...]:
    """The integrals over [-1, 0] of the Lagrange basis on the nodes 0, -1, .., -(q-1): the mean over
    the previous unit step of the interpolant of the last q outputs (B_2 = (1/2, 1/2))."""
    return lagrange_integrals(q, Fr(-1), Fr(0))


def truncation_lag(beta: Fr) -> int:
    """The smallest lag L with ``|1 - beta|^L <= 2^-53`` (0 for beta = 1): older weights are dropped."""
    a = abs(1 - Fr(beta))
    if a == 0:
        return 0
    return math.ceil(53 * math.log(2) / -math.log(float(a)))


@table
class Momentum(Method):
    """HB or GHVB momentum on Adams-Bashforth of ``steps_back`` outputs with ``beta`` in (0, 1];
    see the module docstring (beta = 1: plain Adams-Bashforth with lower-order warm-up, iPNDM)."""

    prediction: Prediction = "eps"
    kind: str = "ghvb"
    steps_back: int = 2
    beta: Rational = Fr(4, 5)
    variable: ClassVar[Variable] = "rho"
    grid_requirement: ClassVar[str] = "smooth"
    MAX_STEPS_BACK: ClassVar[int] = 6

    def __post_init__(self):
        super().__post_init__()
        if self.prediction != "eps":
            raise ValueError(f"{self.name}: momentum in (rho, x/alpha) integrates eps; prediction must be 'eps'")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        k = self.steps_back
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.MAX_STEPS_BACK:
            raise ValueError(f"{self.name}: steps_back must be an integer in [1, {self.MAX_STEPS_BACK}], got {k!r}")
        b = self.beta
        if isinstance(b, bool) or not isinstance(b, (int, Fr)) or not 0 < b <= 1:
            raise ValueError(f"{self.name}: beta must be an exact rational (int or Fraction) in (0, 1], got {b!r}")
        object.__setattr__(self, "beta", Fr(b))
        alpha, beta = self.interior_coefficients()
        top = global_orders(_lmm_order(alpha, beta) - 1, self.steps_back)["smooth"]
        if self.order > top:
            raise ValueError(
                f"{self.name}: {self.kind} with beta = {self.beta} has order {top} on smooth grids, got {self.order}"
            )

    @property
    def history(self) -> int:
        return self.steps_back - 1 + truncation_lag(self.beta)

    def forcing(self, q: int) -> tuple[Fr, ...]:
        """g: the weights of eps_n, eps_{n-1}, .. added to the velocity in a step that has q outputs."""
        ab = adams_bashforth_weights(q)
        if self.kind == "hb":
            return tuple(self.beta * w for w in ab)
        return tuple(a - (1 - self.beta) * w for a, w in zip(ab, backward_weights(q)))

    def interior_coefficients(self) -> tuple[tuple[Fr, ...], tuple[Fr, ...]]:
        """(alpha, beta) of the equal-step interior method ``sum_j alpha_j xbar_{n+j} = delta sum_j beta_j eps_{n+j}``,
        j = 0 .. max(k, 2), oldest first."""
        g = self.forcing(self.steps_back)
        s = max(self.steps_back, 2)
        alpha = [Fr(0)] * (s + 1)
        alpha[s], alpha[s - 1], alpha[s - 2] = Fr(1), -(2 - self.beta), 1 - self.beta
        beta = [Fr(0)] * (s + 1)
        for i, w in enumerate(g):
            beta[s - 1 - i] = w
        return tuple(alpha), tuple(beta)

    def interior(self):
        """The interior method as a [`LinearMultistep`][odesolve.analysis.lmm.LinearMultistep] (its roots,
        boundary locus and real stability interval are the closed forms the plan's analysis must match)."""
        from ..analysis.lmm import LinearMultistep

        return LinearMultistep(*self.interior_coefficients(), name=f"{self.name} (interior)")

    def velocity_weights(self, steps: int) -> torch.Tensor:
        """W (steps, steps), float64: ``v_{n+1} = sum_m W[n, m] eps_m``, before truncation."""
        W = torch.zeros(steps, steps, dtype=torch.float64)
        decay = float(1 - self.beta)
        for n in range(steps):
            if n == 0:
                W[0, 0] = 1.0
                continue
            W[n, :n] = decay * W[n - 1, :n]
            for i, w in enumerate(self.forcing(min(n + 1, self.steps_back))):
                W[n, n - i] += float(w)
        return W

    def derivation(self, max_order=None, budget=None):
        """The interior method's conditions as functions of beta (sympy), and the global orders
        by the rule of [`numeric`][odesolve.analysis.numeric]."""
        return momentum_orders(self)

    def _rows(self, g, **options) -> Rows:
        refuse_alpha_zero_start(self, g)
        N = g.steps
        n = torch.arange(N)
        rows = Rows(N)
        rows.call(n, n, g.t[:-1])
        rows.update_state(n, torch.exp(g.log_alpha[1:] - g.log_alpha[:-1]))
        step = torch.exp(g.log_alpha[1:]) * (g.rho(slice(1, None)) - g.rho(slice(0, N)))
        W = self.velocity_weights(N)
        for lag in range(min(self.history, N - 1) + 1):
            m = n[lag:]
            rows.update(m, m - lag, step[m] * W[m, m - lag])
        return rows


def _lmm_order(alpha, beta) -> int:
    """The largest p with C_0 = .. = C_p = 0 (exact rationals)."""
    p = 0
    while p < 2 * len(alpha):
        q = p + 1
        c = sum(Fr(j) ** q * a for j, a in enumerate(alpha)) / math.factorial(q)
        c -= sum(Fr(j) ** (q - 1) * b for j, b in enumerate(beta)) / math.factorial(q - 1)
        if c != 0:
            return p
        p = q
    return p


@dataclass(frozen=True)
class MomentumDerivation:
    """Interior conditions ``C_q(beta)`` (sympy, in the symbol beta), their values at the table's beta,
    and the global order per grid class (uniform / smooth / arbitrary)."""

    name: str
    table: Momentum = None
    conditions: tuple = ()  # C_q(beta), q = 0 .. k + 1
    interior_order: int = 0  # the interior LMM's order at the table's beta
    orders: dict = field(default_factory=dict)

    @property
    def order(self) -> int:
        return self.orders["smooth"]

    def summary(self) -> str:
        t = self.table
        return "\n".join(
            [
                f"{t.name}: {t.kind} momentum on AB{t.steps_back} in rho, beta = {t.beta}",
                f"  interior C_q(beta) = {[str(c) for c in self.conditions]}",
                f"  interior LMM order at beta = {t.beta}: {self.interior_order}",
                f"  global order: uniform {self.orders['uniform']}, smooth {self.orders['smooth']}, "
                f"arbitrary {self.orders['any']} (declared {t.order})",
            ]
        )

    def __str__(self):
        return self.summary()


def momentum_orders(table: Momentum) -> MomentumDerivation:
    """``C_q = sum_j j^q alpha_j / q! - sum_j j^(q-1) beta_j / (q-1)!`` of the interior LMM with beta a
    sympy symbol; the order at the table's beta, then ``min(p_int + 1, p_b + 2)`` with the Euler first
    step (degree 0) and the equal-step caps (smooth grids: degree 1, arbitrary: 0)."""
    import sympy as sp

    b = sp.Symbol("beta", positive=True)
    k = table.steps_back
    s = max(k, 2)
    ab = [sp.Rational(w.numerator, w.denominator) for w in adams_bashforth_weights(k)]
    bw = [sp.Rational(w.numerator, w.denominator) for w in backward_weights(k)]
    g = [b * a for a in ab] if table.kind == "hb" else [a - (1 - b) * w for a, w in zip(ab, bw)]
    alpha = [sp.Integer(0)] * (s + 1)
    alpha[s], alpha[s - 1], alpha[s - 2] = sp.Integer(1), -(2 - b), 1 - b
    beta = [sp.Integer(0)] * (s + 1)
    for i, w in enumerate(g):
        beta[s - 1 - i] = w
    conds = []
    for q in range(k + 2):
        c = sum(sp.Integer(j) ** q * a for j, a in enumerate(alpha)) / sp.factorial(q)
        if q >= 1:
            c -= sum(sp.Integer(j) ** (q - 1) * w for j, w in enumerate(beta)) / sp.factorial(q - 1)
        conds.append(sp.factor(sp.simplify(c)))
    at = sp.Rational(table.beta.numerator, table.beta.denominator)
    p = 0
    while p + 1 < len(conds) and conds[p + 1].subs(b, at) == 0:
        p += 1
    return MomentumDerivation(table.name, table, tuple(conds), p, global_orders(p - 1, k))


def global_orders(interior: int, k: int) -> dict:
    """``min(p_int + 1, p_b + 2)`` per grid class from the interior exactness degree in eps and the warm-up
    (AB-q on the first k - 1 steps, the first Euler), with the equal-step caps (smooth: 1, arbitrary: 0)."""
    warm = [min(q - 1, interior) for q in range(1, k)]

    def rule(cap):
        inner = min(interior, cap)
        return min(inner + 1, min([min(d, cap) for d in warm], default=inner) + 2)

    return {"uniform": rule(99), "smooth": rule(1), "any": rule(0)}


_PAPER = "Wizadwongsa et al., diffusion sampling with momentum, ICLR 2024 (arXiv 2307.11118)"
HB = Momentum("hb", order=1, kind="hb", steps_back=1, beta=Fr(4, 5), paper=f"{_PAPER}: HB on DDIM, beta = 0.8")
HB_PLMS = Momentum(
    "hb-plms4", order=1, kind="hb", steps_back=4, beta=Fr(4, 5), paper=f"{_PAPER}: HB on PLMS4, beta = 0.8"
)
GHVB_2 = Momentum("ghvb-2", order=2, kind="ghvb", steps_back=2, beta=Fr(4, 5), paper=f"{_PAPER}: GHVB 1.8")
GHVB_4 = Momentum("ghvb-4", order=2, kind="ghvb", steps_back=4, beta=Fr(4, 5), paper=f"{_PAPER}: GHVB 3.8")

# HB on a single Euler step (``HB`` above) is not registered: on 10 Karras steps from sigma = 80 to 0 its
# lagging velocity leaves an error of 0.78 where the registry contract asks < 0.5 of a step in rho
TABLES = [HB_PLMS, GHVB_2, GHVB_4]
