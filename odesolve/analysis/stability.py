r"""Linear stability of any plan: amplification matrices, stability functions and regions,
boundary loci, real stability intervals, and what classifier-free guidance does to them.

The test equations (docs/theory.md section 6)
---------------------------------------------
- ``"lambda"`` (x0-prediction form, the natural test of exponential integrators): ``x0(x, t) = mu x / alpha``.
  Then ``y = x / sigma`` obeys ``dy/dlambda = mu y``: for a frozen (constant) ``mu`` the exact factor
  over a step is ``e^(mu h)``; a ``mu`` that varies with lambda, as every real model's does, gives
  ``exp(integral of mu dlambda)`` instead, which the frozen analysis only approximates.
  For Gaussian data with variance ``s^2`` along an eigen-direction, ``mu = s^2 e^(2 lambda) /
  (s^2 e^(2 lambda) + 1)`` in (0, 1); guidance makes it ``(1 + w) mu_c - w mu_u``, possibly large and
  negative.
- ``"rho"`` (eps-prediction form, the classical test in k-diffusion's variables): ``eps(x, t) = -mu x / alpha``,
  so ``xbar = x / alpha`` obeys ``dxbar/ds = mu xbar`` in the direction of integration ``s = -rho``
  (``rho = sigma / alpha`` decreases): over a step ``h = rho_n - rho_{n+1} > 0`` the exact factor is
  ``e^(mu h)`` and ``z = mu h`` is the classical ``h lambda`` of Dahlquist's test (negative mu decays).

Either test is a model like any other, given to a plan in its own buffer (an eps-plan on the
lambda test sees ``eps = (1 - mu) x / sigma``; an x0-plan on the rho test sees
``x0 = (1 + rho mu) x / alpha``). The plan is linear in its state, so one step maps the vector
``z_n = (scaled state, scaled earlier outputs still needed)`` to ``z_{n+1} = M_n(mu) z_n``.
[`step_matrices`][odesolve.analysis.stability.step_matrices] builds ``M_n`` by running the plan's rows (via the row
interpreter of ``analysis._plan``) on the basis vectors, for many ``mu`` at once. The scaling (``y = x / sigma``
and the outputs as ``e^lambda x0``, or ``xbar = x / alpha`` and the outputs as they are) makes
``M_n`` the same for every interior step of a uniform grid: singlestep plans give a 1x1 matrix, the
stability function ``R(mu, h)``; multistep plans a companion-like matrix whose spectral radius
decides stability. For exponential methods ``M`` depends on ``h`` itself, not only on ``mu h``, and
so does the stability region.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .. import paths as _paths
from ..grids import Grid, from_sigmas
from ..plan import Plan
from ._plan import as_method, structure

Test = Literal["lambda", "rho"]

__all__ = [
    "GuidanceStability",
    "StabilityRegion",
    "Test",
    "amplification",
    "boundary_locus",
    "final_step_factor",
    "guidance_mu",
    "guidance_stability",
    "plan_transfer",
    "spectral_radius",
    "stability_function",
    "stability_interval",
    "stability_region",
    "step_matrices",
    "uniform_grid",
]

STABLE_TOL = 1e-10


# -- the linear model on a plan ----------------------------------------------------------------------


def _check_test(test):
    if test not in ("lambda", "rho"):
        raise ValueError(f"test must be 'lambda' or 'rho', got {test!r}")
    return test


def _call_coefficients(plan: Plan, mu: np.ndarray, test: str) -> np.ndarray:
    """kappa (n_mu, K): the model output F_k = kappa_k X_k of the linear test in the plan's buffer."""
    t = plan.times
    la, ls = plan.path.log_alpha(t).numpy(), plan.path.log_sigma(t).numpy()
    a, s = np.exp(la), np.exp(ls)
    mu = mu[:, None]
    if test == "lambda":
        return mu / a if plan.prediction == "x0" else (1 - mu) / s + 0 * mu
    rho = s / a
    return -mu / a if plan.prediction == "eps" else (1 + rho * mu) / a


