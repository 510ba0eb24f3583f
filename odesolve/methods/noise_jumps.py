"""Heun's method with forward noise jumps: EDM's stochastic sampler and Restart sampling.

Both integrate the probability-flow ODE in ``y = x/alpha`` against ``rho = sigma/alpha`` with Heun's
method (Karras et al. 2022, Alg. 1: ``d = (y - D)/rho``, an Euler predictor and the trapezoidal
corrector; a step to sigma = 0, and a step from alpha = 0, is the Euler step), and move the time back
up by adding exact forward noise: from rho to rho_hat > rho, ``y_hat = y + sqrt(rho_hat^2 - rho^2) xi``,
which maps p_rho onto p_rho_hat exactly. The jump is the input noise of the first call after it
(``Plan.input_noise``: the same xi enters the state). With ``r = rho_{n+1}/rho_hat`` and ``x = alpha y``:

    X_P = alpha_hat y_hat,    X_C = alpha_{n+1} (r y_hat + (1 - r) D_P),
    y_{n+1} = r y_hat + (1 - r)(2r - 1)/(2r) D_P + (1 - r)/(2r) D_C.

EDM's stochastic sampler (Karras et al., NeurIPS 2022, Alg. 2): before step n, ``gamma_n =
min(S_churn/N, sqrt(2) - 1)`` where ``S_tmin <= rho_n <= S_tmax`` (else 0), ``rho_hat = rho_n (1 +
gamma_n)`` and the jump's noise is scaled by S_noise (S_noise != 1 leaves the marginals). The jump
of step n is the Brownian increment over the step, so a churn that shrinks like 1/N follows one path
on every grid; it discretises the reverse SDE with the Langevin rate ``beta = S_churn / (N |dt|)``.

The same churn before the steps of another singlestep table ``base`` (``Churn``: Euler, Heun,
DPM-Solver-2, ..., k-diffusion's ``s_churn`` of sample_euler / sample_heun / sample_dpm_2): the base
step runs from the point of level rho_hat, and the jump ``x_hat = alpha_hat/alpha_n x_n + alpha_hat
c xi`` is the input noise of the step's first call, which also moves the state to x_hat.

Restart sampling (Xu et al., NeurIPS 2023): the main Heun pass; when it reaches ``rho_min`` of an
interval ``(rho_min, rho_max, K)`` (the step containing rho_min is split there), K times: jump from
rho_min to rho_max, then Heun back to rho_min over ``restart_steps`` steps spaced as Karras et al.'s
(rho^(1/7) uniform). The jumps are independent of the path's increments and of the grid (Brownian
interval [-(m+1), -m] for the m-th jump), so a refined grid repeats the same jumps. Intervals whose
rho_min the grid does not pass through are not used.

Orders (tests/sde, exact Gaussian marginals): both keep p_t exactly but for Heun's error, weak order
2. Strong: EDM's churn is a discretised SDE, strong order 1; Restart's jumps do not change with the
grid, so its pathwise error is Heun's, strong order 2.
"""

from __future__ import annotations

import math

import torch

from ..paths import check_real
from ..plan import Rows
from .ancestral import _Steps
from .base import Geometry, refuse_alpha_zero_start, table
from .classical import EULER, HEUN, RungeKutta
from .exponential_rk import DPM_SOLVER_2, ExponentialRK, ddim_rows
from .stochastic import _Stochastic

__all__ = ["DPM_2_CHURN", "EULER_CHURN", "HEUN_CHURN", "TABLES", "Churn", "HeunJumps", "churn_gamma"]


