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

from dataclasses import dataclass
from fractions import Fraction as Fr
from typing import ClassVar

import torch

from ..plan import LinComb
from .base import Method
from .exponential_rk import _refuse_noise_start


def _rho(g, n):
    return torch.exp(g.log_sigma[n] - g.log_alpha[n])


@dataclass(frozen=True)
class RungeKutta(Method):
    """Explicit RK table (c, a, b) in rho on eps: X_i = alpha_i (xbar_n + drho sum_j a_ij eps_j)."""

    c: tuple[Fr, ...] = (Fr(0),)
    a: tuple[tuple[Fr, ...], ...] = ()
    b: tuple[Fr, ...] = (Fr(1),)
    form: str = "noise"

    def __post_init__(self):
        s = len(self.c)
        if len(self.a) != s - 1 or len(self.b) != s or any(len(r) != i + 1 for i, r in enumerate(self.a)):
            raise ValueError(f"{self.name}: a must have rows of lengths 1..{s - 1} and b length {s}")
        for i, row in enumerate(self.a, start=1):
            if sum(row) != self.c[i]:
                raise ValueError(f"{self.name}: row {i} of a sums to {sum(row)}, not c[{i}] = {self.c[i]}")
        if sum(self.b) != 1:
            raise ValueError(f"{self.name}: b sums to {sum(self.b)}, not 1")

    @property
    def calls_per_step(self) -> int:
        return len(self.c)

    def _build(self, b, g, **options):
        if options:
            raise TypeError(f"{self.name} takes no options, got {sorted(options)}")
        _refuse_noise_start(self, g)
        for n in range(g.steps):
            k0 = b.call(g.t[n], n)
            if len(self.c) == 1 or g.sigma_zero(n + 1):
                b.update(g.ddim(n, k0, "noise"))
                continue
            r0, r1 = _rho(g, n), _rho(g, n + 1)
            inv_a0 = torch.exp(-g.log_alpha[n])
            calls = [k0]
            for i, row in enumerate(self.a, start=1):
                rho_i = r0 + float(self.c[i]) * (r1 - r0)
                t_i = g.path.t_of_noise_level(rho_i)
                a_i = torch.exp(g.path.log_alpha(t_i))
                X = LinComb({"s": a_i * inv_a0}) + LinComb({calls[j]: a_i * (r1 - r0) * float(row[j]) for j in range(i)})
                calls.append(b.call(t_i, n, X))
            a1 = torch.exp(g.log_alpha[n + 1])
            b.update(LinComb({"s": a1 * inv_a0}) + LinComb({calls[j]: a1 * (r1 - r0) * float(self.b[j])
                                                             for j in range(len(calls))}))


# Adams-Bashforth coefficients for equal steps, by number of outputs used
_AB = {1: (Fr(1),), 2: (Fr(3, 2), Fr(-1, 2)), 3: (Fr(23, 12), Fr(-16, 12), Fr(5, 12)),
       4: (Fr(55, 24), Fr(-59, 24), Fr(37, 24), Fr(-9, 24))}


@dataclass(frozen=True)
class FixedAdams(Method):
    """Adams-Bashforth with equal-step coefficients in rho on eps:
    xbar_{n+1} = xbar_n + (rho_{n+1} - rho_n) sum_j beta_j eps_{n-j}.

    Warm-up ``"lower"`` (iPNDM) uses AB1, AB2, AB3 on the first steps; ``"heun"`` (PLMS as in
    diffusers' PNDM with skip_prk_steps) takes the first step with Heun (2 calls, the second
    output discarded), then AB2, AB3, AB4. On grids whose steps in rho vary, the fixed
    coefficients are consistent only to first order; on smooth grids (step ratios 1 + O(h)) the
    method is second order.
    """

    steps_back: int = 4
    warmup: str = "lower"
    form: str = "noise"
    grid_requirement: ClassVar[str] = "smooth"

    @property
    def history(self) -> int:
        return self.steps_back - 1

    def _build(self, b, g, **options):
        if options:
            raise TypeError(f"{self.name} takes no options, got {sorted(options)}")
        _refuse_noise_start(self, g)
        hist = []
        for n in range(g.steps):
            k = b.call(g.t[n], n)
            hist.append(k)
            r0, r1 = _rho(g, n), _rho(g, n + 1)
            ratio = torch.exp(g.log_alpha[n + 1] - g.log_alpha[n])
            a1 = torch.exp(g.log_alpha[n + 1])
            if n == 0 and self.warmup == "heun" and not g.sigma_zero(1):
                HEUN.step_into(b, g, n, k)
                continue
            q = min(self.steps_back, len(hist))
            beta = _AB[q]
            b.update(LinComb({"s": ratio}) + LinComb({hist[-1 - j]: a1 * (r1 - r0) * float(beta[j]) for j in range(q)}))


@dataclass(frozen=True)
class _Heun(RungeKutta):
    def step_into(self, b, g, n, k0):
        r0, r1 = _rho(g, n), _rho(g, n + 1)
        a1 = torch.exp(g.log_alpha[n + 1])
        inv_a0 = torch.exp(-g.log_alpha[n])
        k1 = b.call(g.t[n + 1], n, LinComb({"s": a1 * inv_a0, k0: a1 * (r1 - r0)}))
        b.update(LinComb({"s": a1 * inv_a0, k0: a1 * (r1 - r0) / 2, k1: a1 * (r1 - r0) / 2}))


EULER = RungeKutta("euler", order=1, form="noise", paper="Euler in (rho, x/alpha); = DDIM (Karras et al. 2022)")
HEUN = _Heun("heun", order=2, form="noise", c=(Fr(0), Fr(1)), a=((Fr(1),),), b=(Fr(1, 2), Fr(1, 2)),
             paper="Karras et al., EDM, NeurIPS 2022, Alg. 1 (2nd-order Heun; Euler on the step to sigma = 0)")
RK4 = RungeKutta("rk4", order=4, form="noise", c=(Fr(0), Fr(1, 2), Fr(1, 2), Fr(1)),
                 a=((Fr(1, 2),), (Fr(0), Fr(1, 2)), (Fr(0), Fr(0), Fr(1))), b=(Fr(1, 6), Fr(1, 3), Fr(1, 3), Fr(1, 6)),
                 paper="classical RK4 in (rho, x/alpha) (DEIS rhoRK, Zhang & Chen 2023)")
IPNDM = FixedAdams("ipndm", order=2, form="noise", steps_back=4, warmup="lower",
                   paper="Zhang & Chen, DEIS, ICLR 2023 (improved PNDM): AB4 with AB1-3 warm-up")
PLMS = FixedAdams("plms", order=2, form="noise", steps_back=4, warmup="heun",
                  paper="Liu et al., PNDM, ICLR 2022: pseudo linear multistep (AB4 in the DDIM transfer)")

TABLES = [EULER, HEUN, RK4, IPNDM, PLMS]