def _scales(plan: Plan, test: str):
    """(state scale at every grid time, output unit at every call): z = x / scale, f = F * unit."""
    g = plan.grid.t
    path = plan.path
    state = (path.sigma(g) if test == "lambda" else path.alpha(g)).numpy()
    t = plan.times
    if test == "lambda" and plan.prediction == "x0":
        unit = torch.exp(path.lambda_(t)).numpy()
    else:
        unit = np.ones(plan.calls)
    return state, unit


def step_matrices(plan: Plan, mu, test: Test | None = None, steps: Sequence[int] | None = None) -> list[np.ndarray]:
    """The matrices ``M_n(mu)`` (complex, shape ``(len(mu), dim_{n+1}, dim_n)``) of grid steps ``steps``
    (default: all) on the linear test (default: ``"lambda"`` for x0-plans, ``"rho"`` for eps-plans).
    Coordinate 0 is the scaled state; the others are the scaled outputs of earlier calls that later
    steps read (see `PlanStructure.live`), oldest first."""
    st = structure(plan)
    test = _check_test(test or ("lambda" if plan.prediction == "x0" else "rho"))
    steps = range(plan.grid.steps) if steps is None else list(steps)
    lam = plan.grid.lambdas
    if not all(bool(torch.isfinite(lam[n : n + 2]).all()) for n in steps):
        raise ValueError(
            "the steps must have finite lambda (0 < sigma and 0 < alpha) at both ends for a stability "
            "matrix; for a last step to sigma = 0 see guidance_stability (it reports that step's "
            "factor in data units)"
        )
    mu = np.atleast_1d(np.asarray(mu, dtype=complex)).ravel()
    kappa = _call_coefficients(plan, mu, test)
    scale, unit = _scales(plan, test)
    out = []
    for n in steps:
        k0, k1 = st.steps[n]
        live_in, live_out = st.live(n), st.live(n + 1)
        dim = 1 + len(live_in)
        s = np.zeros((mu.size, dim), dtype=complex)
        s[:, 0] = scale[n]
        hist = {}
        for i, c in enumerate(live_in):
            v = np.zeros((mu.size, dim), dtype=complex)
            v[:, 1 + i] = 1.0 / unit[c]
            hist[c] = v
        s, hist = st.run(k0, k1, s, hist, lambda k, X: kappa[:, k, None] * X)
        rows = [s / scale[n + 1]] + [hist[c] * unit[c] for c in live_out]
        out.append(np.stack(rows, axis=1))
    return out


def final_step_factor(plan: Plan, mu, test: Test | None = None) -> np.ndarray:
    """The factor ``(x_N / alpha_N) / (x_{N-1} / alpha_{N-1})`` of the plan's last step, in data units,
    on the linear test with a frozen ``mu``, the earlier outputs it reads being those the same frozen
    test produced from the start of the grid. Made for a last step to sigma = 0 (infinite lambda),
    where the scaled state of [`step_matrices`][odesolve.analysis.stability.step_matrices] does not exist; valid for
    any last step.

    Compare with the exact frozen flow: in data units ``u = x / alpha`` the lambda test gives
    ``du/dlambda = (mu - 1) u``, so a step to sigma = 0 (``h = inf``) takes every mode with
    ``Re mu < 1`` to 0 exactly. The step itself is not exact: the DDIM step ``x_N = x0_hat(x_{N-1})``
    gives the factor ``mu`` (a mode with ``mu = -3`` is amplified 3 times); a last step that reads
    earlier outputs (``plms``, ``ipndm``, ``deis-N``, ``lms-N``) gives a factor that depends on them."""
    test = _check_test(test or ("lambda" if plan.prediction == "x0" else "rho"))
    mu = np.atleast_1d(np.asarray(mu, dtype=complex)).ravel()
    N = plan.grid.steps
    st = structure(plan)
    kappa = _call_coefficients(plan, mu, test)
    scale, unit = _scales(plan, test)
    v = np.ones((mu.size, 1), dtype=complex)
    for M in step_matrices(plan, mu, test, range(N - 1)) if N > 1 else []:
        v = np.einsum("mij,mj->mi", M, v)
    k0, k1 = st.steps[N - 1]
    x_prev = v[:, :1] * scale[N - 1]
    hist = {c: v[:, 1 + i : 2 + i] / unit[c] for i, c in enumerate(st.live(N - 1))}
    x_last, _ = st.run(k0, k1, x_prev, hist, lambda k, X: kappa[:, k, None] * X)
    alpha = plan.path.alpha(plan.grid.t).numpy()
    return (x_last[:, 0] / alpha[N]) / (x_prev[:, 0] / alpha[N - 1])


