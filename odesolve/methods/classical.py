"""Classical tables applied to the probability-flow ODE in k-diffusion's variables.

With xbar = x/alpha and rho = sigma/alpha the PF-ODE is d xbar / d rho = eps(x, t(rho)) (DEIS's
observation; for EDM, x = xbar and rho = sigma, so this is Karras et al.'s dx/dsigma = (x - D)/sigma).
Classical methods run in (rho, xbar):

- Runge-Kutta tables (c, a, b): Euler (= DDIM), EDM's Heun (Karras et al. 2022, Alg. 1), RK4;
- fixed-coefficient Adams-Bashforth (iPNDM of Zhang & Chen 2023; PLMS of Liu et al. 2022), whose
  coefficients assume equal steps in rho.

A step that ends at sigma = 0 would place a stage there; it takes the Euler (DDIM) limit, as EDM does.
"""

from __future__ import annotations

from fractions import Fraction as Fr
from typing import ClassVar

import torch

from ..plan import Rows
from .base import Method, Prediction, Rational, Variable, fraction_rows, refuse_alpha_zero_start, table
from .exponential_rk import singlestep_rows


@table
class RungeKutta(Method):
    """Explicit RK table (c, a, b) in rho on eps: X_i = alpha_i (xbar_n + drho sum_j a_ij eps_j)."""

    prediction: Prediction = "eps"
    c: tuple[Rational, ...] = (Fr(0),)
    a: tuple[tuple[Rational, ...], ...] = ()
    b: tuple[Rational, ...] = (Fr(1),)
    variable: ClassVar[Variable] = "rho"

    def __post_init__(self):
        super().__post_init__()
        if self.prediction != "eps":
            raise ValueError(
                f"{self.name}: a Runge-Kutta table in (rho, x/alpha) integrates eps; prediction must "
                f"be 'eps', got {self.prediction!r}"
            )
        for what in ("c", "a", "b"):
            object.__setattr__(self, what, fraction_rows(self.name, what, getattr(self, what)))
        s = len(self.c)
        if s < 1 or self.c[0] != 0:
            raise ValueError(f"{self.name}: c must start with 0 (the first stage is the step start), got {self.c}")
        if any(not 0 <= ci <= 1 for ci in self.c):
            raise ValueError(f"{self.name}: every node c_i must lie in [0, 1] (inside the step), got {self.c}")
        if len(self.a) != s - 1 or len(self.b) != s or any(len(r) != i + 1 for i, r in enumerate(self.a)):
            raise ValueError(f"{self.name}: a must have rows of lengths 1..{s - 1} and b length {s}")
        for i, row in enumerate(self.a, start=1):
            if sum(row) != self.c[i]:
                raise ValueError(f"{self.name}: row {i} of a sums to {sum(row)}, not c[{i}] = {self.c[i]}")
        if sum(self.b) != 1:
            raise ValueError(f"{self.name}: b sums to {sum(self.b)}, not 1")
        if self.order > s:
            raise ValueError(f"{self.name}: order {self.order} exceeds the number of stages {s}")

    @property
    def calls_per_step(self) -> int:
        return len(self.c)

    def derivation(self, max_order=None, budget=None):
        """Butcher's rooted-tree order conditions
        ([`odesolve.analysis.symbolic.butcher`][odesolve.analysis.symbolic.butcher])."""
        from ..analysis.symbolic.butcher import tree_order_conditions

        return tree_order_conditions(self, max_order, budget)

    def _rows(self, g, **options) -> Rows:
        refuse_alpha_zero_start(self, g)
        # a step that ends at sigma = 0 would place a stage there: it takes the Euler (DDIM) limit
        return singlestep_rows(self, g, ~g.sigma_zero_end)

    def stage_rows(self, rows: Rows, g, n: torch.Tensor, first: torch.Tensor, times=None):
        """Rows of the regular steps n, whose first call is ``first``; ``times`` overrides the stage times."""
        r0, r1 = g.rho(n), g.rho(n + 1)
        inv_a0 = torch.exp(-g.log_alpha[n])
        for i, row in enumerate(self.a, start=1):
            t_i = g.path.t_of_noise_level(r0 + float(self.c[i]) * (r1 - r0)) if times is None else times[i]
            a_i = torch.exp(g.path.log_alpha(t_i))
            rows.call(first + i, n, t_i)
            rows.input_state(first + i, a_i * inv_a0)
            for j, v in enumerate(row):
                if v:
                    rows.input(first + i, first + j, a_i * (r1 - r0) * float(v))
        a1 = torch.exp(g.log_alpha[n + 1])
        last = first + len(self.c) - 1
        rows.update_state(last, a1 * inv_a0)
        for j, v in enumerate(self.b):
            if v:
                rows.update(last, first + j, a1 * (r1 - r0) * float(v))


def lagrange_integrals(q: int, a: Fr, b: Fr) -> tuple[Fr, ...]:
    """The integrals over [a, b] of the Lagrange basis polynomials on the nodes 0, -1, .., -(q-1), exact."""
    nodes = [Fr(-j) for j in range(q)]
    out = []
    for m, xm in enumerate(nodes):
        poly, den = [Fr(1)], Fr(1)  # coefficients, lowest power first
        for j, xj in enumerate(nodes):
            if j != m:
                poly = [Fr(0)] + poly
                for i in range(len(poly) - 1):
                    poly[i] -= xj * poly[i + 1]
                den *= xm - xj
        out.append(sum(cf * (Fr(b) ** (i + 1) - Fr(a) ** (i + 1)) / (i + 1) for i, cf in enumerate(poly)) / den)
    return tuple(out)


