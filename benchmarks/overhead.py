"""Per-step overhead outside the model, odesolve against diffusers and k-diffusion, and the floor.

The model returns a precomputed tensor (no arithmetic), so the time of a sampling run divided by its
model calls (counted) is the sampler's own cost per step: coefficient arithmetic, Python dispatch,
tensor traffic of the update. All libraries run the same method on the same EDM Karras grid (N = 10
steps, sigma 80 -> 0.002 -> 0) in float32 on one device. Timings are interleaved: every repetition
runs each library once, in rotating order, in the same process, so that slow phases of a shared
machine hit all of them; ratios are formed per repetition (paired) and summarised by the median and
the interquartile range.

Two timings per run:

- ``loop``: one sampling call on a grid built beforehand: odesolve's ``sample(model, x, grid,
  method)`` (``odesolve``; its plan and prepared program come from the caches a repeated call
  hits) and a :class:`~odesolve.Sampler` prepared once (``odesolve(Sampler)``), k-diffusion's
  ``sample_*`` on precomputed sigmas, diffusers' ``scale_model_input``/``step`` loop on a scheduler
  whose ``set_timesteps`` already ran (a fresh deep copy per run, made outside the timing);
- ``with_setup``: also the grid (odesolve's ``grids.karras``), diffusers' construction and
  ``set_timesteps``, k-diffusion's ``get_sigmas_karras``.

The floor: an update ``x <- a x + sum_j b_j F_j`` must read the tensors it combines and write one;
a stage input likewise. From the plan, ``passes`` = tensors read + written per model call, averaged
over the calls (4 for DPM-Solver++(2M): x, F_k, F_k-1 read, x written). The floor per step is
``max(t_launch, passes / 3 * t_add)``, where ``t_add`` is the measured time of ``torch.add(a, b,
out=c)`` at that shape (one fused kernel streaming 3 tensors from main memory: the operands rotate
through a pool larger than the last-level cache, because in a sampler the model call between two
updates evicts them; launch included) and ``t_launch`` that of the same op on a 2-element tensor. The copy
bandwidth (``dst.copy_(src)``) is reported as well.
"""

from __future__ import annotations

import copy
import math
import statistics
import time

import torch

import odesolve as ods
from odesolve import grids
from odesolve.paths import EDM

from . import peers

__all__ = ["FAMILIES", "SHAPES", "plan_passes", "run_overhead"]

SHAPES = [(1, 2), (4096, 2), (16, 3, 64, 64), (64, 4, 128, 128)]
STEPS = 10

# method family -> {library: (name, options)}
FAMILIES = {
    "euler": {
        "odesolve": ("euler", {}),
        "k-diffusion": ("sample_euler", {}),
        "diffusers": ("EulerDiscreteScheduler", {}),
    },
    "heun": {"odesolve": ("heun", {}), "k-diffusion": ("sample_heun", {}), "diffusers": ("HeunDiscreteScheduler", {})},
    "dpmpp-2m": {
        "odesolve": ("dpmpp-2m", {}),
        "k-diffusion": ("sample_dpmpp_2m", {}),
        "diffusers": ("DPMSolverMultistepScheduler", {"solver_order": 2}),
    },
    "dpmpp-3m": {
        "odesolve": ("dpmpp-3m", {"lower_order_final": True}),
        "k-diffusion": ("sample_dpmpp_3m_sde", {"eta": 0.0}),
        "diffusers": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    },
    "unipc-bh2-3": {
        "odesolve": ("unipc-bh2-3", {"lower_order_final": True}),
        "diffusers": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"}),
    },
}


