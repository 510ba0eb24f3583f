"""The published updates, written out independently in float64 from the papers' formulas.

Each function integrates one method over the times ``t`` (decreasing) of ``path`` from ``x`` with
the exact Gaussian-mixture denoiser and returns the final state. Nothing here uses odesolve's
method tables, plans or executor: only the path's alpha, sigma, lambda and its inverse.

Conventions shared with k-diffusion and diffusers: a step that ends at sigma = 0 (lambda = +inf)
is the DDIM step (x = x0) for the methods that interpolate in lambda or use Runge-Kutta stages;
for interpolation in rho or t (LMS, DEIS tAB) that step is regular and keeps the full order.
Multistep methods start with lower orders.
"""

from __future__ import annotations

import numpy as np
import torch
from _oracle_lib import gmm_x0
from scipy import integrate


class Geo:
    def __init__(self, path, t):
        self.path = path
        self.t = torch.as_tensor(t, dtype=torch.float64)
        self.a = path.alpha(self.t)
        self.s = path.sigma(self.t)
        self.lam = path.lambda_(self.t)
        self.rho = self.s / self.a
        self.N = self.t.numel() - 1

    def x0(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return gmm_x0(x, self.path.alpha(t), self.path.sigma(t))

    def eps(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        a, s = self.path.alpha(t), self.path.sigma(t)
        return (x - a * gmm_x0(x, a, s)) / s

    def at(self, lam):
        """(t, alpha, sigma) at half log-SNR ``lam``."""
        t = self.path.t_of_lambda(torch.as_tensor(lam, dtype=torch.float64))
        return t, self.path.alpha(t), self.path.sigma(t)

    def zero_end(self, n):
        return bool(self.s[n + 1] == 0)

    def ddim(self, x, n, x0):
        """DDIM, eta = 0 (Song et al. 2021, eq. 12): x' = alpha' x0 + sigma' (x - alpha x0) / sigma."""
        return self.a[n + 1] * x0 + self.s[n + 1] * (x - self.a[n] * x0) / self.s[n]


def _expm1(z):
    return torch.expm1(torch.as_tensor(z, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# DDIM, DPM-Solver (singlestep), DPM-Solver++ (2S)
# ---------------------------------------------------------------------------------------------


def ddim(path, t, x, noise=False):
    g = Geo(path, t)
    for n in range(g.N):
        if noise:  # DPM-Solver-1: x' = alpha'/alpha x - sigma' (e^h - 1) eps
            e = g.eps(x, g.t[n])
            if g.zero_end(n):
                x = g.ddim(x, n, (x - g.s[n] * e) / g.a[n])
            else:
                h = g.lam[n + 1] - g.lam[n]
                x = g.a[n + 1] / g.a[n] * x - g.s[n + 1] * _expm1(h) * e
        else:
            x = g.ddim(x, n, g.x0(x, g.t[n]))
    return x


def dpm_solver_2(path, t, x, data=False):
    """DPM-Solver-2 (Lu et al. 2022, Alg. 4, r1 = 1/2) / DPM-Solver++(2S) (Alg. 1, r = 1/2)."""
    g = Geo(path, t)
    for n in range(g.N):
        if g.zero_end(n):
            x = g.ddim(x, n, g.x0(x, g.t[n]))
            continue
        h = g.lam[n + 1] - g.lam[n]
        t1, a1, s1 = g.at(g.lam[n] + h / 2)
        if data:
            m = g.x0(x, g.t[n])
            u = s1 / g.s[n] * x - a1 * _expm1(-h / 2) * m
            x = g.s[n + 1] / g.s[n] * x - g.a[n + 1] * _expm1(-h) * g.x0(u, t1)
        else:
            e = g.eps(x, g.t[n])
            u = a1 / g.a[n] * x - s1 * _expm1(h / 2) * e
            x = g.a[n + 1] / g.a[n] * x - g.s[n + 1] * _expm1(h) * g.eps(u, t1)
    return x


def dpm_solver_3(path, t, x, data=False):
    """DPM-Solver-3 (Lu et al. 2022, Alg. 5, r1 = 1/3, r2 = 2/3); x0-prediction form for DPM-Solver++(3S)."""
    g = Geo(path, t)
    r1, r2 = 1 / 3, 2 / 3
    for n in range(g.N):
        if g.zero_end(n):
            x = g.ddim(x, n, g.x0(x, g.t[n]))
            continue
        h = g.lam[n + 1] - g.lam[n]
        ts1, a1, s1 = g.at(g.lam[n] + r1 * h)
        ts2, a2, s2 = g.at(g.lam[n] + r2 * h)
        if data:
            # chi_1(z) = 1 - e^-z, chi_2(z) = 1 + (e^-z - 1)/z
            c1 = lambda z: -_expm1(-z)
            c2 = lambda z: 1 + _expm1(-z) / z
            m = g.x0(x, g.t[n])
            u1 = s1 / g.s[n] * x + a1 * c1(r1 * h) * m
            D1 = g.x0(u1, ts1) - m
            u2 = s2 / g.s[n] * x + a2 * c1(r2 * h) * m + a2 * (r2 / r1) * c2(r2 * h) * D1
            D2 = g.x0(u2, ts2) - m
            x = g.s[n + 1] / g.s[n] * x + g.a[n + 1] * c1(h) * m + g.a[n + 1] / r2 * c2(h) * D2
        else:
            e = g.eps(x, g.t[n])
            u1 = a1 / g.a[n] * x - s1 * _expm1(r1 * h) * e
            D1 = g.eps(u1, ts1) - e
            u2 = a2 / g.a[n] * x - s2 * _expm1(r2 * h) * e - s2 * (r2 / r1) * (_expm1(r2 * h) / (r2 * h) - 1) * D1
            D2 = g.eps(u2, ts2) - e
            x = g.a[n + 1] / g.a[n] * x - g.s[n + 1] * _expm1(h) * e - g.s[n + 1] / r2 * (_expm1(h) / h - 1) * D2
    return x


# ---------------------------------------------------------------------------------------------
# multistep: DPM-Solver++(2M, 3M), DPM-Solver multistep (eps prediction)
# ---------------------------------------------------------------------------------------------


def dpmpp_2m(path, t, x, variant="midpoint", data=True, lower_order_final=False):
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) and its eps-prediction twin; ``variant="taylor"``
    replaces the 1/2 (e^{-h} - 1) weight of D1 by h phi_2(-h) (diffusers' solver_type="heun")."""
    g = Geo(path, t)
    prev = None
    for n in range(g.N):
        m = g.x0(x, g.t[n]) if data else g.eps(x, g.t[n])
        h = g.lam[n + 1] - g.lam[n]
        low = lower_order_final and n == g.N - 1
        if prev is None or g.zero_end(n) or low:
            x = g.ddim(x, n, m if data else (x - g.s[n] * m) / g.a[n])
        else:
            r = (g.lam[n] - g.lam[n - 1]) / h
            D1 = (m - prev) / r
            if data:
                base = g.s[n + 1] / g.s[n] * x - g.a[n + 1] * _expm1(-h) * m
                w = -0.5 * g.a[n + 1] * _expm1(-h) if variant == "midpoint" else g.a[n + 1] * (_expm1(-h) / h + 1)
            else:
                base = g.a[n + 1] / g.a[n] * x - g.s[n + 1] * _expm1(h) * m
                w = -0.5 * g.s[n + 1] * _expm1(h) if variant == "midpoint" else -g.s[n + 1] * (_expm1(h) / h - 1)
            x = base + w * D1
        prev = m
    return x


def dpmpp_3m(path, t, x, d2_factor=1.0, data=True, warmup="midpoint", lower_order_final=False):
    """The third-order multistep update of DPM-Solver++ (code of Lu et al.; docs/theory.md section 4):

    x' = sigma'/sigma x - alpha'(e^-h - 1) m0 + alpha' h phi_2(-h) D1 + d2_factor * alpha' h phi_3(-h) D2

    with D1 = D1_0 + r0/(r0+r1)(D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0 + r1). ``d2_factor=1`` is the
    published update, 2 the Taylor-consistent one. ``warmup``: the second step as 2M "midpoint"
    or "taylor", or "2s": a DPM-Solver++(2S) first step whose midpoint output is a node."""
    g = Geo(path, t)
    nodes = []  # (lambda, output), most recent last
    for n in range(g.N):
        h = g.lam[n + 1] - g.lam[n]
        if n == 0 and warmup == "2s" and not g.zero_end(0):
            m = g.x0(x, g.t[0]) if data else g.eps(x, g.t[0])
            t1, a1, s1 = g.at(g.lam[0] + h / 2)
            u = s1 / g.s[0] * x - a1 * _expm1(-h / 2) * m
            mu = g.x0(u, t1)
            x = g.s[1] / g.s[0] * x - g.a[1] * _expm1(-h) * mu
            nodes = [(g.lam[0], m), (g.lam[0] + h / 2, mu)]
            continue
        m = g.x0(x, g.t[n]) if data else g.eps(x, g.t[n])
        q = min(3, len(nodes) + 1)
        if lower_order_final:
            q = min(q, 1 if n == g.N - 1 else 2 if n == g.N - 2 else q)
        if g.zero_end(n) or q == 1:
            x = g.ddim(x, n, m if data else (x - g.s[n] * m) / g.a[n])
        elif q == 2:
            r0 = (g.lam[n] - nodes[-1][0]) / h
            D1 = (m - nodes[-1][1]) / r0
            if data:
                w = -0.5 * g.a[n + 1] * _expm1(-h) if warmup == "midpoint" else g.a[n + 1] * (_expm1(-h) / h + 1)
                x = g.s[n + 1] / g.s[n] * x - g.a[n + 1] * _expm1(-h) * m + w * D1
            else:
                w = -0.5 * g.s[n + 1] * _expm1(h) if warmup == "midpoint" else -g.s[n + 1] * (_expm1(h) / h - 1)
                x = g.a[n + 1] / g.a[n] * x - g.s[n + 1] * _expm1(h) * m + w * D1
        else:
            (l2, m2), (l1, m1) = nodes[-2], nodes[-1]
            r0, r1 = (g.lam[n] - l1) / h, (l1 - l2) / h
            D1_0, D1_1 = (m - m1) / r0, (m1 - m2) / r1
            D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
            D2 = (D1_0 - D1_1) / (r0 + r1)
            if data:
                phi2 = _expm1(-h) / h + 1  # h phi_2(-h)
                phi3 = -((_expm1(-h) + h) / h**2 - 0.5)  # h phi_3(-h)
                x = (
                    g.s[n + 1] / g.s[n] * x
                    - g.a[n + 1] * _expm1(-h) * m
                    + g.a[n + 1] * phi2 * D1
                    + d2_factor * g.a[n + 1] * phi3 * D2
                )
            else:
                phi2 = _expm1(h) / h - 1  # h phi_2(h)
                phi3 = (_expm1(h) - h) / h**2 - 0.5  # h phi_3(h)
                x = (
                    g.a[n + 1] / g.a[n] * x
                    - g.s[n + 1] * _expm1(h) * m
                    - g.s[n + 1] * phi2 * D1
                    - d2_factor * g.s[n + 1] * phi3 * D2
                )
        if torch.isfinite(g.lam[n]):
            nodes.append((g.lam[n], m))
    return x


# ---------------------------------------------------------------------------------------------
# UniPC (Zhao et al. 2023): the B(h) system
# ---------------------------------------------------------------------------------------------


def _unipc_solve(r, h, bh, q, corrector):
    """Coefficients a of the UniP-q predictor (nodes r_1..r_{q-1}) or the UniC corrector (nodes
    r_1..r_{q-1} and 1): R a = g / B(h), R_ik = r_k^(i-1), g_i = -i! h phi_{i+1}(-h) (x0 prediction)."""
    hh = -h
    B = hh if bh == "bh1" else torch.expm1(hh)
    g, hphi, fact = [], torch.expm1(hh) / hh - 1, 1.0
    for i in range(1, q + 1):
        g.append(hphi * fact / B)
        fact *= i + 1
        hphi = hphi / hh - 1 / fact
    rk = torch.stack(list(r) + [torch.ones((), dtype=torch.float64)])
    R = torch.stack([rk**i for i in range(q)])
    if not corrector:
        if q == 2:
            return B, torch.tensor([0.5], dtype=torch.float64)
        return B, torch.linalg.solve(R[:-1, :-1], torch.stack(g[:-1]))
    if q == 1:
        return B, torch.tensor([0.5], dtype=torch.float64)
    return B, torch.linalg.solve(R, torch.stack(g))


def unipc(path, t, x, p, bh="bh2", corrector=True, lower_order_final=False):
    """UniPC-p (x0 prediction): UniP-p predictor, UniC corrector at no extra model call (the model is
    called at the predicted point and its output corrects it); no corrector after the last step."""
    g = Geo(path, t)
    hist = []  # (lambda, x0) of the past calls, most recent last
    last = None  # (n, x at step start, nodes used, order) of the previous predictor
    for n in range(g.N):
        m = g.x0(x, g.t[n])
        if corrector and last is not None:
            pn, xs, used, q = last
            h = g.lam[pn + 1] - g.lam[pn]
            m0 = used[0][1]
            r = [(lam - g.lam[pn]) / h for lam, _ in used[1:]]
            B, a = _unipc_solve(r, h, bh, q, True)
            D = [(mm - m0) / rr for rr, (_, mm) in zip(r, used[1:])]
            corr = sum(ai * Di for ai, Di in zip(a[:-1], D)) + a[-1] * (m - m0)
            x = g.s[pn + 1] / g.s[pn] * xs - g.a[pn + 1] * torch.expm1(-h) * m0 - g.a[pn + 1] * B * corr
        hist.append((g.lam[n], m))
        q = min(p, len(hist))
        if lower_order_final:
            q = min(q, 1 if n == g.N - 1 else 2 if n == g.N - 2 else q)
        if g.zero_end(n):
            x = g.ddim(x, n, m)
            last = None
            continue
        h = g.lam[n + 1] - g.lam[n]
        used = hist[::-1][:q]  # step start first
        xs = x
        if q == 1:
            x = g.s[n + 1] / g.s[n] * x - g.a[n + 1] * torch.expm1(-h) * m
        else:
            r = [(lam - g.lam[n]) / h for lam, _ in used[1:]]
            B, a = _unipc_solve(r, h, bh, q, False)
            D = [(mm - m) / rr for rr, (_, mm) in zip(r, used[1:])]
            x = (
                g.s[n + 1] / g.s[n] * x
                - g.a[n + 1] * torch.expm1(-h) * m
                - g.a[n + 1] * B * sum(ai * Di for ai, Di in zip(a, D))
            )
        last = (n, xs, used, q)
    return x


# ---------------------------------------------------------------------------------------------
# DEIS tAB and rhoAB (LMS): Lagrange interpolation of eps, integrated over rho
# ---------------------------------------------------------------------------------------------


def _lagrange(nodes, j, u):
    out = 1.0
    for k, nk in enumerate(nodes):
        if k != j:
            out = out * (u - nk) / (nodes[j] - nk)
    return out


def adams_rho(path, t, x, p, variable="t", lower_order_final=False):
    """xbar' = xbar + sum_j C_j eps_j, C_j = int_{rho_n}^{rho_{n+1}} l_j(u(rho)) d rho, with the
    Lagrange basis l_j in u = t (DEIS tAB, Zhang & Chen 2023, eq. 15; 100-point Gauss-Legendre,
    scipy.integrate.fixed_quad) or u = rho (k-diffusion's LMS; exact polynomial integration)."""
    g = Geo(path, t)
    eps_hist, pos_hist = [], []
    for n in range(g.N):
        e = g.eps(x, g.t[n])
        eps_hist.append(e)
        pos_hist.append(float(g.t[n]) if variable == "t" else float(g.rho[n]))
        q = min(p, len(eps_hist))
        if lower_order_final:
            q = min(q, 1 if n == g.N - 1 else 2 if n == g.N - 2 else q)
        nodes = pos_hist[::-1][:q]
        eps = eps_hist[::-1][:q]
        r0, r1 = float(g.rho[n]), float(g.rho[n + 1])
        C = []
        for j in range(q):
            if variable == "t":  # t(rho) is smooth on a continuous path: 100-point Gauss-Legendre
                f = lambda rho, j=j, nodes=nodes: _lagrange(
                    nodes, j, path.t_of_noise_level(torch.as_tensor(rho)).numpy()
                )
                C.append(integrate.fixed_quad(f, r0, r1, n=100)[0])
            else:
                others = [nodes[k] for k in range(q) if k != j]
                basis = np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial([1.0])
                poly = basis / np.prod([nodes[j] - o for o in others])
                P = poly.integ()
                C.append(P(r1) - P(r0))
        xbar = x / g.a[n] + sum(c * e_ for c, e_ in zip(C, eps))
        x = g.a[n + 1] * xbar
    return x


# ---------------------------------------------------------------------------------------------
# classical methods in (rho, xbar): Euler, EDM Heun, RK4, PLMS, iPNDM
# ---------------------------------------------------------------------------------------------


def _f(g, xbar, rho):
    """d xbar / d rho = eps(x, t(rho)) with x = alpha xbar."""
    tt = g.path.t_of_noise_level(torch.as_tensor(rho, dtype=torch.float64))
    a = g.path.alpha(tt)
    return g.eps(a * xbar, tt)


def rk(path, t, x, kind):
    """Euler, EDM Heun (Karras et al. 2022, Alg. 1: Euler on the step to sigma = 0) and classical
    RK4 in (rho, xbar), rho = sigma / alpha, xbar = x / alpha."""
    g = Geo(path, t)
    for n in range(g.N):
        xb, r0, r1 = x / g.a[n], g.rho[n], g.rho[n + 1]
        dr = r1 - r0
        k1 = g.eps(x, g.t[n])
        if kind == "euler" or r1 == 0:
            xb = xb + dr * k1
        elif kind == "heun":
            k2 = _f(g, xb + dr * k1, r1)
            xb = xb + dr * (k1 + k2) / 2
        else:
            k2 = _f(g, xb + dr / 2 * k1, r0 + dr / 2)
            k3 = _f(g, xb + dr / 2 * k2, r0 + dr / 2)
            k4 = _f(g, xb + dr * k3, r1)
            xb = xb + dr * (k1 + 2 * k2 + 2 * k3 + k4) / 6
        x = g.a[n + 1] * xb
    return x


def _transfer(g, x, e, n):
    """PNDM's transfer phi(x, eps, t_n -> t_{n+1}) = the DDIM step with noise eps."""
    return g.a[n + 1] / g.a[n] * x + (g.s[n + 1] - g.a[n + 1] * g.s[n] / g.a[n]) * e


_AB = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def plms(path, t, x, heun_start=True):
    """PLMS of Liu et al. (2022) as in the CompVis/Stable Diffusion code: the first step is the
    pseudo improved Euler (average of eps at both ends; the second output is not kept), then
    AB2, AB3, AB4 on eps in the DDIM transfer. ``heun_start=False`` gives iPNDM (AB1..AB4)."""
    g = Geo(path, t)
    old = []
    for n in range(g.N):
        e = g.eps(x, g.t[n])
        if not old and heun_start and not g.zero_end(0):
            x1 = _transfer(g, x, e, n)
            e1 = g.eps(x1, g.t[n + 1])
            x = _transfer(g, x, (e + e1) / 2, n)
            old.append(e)
            continue
        old.append(e)
        c = _AB[min(4, len(old))]
        x = _transfer(g, x, sum(ci * ei for ci, ei in zip(c, old[::-1])), n)
    return x


PAPER = {
    "ddim": lambda p, t, x: ddim(p, t, x),
    "dpm-solver-1": lambda p, t, x: ddim(p, t, x, noise=True),
    "dpm-solver-2": lambda p, t, x: dpm_solver_2(p, t, x),
    "dpmpp-2s": lambda p, t, x: dpm_solver_2(p, t, x, data=True),
    "dpm-solver-3": lambda p, t, x: dpm_solver_3(p, t, x),
    "dpmpp-3s": lambda p, t, x: dpm_solver_3(p, t, x, data=True),
    "dpmpp-2m": lambda p, t, x: dpmpp_2m(p, t, x),
    "dpmpp-2m-taylor": lambda p, t, x: dpmpp_2m(p, t, x, "taylor"),
    "dpm-solver-2m": lambda p, t, x: dpmpp_2m(p, t, x, data=False),
    "dpmpp-3m": lambda p, t, x: dpmpp_3m(p, t, x),
    "dpm-solver-3m": lambda p, t, x: dpmpp_3m(p, t, x, data=False),
    "dpmpp-3m-corrected": lambda p, t, x: dpmpp_3m(p, t, x, d2_factor=2.0, warmup="2s"),
    **{
        f"unipc-{bh}-{q}": (lambda p, t, x, q=q, bh=bh: unipc(p, t, x, q, bh))
        for bh in ("bh1", "bh2")
        for q in (1, 2, 3)
    },
    **{
        f"unip-{bh}-{q}": (lambda p, t, x, q=q, bh=bh: unipc(p, t, x, q, bh, corrector=False))
        for bh in ("bh1", "bh2")
        for q in (1, 2, 3)
    },
    **{f"deis-{q}": (lambda p, t, x, q=q: adams_rho(p, t, x, q, "t")) for q in (1, 2, 3)},
    **{f"lms-{q}": (lambda p, t, x, q=q: adams_rho(p, t, x, q, "rho")) for q in (1, 2, 3, 4)},
    "euler": lambda p, t, x: rk(p, t, x, "euler"),
    "heun": lambda p, t, x: rk(p, t, x, "heun"),
    "rk4": lambda p, t, x: rk(p, t, x, "rk4"),
    "plms": lambda p, t, x: plms(p, t, x),
    "ipndm": lambda p, t, x: plms(p, t, x, heun_start=False),
}
