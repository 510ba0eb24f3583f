"""Stochastic tables built on a deterministic one: ancestral singlestep steps and multistep SDE steps.

**Ancestral steps** (Ho et al., DDPM, 2020; Karras et al., EDM, 2022, and k-diffusion's ``*_ancestral``
samplers). In the coordinates x/alpha, where the noise level is rho = sigma/alpha, a step from rho_n to
rho_{n+1} splits the target level into a deterministic part and fresh noise,

    rho_up = rho_{n+1} u,   rho_down = rho_{n+1} sqrt(1 - u^2),   u = min(1, eta sqrt(1 - e^{-2h})),

(h = lambda_{n+1} - lambda_n, so ``sqrt(1 - e^{-2h})`` is DDPM's posterior standard deviation over
rho_{n+1}); the step runs the ``base`` singlestep table from t_n to the point of level rho_down (its
end keeps alpha_{n+1}, so the update lands on x_{n+1}'s scale) and adds
``sigma_{n+1} u xi``, xi the normalised Brownian increment over [t_n, t_{n+1}]. eta = 0 is the base
table; with ``base=ddim`` it is DDPM ancestral sampling (the ``ddpm`` table). A step whose
rho_down is 0 (to sigma = 0, or u = 1) takes the base table's first-order limit, x = alpha x0.

**Multistep SDE steps** (Lu et al., DPM-Solver++, 2022, sec. 5; Gonzalez et al., SEEDS, 2023). The
reverse SDE in lambda with the data prediction, ``eta`` scaling its noise (eta = 1: the reverse SDE,
eta = 0: the probability flow ODE), is solved exactly for a polynomial interpolant D of the last q
outputs by

    x_{n+1} = sigma_{n+1}/sigma_n e^{-eta h} x_n + alpha_{n+1} sum_i w_i(z) Delta_i
              + sigma_{n+1} sqrt(1 - e^{-2 eta h}) xi,        z = (1 + eta) h,

with ``D(lambda_n + tau) = sum_i Delta_i (tau/h)^i`` and ``w_i(z) = i! chi_{i+1}(z)``: the weights of the
deterministic exponential multistep table ``base`` evaluated at z instead of h (its published
weight rows included). ``base = dpmpp-2m`` gives ``dpmpp-2m-sde``; ``dpmpp-3m-taylor`` gives
k-diffusion's DPM-Solver++(3M) SDE.

**Ancestral stages** (k-diffusion's ``sample_dpmpp_sde``, DPM-Solver++ (Lu et al. 2022, Alg. 1) with
noise): a step of two calls, the second at ``lambda_s = lambda_n + r h``, each an ancestral step from
x_n with its own split (u_1 over [lambda_n, lambda_s], u_2 over the step):

    X_s     = alpha_s (c_1 y_n + (1 - c_1) D_n) + sigma_s u_1 xi_a,          c_1 = e^{-r h} sqrt(1 - u_1^2),
    x_{n+1} = alpha_{n+1} (c_2 y_n + (1 - c_2) D') + sigma_{n+1} u_2 xi_b,   c_2 = e^{-h} sqrt(1 - u_2^2),

with ``y_n = x_n/alpha_n``, ``D' = (1 - 1/(2r)) D_n + 1/(2r) D_s`` and xi_a, xi_b the normalised Brownian
increments over [t_n, t_s] and [t_n, t_{n+1}] (they overlap: one Brownian path answers both). xi_a
is the input noise of the second call; xi_b, which the second call cannot also carry, is the input
noise of the next step's first call (which puts it into the state). A last step that ends above
sigma = 0 has no next call: its second call carries xi_b in both places (its input noise sigma_s u_1
xi_b, the same law for X_s), unless ``open_end=True``, which leaves ``sigma_N u_2 xi_b`` out for the
caller to add (k-diffusion's adapter does, to follow k-diffusion's noise exactly).

**Singlestep order schedules** (Lu et al., DPM-Solver, NeurIPS 2022, sec. 3.4, "DPM-Solver-fast"):
singlestep DPM-Solver-3 steps, the last ``len(tail)`` steps taking the orders in ``tail`` (a budget
of K model calls gives floor(K/3) + 1 steps; the last is of order K mod 3, or, when 3 divides K,
the last two are of orders 2 and 1). Deterministic; it lives here as the stochastic-sampler
libraries' (k-diffusion's) step allocation.
"""