class _Program:
    """Calls appended one by one (coefficients as 0-dim float64 tensors), then one ``Rows``."""

    def __init__(self, g):
        self.g = g
        self.calls = []  # dicts: step, t, in_s, in_noise, up_s, up_noise, iv
        self.inp, self.up = [], []  # (k, j, c)

    def heun(self, n, a, b, jump=None):
        """A Heun step in grid step ``n`` from point ``a`` to ``b`` (each ``(t, log alpha, log sigma)``),
        the state being x at ``a``; ``jump = (point, c_y, interval)`` first moves y up to ``point``
        (a higher rho) with the noise ``c_y xi``."""
        (_, la_a, _), (tb, la_b, ls_b) = a, b
        th, la_h, ls_h = a if jump is None else jump[0]
        lr_h, lr_b = ls_h - la_h, ls_b - la_b
        cy = 0.0 if jump is None else jump[1]
        k = len(self.calls)
        call = {"step": n, "t": th, "in_s": 1.0 if jump is None else torch.exp(la_h - la_a)}
        call.update(in_noise=torch.exp(la_h) * cy, iv=None if jump is None else jump[2])
        ab = torch.exp(la_b)
        if torch.isneginf(lr_b) or torch.isposinf(lr_h):  # to sigma = 0, or from alpha = 0: Euler (DDIM)
            state = torch.zeros(()) if torch.isneginf(lr_b) else torch.exp(ls_b - ls_h)
            call.update(up_s=state, up_noise=0.0)
            self.calls.append(call)
            self.up.append((k, k, ab))
            return
        call.update(up_s=1.0 if jump is None and bool(la_b == la_a) else torch.exp(la_b - la_a), up_noise=ab * cy)
        self.calls.append(call)
        r = torch.exp(lr_b - lr_h)
        self.calls.append({"step": n, "t": tb, "in_s": r, "in_noise": 0.0, "up_s": r, "up_noise": 0.0, "iv": None})
        self.inp.append((k + 1, k, ab * (1 - r)))
        self.up.append((k + 1, k, ab * (1 - r) * (2 * r - 1) / (2 * r)))
        self.up.append((k + 1, k + 1, ab * (1 - r) / (2 * r)))

    def rows(self) -> Rows:
        K = len(self.calls)
        rows = Rows(K)
        k = torch.arange(K)
        f = lambda name: torch.stack([torch.as_tensor(c[name], dtype=torch.float64) for c in self.calls])
        rows.call(k, torch.tensor([c["step"] for c in self.calls]), f("t"))
        rows.input_state(k, f("in_s"))
        rows.update_state(k, f("up_s"))
        for kk, j, c in self.inp:
            rows.input(kk, j, c)
        for kk, j, c in self.up:
            rows.update(kk, j, c)
        noisy = [i for i, c in enumerate(self.calls) if c["iv"] is not None]
        if noisy:
            idx = torch.tensor(noisy)
            pick = lambda name: torch.stack([torch.as_tensor(self.calls[i][name], dtype=torch.float64) for i in noisy])
            iv = torch.tensor([self.calls[i]["iv"] for i in noisy], dtype=torch.float64)
            rows.noise(idx, pick("up_noise"), iv[:, 0], iv[:, 1], input=pick("in_noise"))
        return rows


def _point(g, i):
    return g.t[i], g.log_alpha[i], g.log_sigma[i]


def _at_rho(g, rho: float):
    return g.at_lambda(torch.tensor(-math.log(rho), dtype=torch.float64))


def churn_gamma(g: Geometry, s_churn, s_tmin, s_tmax, s_noise) -> tuple[torch.Tensor, float]:
    """EDM's churn of every step (Karras et al. 2022, Alg. 2): ``gamma_n = min(S_churn/N, sqrt(2) - 1)``
    where ``S_tmin <= rho_n <= S_tmax`` and rho_n is finite, else 0; with the checked ``s_noise``."""
    s_churn = check_real(s_churn, "s_churn", 0.0)
    s_tmin = check_real(s_tmin, "s_tmin", 0.0, allow_inf=True)
    s_tmax = check_real(s_tmax, "s_tmax", 0.0, allow_inf=True)
    s_noise = check_real(s_noise, "s_noise", 0.0)
    rho = torch.exp(g.log_sigma[:-1] - g.log_alpha[:-1]).detach()
    inside = torch.isfinite(rho) & (rho >= s_tmin) & (rho <= s_tmax)
    gamma = min(s_churn / g.steps, math.sqrt(2.0) - 1.0)
    return torch.where(inside, torch.tensor(gamma, dtype=torch.float64), 0.0), s_noise