def adams_bashforth_weights(q: int) -> tuple[Fr, ...]:
    """Equal-step Adams-Bashforth weights beta_j of F_{n-j}, j = 0..q-1: the integrals over [0, 1] of
    the Lagrange basis polynomials on the nodes 0, -1, .., -(q-1) (AB2 = (3/2, -1/2))."""
    return lagrange_integrals(q, Fr(0), Fr(1))


WARMUPS = ("lower", "heun")


@table
class FixedAdams(Method):
    """Adams-Bashforth with equal-step coefficients in rho on eps:
    xbar_{n+1} = xbar_n + (rho_{n+1} - rho_n) sum_j beta_j eps_{n-j}.

    Warm-up ``"lower"`` (iPNDM) uses AB1, AB2, AB3 on the first steps; ``"heun"`` (PLMS as in
    diffusers' PNDM with skip_prk_steps) takes the first step with Heun (2 calls, the second
    output discarded), then AB2, AB3, AB4. On grids whose steps in rho vary, the fixed
    coefficients are consistent only to first order; on smooth grids (step ratios 1 + O(h)) the
    method is second order.
    """

    prediction: Prediction = "eps"
    steps_back: int = 4
    warmup: str = "lower"
    variable: ClassVar[Variable] = "rho"
    grid_requirement: ClassVar[str] = "smooth"
    MAX_STEPS_BACK: ClassVar[int] = 6

    def __post_init__(self):
        super().__post_init__()
        if self.prediction != "eps":
            raise ValueError(
                f"{self.name}: Adams-Bashforth in (rho, x/alpha) integrates eps; prediction must be "
                f"'eps', got {self.prediction!r}"
            )
        if (
            isinstance(self.steps_back, bool)
            or not isinstance(self.steps_back, int)
            or not 1 <= self.steps_back <= self.MAX_STEPS_BACK
        ):
            raise ValueError(
                f"{self.name}: steps_back must be an integer in [1, {self.MAX_STEPS_BACK}], got {self.steps_back!r}"
            )
        if self.warmup not in WARMUPS:
            raise ValueError(f"{self.name}: warmup must be one of {WARMUPS}, got {self.warmup!r}")
        if self.order > min(self.steps_back, 2):
            raise ValueError(
                f"{self.name}: equal-step coefficients keep at most order {min(self.steps_back, 2)} "
                f"on non-uniform grids, got order {self.order}"
            )

    @property
    def history(self) -> int:
        return self.steps_back - 1

    @property
    def beta(self) -> tuple[tuple[Fr, ...], ...]:
        """beta[q - 1]: the AB-q weights, for the steps that have q outputs."""
        return tuple(adams_bashforth_weights(q) for q in range(1, self.steps_back + 1))

    def derivation(self, max_order=None, budget=None):
        """Equal-step Adams conditions with the warm-up
        ([`odesolve.analysis.symbolic.lmm`][odesolve.analysis.symbolic.lmm])."""
        from ..analysis.symbolic.lmm import fixed_adams_orders

        return fixed_adams_orders(self)

    def _rows(self, g, **options) -> Rows:
        refuse_alpha_zero_start(self, g)
        N = g.steps
        n = torch.arange(N)
        heun = self.warmup == "heun" and N >= 1 and not bool(g.sigma_zero_end[0])
        call = n + (n >= 1).long() * int(heun)  # the call at the start of step n (Heun adds one in step 0)
        rows = Rows(N + int(heun))
        rows.call(call, n, g.t[:-1])
        multi = n[1:] if heun else n
        if heun:  # PLMS's first step: Heun's method, its second output is not kept
            HEUN.stage_rows(rows, g, n[:1], call[:1], times=[None, g.t[1:2]])
        r0, r1 = g.rho(multi), g.rho(multi + 1)
        a1 = torch.exp(g.log_alpha[multi + 1])
        rows.update_state(call[multi], torch.exp(g.log_alpha[multi + 1] - g.log_alpha[multi]))
        q = torch.clamp(multi + 1, max=self.steps_back)  # outputs available
        beta = self.beta
        for j in range(self.steps_back):
            for qq in range(j + 1, self.steps_back + 1):
                sel = q == qq
                if bool(sel.any()):
                    m = multi[sel]
                    rows.update(call[m], call[m - j], a1[sel] * (r1 - r0)[sel] * float(beta[qq - 1][j]))
        return rows


EULER = RungeKutta("euler", order=1, paper="Euler in (rho, x/alpha); = DDIM (Karras et al. 2022)")
HEUN = RungeKutta(
    "heun",
    order=2,
    c=(Fr(0), Fr(1)),
    a=((Fr(1),),),
    b=(Fr(1, 2), Fr(1, 2)),
    paper="Karras et al., EDM, NeurIPS 2022, Alg. 1 (2nd-order Heun; Euler on the step to sigma = 0)",
)
RK4 = RungeKutta(
    "rk4",
    order=4,
    c=(Fr(0), Fr(1, 2), Fr(1, 2), Fr(1)),
    a=((Fr(1, 2),), (Fr(0), Fr(1, 2)), (Fr(0), Fr(0), Fr(1))),
    b=(Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6)),
    paper="classical RK4 in (rho, x/alpha) (DEIS rhoRK, Zhang & Chen 2023)",
)
IPNDM = FixedAdams(
    "ipndm",
    order=2,
    steps_back=4,
    warmup="lower",
    paper="Zhang & Chen, DEIS, ICLR 2023 (improved PNDM): AB4 with AB1-3 warm-up",
)
PLMS = FixedAdams(
    "plms",
    order=2,
    steps_back=4,
    warmup="heun",
    paper="Liu et al., PNDM, ICLR 2022: pseudo linear multistep (AB4 in the DDIM transfer)",
)

TABLES = [HEUN, RK4, IPNDM, PLMS]
ALIASED = ((EULER, "dpm-solver-1"),)  # one stage: Euler in rho is the DDIM update of eps
