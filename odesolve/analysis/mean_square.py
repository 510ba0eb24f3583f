r"""Mean-square stability of stochastic plans on linear test SDEs, computed from the plan rows.

The test equations
------------------
A stochastic plan discretises the reverse SDE of its path. On the linear test model of
``odesolve.analysis.stability`` (``x0 = mu x / alpha``, or ``eps = -mu x / alpha``) the reverse
SDE with ``eta = 1`` is linear with additive noise. In the scaled state of each test it reads

- ``test="lambda"``: ``y = x / sigma``, ``dy = (2 mu - 1) y dlambda + sqrt(2) dW_lambda``;
- ``test="rho"``: ``xbar = x / alpha``, ``dxbar = 2 mu xbar ds + sqrt(2 rho) dW_s`` (``s = -rho``),

so the SDE's own drift rate is ``a = 2 mu - 1`` (lambda) or ``a = 2 mu`` (rho): twice the score term
of the probability-flow ODE. Over a step of length ``h`` in the test's variable, ``z = a h``.

Two tests are built from this (what they do not cover: a plan that adds noise to a call's input, as EDM's
churn and Restart's jumps do, is refused; and the multiplicative reading of the noise fits the reverse
SDE's own discretisations, not samplers of other SDEs with the same marginals, such as ER-SDE's noise
scales or a Langevin corrector, whose radii it still computes but whose rates are those of other SDEs):

- ``noise="multiplicative"``: Saito & Mitsui (1996) / Higham (2000), ``dX = a X dt + nu X dW``. A plan
  adds ``c_k xi_k`` at call k, ``c_k`` its discretisation of ``G dW`` over the call's interval, with
  ``G`` the additive diffusion above in x units (``G^2 = 2 sigma^2`` per unit lambda, ``2 sigma alpha``
  per unit rho). The multiplicative test replaces the diffusion ``G`` by ``nu X_k`` at the call's input
  (Ito): the call adds ``c_k (nu X_k / G(t_k)) xi_k``. Euler-Maruyama then is
  ``X_{n+1} = (1 + z) X_n + w X_n xi`` with ``w = nu sqrt(h)``, mean-square stable iff
  ``|1 + z|^2 + |w|^2 < 1`` (Higham 2000, eq. 2.7).
- ``noise="additive"``: the plan's own noise. The mean square stays bounded iff the deterministic
  part is stable (the radius is that of ``odesolve.analysis.stability.step_matrices``, squared);
  what the noise decides is the level: ``stationary_variance`` compares the scheme's stationary
  ``E y^2`` with the exact ``1 / (-a)`` (lambda test, real ``a < 0``), the long-time accuracy test of
  additive-noise schemes (Burrage, Burrage & Mitsui 2000).

How it is computed
------------------
One grid step maps ``v_n = (scaled state, scaled live outputs, 1)`` to ``v_{n+1} = A(xi) v_n``, a
polynomial in the step's normals, multilinear (a call's ``xi_k`` multiplies its input, which does not
contain ``xi_k``). The rows of the step are run call by call through the reference interpreter
(``odesolve.analysis._plan.PlanStructure.run``) with one coordinate per monomial of the normals;
the second moment ``P = E v v^*`` then evolves by the linear operator
``L = sum_{S,T} E[xi^S xi^T] A_S (x) conj(A_T)``, with the Gaussian moments from the covariance of the
step's normals (their Brownian intervals; Isserlis). Mean-square stable: spectral radius of ``L`` on
the homogeneous coordinates ``< 1``. Normals of different steps must be independent (plans whose
noise intervals overlap across steps are refused).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

from ..plan import Plan
from ._plan import structure
from .stability import STABLE_TOL, _call_coefficients, _check_test, _Interior, _scales, spectral_radius

Noise = Literal["multiplicative", "additive"]

__all__ = [
    "MeanSquareRegion",
    "Noise",
    "moment_operators",
    "ms_radius",
    "ms_stability_region",
    "plot_ms_regions",
    "stationary_variance",
]


def _check_noise(noise) -> str:
    if noise not in ("multiplicative", "additive"):
        raise ValueError(f"noise must be 'multiplicative' or 'additive', got {noise!r}")
    return noise


def _diffusion(plan: Plan, test: str) -> np.ndarray:
    """G(t_k) at every call, in x units per unit of the test's variable (see the module docstring)."""
    a, s = plan.path.alpha(plan.times).numpy(), plan.path.sigma(plan.times).numpy()
    return np.sqrt(2.0) * s if test == "lambda" else np.sqrt(2.0 * s * a)


