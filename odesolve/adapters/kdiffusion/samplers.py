"""k-diffusion's sampler functions, by name and signature, each an odesolve table run by the executor.

Every function takes k-diffusion's arguments (``model, x, sigmas, extra_args=None, callback=None,
disable=None`` and the sampler's own keywords at k-diffusion's defaults) and, keyword-only, odesolve's
noise options ``noise=`` (an ``odesolve.noise`` source: per-sample noise), ``seeds=`` (one
Brownian path per sample) and ``generator=`` (a torch.Generator). Stochastic samplers take
``noise_sampler(sigma, sigma_next)`` as in k-diffusion; without any of these they draw as k-diffusion
does: ``torch.randn`` from torch's global stream (ancestral samplers) or a torchsde Brownian tree
seeded from it (SDE samplers), so that the same torch seed gives the same samples.

=====================================  ==================================================
k-diffusion                            odesolve table (options)
=====================================  ==================================================
sample_euler / sample_heun(s_churn)    euler / heun; with churn Churn(euler) / Churn(heun)
sample_dpm_2(s_churn)                  dpm-solver-2; with churn Churn(dpm-solver-2)
sample_lms(order=N)                    lms-N
sample_euler_ancestral(eta)            ddpm (eta): DDIM with eta is Euler ancestral
sample_dpm_2_ancestral(eta)            dpm-2-ancestral (eta)
sample_dpmpp_2s_ancestral(eta)         dpmpp-2s-ancestral (eta)
sample_dpmpp_sde(eta, r)               AncestralStages(r) (eta); eta = 0: dpmpp-2s / its node-r table
sample_dpmpp_2m                        dpmpp-2m
sample_dpmpp_2m_sde(eta, solver_type)  dpmpp-2m-sde / dpmpp-2m-sde-heun (eta)
sample_dpmpp_3m_sde(eta)               dpmpp-3m-sde (eta)
sample_dpm_fast(sigma_min, sigma_max, n)  dpm-solver-fast on a uniform lambda grid
sample_dpm_adaptive(order, rtol, ...)  odesolve.adaptive's driver, batch-wide (DPM-Solver-12/23)
=====================================  ==================================================

EDM's churn (``s_churn > 0``) is the ``Churn`` table around the base (odesolve.methods.noise_jumps): its
default noise is k-diffusion's one ``randn_like(x)`` per step from torch's global stream, drawn on
every step (also without churn), so that the stream ends where k-diffusion leaves it.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import torch
from torch import Tensor

from ... import grids, methods
from ...adaptive import sample_dpm_adaptive
from ...methods.ancestral import DPM_SOLVER_FAST, AncestralStages, ancestral_split, dpm_solver_fast_tail
from ...methods.base import Geometry
from ...methods.exponential_rk import ExponentialRK
from ...methods.noise_jumps import DPM_2_CHURN, EULER_CHURN, HEUN_CHURN
from ...noise import BrownianPaths, NoiseSource
from ...paths import check_real
from .noise import NoiseSamplerSource, ScaledNoise, StepStream, brownian_tree_sampler, torch_stream_sampler
from .run import PATH, grid_of, run

__all__ = [
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpm_adaptive",
    "sample_dpm_fast",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2m_sde_gpu",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_3m_sde",
    "sample_dpmpp_3m_sde_gpu",
    "sample_dpmpp_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lms",
]


def _noise_source(x, sigmas, noise_sampler, s_noise, default: str, noise, seeds, generator) -> NoiseSource:
    """The noise of a stochastic k-diffusion sampler: at most one of ``noise_sampler``, ``noise``,
    ``seeds`` and ``generator``; none: k-diffusion's ``default`` ("torch" or "brownian-tree")."""
    given = [
        n
        for n, v in (("noise_sampler", noise_sampler), ("noise", noise), ("seeds", seeds), ("generator", generator))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"pass one of noise_sampler=, noise=, seeds= and generator=, got {' and '.join(given)}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    s_noise = check_real(s_noise, "s_noise", 0.0)
    if noise is not None or seeds is not None:
        source = BrownianPaths(seeds) if seeds is not None else noise
        return source if s_noise == 1 else ScaledNoise(source, s_noise)
    if noise_sampler is None:
        if generator is not None or default == "torch":
            noise_sampler = torch_stream_sampler(x, generator)
        else:
            noise_sampler = brownian_tree_sampler(x, grid_of(sigmas)[0].sigmas)
    sdtype = sigmas.dtype if isinstance(sigmas, Tensor) and sigmas.is_floating_point() else torch.float64
    return NoiseSamplerSource(noise_sampler, x.shape[0], s_noise, sdtype)


def _stochastic(method, eta, default, model, x, sigmas, extra_args, callback, disable, s_noise, noise_sampler, extra):
    eta = check_real(eta, "eta", 0.0)
    options = {"eta": eta}
    if eta == 0:  # k-diffusion draws no noise that matters; neither does the plan
        return run(method, model, x, sigmas, extra_args, callback, disable, options)
    noise = _noise_source(x, sigmas, noise_sampler, s_noise, default, **extra)
    return run(method, model, x, sigmas, extra_args, callback, disable, options, noise=noise)


def _churned(base: str, model, x, sigmas, extra_args, callback, disable, churn: dict, kw: dict) -> Tensor:
    """EDM's churn (k-diffusion's ``s_churn, s_tmin, s_tmax, s_noise``) before the steps of ``base``:
    the ``Churn`` table around it. Noise: ``noise=`` / ``seeds=`` / ``generator=``, else k-diffusion's
    one ``randn_like(x)`` per step from torch's global stream (drawn every step, as k-diffusion does)."""
    s_churn = check_real(churn["s_churn"], "s_churn", 0.0)
    check_real(churn["s_tmin"], "s_tmin")
    check_real(churn["s_tmax"], "s_tmax", allow_inf=True)
    check_real(churn["s_noise"], "s_noise", 0.0)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    given = [n for n, v in kw.items() if v is not None]
    if len(given) > 1:
        raise ValueError(f"pass one of noise=, seeds= and generator=, got {' and '.join(given)}")
    grid = grid_of(sigmas)[0]
    stream = None
    if kw["noise"] is None and kw["seeds"] is None:
        stream = StepStream(x, grid.sigmas, kw["generator"])
    noise = stream if stream is not None else kw["noise"] if kw["noise"] is not None else BrownianPaths(kw["seeds"])
    table = _CHURN[base]
    levels = grid.sigmas[:-1]
    active = s_churn > 0 and bool(((levels >= churn["s_tmin"]) & (levels <= churn["s_tmax"])).any())
    if active:
        out = run(table, model, x, sigmas, extra_args, callback, disable, churn, noise=noise)
    else:
        out = run(table.base, model, x, sigmas, extra_args, callback, disable)
    if stream is not None:
        stream.finish()
    return out


def _kw(noise, seeds, generator) -> dict:
    return {"noise": noise, "seeds": seeds, "generator": generator}


_CHURN = {"euler": EULER_CHURN, "heun": HEUN_CHURN, "dpm-solver-2": DPM_2_CHURN}


# -- deterministic samplers ----------------------------------------------------------------------


def sample_euler(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=math.inf,
    s_noise=1.0,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """Euler steps in sigma (Karras et al., EDM, 2022, Alg. 2): ``euler``, with ``s_churn > 0`` ``Churn(euler)``."""
    churn = {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    return _churned("euler", model, x, sigmas, extra_args, callback, disable, churn, _kw(noise, seeds, generator))


def sample_heun(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=math.inf,
    s_noise=1.0,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """Heun steps in sigma, Euler to sigma = 0 (Karras et al. 2022, Alg. 2): ``heun``, with churn ``Churn(heun)``."""
    churn = {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    return _churned("heun", model, x, sigmas, extra_args, callback, disable, churn, _kw(noise, seeds, generator))


def sample_dpm_2(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=math.inf,
    s_noise=1.0,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """DPM-Solver-2 (Lu et al. 2022, midpoint in log sigma), Euler to sigma = 0: ``dpm-solver-2``, with churn
    ``Churn(dpm-solver-2)``."""
    churn = {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    return _churned(
        "dpm-solver-2", model, x, sigmas, extra_args, callback, disable, churn, _kw(noise, seeds, generator)
    )


def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4) -> Tensor:
    """Linear multistep in sigma on the Euler derivative, ``order`` outputs (1..4): ``lms-<order>``."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 4:
        raise ValueError(f"order: sample_lms supports order 1, 2, 3 or 4 (odesolve's lms-1 .. lms-4), got {order!r}")
    return run(f"lms-{order}", model, x, sigmas, extra_args, callback, disable)


def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): ``dpmpp-2m``."""
    return run("dpmpp-2m", model, x, sigmas, extra_args, callback, disable)


# -- stochastic samplers ---------------------------------------------------------------------------


def sample_euler_ancestral(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """Euler steps to sigma_down plus sigma_up noise: ``ddpm`` with ``eta`` (DDIM with eta is Euler
    ancestral for every eta)."""
    return _stochastic(
        "ddpm",
        eta,
        "torch",
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        s_noise,
        noise_sampler,
        _kw(noise, seeds, generator),
    )


def sample_dpm_2_ancestral(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """DPM-Solver-2 steps to sigma_down plus sigma_up noise: ``dpm-2-ancestral`` with ``eta``."""
    return _stochastic(
        "dpm-2-ancestral",
        eta,
        "torch",
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        s_noise,
        noise_sampler,
        _kw(noise, seeds, generator),
    )


def sample_dpmpp_2s_ancestral(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """DPM-Solver++(2S) steps to sigma_down plus sigma_up noise: ``dpmpp-2s-ancestral`` with ``eta``."""
    return _stochastic(
        "dpmpp-2s-ancestral",
        eta,
        "torch",
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        s_noise,
        noise_sampler,
        _kw(noise, seeds, generator),
    )


def sample_dpmpp_2m_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    solver_type="midpoint",
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """DPM-Solver++(2M) SDE: ``dpmpp-2m-sde`` (``solver_type="midpoint"``) or ``dpmpp-2m-sde-heun``
    (``"heun"``, the exact weight of the linear interpolant) with ``eta``."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    method = "dpmpp-2m-sde" if solver_type == "midpoint" else "dpmpp-2m-sde-heun"
    return _stochastic(
        method,
        eta,
        "brownian-tree",
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        s_noise,
        noise_sampler,
        _kw(noise, seeds, generator),
    )


def sample_dpmpp_3m_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion's: Taylor 2-node warm-up, half D2 weight): ``dpmpp-3m-sde``."""
    return _stochastic(
        "dpmpp-3m-sde",
        eta,
        "brownian-tree",
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        s_noise,
        noise_sampler,
        _kw(noise, seeds, generator),
    )


sample_dpmpp_2m_sde_gpu = sample_dpmpp_2m_sde  # ComfyUI's names: the same samplers, noise drawn on x's device
sample_dpmpp_3m_sde_gpu = sample_dpmpp_3m_sde


def _two_stage(r: float) -> ExponentialRK:
    """DPM-Solver++ singlestep with its second node at ``r h``: ``x = sigma_1/sigma_0 x + alpha_1 chi_1(h)
    [(1 - 1/(2r)) D_0 + 1/(2r) D_r]`` (Lu et al. 2022, Alg. 1 with a general r)."""
    r = check_real(r, "r", 0.0, 1.0, lo_open=True)
    if r == 0.5:
        return methods.get("dpmpp-2s")
    c = Fraction(r)
    return ExponentialRK(
        f"dpmpp-2s-r{r:g}",
        order=2,
        c=(Fraction(0), c),
        a=(((Fraction(1),),),),
        b=((1 - 1 / (2 * c),), (1 / (2 * c),)),
        paper="Lu et al., DPM-Solver++, 2022, Alg. 1 (k-diffusion sample_dpmpp_sde with eta = 0)",
    )


def _stages(r: float) -> AncestralStages:
    """k-diffusion's sample_dpmpp_sde with eta > 0 as a table: ``AncestralStages`` with node ``r``."""
    r = check_real(r, "r", 0.0, 1.0, lo_open=True)
    return AncestralStages(
        "dpmpp-sde" if r == 0.5 else f"dpmpp-sde-r{r:g}",
        order=2,
        strong_order=1.0,
        weak_order=2,
        r=r,
        paper="Lu et al., DPM-Solver++, 2022, Alg. 1 with ancestral stages (k-diffusion sample_dpmpp_sde)",
    )


def sample_dpmpp_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r=0.5,
    *,
    noise=None,
    seeds=None,
    generator=None,
) -> Tensor:
    """DPM-Solver++ singlestep with its second node at ``r``, each stage an ancestral step with ``eta``:
    ``AncestralStages`` (``dpmpp-2s`` with node r for eta = 0). Its two noises per step overlap (k-diffusion
    asks ``noise_sampler(sigma, sigma_s)`` and ``noise_sampler(sigma, sigma_next)``): by default a Brownian tree
    seeded from torch's global stream, as k-diffusion. On ``sigmas`` that end above 0 the last step's end
    noise is added after the plan, as k-diffusion adds it (``seeds=`` / ``noise=``: the table's own last step)."""
    eta = check_real(eta, "eta", 0.0)
    check_real(s_noise, "s_noise", 0.0)
    if eta == 0:
        return run(_two_stage(r), model, x, sigmas, extra_args, callback, disable)
    table = _stages(r)
    src = _noise_source(x, sigmas, noise_sampler, s_noise, "brownian-tree", noise, seeds, generator)
    grid = grid_of(sigmas)[0]
    open_end = isinstance(src, NoiseSamplerSource) and float(grid.sigmas[-1]) > 0
    out = run(table, model, x, sigmas, extra_args, callback, disable, {"eta": eta, "open_end": open_end}, noise=src)
    if open_end:  # k-diffusion's last noise: sigma_N u_N noise_sampler(sigma_{N-1}, sigma_N)
        g = Geometry(PATH, grid)
        u = ancestral_split(g, eta)[0][-1]
        a, b = (float(v) for v in g.at_lambda(g.lam[-2:])[0])
        xi = src.standard_normal(grid.steps, (a, b), out.shape, out.dtype, out.device)
        out = out + float(grid.sigmas[-1] * u) * xi
    return out


def sample_dpm_fast(
    model,
    x,
    sigma_min,
    sigma_max,
    n,
    extra_args=None,
    callback=None,
    disable=None,
    eta=0.0,
    s_noise=1.0,
    noise_sampler=None,
) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, sec. 3.4) with ``n`` model calls: ``n // 3 + 1`` steps uniform in
    lambda = -log sigma from ``sigma_max`` to ``sigma_min``, DPM-Solver-3 steps and a last step of order
    ``n mod 3`` (orders 2 and 1 when 3 divides n): ``dpm-solver-fast`` with that tail. The times are
    float64 (k-diffusion computes them in the dtype of ``torch.tensor(sigma_max)``). ``eta = 0`` only."""
    lo, hi = (
        check_real(sigma_min, "sigma_min", 0.0, lo_open=True),
        check_real(sigma_max, "sigma_max", 0.0, lo_open=True),
    )
    if not lo < hi:
        raise ValueError(f"sigma_min must be below sigma_max, got {lo} and {hi}")
    if check_real(eta, "eta", 0.0) != 0:
        raise ValueError(
            f"eta: sample_dpm_fast's ancestral variant (eta={eta}) is not supported; supported: eta=0 "
            "(for ancestral sampling use sample_dpm_2_ancestral or sample_dpmpp_2s_ancestral)"
        )
    check_real(s_noise, "s_noise", 0.0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of model calls), got {n!r}")
    tail, steps = dpm_solver_fast_tail(n)
    table = dataclasses.replace(DPM_SOLVER_FAST, tail=tail, order=min(3, min(tail) + 1))
    lam = torch.linspace(-math.log(hi), -math.log(lo), steps + 1, dtype=torch.float64)
    grid = grids.from_sigmas(PATH, torch.exp(-lam))
    wrapped = None
    if callback is not None:

        def wrapped(info):  # k-diffusion's DPM-Solver callback also names the step's time t = -log sigma
            t = -torch.log(torch.as_tensor(info["sigma"]))
            callback({**info, "t": t, "t_up": t})

    return run(table, model, x, None, extra_args, wrapped, disable, grid=grid)
