"""Every sampler of the benchmark, as one interface over the three libraries.

A :class:`Solver` runs on a :class:`~benchmarks.setups.Setup` with a grid of N steps from a start
``x_T`` (float64, in the path's coordinates) with an exact x0-oracle ``oracle(x, t) -> x0`` (x in the
path's coordinates, t a float64 scalar tensor in the path's time) and returns ``(x_end, t_end)`` in
the path's coordinates. Every library sees the same model: the oracle, reached through a wrapper
that counts the calls (the NFE reported is the count, never a formula).

Coordinates. odesolve works in the path's own coordinates. k-diffusion works in ``x / alpha`` with
noise level ``sigma / alpha`` (its "sigmas"). diffusers' VP schedulers (DDIM, PNDM, DPM-Solver,
UniPC, DEIS) work in VP coordinates ``x / alpha * alpha_vp`` with ``alpha_vp = (1 + sigma^2)^-1/2``;
its k-style schedulers (Euler, Heun, LMS, KDPM2) in ``x / alpha`` and feed the network
``x / alpha * alpha_vp``. The conversions are exact rescalings done outside the solvers.

Grids. diffusers builds its own timesteps; for the ``vp-trailing`` setup its native
``timestep_spacing="trailing"`` is used (and checked against the odesolve grid). For the other
setups its timesteps and sigmas are replaced after ``set_timesteps`` by the odesolve grid (the
timesteps by labels that the model wrapper maps to path times), so that all libraries run on the
same grid. DDIM and PNDM compute the next timestep as ``t - T // N`` inside ``step`` and cannot take
another grid, so they run natively on ``vp-trailing`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

import odesolve as ods

from . import peers
from .setups import BETA_END, BETA_START, T_TRAIN, Setup

__all__ = ["Solver", "all_solvers", "odesolve_key"]


class Counter:
    """Wraps a model function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, *args, **kwargs):
        self.n += 1
        return self.fn(*args, **kwargs)


@dataclass
class Solver:
    lib: str  # "odesolve", "diffusers", "k-diffusion"
    name: str  # method name shown in tables (the library's own name where it has one)
    run: Callable  # run(setup, grid, x_T, oracle) -> (x_end, t_end)
    calls: Callable[[Setup, int], int]  # model calls for N steps (used to pick N for an NFE budget)
    twin: Callable[[int], str | None] = lambda n: None  # odesolve solver key that should give identical samples
    supports: Callable[[Setup], bool] = lambda s: True
    fixed_grid: bool = False  # the sampler builds its own grid from the NFE budget (k-diffusion's dpm_fast)
    note: str = ""
    training_free: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.lib}:{self.name}"


# ------------------------------------------------------------------------------------------------
# odesolve
# ------------------------------------------------------------------------------------------------


def odesolve_key(method: str, lof: bool = False) -> str:
    return f"{method}[lof]" if lof else method


def _ods_solver(method, lof: bool) -> Solver:
    opts = {"lower_order_final": True} if lof else {}
    m = ods.methods.get(method) if isinstance(method, str) else method
    method = m.name

    plans: dict = {}

    def plan_for(setup: Setup, grid):
        key = (setup.key, tuple(grid.t.tolist()))
        if key not in plans:
            plans[key] = m.compile(setup.path, grid, **opts)
        return plans[key]

    def run(setup: Setup, grid, x_T, oracle):
        model = ods.Model(lambda x, t: oracle(x, t[0]), setup.path, "x0")
        return ods.execute(plan_for(setup, grid), model, x_T), float(grid.t[-1])

    def calls(setup: Setup, n: int) -> int:
        return plan_for(setup, setup.grid(n)).calls

    def supports(setup: Setup) -> bool:
        try:
            m.compile(setup.path, setup.grid(3), **opts)
            return True
        except (ValueError, TypeError):
            return False

    registered = method in ods.methods.names()
    return Solver(
        "odesolve",
        odesolve_key(method, lof),
        run,
        calls,
        twin=lambda n: None,
        supports=supports,
        note="" if registered else "not a registered method: a table built in benchmarks/ to identify a peer",
        meta={"paper": m.paper, "order": m.order, "prediction": m.prediction, "registered": registered},
    )


