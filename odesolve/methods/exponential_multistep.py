"""Exponential multistep tables: DPM-Solver++(2M/3M), DPM-Solver multistep, UniPC, DEIS, LMS.

One step from lambda_n to lambda_{n+1} = lambda_n + h integrates an interpolant P of the last q
model outputs exactly against the exponential weight of the path:

    data form   x_{n+1} = sigma_{n+1}/sigma_n x_n + alpha_{n+1} int_0^h e^{-(h-tau)} P(lambda_n + tau) dtau
    noise form  x_{n+1} = alpha_{n+1}/alpha_n x_n + alpha_{n+1} int_{rho_n}^{rho_{n+1}} P d rho

With P interpolating in lambda (variable="lambda") write P(lambda_n + tau) = sum_i Delta_i (tau/h)^i,
where Delta = V^{-1} F with V_mi = r_m^i at the nodes r_m = (lambda_m - lambda_n)/h. Then the
integral is sum_i w_i Delta_i with w_i = i! chi_{i+1}(h) (chi in ``base``): exponential Adams
(Hochbruck & Ostermann 2011). The published solvers change single weights:

- ``two_node="midpoint"``: w_1 = chi_1(h)/2 with two nodes (DPM-Solver++(2M), Alg. 2; UniP-2 bh2);
- ``two_node="bh1"``: w_1 = h/2 with two nodes (UniPC's B(h) = h);
- ``half_second_difference``: w_2 = chi_3(h), half the Taylor value, as in the 3rd-order multistep
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
from typing import Literal

import numpy as np
import torch

from ..plan import LinComb
from .base import Method
from .exponential_rk import DPMPP_2S, ExponentialRK, _refuse_noise_start

_GL_X, _GL_W = (torch.tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(32))


@dataclass(frozen=True)
class ExponentialMultistep(Method):
    """Exponential linear multistep method; see the module docstring."""

    nodes: int = 2  # q, the number of outputs interpolated (the order of the interpolant + 1)
    variable: Literal["lambda", "t", "rho"] = "lambda"
    two_node: Literal["exact", "midpoint", "bh1"] = "exact"
    half_second_difference: bool = False
    corrector: bool = False
    warmup: ExponentialRK | None = None  # a singlestep table for the first step (its stages become nodes)

    def __post_init__(self):
        if self.variable != "lambda" and (self.form != "noise" or self.corrector or self.two_node != "exact"):
            raise ValueError(f"{self.name}: interpolation in {self.variable} is defined for the noise form only")
        if self.warmup is not None and self.warmup.form != self.form:
            raise ValueError(f"{self.name}: the warm-up table must have the same form")

    @property
    def history(self) -> int:
        return self.nodes - 1 + int(self.corrector)

    def _position(self, g, t, lam):
        if self.variable == "lambda":
            return lam
        return t if self.variable == "t" else torch.exp(-lam)

    def weights(self, g, n: int, pos: list) -> list:
        """Weights (including alpha_{n+1} or -sigma_{n+1}) of the outputs at positions ``pos``
        for step n; pos[0] is the step start."""
        q = len(pos)
        if self.variable == "lambda":
            h = g.lam[n + 1] - g.lam[n]
            r = torch.stack([(p - g.lam[n]) / h for p in pos])
            w = [math.factorial(i) * g.chi(i + 1, n, self.form) for i in range(q)]
            if q == 2 and self.two_node != "exact":
                w[1] = g.chi(1, n, self.form) / 2 if self.two_node == "midpoint" else h / 2
            if q == 3 and self.half_second_difference:
                w[2] = w[2] / 2
            V = r[:, None] ** torch.arange(q, dtype=torch.float64)[None, :]
            c = torch.linalg.solve(V.T, torch.stack(w))
            return list(g.scale(n + 1, self.form) * c)
        # noise form, Lagrange in u = t or rho, integrated over rho by Gauss-Legendre quadrature
        rho0, rho1 = torch.exp(g.log_sigma[n] - g.log_alpha[n]), torch.exp(g.log_sigma[n + 1] - g.log_alpha[n + 1])
        edges = torch.stack([rho0, rho1])
        kinks = getattr(g.path, "breakpoints", None)
        if self.variable == "t" and kinks is not None:  # t(rho) is only piecewise smooth: split there
            inner = kinks[(kinks < g.t[n]) & (kinks > g.t[n + 1])]
            edges = torch.cat([rho0[None], g.path.noise_level(inner.flip(0)), rho1[None]])
        a, b = edges[:-1, None], edges[1:, None]
        rho = (0.5 * (a + b) + 0.5 * (b - a) * _GL_X).flatten()
        quad = (0.5 * (b - a) * _GL_W).flatten()
        u = rho if self.variable == "rho" else g.path.t_of_noise_level(rho)
        nodes = torch.stack(pos)
        out = []
        for m in range(q):
            others = torch.cat([nodes[:m], nodes[m + 1:]])
            ell = torch.prod((u[:, None] - others[None, :]) / (nodes[m] - others)[None, :], dim=1)
            out.append(torch.sum(quad * ell) * torch.exp(g.log_alpha[n + 1]))
        return out

    def _build(self, b, g, lower_order_final: bool = False):
        _refuse_noise_start(self, g)
        one = torch.tensor(1.0, dtype=torch.float64)
        hist: list[tuple[int, torch.Tensor]] = []  # (call, position) of usable outputs
        last = None  # (nodes, prediction part) of the previous step, for the corrector
        N = g.steps
        for n in range(N):
            start = LinComb({"s": one})
            if n == 0 and self.warmup is not None and not g.singular(0):
                stages = self.warmup.step(b, g, 0, start)
                hist += [(k, self._position(g, b.times[k], lam)) for k, lam in stages]
                continue
            k = b.call(g.t[n], n)
            pos_n = self._position(g, g.t[n], g.lam[n])
            if self.corrector and last is not None:
                nodes, pred = last
                w = self.weights(g, n - 1, [p for _, p in nodes] + [pos_n])
                corr = LinComb({kk: wi for (kk, _), wi in zip(nodes + [(k, pos_n)], w)})
                start = start + corr - pred
            if bool(torch.isfinite(g.lam[n])):
                hist.append((k, pos_n))
            q = min(self.nodes, len(hist))
            if lower_order_final:
                q = min(q, 1 if n == N - 1 else 2 if n == N - 2 else q)
            # a step to sigma = 0 is singular in lambda only: interpolation in t or rho stays regular there
            singular = g.singular(n) and (self.variable == "lambda" or not g.sigma_zero(n + 1))
            if singular or q <= 1:
                up = g.ddim(n, k, self.form)
                pred = LinComb({k: up[k]})
                last = None if singular else ([(k, pos_n)], pred)
            else:
                nodes = hist[-q:][::-1]  # most recent first: the step start
                w = self.weights(g, n, [p for _, p in nodes])
                pred = LinComb({kk: wi for (kk, _), wi in zip(nodes, w)})
                last = (nodes, pred)
            b.update(start * g.ratio(n, n + 1, self.form) + pred)


def _family():
    P = "Lu et al., DPM-Solver++, 2022"
    U = "Zhao et al., UniPC, NeurIPS 2023"
    tables = [
        ExponentialMultistep("dpmpp-2m", order=2, form="data", nodes=2, two_node="midpoint",
                             paper=f"{P}, Alg. 2 (k-diffusion sample_dpmpp_2m, diffusers solver_type='midpoint')"),
        ExponentialMultistep("dpmpp-2m-taylor", order=2, form="data", nodes=2,
                             paper=f"{P}, Taylor weight h phi_2(-h) (diffusers solver_type='heun')"),
        ExponentialMultistep("dpmpp-3m", order=2, form="data", nodes=3, two_node="midpoint",
                             half_second_difference=True,
                             paper=f"{P}; the published 3rd-order multistep update: its D2 weight is half the "
                                   "Taylor value, so it is second order"),
        ExponentialMultistep("dpmpp-3m-corrected", order=3, form="data", nodes=3, warmup=DPMPP_2S,
                             paper=f"{P}, 3M with the Taylor-consistent D2 weight and a DPM-Solver++(2S) first "
                                   "step, so that the warm-up keeps order 3 (one extra model call)"),
        ExponentialMultistep("dpm-solver-2m", order=2, form="noise", nodes=2, two_node="midpoint",
                             paper="Lu et al. 2022, multistep noise form (diffusers algorithm_type='dpmsolver')"),
        ExponentialMultistep("dpm-solver-3m", order=2, form="noise", nodes=3, two_node="midpoint",
                             half_second_difference=True,
                             paper="Lu et al. 2022, multistep noise form, 3rd-order update as published (second order)"),
    ]
    for bh in ("bh1", "bh2"):
        two = "bh1" if bh == "bh1" else "midpoint"
        for p in (1, 2, 3):
            tables.append(ExponentialMultistep(f"unipc-{bh}-{p}", order=min(p + 1, 3), form="data", nodes=p,
                                               two_node=two, corrector=True,
                                               paper=f"{U}: UniP-{p} predictor with the UniC corrector, B(h) {bh}"))
            tables.append(ExponentialMultistep(f"unip-{bh}-{p}", order=min(p, 2), form="data", nodes=p, two_node=two,
                                               paper=f"{U}: UniP-{p} predictor alone, B(h) {bh}"))
    for p in (1, 2, 3):
        tables.append(ExponentialMultistep(f"deis-{p}", order=min(p, 2), form="noise", nodes=p, variable="t",
                                           paper="Zhang & Chen, DEIS, ICLR 2023: tAB, Lagrange in t, exact "
                                                 "exponential weights"))
        tables.append(ExponentialMultistep(f"lms-{p}", order=min(p, 2), form="noise", nodes=p, variable="rho",
                                           paper="variable-step Adams-Bashforth in sigma/alpha on eps (k-diffusion "
                                                 "sample_lms; DEIS rhoAB)"))
    for p in (1, 2, 3):
        tables.append(ExponentialMultistep(f"deis-logrho-{p}", order=min(p, 2), form="noise", nodes=p,
                                           paper="diffusers' DEISMultistepScheduler (algorithm 'deis', log-rho): "
                                                 "Lagrange in lambda = -log rho, exact weights, noise form"))
    tables.append(ExponentialMultistep("lms-4", order=2, form="noise", nodes=4, variable="rho",
                                       paper="variable-step Adams-Bashforth in sigma/alpha on eps, 4 nodes "
                                             "(k-diffusion sample_lms default order)"))
    return tables


TABLES = _family()
