"""Adaptive step sizes: error against total network evaluations (summed over the samples).

Solvers, all on the same exact model and starting points, from sigma_max to sigma_min on the
problem's EDM path (counts, never wall-clock):

- ``per-sample``: :func:`odesolve.adaptive.sample_adaptive` (DPM-Solver-23 pair, each sample its own
  step, finished samples leave the batch), with k-diffusion's elementary controller (``I``) and with
  Gustafsson's PI controller (``PI``);
- ``batch-wide``: the same pair and controller, one error norm and one step for the whole batch;
- ``k-diffusion``: k-diffusion's own ``sample_dpm_adaptive`` (order 3; run in float64);
- ``dopri5``: torchdiffeq's Dormand-Prince 5(4) on ``dy/dlambda = x0_hat - y`` (``y = x / alpha``,
  lambda the half log-SNR), its own error norm over the batch.

Problems: ``gmm2d`` and ``lowrank64`` (exact models and references, EDM path, sigma 80 -> 0.002) and
the ``digits`` network of the zoo (float64 parameters, t = 999 -> 0 on its discrete VP path;
reference: scipy's DOP853 at 1e-10).

Each solver runs a sweep of tolerances (``rtol = tol``, ``atol = tol / 10``); the error of a sample
is its RMS distance to the exact reference (:func:`odesolve.toy.reference.solve`), summarised as the
mean and the maximum over the samples. "At equal accuracy" compares the total evaluations that the
log-log interpolation of each curve needs to reach the same error.

    python -m benchmarks.adaptive --out benchmarks/results          # writes adaptive.json / adaptive.md
    python -m benchmarks.adaptive --smoke --out /tmp/bench           # seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys

import torch

if __package__ in (None, ""):  # python benchmarks/adaptive.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import odesolve as ods
from odesolve.adaptive import PIDController, sample_adaptive
from odesolve.toy import problems, reference

TOLS = (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)


class _Counted:
    """An x0-model that counts the samples it evaluates."""

    def __init__(self, model: ods.Model):
        self.inner, self.rows = model, 0
        self.model = ods.Model(self, model.path, model.prediction)

    def __call__(self, x, t):
        self.rows += x.shape[0]
        return self.inner(x, t)


def _odesolve(per_sample: bool, controller: PIDController):
    def run(model, x, t0, t1, tol):
        r = sample_adaptive(model, x, t0, t1, rtol=tol, atol=tol / 10, per_sample=per_sample, controller=controller)
        return r.samples, r.total_nfe

    return run


def _denoiser(model: ods.Model):
    """The model in k-diffusion's coordinates: ``D(x / alpha, sigma / alpha) = x0_hat(x, t)``."""
    path = model.path

    def D(xe, sigma):
        t = path.t_of_noise_level(sigma.to(torch.float64))
        a = path.alpha(t).to(xe.dtype).reshape(-1, *(1,) * (xe.ndim - 1))
        return model.predict(a * xe, t, "x0").to(xe.dtype)

    return D


def _k_diffusion(model, x, t0, t1, tol):
    from benchmarks import peers

    K = peers.k_sampling()
    if K is None:
        return None
    counted = _Counted(model)
    path, D = model.path, _denoiser(counted.model)
    s0, s1 = (float(path.noise_level(torch.tensor(t, dtype=torch.float64))) for t in (t0, t1))
    a0, a1 = (float(path.alpha(torch.tensor(t, dtype=torch.float64))) for t in (t0, t1))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = K.sample_dpm_adaptive(D, x / a0, s1, s0, disable=True, rtol=tol, atol=tol / 10)
    finally:
        torch.set_default_dtype(default)
    return out * a1, counted.rows


def _dopri5(model, x, t0, t1, tol):
    try:
        import torchdiffeq
    except ImportError:
        return None
    counted = _Counted(model)
    path, D = model.path, _denoiser(counted.model)
    n = x.shape[0]

    def f(lam, y):  # dy/dlambda = x0_hat - y for y = x / alpha, lambda = -log(sigma / alpha)
        return D(y, torch.exp(-lam).expand(n)) - y

    t = torch.tensor([t0, t1], dtype=torch.float64)
    lam, alpha = path.lambda_(t), path.alpha(t)
    out = torchdiffeq.odeint(f, x / float(alpha[0]), lam, rtol=tol, atol=tol / 10, method="dopri5")[-1]
    return out * float(alpha[1]), counted.rows


SOLVERS = {
    "per-sample (I)": _odesolve(True, PIDController()),
    "batch-wide (I)": _odesolve(False, PIDController()),
    "per-sample (PI)": _odesolve(True, PIDController.pi()),
    "batch-wide (PI)": _odesolve(False, PIDController.pi()),
    "k-diffusion dpm_adaptive": _k_diffusion,
    "torchdiffeq dopri5": _dopri5,
}


