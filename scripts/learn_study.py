"""Fitted samplers against the best training-free odesolve methods on the exact toy problems.

For each problem and NFE k: the RMSE (per element, against the high-accuracy reference solution)
on held-out starting noise of the best registered deterministic method (over two grids: Karras
rho = 7 and uniform in log sigma, both ending with a step to sigma = 0) at NFE k and 2k, and of
samplers fitted at NFE k from dpmpp-2m on Karras (family "grid" and "coefficients"), with their
parameter counts, fit times and validation losses. Training, validation (which picks the epoch)
and test noise are three disjoint draws; the RMSE columns are on the test noise.

The peers (``--peers``): every training-free sampler of diffusers and k-diffusion in the benchmark
(``benchmarks/solvers.py``) on its ``edm-karras`` setup (the EDM path and the same Karras grids),
run at NFE k on the same test noise with the exact model; its RMSE against the reference at the
noise level where it stops. ``ratio`` = fitted RMSE / best peer RMSE.

    python scripts/learn_study.py [--problems gmm2d lowrank64] [--nfe 4 5 6 10] [--train 512] [--test 1000]
        [--families grid coefficients] [--fit "loss='l2', shift_times=True"] [--peers]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import odesolve as ods
from odesolve import learn
from odesolve.toy import problems
from odesolve.toy.reference import solve


def grids_for(path, steps):
    if steps >= 2:  # both end with a step to sigma = 0
        yield "karras", ods.grids.karras(path, steps)
        s = torch.cat(
            [
                torch.logspace(math.log10(80.0), math.log10(0.002), steps, dtype=torch.float64),
                torch.zeros(1, dtype=torch.float64),
            ]
        )
        yield "logsigma", ods.grids.from_sigmas(path, s)


def rmse(a, b) -> float:
    return float(((a - b) ** 2).mean().sqrt())


def best_training_free(model, x, y, nfe):
    best = (math.inf, "")
    for name in ods.methods.names():
        m = ods.methods.get(name)
        steps, rem = divmod(nfe, m.calls_per_step)
        if rem or steps < 1:
            continue
        for gname, grid in grids_for(model.path, steps):
            try:
                out = ods.sample(model, x, grid, method=m)
            except ValueError:
                continue
            if bool(torch.isfinite(out).all()):
                best = min(best, (rmse(out, y), f"{name}/{gname}"))
    return best


def best_peer(prob, x, nfe):
    """(RMSE, name) of the best training-free peer sampler at NFE ``nfe`` on the edm-karras setup."""
    import sys
    import warnings
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import accuracy, setups
    from benchmarks import solvers as bsolvers

    setup = setups.SETUPS["edm-karras"]
    dist = prob.distribution

    def oracle(v, t):
        return dist.predict(v, t, setup.path, "x0")

    best, cache, refs, model = (math.inf, "none"), {}, {}, dist.model(setup.path, "x0")
    for s in bsolvers.all_solvers(("diffusers", "k-diffusion")):
        if not s.training_free or not s.supports(setup):
            continue
        N = nfe if s.fixed_grid else accuracy._steps_for_budget(s, setup, nfe, cache)
        if N is None:
            continue
        counter = bsolvers.Counter(oracle)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                out, t_end = s.run(setup, N if s.fixed_grid else setup.grid(N), x, counter)
        except Exception:  # a peer that fails on this setup is skipped, as in the benchmark
            continue
        if counter.n > nfe or not bool(torch.isfinite(out).all()):
            continue
        key = round(float(t_end), 12)
        if key not in refs:
            refs[key] = solve(model, x, setup.t_start, t_end, rtol=1e-10, atol=1e-10)
        y = refs[key]
        best = min(best, (rmse(out.to(torch.float64), y), f"{s.key}[{counter.n}]"))
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=["gmm2d", "lowrank64"])
    ap.add_argument("--nfe", nargs="+", type=int, default=[4, 5, 6, 10])
    ap.add_argument("--train", type=int, default=512)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--init", default="dpmpp-2m")
    ap.add_argument("--families", nargs="+", default=["grid", "coefficients"])
    ap.add_argument("--fit", default="", help="keyword arguments of learn.fit, e.g. \"loss='l2', shift_times=True\"")
    ap.add_argument("--peers", action="store_true", help="also the best diffusers / k-diffusion sampler at NFE k")
    ap.add_argument("--save", default=None, help="folder to save every fitted sampler in (JSON)")
    args = ap.parse_args(argv)
    fit_kwargs = eval(f"dict({args.fit})", {})  # a trusted command line of the study
    head = (
        f"{'problem':<10} {'k':>3} | {'best training-free @k':<32} | {'best training-free @2k':<32} | "
        f"{'family':<12} {'RMSE @k':>9} {'val':>9} {'params':>6} {'fit s':>6} {'cpu s':>6} | "
        f"{'best peer @k':<44} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    for pname in args.problems:
        prob = problems.get(pname)
        model = prob.model("x0")
        x_train = prob.prior(args.train, torch.Generator().manual_seed(1))
        x_val = prob.prior(args.val, torch.Generator().manual_seed(2))
        x_test = prob.prior(args.test, torch.Generator().manual_seed(3))
        y_test = solve(model, x_test, prob.times()[0], 0.0, rtol=1e-10, atol=1e-10)
        for k in args.nfe:
            tf_k, tf_2k = best_training_free(model, x_test, y_test, k), best_training_free(model, x_test, y_test, 2 * k)
            peer = best_peer(prob, x_test, k) if args.peers else (math.nan, "-")
            for family in args.families:
                cpu = time.process_time()
                f = learn.fit(model, x_train, nfe=k, family=family, init=args.init, x_T_val=x_val, **fit_kwargs)
                cpu = time.process_time() - cpu
                err = rmse(f.sample(model, x_test), y_test)
                if args.save:
                    f.save(f"{args.save}/{pname}-nfe{k}-{family}.json")
                print(
                    f"{pname:<10} {k:>3} | {tf_k[0]:9.3e} {tf_k[1]:<22} | {tf_2k[0]:9.3e} {tf_2k[1]:<22} | "
                    f"{family:<12} {err:9.3e} {f.val_loss:9.3e} {f.parameters:>6} {f.fit_seconds:6.1f} {cpu:6.1f} | "
                    f"{peer[0]:9.3e} {peer[1]:<34} {err / peer[0]:6.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