from __future__ import annotations

import torch

from ..paths import check_real
from ..plan import Rows
from .base import Geometry, Method, refuse_alpha_zero_start, table
from .exponential_multistep import ExponentialMultistep
from .exponential_rk import DDIM, DPM_SOLVER_1, DPM_SOLVER_2, DPM_SOLVER_3, DPMPP_2S, ExponentialRK, ddim_rows
from .stochastic import _Stochastic

__all__ = [
    "DPM_SOLVER_FAST",
    "Ancestral",
    "AncestralStages",
    "ExponentialMultistepSDE",
    "SinglestepSchedule",
    "ancestral_split",
    "dpm_solver_fast_tail",
]


def ancestral_split(g: Geometry, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, sqrt(1 - u^2)) of every step: the share of the next noise level that is fresh noise,
    ``u = min(1, eta sqrt(1 - e^{-2h}))``, and the share reached deterministically."""
    h = g.h
    finite = torch.isfinite(h)
    q2 = torch.where(finite, -torch.expm1(-2 * torch.where(finite, h, torch.ones_like(h))), torch.ones_like(h))
    u = torch.clamp(eta * torch.sqrt(q2), max=1.0)
    return u, torch.sqrt((1 - u) * (1 + u))


class _Steps(Geometry):
    """The geometry of steps whose start or end is moved off the grid, given by (log alpha, log sigma)
    per step: entry m is the start of step m where ``start[m]``, else the end of step m - 1. Steps of
    one parity at a time: each point is the start of one step or the end of the step before.
    ``end``: the moved ends (ancestral steps end at rho_down); ``begin``: the moved starts (EDM's churn
    starts at rho_hat); a point not moved is the grid's."""

    def __init__(self, g: Geometry, end=None, parity: int = 0, begin=None):
        m = torch.arange(g.steps + 1)
        start = ((m % 2) == parity) & (m < g.steps)
        prev, here = (m - 1).clamp(min=0), m.clamp(max=g.steps - 1)
        ends = (g.log_alpha[1:], g.log_sigma[1:]) if end is None else end
        begins = (g.log_alpha[:-1], g.log_sigma[:-1]) if begin is None else begin
        self.path, self.grid, self.t, self.steps = g.path, g.grid, g.t, g.steps
        self.log_alpha = torch.where(start, begins[0][here], ends[0][prev])
        self.log_sigma = torch.where(start, begins[1][here], ends[1][prev])
        self.lam = self.log_alpha - self.log_sigma
        self.h = self.lam[1:] - self.lam[:-1]
        finite = torch.isfinite(self.lam)
        self.singular = ~(finite[:-1] & finite[1:])
        self.sigma_zero_end = torch.isposinf(self.lam[1:])
        self.alpha_zero_start = g.alpha_zero_start


@table
class Ancestral(_Stochastic):
    """Ancestral steps of the singlestep table ``base`` (see the module docstring); option ``eta``
    (0: the base table; 1: DDPM's noise level)."""

    base: ExponentialRK = DDIM
    options = ("eta",)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.base, ExponentialRK):
            raise TypeError(f"{self.name}: base must be an ExponentialRK table, got {type(self.base).__name__}")
        if self.base.prediction != self.prediction:
            raise ValueError(f"{self.name}: prediction must be the base table's {self.base.prediction!r}")

    @property
    def calls_per_step(self) -> int:
        return len(self.base.c)

    def _rows(self, g, eta=None) -> Rows:
        eta = self._option_eta(eta)
        refuse_alpha_zero_start(self, g)
        u, keep = ancestral_split(g, eta)
        end_la, end_ls = g.log_alpha[1:], g.log_sigma[1:] + torch.log(keep)  # log 0 = -inf: sigma_down = 0
        n = torch.arange(g.steps)
        regular = torch.isfinite(g.lam[:-1]) & torch.isfinite(end_la - end_ls)
        staged = regular & (len(self.base.c) > 1)
        counts = torch.where(staged, len(self.base.c), 1)
        first = torch.cumsum(counts, 0) - counts
        rows = Rows(int(counts.sum()))
        rows.call(first, n, g.t[:-1])
        for parity in (0, 1):
            steps = _Steps(g, (end_la, end_ls), parity)
            mine = (n % 2) == parity
            ddim_rows(rows, steps, n[mine & ~staged], first[mine & ~staged], self.prediction)
            self.base.stage_rows(rows, steps, n[mine & staged], first[mine & staged])
        rows.noise(first + counts - 1, torch.exp(g.log_sigma[1:]) * u, g.t[:-1], g.t[1:])
        return rows


