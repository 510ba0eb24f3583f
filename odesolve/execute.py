"""The one executor: runs any :class:`~odesolve.plan.Plan` on a batch of tensors.

Coefficients are cast to the working dtype once, before the loop; each model call then costs at
most one ``mv`` + ``add_`` over the history ring for its input (multi-stage methods only), the
copy (or conversion) of the output into the ring, and one ``mv`` + ``add_`` for the state update.
(``addmv`` would fuse the add, but measured 2x slower than the two calls on CPU.) No Python arithmetic on
scalars happens per step and nothing synchronises with the device per step (non-finite outputs
are caught per step on CPU and at the end on other devices, naming the step either way).
"""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Shaped
from torch import Tensor

from .grids import Grid
from .models import Model, conversion
from .plan import Plan

__all__ = ["sample", "execute", "NonFiniteError"]


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
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite (the initial state contains NaN or Inf)")


def execute(plan: Plan, model: Model, x: Shaped[Tensor, "batch *shape"], *, return_trajectory: bool = False,
            callback: Callable[[dict], None] | None = None, progress: bool = False,
            generator: torch.Generator | None = None):
    """Run ``plan`` with ``model`` from ``x``. See :func:`sample`."""
    _check_inputs(plan, model, x)
    if plan.stochastic and generator is None:
        raise ValueError(f"generator: {plan.method!r} injects noise; pass a torch.Generator for reproducibility")
    dev, shape = x.device, x.shape
    wd = torch.promote_types(x.dtype, torch.float32)  # the state is accumulated in at least float32
    K, W = plan.calls, plan.window
    differentiable = torch.is_grad_enabled() and (
        x.requires_grad or any(getattr(plan, n).requires_grad for n in
                               ("input_state", "input_hist", "update_state", "update_hist", "times")))
    cast = lambda v: v.to(dev, wd)  # noqa: E731 - coefficients at the working precision, once
    in_s, in_h, up_s, up_h, noise = map(cast, (plan.input_state, plan.input_hist, plan.update_state,
                                               plan.update_hist, plan.update_noise))
    cx, cf = (cast(v) for v in conversion(plan.path, model.prediction, plan.prediction, plan.times))
    B, N = shape[0], x.numel()
    # absolute ring slots: F_{k-j} lives in slot (k-j) % W, so the coefficient rows are permuted once
    perm = (torch.arange(K)[:, None] - torch.arange(W)[None, :]) % W
    in_rows = torch.zeros_like(in_h).scatter(1, perm.to(dev), in_h).unbind(0)
    up_rows = torch.zeros_like(up_h).scatter(1, perm.to(dev), up_h).unbind(0)
    # everything the loop reads, prepared once: static structure as Python values, times as views
    plain_input = ((plan.input_state == 1) & (plan.input_hist == 0).all(1)).tolist()
    has_update = ((plan.update_state != 1) | (plan.update_hist != 0).any(1) | (plan.update_noise != 0)).tolist()
    has_noise = (plan.update_noise != 0).tolist()
    identity_conv = model.prediction == plan.prediction
    step_end = torch.cat([plan.step[1:] != plan.step[:-1], torch.tensor([True])]).tolist()
    steps = plan.step.tolist()
    t_rows = [t.expand(B) for t in plan.times.to(dev).unbind(0)]
    if differentiable:  # coefficients stay tensors, buffers are replaced rather than written
        in_s, up_s, cx, cf, noise = (v.unbind(0) for v in (in_s, up_s, cx, cf, noise))
    else:  # plain numbers for the fused BLAS calls (read from the plan once, no arithmetic)
        in_s, up_s, cx, cf, noise = (v.tolist() for v in (in_s, up_s, cx, cf, noise))
    check_now = dev.type == "cpu"
    first_bad = None if check_now else torch.full((), -1, dtype=torch.int64, device=dev)

    s = x.to(wd).reshape(N).clone()
    hist = torch.zeros((W, N), dtype=wd, device=dev)
    traj = [x.to(wd)] if return_trajectory else None
    bar = _progress(K, plan) if progress else None
    for k in range(K):
        if plain_input[k]:
            X = s
        elif differentiable:
            X = torch.addcmul(torch.mv(hist.T, in_rows[k]), s, in_s[k])
        else:
            X = torch.mv(hist.T, in_rows[k]).add_(s, alpha=in_s[k])
        out = model(X.view(shape), t_rows[k])
        if check_now:
            if not bool(torch.isfinite(out).all()):
                _raise_nonfinite(plan, k)
        else:
            first_bad = torch.where(~torch.isfinite(out).all() & (first_bad < 0), k, first_bad)
        out = out.reshape(N)
        slot = k % W
        if differentiable:
            F = out.to(wd) if identity_conv else torch.addcmul(out.to(wd) * cf[k], X, cx[k])
            hist = hist.index_put((torch.tensor([slot], device=dev),), F[None])
        elif identity_conv:
            hist[slot].copy_(out)
        else:
            torch.mul(out, cf[k], out=hist[slot])
            hist[slot].add_(X, alpha=cx[k])
        if has_update[k]:
            if differentiable:
                s = torch.addcmul(torch.mv(hist.T, up_rows[k]), s, up_s[k])
            else:
                s = torch.mv(hist.T, up_rows[k]).add_(s, alpha=up_s[k])
            if has_noise[k]:
                xi = torch.randn(N, generator=generator, device=dev, dtype=wd)
                s = torch.add(s, xi, alpha=noise[k]) if not differentiable else torch.addcmul(s, xi, noise[k])
        if step_end[k]:
            if return_trajectory:
                traj.append(s.view(shape))
            if callback is not None:
                cbx, cbf = conversion(plan.path, plan.prediction, "x0", plan.times[k:k + 1])
                F = hist[slot].view(shape)
                denoised = F if plan.prediction == "x0" else X.view(shape) * float(cbx) + F * float(cbf)
                callback({"step": steps[k], "i": steps[k], "t": plan.grid.t[steps[k] + 1], "x": s.view(shape),
                          "denoised": denoised})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if first_bad is not None and int(first_bad) >= 0:
        _raise_nonfinite(plan, int(first_bad))
    out = s.view(shape).to(x.dtype)
    if return_trajectory:
        return out, torch.stack(traj)
    return out


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
