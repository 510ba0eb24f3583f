"""Run the benchmarks: ``python -m benchmarks.run --out benchmarks/results`` (``--smoke`` for a
seconds-long run with tiny sizes; ``--only accuracy,overhead,memory`` to pick parts).

Writes ``results.json``, ``results.md`` and ``accuracy.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

if __package__ in (None, ""):  # allow `python benchmarks/run.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

import torch

from benchmarks import peers, report


def _git_state(root):
    def git(*a):
        try:
            return subprocess.run(
                ["git", *a], cwd=root, capture_output=True, text=True, timeout=20, check=False
            ).stdout.strip()
        except Exception:
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "modified": bool(git("status", "--porcelain", "--untracked-files=no", "odesolve", "benchmarks")),
    }


def _clean(o):
    """JSON without NaN/Inf (written as strings)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else ("inf" if o > 0 else "-inf" if o < 0 else "nan")
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _restore(o):
    """Inverse of :func:`_clean` for the numbers written as strings."""
    if isinstance(o, str) and o in ("inf", "-inf", "nan"):
        return float(o)
    if isinstance(o, dict):
        return {k: _restore(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_restore(v) for v in o]
    return o


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds per part")
    ap.add_argument("--only", default="accuracy,overhead,memory")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared 2-core machine a parallel region waits for a "
        "descheduled thread, which quantises timings to the OS time slice)",
    )
    ap.add_argument("--device", default="cpu", help="device of the overhead part (cpu, cuda)")
    ap.add_argument("--report-only", action="store_true", help="rewrite results.md and the plot from results.json")
    args = ap.parse_args(argv)
    if args.report_only:
        with open(os.path.join(args.out, "results.json")) as f:
            results = _restore(json.load(f))
        results["headline"] = report.headline(results)
        _write(results, args.out)
        return results
    parts = set(args.only.split(","))
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    t_all = time.perf_counter()
    results = {"smoke": args.smoke, "git": _git_state(root)}
    previous = os.path.join(args.out, "results.json")
    if parts != {"accuracy", "overhead", "memory"} and os.path.isfile(previous):
        with open(previous) as f:  # a partial run updates only its parts
            old = json.load(f)
        results.update({k: old[k] for k in ("accuracy", "overhead", "memory") if k in old and k not in parts})
        results = _restore(results)
    if "accuracy" in parts:
        from .accuracy import run_accuracy

        t0 = time.perf_counter()
        if args.smoke:
            keep = {
                "odesolve:ddim",
                "odesolve:dpmpp-2m",
                "odesolve:heun",
                "odesolve:unipc-bh2-2",
                "odesolve:dpmpp-3m[lof]",
                "k-diffusion:dpmpp_2m",
                "k-diffusion:heun",
                "k-diffusion:euler",
                "odesolve:euler",
                "diffusers:DPMSolverMultistep(dpmsolver++,2)",
                "diffusers:DPMSolverMultistep(dpmsolver++,3)",
                "diffusers:UniPCMultistep(bh2,2)",
                "diffusers:HeunDiscrete",
            }
            results["accuracy"] = run_accuracy(
                problems=("gmm2d",),
                setup_keys=["edm-karras", "vp-trailing"],
                nfes=(5, 10),
                samples={"gmm2d": 64},
                rtol=1e-8,
                only=lambda k: k in keep,
            )
        else:
            results["accuracy"] = run_accuracy()
        results["accuracy"]["seconds"] = time.perf_counter() - t0
        results["accuracy"]["git"] = results["git"]  # each part names the commit it was measured at
    if "overhead" in parts:
        from .overhead import SHAPES, run_overhead

        t0 = time.perf_counter()
        if args.smoke:
            results["overhead"] = run_overhead(
                shapes=[(1, 2), (4, 3, 8, 8)], families=("dpmpp-2m", "euler"), device=args.device, reps=3
            )
        else:
            results["overhead"] = run_overhead(shapes=SHAPES, device=args.device)
        results["overhead"]["seconds"] = time.perf_counter() - t0
        results["overhead"]["git"] = results["git"]  # each part names the commit it was measured at
        results["overhead"]["threads"] = args.threads
    if "memory" in parts:
        from .memory import run_memory

        t0 = time.perf_counter()
        if sys.platform.startswith("linux"):
            if args.smoke:
                results["memory"] = run_memory(libs=("odesolve",), families=("dpmpp-2m",), shape=(16, 4, 64, 64))
            else:
                results["memory"] = run_memory()
            results["memory"]["seconds"] = time.perf_counter() - t0
            results["memory"]["git"] = results["git"]
        else:
            results["notes_memory"] = "memory part needs Linux /proc"
    results["environment"] = peers.versions()
    results["notes"] = peers.notes()
    results["headline"] = report.headline(results)
    results["seconds"] = time.perf_counter() - t_all
    _write(results, args.out)
    print(
        f"[benchmarks] done in {results['seconds']:.0f} s; wrote {args.out}/results.json, results.md"
        + (", accuracy.png" if "accuracy" in results else "")
    )
    return results


def _write(results, out):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(_clean(results), f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(report.markdown(results))
    if "accuracy" in results:
        try:
            report.plot_accuracy(results["accuracy"], os.path.join(out, "accuracy.png"))
        except ImportError as err:
            print(f"[benchmarks] note: no plot ({err})")


if __name__ == "__main__":
    main()