@table
class ExponentialMultistepSDE(_Stochastic):
    """Multistep SDE steps of the exponential multistep table ``base`` (data prediction, interpolation
    in lambda, no corrector or warm-up table); see the module docstring. Option ``eta`` (0: the base
    table; 1: the reverse SDE)."""

    base: ExponentialMultistep | None = None
    options = ("eta",)

    def __post_init__(self):
        super().__post_init__()
        b = self.base
        if not isinstance(b, ExponentialMultistep):
            raise TypeError(f"{self.name}: base must be an ExponentialMultistep table, got {type(b).__name__}")
        if b.prediction != "x0" or b.variable != "lambda" or b.corrector or b.warmup is not None:
            raise ValueError(
                f"{self.name}: base must predict x0, interpolate in lambda and have no corrector or warm-up "
                f"table, got {b.name!r}"
            )
        if self.prediction != "x0":
            raise ValueError(f"{self.name}: prediction must be 'x0' (the base table's)")

    @property
    def history(self) -> int:
        return self.base.nodes - 1

    def _rows(self, g, eta=None) -> Rows:
        eta = self._option_eta(eta)
        N = g.steps
        n = torch.arange(N)
        h = g.h
        finite = torch.isfinite(h)
        hf = torch.where(finite, h, torch.ones_like(h))
        eh = torch.where(finite, eta * hf, torch.where(torch.full_like(h, eta) == 0, 0.0, torch.inf))
        z = torch.where(finite, hf + eh, torch.full_like(h, torch.inf))
        rows = Rows(N)
        rows.call(n, n, g.t[:-1])
        rows.update_state(n, torch.exp(g.log_sigma[1:] - g.log_sigma[:-1] - eh))
        # q outputs where this step and the q - 1 before it have finite length (the call at alpha = 0 is no node)
        q = torch.ones(N, dtype=torch.int64)
        run = torch.zeros((), dtype=torch.int64)
        for k in range(N):  # the number of consecutive finite steps ending at step k
            run = torch.where(finite[k], run + 1, torch.zeros_like(run))
            q[k] = torch.clamp(run, min=1, max=self.base.nodes)
        alpha1 = torch.exp(g.log_alpha[1:])
        rows.update(n[~finite], n[~finite], alpha1[~finite])  # infinite steps: the limit x = alpha x0
        for m in range(1, self.base.nodes + 1):
            sel = n[(q == m) & finite]
            if not sel.numel():
                continue
            d = torch.arange(m)
            r = (g.lam[sel[:, None] - d[None, :]] - g.lam[sel][:, None]) / hf[sel][:, None]
            w = torch.stack([self.base._weight_value(self.base.weight(m, i), z[sel]) for i in range(m)], 1)
            V = r[:, :, None] ** torch.arange(m, dtype=torch.float64)
            c = torch.linalg.solve(V.transpose(1, 2), w[:, :, None])[:, :, 0] * alpha1[sel][:, None]
            for j in range(m):
                rows.update(sel, sel - j, c[:, j])
        rows.noise(n, torch.exp(g.log_sigma[1:]) * torch.sqrt(-torch.expm1(-2 * eh)), g.t[:-1], g.t[1:])
        return rows


