"""The GPU path of odesolve, checked in one run: results to ``$OUT/gpu_check.json``.

    OUT=/tmp/out python scripts/gpu_check.py            # from the repository root; about 5 minutes
    OUT=/tmp/out python scripts/gpu_check.py --budget 420 --skip overhead

Parts, in order (each one is timed, recorded and written to the JSON file as soon as it ends, so a
run stopped by a time limit keeps what it finished; a part that fails records its error and the
run goes on; a part is skipped when less than its estimate is left of ``--budget`` seconds):

- ``env``: torch, CUDA, the GPUs, the peers' versions.
- ``cpu_vs_cuda``: the digits network, 1024 samples, dpmpp-3m (ODE) and dpmpp-2m-sde (per-sample
  Brownian noise) at NFE 10, float32, on the CPU and on CUDA: the initial noise and the samples
  agree to ``1e-3`` (max abs, pixels in [-1, 1]; float32 kernels differ in rounding only).
- ``cuda_graph``: :class:`odesolve.Sampler` with ``capture="cuda-graph"`` on two different batches
  (the second replays the graph) against eager :func:`odesolve.execute`: max abs difference at
  most ``1e-5``; per call, the profiler's count of graph launches (target: one per batch) and of
  host synchronisations (target: at most one per batch, the final finiteness check).
- ``dtypes``: the network in float16 / bfloat16 (state float32, as ``odesolve sample --dtype``), and
  state and network both in it, against float32 on CUDA. Stated tolerance (calibrated on the CPU:
  float16 RMS 0.0013, bfloat16 RMS 0.016): RMS error at most 0.005 (float16) and 0.03 (bfloat16),
  and the digits classifier's class agrees with float32's for at least 95 % (float16) and 90 %
  (bfloat16) of the samples.
- ``throughput``: samples per second of the digits network at batch 1024, NFE 10 (dpmpp-3m):
  eager, CUDA graph, and ``torch.compile`` when time allows.
- ``nccl``: ``torchrun --nproc-per-node G -m odesolve sample --device cuda`` with G = every GPU
  (NCCL; one GPU is a group of one) against one process without torchrun: the same
  ``samples.npz`` bytes.
- ``overhead``: ``benchmarks/overhead.py`` on CUDA: per-step cost outside the model of odesolve
  against diffusers and k-diffusion (a peer that is not installed is skipped with a note); target:
  at most 0.5x the fastest peer.

Without CUDA the run records ``env`` (and the CPU references), prints ``no CUDA: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

import odesolve as ods
from odesolve import distributed
from odesolve.commands.sample import make_grid, steps_for_nfe
from odesolve.execute import execute
from odesolve.toy import zoo

N, BATCH, NFE = 1024, 1024, 10
SHAPE = (1, 8, 8)
TOL = {"cpu_vs_cuda": 1e-3, "graph": 1e-5, "rms": {"float16": 5e-3, "bfloat16": 3e-2}}
AGREE = {"float16": 0.95, "bfloat16": 0.90}


class NoCuda(RuntimeError):
    pass


def plan_of(model, method: str, nfe: int = NFE):
    m = ods.methods.get(method)
    return m.compile(model.path, make_grid(model.path, steps_for_nfe(model.path, m, nfe)))


def run_batches(model, plan, device, n=N, dtype=torch.float32, seed=0):
    """Samples 0 .. n - 1 by the per-sample rule, in batches of BATCH, as float32 on the CPU."""
    out = []
    with torch.inference_mode():
        for start in range(0, n, BATCH):
            stop = min(n, start + BATCH)
            x = distributed.initial_noise(seed, start, stop, SHAPE, torch.float32, device).to(dtype)
            x0 = execute(plan, model, x, noise=distributed.noise_source(plan, seed, start, stop))
            out.append(x0.float().cpu())
    return torch.cat(out)


def diff(a, b) -> dict:
    e = (a.double() - b.double()).abs()
    return {"max_abs": float(e.max()), "rms": float(e.pow(2).mean().sqrt()), "bit_equal": bool(torch.equal(a, b))}


def need_cuda():
    if not torch.cuda.is_available():
        raise NoCuda("torch.cuda.is_available() is False")


def sync():
    torch.cuda.synchronize()


# -- parts -----------------------------------------------------------------------------------------


def part_env(ctx):
    out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "python": sys.version.split()[0]}
    out["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        out["nccl"] = str(torch.cuda.nccl.version()) if hasattr(torch.cuda, "nccl") else None
    try:
        from benchmarks import peers

        out["peers"] = peers.versions()
        out["peer_notes"] = peers.notes()
    except Exception as err:
        out["peers"] = f"not loaded: {err!r}"
    return out


def part_cpu_vs_cuda(ctx):
    model_cpu = ctx["model_cpu"]
    refs = ctx.setdefault("cpu_refs", {})
    for method in ("dpmpp-3m", "dpmpp-2m-sde"):
        if method not in refs:
            refs[method] = run_batches(model_cpu, plan_of(model_cpu, method), "cpu")
    need_cuda()
    dev = torch.device("cuda")
    model = zoo.load("digits", device=dev)
    out = {"tolerance_max_abs": TOL["cpu_vs_cuda"]}
    x_cpu = distributed.initial_noise(0, 0, N, SHAPE)
    out["initial_noise"] = diff(distributed.initial_noise(0, 0, N, SHAPE, device=dev).cpu(), x_cpu)
    ok = out["initial_noise"]["max_abs"] <= 1e-6
    for method, ref in refs.items():
        out[method] = diff(run_batches(model, plan_of(model, method), dev), ref)
        ok &= out[method]["max_abs"] <= TOL["cpu_vs_cuda"]
    out["ok"] = bool(ok)
    return out


def _profile_counts(fn) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    counts = {}
    for e in prof.events():
        name = e.name
        if name in ("cudaGraphLaunch", "cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"):
            counts[name] = counts.get(name, 0) + 1
        elif name.startswith("cudaMemcpy") or name.startswith("cudaLaunchKernel"):
            counts[name] = counts.get(name, 0) + 1
    return counts


def part_cuda_graph(ctx):
    need_cuda()
    dev = torch.device("cuda")
    model = zoo.load("digits", device=dev)
    plan = plan_of(model, "dpmpp-3m")
    shape = (BATCH, *SHAPE)
    sampler = ods.Sampler(model, plan.grid, plan, shape=shape, device=dev, capture="cuda-graph")
    out = {"tolerance_max_abs": TOL["graph"]}
    ok = True
    with torch.inference_mode():
        for k, seed in enumerate((0, 1)):  # the first call captures, the second replays
            x = distributed.initial_noise(seed, 0, BATCH, SHAPE, device=dev)
            got = sampler(x).clone()
            ref = execute(plan, model, x)
            out[f"call{k}"] = diff(got, ref)
            ok &= out[f"call{k}"]["max_abs"] <= TOL["graph"]
        x = distributed.initial_noise(2, 0, BATCH, SHAPE, device=dev)
        out["per_replay"] = _profile_counts(lambda: sampler(x))
        out["per_eager_call"] = _profile_counts(lambda: execute(plan, model, x))
    out["graph_launches_per_batch"] = out["per_replay"].get("cudaGraphLaunch", 0)
    syncs = sum(v for k, v in out["per_replay"].items() if k.endswith("Synchronize"))
    out["host_syncs_per_batch"] = syncs
    out["one_launch_per_batch"] = out["graph_launches_per_batch"] == 1
    out["ok"] = bool(ok)
    return out


def part_dtypes(ctx):
    need_cuda()
    from odesolve.toy import metrics

    dev = torch.device("cuda")
    clf, _, _ = metrics.digits_classifier(seed=0)
    plan32 = plan_of(zoo.load("digits"), "dpmpp-3m")
    ref = run_batches(zoo.load("digits", device=dev), plan32, dev)
    with torch.inference_mode():
        classes = clf.probabilities(ref).argmax(1)
    out = {"tolerance_rms": TOL["rms"], "class_agreement_at_least": AGREE}
    ok = True
    for name, dt in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        model = zoo.load("digits", device=dev, dtype=dt)
        for state in ("float32", name):
            try:
                got = run_batches(model, plan32, dev, dtype=torch.float32 if state == "float32" else dt)
            except Exception as err:
                out[f"{name}_net_{state}_state"] = {"error": repr(err)[:400]}
                ok = False
                continue
            with torch.inference_mode():
                agree = float((clf.probabilities(got).argmax(1) == classes).double().mean())
            r = {**diff(got, ref), "class_agreement": agree, "finite": bool(torch.isfinite(got).all())}
            r["ok"] = r["finite"] and r["rms"] <= TOL["rms"][name] and agree >= AGREE[name]
            out[f"{name}_net_{state}_state"] = r
            ok &= r["ok"]
    out["ok"] = bool(ok)
    return out


def _rate(fn, batches=20) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(batches):
        fn()
    sync()
    return batches * BATCH / (time.perf_counter() - t0)


def part_throughput(ctx):
    need_cuda()
    dev = torch.device("cuda")
    model = zoo.load("digits", device=dev)
    plan = plan_of(model, "dpmpp-3m")
    x = distributed.initial_noise(0, 0, BATCH, SHAPE, device=dev)
    out = {"batch": BATCH, "nfe": plan.calls, "method": "dpmpp-3m", "gpu": torch.cuda.get_device_name(0)}
    with torch.inference_mode():
        out["eager_samples_per_s"] = _rate(lambda: execute(plan, model, x))
        graph = ods.Sampler(model, plan.grid, plan, shape=x.shape, device=dev, capture="cuda-graph")
        out["cuda_graph_samples_per_s"] = _rate(lambda: graph(x))
        per_batch = BATCH / out["cuda_graph_samples_per_s"]
        out["cuda_graph_ms_per_batch"] = 1e3 * per_batch
        if ctx["left"]() > 150:
            t0 = time.perf_counter()
            compiled = ods.Sampler(model, plan.grid, plan, shape=x.shape, device=dev, capture="compile")
            compiled(x)
            out["compile_seconds"] = time.perf_counter() - t0
            out["compile_samples_per_s"] = _rate(lambda: compiled(x))
        else:
            out["compile_samples_per_s"] = "skipped: not enough time left"
    return out


def part_nccl(ctx):
    need_cuda()
    gpus = torch.cuda.device_count()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    n = 8 * BATCH
    common = ["sample", "--device", "cuda", "--samples", str(n), "--batch", str(BATCH), "--nfe", str(NFE)]
    common += ["--method", "dpmpp-2m-sde", "--no-progress"]
    out = {"gpus": gpus, "samples": n}
    with tempfile.TemporaryDirectory() as d:
        one = subprocess.run(
            [sys.executable, "-m", "odesolve", *common, "--out", f"{d}/one"],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
            check=False,
        )
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus), "-m", "odesolve"]
        many = subprocess.run(
            [*launcher, *common, "--out", f"{d}/many"],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
            check=False,
        )
        out["single_process_rc"], out["torchrun_rc"] = one.returncode, many.returncode
        if one.returncode or many.returncode:
            out["stderr_tail"] = (one.stderr[-1500:], many.stderr[-1500:])
            out["ok"] = False
            return out
        a, b = (hashlib.sha256(Path(f"{d}/{k}/samples.npz").read_bytes()).hexdigest() for k in ("one", "many"))
        out["same_bytes"] = a == b
        out["stdout"] = many.stdout.strip()[-300:]
        out["ok"] = a == b
    return out


def part_overhead(ctx):
    need_cuda()
    from benchmarks.overhead import run_overhead

    res = run_overhead(
        shapes=[(1, 2), (16, 3, 64, 64), (64, 4, 128, 128)],
        families=("euler", "dpmpp-2m"),
        device="cuda",
        reps=15,
        with_setup=False,
        log=lambda m: print(m, file=sys.stderr),
    )
    summary = []
    for row in res["rows"]:
        if "ratio_vs_fastest_peer" in row:
            summary.append(
                {
                    k: row[k]
                    for k in ("shape", "family", "lib", "per_step_s", "fastest_peer", "ratio_vs_fastest_peer")
                    if k in row
                }
            )
    worst = max((r["ratio_vs_fastest_peer"] for r in summary), default=None)
    return {"summary": summary, "worst_ratio_vs_fastest_peer": worst, "target": 0.5, "rows": res["rows"]}


PARTS = [  # name, function, estimated seconds
    ("env", part_env, 5),
    ("cpu_vs_cuda", part_cpu_vs_cuda, 40),
    ("cuda_graph", part_cuda_graph, 20),
    ("dtypes", part_dtypes, 30),
    ("throughput", part_throughput, 40),
    ("nccl", part_nccl, 90),
    ("overhead", part_overhead, 120),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=450, help="seconds for the whole run (default 450)")
    ap.add_argument("--skip", nargs="*", default=[], choices=[p[0] for p in PARTS], help="parts not to run")
    args = ap.parse_args(argv)
    out_dir = Path(os.environ.get("OUT") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    file = out_dir / "gpu_check.json"
    t_start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - t_start)
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget, "parts": {}}
    ctx = {"model_cpu": zoo.load("digits"), "left": left}
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    for name, fn, estimate in PARTS:
        if name in args.skip:
            results["parts"][name] = {"skipped": "--skip"}
            continue
        if left() < estimate:
            results["parts"][name] = {"skipped": f"{left():.0f} s left of the budget, about {estimate} s needed"}
            continue
        t0 = time.perf_counter()
        try:
            r = fn(ctx)
        except NoCuda as err:
            r = {"skipped": f"no CUDA: {err}"}
        except Exception as err:
            r = {"error": repr(err)[:500], "traceback": traceback.format_exc()[-3000:], "ok": False}
        r["seconds"] = round(time.perf_counter() - t0, 2)
        results["parts"][name] = r
        results["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        file.write_text(json.dumps(results, indent=1, default=str))
        status = (
            "ok" if r.get("ok", True) and "error" not in r and "skipped" not in r else (r.get("skipped") or "FAILED")
        )
        print(f"[gpu_check] {name}: {status} ({r['seconds']} s)", file=sys.stderr)
    file.write_text(json.dumps(results, indent=1, default=str))
    print(f"[gpu_check] wrote {file}", file=sys.stderr)
    if not torch.cuda.is_available():
        print("no CUDA: torch.cuda.is_available() is False; only the CPU-side parts ran", file=sys.stderr)
        return 2
    failed = [k for k, r in results["parts"].items() if r.get("ok") is False or "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
