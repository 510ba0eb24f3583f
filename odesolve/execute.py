"""The one executor: the rows of a [`Plan`][odesolve.plan.Plan] (module docstring of
[`odesolve.plan`][odesolve.plan]) are interpreted here and nowhere else.

A [`Program`][odesolve.execute.Program] is a plan prepared for one model prediction, state shape, dtype and device:
the coefficients cast once to the working dtype (at least float32) and read as Python numbers, the
nonzero history terms of every row, the conversion of the model's prediction into the plan's
buffer (``F = cx X + cf out``) folded into them: the ring of outputs holds ``F / cf = out + (cx/cf) X``,
one op per call, and every coefficient that reads it is multiplied by ``cf``. A conversion that is
undefined at a call (an eps model at alpha = 0 for a plan that keeps x0) is refused here, naming
the call. [`prepare`][odesolve.execute.prepare] returns programs from a small bounded cache
keyed on the plan's content, and [`sample`][odesolve.execute.sample] keys it on what ``Method.compile`` keys its plans
on, so a repeated ``sample`` on the same grid and method compiles and prepares nothing.

[`Program.steps`][odesolve.execute.Program.steps] is the interpreter: a generator that yields the input of each model
call and receives the model's raw output. Every driver drives it one call at a time::

    run = program.steps(x, generator)            # x: the state at grid.t[0]
    k, X, t, end = next(run)                      # the input of call 0
    while k < program.calls:
        k, X, t, end = run.send(model(X, t))      # raw output of call k in, input of call k+1 out
    x_final = X                                   # after the last call: k == calls, X the result

- ``k``: the call index; ``X``: the model input of call ``k`` (shape and device of ``x``, the
  working dtype), a view of the run's buffers valid until the next ``send``; ``t``: the call's
  float64 times, shape ``(batch,)``. When ``program.plain_input[k]`` (the first call of every step
  of every registered method), ``X`` *is* the state: a driver may overwrite it before sending
  (diffusers pipelines that replace the latents, inpainting). The model must not.
- ``end``: with ``step_ends=True``, the [`StepEnd`][odesolve.execute.StepEnd] ``(step, t, x, denoised)`` of the grid
  step completed by the previous call (``x`` a copy of the state at ``grid.t[step + 1]``,
  ``denoised`` the data prediction of the step's last call); otherwise ``None``.
- After the last output ``send`` yields ``(calls, x_final, None, end)``: ``x_final`` in the dtype
  of ``x``. A further ``send`` raises ``StopIteration``.
- Each output is validated (a real floating tensor of ``x``'s shape on ``x``'s device; TypeError or
  ValueError naming the call) and checked for NaN/Inf: at once on CPU, after the last call on
  other devices (no synchronisation per call); [`NonFiniteError`][odesolve.execute.NonFiniteError] names the call.
- Noise: call ``k`` adds ``update_noise[k] * xi_k`` (and ``input_noise[k] * xi_k`` to its input),
  drawn in [`standard_normal`][odesolve.execute.standard_normal], the one place noise is drawn: from
  ``noise`` (an [`odesolve.noise`][odesolve.noise] source: per sample, keyed by seeds; a Brownian source
  answers the call's ``plan.noise_interval``), else from ``generator`` (torch's stream; independent
  normals, refused for a plan whose noise intervals overlap).

Drivers: [`Program.run`][odesolve.execute.Program.run] (what [`execute`][odesolve.execute.execute],
[`sample`][odesolve.execute.sample] and [`Sampler`][odesolve.execute.Sampler] use: model
calls, callback, trajectory, progress, and a guard against models that modify their input in place:
the input's version counter read before and after each call, two attribute reads where handing the
model a copy would cost a pass over the state); a diffusers scheduler's ``step(model_output, ...)``
is ``run.send(model_output)`` returning a copy of ``X``; a per-sample adaptive driver will send
outputs the same way.

Cost per call (no gradients): the in-place chain ``s.mul_(a).add_(G_j, alpha=c_j)`` over the
nonzero terms of the state update (and of the input of a multi-stage call), one op that writes the
output into the ring, and one reduction for the finiteness check. (A BLAS ``mv`` over the ring
measured about 2x slower on CPU: it reads zero rows and allocates.) With gradients (a grid or an
``x`` that requires them) the same rows run out of place with tensor coefficients.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import NamedTuple

import torch
from jaxtyping import Shaped
from torch import Tensor

from . import methods as _methods
from .grids import Grid
from .models import PREDICTIONS, Model, conversion
from .noise import BrownianPaths, NoiseSource
from .plan import Plan

__all__ = [
    "NonFiniteError",
    "Program",
    "Sampler",
    "StepEnd",
    "execute",
    "plan_fingerprint",
    "prepare",
    "sample",
    "standard_normal",
]


class NonFiniteError(FloatingPointError):
    """A model returned NaN or Inf."""


class StepEnd(NamedTuple):
    """The end of grid step ``step``: ``x`` (a copy of the state at ``t = grid.t[step + 1]``) and
    ``denoised`` (the data prediction x0 of the step's last model call)."""

    step: int
    t: Tensor
    x: Tensor
    denoised: Tensor


def standard_normal(
    generator: torch.Generator | None,
    n: int,
    device: torch.device,
    dtype: torch.dtype,
    *,
    noise: NoiseSource | None = None,
    call: int = 0,
    interval: tuple[float, float] | None = None,
    shape=None,
) -> Tensor:
    """xi_k ~ N(0, I) of ``n`` elements: the one place the executor draws noise. With ``noise`` (a
    per-sample source) the normals of call ``call`` for a state of ``shape``, normalised Brownian
    increments over ``interval`` where the plan names one; otherwise from ``generator``."""
    if noise is not None:
        return noise.standard_normal(call, interval, shape, dtype, device).reshape(n)
    return torch.randn(n, generator=generator, device=device, dtype=dtype)


def _noise_source(noise, seeds, generator, batch: int) -> NoiseSource | None:
    """The noise source of a run: ``noise``, or ``BrownianPaths(seeds)``; at most one of
    ``noise``, ``seeds`` and ``generator``."""
    given = [n for n, v in (("noise", noise), ("seeds", seeds), ("generator", generator)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass one of noise=, seeds= and generator=, got {' and '.join(given)}")
    if seeds is not None:
        noise = BrownianPaths(seeds)
    if noise is not None:
        if not isinstance(noise, NoiseSource):
            raise TypeError(
                f"noise must be an odesolve.noise source (PerSampleNormal, BrownianPaths), got {type(noise).__name__}"
            )
        if len(noise) != batch:
            raise ValueError(f"noise: {len(noise)} seeds for a batch of {batch} samples (one seed per sample)")
    return noise


# -- the public entry points ---------------------------------------------------------------------


def sample(
    model: Model,
    x: Shaped[Tensor, " batch *shape"],
    grid: Grid,
    method="dpmpp-2m",
    *,
    return_trajectory: bool = False,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    generator: torch.Generator | None = None,
    noise: NoiseSource | None = None,
    seeds=None,
    **options,
):
    """Integrate from ``x`` (the state at ``grid.t[0]``, in the path's coordinates) along ``grid``.

    ``method`` is a registered name ([`odesolve.methods.names`][odesolve.methods.names]), a method table, or a compiled
    [`Plan`][odesolve.plan.Plan]; ``options`` go to the method's ``compile`` (for example ``lower_order_final``).
    Returns the state at ``grid.t[-1]``, and with ``return_trajectory`` also the states at every
    grid time, stacked on a new first axis. ``callback`` receives, after every grid step, a dict
    with ``step`` (= ``i``), ``t``, ``x`` (a copy of the state) and ``denoised``.

    Stochastic methods draw their noise from ``noise`` (an [`odesolve.noise`][odesolve.noise] source, one seed
    per sample), ``seeds`` (shorthand for ``noise=odesolve.noise.BrownianPaths(seeds)``) or
    ``generator`` (torch's stream: the noise then depends on the batch); one of them is required.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
    _check_inputs(model, x, grid.path)
    if isinstance(method, Plan):
        if options:
            raise TypeError(f"options {sorted(options)} cannot be applied to a compiled plan")
        if method.grid is not grid and (method.path != grid.path or not torch.equal(method.grid.t, grid.t)):
            raise ValueError("method: the plan was compiled for another grid")
        program = prepare(method, model.prediction, x.shape, x.dtype, x.device, differentiable=_needs_grad(method, x))
    else:
        program = _prepare_compiled(_as_method(method), grid, options, model.prediction, x)
    return program.run(
        model,
        x,
        generator=generator,
        noise=_noise_source(noise, seeds, generator, x.shape[0]),
        return_trajectory=return_trajectory,
        callback=callback,
        progress=progress,
    )


def execute(
    plan: Plan,
    model: Model,
    x: Shaped[Tensor, " batch *shape"],
    *,
    return_trajectory: bool = False,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    generator: torch.Generator | None = None,
    noise: NoiseSource | None = None,
    seeds=None,
):
    """Run ``plan`` with ``model`` from ``x``. See [`sample`][odesolve.execute.sample]."""
    if not isinstance(plan, Plan):
        raise TypeError(f"plan must be an odesolve.Plan, got {type(plan).__name__}")
    _check_inputs(model, x, plan.path)
    program = prepare(plan, model.prediction, x.shape, x.dtype, x.device, differentiable=_needs_grad(plan, x))
    return program.run(
        model,
        x,
        generator=generator,
        noise=_noise_source(noise, seeds, generator, x.shape[0]),
        return_trajectory=return_trajectory,
        callback=callback,
        progress=progress,
    )


def _as_method(method) -> _methods.Method:
    if isinstance(method, str):
        return _methods.get(method)
    if isinstance(method, _methods.Method):
        return method
    raise TypeError(
        f"method must be a registered name (see odesolve.methods.names()), an odesolve.methods.Method "
        f"or a compiled odesolve.Plan, got {type(method).__name__} {method!r}"
    )


def _check_inputs(model: Model, x: Tensor, path):
    if not isinstance(model, Model):
        raise TypeError(
            f"model must be an odesolve.Model, got {type(model).__name__}; wrap your network as "
            "odesolve.Model(fn, path=..., prediction=...)"
        )
    if model.path != path:
        raise ValueError(f"model.path {model.path!r} differs from the grid's path {path!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (batch, ...) with batch >= 1, got {tuple(x.shape)}")
    if x.is_complex():
        raise TypeError(f"x must have a real floating dtype, got {x.dtype} (the imaginary part would be dropped)")
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if not _finite(x):
        raise ValueError("x must be finite (the initial state contains NaN or Inf)")


def _needs_grad(plan: Plan, x: Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or _plan_requires_grad(plan))


def _plan_requires_grad(plan: Plan) -> bool:
    return any(getattr(plan, n).requires_grad for n in _COEFFICIENTS) or plan.grid.t.requires_grad


def _sum_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """Accumulate a finiteness check in the tensor's own float32/float64 (a float64 sum of a float32
    tensor measured 50x slower on CPU), half precisions in float32."""
    return None if dtype in (torch.float32, torch.float64) else torch.float32


def _finite(v: Tensor) -> bool:
    """One reduction; a sum that overflows a finite tensor is confirmed elementwise."""
    return math.isfinite(v.detach().sum(dtype=_sum_dtype(v.dtype)).item()) or bool(torch.isfinite(v).all())


# -- the program cache ---------------------------------------------------------------------------

_COEFFICIENTS = ("times", "input_state", "input_hist", "update_state", "update_hist", "update_noise", "input_noise")
_CACHE_SIZE = 32
_programs: OrderedDict[tuple, Program] = OrderedDict()
_lock = threading.Lock()


def _cached(key, build: Callable[[], Program]) -> Program:
    with _lock:
        program = _programs.get(key)
        if program is not None:
            _programs.move_to_end(key)
            return program
    program = build()
    with _lock:
        _programs[key] = program
        while len(_programs) > _CACHE_SIZE:
            _programs.popitem(last=False)
    return program


def plan_fingerprint(plan: Plan) -> tuple:
    """A key equal for two plans exactly when everything a [`Program`][odesolve.execute.Program] reads from them is
    equal: method name, path, prediction, sizes, and the bytes of every coefficient, time and
    step index and of the grid."""
    tensors = (
        plan.times,
        plan.step,
        plan.input_state,
        plan.input_hist,
        plan.update_state,
        plan.update_hist,
        plan.update_noise,
        plan.input_noise,
        plan.grid.t,
        *(() if plan.noise_interval is None else (plan.noise_interval,)),
    )
    data = b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)
    return (
        plan.method,
        plan.prediction,
        plan.path,
        plan.calls,
        plan.window,
        plan.grid.steps,
        tuple(t.dtype for t in tensors),
        data,
    )


def prepare(
    plan: Plan,
    prediction: str,
    shape,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    *,
    differentiable: bool = False,
) -> Program:
    """The [`Program`][odesolve.execute.Program] of ``plan`` for a model predicting ``prediction`` and a state of
    ``shape``, ``dtype`` on ``device``, from a bounded cache keyed on the plan's content
    ([`plan_fingerprint`][odesolve.execute.plan_fingerprint]); a plan whose coefficients require gradients is prepared
    afresh."""
    shape, device = torch.Size(shape), torch.device(device)
    if _plan_requires_grad(plan):  # the program holds the plan's autograd graph: not shared
        return Program(plan, prediction, shape, dtype, device, differentiable=differentiable)
    key = ("plan", plan_fingerprint(plan), prediction, shape, dtype, device, differentiable)
    return _cached(key, lambda: Program(plan, prediction, shape, dtype, device, differentiable=differentiable))


def _compile_key(m: _methods.Method, grid: Grid, options: dict):
    """What ``Method.compile`` caches its plans on (table, path, grid times, options), or None
    when the grid needs gradients or the table is not hashable."""
    items = tuple(sorted(options.items()))
    for name, value in items:
        try:
            hash(value)
        except TypeError:
            raise TypeError(f"option {name}={value!r} must be hashable (a number, string, bool or tuple)") from None
    if grid.t.requires_grad:
        return None
    key = (m, grid.path, grid.t.detach().cpu().numpy().tobytes(), items)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _prepare_compiled(m: _methods.Method, grid: Grid, options: dict, prediction: str, x: Tensor) -> Program:
    key = _compile_key(m, grid, options)
    differentiable = torch.is_grad_enabled() and x.requires_grad
    if key is None:
        plan = m.compile(grid.path, grid, **options)
        return prepare(plan, prediction, x.shape, x.dtype, x.device, differentiable=_needs_grad(plan, x))
    key = ("compile", key, prediction, x.shape, x.dtype, x.device, differentiable)
    return _cached(
        key,
        lambda: Program(
            m.compile(grid.path, grid, **options), prediction, x.shape, x.dtype, x.device, differentiable=differentiable
        ),
    )


# -- the program ---------------------------------------------------------------------------------


class _Row(NamedTuple):
    """Call k of a program: what its input, its output and its update do."""

    plain: bool  # X_k = s
    a_in: object  # input_state[k]
    in_terms: tuple  # ((ring slot, input_hist coefficient), ...)
    update: bool  # the state changes after this call
    a_up: object  # update_state[k]
    up_terms: tuple  # ((ring slot, update_hist coefficient), ...)
    noise: object  # update_noise[k] (0: none)
    in_noise: object  # input_noise[k] (0: none): X_k += in_noise xi_k, the xi_k of the update
    cx: object  # output -> buffer: F = cx X + cf out (with gradients)
    cf: object
    conv: int  # without gradients, the ring's G = F / scale from the output: 0 copy, 1 out + ratio X, 2 ratio X
    ratio: object
    last: bool  # the last call of its grid step
    step: int


class Program:
    """A plan prepared for one model prediction, state shape, dtype and device (see the module
    docstring); every value the interpreter reads is computed here, once. Immutable after
    construction: one program serves any number of concurrent runs.

    Attributes: ``plan``, ``prediction`` (the model's), ``shape``, ``dtype``, ``device``,
    ``working_dtype`` (the state's: at least float32), ``differentiable``, ``calls``, ``step_of``
    (grid step of each call), ``last_of_step`` and ``plain_input`` (tuples of bools per call).
    """

    def __init__(
        self,
        plan: Plan,
        prediction: str,
        shape,
        dtype: torch.dtype = torch.float32,
        device="cpu",
        *,
        differentiable: bool = False,
    ):
        if not isinstance(plan, Plan):
            raise TypeError(f"plan must be an odesolve.Plan, got {type(plan).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a real floating torch.dtype, got {dtype!r}")
        self.plan, self.prediction, self.shape = plan, prediction, torch.Size(shape)
        self.dtype, self.device, self.differentiable = dtype, torch.device(device), bool(differentiable)
        if len(self.shape) < 1 or self.shape[0] < 1:
            raise ValueError(f"shape must be (batch, ...) with batch >= 1, got {tuple(self.shape)}")
        self.working_dtype = wd = torch.promote_types(dtype, torch.float32)
        self.calls, self.window, self.numel = plan.calls, plan.window, math.prod(self.shape)
        self.identity = prediction == plan.prediction
        K, W, dev = plan.calls, plan.window, self.device
        if plan.batch is not None and plan.batch != self.shape[0]:
            raise ValueError(f"shape: the per-sample plan has {plan.batch} samples, the state {self.shape[0]}")
        # a per-sample plan runs the tensor-coefficient rows, each coefficient shaped (batch, 1, ...)
        self._tensor_rows = grad = self.differentiable or plan.batch is not None
        per_sample = (1,) * (len(self.shape) - 1) if plan.batch is not None else ()

        def cast(v):  # tensors (autograd) or Python numbers at the working precision
            v = v.to(dev, wd) if grad else v.detach().to(wd)
            return list(v.reshape(*v.shape, *per_sample).unbind(0)) if grad else v.tolist()

        try:
            cx, cf = conversion(plan.path, prediction, plan.prediction, plan.times)
        except ValueError as e:  # name the first call whose output cannot be converted
            k = next(k for k in range(K) if not _convertible(plan.path, prediction, plan.prediction, plan.times[k]))
            raise ValueError(
                f"prediction: at call {k} of {plan.method!r} (alpha = "
                f"{float(plan.path.alpha(plan.times[k].detach())):.3g}): {e}"
            ) from None
        undefined = ~(torch.isfinite(cx) & torch.isfinite(cf))
        if bool(undefined.any()):
            k = int(torch.nonzero(undefined)[0])
            t = plan.times[k].detach()
            raise ValueError(
                f"prediction: the output of a model predicting {prediction!r} cannot be converted into "
                f"the {plan.prediction} that {plan.method!r} keeps at call {k} (t = {float(t):.6g}, "
                f"alpha = {float(plan.path.alpha(t)):.3g}, sigma = {float(plan.path.sigma(t)):.3g}): "
                "use a model predicting x0, v or velocity there, or a grid that starts later"
            )
        # Without gradients the ring holds G_k = F_k / scale_k, written by one op from the output:
        # G = out (same prediction), out + (cx/cf) X (scale cf), or cx X (cf = 0, scale 1); the
        # scales are folded into the coefficients that read G. With gradients it holds F itself.
        if grad or self.identity:
            scale, ratio = torch.ones_like(cf), cx
        else:
            scale = torch.where(cf != 0, cf, torch.ones_like(cf))
            ratio = torch.where(cf != 0, cx / scale, cx)
        lag = torch.arange(K)[:, None] - torch.arange(W)[None, :]  # (K, W): the call F_{k-j} came from
        exists = (lag >= 0).reshape(K, W, *(1,) * (plan.times.ndim - 1))  # per-sample plans: over the batch axis
        at_lag = torch.where(exists, scale[lag.clamp(min=0)], torch.zeros_like(plan.update_hist))
        in_s, up_s, noise = cast(plan.input_state), cast(plan.update_state), cast(plan.update_noise)
        in_noise = cast(plan.input_noise)
        in_h, up_h = cast(plan.input_hist * at_lag), cast(plan.update_hist * at_lag)
        bx, bf = conversion(plan.path, plan.prediction, "x0", plan.times)  # buffer -> x0, for `denoised`
        self._to_x0 = list(zip(cast(bx), cast(bf * scale)))
        conv = [0 if self.identity else 1 if c != 0 else 2 for c in cf.reshape(K, -1)[:, 0].tolist()]
        cx, cf, ratio = cast(cx), cast(cf), cast(ratio)
        # which rows and terms are there (per-sample plans: nonzero for some sample)
        ins_v = (plan.input_state != 1).reshape(K, -1).any(1).logical_not().tolist()
        inh_v = (plan.input_hist != 0).reshape(K, W, -1).any(2).tolist()
        ups_v = (plan.update_state != 1).reshape(K, -1).any(1).logical_not().tolist()
        uph_v = (plan.update_hist != 0).reshape(K, W, -1).any(2).tolist()
        noise_v = (plan.update_noise != 0).reshape(K, -1).any(1).tolist()
        in_noise_v = (plan.input_noise != 0).reshape(K, -1).any(1).tolist()
        self.step_of = tuple(plan.step.tolist())
        self.last_of_step = tuple(k == K - 1 or self.step_of[k + 1] != self.step_of[k] for k in range(K))
        # F_{k-j} lives in ring slot (k-j) % W; outputs of calls before 0 do not exist (are 0).
        # Without gradients only the nonzero terms are kept; with them every existing one.
        keep = (lambda c: True) if self.differentiable else bool
        rows = []
        for k in range(K):
            in_terms = tuple(((k - j) % W, in_h[k][j]) for j in range(1, W) if k - j >= 0 and keep(inh_v[k][j]))
            up_terms = tuple(((k - j) % W, up_h[k][j]) for j in range(W) if k - j >= 0 and keep(uph_v[k][j]))
            plain = ins_v[k] and not any(inh_v[k][1:]) and not in_noise_v[k]
            update = not ups_v[k] or any(uph_v[k]) or noise_v[k]
            rows.append(
                _Row(
                    plain,
                    in_s[k],
                    in_terms,
                    update,
                    up_s[k],
                    up_terms,
                    noise[k] if noise_v[k] else 0,
                    in_noise[k] if in_noise_v[k] else 0,
                    cx[k],
                    cf[k],
                    conv[k],
                    ratio[k],
                    self.last_of_step[k],
                    self.step_of[k],
                )
            )
        self._rows = tuple(rows)
        self.plain_input = tuple(r.plain for r in rows)
        times = plan.times.to(dev) if grad else plan.times.detach().to(dev)
        self._t = tuple(t.expand(self.shape[0]) for t in times.unbind(0))
        gt = plan.grid.t if grad else plan.grid.t.detach()
        self._grid_t = tuple(gt.unbind(0))
        self._needs_xin = not grad and not all(self.plain_input)
        self.stochastic = plan.stochastic
        self.correlated_noise = plan.correlated_noise
        iv = None if plan.noise_interval is None else plan.noise_interval.detach().tolist()
        self._interval = tuple(
            None
            if iv is None or not (noise_v[k] or in_noise_v[k]) or not all(map(math.isfinite, iv[k]))
            else tuple(iv[k])
            for k in range(K)
        )

    def __repr__(self):
        return (
            f"Program({self.plan!r}, prediction={self.prediction!r}, shape={tuple(self.shape)}, "
            f"dtype={self.dtype}, device={self.device}{', differentiable' if self.differentiable else ''})"
        )

    # -- the interpreter ---------------------------------------------------------------------
    def steps(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        *,
        step_ends: bool = False,
        check: bool = True,
        noise: NoiseSource | None = None,
    ) -> Generator:
        """The interpreter, driven one model call at a time (protocol in the module docstring).

        ``step_ends``: report every completed grid step ([`StepEnd`][odesolve.execute.StepEnd]). ``check=False`` skips
        the NaN/Inf check of the outputs (for captured loops, which check their result instead).
        ``noise``: a per-sample [`odesolve.noise`][odesolve.noise] source for the plan's noise (instead of
        ``generator``)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.shape != self.shape or x.dtype != self.dtype or x.device != self.device:
            raise ValueError(
                f"x must have shape {tuple(self.shape)}, dtype {self.dtype} and device {self.device} "
                f"(those the program was prepared for), got {tuple(x.shape)}, {x.dtype}, {x.device}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if noise is not None:
            if generator is not None:
                raise ValueError("pass one of noise= and generator=, not both")
            noise = _noise_source(noise, None, None, self.shape[0])
        if self.correlated_noise and not (noise is not None and noise.brownian):
            raise ValueError(
                f"noise: {self.plan.method!r} consumes correlated Brownian increments (overlapping "
                "noise intervals); pass noise=odesolve.noise.BrownianPaths(seeds) or seeds="
            )
        return self._interpret(x, generator, bool(step_ends), bool(check), noise)

    def _draw(self, k: int, generator, noise) -> Tensor:
        return standard_normal(
            generator,
            self.numel,
            self.device,
            self.working_dtype,
            noise=noise,
            call=k,
            interval=self._interval[k],
            shape=self.shape,
        ).view(self.shape)

    def _interpret(self, x: Tensor, generator, step_ends: bool, check: bool, noise=None):
        shape, W, wd, dev = self.shape, self.window, self.working_dtype, self.device
        grad, identity, rows, times = self._tensor_rows, self.identity, self._rows, self._t
        s = x.to(wd, memory_format=torch.contiguous_format, copy=True)  # the run's own state, never x itself
        if grad:
            ring = [None] * W
        else:  # F_{k-j} in ring slot (k-j) % W, written in place
            ring = torch.empty((W, *shape), dtype=wd, device=dev).unbind(0)
            xin = torch.empty_like(s) if self._needs_xin else None
        check_now = check and dev.type == "cpu"
        sums = [] if check and not check_now else None
        out_dtype, sum_dtype = wd, _sum_dtype(wd)
        end = None
        for k, row in enumerate(rows):
            xi = None
            if row.plain:
                X = s
            elif grad:
                X = _combination(row.a_in, s, row.in_terms, ring)
            else:
                X = _combination_(xin, row.a_in, s, row.in_terms, ring)
            if row.in_noise:  # a noise jump before the call: the same xi_k enters the update
                xi = self._draw(k, generator, noise)
                X = X + xi * row.in_noise if grad else X.add_(xi, alpha=row.in_noise)
            out = yield k, X, times[k], end
            end = None
            if type(out) is not Tensor or out.dtype is not out_dtype or out.shape != shape or out.device != dev:
                out_dtype = self._check_output(out, k)
                sum_dtype = _sum_dtype(out_dtype)
            if check_now:  # one reduction per call; a sum that overflows is confirmed elementwise
                if not math.isfinite(out.sum(dtype=sum_dtype).item()) and not bool(torch.isfinite(out).all()):
                    _raise_nonfinite(self.plan, k)
            elif sums is not None:
                sums.append(out.detach().sum(dtype=sum_dtype))
            slot = k % W
            if grad:
                F = out.to(wd)
                ring[slot] = F = F if identity else F * row.cf + X * row.cx
            else:  # G = F / scale in the working dtype, one op (see __init__)
                F = ring[slot]
                if row.conv == 0:
                    F.copy_(out)
                elif row.conv == 1:
                    if out.dtype is wd:
                        torch.add(out, X, alpha=row.ratio, out=F)
                    else:
                        F.copy_(out).add_(X, alpha=row.ratio)
                else:
                    torch.mul(X, row.ratio, out=F)
            del out  # the ring holds it now: the next model call does not need it alive
            if step_ends and row.last:  # before the state (which X may be) is overwritten
                a, b = self._to_x0[k]
                denoised = F.clone() if a == 0 and b == 1 else X * a + F * b
            if row.update:
                if grad:
                    s = _combination(row.a_up, s, row.up_terms, ring)
                    if row.noise:
                        s = s + (self._draw(k, generator, noise) if xi is None else xi) * row.noise
                else:
                    _combination_(s, row.a_up, s, row.up_terms, ring)
                    if row.noise:
                        s.add_(self._draw(k, generator, noise) if xi is None else xi, alpha=row.noise)
            if step_ends and row.last:
                end = StepEnd(row.step, self._grid_t[row.step + 1], s if grad else s.clone(), denoised)
        if sums:  # other devices: one synchronisation per run
            bad = ~torch.isfinite(torch.stack(sums))
            if bool(bad.any()):
                _raise_nonfinite(self.plan, int(torch.nonzero(bad)[0]))
        yield self.calls, (s if s.dtype == self.dtype else s.to(self.dtype)), None, end

    def _check_output(self, out, k: int) -> torch.dtype:
        """Validate a model output that is not of the last accepted type; returns its dtype."""
        where = f"at call {k} (grid step {self.step_of[k]}) of {self.plan.method!r}"
        if not isinstance(out, Tensor):
            raise TypeError(f"the model must return a torch.Tensor, got {type(out).__name__} {where}")
        if out.dtype == torch.bool or out.is_complex() or not out.is_floating_point():
            raise TypeError(
                f"the model returned a tensor of dtype {out.dtype} {where}; it must return a real "
                f"floating tensor (the state x is {self.dtype})"
            )
        if out.shape != self.shape:
            raise ValueError(
                f"the model returned shape {tuple(out.shape)} {where}; expected the input's shape {tuple(self.shape)}"
            )
        if out.device != self.device:
            raise ValueError(
                f"the model returned a tensor on device {out.device} {where}, but the state x is on "
                f"device {self.device}"
            )
        return out.dtype

    # -- the driver of execute / sample / Sampler ---------------------------------------------
    def run(
        self,
        model: Model | Callable[[Tensor, Tensor], Tensor],
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_trajectory: bool = False,
        callback: Callable[[dict], None] | None = None,
        progress: bool = False,
        check: bool = True,
        guard: bool = True,
        noise: NoiseSource | None = None,
    ):
        """Drive `steps` with ``model`` to the end; returns the final state (and with
        ``return_trajectory`` the states at every grid time). ``guard``: refuse a model that
        modifies its input in place (read from the tensor's version counter around each call)."""
        if self.stochastic and generator is None and noise is None:
            raise ValueError(
                f"generator: {self.plan.method!r} injects noise; pass seeds= (one per sample), "
                "noise= (an odesolve.noise source) or a torch.Generator for reproducibility"
            )
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable with a dict, got {type(callback).__name__}")
        traj = [x.to(self.working_dtype)] if return_trajectory else None
        bar = _progress(self.calls, self.plan) if progress else None
        run = self.steps(x, generator, step_ends=traj is not None or callback is not None, check=check, noise=noise)
        K = self.calls
        try:
            k, X, t, end = next(run)
            guard = guard and not X.is_inference()  # inference tensors have no version counter
            while k < K:
                if guard:
                    version = X._version
                    out = model(X, t)
                    if X._version != version:
                        raise ValueError(
                            f"model {model!r} modified its input in place at call {k} (grid step "
                            f"{self.step_of[k]}) of {self.plan.method!r}; the input is the solver's "
                            "state: compute out of place (x = x * c, not x *= c)"
                        )
                else:
                    out = model(X, t)
                k, X, t, end = run.send(out)
                del out
                if end is not None:
                    if traj is not None:
                        traj.append(end.x)
                    if callback is not None:
                        x_copy = end.x.clone() if traj is not None else end.x
                        callback({"step": end.step, "i": end.step, "t": end.t, "x": x_copy, "denoised": end.denoised})
                if bar is not None:
                    bar.update(1)
        finally:
            run.close()
            if bar is not None:
                bar.close()
        return (X, torch.stack(traj)) if return_trajectory else X


def _combination_(out: Tensor, a: float, s: Tensor, terms, ring) -> Tensor:
    """``out = a s + sum_j c_j ring[j]`` in place (``out`` may be ``s``: each element of ``s`` is
    read before it is written)."""
    if out is s:
        if a != 1:
            s.mul_(a)
    elif a == 1 and terms:  # out = s + c_0 ring[j_0] in one op
        (j, c), terms = terms[0], terms[1:]
        torch.add(s, ring[j], alpha=c, out=out)
    else:
        torch.mul(s, a, out=out)
    for j, c in terms:
        out.add_(ring[j], alpha=c)
    return out


def _combination(a: Tensor, s: Tensor, terms, ring) -> Tensor:
    """``a s + sum_j c_j ring[j]`` out of place, tensor coefficients (gradients flow)."""
    acc = s * a
    for j, c in terms:
        acc = acc + ring[j] * c
    return acc


class Sampler:
    """A plan prepared once for a model, a batch shape, a dtype and a device, and run many times.

    ``capture="cuda-graph"`` records the whole sampling loop, model calls included, as one CUDA
    graph on the first call and replays it afterwards; ``capture="compile"`` hands the loop to
    ``torch.compile``. Both run the same [`Program`][odesolve.execute.Program] as
    [`execute`][odesolve.execute.execute], without per-call
    checks (no host synchronisation): a non-finite result is re-run eagerly to name the call. Both
    need a deterministic plan and a model that is itself capturable. ``capture=None`` runs the
    eager loop.
    """

    def __init__(
        self,
        model: Model,
        grid: Grid,
        method="dpmpp-2m",
        *,
        shape,
        dtype=torch.float32,
        device="cpu",
        capture: str | None = None,
        **options,
    ):
        if capture not in (None, "compile", "cuda-graph"):
            raise ValueError(f"capture must be None, 'compile' or 'cuda-graph', got {capture!r}")
        device = torch.device(device)
        if capture == "cuda-graph" and device.type != "cuda":
            raise ValueError(f"capture='cuda-graph' needs a CUDA device, got device={device}")
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
        if isinstance(method, Plan):
            if options:
                raise TypeError(f"options {sorted(options)} cannot be applied to a compiled plan")
            self.plan = method
        else:
            m = _as_method(method)
            _compile_key(m, grid, options)  # refuses unhashable options by name
            self.plan = m.compile(grid.path, grid, **options)
        if self.plan.stochastic:
            raise ValueError(f"method: {self.plan.method!r} injects noise; Sampler runs deterministic plans only")
        self.shape, self.dtype, self.device, self.capture = torch.Size(shape), dtype, device, capture
        self.model = model
        _check_inputs(model, torch.zeros(self.shape, dtype=dtype, device=device), self.plan.path)
        self.program = prepare(self.plan, model.prediction, self.shape, dtype, device)
        self._graph = None
        self._compiled = torch.compile(self._captured) if capture == "compile" else None

    def _captured(self, x):
        return self.program.run(self.model, x, check=False, guard=False)

    def __call__(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.shape != self.shape or x.dtype != self.dtype or x.device != self.device:
            got = (tuple(x.shape), x.dtype, x.device) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x must have shape {tuple(self.shape)}, dtype {self.dtype} and device {self.device}; got {got}"
            )
        if self.capture is None:
            return self.program.run(self.model, x)
        out = self._replay(x) if self.capture == "cuda-graph" else self._compiled(x)
        if not _finite(out):
            self.program.run(self.model, x)  # eagerly, with checks: raises NonFiniteError naming the call
            raise NonFiniteError(
                f"the result of {self.plan.method!r} is not finite, and an eager re-run found no "
                "non-finite model output (an overflow of the state, or a model that is not "
                "deterministic)"
            )
        return out

    def _replay(self, x):
        if self._graph is None:
            self._static_in = x.clone()
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the graph (allocator, lazy init)
                self._captured(self._static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._static_out = self._captured(self._static_in)
        self._static_in.copy_(x)
        self._graph.replay()
        return self._static_out.clone()


def _convertible(path, prediction: str, target: str, t: Tensor) -> bool:
    try:
        conversion(path, prediction, target, t[None])
    except ValueError:
        return False
    return True


def _raise_nonfinite(plan: Plan, k: int):
    t = plan.times[k].detach().reshape(-1)[0]  # a per-sample plan: the time of sample 0
    raise NonFiniteError(
        f"the model returned NaN or Inf at call {k} (grid step {int(plan.step[k])}, "
        f"t = {float(t):.6g}, noise level sigma/alpha = "
        f"{float(plan.path.noise_level(t)):.6g}) of {plan.method!r}"
    )


def _progress(total, plan):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=plan.method, unit="call")