@table
class AncestralStages(_Stochastic):
    """Two-call steps whose stages are ancestral steps from the step start (k-diffusion's
    ``sample_dpmpp_sde``; module docstring): second node at ``r`` (0 < r <= 1), option ``eta`` (0:
    DPM-Solver++ singlestep with node r) and ``open_end`` (leave the last step's end noise to the caller)."""

    r: float = 0.5
    options = ("eta", "open_end")

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "r", check_real(self.r, "r", 0.0, 1.0, lo_open=True))
        if self.prediction != "x0":
            raise ValueError(f"{self.name}: prediction must be 'x0'")

    @property
    def calls_per_step(self) -> int:
        return 2

    def _rows(self, g, eta=None, open_end=False) -> Rows:
        eta = self._option_eta(eta)
        if not isinstance(open_end, bool):
            raise TypeError(f"open_end must be a bool, got {open_end!r}")
        N, r = g.steps, self.r
        n = torch.arange(N)
        staged = ~g.singular
        counts = torch.where(staged, 2, 1)
        first = torch.cumsum(counts, 0) - counts
        rows = Rows(int(counts.sum()))
        rows.call(first, n, g.t[:-1])
        ddim_rows(rows, g, n[~staged], first[~staged], "x0")  # to sigma = 0 (or from alpha = 0): the DDIM limit
        carry = torch.ones(N, dtype=torch.float64)  # factor of the state in each first call's update
        carry[~staged] = g.ddim(n[~staged], "x0")[0]
        m, f = n[staged], first[staged]
        h = g.h[m]
        t_s, la_s, ls_s = g.at_lambda(g.lam[m] + h * r)
        split = lambda z: torch.clamp(eta * torch.sqrt(-torch.expm1(-2 * z)), max=1.0)
        u1, u2 = split(r * h), split(h)
        c1 = torch.exp(-r * h) * torch.sqrt((1 - u1) * (1 + u1))
        c2 = torch.exp(-h) * torch.sqrt((1 - u2) * (1 + u2))
        a_n, a_s, a_1 = torch.exp(g.log_alpha[m]), torch.exp(la_s), torch.exp(g.log_alpha[m + 1])
        fac = 1 / (2 * r)
        rows.call(f + 1, m, t_s)
        rows.input_state(f + 1, a_s / a_n * c1)
        rows.input(f + 1, f, a_s * (1 - c1))
        rows.update_state(f + 1, a_1 / a_n * c2)
        rows.update(f + 1, f, a_1 * (1 - c2) * (1 - fac))
        rows.update(f + 1, f + 1, a_1 * (1 - c2) * fac)
        end = torch.exp(g.log_sigma[m + 1]) * u2  # sigma_{n+1} u_2: the end noise, carried by the next call
        nxt = m + 1 < N
        last = ~nxt & ~torch.as_tensor(open_end)
        # noise intervals at t(lambda) (k-diffusion asks for sigma = exp(-(-log sigma)), so a Brownian
        # tree answers the same points); the second call: xi_a in its input, and on a closed last step
        # xi_b in both places (one call, one normal)
        t0, t1 = g.at_lambda(g.lam[m])[0], g.at_lambda(g.lam[m + 1])[0]
        rows.noise(f[~last] + 1, 0.0, t0[~last], t_s[~last], input=torch.exp(ls_s[~last]) * u1[~last])
        rows.noise(f[last] + 1, end[last], t0[last], t1[last], input=torch.exp(ls_s[last]) * u1[last])
        k = first[m[nxt] + 1]  # the next step's first call carries xi_b into its input and the state
        rows.noise(k, carry[m[nxt] + 1] * end[nxt], t0[nxt], t1[nxt], input=end[nxt])
        return rows


