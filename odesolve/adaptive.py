"""Adaptive step sizes per sample: an embedded pair of singlestep tables, a PID controller,
per-sample accept/reject, and a batch that shrinks as samples finish.

Every sample ``b`` keeps its own half log-SNR ``lambda_b``, step ``h_b`` and controller history.
One iteration takes, for the samples still running, the step ``lambda_b -> min(lambda_end,
lambda_b + h_b)`` with both tables of an `EmbeddedPair`. The two tables share their first
model calls (same nodes, same stage rows): they are compiled into two *per-sample plans* (one
step, coefficients of shape ``(batch,)``, `odesolve.plan`) and run in lockstep by the one
executor (`odesolve.execute.Program.steps`), each shared model output sent to both; the
network is called ``len(high.c)`` times per sample and attempt. The error of sample b is

    err_b = || (x_low - x_high) / (atol + 0 v rtol max(|x_low|, |x_prev|)) ||_2 / sqrt(n),

``x_prev`` the low-order solution of its last accepted step and ``n`` its number of entries
(Lu et al. 2022, DPM-Solver, Sec. 4.2 and App. C; the ``max`` with ``atol`` as k-diffusion's
``dpm_adaptive``). `PIDController` turns it into a factor and a decision. Accepted samples
advance; finished samples (``lambda_b >= lambda_end - 1e-5``) leave the batch, so the network is
never evaluated on them. Every operation on a sample reads only that sample's entries, so its
result does not depend on the batch it is in (bit for bit, given a model that treats samples
independently).

``per_sample=False`` is the usual batch-wide stepping: one error norm over the whole batch, one
step size; with k-diffusion's arguments it is k-diffusion's ``sample_dpm_adaptive``
(`sample_dpm_adaptive`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction as Fr

import torch
from torch import Tensor

from .execute import Program, _check_inputs
from .grids import Grid
from .methods.base import Geometry
from .methods.exponential_rk import DDIM, DPM_SOLVER_1, DPM_SOLVER_2, DPM_SOLVER_3, DPMPP_2S, DPMPP_3S, ExponentialRK
from .models import Model
from .paths import EDM, Path
from .plan import Plan, Rows

__all__ = [
    "PAIRS",
    "AdaptiveResult",
    "EmbeddedPair",
    "PIDController",
    "sample_adaptive",
    "sample_dpm_adaptive",
]

_FINISHED = 1e-5  # a sample within this of lambda_end is done (k-diffusion's margin)


@dataclass(frozen=True)
class EmbeddedPair:
    """Two singlestep exponential RK tables whose first ``len(low.c)`` stages coincide: the low-order
    solution costs no model call beyond the high-order one's, and ``x_low - x_high`` estimates the
    local error of ``low``."""

    name: str
    low: ExponentialRK
    high: ExponentialRK
    paper: str = ""

    def __post_init__(self):
        lo, hi = self.low, self.high
        if not (isinstance(lo, ExponentialRK) and isinstance(hi, ExponentialRK)):
            raise TypeError(f"{self.name}: low and high must be ExponentialRK tables")
        if lo.prediction != hi.prediction:
            raise ValueError(f"{self.name}: low predicts {lo.prediction!r}, high {hi.prediction!r}; they must agree")
        s = len(lo.c)
        if s > len(hi.c) or lo.c != hi.c[:s] or lo.a != hi.a[: s - 1]:
            raise ValueError(f"{self.name}: the stages of low (c, a) must be the first stages of high")
        if not lo.order < hi.order:
            raise ValueError(f"{self.name}: low's order {lo.order} must be below high's {hi.order}")

    @property
    def order(self) -> int:
        return self.high.order

    @property
    def calls(self) -> int:
        """Model calls per attempted step."""
        return len(self.high.c)

    def plans(self, path: Path, t0: Tensor, t1: Tensor) -> tuple[Plan, Plan]:
        """The per-sample plans of the step ``t0[b] -> t1[b]`` (path time, shape ``(batch,)``) of
        ``low`` and of ``high``."""
        t = torch.stack([t0, t1])
        envelope = Grid(path, torch.stack([t0.max(), t1.min()]))
        g = Geometry(path, envelope, t=t)
        zero = torch.zeros(1, dtype=torch.int64)
        out = []
        for table in (self.low, self.high):
            rows = Rows(len(table.c), batch=t0.numel())
            rows.call(zero, zero, t[:1])
            table.stage_rows(rows, g, zero, zero)
            out.append(rows.plan(table.name, path, envelope, table.prediction, meta={"pair": self.name}))
        return out[0], out[1]


def _dpm2(name: str, prediction: str, r1: Fr, paper: str) -> ExponentialRK:
    """DPM-Solver-2 with node r1 (Lu et al. 2022, Alg. 4): weights 1 - 1/(2 r1) and 1/(2 r1) on chi_1."""
    return ExponentialRK(
        name,
        order=2,
        prediction=prediction,
        c=(Fr(0), r1),
        a=(((Fr(1),),),),
        b=((1 - 1 / (2 * r1),), (1 / (2 * r1),)),
        paper=paper,
    )


_LU = "Lu et al., DPM-Solver, NeurIPS 2022, Sec. 4.2 (DPM-Solver-12 and -23)"
PAIRS: dict[str, EmbeddedPair] = {
    p.name: p
    for p in (
        EmbeddedPair("dpm-solver-12", DPM_SOLVER_1, DPM_SOLVER_2, _LU),
        EmbeddedPair("dpm-solver-23", _dpm2("dpm-solver-2-r1/3", "eps", Fr(1, 3), _LU), DPM_SOLVER_3, _LU),
        EmbeddedPair("dpmpp-12", DDIM, DPMPP_2S, _LU + ", in the data-prediction form of DPM-Solver++"),
        EmbeddedPair(
            "dpmpp-23",
            _dpm2("dpmpp-2s-r1/3", "x0", Fr(1, 3), _LU),
            DPMPP_3S,
            _LU + ", in the data-prediction form of DPM-Solver++",
        ),
    )
}


@dataclass(frozen=True)
class PIDController:
    """Step-size control by a digital filter of the errors (Söderlind 2003, ACM TOMS 29, "Digital
    filters in adaptive time-stepping"), with the arctan limiter of Söderlind & Wang 2006 (J. Comput.
    Appl. Math. 185) and k-diffusion's parametrisation. With ``e_n = 1/(err_n + eps)`` and ``k``
    the order,

        factor = L(e_n^{b1} e_{n-1}^{b2} e_{n-2}^{b3}),   L(u) = 1 + atan(u - 1),
        b1 = (p + i + d)/k,  b2 = -(p + 2d)/k,  b3 = d/k,

    the step is accepted when ``factor >= accept_safety`` and ``h <- factor h`` in either case
    (``e_{n-1}, e_{n-2}`` are the errors of the last accepted steps). ``i = 1, p = d = 0`` (the
    default, k-diffusion's) is the elementary controller ``h ~ err^(-1/k)``; `pi` gives
    Gustafsson's PI controller."""

    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    accept_safety: float = 0.81
    eps: float = 1e-8

    def __post_init__(self):
        for name in ("pcoeff", "icoeff", "dcoeff", "accept_safety", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.pcoeff + self.icoeff + self.dcoeff <= 0:
            raise ValueError(
                f"pcoeff + icoeff + dcoeff must be positive (a larger error must shrink the step), got "
                f"{self.pcoeff} + {self.icoeff} + {self.dcoeff}"
            )
        if not 0 < self.accept_safety <= 1:
            raise ValueError(f"accept_safety must lie in (0, 1], got {self.accept_safety!r}")
        if self.eps <= 0:
            raise ValueError(f"eps must be positive, got {self.eps!r}")

    @classmethod
    def pi(cls, accept_safety: float = 0.81) -> PIDController:
        """Gustafsson's PI controller (Gustafsson 1991, BIT 31; Hairer & Wanner, Solving ODEs II,
        IV.2): ``h <- h err_n^(-0.7/k) err_{n-1}^(0.4/k)``, i.e. ``p = 0.4, i = 0.3``."""
        return cls(pcoeff=0.4, icoeff=0.3, dcoeff=0.0, accept_safety=accept_safety)

    def exponents(self, order: int) -> tuple[float, float, float]:
        p, i, d = self.pcoeff, self.icoeff, self.dcoeff
        return (p + i + d) / order, -(p + 2 * d) / order, d / order

    def propose(self, err: Tensor, history: Tensor, order: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(accept, factor, history)`` for the errors ``err`` (float64, per sample) and the
        controller ``history`` (``(n, 2)``: log e_{n-1}, log e_{n-2}; NaN before the first step).
        Elementwise in exp/log/atan only: a sample's result does not depend on its batch."""
        log_e = -torch.log(err + self.eps)
        history = torch.where(torch.isnan(history), log_e[:, None], history)
        b1, b2, b3 = self.exponents(order)
        factor = torch.exp(b1 * log_e + b2 * history[:, 0] + b3 * history[:, 1])
        factor = 1 + torch.atan(factor - 1)
        accept = factor >= self.accept_safety
        shifted = torch.stack([log_e, history[:, 0]], 1)
        return accept, factor, torch.where(accept[:, None], shifted, history)


@dataclass(frozen=True)
class AdaptiveResult:
    """What `sample_adaptive` returns: the ``samples`` and, per sample, the network evaluations
    ``nfe``, the ``accepted`` and ``rejected`` steps (int64 tensors of shape ``(batch,)``)."""

    samples: Tensor
    nfe: Tensor
    accepted: Tensor
    rejected: Tensor

    @property
    def total_nfe(self) -> int:
        """Network evaluations summed over the samples (the cost of the batch)."""
        return int(self.nfe.sum())


def _number(v, name: str, lo: float = 0.0, lo_open: bool = False) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or v < lo
        or (lo_open and v == lo)
    ):
        raise ValueError(f"{name} must be a finite number {'>' if lo_open else '>='} {lo}, got {v!r}")
    return float(v)


def _run_pair(low: Program, high: Program, model: Callable, x: Tensor) -> tuple[Tensor, Tensor]:
    """Both programs from ``x`` in lockstep; each model output of a shared call goes to both."""
    run_lo, run_hi = low.steps(x), high.steps(x)
    try:
        k, X, t, _ = next(run_hi)
        j, x_low, _, _ = next(run_lo)
        while k < high.calls:
            out = model(X, t)
            if j < low.calls:
                j, x_low, _, _ = run_lo.send(out)
            k, X, t, _ = run_hi.send(out)
    finally:
        run_lo.close()
        run_hi.close()
    return x_low, X


def _error(x_low: Tensor, x_high: Tensor, x_prev: Tensor, rtol: float, atol: float, per_sample: bool) -> Tensor:
    """The scaled RMS error of ``x_low - x_high``, per sample or over the batch (then expanded)."""
    scale = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
    d = ((x_low - x_high) / scale).to(torch.float64)
    if per_sample:
        d = d.flatten(1)
        return torch.linalg.vector_norm(d, dim=1) / math.sqrt(d.shape[1])
    return (torch.linalg.vector_norm(d) / math.sqrt(d.numel())).expand(d.shape[0])


def sample_adaptive(
    model: Model,
    x: Tensor,
    t_start,
    t_end,
    *,
    pair: str | EmbeddedPair = "dpm-solver-23",
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    controller: PIDController | None = None,
    per_sample: bool = True,
    max_attempts: int = 10_000,
    on_attempt: Callable[[dict], None] | None = None,
) -> AdaptiveResult:
    """Integrate the probability-flow ODE from ``x`` at path time ``t_start`` to ``t_end`` with
    adaptive steps (module docstring): each sample its own step size (``per_sample=True``) or one for
    the batch. ``pair``: a name of `PAIRS` or an `EmbeddedPair`; ``rtol``, ``atol``:
    the tolerance of the scaled error; ``h_init``: the first step in lambda; ``controller``: a
    `PIDController` (default: Gustafsson's PI, `PIDController.pi`: 1.1-1.4x fewer evaluations than
    the elementary controller on the toy mixtures, 1.1-1.3x more on the digits network);
    ``max_attempts``: the most steps (accepted or rejected) a sample may take. ``on_attempt``
    receives after every attempt a dict with ``index`` (the samples of the attempt), ``x`` (their
    states after it), ``lambda`` (their lambda after it), ``error``, ``accept``, ``h`` (their next
    step) and ``x0`` (the data prediction at the step's start)."""
    if isinstance(pair, str):
        if pair not in PAIRS:
            raise ValueError(f"pair must be one of {sorted(PAIRS)} or an EmbeddedPair, got {pair!r}")
        pair = PAIRS[pair]
    if not isinstance(pair, EmbeddedPair):
        raise TypeError(f"pair must be a name of odesolve.adaptive.PAIRS or an EmbeddedPair, got {type(pair).__name__}")
    controller = PIDController.pi() if controller is None else controller
    if not isinstance(controller, PIDController):
        raise TypeError(f"controller must be an odesolve.adaptive.PIDController, got {type(controller).__name__}")
    rtol, atol = _number(rtol, "rtol"), _number(atol, "atol")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol are both 0: the error could never be within tolerance")
    h_init = _number(h_init, "h_init", lo_open=True)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")
    if not isinstance(model, Model):
        raise TypeError(
            f"model must be an odesolve.Model, got {type(model).__name__}; wrap your network as "
            "odesolve.Model(fn, path=..., prediction=...)"
        )
    _check_inputs(model, x, model.path)
    path = model.path
    t_start, t_end = (torch.as_tensor(v, dtype=torch.float64) for v in (t_start, t_end))
    if t_start.ndim or t_end.ndim:
        raise ValueError("t_start and t_end must be scalars (path times)")
    path.check_times(torch.stack([t_start, t_end]), "t_start, t_end")
    lam_end, lam_start = path.lambda_(t_end), path.lambda_(t_start)
    if not (math.isfinite(float(lam_start)) and math.isfinite(float(lam_end))):
        raise ValueError(
            f"t_start, t_end must have 0 < sigma and 0 < alpha (finite lambda), got lambda "
            f"{float(lam_start):g} -> {float(lam_end):g}: stop the adaptive run at a small noise level"
        )
    if not float(lam_start) < float(lam_end):
        raise ValueError(
            f"t_start must be a noisier time than t_end, got t_start={float(t_start)}, t_end={float(t_end)}"
        )

    B = x.shape[0]
    state, x_prev = x.clone(), x.clone()
    lam = lam_start.expand(B).clone()
    h = torch.full((B,), h_init, dtype=torch.float64)
    history = torch.full((B, 2), math.nan, dtype=torch.float64)
    nfe, accepted, rejected = (torch.zeros(B, dtype=torch.int64) for _ in range(3))
    active = torch.nonzero(lam < lam_end - _FINISHED).flatten()
    prediction = model.prediction
    while active.numel():
        if int((accepted[active] + rejected[active]).max()) >= max_attempts:
            raise RuntimeError(
                f"max_attempts: a sample took {max_attempts} steps without reaching t_end (lambda "
                f"{float(lam[active].min()):.6g} of {float(lam_end):.6g}); loosen rtol/atol or raise max_attempts"
            )
        s = lam[active]
        nxt = torch.minimum(lam_end, s + h[active])
        low, high = pair.plans(path, path.t_of_lambda(s), path.t_of_lambda(nxt))
        xa = state[active]
        shape = xa.shape
        first = []  # the step's first call (X, t, output), for on_attempt's x0

        def call(X, t, first=first):
            out = model(X, t)
            if on_attempt is not None and not first:
                first.append((X, t, out))
            return out

        x_low, x_high = _run_pair(
            Program(low, prediction, shape, x.dtype, x.device),
            Program(high, prediction, shape, x.dtype, x.device),
            call,
            xa,
        )
        err = _error(x_low, x_high, x_prev[active], rtol, atol, per_sample).cpu()  # the controller runs on the host
        if not bool(torch.isfinite(err).all()):
            raise ValueError(
                "the error estimate is not finite (the model returned NaN or Inf, or the state overflowed)"
            )
        accept, factor, history[active] = controller.propose(err, history[active], pair.order)
        h[active] = h[active] * factor
        nfe[active] += pair.calls
        acc = active[accept]
        state[acc], x_prev[acc], lam[acc] = x_high[accept], x_low[accept], nxt[accept]
        accepted[acc] += 1
        rejected[active[~accept]] += 1
        if on_attempt is not None:
            X, t, out = first[0]
            cx, cf = model.conversion("x0", t)
            x0 = X * _col(cx, X) + out * _col(cf, X)
            on_attempt(
                {
                    "index": active,
                    "x": state[active],
                    "lambda": lam[active],
                    "error": err,
                    "accept": accept,
                    "h": h[active],
                    "x0": x0,
                }
            )
        active = active[lam[active] < lam_end - _FINISHED]
    return AdaptiveResult(state, nfe, accepted, rejected)


def _col(c: Tensor, X: Tensor) -> Tensor:
    return c.to(X.dtype).reshape(-1, *(1,) * (X.ndim - 1))


def sample_dpm_adaptive(
    model: Callable,
    x: Tensor,
    sigma_min,
    sigma_max,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler=None,
    return_info: bool = False,
):
    """k-diffusion's ``sample_dpm_adaptive`` (DPM-Solver-12 / -23 with batch-wide steps, Lu et al.
    2022) for a denoiser ``model(x, sigma, **extra_args)`` on k-diffusion's path (alpha = 1, sigma = t):
    `sample_adaptive` with ``per_sample=False``. Deterministic (``eta = 0``) only. With
    ``return_info`` also ``{"steps", "nfe", "n_accept", "n_reject"}``; ``callback`` receives after
    every attempt ``x``, ``i``, ``t``/``t_up`` (lambda = -log sigma), ``sigma``, ``sigma_hat``,
    ``denoised``, ``error``, ``h`` and the counts."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
    if extra_args is not None and not isinstance(extra_args, dict):
        raise TypeError(
            f"extra_args must be a dict of keyword arguments for the model, got {type(extra_args).__name__}"
        )
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(dict) or None, got {type(callback).__name__}")
    if order not in (2, 3) or isinstance(order, bool):
        raise ValueError(f"order must be 2 (DPM-Solver-12) or 3 (DPM-Solver-23), got {order!r}")
    if eta != 0:
        raise ValueError(
            f"eta must be 0: the stochastic (ancestral) variant of dpm_adaptive is not supported, got eta={eta!r}"
        )
    smin, smax = (
        _number(float(sigma_min), "sigma_min", lo_open=True),
        _number(float(sigma_max), "sigma_max", lo_open=True),
    )
    extra = {} if extra_args is None else extra_args
    sdtype = x.dtype if x.is_floating_point() else torch.float32
    fn = Model(lambda xx, t: model(xx, t.to(xx.device, sdtype), **extra), EDM(), "x0")
    controller = PIDController(pcoeff, icoeff, dcoeff, accept_safety)
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    state = {"x": x}

    def report(a):
        ok = bool(a["accept"][0])
        info["steps"] += 1
        info["nfe"] += order
        info["n_accept" if ok else "n_reject"] += 1
        if callback is not None:
            state["x"] = a["x"]
            lam = a["lambda"][0]
            sigma = torch.exp(-lam)
            callback(
                {
                    "x": state["x"],
                    "i": info["steps"] - 1,
                    "t": lam,
                    "t_up": lam,
                    "sigma": sigma,
                    "sigma_hat": sigma,
                    "denoised": a["x0"],
                    "error": a["error"][0],
                    "h": float(a["h"][0]),
                    **info,
                }
            )

    if smin == smax:
        return (x, info) if return_info else x
    with torch.no_grad():
        result = sample_adaptive(
            fn,
            x,
            smax,
            smin,
            pair="dpm-solver-23" if order == 3 else "dpm-solver-12",
            rtol=rtol,
            atol=atol,
            h_init=abs(h_init),
            controller=controller,
            per_sample=False,
            on_attempt=report,
        )
    return (result.samples, info) if return_info else result.samples