def _covariance(plan: Plan, calls: list[int]) -> np.ndarray:
    """Covariance of the normals of ``calls``: signed overlap of their Brownian intervals over the
    square root of their lengths; a call without an interval draws an independent normal."""
    m = len(calls)
    C = np.eye(m)
    iv = None if plan.noise_interval is None else plan.noise_interval.detach().cpu().numpy()
    if iv is None:
        return C
    for i in range(m):
        for j in range(i + 1, m):
            C[i, j] = C[j, i] = _overlap(iv[calls[i]], iv[calls[j]])
    return C


def _overlap(p, q) -> float:
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        return 0.0
    lo = max(min(p), min(q))
    hi = min(max(p), max(q))
    if hi <= lo:
        return 0.0
    sign = np.sign(p[1] - p[0]) * np.sign(q[1] - q[0])
    return float(sign * (hi - lo) / math.sqrt(abs(p[1] - p[0]) * abs(q[1] - q[0])))


def _check_independent_steps(plan: Plan, steps):
    """Normals of different grid steps must be independent (disjoint intervals)."""
    if not plan.correlated_noise:
        return
    iv = plan.noise_interval.detach().cpu().numpy()
    st = plan.step.cpu().numpy()
    noisy = [k for k in range(plan.calls) if float(plan.update_noise[k]) != 0 and np.isfinite(iv[k]).all()]
    for i, k in enumerate(noisy):
        for q in noisy[i + 1 :]:
            if st[k] != st[q] and _overlap(iv[k], iv[q]) != 0:
                raise ValueError(
                    f"plan {plan.method!r}: calls {k} and {q} of grid steps {st[k]} and {st[q]} draw overlapping "
                    "Brownian increments; the mean-square analysis needs independent noise across steps"
                )


def _hafnian(C: np.ndarray, idx: tuple[int, ...]) -> float:
    """E[prod_i xi_{idx_i}] for centred Gaussians with covariance C (Isserlis: sum over pairings)."""
    if len(idx) % 2:
        return 0.0
    if not idx:
        return 1.0
    first, rest = idx[0], idx[1:]
    return sum(C[first, rest[j]] * _hafnian(C, rest[:j] + rest[j + 1 :]) for j in range(len(rest)))


@lru_cache(maxsize=64)
def _moments(m: int, C_bytes: bytes) -> np.ndarray:
    """E[xi^S xi^T] for all subsets S, T of m normals (bit masks)."""
    C = np.frombuffer(C_bytes).reshape(m, m)
    bits = lambda S: tuple(i for i in range(m) if S >> i & 1)
    n = 1 << m
    E = np.zeros((n, n))
    for S in range(n):
        for T in range(S, n):
            E[S, T] = E[T, S] = _hafnian(C, bits(S) + bits(T))
    return E


def _step_polynomial(plan, st, n, kappa, scale, unit, nu, G, noise) -> tuple[np.ndarray, np.ndarray]:
    """``A_S`` of grid step n: shape (points, monomials, d_out + 1, d_in + 1), last coordinate the constant 1."""
    k0, k1 = st.steps[n]
    c = plan.update_noise.detach().cpu().numpy()
    live_in, live_out = st.live(n), st.live(n + 1)
    noisy = [k for k in range(k0, k1) if c[k] != 0]
    P, M, D = kappa.shape[0], 1 << len(noisy), len(live_in) + 2
    s = np.zeros((P, M, D), dtype=complex)
    s[:, 0, 0] = scale[n]
    hist = {}
    for i, q in enumerate(live_in):
        v = np.zeros((P, M, D), dtype=complex)
        v[:, 0, 1 + i] = 1.0 / unit[q]
        hist[q] = v
    inputs = {}

    def model(k, X):
        inputs[k] = X
        return kappa[:, k, None, None] * X

    for k in range(k0, k1):
        s, hist = st.run(k, k + 1, s, hist, model)
        if c[k] == 0:
            continue
        bit = 1 << noisy.index(k)
        add = np.zeros_like(s)
        if noise == "additive":
            add[:, bit, D - 1] = c[k]
        else:
            X = inputs[k]
            for S in range(M):
                if not S & bit:
                    add[:, S | bit] += (c[k] * nu / G[k])[:, None] * X[:, S]
        s = s + add
    const = np.zeros((P, M, D), dtype=complex)
    const[:, 0, D - 1] = 1.0
    rows = [s / scale[n + 1]] + [hist[q] * unit[q] for q in live_out] + [const]
    return np.stack(rows, axis=2), _covariance(plan, noisy)


