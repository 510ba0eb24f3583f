"""Peak extra memory of a sampling run beyond the model, odesolve against the peers (CPU).

Method. tracemalloc does not see torch's allocations and torch has no allocator statistics for
CPU tensors, so the benchmark reads the operating system's counters: each library is measured in a
fresh subprocess started with ``MALLOC_MMAP_THRESHOLD_=65536``, which makes glibc serve every large
tensor with its own ``mmap`` and give it back on ``free`` (no dynamic threshold, no heap caching).
Resident memory then follows the live tensor bytes closely. Before each run (everything prepared:
plan compiled, scheduler set, input and model output allocated) the peak counter is reset
(``echo 5 > /proc/self/clear_refs``); after the run the peak ``VmHWM`` minus the resident size before
it is the run's peak extra memory. The shape is large (64 x 4 x 128 x 128 float32: 16.8 MB per
tensor), so the few hundred kB of Python and allocator noise are < 0.05 tensor; results are given in
MB and in units of one state tensor.

The model returns a fresh tensor per call (a copy of a template, as a network would): the tensor it
returns is the model's; everything else alive at the peak is the sampler's (its state, history of
outputs, temporaries and the returned sample). "beyond the model" = peak - 1 tensor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

__all__ = ["run_memory"]

SHAPE = (64, 4, 128, 128)


def _status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0]) * 1024
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure_lib(lib: str, families, shape) -> list[dict]:
    import gc

    import torch

    torch.set_num_threads(1)
    from .overhead import _runners

    rows = []
    for fam in families:
        runners, plan = _runners(fam, shape, torch.device("cpu"), torch.float32, fresh=True, libs=(lib,))
        if lib not in runners:
            continue
        fn, counter = runners[lib][0]()
        fn()  # warm-up (lazy initialisation, caches)
        fn, counter = runners[lib][0]()  # a fresh run (a diffusers scheduler is consumed by its run)
        template = counter.out
        gc.collect()
        res = None
        if not _reset_peak():
            rows.append({"lib": lib, "family": fam, "error": "cannot reset VmHWM"})
            continue
        before = _status()["VmRSS"]
        res = fn()
        st = _status()
        del res
        nbytes = template.numel() * template.element_size()
        peak = st["VmHWM"] - before
        rows.append(
            {
                "lib": lib,
                "family": fam,
                "shape": list(shape),
                "tensor_MB": nbytes / 1e6,
                "peak_extra_MB": peak / 1e6,
                "peak_extra_tensors": peak / nbytes,
                "beyond_model_tensors": peak / nbytes - 1.0,
                "window": plan.window,
            }
        )
        gc.collect()
    return rows


def run_memory(
    libs=("odesolve", "k-diffusion", "diffusers"), families=None, shape=SHAPE, log=print, timeout=900
) -> dict:
    from .overhead import FAMILIES

    families = list(families or FAMILIES)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    rows, errors = [], []
    for lib in libs:
        cmd = [sys.executable, "-m", "benchmarks.memory", lib, ",".join(families), ",".join(map(str, shape))]
        try:
            p = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            errors.append(f"{lib}: timed out")
            continue
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            errors.append(f"{lib}: exit {p.returncode}: {p.stderr.strip()[-500:]}")
            continue
        got = json.loads(lines[-1])["rows"]
        rows += got
        for r in got:
            if "peak_extra_tensors" in r:
                log(
                    f"[memory] {lib:16s} {r['family']:12s} peak extra {r['peak_extra_MB']:8.1f} MB = "
                    f"{r['peak_extra_tensors']:5.2f} tensors (beyond the model {r['beyond_model_tensors']:5.2f})"
                )
    return {
        "rows": rows,
        "errors": errors,
        "shape": list(shape),
        "method": "VmHWM - VmRSS per run in a subprocess with MALLOC_MMAP_THRESHOLD_=65536 (see module docstring)",
    }


if __name__ == "__main__":
    lib, fams, shp = sys.argv[1], sys.argv[2].split(","), tuple(int(v) for v in sys.argv[3].split(","))
    out = _measure_lib(lib, fams, shp)
    print(json.dumps({"rows": out}))
