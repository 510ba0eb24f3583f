"""Singlestep exponential Runge-Kutta tables (DDIM, DPM-Solver-2/3, DPM-Solver++(2S)).

In data form (x0 in the buffer) a stage at lambda_i = lambda_n + c_i h takes

    X_i = sigma_i/sigma_n x_n + alpha_i sum_j a_ij(c_i h) F_j,   a_ij(z) = sum_l A_ijl chi_l(z),
    chi_l(z) = z phi_l(-z),

and the step ends with the same formula at c = 1 and weights b_j. The noise form (eps in the
buffer) uses alpha_i/alpha_n, -sigma_i and chi_l(z) = z phi_l(+z). These are the exponential RK
methods of Hochbruck & Ostermann (2005) in lambda-time; a table is c, A and b with rational
entries. Steps of infinite length (to sigma = 0 or from alpha = 0) take the DDIM limit, since
their stages would sit at the singular end.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as Fr

import torch

from ..plan import LinComb
from .base import Method

Row = tuple[tuple[Fr, ...], ...]  # per earlier stage j: coefficients of chi_1, chi_2, ...


@dataclass(frozen=True)
class ExponentialRK(Method):
    """Explicit exponential RK table in lambda-time; see the module docstring."""

    c: tuple[Fr, ...] = (Fr(0),)
    a: tuple[Row, ...] = ()  # a[i-1] is the row of stage i >= 1
    b: Row = ((Fr(1),),)

    def __post_init__(self):
        s = len(self.c)
        if self.c[0] != 0:
            raise ValueError(f"{self.name}: c[0] must be 0 (the first stage is the step start)")
        if len(self.a) != s - 1 or any(len(row) != i + 1 for i, row in enumerate(self.a)) or len(self.b) != s:
            raise ValueError(f"{self.name}: a must have rows of lengths 1..{s - 1} and b length {s}")
        # consistency: at z -> 0 the weights of chi_1 sum to 1 in every row (exact for constant x0)
        for i, row in enumerate((*self.a, self.b)):
            total = sum((coeffs[0] if coeffs else 0) for coeffs in row)
            if total != 1:
                raise ValueError(f"{self.name}: the chi_1 weights of row {i + 1} sum to {total}, not 1")

    @property
    def calls_per_step(self) -> int:
        return len(self.c)

    def weights(self, row: Row, g, n: int, c: float = 1.0) -> list:
        """a_ij(c h_n) of one row, as float64 tensors."""
        return [sum(float(A) * g.chi(l + 1, n, self.form, c) for l, A in enumerate(coeffs)) for coeffs in row]

    def _build(self, b, g, **options):
        if options:
            raise TypeError(f"{self.name} takes no options, got {sorted(options)}")
        _refuse_noise_start(self, g)
        for n in range(g.steps):
            self.step(b, g, n, LinComb({"s": torch.tensor(1.0, dtype=torch.float64)}))

    def step(self, b, g, n: int, start: LinComb) -> list[tuple[int, torch.Tensor]]:
        """Emit the calls and the update of step n from the state expression ``start``; returns
        (call index, lambda) of every stage, for multistep methods that warm up with this table."""
        k0 = b.call(g.t[n], n, start if set(start) != {"s"} else None)
        if g.singular(n) or len(self.c) == 1:  # DDIM, exact at both singular ends
            up = g.ddim(n, k0, self.form)
            b.update(LinComb({k0: up[k0]}) + start * up["s"])
            return [(k0, g.lam[n])]
        h = g.lam[n + 1] - g.lam[n]
        calls = [k0]
        stages = [(k0, g.lam[n])]
        for i, row in enumerate(self.a, start=1):
            ci = float(self.c[i])
            t_i, la_i, ls_i = g.at_lambda(g.lam[n] + ci * h)
            lin = la_i if self.form == "noise" else ls_i
            base = g.log_alpha[n] if self.form == "noise" else g.log_sigma[n]
            scale = torch.exp(la_i) if self.form == "data" else -torch.exp(ls_i)
            w = self.weights(row, g, n, ci)
            X = start * torch.exp(lin - base) + LinComb({calls[j]: scale * w[j] for j in range(i)})
            calls.append(b.call(t_i, n, X))
            stages.append((calls[-1], g.lam[n] + ci * h))
        w = self.weights(self.b, g, n)
        scale = g.scale(n + 1, self.form)
        b.update(start * g.ratio(n, n + 1, self.form) + LinComb({calls[j]: scale * w[j] for j in range(len(calls))}))
        return stages


def _refuse_noise_start(method, g):
    if method.form == "noise" and bool(torch.isneginf(g.lam[0])):
        raise ValueError(f"grid starts at alpha = 0 (zero terminal SNR), where {method.name!r}, a noise-prediction "
                         "method, is undefined; use a data-prediction method (ddim, dpmpp-*, unipc-*)")


h2 = Fr(1, 2)
DDIM = ExponentialRK("ddim", order=1, form="data", c=(Fr(0),), a=(), b=((Fr(1),),),
                     paper="Song, Meng & Ermon, DDIM, ICLR 2021; = DPM-Solver-1 (Lu et al. 2022), exponential Euler")
DPM_SOLVER_1 = ExponentialRK("dpm-solver-1", order=1, form="noise", c=(Fr(0),), a=(), b=((Fr(1),),),
                             paper="Lu et al., DPM-Solver, NeurIPS 2022, eq. 3.7 (noise form of DDIM)")
# DPM-Solver-2 with r1 = 1/2 (Lu et al. 2022, Alg. 4): u = DDIM to the lambda-midpoint, then
# x_t = alpha_t/alpha_s x_s - sigma_t (e^h - 1) eps(u): the eps_s weight (1 - 1/(2 r1)) vanishes.
DPM_SOLVER_2 = ExponentialRK("dpm-solver-2", order=2, form="noise", c=(Fr(0), h2), a=(((Fr(1),),),),
                             b=((Fr(0),), (Fr(1),)), paper="Lu et al., DPM-Solver, NeurIPS 2022, Alg. 4 (r1 = 1/2)")
DPMPP_2S = ExponentialRK("dpmpp-2s", order=2, form="data", c=(Fr(0), h2), a=(((Fr(1),),),),
                         b=((Fr(0),), (Fr(1),)), paper="Lu et al., DPM-Solver++, 2022, Alg. 1 (r = 1/2)")
# DPM-Solver-3 (Lu et al. 2022, Alg. 5) with r1 = 1/3, r2 = 2/3:
#   u2 uses (r2/r1) chi_2(r2 h) (eps(u1) - eps_s); x_t uses (1/r2) chi_2(h) (eps(u2) - eps_s).
_R1, _R2 = Fr(1, 3), Fr(2, 3)
_DPM3 = dict(c=(Fr(0), _R1, _R2),
             a=(((Fr(1),),), ((Fr(1), -_R2 / _R1), (Fr(0), _R2 / _R1))),
             b=((Fr(1), -1 / _R2), (Fr(0),), (Fr(0), 1 / _R2)))
DPM_SOLVER_3 = ExponentialRK("dpm-solver-3", order=3, form="noise", **_DPM3,
                             paper="Lu et al., DPM-Solver, NeurIPS 2022, Alg. 5 (r1 = 1/3, r2 = 2/3)")
DPMPP_3S = ExponentialRK("dpmpp-3s", order=3, form="data", **_DPM3,
                         paper="Lu et al., DPM-Solver++, 2022, App. (singlestep 3rd order, data form)")

TABLES = [DDIM, DPM_SOLVER_1, DPM_SOLVER_2, DPMPP_2S, DPM_SOLVER_3, DPMPP_3S]