def dpm_solver_fast_tail(nfe: int) -> tuple[tuple[int, ...], int]:
    """(tail orders, steps) of DPM-Solver-fast for a budget of ``nfe`` model calls (Lu et al. 2022, sec. 3.4)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer (the number of model calls), got {nfe!r}")
    steps = nfe // 3 + 1
    if nfe % 3 == 0:
        return ((2, 1), steps) if steps >= 2 else ((1,), 1)
    return (nfe % 3,), steps


@table
class SinglestepSchedule(Method):
    """Singlestep DPM-Solver steps whose order follows a schedule: order 3 (``tables[2]``) on every step
    but the last ``len(tail)``, which take the orders in ``tail`` (module docstring). Steps of infinite
    length take the first-order (DDIM) limit."""

    tables: tuple[ExponentialRK, ...] = (DPM_SOLVER_1, DPM_SOLVER_2, DPM_SOLVER_3)  # tables[k - 1]: order k
    tail: tuple[int, ...] = (2,)

    def __post_init__(self):
        super().__post_init__()
        if any(not isinstance(t, ExponentialRK) or t.prediction != self.prediction for t in self.tables):
            raise ValueError(f"{self.name}: tables must be ExponentialRK tables predicting {self.prediction!r}")
        if any(isinstance(o, bool) or not isinstance(o, int) or not 1 <= o <= len(self.tables) for o in self.tail):
            raise ValueError(f"{self.name}: tail must hold orders in 1..{len(self.tables)}, got {self.tail!r}")
        if self.order > min(len(self.tables), *(o + 1 for o in self.tail)):
            raise ValueError(f"{self.name}: order {self.order} exceeds what its tail {self.tail} keeps")

    @property
    def calls_per_step(self) -> int:
        return max(len(t.c) for t in self.tables)

    def derivation(self, max_order=None, budget=None):
        """The stiff order conditions of the interior steps' table (``tables[-1]``); the tail is one or
        two steps, which keep the global order when each tail order is at least the interior order - 1."""
        from ..analysis.symbolic import SymbolicLimitError

        if min(self.tail) + 1 < len(self.tables):
            raise SymbolicLimitError(f"{self.name}: its tail {self.tail} lowers the order below the interior table's")
        return self.tables[-1].derivation(max_order, budget)

    def _rows(self, g) -> Rows:
        refuse_alpha_zero_start(self, g)
        N = g.steps
        n = torch.arange(N)
        order = torch.full((N,), len(self.tables), dtype=torch.int64)
        tail = torch.tensor(self.tail[-N:], dtype=torch.int64)
        order[N - tail.numel() :] = tail
        stages = torch.tensor([len(t.c) for t in self.tables])[order - 1]
        staged = ~g.singular & (stages > 1)
        counts = torch.where(staged, stages, 1)
        first = torch.cumsum(counts, 0) - counts
        rows = Rows(int(counts.sum()))
        rows.call(first, n, g.t[:-1])
        ddim_rows(rows, g, n[~staged], first[~staged], self.prediction)
        for k, t in enumerate(self.tables, start=1):
            sel = n[staged & (order == k)]
            if sel.numel():
                t.stage_rows(rows, g, sel, first[sel])
        return rows


def _kdiffusion_3m():
    from . import exponential_multistep

    return next(m for m in exponential_multistep.TABLES if m.name == "dpmpp-3m-taylor")


DPM_2_ANCESTRAL = Ancestral(
    "dpm-2-ancestral",
    order=1,
    strong_order=1.0,
    weak_order=1,
    prediction="eps",
    base=DPM_SOLVER_2,
    paper="DPM-Solver-2 (Lu et al. 2022) steps to sigma_down plus sigma_up noise (k-diffusion sample_dpm_2_ancestral)",
)
DPMPP_2S_ANCESTRAL = Ancestral(
    "dpmpp-2s-ancestral",
    order=1,
    strong_order=1.0,
    weak_order=1,
    base=DPMPP_2S,
    paper="DPM-Solver++(2S) (Lu et al. 2022) steps to sigma_down plus sigma_up noise "
    "(k-diffusion sample_dpmpp_2s_ancestral)",
)
DPMPP_3M_SDE = ExponentialMultistepSDE(
    "dpmpp-3m-sde",
    order=2,
    strong_order=1.0,
    weak_order=2,
    base=_kdiffusion_3m(),
    paper="Lu et al., DPM-Solver++, 2022: 3M (Taylor 2-node warm-up, half D2 weight) with the SDE step "
    "(k-diffusion sample_dpmpp_3m_sde)",
)

DPM_SOLVER_FAST = SinglestepSchedule(
    "dpm-solver-fast",
    order=3,
    prediction="eps",
    paper="Lu et al., DPM-Solver, NeurIPS 2022, sec. 3.4 (DPM-Solver-fast: DPM-Solver-3 steps, the last of "
    "order 2; k-diffusion sample_dpm_fast)",
)

# DPM_SOLVER_FAST is not registered: on a grid ending at sigma = 0 its lower-order last step is the
# infinite step every singlestep table takes as DDIM, so it would compile to dpm-solver-3's plan there;
# k-diffusion's sample_dpm_fast (odesolve.adapters.kdiffusion) sets its tail from the call budget.
TABLES = [DPM_2_ANCESTRAL, DPMPP_2S_ANCESTRAL, DPMPP_3M_SDE]
