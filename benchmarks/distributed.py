"""Overhead of the distributed driver beyond the sampling itself (one process, CPU).

    python -m benchmarks.distributed                 # n = 10000, digits, dpmpp-3m at NFE 10, batch 1024
    python -m benchmarks.distributed --n 2000 --reps 1

``sampling``: the bare loop over the same batches (each batch's initial noise by the per-sample rule,
``execute``, the copy to a preallocated float32 array), no files. ``driver``:
:func:`odesolve.distributed.sample` into a fresh folder: the same loop plus the manifest, one
shard file per batch written and renamed, the progress count, the merge into ``samples.npz``
and the removal of the shards. Runs alternate (sampling, driver, sampling, ...) and
the ratio ``driver / sampling - 1`` is formed per pair; the median is printed. The target is below
5 %. On a loaded machine the timings are rough: only the median of several pairs means anything.
The driver's own file work (starting the job, writing the shards, merging) is also
timed directly inside the driver (``files_s``), a lower-variance estimate of the same overhead:
``files_s / sampling_s``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

import odesolve as ods
from odesolve import distributed
from odesolve.commands.sample import make_grid, steps_for_nfe
from odesolve.execute import execute
from odesolve.toy import zoo

__all__ = ["run_distributed_overhead"]


def _bare(model, plan, n, shape, batch, seed=0) -> np.ndarray:
    out = np.empty((n, *shape), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            x = distributed.initial_noise(seed, start, stop, shape)
            x0 = execute(plan, model, x, noise=distributed.noise_source(plan, seed, start, stop))
            out[start:stop] = x0.float().numpy()
    return out


class _Timed:
    """Wrap the driver's file steps (``_start``, ``_write_shard``, ``_finish``) with a stopwatch."""

    NAMES = ("_start", "_write_shard", "_finish")

    def __enter__(self):
        self.seconds, self.saved = 0.0, {k: getattr(distributed, k) for k in self.NAMES}
        for k, f in self.saved.items():
            setattr(distributed, k, self._wrap(f))
        return self

    def _wrap(self, f):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed

    def __exit__(self, *exc):
        for k, f in self.saved.items():
            setattr(distributed, k, f)


def run_distributed_overhead(n=10000, batch=1024, nfe=10, method="dpmpp-3m", reps=3, progress=False) -> dict:
    """Time the bare loop and the driver ``reps`` times each, alternating; returns the numbers."""
    model = zoo.load("digits")
    shape = tuple(zoo.config("digits")["net"]["shape"])
    m = ods.methods.get(method)
    plan = m.compile(model.path, make_grid(model.path, steps_for_nfe(model.path, m, nfe)))
    _bare(model, plan, min(n, batch), shape, batch)  # warm-up: caches, allocator
    bare, driver, ratios, files = [], [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        ref = _bare(model, plan, n, shape, batch)
        bare.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d, _Timed() as timer:
            t0 = time.perf_counter()
            got = distributed.sample(model, plan, d, n=n, shape=shape, batch=batch, progress=progress).samples
            driver.append(time.perf_counter() - t0)
        files.append(timer.seconds)
        if not np.array_equal(ref, got):
            raise AssertionError("the driver's samples differ from the bare loop's")
        ratios.append(driver[-1] / bare[-1] - 1)
    return {
        "n": n,
        "batch": batch,
        "method": method,
        "nfe": plan.calls,
        "threads": torch.get_num_threads(),
        "sampling_s": bare,
        "driver_s": driver,
        "files_s": files,
        "files_over_sampling": statistics.median(f / b for f, b in zip(files, bare)),
        "overhead_median": statistics.median(ratios),
        "overhead_per_pair": ratios,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--method", default="dpmpp-3m")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = run_distributed_overhead(a.n, a.batch, a.nfe, a.method, a.reps)
    print(json.dumps(r, indent=1))
    print(
        f"driver overhead beyond the sampling itself at n = {a.n}: {100 * r['overhead_median']:+.2f} % "
        f"(median of {a.reps} pairs; sampling {statistics.median(r['sampling_s']):.2f} s, driver "
        f"{statistics.median(r['driver_s']):.2f} s; rough on a loaded machine); the driver's file work "
        f"alone: {100 * r['files_over_sampling']:.2f} % of the sampling time",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