def plan_passes(plan) -> float:
    """Tensors read + written per model call by the plan's state updates and stage inputs (average)."""
    total = 0
    for k in range(plan.calls):
        up_nnz = int((plan.update_hist[k] != 0).sum())
        if bool(plan.update_state[k] != 1) or up_nnz or bool(plan.update_noise[k] != 0):
            total += (1 if bool(plan.update_state[k] != 0) else 0) + up_nnz + 1
        in_nnz = int((plan.input_hist[k] != 0).sum())
        if in_nnz or bool(plan.input_state[k] != 1):
            total += (1 if bool(plan.input_state[k] != 0) else 0) + in_nnz + 1
    return total / plan.calls


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn, device, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def measure_floor(shape, device, dtype=torch.float32, reps: int = 20, pool_bytes: float = 96e6) -> dict:
    """Times of one streaming kernel at ``shape``. The operands rotate through a pool of at least
    ``pool_bytes`` (more than the last-level cache), so that, as in a sampler whose model call
    evicts the caches between two updates, every operand comes from main memory."""
    a0 = torch.empty(shape, device=device, dtype=dtype)
    nbytes = a0.numel() * a0.element_size()
    P = max(1, math.ceil(pool_bytes / (3 * nbytes))) if nbytes >= 4096 else 1
    pool = [tuple(torch.randn(shape, device=device, dtype=dtype) for _ in range(3)) for _ in range(P)]
    tiny = torch.randn(2, device=device, dtype=dtype)
    tc = torch.empty_like(tiny)
    it = [0]

    def add():
        a, b, c = pool[it[0] % P]
        it[0] += 1
        torch.add(a, b, out=c)

    def cp():
        a, _, c = pool[it[0] % P]
        it[0] += 1
        c.copy_(a)

    for _ in range(P):
        add()
    t_add = statistics.median(_timeit(add, device, max(reps, 2 * P)))
    t_copy = statistics.median(_timeit(cp, device, max(reps, 2 * P)))
    t_launch = statistics.median(_timeit(lambda: torch.add(tiny, tiny, out=tc), device, max(reps, 50)))
    return {
        "t_add": t_add,
        "t_copy": t_copy,
        "t_launch": t_launch,
        "bytes": nbytes,
        "bw_add_GBps": 3 * nbytes / t_add / 1e9,
        "bw_copy_GBps": 2 * nbytes / t_copy / 1e9,
    }


def floor_per_step(passes: float, fl: dict) -> float:
    return max(fl["t_launch"], passes / 3.0 * fl["t_add"])


class _Const:
    """The model: returns a precomputed tensor (or, with ``fresh``, a new copy of it, as a network
    allocates its output), counting calls."""

    def __init__(self, out, fresh: bool = False):
        self.out, self.n, self.fresh = out, 0, fresh

    def __call__(self, x, t, *args, **kwargs):
        self.n += 1
        return self.out.clone() if self.fresh else self.out