def setup(name: str, n: int, seed: int = 0):
    """``(model, x, t_start, t_end, reference)`` of a toy problem (exact model, exact reference) or of
    the digits network (float64 parameters; reference: scipy's DOP853 at 1e-10)."""
    if name == "digits":
        from odesolve.toy import zoo

        model = zoo.load("digits", dtype=torch.float64)
        x = torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        t0, t1 = 999.0, 0.0
    else:
        P = problems.get(name)
        model = P.model("x0")
        x = P.prior(n, torch.Generator().manual_seed(seed))
        t0, t1 = P.times()
    with torch.no_grad():
        ref = reference.solve(model, x, t0, t1, rtol=1e-10, atol=1e-10, check="off")
    return model, x, t0, t1, ref


def curves(name: str, n: int, tols=TOLS, seed: int = 0) -> dict:
    """Per solver, the list of ``(tol, total_nfe, mean_error, max_error)``."""
    model, x, t0, t1, ref = setup(name, n, seed)
    out = {}
    for label, run in SOLVERS.items():
        rows = []
        for tol in tols:
            with torch.no_grad():
                got = run(model, x, t0, t1, tol)
            if got is None:
                break
            samples, nfe = got
            err = (samples - ref).flatten(1).norm(dim=1) / math.sqrt(ref[0].numel())
            rows.append((tol, int(nfe), float(err.mean()), float(err.max())))
        if rows:
            out[label] = rows
        print(f"{name} {label}: " + " ".join(f"{r[1] / n:.1f}:{r[2]:.1e}/{r[3]:.1e}" for r in rows), flush=True)
    return {"problem": name, "samples": n, "curves": out}


def nfe_at(curve, error: float, column: int) -> float | None:
    """Total NFE that ``curve`` needs for ``error`` (log-log interpolation between the two nearest
    points that bracket it; None outside the curve's range)."""
    pts = sorted((r[column], r[1]) for r in curve)
    for (e0, n0), (e1, n1) in itertools.pairwise(pts):
        if e0 <= error <= e1 and e0 > 0:
            if e1 == e0:
                return float(min(n0, n1))
            w = (math.log(error) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0)))
    return None


def ratios(result: dict, reference_label: str, column: int, levels: int = 5) -> dict:
    """For each other solver, ``NFE(other) / NFE(reference_label)`` at equal error (``column`` 2: mean
    error, 3: max error), at ``levels`` errors spread over the range both curves cover."""
    base = result["curves"][reference_label]
    out = {}
    for label, curve in result["curves"].items():
        if label == reference_label:
            continue
        lo = max(min(r[column] for r in base), min(r[column] for r in curve))
        hi = min(max(r[column] for r in base), max(r[column] for r in curve))
        if not lo < hi:
            continue
        row = []
        for i in range(levels):
            e = math.exp(math.log(lo) + (i + 0.5) / levels * (math.log(hi) - math.log(lo)))
            a, b = nfe_at(base, e, column), nfe_at(curve, e, column)
            if a and b:
                row.append((e, b / a))
        out[label] = row
    return out


def markdown(results: list[dict]) -> str:
    lines = ["# Adaptive steps: total network evaluations at equal accuracy", ""]
    for res in results:
        n = res["samples"]
        lines += [f"## {res['problem']} ({n} samples)", "", "NFE per sample : mean error / max error", ""]
        lines += ["| solver | " + " | ".join(f"tol {t:g}" for t in TOLS) + " |", "|---" * (len(TOLS) + 1) + "|"]
        for label, rows in res["curves"].items():
            lines.append(f"| {label} | " + " | ".join(f"{r[1] / n:.1f} : {r[2]:.1e} / {r[3]:.1e}" for r in rows) + " |")
        for ref_label in ("per-sample (I)", "per-sample (PI)"):
            for column, what in ((2, "mean"), (3, "max")):
                lines += ["", f"NFE of each solver / NFE of {ref_label} at equal {what} error:", ""]
                for label, row in ratios(res, ref_label, column).items():
                    lines.append(f"- {label}: " + ", ".join(f"{r:.2f} (at {e:.1e})" for e, r in row))
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true", help="a few samples and tolerances")
    ap.add_argument("--problems", nargs="*", default=["gmm2d", "lowrank64", "digits"])
    ap.add_argument("--samples", type=int, default=128)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n, tols = (8, TOLS[:2]) if args.smoke else (args.samples, TOLS)
    results = [curves(p, n, tols) for p in args.problems]
    path = os.path.join(args.out, "adaptive.json")
    if os.path.exists(path) and not args.smoke:  # keep the problems not run this time
        with open(path) as f:
            done = {r["problem"] for r in results}
            results = [r for r in json.load(f) if r["problem"] not in done] + results
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "adaptive.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "adaptive.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