def moment_operators(
    plan: Plan,
    mu,
    nu=0.0,
    test: str | None = None,
    steps: Sequence[int] | None = None,
    *,
    noise: Noise = "multiplicative",
) -> list[np.ndarray]:
    """The second-moment operators ``L_n`` of grid steps ``steps`` (default all) of a stochastic plan on
    the linear test with model coefficient ``mu`` and multiplicative noise ``nu`` (per unit of the test's
    variable; ignored for ``noise="additive"``), broadcast together. ``L_n`` has shape
    ``(points, (d_{n+1} + 1)^2, (d_n + 1)^2)`` and maps the row-major ``vec`` of ``E v_n v_n^*`` to that of
    ``E v_{n+1} v_{n+1}^*``, ``v_n = (scaled state, scaled live outputs, 1)`` as in
    ``odesolve.analysis.stability.step_matrices`` (plus the constant)."""
    st = structure(plan)
    if bool((plan.input_noise != 0).any()):
        raise ValueError(
            f"plan: {plan.method!r} adds noise to a model call's input (input_noise: churn or restart jumps); "
            "the moment operators need each call's normal in its update only (the step multilinear in its normals)"
        )
    test = _check_test(test or ("lambda" if plan.prediction == "x0" else "rho"))
    noise = _check_noise(noise)
    steps = range(plan.grid.steps) if steps is None else list(steps)
    lam = plan.grid.lambdas
    if not all(bool(torch.isfinite(lam[n : n + 2]).all()) for n in steps):
        raise ValueError("the steps must have finite lambda (0 < sigma and 0 < alpha) at both ends")
    _check_independent_steps(plan, steps)
    mu, nu = np.broadcast_arrays(np.atleast_1d(np.asarray(mu, dtype=complex)), np.asarray(nu, dtype=complex))
    mu, nu = mu.ravel(), nu.ravel()
    kappa = _call_coefficients(plan, mu, test)
    scale, unit = _scales(plan, test)
    G = _diffusion(plan, test)
    out = []
    for n in steps:
        A, C = _step_polynomial(plan, st, n, kappa, scale, unit, nu, G, noise)
        E = _moments(C.shape[0], np.ascontiguousarray(C, dtype=np.float64).tobytes())
        P, M, Do, Di = A.shape
        L = np.zeros((P, Do * Do, Di * Di), dtype=complex)
        for S in range(M):
            for T in range(M):
                if E[S, T] != 0:
                    L += E[S, T] * np.einsum("pij,pkl->pikjl", A[:, S], A[:, T].conj()).reshape(P, Do * Do, Di * Di)
        out.append(L)
    return out


def _homogeneous(L: np.ndarray, d_out: int, d_in: int) -> np.ndarray:
    """The block of L acting on second moments of the homogeneous coordinates (without the constant)."""
    io = np.array([i * (d_out + 1) + j for i in range(d_out) for j in range(d_out)])
    ii = np.array([i * (d_in + 1) + j for i in range(d_in) for j in range(d_in)])
    return L[:, io][:, :, ii]


def _parameters(z, w, h: float, test: str):
    """(mu, nu) of the linear test from ``z = a h`` and ``w = nu sqrt(h)``."""
    z, w = np.broadcast_arrays(np.asarray(z, dtype=complex), np.asarray(w, dtype=complex))
    a = z / h
    mu = (a + 1) / 2 if test == "lambda" else a / 2
    return mu, w / math.sqrt(h), z.shape


def ms_radius(
    method,
    h: float,
    z,
    w=0.0,
    test: str | None = None,
    *,
    noise: Noise = "multiplicative",
    options: dict | None = None,
) -> np.ndarray:
    """Spectral radius of the second-moment operator of an interior step of ``method`` (uniform grid,
    step ``h`` in the test's variable) at ``z = a h`` and ``w = nu sqrt(h)`` (broadcast; shape of the
    broadcast). Mean-square stable where < 1. Euler-Maruyama on the rho test: ``|1 + z|^2 + |w|^2``."""
    it = _Interior(method, h, test, options)
    mu, nu, shape = _parameters(z, w, it.h, it.test)
    L = moment_operators(it.plan, mu.ravel(), nu.ravel(), it.test, [it.n], noise=noise)[0]
    d = round(math.sqrt(L.shape[-1])) - 1
    return spectral_radius(_homogeneous(L, d, d)).reshape(shape)


