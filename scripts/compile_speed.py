"""Compile time per step of every registered method (``Method.compile``, plan cache bypassed).

    python scripts/compile_speed.py [--steps 1000] [--repeat 5]

Two grids: a Karras grid on EDM and a trailing grid on a discrete VP schedule (1000 training steps,
so a 1000-step grid visits every integer time and DEIS's quadrature splits at every kink). Prints the
best of ``repeat`` timings in microseconds per step; the timings are rough wall-clock numbers and
depend on the machine's load. Target: at most 50 us per step at 1000 steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's odesolve, not an installed one
import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P


def per_step_us(method, path, grid, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        g = G.Grid(path, grid.t.clone().requires_grad_(True))  # a grid with gradients is never cached
        t0 = time.perf_counter()
        method.compile(path, g)
        best = min(best, time.perf_counter() - t0)
    return best / grid.steps * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    edm = P.EDM()
    vp = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012)
    grids = {
        "edm-karras": (edm, G.karras(edm, args.steps)),
        "vp-discrete-trailing": (vp, G.discrete(vp, min(args.steps, 999), spacing="trailing")),
    }
    print(f"compile time, us per step at {args.steps} steps (best of {args.repeat}; rough wall-clock timings)")
    print(f"{'method':22s}" + "".join(f"{k:>22s}" for k in grids))
    worst = 0.0
    for name in ods.methods.names():
        m = ods.methods.get(name)
        row = [per_step_us(m, path, grid, args.repeat) for path, grid in grids.values()]
        worst = max(worst, *row)
        print(f"{name:22s}" + "".join(f"{v:22.1f}" for v in row))
    print(f"worst: {worst:.1f} us per step (target 50)")


if __name__ == "__main__":
    main()