def plan_transfer(plan: Plan, mu, test: Test | None = None) -> np.ndarray:
    """The whole plan's factor ``(scaled final state) / (scaled initial state)`` on the linear test
    (product of the step matrices applied to ``(1, no history)``); compare with
    [`odesolve.execute`][odesolve.execute] on the same linear model, or with the exact ``e^(mu (lambda_N -
    lambda_0))``."""
    mats = step_matrices(plan, mu, test)
    v = np.ones((mats[0].shape[0], 1), dtype=complex)
    for M in mats:
        v = np.einsum("mij,mj->mi", M, v)
    return v[:, 0]


def _square(M: np.ndarray) -> np.ndarray:
    """A warm-up step maps a shorter history to a longer one: pad with zeros (absent outputs)."""
    d = max(M.shape[-2:])
    if M.shape[-1] == M.shape[-2]:
        return M
    out = np.zeros(M.shape[:-2] + (d, d), dtype=M.dtype)
    out[..., : M.shape[-2], : M.shape[-1]] = M
    return out


def spectral_radius(M: np.ndarray) -> np.ndarray:
    """Spectral radius of each matrix in a stack ``(..., d, d)``."""
    return np.abs(np.linalg.eigvals(M)).max(-1)


# -- uniform grids and the interior step -------------------------------------------------------------


def uniform_grid(h: float, steps: int, test: Test = "lambda", path=None) -> Grid:
    """``steps`` equal steps of length ``h`` in lambda (``test="lambda"``, from sigma = 1) or in
    rho = sigma/alpha (``test="rho"``, ending at rho = h)."""
    if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
        raise ValueError(f"h must be a positive step length, got {h!r}")
    path = path or _paths.EDM()
    if test == "lambda":
        sig = np.exp(-h * np.arange(steps + 1))
    else:
        sig = h * (steps + 1 - np.arange(steps + 1))
    return from_sigmas(path, torch.as_tensor(sig))


class _Interior:
    """The interior step of ``method`` on a uniform grid: compiled once, evaluated for many mu."""

    def __init__(self, method, h: float, test: Test | None, options=None):
        if isinstance(method, Plan):
            raise TypeError(
                "pass a method (name or table) for a uniform-grid analysis; for a compiled plan use "
                "step_matrices(plan, mu)"
            )
        m = as_method(method)
        self.method, self.h = m, float(h)
        self.test = _check_test(test or ("lambda" if m.prediction == "x0" else "rho"))
        probe_grid = uniform_grid(self.h, 8, self.test)
        probe = m.compile(probe_grid.path, probe_grid, **(options or {}))
        N = max(8, 3 * max(probe.window, m.history + m.calls_per_step) + 4)  # a window that grows past 8 steps
        grid = uniform_grid(self.h, N, self.test)
        self.plan = m.compile(grid.path, grid, **(options or {}))
        self.n = N - 2
        st = structure(self.plan)
        if len(st.live(self.n)) != len(st.live(self.n + 1)):
            raise ValueError(f"{m.name}: step {self.n} of a uniform grid is not an interior step")

    def matrix(self, mu) -> np.ndarray:
        return step_matrices(self.plan, mu, self.test, [self.n])[0]

    def radius(self, mu) -> np.ndarray:
        return spectral_radius(self.matrix(mu))


def amplification(method, h: float, mu, test: Test | None = None, *, options: dict | None = None) -> np.ndarray:
    """The amplification matrices ``M(mu)`` of an interior step of ``method`` on a uniform grid with
    step ``h`` (shape ``(len(mu), d, d)``; d = 1 for singlestep methods)."""
    return _Interior(method, h, test, options).matrix(mu)


