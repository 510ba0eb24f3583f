"""OdesolveScheduler: a diffusers scheduler (``SchedulerMixin`` + ``ConfigMixin``) backed by a compiled plan.

A diffusers pipeline calls ``step()`` once per model call, so ``timesteps`` has one entry per row
of the compiled plan. ``step()`` checks its inputs, turns the network's raw output into the plan's
prediction (:meth:`OdesolveScheduler._prediction`) and hands it to a :class:`PlanRun`, which
applies the plan's row (plan.py's semantics) and returns the next model input.
"""

from __future__ import annotations

import numbers
from collections import deque

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin, SchedulerOutput
from torch import Tensor

from ... import methods as _methods
from ...grids import Grid
from ...plan import Plan
from .config import count, positive
from .families import family_for, marks
from .grids import explicit_grid, family_grid

__all__ = ["OdesolveScheduler", "PlanRun"]


class PlanRun:
    """One sampling run through a compiled plan, one model call at a time.

    With ``s`` the state (x_T at first) and ``F_j`` the earlier predictions, call k does (plan.py)

        X_k = input_state[k] s + sum_j input_hist[k, j] F_{k-j}
        s  <- update_state[k] s + sum_j update_hist[k, j] F_{k-j} + update_noise[k] xi_k

    :attr:`X` is the next model input; :meth:`advance` takes the prediction ``F_k`` at ``X`` (in
    the plan's prediction type) and returns ``X_{k+1}``, or the final ``s`` after the last call.
    State and history are kept at float32 or better, whatever the network's dtype.
    """

    def __init__(self, plan: Plan, sample: Tensor):
        self.plan = plan
        self._in_s, self._up_s = plan.input_state.tolist(), plan.update_state.tolist()
        self._in_h, self._up_h = plan.input_hist.tolist(), plan.update_hist.tolist()
        self._noise = plan.update_noise.tolist()
        self.k = 0
        self.s = sample.to(torch.promote_types(sample.dtype, torch.float32)).clone()
        self.X = self.s if self.plain(0) else self.s * self._in_s[0]
        self._hist: deque[Tensor] = deque(maxlen=plan.window)  # _hist[j] = F_{k-1-j}

    @property
    def done(self) -> bool:
        return self.k >= self.plan.calls

    def plain(self, k: int) -> bool:
        """Whether call ``k``'s input is the state itself (a pipeline may then replace it)."""
        return self._in_s[k] == 1 and not any(self._in_h[k])

    def adopt(self, sample: Tensor) -> None:
        """Take ``sample`` as the state before a plain call (the pipeline replaced the latents, e.g. inpainting)."""
        self.s = self.X = sample.to(self.s.dtype)

    def advance(self, F: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Apply call k's update with the prediction ``F`` (shaped like :attr:`X`); returns the next model input."""
        k = self.k
        self._hist.appendleft(F.to(self.s.dtype))
        s = self.s
        if self._up_s[k] != 1 or any(self._up_h[k]) or self._noise[k] != 0:
            acc = s * self._up_s[k]
            for j, c in enumerate(self._up_h[k][: len(self._hist)]):
                if c != 0:
                    acc = acc + self._hist[j] * c
            if self._noise[k] != 0:
                xi = torch.randn(acc.shape, generator=generator, device=acc.device, dtype=acc.dtype)
                acc = acc + xi * self._noise[k]
            s = acc
        self.s = s
        self.k = k = k + 1
        if k < self.plan.calls and not self.plain(k):
            nxt = s * self._in_s[k]
            for j, c in enumerate(self._in_h[k][1:], start=1):
                if c != 0 and j - 1 < len(self._hist):
                    nxt = nxt + self._hist[j - 1] * c
            self.X = nxt
        else:
            self.X = s
        return self.X


def _timestep_value(timestep) -> float:
    """A timestep passed to ``step`` as a float (a number, or a tensor whose entries are all equal)."""
    if isinstance(timestep, Tensor) and timestep.numel() >= 1 and not timestep.is_complex():
        flat = timestep.detach().flatten().to("cpu", torch.float64)
        if bool((flat == flat[0]).all()):
            return float(flat[0])
    elif isinstance(timestep, numbers.Real) and not isinstance(timestep, bool):
        return float(timestep)
    raise ValueError(f"timestep must be a number or a tensor of one timestep (an entry of scheduler.timesteps), "
                     f"got {timestep!r}")


def _tolerance(timestep, expected: float) -> float:
    """How far a timestep may be from the grid's: float32 rounding, or the timestep tensor's own dtype."""
    dt = timestep.dtype if isinstance(timestep, Tensor) and timestep.is_floating_point() else torch.float32
    return max(1e-4, 2 * torch.finfo(dt).eps * abs(expected))


class OdesolveScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that runs an odesolve method from a compiled plan.

    ``method`` is a registered name (``odesolve.methods.names()``). The other arguments read the
    model description and the time grid from a diffusers config (see :func:`path_from_config`
    and :func:`grid_from_config`); keys of other schedulers' configs that do not apply here are
    ignored, as diffusers does.

    Stepping: ``timesteps`` has one entry per model call of the plan (``order`` calls per grid
    step for multi-stage methods) and ``step(model_output, t, sample)`` applies one row of the
    plan and returns the next model input (the final sample after the last call). ``t`` must be
    the next entry of ``timesteps`` (a ``ValueError`` names it otherwise). The state and the
    history are kept at float32 or better, whatever the network's dtype. A pipeline may replace
    ``sample`` between single-call steps (inpainting does): the new sample is adopted.

    ``lower_order_final`` is passed to multistep methods when ``num_inference_steps <
    lower_order_final_max_steps`` (15 by default, DPMSolverMultistepScheduler's rule; ``None``
    applies it at any number of steps, as UniPCMultistepScheduler does). ``clip_sample`` and
    ``thresholding`` clip the data prediction, as DDIMScheduler does.

    img2img (a grid entered mid-way, diffusers #1866): ``set_begin_index(i)`` or a first ``step``
    at ``timesteps[i]`` recompiles the plan on the grid from that step on, so multistep methods
    warm up again from where sampling starts.

    A grid that calls an eps- (or score-) network where alpha = 0 (zero terminal SNR with
    ``timestep_spacing="trailing"`` or ``"linspace"``) is refused in ``set_timesteps``: there the
    noise prediction does not determine the data prediction; use a v-prediction network or a grid
    that starts below the last training timestep.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]  # noqa: RUF012 - diffusers reads it as is
    order = 1

    @register_to_config
    def __init__(
        self,
        method: str = "dpmpp-2m",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        rescale_betas_zero_snr: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        final_sigmas_type: str = "zero",
        use_karras_sigmas: bool = False,
        use_lu_lambdas: bool = False,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        lower_order_final: bool = True,
        lower_order_final_max_steps: int | None = 15,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        variance_type: str | None = None,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        shift: float | None = None,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        time_shift_type: str = "exponential",
        shift_terminal: float | None = None,
        sigma_data: float | None = None,
        sigma_schedule: str = "karras",
        rho: float = 7.0,
        invert_sigmas: bool = False,
        stochastic_sampling: bool = False,
        timestep_type: str = "discrete",
        interpolation_type: str = "linear",
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        euler_at_final: bool = False,
        lambda_min_clipped: float = -float("inf"),
    ):
        self._method = _methods.get(method)  # refuses unknown names, listing close ones
        self._family = family_for(self.config)
        self.path = self._family.path
        self.prediction = self._family.prediction
        if clip_sample:
            positive(dict(self.config), "clip_sample_range", 1.0)
        if thresholding:
            positive(dict(self.config), "sample_max_value", 1.0)
            if not 0 < float(dynamic_thresholding_ratio) <= 1:
                raise ValueError(f"config field dynamic_thresholding_ratio must lie in (0, 1], got "
                                 f"{dynamic_thresholding_ratio!r}")
        if lower_order_final_max_steps is not None:
            count(lower_order_final_max_steps, "config field lower_order_final_max_steps", minimum=0)
        self.order = self._method.calls_per_step
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.plan: Plan | None = None
        self.grid: Grid | None = None
        self._begin_index = None
        self._run: PlanRun | None = None
        self._offset = 0  # index in timesteps of the run's first call
        self._returned = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """``ConfigMixin.from_config``, keeping the fields that tell a flow-matching (``shift``) or
        EDM (``sigma_data``) config apart from a VP one even where they hold diffusers' defaults
        (diffusers drops default-valued keys when converting between schedulers)."""
        if config is not None and hasattr(config, "get"):
            for key in marks():
                if key in config and key not in kwargs and config.get(key) is not None:
                    kwargs[key] = config[key]
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    # -- grid and plan ------------------------------------------------------------------------
    def _options(self, steps: int) -> dict:
        opts = {}
        if "lower_order_final" in self._method.options:
            limit = self.config.lower_order_final_max_steps
            opts["lower_order_final"] = bool(self.config.lower_order_final) and (limit is None or steps < limit)
        return opts

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list | None = None, sigmas: list | None = None, mu: float | None = None, **kwargs):
        """Build the grid (from ``num_inference_steps`` and the config, or from explicit network
        ``timesteps`` / ``sigmas`` -- noise levels sigma/alpha for VP and EDM models, the flow
        time for flow models -- ending at the end point the config names) and compile the plan."""
        if timesteps is not None or sigmas is not None:
            grid = explicit_grid(self._family, self.path, timesteps=timesteps, sigmas=sigmas)
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps, timesteps or sigmas")
            steps = count(num_inference_steps, "num_inference_steps")
            grid = family_grid(self._family, steps, path=self.path, mu=mu)
        self._use_grid(grid, device)

    def _use_grid(self, grid: Grid, device=None):
        plan = self._method.compile(self.path, grid, **self._options(grid.steps))
        self._prepare(plan)
        self.grid, self.plan = grid, plan
        self.num_inference_steps = grid.steps
        self.timesteps = self._family.network_time(plan.times).to(torch.float32).to(device)
        self.sigmas = torch.cat([self.path.noise_level(plan.times), grid.sigmas[-1:]]).to(torch.float32)
        a0, s0 = self.path.alpha(grid.t[0]), self.path.sigma(grid.t[0])
        self.init_noise_sigma = float(torch.sqrt(a0 * a0 + s0 * s0))
        self._begin_index = None
        self._run = None
        self._offset = 0

    def _prepare(self, plan: Plan):
        """The coefficients ``F = c_x X + c_F out`` from the network's raw output to the plan's
        prediction at each call; refused where they do not exist (an eps-network at alpha = 0)."""
        cx, cf = self._family.output_coefficients(plan.path, plan.prediction, plan.times)
        bad = ~(torch.isfinite(cx) & torch.isfinite(cf))
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0])
            t = float(plan.times[k])
            raise ValueError(
                f"{plan.method!r} needs the {plan.prediction} prediction at timestep "
                f"{float(self._family.network_time(torch.tensor(t))):g}, where alpha = "
                f"{float(plan.path.alpha(torch.tensor(t, dtype=torch.float64))):g}; the network's "
                f"prediction_type={self.config.prediction_type!r} does not determine it there (at alpha = 0 the "
                "noise carries no information about the data). Use a v_prediction (or sample) network, as "
                "zero-terminal-SNR models are trained, or a grid that does not start at alpha = 0: "
                "timestep_spacing='leading', or set_timesteps(timesteps=...) starting below that timestep")
        self._cx, self._cf = cx.tolist(), cf.tolist()
        self._alpha, self._sigma = plan.path.alpha(plan.times).tolist(), plan.path.sigma(plan.times).tolist()

    # -- diffusers API ------------------------------------------------------------------------
    @property
    def begin_index(self):
        return self._begin_index

    @property
    def step_index(self):
        """Index in ``timesteps`` of the next call (None before the first ``step``)."""
        return None if self._run is None else self._offset + self._run.k

    def set_begin_index(self, begin_index: int = 0):
        self._begin_index = count(begin_index, "begin_index", minimum=0)

    def scale_model_input(self, sample: Tensor, timestep=None, *args, **kwargs) -> Tensor:
        """The network's input: ``c_in x`` for preconditioned (EDM) networks, else ``sample`` itself."""
        if timestep is None:
            timestep = self.timesteps[min(self.step_index or 0, len(self.timesteps) - 1)]
        pre = self._family.preconditioning(self._family.path_time(timestep))
        if pre is None:
            return sample
        c_in = pre[2]
        return sample * c_in.to(sample.device, sample.dtype).reshape(-1, *([1] * (sample.ndim - 1)))

    def _call_at(self, timestep, k: int) -> None:
        """Refuse a ``step`` whose timestep is not ``timesteps[k]``."""
        value, expected = _timestep_value(timestep), float(self.timesteps[k])
        if abs(value - expected) > _tolerance(timestep, expected):
            raise ValueError(f"step() got timestep {value:g}, but the next model call is at timestep {expected:g} "
                             f"(scheduler.timesteps[{k}]); call step once per entry of scheduler.timesteps, in order "
                             "(set_timesteps starts a new run)")

    def _start(self, timestep, sample: Tensor):
        k0 = self._begin_index
        if k0 is None:  # the first timestep says where sampling starts (img2img without set_begin_index)
            value = _timestep_value(timestep)
            ts = self.timesteps.detach().to("cpu", torch.float64)
            hit = torch.nonzero((ts - value).abs() <= _tolerance(timestep, value)).flatten()
            if not hit.numel():
                raise ValueError(f"step() got timestep {value:g}, which is not in scheduler.timesteps "
                                 f"({ts[:4].tolist()}...); pass the entries of scheduler.timesteps, in order")
            k0 = int(hit[0])
        elif not 0 <= k0 < len(self.timesteps):
            raise ValueError(f"begin_index {k0} is outside the {len(self.timesteps)} timesteps of the plan")
        self._call_at(timestep, k0)
        if k0 != 0:
            self._enter_midway(k0)
        self._offset = k0
        self._run = PlanRun(self.plan, sample)
        self._returned = None

    def _enter_midway(self, k0: int):
        plan = self.plan
        n = int(plan.step[k0])
        if k0 > 0 and int(plan.step[k0 - 1]) == n:
            raise ValueError(f"begin_index {k0} falls inside grid step {n} of {plan.method!r}; a sampler can only "
                             "be entered at the first call of a step")
        grid = Grid(self.path, self.grid.t[n:])
        sub = self._method.compile(self.path, grid, **self._options(self.grid.steps))
        tail = plan.times[k0:]
        if sub.calls != tail.numel() or not torch.allclose(sub.times, tail, rtol=0, atol=1e-9):
            raise ValueError(f"{plan.method!r} takes {sub.calls} model calls from grid step {n} on when it starts "
                             f"there (its warm-up differs), but the pipeline has {tail.numel()} timesteps left; "
                             "it cannot be entered mid-way (img2img): use a method with the same calls at every "
                             "step (for example dpmpp-2m, unipc-bh2-3, ddim, heun)")
        self._prepare(sub)
        self.plan = sub

    def _check_output(self, model_output, sample) -> Tensor:
        """The model output as the prediction tensor for ``sample``, or an error naming what is wrong."""
        for name, v in (("model_output", model_output), ("sample", sample)):
            if not isinstance(v, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
            if not v.is_floating_point():
                raise TypeError(f"{name} must have a real floating dtype, got {v.dtype}")
        if model_output.device != sample.device:
            raise ValueError(f"model_output is on {model_output.device} but sample is on {sample.device}; move one "
                             "of them")
        out = model_output
        if out.ndim == sample.ndim and out.ndim >= 2 and out.shape[1] == 2 * sample.shape[1]:  # learned variance
            out = out[:, : sample.shape[1]]
        if out.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(model_output.shape)} but sample has shape "
                             f"{tuple(sample.shape)}; they must be equal (or the output have twice the channels, "
                             "a learned variance)")
        if self._run is not None and sample.shape != self._run.s.shape:
            raise ValueError(f"sample has shape {tuple(sample.shape)} but this sampling run started with shape "
                             f"{tuple(self._run.s.shape)}; call set_timesteps to start a new run")
        return out

    def _prediction(self, out: Tensor, X: Tensor, k: int) -> Tensor:
        """The plan's prediction at call ``k`` from the network's raw output ``out`` at input ``X``:
        ``c_x X + c_F out``, then clipped or thresholded as the config says."""
        F = out.to(X.dtype) * self._cf[k] + X * self._cx[k]
        return self._clip(F, X, k)

    def _clip(self, F: Tensor, X: Tensor, k: int) -> Tensor:
        cfg = self.config
        if not (cfg.clip_sample or cfg.thresholding):
            return F
        a, s = self._alpha[k], self._sigma[k]
        x0 = F if self.plan.prediction == "x0" else (X - s * F) / a if a > 0 else None
        if x0 is None:
            return F
        if cfg.thresholding:
            flat = x0.reshape(x0.shape[0], -1).abs().float()
            q = torch.quantile(flat, float(cfg.dynamic_thresholding_ratio), dim=1)
            q = q.clamp(min=1.0, max=float(cfg.sample_max_value)).to(x0.dtype).view((-1,) + (1,) * (x0.ndim - 1))
            x0 = torch.maximum(torch.minimum(x0, q), -q) / q
        else:
            r = float(cfg.clip_sample_range)
            x0 = x0.clamp(-r, r)
        return x0 if self.plan.prediction == "x0" else (X - a * x0) / s

    def step(self, model_output: Tensor, timestep, sample: Tensor, generator: torch.Generator | None = None,
             return_dict: bool = True, **kwargs) -> SchedulerOutput | tuple:
        """Apply the plan's row for this model call; returns the next model input (the sample
        after the last call). ``timestep`` must be the next entry of ``timesteps``. ``kwargs`` of
        other schedulers (``eta``, ``s_churn``...) are ignored."""
        if self.plan is None:
            raise ValueError("set_timesteps must be called before step")
        out = self._check_output(model_output, sample)
        if self._run is None:
            self._start(timestep, sample)
        run = self._run
        if run.done:
            raise ValueError(f"step called {run.k + 1} times but the plan has {run.plan.calls} model calls; call "
                             "set_timesteps again to start a new sampling run")
        self._call_at(timestep, self._offset + run.k)
        if run.k > 0 and run.plain(run.k) and sample is not self._returned:
            run.adopt(sample)  # the pipeline replaced the latents (e.g. inpainting)
        prev = run.advance(self._prediction(out, run.X, run.k), generator).to(sample.dtype)
        self._returned = prev
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps) -> Tensor:
        """``alpha(t) x0 + sigma(t) noise`` at the network timesteps ``timesteps`` (any value, not
        only those of the grid)."""
        t = self._family.path_time(torch.as_tensor(timesteps).reshape(-1))
        try:
            self.path.check_times(t, "timesteps")
        except ValueError as e:
            raise ValueError(f"add_noise: timesteps {torch.as_tensor(timesteps).reshape(-1).tolist()[:4]} are outside "
                             f"the model's ({e})") from None
        a, s = self.path.alpha(t), self.path.sigma(t)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        dev, dt = original_samples.device, original_samples.dtype
        return a.to(dev, dt).view(shape) * original_samples + s.to(dev, dt).view(shape) * noise

    def scale_noise(self, sample: Tensor, timestep, noise: Tensor | None = None) -> Tensor:
        """Flow-matching pipelines' name for :meth:`add_noise` (``sample`` is the clean sample)."""
        return self.add_noise(sample, noise, timestep)

    def __len__(self):
        return self.config.num_train_timesteps