def _runners(family: str, shape, device, dtype, fresh: bool = False, libs=None):
    """{library: (prepare_loop, prepare_with_setup)}; each prepare returns (fn, counter)."""
    spec = FAMILIES[family]
    path = EDM()
    grid = grids.karras(path, steps=STEPS, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    sig64 = grid.sigmas
    g = torch.Generator(device="cpu").manual_seed(0)
    x = (80.0 * torch.randn(shape, generator=g, dtype=dtype)).to(device)
    out = (0.5 * torch.randn(shape, generator=g, dtype=dtype)).to(device)
    out_ = {}

    name, opts = spec["odesolve"]
    method = ods.methods.get(name)
    plan = method.compile(path, grid, **opts)

    def ods_loop():
        c = _Const(out, fresh)
        model = ods.Model(c, path, "x0")
        return (lambda: ods.sample(model, x, grid, method, **opts)), c

    def ods_setup():
        c = _Const(out, fresh)
        model = ods.Model(c, path, "x0")

        def run():
            g = grids.karras(path, steps=STEPS, sigma_min=0.002, sigma_max=80.0, rho=7.0)
            return ods.sample(model, x, g, method, **opts)

        return run, c

    out_["odesolve"] = (ods_loop, ods_setup)

    def sampler_loop():  # prepared once for the shape and reused
        c = _Const(out, fresh)
        smp = ods.Sampler(ods.Model(c, path, "x0"), grid, method, shape=shape, dtype=dtype, device=device, **opts)
        return (lambda: smp(x)), c

    out_["odesolve(Sampler)"] = (sampler_loop, None)

    want = lambda lib: libs is None or lib in libs
    k = peers.k_sampling() if want("k-diffusion") and "k-diffusion" in spec else None
    if k is not None:
        fname, kopts = spec["k-diffusion"]
        sig = sig64.to(device, dtype)

        def k_loop():
            c = _Const(out, fresh)
            extra = dict(kopts)
            if "eta" in extra:
                extra["noise_sampler"] = lambda s, sn: None
            return (lambda: getattr(k, fname)(c, x, sig, disable=True, **extra)), c

        def k_setup():
            c = _Const(out, fresh)
            extra = dict(kopts)
            if "eta" in extra:
                extra["noise_sampler"] = lambda s, sn: None

            def run():
                s = k.get_sigmas_karras(STEPS, 0.002, 80.0, 7.0, device=device).to(dtype)
                return getattr(k, fname)(c, x, s, disable=True, **extra)

            return run, c

        out_["k-diffusion"] = (k_loop, k_setup)

    D = peers.diffusers_module() if want("diffusers") and "diffusers" in spec else None
    if D is not None:
        from .solvers import _override

        cls_name, dopts = spec["diffusers"]
        cls = getattr(D, cls_name)
        cfg = dict(num_train_timesteps=1000, beta_schedule="linear", prediction_type="sample", **dopts)
        base = cls(**cfg)
        base.set_timesteps(STEPS, device=device)
        _override(base, cls_name, grid, path, grid.sigmas[-1])
        base.timesteps = base.timesteps.to(device)
        kstyle = cls_name in ("EulerDiscreteScheduler", "HeunDiscreteScheduler")
        x_d = x if kstyle else x / (1 + 80.0**2) ** 0.5

        def loop(sched, c):
            xs = x_d
            for ts in sched.timesteps:
                inp = sched.scale_model_input(xs, ts)
                xs = sched.step(c(inp, ts), ts, xs).prev_sample
            return xs

        def d_loop():
            c = _Const(out, fresh)
            sched = copy.deepcopy(base)
            return (lambda: loop(sched, c)), c

        def d_setup():
            c = _Const(out, fresh)

            def run():
                sched = cls(**cfg)
                sched.set_timesteps(STEPS, device=device)
                return loop(sched, c)

            return run, c

        out_["diffusers"] = (d_loop, d_setup)
    return out_, plan


def run_overhead(
    shapes=SHAPES, families=tuple(FAMILIES), device="cpu", dtype=torch.float32, reps=None, with_setup=True, log=print
) -> dict:
    """Interleaved timings; returns a JSON-able dict (see the module docstring)."""
    device = torch.device(device)
    rows, floors = [], {}
    for shape in shapes:
        numel = 1
        for s in shape:
            numel *= s
        r = reps or (40 if numel <= 16384 else 12 if numel <= 1 << 20 else 5)
        fl = measure_floor(shape, device, dtype)
        floors[str(shape)] = fl
        for fam in families:
            runners, plan = _runners(fam, shape, device, dtype)
            passes = plan_passes(plan)
            libs = list(runners)
            setup_too = with_setup and numel <= (1 << 20)  # setup costs matter where steps are cheap
            for mode in ("loop", "with_setup") if setup_too else ("loop",):
                idx = 0 if mode == "loop" else 1
                active = [lib for lib in libs if runners[lib][idx] is not None]
                times = {lib: [] for lib in active}
                nfe = {}
                for lib in active:  # warm-up (also counts the model calls)
                    fn, c = runners[lib][idx]()
                    fn()
                    nfe[lib] = c.n
                for rep in range(r):
                    order = active[rep % len(active) :] + active[: rep % len(active)]
                    for lib in order:
                        fn, c = runners[lib][idx]()
                        _sync(device)
                        t0 = time.perf_counter()
                        fn()
                        _sync(device)
                        times[lib].append((time.perf_counter() - t0) / nfe[lib])
                med = {lib: statistics.median(v) for lib, v in times.items()}
                peers_ = [lib for lib in active if lib in ("diffusers", "k-diffusion")]
                fastest = min(peers_, key=lambda lib: med[lib]) if peers_ else None
                for lib in active:
                    v = sorted(times[lib])
                    row = {
                        "shape": list(shape),
                        "family": fam,
                        "mode": mode,
                        "lib": lib,
                        "nfe": nfe[lib],
                        "reps": r,
                        "per_step_s": med[lib],
                        "p25": _q(v, 0.25),
                        "p75": _q(v, 0.75),
                        "min": v[0],
                        "max": v[-1],
                        "passes": passes,
                        "floor_per_step_s": floor_per_step(passes, fl),
                        "device": str(device),
                    }
                    row["vs_floor"] = med[lib] / row["floor_per_step_s"]
                    if fastest is not None and lib not in peers_:
                        ratios = sorted(a / b for a, b in zip(times[lib], times[fastest]))
                        row.update(
                            fastest_peer=fastest,
                            ratio_vs_fastest_peer=statistics.median(ratios),
                            ratio_p25=_q(ratios, 0.25),
                            ratio_p75=_q(ratios, 0.75),
                        )
                    rows.append(row)
                if mode == "loop":
                    msg = " ".join(f"{lib}={med[lib] * 1e6:9.1f}us" for lib in active)
                    log(
                        f"[overhead] {shape!s:18s} {fam:12s} per step: {msg}  floor="
                        f"{floor_per_step(passes, fl) * 1e6:8.1f}us"
                    )
    return {"rows": rows, "floors": floors, "steps": STEPS, "dtype": str(dtype), "device": str(device)}


def _q(v, q):
    if not v:
        return float("nan")
    i = q * (len(v) - 1)
    lo = int(i)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)