def stability_function(
    method, h: float, test: Test | None = None, *, options: dict | None = None, degree: int | None = None
) -> np.polynomial.Polynomial:
    """``R(mu)`` of a singlestep method as a polynomial in ``mu`` (its degree is at most the number of
    calls per step), recovered from values on a circle (a discrete Fourier transform, exact up to
    round-off). For the rho test, ``R(mu)`` is the classical stability function of ``z = mu h``
    rescaled: RK4 gives ``1 + z + z^2/2 + z^3/6 + z^4/24``."""
    it = _Interior(method, h, test, options)
    M0 = it.matrix(np.zeros(1))
    if M0.shape[-1] != 1:
        raise ValueError(
            f"{it.method.name} carries {M0.shape[-1] - 1} earlier outputs: it has an amplification "
            "matrix, not a stability function; use amplification() or spectral_radius()"
        )
    k0, k1 = structure(it.plan).steps[it.n]
    deg = degree if degree is not None else (k1 - k0)
    m = 1 << max(2, math.ceil(math.log2(deg + 1)))
    r = 1.0 / h
    nodes = r * np.exp(2j * np.pi * np.arange(m) / m)
    vals = it.matrix(nodes)[:, 0, 0]
    coef = np.fft.fft(vals) / m / r ** np.arange(m)
    coef = coef[: deg + 1]
    if np.abs(coef.imag).max() <= 1e-10 * max(1.0, np.abs(coef).max()):
        coef = coef.real
    return np.polynomial.Polynomial(coef)


def _first_crossing(
    radius_fn, mu_max: float, tol: float = 1e-12, bound: float = 1 + STABLE_TOL, n: int = 4000
) -> float:
    """The most negative mu with radius <= bound on all of [mu, 0] (scan, then bisection)."""
    mus = -mu_max * (np.arange(1, n + 1) / n) ** 2
    rad = np.asarray(radius_fn(mus))
    bad = np.nonzero(rad > bound)[0]
    if bad.size == 0:
        return -float(mu_max)
    i = int(bad[0])
    if i == 0 and float(np.asarray(radius_fn(np.array([-1e-12 * mu_max])))[0]) > bound:
        return 0.0
    lo, hi = (mus[i - 1] if i > 0 else 0.0), mus[i]  # stable at lo, unstable at hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(np.asarray(radius_fn(np.array([mid])))[0]) <= bound:
            lo = mid
        else:
            hi = mid
        if abs(hi - lo) <= tol * max(1.0, abs(lo)):
            break
    return float(lo)


def stability_interval(
    method,
    h: float,
    test: Test | None = None,
    *,
    mu_max: float | None = None,
    options: dict | None = None,
    tol: float = 1e-10,
) -> float:
    """The most negative real ``mu`` such that an interior step of ``method`` (uniform grid, step ``h``)
    is stable (spectral radius <= 1) for every ``mu`` in ``[mu, 0]``; 0.0 when small negative ``mu``
    are already unstable. DDIM on the lambda test: ``-2 / (e^h - 1)``."""
    it = _Interior(method, h, test, options)
    mu_max = mu_max if mu_max is not None else 20.0 + 60.0 / h
    return _first_crossing(it.radius, mu_max, tol)


@dataclass(frozen=True)
class StabilityRegion:
    """Spectral radius on a grid of complex ``mu``; ``stable`` where it is <= 1."""

    method: str
    h: float
    test: str
    re: np.ndarray
    im: np.ndarray
    radius: np.ndarray  # (len(im), len(re))

    @property
    def stable(self) -> np.ndarray:
        return self.radius <= 1 + STABLE_TOL

    @property
    def mu(self) -> np.ndarray:
        return self.re[None, :] + 1j * self.im[:, None]


def stability_region(
    method,
    h: float,
    test: Test | None = None,
    *,
    re=(-6.0, 1.0),
    im=(-4.0, 4.0),
    n: tuple[int, int] = (281, 161),
    options: dict | None = None,
) -> StabilityRegion:
    """The spectral radius of the interior step on a grid of complex ``mu`` (``re`` and ``im`` ranges,
    ``n`` points each)."""
    it = _Interior(method, h, test, options)
    xr = np.linspace(re[0], re[1], n[0])
    xi = np.linspace(im[0], im[1], n[1])
    mu = (xr[None, :] + 1j * xi[:, None]).ravel()
    rad = np.concatenate([it.radius(mu[i : i + 8192]) for i in range(0, mu.size, 8192)])
    return StabilityRegion(it.method.name, float(h), it.test, xr, xi, rad.reshape(len(xi), len(xr)))


