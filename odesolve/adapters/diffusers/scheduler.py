"""OdesolveScheduler: a diffusers scheduler (``SchedulerMixin`` + ``ConfigMixin``) driving odesolve's executor.

A diffusers pipeline calls ``step()`` once per model call, so ``timesteps`` has one entry per row
of the compiled plan. The rows are interpreted by [`odesolve.execute.Program.steps`][odesolve.execute.Program.steps],
the one interpreter: the first ``step`` of a run prepares the plan's program for the sample's shape, dtype
and device ([`odesolve.execute.prepare`][odesolve.execute.prepare], cached) and starts it from the sample; every
``step`` sends the network's output into it and returns a copy of the next model input it
yields, in the sample's dtype.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin, SchedulerOutput
from torch import Tensor

from ... import methods as _methods
from ...execute import prepare
from ...grids import Grid
from ...models import Model, clip_data, dynamic_thresholding
from ...noise import NoiseSource
from ...plan import Plan
from .config import count
from .families import family_for, marks
from .flowmatch import FLOW_HEUN
from .grids import explicit_grid, family_grid
from .namesakes import FAMILY_METHODS, Namesake, alphas_cumprod_table, float32_betas, namesake_of
from .noise import RandnTensorNoise

__all__ = ["OdesolveScheduler"]


def _timestep_value(timestep) -> float:
    """A timestep passed to ``step`` as a float (a number, or a tensor whose entries are all equal).
    Reading a tensor's value synchronises with its device."""
    if isinstance(timestep, Tensor) and timestep.numel() >= 1 and not timestep.is_complex():
        flat = timestep.detach().flatten().to("cpu", torch.float64)
        if bool((flat == flat[0]).all()):
            return float(flat[0])
    elif isinstance(timestep, numbers.Real) and not isinstance(timestep, bool):
        return float(timestep)
    raise ValueError(
        f"timestep must be a number or a tensor of one timestep (an entry of scheduler.timesteps), got {timestep!r}"
    )


def _tolerance(timestep, expected: float) -> float:
    """How far a timestep may be from the grid's: float32 rounding, or the timestep tensor's own dtype."""
    dt = timestep.dtype if isinstance(timestep, Tensor) and timestep.is_floating_point() else torch.float32
    return max(1e-4, 2 * torch.finfo(dt).eps * abs(expected))


def _entry(timestep, timesteps: Tensor) -> int | None:
    """The index ``k`` when ``timestep`` is the element ``timesteps[k]`` itself (what iterating or
    slicing ``scheduler.timesteps`` yields), read from storage addresses: no value is read, so a
    timestep on a GPU costs no synchronisation. None for any other timestep."""
    if not (
        isinstance(timestep, Tensor)
        and timestep.numel() == 1
        and timestep.dtype == timesteps.dtype
        and timestep.device == timesteps.device
        and timesteps.ndim == 1
    ):
        return None
    stride = timesteps.stride(0) * timesteps.element_size()
    k, rem = divmod(timestep.data_ptr() - timesteps.data_ptr(), stride) if stride else (0, 1)
    return k if rem == 0 and 0 <= k < timesteps.numel() else None


def _clipping(config, model: Model, namesake: Namesake) -> Model | None:
    """``clip_sample`` / ``thresholding`` of a diffusers config as odesolve's wrappers of ``model``
    (``odesolve.models.clip_data``, ``odesolve.models.dynamic_thresholding``, which refuse
    bad ranges naming the field), where the namesake scheduler has the option; None when nothing is clipped."""
    if config.thresholding and namesake.thresholding:
        return dynamic_thresholding(model, config.dynamic_thresholding_ratio, config.sample_max_value)
    clip = namesake.clip_sample_default if config.clip_sample is None else config.clip_sample
    if clip and namesake.clip_sample:
        return clip_data(model, config.clip_sample_range)
    return None


class _Handed:
    """The data prediction handed to the current ``step`` as a network ``fn(x, t)``: what the
    clipping wrappers call."""

    x0: Tensor | None = None

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.x0


class OdesolveScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that runs an odesolve method from a compiled plan.

    ``method`` is a registered name (``odesolve.methods.names()``). The other arguments read the
    model description and the time grid from a diffusers config (see `path_from_config`
    and `grid_from_config`); keys of other schedulers' configs that do not apply here are
    ignored, as diffusers does.

    Stepping: ``timesteps`` has one entry per model call of the plan (``order`` calls per grid
    step for multi-stage methods) and ``step(model_output, t, sample)`` sends the output into the
    plan's [`Program`][odesolve.execute.Program] and returns the next model input (the final sample
    after the last call). ``t`` must be the next entry of ``timesteps`` (a ``ValueError`` names
    it otherwise). The state and the history are kept at float32 or better, whatever the
    network's dtype. A pipeline may replace ``sample`` before a call whose input is the state
    (the first call of every step; inpainting does): the new sample becomes the state.

    Schedule: the method's diffusers namesake's (``namesakes.namesake_of``; ``schedule`` names
    another class of ``namesakes.NAMESAKES``): its timesteps, the network timesteps it gives
    (rounded where it rounds), its noise levels (float32 tables), its end point (``final_sigmas_type``,
    ``set_alpha_to_one``), its ``init_noise_sigma``, and for EulerDiscrete / Heun / LMS its sample
    coordinates ``x / alpha`` (``scale_model_input`` multiplies by alpha). Options (off by default):
    ``fractional_timesteps`` calls the network at the exact time of each noise level;
    ``float64_schedule`` builds the schedule from the path's float64 tables; ``final_step_to_zero``
    ends at sigma = 0 where the namesake stops earlier.

    ``lower_order_final`` is passed to multistep methods by the namesake's rule (below 15 steps for
    DPMSolverMultistep and DEIS, at any step count for UniPC, never for LMS), or below
    ``lower_order_final_max_steps`` when given. ``clip_sample`` (None: the namesake's default) and
    ``thresholding`` clip the data prediction on the model side (``odesolve.models.clip_data``,
    ``odesolve.models.dynamic_thresholding``) where the namesake has the option.

    img2img (a grid entered mid-way, diffusers #1866): ``set_begin_index(i)`` or a first ``step``
    at ``timesteps[i]`` recompiles the plan on the grid from that step on, so multistep methods
    warm up again from where sampling starts.

    Zero terminal SNR: where the namesake clamps ``alphas_cumprod[-1]`` to 2**-24 (DPMSolverMultistep,
    UniPC, EulerDiscrete) so does the schedule; elsewhere a grid that calls an eps- (or score-) network
    where alpha = 0 is refused in ``set_timesteps``: there the noise prediction does not determine the
    data prediction; use a v-prediction network or a grid that starts below the last training timestep.

    Noise (plans that inject it): by default a run draws as its namesake scheduler does, with
    diffusers' ``randn_tensor`` from the ``generator`` passed to ``step`` (None: torch's default stream; a
    list: one generator per sample), once per step, in the model output's dtype (float32 for
    DPMSolverMultistep): the same generator gives the samples diffusers' DDPM, DDIM (``eta``),
    EulerAncestral and DPMSolverMultistep ``sde-dpmsolver++`` schedulers give. Every ``step`` of a run
    must pass the generator of its first. ``set_noise(source)`` opts in to per-sample noise (an
    ``odesolve.noise`` source, e.g. ``BrownianPaths(seeds)``): sample i's noise then depends on its seed
    only, and ``step``'s generator is not read.

    ``eta`` (config; for methods with an ``eta`` option, e.g. ``ddpm``, ``dpmpp-2m-sde``) scales the
    injected noise. ``step(..., eta=...)`` is DDIMScheduler's argument, read by method ``ddim`` only: eta > 0
    runs DDIM with that eta (the ``ddpm`` table), as DDIMScheduler does; other methods ignore it
    (pipelines pass their default 0.0 to every scheduler that takes it).
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
        lower_order_final_max_steps: int | None = None,
        clip_sample: bool | None = None,
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
        set_alpha_to_one: bool | None = None,
        schedule: str | None = None,
        fractional_timesteps: bool = False,
        float64_schedule: bool = False,
        final_step_to_zero: bool = False,
        eta: float | None = None,
    ):
        self._family = family_for(self.config)
        # refuses unknown names, listing close ones; on flow models "euler" is FlowMatchEuler's step (ddim)
        flow = FAMILY_METHODS.get(self._family.name, {}).get(method, method)
        self._method = FLOW_HEUN if (self._family.name, method) == ("flow", "heun") else _methods.get(flow)
        self.namesake = namesake_of(method, schedule, self._family.name)
        if self._family.name == "vp" and "timestep_spacing" not in self._family.cfg:
            # not given: the namesake's default (DDIM, DDPM: leading), as diffusers gives each class its own
            self.register_to_config(timestep_spacing=self.namesake.default_spacing)
        if eta is not None and (isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 <= eta < math.inf):
            raise ValueError(f"eta must be a finite number >= 0 (or None: the method's default), got {eta!r}")
        if eta is not None and "eta" not in self._method.options and self._method.name != "ddim":
            raise ValueError(
                f"eta={eta!r}: method {method!r} takes no eta (it injects no noise); use a stochastic method "
                "such as 'ddpm' or 'dpmpp-2m-sde', or 'ddim' (eta > 0 runs DDIM with that eta)"
            )
        if self.namesake.name == "DDPMScheduler" and variance_type not in (None, "fixed_small"):
            raise ValueError(
                f"config field variance_type={variance_type!r} is not supported with DDPMScheduler's schedule "
                "(expected 'fixed_small': the posterior variance, DDIM with eta = 1)"
            )
        self._noise = None
        self._eta = None if eta is None else float(eta)
        self.path = self._family.path
        self.prediction = self._family.prediction
        self._kdiff = self.namesake.kdiff and self._family.name == "vp"
        handed = Model(_Handed(), self.path, "x0")
        if thresholding:  # bad ranges are refused, naming the field, whether or not the namesake clips
            dynamic_thresholding(handed, dynamic_thresholding_ratio, sample_max_value)
        if clip_sample:
            clip_data(handed, clip_sample_range)
        self._clips = _clipping(self.config, handed, self.namesake) is not None
        if lower_order_final_max_steps is not None:
            count(lower_order_final_max_steps, "config field lower_order_final_max_steps", minimum=0)
        for name in ("fractional_timesteps", "float64_schedule", "final_step_to_zero"):
            if not isinstance(self.config[name], bool):
                raise TypeError(f"{name} must be a bool, got {self.config[name]!r}")
        self.order = self._method.calls_per_step
        self.init_noise_sigma = 1.0
        if self._family.name == "vp":  # diffusers' tables, as the namesake keeps them (float32)
            self.betas = float32_betas(self._family.cfg, self._family.T)
            self.alphas = 1.0 - self.betas
            acp = alphas_cumprod_table(self.path, self.namesake, self._family.cfg, False)
            self.alphas_cumprod = torch.from_numpy(acp)
        self.num_inference_steps = None
        self.plan: Plan | None = None
        self.grid: Grid | None = None
        self._begin_index = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)
        self._reset_run()

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

    def set_noise(self, noise: NoiseSource | None):
        """Per-sample noise for stochastic methods (opt-in): ``noise`` is an ``odesolve.noise`` source holding
        one seed per sample (``PerSampleNormal(seeds)``, ``BrownianPaths(seeds)``); every run then draws
        from it instead of ``step``'s generator, so sample i's noise depends on its seed alone (not on the
        batch it is drawn in). None: back to diffusers' draw from ``step``'s generator. Starts a new run."""
        if noise is not None and not isinstance(noise, NoiseSource):
            raise TypeError(
                "noise must be an odesolve.noise source (PerSampleNormal(seeds), BrownianPaths(seeds)) or None, "
                f"got {type(noise).__name__}"
            )
        self._noise = noise
        self._reset_run()

    # -- grid and plan ------------------------------------------------------------------------
    @property
    def _stepper(self):
        """The table plans are compiled from: the method's (given ``self._eta`` as its ``eta`` option where it
        has one), or for ``ddim`` with eta > 0, DDIM with eta (``ddpm``)."""
        return _methods.get("ddpm") if self._is_ddim and self._eta else self._method

    @property
    def _is_ddim(self) -> bool:
        """Whether the method is DDIM, which reads DDIMScheduler's ``eta``."""
        return getattr(self._method, "name", None) == "ddim"

    def _options(self, steps: int, merged: bool = False) -> dict:
        """The plan's options for ``steps`` namesake steps. ``lower_order_final`` (the last two steps at
        orders 1 and 2) follows the namesake's rule; where the namesake's last step has zero length (merged
        by the grid), its second-to-last is the plan's last, taken at the method's order up to 2."""
        opts = {}
        if self._eta is not None and "eta" in self._stepper.options:
            opts["eta"] = self._eta
        if "lower_order_final" in self._stepper.options:
            limit = self.config.lower_order_final_max_steps
            limit = self.namesake.lower_order_final_below if limit is None else limit
            opts["lower_order_final"] = bool(self.config.lower_order_final) and steps < limit and not merged
        return opts

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list | None = None,
        sigmas: list | None = None,
        mu: float | None = None,
        **kwargs,
    ):
        """Build the grid (from ``num_inference_steps`` and the config, or from explicit network
        ``timesteps`` / ``sigmas`` -- noise levels sigma/alpha for VP and EDM models, the flow
        time for flow models -- ending at the end point the config names) and compile the plan."""
        net, self._asked = None, None
        if timesteps is not None or sigmas is not None:
            grid = explicit_grid(self._family, self.path, timesteps=timesteps, sigmas=sigmas, mu=mu)
            if timesteps is not None:
                net = torch.cat([torch.as_tensor(np.asarray(timesteps, dtype=np.float64)), torch.zeros(1)])
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps, timesteps or sigmas")
            steps = self._asked = count(num_inference_steps, "num_inference_steps")
            opts = {"float64": self.config.float64_schedule, "to_zero": self.config.final_step_to_zero}
            grid, net = family_grid(self._family, steps, path=self.path, mu=mu, namesake=self.namesake, opts=opts)
        self._use_grid(grid, device, None if self.config.fractional_timesteps else net)

    def _use_grid(self, grid: Grid, device=None, net: Tensor | None = None):
        """Compile the plan on ``grid``; ``net``: the network timestep of each grid point (None: the
        family's network time of the point)."""
        asked = getattr(self, "_asked", None) or grid.steps
        plan = self._stepper.compile(self.path, grid, **self._options(asked, merged=grid.steps < asked))
        self._use_plan(plan)
        self.grid = grid
        self.num_inference_steps = grid.steps
        timesteps = self._family.network_time(plan.times)
        if net is not None and net.numel() == grid.t.numel():  # calls on grid points: the namesake's timesteps
            hit = (plan.times[:, None] - grid.t[None, :]).abs() <= 1e-12 * (1 + grid.t.abs())[None, :]
            on, idx = hit.any(1), hit.to(torch.int64).argmax(1)
            timesteps = torch.where(on, net[idx], timesteps)
        timesteps = timesteps.to(torch.float32)
        self._host_timesteps = timesteps.tolist()  # compared on the host: no device synchronisation per step
        self.timesteps = timesteps.to(device)
        self._call_times = plan.times  # the run's, kept when a run starts mid-way on a shorter plan
        self._call_sigmas = torch.cat([self.path.noise_level(plan.times), grid.sigmas[-1:]])
        if self._family.name == "flow":  # diffusers' flow schedulers hold the flow time t as "sigmas"
            self.sigmas = torch.cat([plan.times, grid.t[-1:]]).to(torch.float32)
        else:
            self.sigmas = self._call_sigmas.to(torch.float32)
        # pipeline coordinates: x / alpha for the k-diffusion style namesakes (EulerDiscrete, Heun, LMS)
        times = torch.cat([plan.times, grid.t[-1:]])
        self._scales = self.path.alpha(times).tolist() if self._kdiff else None
        a0, s0 = self.path.alpha(grid.t[0]), self.path.sigma(grid.t[0])
        if self._kdiff:
            top = float(self.sigmas.max())
            leading = (self._family.cfg.get("timestep_spacing") or "linspace") == "leading"
            self.init_noise_sigma = torch.tensor(math.sqrt(top * top + 1) if leading else top)
        elif self._family.name == "vp":
            self.init_noise_sigma = 1.0
        else:
            self.init_noise_sigma = float(torch.sqrt(a0 * a0 + s0 * s0))
        self._begin_index = None
        self._reset_run()

    def _use_plan(self, plan: Plan):
        """Check ``plan`` against the network and take it. The program receives the network's
        output itself, or (EDM preconditioning, clipping) the data prediction ``x0 = b_x X + b_F
        out`` the scheduler forms: ``_x0`` holds ``(b_x, b_F)`` per call then, else None."""
        self._refuse_undefined(plan, plan.prediction)
        sends_x0 = self._clips or self._family.preconditioning(plan.times[:1]) is not None
        if sends_x0:
            bx, bf = self._refuse_undefined(plan, "x0")
            self._x0 = list(zip(bx.tolist(), bf.tolist()))
        else:
            self._x0 = None
        self._raw_noise = self._unclipped_noise_weights(plan) if self._clips else None
        self.plan = plan

    def _unclipped_noise_weights(self, plan: Plan) -> list[float] | None:
        """DDIMScheduler clips the data prediction but steps with the unclipped noise prediction:
        ``x' = a' clip(x0) + s' eps``, ``eps = (x - a x0) / s``. A DDIM row ``x' = (s'/s) x + B x0``
        (``B = a' - a s'/s``) takes that step when sent ``x0 + (a'/B) (clip(x0) - x0)``: the weights
        ``a'/B`` per call, for the ddim method on DDIMScheduler's schedule (None otherwise). With eta (the
        ddpm table) the noise prediction's weight is ``s' sqrt(1 - u^2)``, ``u = min(1, eta sqrt(1 - e^{-2h}))``
        (``s' u`` is DDIMScheduler's ``std_dev_t``): ``B = a' - a s' sqrt(1 - u^2) / s``."""
        if self.namesake.name != "DDIMScheduler" or plan.method not in ("ddim", "ddpm"):
            return None
        t = plan.times
        nxt = torch.cat([t[1:], plan.grid.t[-1:]])
        a, s = self.path.alpha(t), self.path.sigma(t)
        a1, s1 = self.path.alpha(nxt), self.path.sigma(nxt)
        keep = torch.ones_like(a)
        if plan.method == "ddpm":
            eta = self._stepper.eta if self._eta is None else self._eta
            decay = torch.exp(-2 * (torch.log(a1 / s1) - torch.log(a / s)))  # e^{-2h}
            keep = torch.sqrt(1 - torch.clamp(eta * torch.sqrt(1 - decay), max=1.0) ** 2)
        return (a1 / (a1 - a * s1 * keep / s)).tolist()

    def _refuse_undefined(self, plan: Plan, target: str):
        """``(c_x, c_F)`` with ``target = c_x X + c_F out`` at every call of ``plan``; where the
        network's raw output does not determine ``target`` (an eps-network at alpha = 0), a
        ``ValueError`` names the timestep and what to use instead."""
        try:
            cx, cf = self._family.output_coefficients(plan.path, target, plan.times)
            if bool((torch.isfinite(cx) & torch.isfinite(cf)).all()):
                return cx, cf
            reason = ""
        except ValueError as e:
            reason = f" ({e})"
        k = next(k for k in range(plan.calls) if not self._defined(plan, target, k))
        t = plan.times[k]
        need = f"the {target} prediction" if target == plan.prediction else "the data prediction x0 (to clip it)"
        raise ValueError(
            f"{plan.method!r} needs {need} at timestep {float(self._family.network_time(t)):g}, where alpha = "
            f"{float(plan.path.alpha(t)):g}; the network's prediction_type={self.config.prediction_type!r} does not "
            "determine it there (at alpha = 0 the noise carries no information about the data). Use a v_prediction "
            "(or sample) network, as zero-terminal-SNR models are trained, or a grid that does not start at "
            "alpha = 0: timestep_spacing='leading', or set_timesteps(timesteps=...) starting below that timestep"
            + reason
        )

    def _defined(self, plan: Plan, target: str, k: int) -> bool:
        try:
            cx, cf = self._family.output_coefficients(plan.path, target, plan.times[k : k + 1])
        except ValueError:
            return False
        return bool((torch.isfinite(cx) & torch.isfinite(cf)).all())

    # -- diffusers API ------------------------------------------------------------------------
    @property
    def begin_index(self):
        return self._begin_index

    @property
    def step_index(self):
        """Index in ``timesteps`` of the next call (None before the first ``step``)."""
        return None if self._k is None else self._offset + self._k

    def set_begin_index(self, begin_index: int = 0):
        self._begin_index = count(begin_index, "begin_index", minimum=0)

    def scale_model_input(self, sample: Tensor, timestep=None, *args, **kwargs) -> Tensor:
        """The network's input: ``c_in x`` for preconditioned (EDM) networks, ``alpha x`` in k-diffusion
        coordinates (the namesakes EulerDiscrete, HeunDiscrete, LMSDiscrete: ``x / sqrt(sigma^2 + 1)``),
        else ``sample`` itself."""
        if self._scales is not None:
            k = self._call_index(timestep)
            return sample * self._scales[k]
        if timestep is None:
            timestep = self.timesteps[min(self.step_index or 0, len(self.timesteps) - 1)]
        pre = self._family.preconditioning(self._family.path_time(timestep))
        if pre is None:
            return sample
        c_in = pre[2]
        return sample * c_in.to(sample.device, sample.dtype).reshape(-1, *([1] * (sample.ndim - 1)))

    def _call_index(self, timestep) -> int:
        """The call a ``timestep`` handed to ``scale_model_input`` is for: the next one of the run, else
        where a run would start at it."""
        if self._k is not None:
            return min(self._offset + self._k, len(self._host_timesteps) - 1)
        if timestep is None:
            return self._begin_index or 0
        return self._first_call(timestep)

    def _call_at(self, timestep, k: int) -> None:
        """Refuse a ``step`` whose timestep is not ``timesteps[k]`` (read on the host only when it
        is not that element of ``timesteps`` itself)."""
        if _entry(timestep, self.timesteps) == k:
            return
        value, expected = _timestep_value(timestep), self._host_timesteps[k]
        if abs(value - expected) > _tolerance(timestep, expected):
            raise ValueError(
                f"step() got timestep {value:g}, but the next model call is at timestep {expected:g} "
                f"(scheduler.timesteps[{k}]); call step once per entry of scheduler.timesteps, in order "
                "(set_timesteps starts a new run)"
            )

    def _first_call(self, timestep) -> int:
        """Where a run starts: ``begin_index``, else the entry of ``timesteps`` the first timestep is."""
        k0 = self._begin_index
        if k0 is not None:
            if not 0 <= k0 < len(self._host_timesteps):
                raise ValueError(f"begin_index {k0} is outside the {len(self._host_timesteps)} timesteps of the plan")
            return k0
        k0 = _entry(timestep, self.timesteps)
        if k0 is not None:
            return k0
        value = _timestep_value(timestep)
        hits = [k for k, v in enumerate(self._host_timesteps) if abs(v - value) <= _tolerance(timestep, value)]
        if not hits:
            raise ValueError(
                f"step() got timestep {value:g}, which is not in scheduler.timesteps "
                f"({self._host_timesteps[:4]}...); pass the entries of scheduler.timesteps, in order"
            )
        # a timestep repeated (the stages of Heun's steps): the call that starts a grid step, as
        # diffusers' index_for_timestep takes the second of two equal timesteps
        step = self.plan.step
        starts = [k for k in hits if k == 0 or int(step[k]) != int(step[k - 1])]
        return (starts or hits)[0]

    def _start(self, timestep, sample: Tensor, out: Tensor, generator, eta):
        """Start a run at the first ``step``: the plan's program for ``sample``, driven from it."""
        want = float(eta) if eta is not None and self._is_ddim else self.config.eta
        if want is not None and self._is_ddim and not 0 <= want < math.inf:
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        if want != self._eta:  # DDIMScheduler's step(eta=...): recompile on the same grid (the same timesteps)
            self._eta = want
            asked = self._asked or self.grid.steps
            self._use_plan(self._stepper.compile(self.path, self.grid, **self._options(asked, self.grid.steps < asked)))
        k0 = self._first_call(timestep)
        self._call_at(timestep, k0)
        if k0 != 0:
            self._enter_midway(k0)
        differentiable = torch.is_grad_enabled() and (sample.requires_grad or out.requires_grad)
        program = prepare(
            self.plan,
            "x0" if self._x0 is not None else self.prediction,
            sample.shape,
            sample.dtype,
            sample.device,
            differentiable=differentiable,
        )
        noise = None
        if program.stochastic:
            noise = self._noise
            if noise is None:
                draw = torch.float32 if self.namesake.noise_float32 else out.dtype
                noise = RandnTensorNoise(generator, sample.shape[0], draw)
            if program.correlated_noise and not noise.brownian:
                raise ValueError(
                    f"{self.plan.method!r} consumes correlated Brownian increments (overlapping noise intervals), "
                    "which no generator draws: call scheduler.set_noise(odesolve.noise.BrownianPaths(seeds))"
                )
        self._program, self._offset, self._generator = program, k0, generator
        self._run = program.steps(self._to_state(sample, k0), noise=noise)
        self._k, self._X, self._t, _ = next(self._run)
        if self._x0 is not None:
            self._handed = _Handed()
            self._clip = _clipping(self.config, Model(self._handed, self.path, "x0"), self.namesake)

    def _to_state(self, sample: Tensor, k: int) -> Tensor:
        """The pipeline's sample at call ``k`` as the plan's state (``alpha x`` in k-diffusion coordinates)."""
        return sample if self._scales is None else sample * self._scales[k]

    def _reset_run(self):
        """Forget the sampling run (closing its interpreter): the next ``step`` starts a new one."""
        run = getattr(self, "_run", None)
        if run is not None:
            run.close()
        self._run = self._program = self._k = self._X = self._t = None
        self._generator = self._returned = self._handed = self._clip = None
        self._offset, self._returned_version = 0, None

    def _enter_midway(self, k0: int):
        plan = self.plan
        n = int(plan.step[k0])
        if k0 > 0 and int(plan.step[k0 - 1]) == n:
            raise ValueError(
                f"begin_index {k0} falls inside grid step {n} of {plan.method!r}; a sampler can only "
                "be entered at the first call of a step"
            )
        grid = Grid(self.path, self.grid.t[n:])
        asked = self._asked or self.grid.steps
        sub = self._stepper.compile(self.path, grid, **self._options(asked, merged=self.grid.steps < asked))
        tail = plan.times[k0:]
        if sub.calls != tail.numel() or not torch.allclose(sub.times, tail, rtol=0, atol=1e-9):
            raise ValueError(
                f"{plan.method!r} takes {sub.calls} model calls from grid step {n} on when it starts "
                f"there (its warm-up differs), but the pipeline has {tail.numel()} timesteps left; "
                "it cannot be entered mid-way (img2img): use a method with the same calls at every "
                "step (for example dpmpp-2m, unipc-bh2-3, ddim, heun)"
            )
        self._use_plan(sub)

    def _check_output(self, model_output, sample) -> Tensor:
        """The model output as the prediction tensor for ``sample``, or an error naming what is wrong."""
        for name, v in (("model_output", model_output), ("sample", sample)):
            if not isinstance(v, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
            if not v.is_floating_point():
                raise TypeError(f"{name} must have a real floating dtype, got {v.dtype}")
        if model_output.device != sample.device:
            raise ValueError(
                f"model_output is on {model_output.device} but sample is on {sample.device}; move one of them"
            )
        out = model_output
        if out.ndim == sample.ndim and out.ndim >= 2 and out.shape[1] == 2 * sample.shape[1]:  # learned variance
            out = out[:, : sample.shape[1]]
        if out.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has shape "
                f"{tuple(sample.shape)}; they must be equal (or the output have twice the channels, "
                "a learned variance)"
            )
        program = self._program
        if program is not None and (sample.shape != program.shape or sample.device != program.device):
            raise ValueError(
                f"sample has shape {tuple(sample.shape)} on {sample.device} but this sampling run started "
                f"with shape {tuple(program.shape)} on {program.device}; call set_timesteps to start a "
                "new run"
            )
        return out

    def _data_prediction(self, out: Tensor, X: Tensor, k: int) -> Tensor:
        """``x0 = b_x X + b_F out`` at call ``k``, clipped or thresholded as the config says."""
        bx, bf = self._x0[k]
        x0 = out.to(X.dtype).mul(bf)
        if bx:
            x0.add_(X, alpha=bx)
        if self._clip is None:
            return x0
        self._handed.x0 = x0
        try:
            clipped = self._clip(X, self._t)
        finally:
            self._handed.x0 = None
        if self._raw_noise is None:
            return clipped
        return x0.add_(clipped - x0, alpha=self._raw_noise[k])

    def _handed_back(self, sample: Tensor) -> bool:
        """Whether ``sample`` is the tensor the last ``step`` returned, unmodified."""
        return sample is self._returned and (sample.is_inference() or sample._version == self._returned_version)

    def step(
        self,
        model_output: Tensor,
        timestep,
        sample: Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        eta: float | None = None,
        **kwargs,
    ) -> SchedulerOutput | tuple:
        """Send this model call's output into the plan's program; returns the next model input
        (the sample after the last call). ``timestep`` must be the next entry of ``timesteps``.
        ``generator``: where stochastic methods draw (see the class docstring); ``eta``: DDIMScheduler's, read
        by method ``ddim`` at the first step of a run. Other schedulers' ``kwargs`` (``s_churn``...) are
        ignored, except ``variance_noise``, which is refused."""
        if kwargs.get("variance_noise") is not None:
            raise ValueError(
                "variance_noise is not supported: the noise is drawn from step's generator, or from the source "
                "given to scheduler.set_noise (an odesolve.noise source)"
            )
        if self.plan is None:
            if not self._kdiff:
                raise ValueError("set_timesteps must be called before step")
            # as EulerDiscrete / Heun / LMS: the schedule of every training timestep until set_timesteps
            self.set_timesteps(self.config.num_train_timesteps, device=sample.device)
        out = self._check_output(model_output, sample)
        if self._k is None:
            self._start(timestep, sample, out, generator, eta)
        elif self._run is None:
            calls = self._program.calls
            if self._k >= calls:
                raise ValueError(
                    f"step called {calls + 1} times but the plan has {calls} model calls; call "
                    "set_timesteps again to start a new sampling run"
                )
            raise ValueError(
                f"this sampling run stopped with an error at call {self._k}; call set_timesteps to start a new one"
            )
        else:
            if self._program.stochastic and self._noise is None and generator is not self._generator:
                raise ValueError(
                    f"generator: {self.plan.method!r} injects noise, drawn from the generator passed to "
                    "the first step of the run; pass that same generator to every step (or None to all)"
                )
            self._call_at(timestep, self._offset + self._k)
        k, X = self._k, self._X
        if k > 0 and self._program.plain_input[k] and not self._handed_back(sample):
            X.copy_(self._to_state(sample, self._offset + k))  # the pipeline replaced the latents: X is the state
        sent = out if self._x0 is None else self._data_prediction(out, X, k)
        try:
            self._k, self._X, self._t, _ = self._run.send(sent)
        except BaseException:
            self._run = None  # the interpreter has stopped; the next step says so
            raise
        prev = self._X.to(sample.dtype, copy=True)  # X is the run's buffer, valid until the next send
        if self._scales is not None:
            prev.div_(self._scales[self._offset + self._k])
        if self._k == self._program.calls:
            self._run.close()
            self._run = self._X = self._handed = self._clip = None
        self._returned, self._returned_version = prev, None if prev.is_inference() else prev._version
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps) -> Tensor:
        """``alpha(t) x0 + sigma(t) noise`` at the network timesteps ``timesteps`` (the schedule's noise
        level where a timestep is one of ``self.timesteps``; any other value of the model's time range
        is read on the path), divided by ``alpha`` in k-diffusion coordinates."""
        ts = torch.as_tensor(timesteps).reshape(-1).to("cpu", torch.float64)
        t = self._family.path_time(ts)
        if self.plan is not None:
            on_grid = {v: float(self._call_times[k]) for k, v in reversed(list(enumerate(self._host_timesteps)))}
            t = torch.tensor(
                [on_grid.get(float(v), float(u)) for v, u in zip(ts.to(torch.float32).tolist(), t)], dtype=torch.float64
            )
        try:
            self.path.check_times(t, "timesteps")
        except ValueError as e:
            raise ValueError(f"add_noise: timesteps {ts.tolist()[:4]} are outside the model's ({e})") from None
        a, s = self.path.alpha(t), self.path.sigma(t)
        if self._kdiff:
            a, s = torch.ones_like(a), s / a
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        dev, dt = original_samples.device, original_samples.dtype
        return a.to(dev, dt).view(shape) * original_samples + s.to(dev, dt).view(shape) * noise

    def scale_noise(self, sample: Tensor, timestep, noise: Tensor | None = None) -> Tensor:
        """Flow-matching pipelines' name for
        [`add_noise`][odesolve.adapters.diffusers.scheduler.OdesolveScheduler.add_noise] (``sample`` is the clean
        sample)."""
        return self.add_noise(sample, noise, timestep)

    def __len__(self):
        return self.config.num_train_timesteps
