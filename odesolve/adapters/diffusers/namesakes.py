"""The schedule rules of diffusers' schedulers, as data: which timesteps and noise levels a scheduler class
computes in ``set_timesteps`` for a config, where it ends, how a pipeline's sample is scaled.

A method's *namesake* (``namesake_of``) is the diffusers scheduler it stands in for: ``euler`` for
``EulerDiscreteScheduler``, ``ddim`` for ``DDIMScheduler``, ``plms`` for ``PNDMScheduler`` and so on.
``OdesolveScheduler(method=m)`` samples on the grid ``m``'s namesake would use for the same config, so
that swapping one for the other changes the solver and nothing else. The rules differ between the
classes in small ways that change every timestep (what ``leading`` divides by, whether ``linspace``
rounds, whether Karras timesteps are rounded, where the schedule ends); each row of ``NAMESAKES``
records them for one class.

The VP schedule (``vp_schedule``): spaced timesteps (``odesolve.grids.spaced_timesteps``), the
noise levels ``sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod)`` interpolated linearly at them,
optionally replaced by a Karras (Karras et al. 2022, eq. 5), exponential, beta (Lee et al. 2024) or
lambda-uniform ramp whose network timesteps are read back by interpolating log sigma, then the end
point. By default the tables are float32, as diffusers keeps them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ... import grids as _grids
from .config import count, positive

__all__ = [
    "FAMILY_METHODS",
    "FAMILY_NAMESAKES",
    "NAMESAKES",
    "Namesake",
    "alphas_cumprod_table",
    "float32_betas",
    "namesake_of",
    "vp_schedule",
]

SIGMA_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")


@dataclass(frozen=True)
class Namesake:
    """How one diffusers scheduler class builds its VP schedule (the defaults: DPMSolverMultistepScheduler's)."""

    name: str  # the diffusers class
    extra_point: bool = True  # leading / linspace space steps + 1 points and drop the last
    fractional_linspace: bool = False  # linspace timesteps are not rounded
    spacings: tuple[str, ...] = ("leading", "trailing", "linspace")  # honoured timestep_spacing values
    sigma_options: tuple[str, ...] = SIGMA_OPTIONS[:3]  # honoured use_*_sigmas fields
    rounded: tuple[str, ...] = ("use_karras_sigmas",)  # sigma options whose network timesteps are rounded
    cosine_unrounded: bool = False  # ... except with beta_schedule="squaredcos_cap_v2"
    integer_timesteps: bool = True  # network timesteps are kept as integers (truncated)
    ramp_from_spaced: bool = False  # ramps span the spaced sigmas (else the whole table)
    config_range: bool = False  # config sigma_min / sigma_max bound the ramps
    final: str = "config"  # "config" (final_sigmas_type), "zero", "first" (sigma(t=0)), "alpha_to_one"
    kdiff: bool = False  # samples in k-diffusion coordinates x / alpha (init_noise_sigma = largest sigma)
    lower_order_final_below: float = 15  # lower_order_final applies below this many steps (0: never)
    clamps_zero_snr: bool = False  # alphas_cumprod[-1] = 2**-24 with rescale_betas_zero_snr
    clip_sample: bool = False  # honours clip_sample
    clip_sample_default: bool = False
    thresholding: bool = False  # honours thresholding
    ramp_ends_on_ramp: bool = False  # with a sigma option, a non-zero end repeats the ramp's last sigma
    default_spacing: str = "linspace"  # timestep_spacing when the config does not name one
    noise_float32: bool = False  # step() draws its noise in float32 (else in the model output's dtype)


_KDIFF = {
    "extra_point": False,
    "fractional_linspace": True,
    "rounded": (),
    "ramp_from_spaced": True,
    "final": "zero",
    "kdiff": True,
    "integer_timesteps": False,
}
NAMESAKES: dict[str, Namesake] = {
    n.name: n
    for n in (
        Namesake(
            "DPMSolverMultistepScheduler",
            sigma_options=SIGMA_OPTIONS,
            rounded=("use_karras_sigmas", "use_lu_lambdas"),
            cosine_unrounded=True,
            clamps_zero_snr=True,
            thresholding=True,
            noise_float32=True,
        ),
        Namesake("DPMSolverSinglestepScheduler", spacings=("linspace",), lower_order_final_below=0, thresholding=True),
        Namesake(
            "UniPCMultistepScheduler",
            config_range=True,
            lower_order_final_below=math.inf,
            clamps_zero_snr=True,
            thresholding=True,
        ),
        Namesake("DEISMultistepScheduler", final="first", thresholding=True, ramp_ends_on_ramp=True),
        Namesake(
            "DDIMScheduler",
            extra_point=False,
            default_spacing="leading",
            sigma_options=(),
            final="alpha_to_one",
            lower_order_final_below=0,
            clip_sample=True,
            clip_sample_default=True,
            thresholding=True,
        ),
        Namesake(
            "DDPMScheduler",
            extra_point=False,
            default_spacing="leading",
            sigma_options=(),
            final="zero",
            lower_order_final_below=0,
            clip_sample=True,
            clip_sample_default=True,
            thresholding=True,
        ),
        Namesake(
            "PNDMScheduler",
            extra_point=False,
            sigma_options=(),
            final="alpha_to_one",
            lower_order_final_below=0,
        ),
        Namesake(
            "EulerDiscreteScheduler",
            **{**_KDIFF, "final": "config"},
            config_range=True,
            clamps_zero_snr=True,
            lower_order_final_below=0,
        ),
        Namesake(
            "EulerAncestralDiscreteScheduler",
            **_KDIFF,
            sigma_options=(),
            clamps_zero_snr=True,
            lower_order_final_below=0,
        ),
        Namesake("HeunDiscreteScheduler", **_KDIFF, lower_order_final_below=0, clip_sample=True),
        Namesake("LMSDiscreteScheduler", **_KDIFF, lower_order_final_below=0),
        # the flow and EDM families build their grids themselves (families.py); these rows say what they honour
        Namesake("FlowMatchEulerDiscreteScheduler", sigma_options=(), lower_order_final_below=0),
        Namesake("EDMDPMSolverMultistepScheduler", sigma_options=(), thresholding=True),
    )
}
FAMILY_NAMESAKES = {"flow": "FlowMatchEulerDiscreteScheduler", "edm": "EDMDPMSolverMultistepScheduler"}
# FlowMatchEulerDiscreteScheduler's step x + (t' - t) v is DDIM on the flow path x = (1 - t) x0 + t eps
FAMILY_METHODS = {"flow": {"euler": "ddim"}}

# method name (as the user wrote it) -> namesake; the first matching prefix wins
_BY_PREFIX = (
    ("euler-ancestral", "EulerAncestralDiscreteScheduler"),
    ("euler", "EulerDiscreteScheduler"),
    ("heun", "HeunDiscreteScheduler"),
    ("lms-", "LMSDiscreteScheduler"),
    ("ddim", "DDIMScheduler"),
    ("ddpm", "DDPMScheduler"),
    ("plms", "PNDMScheduler"),
    ("unip", "UniPCMultistepScheduler"),
    ("deis", "DEISMultistepScheduler"),
    ("dpm-solver-2m", "DPMSolverMultistepScheduler"),
    ("dpm-solver-3m", "DPMSolverMultistepScheduler"),
    ("dpm-solver-", "DPMSolverSinglestepScheduler"),
    ("dpmpp-2s", "DPMSolverSinglestepScheduler"),
    ("dpmpp-3s", "DPMSolverSinglestepScheduler"),
)


def namesake_of(method: str, schedule: str | None = None, family: str = "vp") -> Namesake:
    """The diffusers scheduler whose schedule ``method`` samples on: ``schedule`` (a class name of
    ``NAMESAKES``) when given, else for flow and EDM models their family's scheduler, for VP models
    the method's namesake (DPMSolverMultistepScheduler for the methods diffusers has no class of)."""
    if schedule is not None:
        if schedule not in NAMESAKES:
            raise ValueError(f"schedule must be one of {sorted(NAMESAKES)} (or None: the method's), got {schedule!r}")
        return NAMESAKES[schedule]
    if family in FAMILY_NAMESAKES:
        return NAMESAKES[FAMILY_NAMESAKES[family]]
    for prefix, name in _BY_PREFIX:
        if method.startswith(prefix):
            return NAMESAKES[name]
    return NAMESAKES["DPMSolverMultistepScheduler"]


def float32_betas(cfg: dict, T: int) -> torch.Tensor:
    """The config's betas as diffusers' schedulers tabulate them: computed in float32 (the cosine schedule
    in float64, then rounded), rescaled to zero terminal SNR (Lin et al. 2024, Alg. 1) in float32."""
    trained = cfg.get("trained_betas")
    schedule = cfg.get("beta_schedule") or "linear"
    lo, hi = float(cfg.get("beta_start") or 0.0001), float(cfg.get("beta_end") or 0.02)
    if trained is not None:
        betas = torch.as_tensor(np.asarray(trained), dtype=torch.float32)
    elif schedule == "linear":
        betas = torch.linspace(lo, hi, T, dtype=torch.float32)
    elif schedule == "scaled_linear":
        betas = torch.linspace(lo**0.5, hi**0.5, T, dtype=torch.float32) ** 2
    else:  # squaredcos_cap_v2 (Nichol & Dhariwal 2021, eq. 17, betas capped at 0.999)
        f = [math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]
        betas = torch.tensor([min(1 - f[i + 1] / f[i], 0.999) for i in range(T)], dtype=torch.float32)
    if cfg.get("rescale_betas_zero_snr"):
        a = torch.cumprod(1.0 - betas, 0).sqrt()
        a0, aT = a[0].clone(), a[-1].clone()
        a = ((a - aT) * (a0 / (a0 - aT))) ** 2
        betas = 1 - torch.cat([a[:1], a[1:] / a[:-1]])
    return betas


def alphas_cumprod_table(path, ns: Namesake, cfg: dict, float64: bool) -> np.ndarray:
    """alphas_cumprod as the namesake keeps it: float32 as diffusers computes it, 2**-24 at a zero terminal
    SNR where the class clamps it; with ``float64`` the path's own (no clamp)."""
    if float64:
        return path.alphas_cumprod.numpy().copy()
    acp = torch.cumprod(1.0 - float32_betas(cfg, path.alphas_cumprod.numel()), 0).numpy().copy()
    if ns.clamps_zero_snr and cfg.get("rescale_betas_zero_snr") and acp[-1] == 0:
        acp[-1] = 2.0**-24
    return acp


def _sigmas_of(acp: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.sqrt((1 - acp) / acp)


def _time_of_sigma(sigma: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The (fractional) timestep of each noise level: log sigma interpolated linearly between the two
    table entries around it (the table's log taken in its own dtype, as diffusers does), clamped to the table."""
    log_table = np.log(table).astype(np.float64)
    with np.errstate(divide="ignore"):
        log_s = np.log(np.maximum(np.asarray(sigma, dtype=np.float64), 1e-10))
    finite = np.isfinite(log_table)
    log_table, idx = log_table[finite], np.arange(table.size, dtype=np.float64)[finite]
    low = np.clip(np.searchsorted(log_table, log_s, side="right") - 1, 0, log_table.size - 2)
    w = np.clip((log_table[low] - log_s) / (log_table[low] - log_table[low + 1]), 0.0, 1.0)
    return (1 - w) * idx[low] + w * idx[low + 1]


def _ramp(option: str, lo: float, hi: float, n: int, rho: float = 7.0) -> np.ndarray:
    if option == "use_karras_sigmas":
        ramp = np.linspace(0, 1, n)
        return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    if option in ("use_exponential_sigmas", "use_lu_lambdas"):
        return np.exp(np.linspace(math.log(hi), math.log(lo), n))
    # use_beta_sigmas: quantiles of Beta(0.6, 0.6) (Lee et al. 2024, "Beta sampling is all you need")
    from scipy.stats import beta

    return lo + beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6) * (hi - lo)


def vp_schedule(ns: Namesake, cfg: dict, path, steps: int, *, float64: bool = False, to_zero: bool = False):
    """``(timesteps, sigmas)``: the ``steps`` network timesteps and the ``steps + 1`` noise levels (float64
    numpy arrays) the namesake computes for this config (see the module docstring). ``to_zero``: end at
    sigma = 0 whatever the namesake's end."""
    T = path.alphas_cumprod.numel()
    acp = alphas_cumprod_table(path, ns, cfg, float64)
    table = _sigmas_of(acp)
    spacing = cfg.get("timestep_spacing") or ns.default_spacing
    if spacing not in ("leading", "trailing", "linspace"):
        raise ValueError(
            f"config field timestep_spacing={spacing!r} is not supported (expected 'linspace', 'leading' or 'trailing')"
        )
    if spacing not in ns.spacings:
        spacing = ns.spacings[0]
    if steps > T:
        raise ValueError(
            f"num_inference_steps={steps} is more than the model's num_train_timesteps={T}: a discrete "
            f"model has only {T} timesteps (use_karras_sigmas, use_exponential_sigmas or use_beta_sigmas "
            "space noise levels instead)"
        )
    offset = count(cfg.get("steps_offset") or 0, "config field steps_offset", minimum=0)
    try:
        ts = _grids.spaced_timesteps(
            T, steps, spacing, offset, extra_point=ns.extra_point, rounded=not ns.fractional_linspace
        ).numpy()
    except ValueError as e:
        raise ValueError(f"num_inference_steps={steps} with timestep_spacing={spacing!r} ({ns.name}): {e}") from None
    option = next((o for o in ns.sigma_options if cfg.get(o)), None)
    finite_table = table.astype(np.float64)  # (inf at a zero terminal SNR)
    if option is None:
        sigmas = np.interp(ts, np.arange(T), finite_table)
    else:
        if ns.ramp_from_spaced:
            spaced = np.interp(ts, np.arange(T), finite_table)
            lo, hi = float(spaced[-1]), float(spaced[0])
        else:
            lo, hi = float(finite_table[0]), float(finite_table[-1])
        if ns.config_range and option != "use_lu_lambdas":
            lo = positive(cfg, "sigma_min", lo) if cfg.get("sigma_min") is not None else lo
            hi = positive(cfg, "sigma_max", hi) if cfg.get("sigma_max") is not None else hi
        if not math.isfinite(hi):
            raise ValueError(
                f"config field {option} needs a finite largest noise level, but with rescale_betas_zero_snr "
                f"{ns.name} has an infinite one: use timestep_spacing, or a method whose namesake clamps it"
            )
        sigmas = _ramp(option, lo, hi, steps)
        ts = _time_of_sigma(sigmas, table)
        cosine = (cfg.get("beta_schedule") or "linear") == "squaredcos_cap_v2"
        if option in ns.rounded and not (ns.cosine_unrounded and cosine):
            ts = ts.round()
    if ns.integer_timesteps:
        ts = np.trunc(ts)
    final = "zero" if to_zero else _final(ns, cfg)
    last = {"zero": 0.0, "first": float(finite_table[0])}.get(final, float(sigmas[-1]))
    sigmas = np.concatenate([sigmas, [last]])
    if not float64:
        sigmas = sigmas.astype(np.float32).astype(np.float64)
    return ts.astype(np.float64), sigmas


def _final(ns: Namesake, cfg: dict) -> str:
    """Where the schedule ends: ``"zero"``, ``"first"`` (sigma at t = 0) or ``"last"`` (the ramp's last sigma
    repeated: a zero-length step)."""
    ramp = any(cfg.get(o) for o in ns.sigma_options)
    final = ns.final
    if final == "config":
        final = cfg.get("final_sigmas_type") or "zero"
        if final not in ("zero", "sigma_min"):
            raise ValueError(
                f"config field final_sigmas_type={final!r} is not supported (expected 'zero' or 'sigma_min')"
            )
        final = "zero" if final == "zero" else "first"
    elif final == "alpha_to_one":
        to_one = cfg.get("set_alpha_to_one")  # None (a saved config's null too): the class's default
        final = "zero" if (ns.name == "DDIMScheduler" if to_one is None else to_one) else "first"
    return "last" if final == "first" and ramp and ns.ramp_ends_on_ramp else final