@dataclass(frozen=True)
class MeanSquareRegion:
    """The mean-square radius on a grid of real ``z = a h`` and ``w^2 = nu^2 h`` (Higham 2000's plane)."""

    method: str
    h: float
    test: str
    z: np.ndarray
    w2: np.ndarray
    radius: np.ndarray  # (len(w2), len(z))

    @property
    def stable(self) -> np.ndarray:
        return self.radius < 1 - STABLE_TOL


def ms_stability_region(
    method,
    h: float,
    test: str | None = None,
    *,
    z=(-3.0, 0.5),
    w2=(0.0, 1.5),
    n: tuple[int, int] = (141, 61),
    options: dict | None = None,
) -> MeanSquareRegion:
    """Mean-square stability (multiplicative test) of an interior step of ``method`` with step ``h``, on
    ``n`` points of real ``z`` in the range ``z`` and ``w^2`` in the range ``w2``."""
    it = _Interior(method, h, test, options)
    zs = np.linspace(z[0], z[1], n[0])
    ws = np.linspace(w2[0], w2[1], n[1])
    Z, W = np.meshgrid(zs, np.sqrt(ws))
    rad = ms_radius(it.method, it.h, Z, W, it.test, options=options)
    return MeanSquareRegion(it.method.name, it.h, it.test, zs, ws, rad)


def stationary_variance(method, h: float, z, *, options: dict | None = None) -> np.ndarray:
    """Additive test (lambda, the reverse SDE ``dy = a y dlambda + sqrt(2) dW``): the scheme's stationary
    ``E y^2`` on a uniform grid (step ``h`` in lambda) over the exact ``1 / (-a)``, at real ``z = a h < 0``.
    1 is exact; DDPM (exponential Euler-Maruyama): ``-z (1 - e^{-2h}) / (h (1 - R^2))`` with
    ``R = e^{-h} + (1 + z/h) sinh h``; inf where the scheme is not mean-square stable."""
    it = _Interior(method, h, "lambda", options)
    z = np.asarray(z, dtype=float)
    if not (z < 0).all():
        raise ValueError(f"z must be negative (a stationary law needs a < 0), got {z}")
    mu, nu, shape = _parameters(z, 0.0, it.h, "lambda")
    L = moment_operators(it.plan, mu.ravel(), nu.ravel(), "lambda", [it.n], noise="additive")[0]
    D = round(math.sqrt(L.shape[-1]))
    hom = _homogeneous(L, D - 1, D - 1)
    out = np.full(L.shape[0], np.inf)
    stable = spectral_radius(hom) < 1
    io = [i * D + j for i in range(D - 1) for j in range(D - 1)]
    src = L[:, io, (D - 1) * D + (D - 1)]  # what the constant coordinate feeds into the moments
    for p in np.nonzero(stable)[0]:
        P = np.linalg.solve(np.eye(len(io)) - hom[p], src[p])
        out[p] = P[0].real * -(z.ravel()[p] / it.h)
    return out.reshape(shape)


def plot_ms_regions(methods: Sequence, h: float, test: str = "lambda", *, z=(-3.0, 0.5), w2=(0.0, 1.5), n=(141, 61)):
    """The mean-square stability boundaries (radius 1) of ``methods`` in the (z, w^2) plane, with
    Euler-Maruyama's closed form ``|1 + z|^2 + w^2 = 1`` for reference; returns a matplotlib Figure."""
    from .plots import _figure

    fig = _figure()
    ax = fig.add_subplot()
    zz = np.linspace(-2, 0, 200)
    ax.plot(zz, 1 - (1 + zz) ** 2, "k:", lw=1, label="EM closed form")
    for i, m in enumerate(methods):
        r = ms_stability_region(m, h, test, z=z, w2=w2, n=n)
        ax.contour(r.z, r.w2, r.radius, levels=[1.0], colors=[f"C{i}"])
        ax.plot([], [], color=f"C{i}", label=r.method)
    ax.set_xlabel("z = a h (drift of the reverse SDE)")
    ax.set_ylabel("w^2 = nu^2 h (multiplicative noise)")
    ax.set_title(f"mean-square stability, {test} test, h = {h:g}")
    ax.set_xlim(*z)
    ax.set_ylim(*w2)
    ax.legend(fontsize=8)
    return fig