# k-diffusion's sample_dpmpp_3m_sde(eta=0): the 3M update with the halved second difference, but its
# second step uses the Taylor weight h phi_2(-h) (odesolve's dpmpp-3m and diffusers use the midpoint one)
K_3M = ods.methods.ExponentialMultistep(
    "dpmpp-3m/taylor-warmup",
    order=2,
    prediction="x0",
    nodes=3,
    weights=ods.methods.HALF_SECOND_DIFFERENCE,
    paper="k-diffusion sample_dpmpp_3m_sde with eta=0 (unregistered; identifies the peer)",
)


def _lower_order_final_matters(m: ods.methods.Method) -> bool:
    """Whether the option ``lower_order_final`` changes the plan of ``m`` on a 10-step Karras grid to
    sigma = 0, as the benchmark grids end. (The last step, to sigma = 0, is first order anyway for
    the methods that interpolate in lambda, so there the option changes only the step before it, of
    methods with three or more nodes; in t or rho the last step is regular and the option changes it.)"""
    if "lower_order_final" not in m.options:
        return False
    path = ods.paths.EDM()
    grid = ods.grids.karras(path, 10)
    a, b = m.compile(path, grid), m.compile(path, grid, lower_order_final=True)
    fields = ("step", "input_state", "input_hist", "update_state", "update_hist")
    return not all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


def odesolve_solvers() -> list[Solver]:
    # the accuracy study compares probability-flow ODE solvers against the ODE's exact solution
    deterministic = [n for n in ods.methods.names() if not ods.methods.get(n).stochastic]
    out = [_ods_solver(name, False) for name in deterministic]
    for name in deterministic:
        if _lower_order_final_matters(ods.methods.get(name)):
            out.append(_ods_solver(name, True))  # lower_order_final, as diffusers uses below 15 steps
    out.append(_ods_solver(K_3M, False))
    return out


# ------------------------------------------------------------------------------------------------
# helpers shared by the peers
# ------------------------------------------------------------------------------------------------


def _f64(v) -> Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


def _alpha(path, t) -> Tensor:
    return path.alpha(_f64(t))


def _t_of_sigma(path, sigma) -> Tensor:
    return path.t_of_noise_level(_f64(sigma).reshape(())).clamp(path.t_min, path.t_max)


# ------------------------------------------------------------------------------------------------
# k-diffusion
# ------------------------------------------------------------------------------------------------


def _k_solver(fn_name: str, name: str, calls, twin=None, kwargs=None, note="") -> Solver:
    kwargs = kwargs or {}

    def run(setup: Setup, grid, x_T, oracle):
        k = peers.k_sampling()
        path = setup.path
        sigmas = grid.sigmas.clone()
        sigmas[-1] = 0.0 if float(grid.sigmas[-1]) == 0 else sigmas[-1]

        def denoiser(x, sigma, **_):
            t = _t_of_sigma(path, sigma.reshape(-1)[0])
            return oracle(x * _alpha(path, t), t)

        x = x_T / _alpha(path, grid.t[0])
        extra = dict(kwargs)
        if "eta" in extra:
            extra["noise_sampler"] = lambda s, s_next: torch.zeros_like(x)  # deterministic (eta = 0)
        out = getattr(k, fn_name)(denoiser, x, sigmas, disable=True, **extra)
        return out * _alpha(path, grid.t[-1]), float(grid.t[-1])

    return Solver("k-diffusion", name, run, calls, twin=twin or (lambda n: None), note=note)


def _k_dpm_fast() -> Solver:
    def run(setup: Setup, nfe: int, x_T, oracle):
        k = peers.k_sampling()
        path = setup.path
        s_max = float(path.noise_level(_f64(setup.t_start)))
        s_min = setup.sigma_min_positive

        def denoiser(x, sigma, **_):
            t = _t_of_sigma(path, sigma.reshape(-1)[0])
            return oracle(x * _alpha(path, t), t)

        x = x_T / _alpha(path, setup.t_start)
        out = k.sample_dpm_fast(denoiser, x, s_min, s_max, nfe, disable=True)
        t_end = _t_of_sigma(path, s_min)
        return out * _alpha(path, t_end), float(t_end)

    return Solver(
        "k-diffusion",
        "dpm_fast",
        run,
        lambda s, n: n,
        fixed_grid=True,
        note="DPM-Solver-fast (orders 3,...,3,2|1 on a log-SNR-uniform grid of its own); stops at "
        "sigma_min > 0, so it is compared with the reference at sigma_min",
    )