@table
class HeunJumps(_Stochastic):
    """Heun with forward noise jumps (module docstring): ``kind="churn"`` (EDM's stochastic sampler,
    options ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``) or ``kind="restart"`` (options ``restart``:
    a tuple of ``(rho_min, rho_max, K)``, and ``restart_steps``)."""

    kind: str = "churn"
    s_churn: float = 40.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.0
    restart: tuple = ((0.1, 1.0, 2),)
    restart_steps: int | None = None
    variable = "rho"

    @property
    def options(self) -> tuple[str, ...]:
        return ("s_churn", "s_tmin", "s_tmax", "s_noise") if self.kind == "churn" else ("restart", "restart_steps")

    @property
    def calls_per_step(self) -> int:
        """Heun's 2; Restart adds at most 2 K calls per main step and interval (a restart segment has
        no more steps than the main grid), so it declares the bound ``2 (1 + sum K)``."""
        return 2 if self.kind == "churn" else 2 * (1 + sum(iv[2] for iv in self.restart))

    def __post_init__(self):
        super().__post_init__()
        if self.kind not in ("churn", "restart"):
            raise ValueError(f"{self.name}: kind must be 'churn' or 'restart', got {self.kind!r}")
        _intervals(self.restart)

    def _rows(self, g, **options) -> Rows:
        prog = _Program(g)
        if self.kind == "churn":
            self._churn(g, prog, **options)
        else:
            self._restart(g, prog, **options)
        return prog.rows()

    def _churn(self, g, prog, s_churn=None, s_tmin=None, s_tmax=None, s_noise=None):
        pick = lambda v, own: own if v is None else v
        gammas, s_noise = churn_gamma(
            g,
            pick(s_churn, self.s_churn),
            pick(s_tmin, self.s_tmin),
            pick(s_tmax, self.s_tmax),
            pick(s_noise, self.s_noise),
        )
        for n in range(g.steps):
            a, b = _point(g, n), _point(g, n + 1)
            rho, gamma = float(torch.exp(a[2] - a[1])), float(gammas[n])
            jump = None
            if gamma > 0 and s_noise > 0:
                cy = s_noise * torch.exp(a[2] - a[1]) * math.sqrt(gamma * (2.0 + gamma))  # sqrt(rho_hat^2 - rho^2)
                jump = (_at_rho(g, rho * (1.0 + gamma)), cy, (float(g.t[n]), float(g.t[n + 1])))
            prog.heun(n, a, b, jump)

    def _restart(self, g, prog, restart=None, restart_steps=None):
        intervals = _intervals(self.restart if restart is None else restart)
        restart_steps = self.restart_steps if restart_steps is None else restart_steps
        if restart_steps is not None and (
            isinstance(restart_steps, bool) or not isinstance(restart_steps, int) or restart_steps < 1
        ):
            raise ValueError(f"restart_steps must be a positive integer or None, got {restart_steps!r}")
        log_rho = (g.log_sigma - g.log_alpha).detach()
        jumps = 0
        for n in range(g.steps):
            a, b = _point(g, n), _point(g, n + 1)
            here = [iv for iv in intervals if float(log_rho[n + 1]) <= math.log(iv[0]) < float(log_rho[n])]
            for rho_min, rho_max, K in sorted(here, reverse=True):
                m = _at_rho(g, rho_min)
                prog.heun(n, a, m)
                steps = restart_steps
                if steps is None:  # the main grid's points inside (rho_min, rho_max), plus one
                    inside = (log_rho > math.log(rho_min)) & (log_rho < math.log(rho_max))
                    steps = int(inside.sum()) + 1
                u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
                mini = (rho_max ** (1 / 7) + u * (rho_min ** (1 / 7) - rho_max ** (1 / 7))) ** 7
                pts = [_at_rho(g, float(r)) for r in mini]
                pts[-1] = m
                for _ in range(K):
                    cy = math.sqrt(rho_max**2 - rho_min**2)
                    prog.heun(n, m, pts[1], (pts[0], cy, (-(jumps + 1.0), -float(jumps))))
                    jumps += 1
                    for i in range(1, steps):
                        prog.heun(n, pts[i], pts[i + 1])
                a = m
            if here and float(log_rho[n + 1]) == math.log(min(iv[0] for iv in here)):
                continue  # the step ended at rho_min
            prog.heun(n, a, b)


