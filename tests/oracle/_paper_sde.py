"""The stochastic samplers' published algorithms, written out independently in float64 on the EDM
path (x_t = x0 + t eps: alpha = 1, sigma = rho = t), driven by ``noise(k)``: the standard normal of
the k-th model call in the algorithm's order. Nothing here uses odesolve's tables, plans or executor;
integrals are scipy quadratures."""

from __future__ import annotations

import math

import numpy as np
from _oracle_lib import gmm_x0
from scipy import integrate


def _D(x, t):
    return gmm_x0(x, 1.0, float(t))


class _Calls:
    """The model, counting calls: ``D(x, t)`` and the normal of the current call."""

    def __init__(self, noise):
        self.k, self.noise = -1, noise

    def __call__(self, x, t):
        self.k += 1
        return _D(x, t)

    def xi(self, x):
        return self.noise(self.k + 1, x.shape)  # the normal of the call about to be made


def edm_sde(t, x, noise, s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.0):
    """Karras et al. 2022, Algorithm 2."""
    D = _Calls(noise)
    N = len(t) - 1
    for i in range(N):
        ti, tn = float(t[i]), float(t[i + 1])
        gamma = min(s_churn / N, math.sqrt(2) - 1) if s_tmin <= ti <= s_tmax else 0.0
        th = ti + gamma * ti
        if gamma > 0:
            x = x + math.sqrt(th**2 - ti**2) * s_noise * D.xi(x)
        d = (x - D(x, th)) / th
        xn = x + (tn - th) * d
        if tn != 0:
            d2 = (xn - D(xn, tn)) / tn
            xn = x + (tn - th) * (d + d2) / 2
        x = xn
    return x


def _heun(D, x, ta, tb):
    d = (x - D(x, ta)) / ta
    xn = x + (tb - ta) * d
    if tb == 0:
        return xn
    return x + (tb - ta) * (d + (xn - D(xn, tb)) / tb) / 2


def restart(t, x, noise, intervals=((0.1, 1.0, 2),)):
    """Xu et al. 2023: Heun; at t_min, K times a jump to t_max and Heun back over Karras-spaced steps
    (as many as the main grid has points inside (t_min, t_max), plus one)."""
    D = _Calls(noise)
    t = [float(v) for v in t]
    for i in range(len(t) - 1):
        a = t[i]
        for tmin, tmax, K in sorted([iv for iv in intervals if t[i + 1] <= iv[0] < t[i]], reverse=True):
            x = _heun(D, x, a, tmin)
            n = sum(tmin < v < tmax for v in t) + 1
            mini = [(tmax ** (1 / 7) + j / n * (tmin ** (1 / 7) - tmax ** (1 / 7))) ** 7 for j in range(n + 1)]
            mini[-1] = tmin
            for _ in range(K):
                x = x + math.sqrt(tmax**2 - tmin**2) * D.xi(x)
                for j in range(n):
                    x = _heun(D, x, mini[j], mini[j + 1])
            a = tmin
        if a != t[i + 1]:
            x = _heun(D, x, a, t[i + 1])
    return x


def score_sde_pc(t, x, noise, snr=0.16):
    """Song et al. 2021, Algorithm 3 (VE), corrector step size eps = 2 (snr sigma)^2."""
    D = _Calls(noise)
    for i in range(len(t) - 1):
        si, sn = float(t[i]), float(t[i + 1])
        eps = 2 * (snr * si) ** 2
        z = D.xi(x)
        x = x + eps * (D(x, si) - x) / si**2 + math.sqrt(2 * eps) * z
        z = D.xi(x)
        x = x + (si**2 - sn**2) * (D(x, si) - x) / si**2 + (math.sqrt(si**2 - sn**2) * z if sn > 0 else 0)
    return x


def er_sde(t, x, noise, stages):
    """Cui et al. 2023, ER-SDE-Solver-1/2/3 (VE: y = x, rho = sigma), phi(r) = r (e^{r^0.3} + 10)."""
    phi = lambda r: r * (math.exp(r**0.3) + 10)
    D = _Calls(noise)
    Ds, rhos = [], []
    for i in range(len(t) - 1):
        rs, rt = float(t[i]), float(t[i + 1])
        xi = D.xi(x)
        Ds.append(D(x, rs))
        rhos.append(rs)
        if rt == 0:
            x = Ds[-1]
            continue
        r = phi(rt) / phi(rs)
        xn = r * x + (1 - r) * Ds[-1] + math.sqrt(rt**2 - rs**2 * r**2) * xi
        if stages >= 2 and i >= 1:
            d1 = (Ds[-1] - Ds[-2]) / (rhos[-1] - rhos[-2])
            s1 = integrate.quad(lambda u: 1 / phi(u), rt, rs, epsabs=0, epsrel=1e-13)[0]
            xn = xn + ((rt - rs) + phi(rt) * s1) * d1
            if stages >= 3 and i >= 2:
                d1p = (Ds[-2] - Ds[-3]) / (rhos[-2] - rhos[-3])
                d2 = (d1 - d1p) / ((rhos[-1] - rhos[-3]) / 2)
                s2 = integrate.quad(lambda u, rs=rs: (u - rs) / phi(u), rt, rs, epsabs=0, epsrel=1e-13)[0]
                xn = xn + ((rt - rs) ** 2 / 2 + phi(rt) * s2) * d2
        x = xn
    return x


def _lagrange(nodes, j, u):
    return np.prod([(u - nodes[m]) / (nodes[j] - nodes[m]) for m in range(len(nodes)) if m != j])


def sa_solver(t, x, noise, predictor=3, corrector=3, tau=1.0):
    """Xue et al. 2023: SA-Predictor and SA-Corrector in data prediction, lambda = -log sigma, with
    warm-up (i + 1 predictor, i + 2 corrector nodes) and the last step uncorrected; weights by quadrature
    of sigma_t (1 + tau^2) e^{-tau^2 lambda_t} int e^{(1 + tau^2) lambda} l_j(lambda) dlambda."""
    kappa = 1 + tau * tau
    lam = [-math.log(float(v)) for v in t]
    sig = [float(v) for v in t]
    N = len(t) - 1

    def weights(nodes, i):
        ls, lt = lam[i], lam[i + 1]
        pre = sig[i + 1] * kappa * math.exp(-tau * tau * lt)
        f = lambda j: integrate.quad(
            lambda u: math.exp(kappa * (u - lt)) * _lagrange(nodes, j, u), ls, lt, epsrel=1e-13
        )
        return [pre * math.exp(kappa * lt) * f(j)[0] for j in range(len(nodes))]

    def linear(i, x, xi):
        h = lam[i + 1] - lam[i]
        return (
            sig[i + 1] / sig[i] * math.exp(-tau * tau * h) * x
            + sig[i + 1] * math.sqrt(-math.expm1(-2 * tau * tau * h)) * xi
        )

    calls = _Calls(noise)
    Ds = []
    x_prev = xi_prev = None
    for i in range(N):
        Ds.append(calls(x, sig[i]))  # at the predicted x~_i
        if i >= 1:  # correct step i - 1 with the new output
            c = min(corrector, i + 1)
            nodes = [lam[i - j] for j in range(c)]
            w = weights(nodes, i - 1)
            x = linear(i - 1, x_prev, xi_prev) + sum(w[j] * Ds[i - j] for j in range(c))
        xi = calls.noise(i, x.shape)
        p = min(predictor, i + 1)
        nodes = [lam[i - j] for j in range(p)]
        w = weights(nodes, i)
        x_prev, xi_prev = x, xi
        x = linear(i, x, xi) + sum(w[j] * Ds[i - j] for j in range(p))
    return x