def boundary_locus(
    method, h: float, test: Test | None = None, *, n: int = 721, options: dict | None = None
) -> np.ndarray:
    """The boundary locus: every ``mu`` at which the interior step has an eigenvalue ``e^(i theta)``,
    theta in [0, 2 pi) (``n`` values; several branches for multi-stage or multistep methods, returned
    as an array ``(n, branches)``, NaN where a branch is absent). For an explicit linear multistep
    method it is ``rho(e^{i theta}) / sigma(e^{i theta})``; the stability region is bounded by parts of it.

    ``det(zeta I - M(mu))`` is a polynomial in ``mu`` of degree <= dim * calls per step: its
    coefficients come from values on a circle (discrete Fourier transform), its roots give the locus."""
    it = _Interior(method, h, test, options)
    M0 = it.matrix(np.zeros(1))
    d = M0.shape[-1]
    k0, k1 = structure(it.plan).steps[it.n]
    deg = d * (k1 - k0)
    m = 1 << max(2, math.ceil(math.log2(deg + 1)))
    r = 1.0 / h
    nodes = r * np.exp(2j * np.pi * np.arange(m) / m)
    ev = np.linalg.eigvals(it.matrix(nodes))  # (m, d)
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    zeta = np.exp(1j * theta)
    vals = np.prod(zeta[:, None, None] - ev[None, :, :], axis=-1)  # (n, m)
    coef = np.fft.fft(vals, axis=1) / m / r ** np.arange(m)[None, :]  # lowest first
    out = np.full((n, deg), np.nan + 0j)
    scale = np.abs(coef).max(1, keepdims=True)
    for i in range(n):
        c = coef[i].copy()
        c[np.abs(c) < 1e-11 * scale[i]] = 0
        nz = np.nonzero(c)[0]
        if nz.size == 0 or nz[-1] == 0:
            continue
        roots = np.roots(c[: nz[-1] + 1][::-1])
        out[i, : roots.size] = roots
    return out


# -- guidance -----------------------------------------------------------------------------------------


def _variances(v, name):
    """Per-direction variances (co-diagonal) from floats / arrays, or a covariance from an object."""
    if hasattr(v, "cov"):
        return np.asarray(torch.as_tensor(v.cov).detach().cpu().to(torch.float64), dtype=float), True
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    arr = np.atleast_1d(np.asarray(v, dtype=float))
    if arr.ndim == 2:
        return arr, True
    if arr.ndim != 1 or not (arr > 0).all():
        raise ValueError(
            f"{name} must be positive variances (one per eigen-direction), a covariance matrix, or "
            f"a Gaussian with .cov; got {v!r}"
        )
    return arr, False


def guidance_mu(lam, cond, uncond, scale: float) -> np.ndarray:
    """The lambda-test coefficients ``mu_w = (1 + w) mu_c - w mu_u`` of a guided Gaussian pair at the
    half log-SNRs ``lam`` (array ``(len(lam), directions)``): ``mu = alpha^2 s^2 / (alpha^2 s^2 + sigma^2)``
    per eigen-direction of the covariances (co-diagonal variances), or the eigenvalues of
    ``alpha^2 [(1 + w) S_c C_c^-1 - w S_u C_u^-1]`` for full covariance matrices (complex in general)."""
    lam = np.atleast_1d(np.asarray(lam, dtype=float))
    vc, mc = _variances(cond, "cond")
    vu, mu_ = _variances(uncond, "uncond")
    w = float(scale)
    e2 = np.exp(2 * lam)
    if not mc and not mu_:
        if vc.shape != vu.shape:
            raise ValueError(f"cond and uncond must have the same number of directions, got {vc.shape}, {vu.shape}")
        muc = vc[None] * e2[:, None] / (vc[None] * e2[:, None] + 1)
        muu = vu[None] * e2[:, None] / (vu[None] * e2[:, None] + 1)
        return (1 + w) * muc - w * muu
    Sc = vc if mc else np.diag(vc)
    Su = vu if mu_ else np.diag(vu)
    d = Sc.shape[0]
    out = []
    for e in e2:  # alpha^2 S (alpha^2 S + sigma^2)^-1 = e S (e S + I)^-1 with e = (alpha/sigma)^2
        J = (1 + w) * e * Sc @ np.linalg.inv(e * Sc + np.eye(d)) - w * e * Su @ np.linalg.inv(e * Su + np.eye(d))
        ev = np.linalg.eigvals(J)
        out.append(ev.real if np.abs(ev.imag).max() < 1e-12 else ev)
    return np.array(out)


