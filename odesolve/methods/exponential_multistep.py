"""Exponential multistep tables: DPM-Solver++(2M/3M), DPM-Solver multistep, UniPC, DEIS, LMS.

One step from lambda_n to lambda_{n+1} = lambda_n + h integrates an interpolant P of the last q
model outputs exactly against the exponential weight of the path:

    x0 prediction   x_{n+1} = sigma_{n+1}/sigma_n x_n + alpha_{n+1} int_0^h e^{-(h-tau)} P(lambda_n + tau) dtau
    eps prediction  x_{n+1} = alpha_{n+1}/alpha_n x_n + alpha_{n+1} int_{rho_n}^{rho_{n+1}} P d rho

With P interpolating in lambda (variable="lambda") write P(lambda_n + tau) = sum_i Delta_i (tau/h)^i,
where Delta = V^{-1} F with V_mi = r_m^i at the nodes r_m = (lambda_m - lambda_n)/h. Then the
integral is sum_i w_i Delta_i with w_i = i! chi_{i+1}(h) (chi in ``base``): exponential Adams
(Hochbruck & Ostermann 2011). The published solvers change single weights; a table lists them as
rows ``(m, i, Weight)`` of exact coefficients (``w_i = a h + sum_l b_l chi_l(h)``) that compile and the
symbolic derivation both read:

- ``MIDPOINT``: w_1 = chi_1(h)/2 with two nodes (DPM-Solver++(2M), Alg. 2; UniC with B(h) = e^h - 1);
- ``BH1``: w_1 = h/2 with two nodes (UniPC's B(h) = h);
- ``HALF_SECOND_DIFFERENCE``: w_2 = chi_3(h), half the Taylor value, as in the 3rd-order multistep
  update shared by DPM-Solver's code, diffusers and k-diffusion. It makes that update second order.

``corrector`` adds UniC (Zhao et al. 2023): after the call at the predicted x_{n+1} the same
formula is redone with that output as an extra node at r = 1, at no extra model call.

Interpolating in t or rho instead (DEIS tAB / rhoAB, Zhang & Chen 2023; k-diffusion's LMS)
gives weights int l_m(u(rho)) d rho, computed by 32-point Gauss-Legendre quadrature in rho, split
at the path's ``breakpoints`` (the integer times of a discrete schedule, where t(rho) has kinks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction as Fr

import numpy as np
import torch

from ..plan import Rows
from .base import Method, Rational, Variable, chi, fraction_rows, refuse_alpha_zero_start, table
from .exponential_rk import DPMPP_2S, ExponentialRK

_GL_X, _GL_W = (torch.tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(32))


@dataclass(frozen=True)
class Weight:
    """The exponential weight of one Taylor term as an exact expression:
    ``w = h_coeff * h + sum_l chi_coeffs[l-1] * chi_l(h)`` (chi in ``base``; h the step in lambda)."""

    chi: tuple[Rational, ...] = ()
    h: Rational = Fr(0)

    def __post_init__(self):
        object.__setattr__(self, "chi", fraction_rows("Weight", "chi", self.chi))
        object.__setattr__(self, "h", fraction_rows("Weight", "h", self.h))

    @staticmethod
    def taylor(i: int) -> Weight:
        """The exact weight of the i-th Taylor term, i! chi_{i+1}(h)."""
        return Weight(chi=(Fr(0),) * i + (Fr(math.factorial(i)),))


# The published variants, as (number of nodes, Taylor term, weight) rows replacing the exact weight
MIDPOINT = ((2, 1, Weight(chi=(Fr(1, 2),))),)  # w_1 = chi_1(h)/2: DPM-Solver++(2M) Alg. 2, UniC B(h) = e^h - 1
BH1 = ((2, 1, Weight(h=Fr(1, 2))),)  # w_1 = h/2: UniPC's B(h) = h
HALF_SECOND_DIFFERENCE = ((3, 2, Weight(chi=(Fr(0), Fr(0), Fr(1)))),)  # w_2 = chi_3(h): the published 3M


@table
class ExponentialMultistep(Method):
    """Exponential linear multistep method; see the module docstring.

    ``weights``: rows ``(m, i, Weight)`` replacing the exact weight of Taylor term i in the steps that
    interpolate m outputs (the corrector's formula has one more node); compile and the symbolic
    derivation both read them through [`weight`][odesolve.methods.exponential_multistep.ExponentialMultistep.weight]."""

    nodes: int = 2  # q, the number of outputs interpolated (the order of the interpolant + 1)
    variable: Variable = "lambda"
    weights: tuple[tuple[int, int, Weight], ...] = ()
    corrector: bool = False
    warmup: ExponentialRK | None = None  # a singlestep table for the first step (its stages become nodes)
    options = ("lower_order_final",)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ValueError(f"{self.name}: nodes must be a positive integer, got {self.nodes!r}")
        if self.variable != "lambda" and (self.prediction != "eps" or self.corrector or self.weights or self.warmup):
            raise ValueError(
                f"{self.name}: interpolation in {self.variable} is defined for eps prediction with exact "
                "weights, no corrector and no warm-up table"
            )
        if self.warmup is not None:
            if not isinstance(self.warmup, ExponentialRK) or self.warmup.prediction != self.prediction:
                raise ValueError(f"{self.name}: the warm-up must be an ExponentialRK table with the same prediction")
            if self.corrector:
                raise ValueError(f"{self.name}: a warm-up table and the UniC corrector cannot be combined")
        seen = set()
        for row in self.weights:
            if not (isinstance(row, tuple) and len(row) == 3 and isinstance(row[2], Weight)):
                raise TypeError(f"{self.name}: weights must be rows (nodes m, term i, Weight), got {row!r}")
            m, i, _ = row
            if not (isinstance(m, int) and isinstance(i, int) and 1 <= i < m):
                raise ValueError(
                    f"{self.name}: a weight row must replace a term 1 <= i < m of an m-node formula "
                    f"(term 0, chi_1, is what makes the step exact for constants), got m={m}, i={i}"
                )
            if (m, i) in seen:
                raise ValueError(f"{self.name}: two weight rows for term {i} of the {m}-node formula")
            seen.add((m, i))
        if self.order > self.nodes + int(self.corrector):
            raise ValueError(
                f"{self.name}: order {self.order} exceeds nodes + corrector = {self.nodes + int(self.corrector)}"
            )

    @property
    def history(self) -> int:
        return self.nodes - 1 + int(self.corrector)

    def weight(self, m: int, i: int) -> Weight:
        """The weight of Taylor term i in the m-node formula."""
        for mm, ii, w in self.weights:
            if (mm, ii) == (m, i):
                return w
        return Weight.taylor(i)

    def derivation(self, max_order=None, budget=None):
        """Closed-form exponential Adams coefficients
        ([`odesolve.analysis.symbolic.adams`][odesolve.analysis.symbolic.adams])."""
        from ..analysis.symbolic.adams import exponential_adams

        return exponential_adams(self, max_order, budget)

    # -- compile, vectorised over the steps ---------------------------------------------------------
    def _rows(self, g, lower_order_final: bool = False) -> Rows:
        refuse_alpha_zero_start(self, g)
        N = g.steps
        n = torch.arange(N)
        warm = self.warmup is not None and not bool(g.singular[0])
        sw = len(self.warmup.c) if warm else 1  # calls in step 0
        call = n + (sw - 1) * (n >= 1).long()  # the call at the start of step n
        rows = Rows(N + sw - 1)
        rows.call(call, n, g.t[:-1])
        if self.variable == "lambda":
            pos = g.lam[:-1]
        else:
            pos = g.t[:-1] if self.variable == "t" else g.rho(slice(0, N))
        if warm:  # the warm-up's stages become interpolation nodes
            lams = self.warmup.stage_rows(rows, g, n[:1], call[:1])
            pos = torch.cat([*lams, pos[1:]])
        skip = int(g.alpha_zero_start)  # the call at lambda = -inf is no node
        q = torch.clamp(call + 1 - skip, max=self.nodes)
        if lower_order_final:
            q = torch.where(n == N - 1, q.clamp(max=1), torch.where(n == N - 2, q.clamp(max=2), q))
        # a step to sigma = 0 is singular in lambda only: interpolation in t or rho stays regular there
        singular = g.singular & ((~g.sigma_zero_end) | (self.variable == "lambda"))
        q = torch.where(singular, 1, q).clamp(min=1)  # q = 1: the DDIM update
        own = torch.ones(N, dtype=torch.bool)
        if warm:
            own[0] = False
        P = torch.zeros(N, self.nodes, dtype=torch.float64)  # P[n, d]: weight of the call d before step n's
        one = n[own & (q == 1)]
        _, w = g.ddim(one, self.prediction)
        P = P.index_put((one, torch.zeros_like(one)), w)
        for m in range(2, self.nodes + 1):
            sel = n[own & (q == m)]
            if sel.numel():
                d = torch.arange(m)
                c = self._coefficients(g, sel, pos[call[sel][:, None] - d[None, :]])
                P = P.index_put((sel[:, None].expand(-1, m), d[None, :].expand(sel.numel(), -1)), c)
        ratio = g.ratio(n[own], self.prediction)
        rows.update_state(call[own], ratio)
        for d in range(self.nodes):
            sel = n[own & (q > d)]
            rows.update(call[sel], call[sel] - d, P[sel, d])
        if self.corrector:  # UniC: redo step n-1 with the output at its end as an extra node
            ratio_n = torch.zeros(N, dtype=torch.float64).index_put((n[own],), ratio)
            for m in range(1, self.nodes + 1):
                prev = n[:-1][(q[:-1] == m) & ~singular[:-1]]
                if not prev.numel():
                    continue
                new = prev + 1
                d = torch.arange(m)
                nodes = torch.cat([pos[call[new]][:, None], pos[call[prev][:, None] - d[None, :]]], 1)
                c = self._coefficients(g, prev, nodes)
                r = ratio_n[new]
                rows.update(call[new], call[new], r * c[:, 0])
                for dd in range(m):
                    rows.update(call[new], call[prev] - dd, r * (c[:, dd + 1] - P[prev, dd]))
        return rows

    def _coefficients(self, g, n: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """(M, m) weights (the factor alpha_{n+1} or -sigma_{n+1} included) of the outputs at the
        positions ``nodes`` (M, m) for the steps n (M,)."""
        m = nodes.shape[1]
        if self.variable == "lambda":
            h = g.h[n]
            r = (nodes - g.lam[n][:, None]) / h[:, None]
            w = torch.stack([self._weight_value(self.weight(m, i), h) for i in range(m)], 1)
            V = r[:, :, None] ** torch.arange(m, dtype=torch.float64)  # V[., node, power]
            c = torch.linalg.solve(V.transpose(1, 2), w[:, :, None])[:, :, 0]
            return g.scale(n + 1, self.prediction)[:, None] * c
        return self._quadrature(g, n, nodes) * torch.exp(g.log_alpha[n + 1])[:, None]

    def _weight_value(self, w: Weight, h: torch.Tensor) -> torch.Tensor:
        out = float(w.h) * h
        for l, cf in enumerate(w.chi, start=1):
            if cf:
                out = out + float(cf) * chi(l, h, self.prediction)
        return out

    def _quadrature(self, g, n: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """int_{rho_n}^{rho_{n+1}} l_j(u(rho)) d rho of the Lagrange basis in u = t or rho: 32-point
        Gauss-Legendre on every piece between the path's breakpoints (where t(rho) has kinks)."""
        M, m = nodes.shape
        rho0, rho1 = g.rho(n), g.rho(n + 1)
        kinks = getattr(g.path, "breakpoints", None) if self.variable == "t" else None
        if kinks is None:
            a, b, owner = rho0, rho1, torch.arange(M)
        else:
            kinks = kinks.to(torch.float64)
            t0, t1 = g.t[n].detach(), g.t[n + 1].detach()
            hi = torch.searchsorted(kinks, t0, right=False)  # kinks[lo:hi] lie strictly inside (t1, t0)
            lo = torch.searchsorted(kinks, t1, right=True)
            count = (hi - lo).clamp(min=0)
            owner = torch.repeat_interleave(torch.arange(M), count + 1)
            start = torch.cumsum(count + 1, 0) - (count + 1)
            i = torch.arange(owner.numel()) - start[owner]  # piece i of its step, from the noisy end
            inner = lambda idx: g.path.noise_level(kinks[idx.clamp(0, kinks.numel() - 1)])
            a = torch.where(i == 0, rho0[owner], inner(hi[owner] - i))
            b = torch.where(i == count[owner], rho1[owner], inner(hi[owner] - 1 - i))
        a, b = a[:, None], b[:, None]
        rho = 0.5 * (a + b) + 0.5 * (b - a) * _GL_X
        quad = 0.5 * (b - a) * _GL_W
        u = rho if self.variable == "rho" else g.path.t_of_noise_level(rho.flatten()).reshape(rho.shape)
        x = nodes[owner]  # (S, m)
        out = []
        for j in range(m):
            ell = torch.ones_like(u)
            for o in range(m):
                if o != j:
                    ell = ell * (u - x[:, o : o + 1]) / (x[:, j : j + 1] - x[:, o : o + 1])
            out.append((quad * ell).sum(1))
        pieces = torch.stack(out, 1)
        return torch.zeros(M, m, dtype=torch.float64).index_add(0, owner, pieces)


def _family():
    P = "Lu et al., DPM-Solver++, 2022"
    U = "Zhao et al., UniPC, NeurIPS 2023"
    tables = [
        ExponentialMultistep(
            "dpmpp-2m",
            order=2,
            prediction="x0",
            nodes=2,
            weights=MIDPOINT,
            paper=f"{P}, Alg. 2 (k-diffusion sample_dpmpp_2m, diffusers solver_type='midpoint')",
        ),
        ExponentialMultistep(
            "dpmpp-2m-taylor",
            order=2,
            prediction="x0",
            nodes=2,
            paper=f"{P}, Taylor weight h phi_2(-h) (diffusers solver_type='heun')",
        ),
        ExponentialMultistep(
            "dpmpp-3m",
            order=2,
            prediction="x0",
            nodes=3,
            weights=MIDPOINT + HALF_SECOND_DIFFERENCE,
            paper=f"{P}; the published 3rd-order multistep update: its D2 weight is half the "
            "Taylor value, so it is second order",
        ),
        ExponentialMultistep(
            "dpmpp-3m-taylor",
            order=2,
            prediction="x0",
            nodes=3,
            weights=HALF_SECOND_DIFFERENCE,
            paper=f"{P}; the published 3rd-order multistep update (half D2 weight, second order) with "
            "the Taylor weight in its 2-node warm-up step (k-diffusion sample_dpmpp_3m_sde with eta = 0)",
        ),
        ExponentialMultistep(
            "dpmpp-3m-corrected",
            order=3,
            prediction="x0",
            nodes=3,
            warmup=DPMPP_2S,
            paper=f"{P}, 3M with the Taylor-consistent D2 weight and a DPM-Solver++(2S) first "
            "step, so that the warm-up keeps order 3 (one extra model call)",
        ),
        ExponentialMultistep(
            "dpm-solver-2m",
            order=2,
            prediction="eps",
            nodes=2,
            weights=MIDPOINT,
            paper="Lu et al. 2022, multistep, eps prediction (diffusers algorithm_type='dpmsolver')",
        ),
        ExponentialMultistep(
            "dpm-solver-3m",
            order=2,
            prediction="eps",
            nodes=3,
            weights=MIDPOINT + HALF_SECOND_DIFFERENCE,
            paper="Lu et al. 2022, multistep eps-prediction form, 3rd-order update as published (second order)",
        ),
    ]
    for bh in ("bh1", "bh2"):
        two = BH1 if bh == "bh1" else MIDPOINT
        for p in (1, 2, 3):
            tables.append(
                ExponentialMultistep(
                    f"unipc-{bh}-{p}",
                    order=min(p + 1, 3),
                    prediction="x0",
                    nodes=p,
                    weights=two,
                    corrector=True,
                    paper=f"{U}: UniP-{p} predictor with the UniC corrector, B(h) {bh}",
                )
            )
            tables.append(
                ExponentialMultistep(
                    f"unip-{bh}-{p}",
                    order=min(p, 2),
                    prediction="x0",
                    nodes=p,
                    weights=two,
                    paper=f"{U}: UniP-{p} predictor alone, B(h) {bh}",
                )
            )
    for p in (1, 2, 3):
        tables.append(
            ExponentialMultistep(
                f"deis-{p}",
                order=min(p, 2),
                prediction="eps",
                nodes=p,
                variable="t",
                paper="Zhang & Chen, DEIS, ICLR 2023: tAB, Lagrange in t, exact exponential weights",
            )
        )
        tables.append(
            ExponentialMultistep(
                f"lms-{p}",
                order=min(p, 2),
                prediction="eps",
                nodes=p,
                variable="rho",
                paper="variable-step Adams-Bashforth in sigma/alpha on eps (k-diffusion sample_lms; DEIS rhoAB)",
            )
        )
    for p in (1, 2, 3):
        tables.append(
            ExponentialMultistep(
                f"deis-logrho-{p}",
                order=min(p, 2),
                prediction="eps",
                nodes=p,
                paper="diffusers' DEISMultistepScheduler (algorithm 'deis', log-rho): "
                "Lagrange in lambda = -log rho, exact weights, eps-prediction form",
            )
        )
    tables.append(
        ExponentialMultistep(
            "lms-4",
            order=2,
            prediction="eps",
            nodes=4,
            variable="rho",
            paper="variable-step Adams-Bashforth in sigma/alpha on eps, 4 nodes (k-diffusion sample_lms default order)",
        )
    )
    return tables


def _split(tables):
    """Tables whose plans equal an earlier table's on every grid become aliases: one output per step
    (nodes = 1, no corrector) is the DDIM update of the table's prediction (ddim / dpm-solver-1),
    and tables with the same prediction, nodes, variable, used weight rows and corrector are equal."""
    kept, aliased, seen = [], [], {}
    for m in tables:
        if m.nodes == 1 and not m.corrector:
            aliased.append((m, "ddim" if m.prediction == "x0" else "dpm-solver-1"))
            continue
        used = tuple(sorted((mm, i, w) for mm, i, w in m.weights if mm <= m.nodes + int(m.corrector)))
        key = (m.prediction, m.nodes, m.variable, used, m.corrector, m.warmup)
        if key in seen:
            aliased.append((m, seen[key]))
        else:
            seen[key] = m.name
            kept.append(m)
    return kept, tuple(aliased)


TABLES, ALIASED = _split(_family())
