"""The one executor: runs any :class:`~odesolve.plan.Plan` on a batch of tensors.

Coefficients are cast to the working dtype once, before the loop; each model call then costs an
in-place chain ``s.mul_(a).add_(F_j, alpha=c_j)`` over the nonzero history terms for its input
(multi-stage methods only) and for the state update, and the copy (or conversion) of the output
into the ring. (A BLAS ``mv`` over the ring measured about 2x slower on CPU: it reads zero rows
and allocates.) The whole loop can be captured by :class:`Sampler`. No Python arithmetic on
scalars happens per step and nothing synchronises with the device per step (non-finite outputs
are caught per step on CPU and at the end on other devices, naming the step either way).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from jaxtyping import Shaped
from torch import Tensor

from .grids import Grid
from .models import Model, conversion
from .plan import Plan

__all__ = ["sample", "execute", "Sampler", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """A model returned NaN or Inf."""


def sample(model: Model, x: Shaped[Tensor, "batch *shape"], grid: Grid, method="dpmpp-2m", *, return_trajectory: bool = False,
           callback: Callable[[dict], None] | None = None, progress: bool = False,
           generator: torch.Generator | None = None, **options):
    """Integrate from ``x`` (the state at ``grid.t[0]``, in the path's coordinates) along ``grid``.

    ``method`` is a registered name (:func:`odesolve.methods.names`), a method table, or a compiled
    :class:`Plan`; ``options`` go to the method's ``compile`` (for example ``lower_order_final``).
    Returns the state at ``grid.t[-1]``, and with ``return_trajectory`` also the states at every
    grid time, stacked on a new first axis.
    """
    from . import methods

    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
    if isinstance(method, Plan):
        plan = method
        if options:
            raise TypeError(f"options {sorted(options)} cannot be applied to a compiled plan")
    else:
        m = methods.get(method) if isinstance(method, str) else method
        plan = m.compile(grid.path, grid, **options)
    if plan.grid is not grid and not torch.equal(plan.grid.t, grid.t):
        raise ValueError("method: the plan was compiled for another grid")
    return execute(plan, model, x, return_trajectory=return_trajectory, callback=callback, progress=progress,
                   generator=generator)


def _check_inputs(plan: Plan, model: Model, x: Tensor):
    if not isinstance(model, Model):
        raise TypeError(f"model must be an odesolve.Model, got {type(model).__name__}; wrap your network as "
                        "odesolve.Model(fn, path=..., prediction=...)")
    if model.path != plan.path:
        raise ValueError(f"model.path {model.path!r} differs from the grid's path {plan.path!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (batch, ...) with batch >= 1, got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if not bool(torch.isfinite(x.sum(dtype=torch.float64 if x.is_floating_point() else None))) and \
            not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite (the initial state contains NaN or Inf)")


def execute(plan: Plan, model: Model, x: Shaped[Tensor, "batch *shape"], *, return_trajectory: bool = False,
            callback: Callable[[dict], None] | None = None, progress: bool = False,
            generator: torch.Generator | None = None):
    """Run ``plan`` with ``model`` from ``x``. See :func:`sample`."""
    _check_inputs(plan, model, x)
    if plan.stochastic and generator is None:
        raise ValueError(f"generator: {plan.method!r} injects noise; pass a torch.Generator for reproducibility")
    differentiable = torch.is_grad_enabled() and (
        x.requires_grad or any(getattr(plan, n).requires_grad for n in
                               ("input_state", "input_hist", "update_state", "update_hist", "times")))
    program = _Program(plan, model, x.shape, x.device, x.dtype, differentiable, check_now=x.device.type == "cpu")
    bar = _progress(plan.calls, plan) if progress else None
    try:
        out, traj, first_bad = program.run(x, generator, return_trajectory, callback, bar)
    finally:
        if bar is not None:
            bar.close()
    if first_bad is not None and int(first_bad) >= 0:
        _raise_nonfinite(plan, int(first_bad))
    return (out, traj) if return_trajectory else out


class _Program:
    """A plan prepared for one model, shape, device and dtype: every value the loop reads is
    computed here, once."""

    def __init__(self, plan: Plan, model: Model, shape, dev, dtype, differentiable: bool, check_now: bool):
        self.plan, self.model, self.shape, self.dev, self.dtype = plan, model, shape, dev, dtype
        self.differentiable, self.check_now = differentiable, check_now
        self.wd = wd = torch.promote_types(dtype, torch.float32)  # state accumulated in at least float32
        K, W = plan.calls, plan.window
        cast = lambda v: v.to(dev, wd)  # noqa: E731 - coefficients at the working precision, once
        in_s, in_h, up_s, up_h, noise = map(cast, (plan.input_state, plan.input_hist, plan.update_state,
                                                   plan.update_hist, plan.update_noise))
        cx, cf = (cast(v) for v in conversion(plan.path, model.prediction, plan.prediction, plan.times))
        self.B, self.N = shape[0], math.prod(shape)
        # absolute ring slots: F_{k-j} lives in slot (k-j) % W, so the coefficient rows are permuted once
        perm = ((torch.arange(K)[:, None] - torch.arange(W)[None, :]) % W).to(dev)
        self.in_rows = torch.zeros_like(in_h).scatter(1, perm, in_h).unbind(0)
        self.up_rows = torch.zeros_like(up_h).scatter(1, perm, up_h).unbind(0)
        # (ring slot, coefficient) of the nonzero history terms of every row, for the in-place chain
        terms = lambda rows: [[(j, c) for j, c in enumerate(r.tolist()) if c != 0] for r in rows]  # noqa: E731
        self.in_terms, self.up_terms = terms(self.in_rows), terms(self.up_rows)
        # static structure as Python values, times as views
        self.plain_input = ((plan.input_state == 1) & (plan.input_hist == 0).all(1)).tolist()
        self.has_update = ((plan.update_state != 1) | (plan.update_hist != 0).any(1) | (plan.update_noise != 0)).tolist()
        self.has_noise = (plan.update_noise != 0).tolist()
        self.identity_conv = model.prediction == plan.prediction
        self.step_end = torch.cat([plan.step[1:] != plan.step[:-1], torch.tensor([True])]).tolist()
        self.steps = plan.step.tolist()
        self.t_rows = [t.expand(self.B) for t in plan.times.to(dev).unbind(0)]
        if differentiable:  # coefficients stay tensors, buffers are replaced rather than written
            self.in_s, self.up_s, self.cx, self.cf, self.noise = (v.unbind(0) for v in (in_s, up_s, cx, cf, noise))
        else:  # plain numbers for the BLAS calls (read from the plan once, no arithmetic)
            self.in_s, self.up_s, self.cx, self.cf, self.noise = (v.tolist() for v in (in_s, up_s, cx, cf, noise))

    def run(self, x, generator=None, return_trajectory=False, callback=None, bar=None):
        """The loop. Returns (final state, trajectory or None, index of the first non-finite call
        as a device tensor, or None when checked on the fly)."""
        plan, model, shape, dev, wd, N = self.plan, self.model, self.shape, self.dev, self.wd, self.N
        W = plan.window
        first_bad = None if self.check_now else torch.full((), -1, dtype=torch.int64, device=dev)
        s = x.to(wd).reshape(N).clone()
        hist = torch.zeros((W, N), dtype=wd, device=dev)
        diff = self.differentiable
        xin = None if diff or all(self.plain_input) else torch.empty_like(s)
        traj = [x.to(wd)] if return_trajectory else None
        for k in range(plan.calls):
            if self.plain_input[k]:
                X = s
            elif diff:
                X = torch.addcmul(torch.mv(hist.T, self.in_rows[k]), s, self.in_s[k])
            else:  # X = a s + sum_j c_j F_j, in place over the nonzero terms only
                X = torch.mul(s, self.in_s[k], out=xin)
                for j, c in self.in_terms[k]:
                    X.add_(hist[j], alpha=c)
            out = model(X.view(shape), self.t_rows[k])
            if self.check_now:
                # one reduction per call; an overflowing sum is confirmed elementwise before raising
                if not bool(torch.isfinite(out.sum(dtype=torch.float32))) and not bool(torch.isfinite(out).all()):
                    _raise_nonfinite(plan, k)
            else:
                first_bad = torch.where(~torch.isfinite(out.sum(dtype=torch.float32)) & (first_bad < 0), k, first_bad)
            out = out.reshape(N)
            slot = k % W
            if diff:
                F = out.to(wd) if self.identity_conv else torch.addcmul(out.to(wd) * self.cf[k], X, self.cx[k])
                hist = hist.index_put((torch.tensor([slot], device=dev),), F[None])
            elif self.identity_conv:
                hist[slot].copy_(out)
            else:
                torch.mul(out, self.cf[k], out=hist[slot])
                hist[slot].add_(X, alpha=self.cx[k])
            del out  # the ring holds it now: the next model call does not need it alive
            if self.step_end[k] and callback is not None:  # before the state is overwritten
                i = self.steps[k]
                cbx, cbf = conversion(plan.path, plan.prediction, "x0", plan.times[k:k + 1])
                F = hist[slot].view(shape)
                denoised = F.clone() if plan.prediction == "x0" else X.view(shape) * float(cbx) + F * float(cbf)
            if self.has_update[k]:
                if diff:
                    s = torch.addcmul(torch.mv(hist.T, self.up_rows[k]), s, self.up_s[k])
                else:  # s <- a s + sum_j c_j F_j in place (a BLAS mv over the ring measured 2x slower)
                    if self.up_s[k] != 1:
                        s.mul_(self.up_s[k])
                    for j, c in self.up_terms[k]:
                        s.add_(hist[j], alpha=c)
                if self.has_noise[k]:
                    xi = torch.randn(N, generator=generator, device=dev, dtype=wd)
                    s = torch.addcmul(s, xi, self.noise[k]) if diff else s.add_(xi, alpha=self.noise[k])
            if self.step_end[k]:
                if return_trajectory:
                    traj.append(s.view(shape) if diff else s.view(shape).clone())
                if callback is not None:
                    callback({"step": i, "i": i, "t": plan.grid.t[i + 1], "x": s.view(shape), "denoised": denoised})
            if bar is not None:
                bar.update(1)
        out = s.view(shape).to(self.dtype)
        return out, (torch.stack(traj) if return_trajectory else None), first_bad


class Sampler:
    """A plan prepared once for a model, a batch shape, a dtype and a device, and run many times.

    ``capture="cuda-graph"`` records the whole sampling loop, model calls included, as one CUDA
    graph on the first call and replays it afterwards (the loop has no host synchronisation: a
    non-finite model output is recorded on the device and reported after the replay);
    ``capture="compile"`` hands the loop to ``torch.compile``. Both need a deterministic plan and
    a model that is itself capturable. ``capture=None`` runs the eager loop.
    """

    def __init__(self, model: Model, grid: Grid, method="dpmpp-2m", *, shape, dtype=torch.float32, device="cpu",
                 capture: str | None = None, **options):
        from . import methods

        if capture not in (None, "compile", "cuda-graph"):
            raise ValueError(f"capture must be None, 'compile' or 'cuda-graph', got {capture!r}")
        device = torch.device(device)
        if capture == "cuda-graph" and device.type != "cuda":
            raise ValueError(f"capture='cuda-graph' needs a CUDA device, got device={device}")
        m = methods.get(method) if isinstance(method, str) else method
        self.plan = method if isinstance(method, Plan) else m.compile(grid.path, grid, **options)
        if self.plan.stochastic:
            raise ValueError(f"method: {self.plan.method!r} injects noise; Sampler runs deterministic plans only")
        self.shape, self.dtype, self.device, self.capture = torch.Size(shape), dtype, device, capture
        self.model = model
        _check_inputs(self.plan, model, torch.zeros(self.shape, dtype=dtype, device=device))
        self._program = _Program(self.plan, model, self.shape, device, dtype, False, check_now=capture is None)
        self._graph = None
        self._compiled = torch.compile(self._core) if capture == "compile" else None

    def _core(self, x):
        return self._program.run(x)[::2]  # (out, first_bad)

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape != self.shape or x.dtype != self.dtype or x.device != self.device:
            raise ValueError(f"x must have shape {tuple(self.shape)}, dtype {self.dtype} and device {self.device}; "
                             f"got {tuple(x.shape)}, {x.dtype}, {x.device}")
        if self.capture == "cuda-graph":
            out, bad = self._replay(x)
        elif self.capture == "compile":
            out, bad = self._compiled(x)
        else:
            out, bad = self._core(x)
        if bad is not None and int(bad) >= 0:
            _raise_nonfinite(self.plan, int(bad))
        return out

    def _replay(self, x):
        if self._graph is None:
            self._static_in = x.clone()
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the graph (allocator, lazy init)
                self._core(self._static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._static_out = self._core(self._static_in)
        self._static_in.copy_(x)
        self._graph.replay()
        out, bad = self._static_out
        return out.clone(), bad


def _raise_nonfinite(plan: Plan, k: int):
    raise NonFiniteError(f"the model returned NaN or Inf at call {k} (grid step {int(plan.step[k])}, "
                         f"t = {float(plan.times[k]):.6g}, noise level sigma/alpha = "
                         f"{float(plan.path.noise_level(plan.times[k])):.6g}) of {plan.method!r}")


def _progress(total, plan):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=plan.method, unit="call")