def k_solvers() -> list[Solver]:
    one = lambda s, n: n
    two = lambda s, n: 2 * n - 1
    return [
        _k_solver("sample_euler", "euler", one, twin=lambda n: "euler"),
        _k_solver("sample_heun", "heun", two, twin=lambda n: "heun"),
        _k_solver(
            "sample_dpm_2",
            "dpm_2",
            two,
            note="Euler to the geometric-mean sigma, then a midpoint step in sigma (not an exponential integrator)",
        ),
        _k_solver("sample_lms", "lms(order=3)", one, kwargs={"order": 3}, twin=lambda n: "lms-3"),
        _k_solver("sample_lms", "lms", one, kwargs={"order": 4}, note="order 4, the default"),
        _k_solver(
            "sample_dpmpp_2s_ancestral",
            "dpmpp_2s_ancestral(eta=0)",
            two,
            kwargs={"eta": 0.0},
            twin=lambda n: "dpmpp-2s",
        ),
        _k_solver("sample_dpmpp_2m", "dpmpp_2m", one, twin=lambda n: "dpmpp-2m"),
        _k_solver(
            "sample_dpmpp_2m_sde",
            "dpmpp_2m_sde(eta=0,heun)",
            one,
            kwargs={"eta": 0.0, "solver_type": "heun"},
            twin=lambda n: "dpmpp-2m-taylor",
        ),
        _k_solver("sample_dpmpp_3m_sde", "dpmpp_3m_sde(eta=0)", one, kwargs={"eta": 0.0}, twin=lambda n: K_3M.name),
        _k_dpm_fast(),
    ]


# ------------------------------------------------------------------------------------------------
# diffusers
# ------------------------------------------------------------------------------------------------

KSTYLE = {"EulerDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler"}