@dataclass(frozen=True)
class GuidanceStability:
    """Per grid step: lambdas, step lengths, the guided mu per direction (the most unstable of the values
    at both ends of the step), the spectral radius of the step matrix there, and stability."""

    method: str
    scale: float
    sigmas: np.ndarray  # (steps + 1,)
    h: np.ndarray  # (steps,)
    mu: np.ndarray  # (steps, directions)
    radius: np.ndarray  # (steps, directions)

    @property
    def stable(self) -> np.ndarray:
        """(steps,) every direction stable in that step (frozen coefficients): the absolute criterion
        ``radius <= 1`` for decaying modes (``Re mu < 0``); growing modes (``Re mu >= 0``, unguided
        Gaussian data has mu in (0, 1)) grow in the exact flow as well and count as stable."""
        return ((self.radius <= 1 + STABLE_TOL) | (np.real(self.mu) >= 0)).all(1)

    @property
    def first_unstable(self) -> int | None:
        bad = np.nonzero(~self.stable)[0]
        return int(bad[0]) if bad.size else None


def guidance_stability(
    method, grid: Grid, cond, uncond, scale: float, *, options: dict | None = None, test: Test = "lambda"
) -> GuidanceStability:
    """Frozen-coefficient stability of every step of ``method`` on ``grid`` for a Gaussian conditional /
    unconditional pair under classifier-free guidance of ``scale`` w: per step and eigen-direction,
    ``mu_w`` ([`guidance_mu`][odesolve.analysis.stability.guidance_mu]) at both ends of the step (the one with the
    larger amplification),
    the spectral radius of that step's matrix ``M_n(mu_w)`` on the actual (non-uniform) grid (a warm-up
    step, whose history grows, is padded with zero columns), and
    whether a decaying mode is damped
    ([`GuidanceStability.stable`][odesolve.analysis.stability.GuidanceStability.stable]). A last step to sigma = 0 has
    no scaled state; its ``radius`` is ``|final_step_factor|`` (data units) at ``mu_w`` of the step's
    start, where the step's call is made. It is not exact: the exact frozen flow takes the mode to 0,
    while the DDIM step gives the factor ``mu_w`` (for ``mu_w = -3`` a 3 times amplification, reported
    unstable). ``cond``/``uncond``: variances per eigen-direction, covariance matrices, or Gaussians
    with ``.cov``."""
    m = as_method(method)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
    lam = grid.lambdas.numpy()
    finite = np.isfinite(lam)
    N = grid.steps
    last_singular = not finite[-1]
    if not finite[:-1].all():
        raise ValueError("grid must start at alpha > 0 (finite lambda) for a guidance stability analysis")
    plan = m.compile(grid.path, grid, **(options or {}))
    lam_f = lam[finite]
    mu_ends = guidance_mu(lam_f, cond, uncond, scale)  # (finite grid points, dirs)
    dirs = mu_ends.shape[1]
    mus = np.zeros((N, dirs), dtype=mu_ends.dtype)
    rad = np.zeros((N, dirs))
    for n in range(N - 1 if last_singular else N):
        cand = np.stack([mu_ends[n], mu_ends[n + 1]])  # (2, dirs)
        r = spectral_radius(_square(step_matrices(plan, cand.ravel(), test, [n])[0])).reshape(2, dirs)
        pick = r.argmax(0)
        mus[n] = cand[pick, np.arange(dirs)]
        rad[n] = r[pick, np.arange(dirs)]
    if last_singular:
        mus[N - 1] = mu_ends[-1]
        rad[N - 1] = np.abs(final_step_factor(plan, mu_ends[-1], test))
    return GuidanceStability(m.name, float(scale), grid.sigmas.numpy(), np.diff(lam), mus, rad)
