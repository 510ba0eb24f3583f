"""Accuracy against NFE on exact problems, for every odesolve method and the peers' samplers.

For each problem ("gmm2d", "lowrank64"), setup (path + grid family) and NFE budget, every sampler
runs from the same exact samples of p_T with the same exact x0-oracle, in float64 (so that the
differences between libraries are those of their arithmetic, not of round-off in the state). The
number of steps N is the largest whose model-call count fits the budget; the NFE reported is the
count of calls the model actually received.

Metrics against a float64 DOP853 reference solution of the probability-flow ODE from the same
start (:func:`odesolve.toy.reference.trajectory`, rtol = atol = 1e-10 by default, with its own
error estimate reported) at the sampler's end time:

- ``rmse``: ``sqrt(mean_i |x_i - x*_i|^2 / d)``; ``median``: median per-sample RMS error;
- ``same_mode``: the fraction of samples in the mode of their reference;
- ``nll``: exact mean negative log-likelihood of the samples under p at the end time (the data
  density for samplers that end at sigma = 0); the reference's own value is reported as the baseline.

Samplers whose twin (the odesolve method they should equal) ran at the same N are compared sample by
sample: ``twin_max_abs`` and ``twin_rel_rms`` (RMS difference over the RMS of the samples).
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from . import setups as S
from .solvers import Counter, Solver, all_solvers

__all__ = ["DEFAULT_NFES", "run_accuracy"]

DEFAULT_NFES = (5, 6, 8, 10, 15, 20)


def _steps_for_budget(solver: Solver, setup, nfe: int, cache: dict) -> int | None:
    """Largest N with calls(N) <= nfe (None if even N = 1 exceeds it); calls(N) is increasing in N."""

    def calls(n):
        key = (solver.key, setup.key, n)
        if key not in cache:
            cache[key] = solver.calls(setup, n)
        return cache[key]

    if calls(1) > nfe:
        return None
    lo, hi = 1, nfe  # calls(lo) <= nfe; calls(N) >= N
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if calls(mid) <= nfe:
            lo = mid
        else:
            hi = mid - 1
    return lo


def run_accuracy(
    problems=("gmm2d", "lowrank64"),
    setup_keys=None,
    nfes=DEFAULT_NFES,
    samples=None,
    libs=("odesolve", "diffusers", "k-diffusion"),
    rtol: float = 1e-10,
    only=None,
    log=print,
) -> dict:
    """Run the accuracy benchmark; returns a JSON-able dict (see the module docstring).

    ``samples``: {problem: number of samples}; ``only``: a predicate on solver keys (for smoke runs).
    """
    from odesolve.toy import metrics, reference

    samples = samples or {"gmm2d": 1000, "lowrank64": 256}
    setup_keys = list(setup_keys or S.SETUPS)
    solvers = [s for s in all_solvers(libs) if only is None or only(s.key)]
    rows, refs = [], []
    calls_cache: dict = {}
    for pname in problems:
        prob = S.get_problem(pname)
        dist = prob.distribution
        for skey in setup_keys:
            setup = S.SETUPS[skey]
            path = setup.path
            n = samples.get(pname, 256)
            x_T = S.start_points(prob, setup, n)

            def oracle(x, t, dist=dist, path=path):
                return dist.predict(x, t, path, "x0")

            t0 = time.perf_counter()
            results = {}  # (solver key, N) -> (x, t_end, nfe, seconds)
            planned = []
            for solver in solvers:
                if not solver.supports(setup):
                    continue
                for nfe in nfes:
                    N = nfe if solver.fixed_grid else _steps_for_budget(solver, setup, nfe, calls_cache)
                    if N is None:
                        continue
                    planned.append((solver, nfe, N))
            for solver, _nfe, N in planned:
                key = (solver.key, N)
                if key in results:
                    continue
                counter = Counter(oracle)
                t1 = time.perf_counter()
                err = None
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        with torch.no_grad():
                            if solver.fixed_grid:
                                x, t_end = solver.run(setup, N, x_T, counter)
                            else:
                                x, t_end = solver.run(setup, setup.grid(N), x_T, counter)
                    x = x.to(torch.float64)
                except Exception as e:
                    x, t_end, err = None, None, f"{type(e).__name__}: {str(e)[:300]}"
                results[key] = (x, t_end, counter.n, time.perf_counter() - t1, err)
            run_s = time.perf_counter() - t0
            # the reference at every end time any sampler reached
            t_ends = sorted({round(r[1], 12) for r in results.values() if r[1] is not None}, reverse=True)
            t1 = time.perf_counter()
            model = dist.model(path, "x0")
            times = torch.tensor([setup.t_start] + t_ends, dtype=torch.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traj, ref_err = reference.trajectory(
                    model, x_T, times, rtol=rtol, atol=rtol, check="warn", return_error=True
                )
            ref_s = time.perf_counter() - t1
            ref_at = {t: traj[i + 1] for i, t in enumerate(t_ends)}
            targets = {}

            def target(t_end, dist=dist, path=path, targets=targets):
                if t_end not in targets:
                    at_data = float(path.noise_level(torch.tensor(t_end, dtype=torch.float64))) == 0.0
                    targets[t_end] = dist if at_data else dist.marginal(t_end, path)
                return targets[t_end]

            ref_info = {
                "problem": pname,
                "setup": skey,
                "samples": n,
                "dim": dist.dim,
                "rtol": rtol,
                "seconds": ref_s,
                "solver_seconds": run_s,
                "t_ends": t_ends,
                "error_estimate_max": [float(ref_err[i + 1].max()) for i in range(len(t_ends))],
                "nll": {str(t): metrics.nll(ref_at[t], target(t)) for t in t_ends},
            }
            refs.append(ref_info)
            log(
                f"[accuracy] {pname:10s} {skey:12s}: {len(results)} runs in {run_s:6.1f} s, reference "
                f"{ref_s:5.1f} s (est. error <= {max(ref_info['error_estimate_max'] or [0]):.1e})"
            )
            for solver, nfe, N in planned:
                x, t_end, calls, secs, err = results[(solver.key, N)]
                row = {
                    "problem": pname,
                    "setup": skey,
                    "lib": solver.lib,
                    "method": solver.name,
                    "key": solver.key,
                    "nfe_budget": nfe,
                    "steps": N,
                    "nfe": calls,
                    "seconds": secs,
                    "note": solver.note,
                    "training_free": solver.training_free,
                    "registered": solver.meta.get("registered", solver.lib != "odesolve"),
                    "error": err,
                }
                if x is not None:
                    te = round(t_end, 12)
                    row["t_end"] = te
                    finite = bool(torch.isfinite(x).all())
                    row["finite"] = finite
                    if finite:
                        e = metrics.endpoint_error(x, ref_at[te], target(te))
                        row.update(
                            rmse=e.rmse,
                            median=e.median,
                            same_mode=e.same_mode,
                            nll=metrics.nll(x, target(te)),
                            nll_reference=ref_info["nll"][str(te)],
                        )
                    else:
                        row.update(
                            rmse=math.inf,
                            median=math.inf,
                            same_mode=0.0,
                            nll=math.inf,
                            nll_reference=ref_info["nll"][str(te)],
                        )
                    tw = solver.twin(N)
                    if tw is not None:
                        twin_res = results.get((f"odesolve:{tw}", N))
                        row["twin"] = tw
                        if twin_res is not None and twin_res[0] is not None:
                            d = x - twin_res[0]
                            row["twin_max_abs"] = float(d.abs().max()) if finite else math.inf
                            row["twin_rel_rms"] = (
                                float(d.pow(2).mean().sqrt() / twin_res[0].pow(2).mean().sqrt()) if finite else math.inf
                            )
                rows.append(row)
    return {
        "rows": rows,
        "references": refs,
        "nfes": list(nfes),
        "samples": samples,
        "setups": {k: S.SETUPS[k].description for k in setup_keys},
    }