def _make_scheduler(cls_name: str, config: dict, native: bool):
    D = peers.diffusers_module()
    cls = getattr(D, cls_name)
    cfg = dict(num_train_timesteps=T_TRAIN, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear")
    if native:
        cfg["timestep_spacing"] = "trailing"
    cfg.update(config)
    return cls(**cfg)


def _final_sigma(final: str, grid, setup: Setup) -> Tensor:
    """The last noise level a diffusers scheduler steps to: 0 ("zero"), the last grid point again
    ("repeat": DEIS's zero-length final step) or the smallest training noise level ("sigma_min")."""
    if final == "zero":
        return grid.sigmas[-1]
    if final == "repeat":
        return grid.sigmas[-2]
    s = _f64(setup.sigma_min_positive)
    return s if float(s) < float(grid.sigmas[-2]) * (1 - 1e-9) else grid.sigmas[-2]


def _override(sched, cls_name: str, grid, path, last_sigma: Tensor) -> dict:
    """Replace the scheduler's timesteps and sigmas by the grid's; returns {timestep label: path time}."""
    N = grid.steps
    sig = grid.sigmas.clone()
    sig[-1] = last_sigma
    t = grid.t
    labels = torch.arange(N, 0, -1, dtype=torch.float64) * 10.0  # distinct labels, mapped to path times
    tmap = {float(labels[i]): t[i] for i in range(N)}
    ts_dtype, sg_dtype = sched.timesteps.dtype, sched.sigmas.dtype
    if cls_name == "HeunDiscreteScheduler":
        sched.sigmas = torch.cat([sig[:1], sig[1:-1].repeat_interleave(2), sig[-1:]]).to(sg_dtype)
        sched.timesteps = torch.cat([labels[:1], labels[1:].repeat_interleave(2)]).to(ts_dtype)
    elif cls_name == "KDPM2DiscreteScheduler":
        s = sig.to(sg_dtype)
        s_int = s.log().lerp(s.roll(1).log(), 0.5).exp()
        sched.sigmas = torch.cat([s[:1], s[1:].repeat_interleave(2), s[-1:]])
        sched.sigmas_interpol = torch.cat([s_int[:1], s_int[1:].repeat_interleave(2), s_int[-1:]])
        ilabels = labels - 5.0  # labels of the interpolated points
        for i in range(1, N):
            tmap[float(ilabels[i])] = _t_of_sigma(path, s_int[i].double())
        inter = torch.stack((ilabels[1:, None], labels[1:, None]), dim=-1).flatten()
        sched.timesteps = torch.cat([labels[:1], inter]).to(ts_dtype)
    else:
        if sched.timesteps.numel() != N or sched.sigmas.numel() != N + 1:
            raise RuntimeError(
                f"{cls_name}: unexpected layout {sched.timesteps.numel()} timesteps, "
                f"{sched.sigmas.numel()} sigmas for {N} steps"
            )
        sched.timesteps = labels.to(ts_dtype)
        sched.sigmas = sig.to(sg_dtype)
    return tmap


def _d_solver(
    cls_name: str,
    name: str,
    config: dict,
    calls,
    twin=None,
    native_only=False,
    note="",
    prediction="sample",
    native_ok=True,
    final="zero",
) -> Solver:
    config = dict(config)
    config.setdefault("prediction_type", prediction)
    if final == "sigma_min" and cls_name != "DEISMultistepScheduler":  # DEIS has no such option: it always does this
        config["final_sigmas_type"] = "sigma_min"

    def run(setup: Setup, grid, x_T, oracle):
        path = setup.path
        N = grid.steps
        native = setup.diffusers_native and native_ok
        sched = _make_scheduler(cls_name, config, native)
        sched.set_timesteps(N)
        last_sigma = _final_sigma(final, grid, setup)
        t_end = _t_of_sigma(path, last_sigma) if final != "zero" else grid.t[-1]
        if native:
            tmap = {float(v): _f64(float(v)) for v in sched.timesteps}
            if cls_name not in ("DDIMScheduler", "PNDMScheduler"):
                got = torch.unique_consecutive(sched.sigmas.double())  # Heun and KDPM2 repeat them
                want = grid.sigmas.to(got.dtype)
                want = want.clone()
                want[-1] = last_sigma
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
                    raise RuntimeError(
                        f"{cls_name}: diffusers' trailing sigmas differ from the odesolve grid: "
                        f"{got.tolist()} vs {want.tolist()}"
                    )
            if cls_name == "KDPM2DiscreteScheduler":  # interpolated timesteps are continuous
                tmap = {float(v): _f64(float(v)) for v in sched.timesteps}
        else:
            tmap = _override(sched, cls_name, grid, path, last_sigma)
        kstyle = cls_name in KSTYLE
        a0 = _alpha(path, grid.t[0])
        s0 = path.noise_level(grid.t[0])
        x = x_T / a0 if kstyle else x_T / a0 / torch.sqrt(1 + s0 * s0)
        pred = sched.config.prediction_type

        def model(x_in, timestep):
            t = tmap[float(timestep)]
            s = path.noise_level(t)
            a = _alpha(path, t)
            x_path = x_in * a * torch.sqrt(1 + s * s)
            x0 = oracle(x_path, t)
            if pred == "sample":
                return x0
            eps = (x_path - a * x0) / path.sigma(t)
            return eps

        for ts in sched.timesteps:
            inp = sched.scale_model_input(x, ts)
            out = model(inp, ts)
            x = sched.step(out, ts, x).prev_sample
        s_end = path.noise_level(t_end)
        a_end = _alpha(path, t_end)
        x_path = x * a_end if kstyle else x * a_end * torch.sqrt(1 + s_end * s_end)
        return x_path, float(t_end)

    supports = (lambda s: s.diffusers_native) if native_only else (lambda s: True)
    return Solver(
        "diffusers",
        name,
        run,
        calls,
        twin=twin or (lambda n: None),
        supports=supports,
        note=note,
        meta={"class": cls_name, "config": config},
    )


_NOISE_NOTE = (
    "eps prediction: diffusers refuses final_sigmas_type='zero' for it, so it stops at the "
    "smallest training noise level (or the last grid point) and is compared with the reference there"
)


def d_solvers() -> list[Solver]:
    one = lambda s, n: n
    two = lambda s, n: 2 * n - 1
    lof = lambda name: lambda n: odesolve_key(name, n < 15)
    D = "DPMSolverMultistepScheduler"
    S = "DPMSolverSinglestepScheduler"
    U = "UniPCMultistepScheduler"
    out = [
        _d_solver(
            "DDIMScheduler",
            "DDIM",
            {"set_alpha_to_one": True, "clip_sample": False},
            one,
            twin=lambda n: "ddim",
            native_only=True,
            note="steps to t - T//N (its own rule), so it runs natively on the trailing grid only",
        ),
        _d_solver(
            "PNDMScheduler",
            "PNDM(skip_prk_steps)",
            {"skip_prk_steps": True, "set_alpha_to_one": True},
            lambda s, n: n + 1,
            twin=lambda n: "plms",
            native_only=True,
            prediction="epsilon",
        ),
        _d_solver(
            D,
            "DPMSolverMultistep(dpmsolver++,1)",
            {"algorithm_type": "dpmsolver++", "solver_order": 1},
            one,
            twin=lambda n: "ddim",
        ),
        _d_solver(
            D,
            "DPMSolverMultistep(dpmsolver++,2)",
            {"algorithm_type": "dpmsolver++", "solver_order": 2},
            one,
            twin=lambda n: "dpmpp-2m",
        ),
        _d_solver(
            D,
            "DPMSolverMultistep(dpmsolver++,2,heun)",
            {"algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "heun"},
            one,
            twin=lambda n: "dpmpp-2m-taylor",
        ),
        _d_solver(
            D,
            "DPMSolverMultistep(dpmsolver++,3)",
            {"algorithm_type": "dpmsolver++", "solver_order": 3},
            one,
            twin=lof("dpmpp-3m"),
        ),
        _d_solver(
            D,
            "DPMSolverMultistep(dpmsolver,2)",
            {"algorithm_type": "dpmsolver", "solver_order": 2},
            one,
            prediction="epsilon",
            final="sigma_min",
            note=_NOISE_NOTE,
        ),
        _d_solver(
            D,
            "DPMSolverMultistep(dpmsolver,3)",
            {"algorithm_type": "dpmsolver", "solver_order": 3},
            one,
            prediction="epsilon",
            final="sigma_min",
            note=_NOISE_NOTE,
        ),
        _d_solver(
            S,
            "DPMSolverSinglestep(dpmsolver++,2)",
            {"algorithm_type": "dpmsolver++", "solver_order": 2},
            one,
            native_ok=False,
            note="stages at the grid points (r = step ratio), not at the log-SNR midpoint",
        ),
        _d_solver(
            S,
            "DPMSolverSinglestep(dpmsolver++,3)",
            {"algorithm_type": "dpmsolver++", "solver_order": 3},
            one,
            native_ok=False,
            note="stages at the grid points",
        ),
        _d_solver(
            S,
            "DPMSolverSinglestep(dpmsolver,3)",
            {"algorithm_type": "dpmsolver", "solver_order": 3},
            one,
            native_ok=False,
            note="stages at the grid points; " + _NOISE_NOTE,
            prediction="epsilon",
            final="sigma_min",
        ),
    ]
    for bh in ("bh1", "bh2"):
        for p in (1, 2, 3):
            out.append(
                _d_solver(
                    U,
                    f"UniPCMultistep({bh},{p})",
                    {"solver_type": bh, "solver_order": p, "predict_x0": True},
                    one,
                    twin=(lambda n, bh=bh, p=p: odesolve_key(f"unipc-{bh}-{p}", p >= 3)),
                )
            )
    for p in (1, 2, 3):
        out.append(
            _d_solver(
                "DEISMultistepScheduler",
                f"DEISMultistep({p})",
                {"solver_order": p},
                one,
                prediction="epsilon",
                final="sigma_min",
                note="diffusers' DEIS never steps to sigma = 0: it ends at the smallest training noise "
                "level (or the last grid point) and is compared with the reference there",
            )
        )
    out += [
        _d_solver("EulerDiscreteScheduler", "EulerDiscrete", {}, one, twin=lambda n: "euler"),
        _d_solver("HeunDiscreteScheduler", "HeunDiscrete", {}, two, twin=lambda n: "heun"),
        _d_solver("LMSDiscreteScheduler", "LMSDiscrete", {}, one, note="order 4, the default"),
        _d_solver(
            "KDPM2DiscreteScheduler", "KDPM2Discrete", {}, two, note="= k-diffusion's dpm_2", prediction="epsilon"
        ),
    ]
    return out


def all_solvers(libs=("odesolve", "diffusers", "k-diffusion")) -> list[Solver]:
    out = []
    if "odesolve" in libs:
        out += odesolve_solvers()
    if "k-diffusion" in libs and peers.k_sampling() is not None:
        out += k_solvers()
    if "diffusers" in libs and peers.diffusers_module() is not None:
        out += d_solvers()
    return out