@table
class Churn(_Stochastic):
    """EDM's churn (Karras et al. 2022, Alg. 2) before every step of the singlestep table ``base``
    (module docstring); options ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``. With ``s_noise = 0``
    the steps still start at rho_hat (x_hat = x), as in Alg. 2."""

    base: RungeKutta | ExponentialRK | None = None
    s_churn: float = 40.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.0
    options = ("s_churn", "s_tmin", "s_tmax", "s_noise")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.base, (RungeKutta, ExponentialRK)):
            raise TypeError(
                f"{self.name}: base must be a singlestep table (RungeKutta or ExponentialRK), "
                f"got {type(self.base).__name__}"
            )
        if self.base.prediction != self.prediction:
            raise ValueError(f"{self.name}: prediction must be the base table's {self.base.prediction!r}")

    @property
    def calls_per_step(self) -> int:
        return len(self.base.c)

    def _rows(self, g, s_churn=None, s_tmin=None, s_tmax=None, s_noise=None) -> Rows:
        pick = lambda v, own: own if v is None else v
        gamma, s_noise = churn_gamma(
            g,
            pick(s_churn, self.s_churn),
            pick(s_tmin, self.s_tmin),
            pick(s_tmax, self.s_tmax),
            pick(s_noise, self.s_noise),
        )
        refuse_alpha_zero_start(self, g)
        N = g.steps
        n = torch.arange(N)
        jumped = gamma > 0
        lam_hat = torch.where(jumped, g.lam[:-1] - torch.log1p(gamma), g.lam[:-1])
        t_j, la_j, ls_j = g.at_lambda(lam_hat[jumped])  # the points of level rho_hat = rho_n (1 + gamma_n)
        t_hat = g.t[:-1].index_put((n[jumped],), t_j)
        la_hat = g.log_alpha[:-1].index_put((n[jumped],), la_j)
        ls_hat = g.log_sigma[:-1].index_put((n[jumped],), ls_j)
        # singular steps (to sigma = 0) take the base table's first-order limit, as the base does
        staged = ~g.singular & (len(self.base.c) > 1)
        counts = torch.where(staged, len(self.base.c), 1)
        first = torch.cumsum(counts, 0) - counts
        rows = Rows(int(counts.sum()))
        rows.call(first, n, t_hat)
        carry = torch.ones(N, dtype=torch.float64)  # the factor of the state in the first call's update
        for parity in (0, 1):
            steps = _Steps(g, parity=parity, begin=(la_hat, ls_hat))
            mine = (n % 2) == parity
            single = n[mine & ~staged]
            ddim_rows(rows, steps, single, first[single], self.prediction)
            carry = carry.index_put((single,), steps.ddim(single, self.prediction)[0])
            self.base.stage_rows(rows, steps, n[mine & staged], first[mine & staged])
        # the jump: X = x_hat = alpha_hat/alpha_n x + alpha_hat c xi, and the state moves to x_hat
        c = s_noise * torch.exp(ls_hat - la_hat) * torch.sqrt(1 - torch.exp(-2 * torch.log1p(gamma)))
        ratio, lift = torch.exp(la_hat - g.log_alpha[:-1]), torch.exp(la_hat) * c
        rows.input_state(first, ratio)
        rows.update_state(first, carry * ratio)
        rows.noise(first, carry * lift, g.t[:-1], g.t[1:], input=lift)
        return rows


def _intervals(restart) -> tuple:
    """``restart`` as a tuple of ``(rho_min, rho_max, K)``, refused unless 0 < rho_min < rho_max and K >= 1."""
    msg = "restart must be a tuple of (rho_min, rho_max, K) with 0 < rho_min < rho_max and an integer K >= 1"
    if not isinstance(restart, tuple):
        raise TypeError(f"{msg}, got {restart!r}")
    out = []
    for iv in restart:
        if not isinstance(iv, tuple) or len(iv) != 3:
            raise ValueError(f"{msg}, got {iv!r}")
        lo = check_real(iv[0], "restart rho_min", 0.0, lo_open=True)
        hi = check_real(iv[1], "restart rho_max", lo, lo_open=True)
        if isinstance(iv[2], bool) or not isinstance(iv[2], int) or iv[2] < 1:
            raise ValueError(f"{msg}, got K = {iv[2]!r}")
        out.append((lo, hi, iv[2]))
    return tuple(out)


EDM_SDE = HeunJumps(
    "edm-sde",
    order=2,
    strong_order=1.0,
    weak_order=2,
    kind="churn",
    paper="Karras et al., EDM, NeurIPS 2022, Alg. 2 (S_churn = 40, S_tmin = 0.05, S_tmax = 50, S_noise = 1)",
)
RESTART = HeunJumps(
    "restart",
    order=2,
    strong_order=2.0,
    weak_order=2,
    kind="restart",
    paper="Xu et al., Restart sampling, NeurIPS 2023 (Heun, one interval [0.1, 1] in sigma/alpha, K = 2)",
)
TABLES = [EDM_SDE, RESTART]


def _churn_of(base, order: int) -> Churn:
    return Churn(
        f"{base.name}-churn",
        order=order,
        strong_order=1.0,
        weak_order=order,
        prediction=base.prediction,
        base=base,
        paper=f"Karras et al., EDM, NeurIPS 2022, Alg. 2 with {base.name} steps (k-diffusion's s_churn)",
    )


# k-diffusion's sample_euler / sample_heun / sample_dpm_2 with s_churn (not registered: edm-sde is the named one)
EULER_CHURN, HEUN_CHURN, DPM_2_CHURN = _churn_of(EULER, 1), _churn_of(HEUN, 2), _churn_of(DPM_SOLVER_2, 2)
