"""Fitted samplers against the best training-free odesolve methods on the exact toy problems.

For each problem and NFE k: the RMSE (per element, against the high-accuracy reference solution)
on held-out starting noise of the best registered deterministic method (over two grids: Karras
rho = 7 and uniform in log sigma, both ending with a step to sigma = 0) at NFE k and 2k, and of
samplers fitted at NFE k from dpmpp-2m on Karras (family "grid" and "coefficients"), with their
parameter counts, fit times and validation losses. Training, validation (which picks the epoch)
and test noise are three disjoint draws; the RMSE columns are on the test noise.

    python scripts/learn_study.py [--problems gmm2d lowrank64] [--nfe 4 5 6 10] [--train 512] [--test 1000]
"""

from __future__ import annotations

import argparse
import math

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=["gmm2d", "lowrank64"])
    ap.add_argument("--nfe", nargs="+", type=int, default=[4, 5, 6, 10])
    ap.add_argument("--train", type=int, default=512)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--init", default="dpmpp-2m")
    args = ap.parse_args(argv)
    head = (
        f"{'problem':<10} {'k':>3} | {'best training-free @k':<32} | {'best training-free @2k':<32} | "
        f"{'family':<12} {'RMSE @k':>9} {'val':>9} {'params':>6} {'fit s':>6}"
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
            for family in ("grid", "coefficients"):
                f = learn.fit(model, x_train, nfe=k, family=family, init=args.init, x_T_val=x_val)
                err = rmse(f.sample(model, x_test), y_test)
                print(
                    f"{pname:<10} {k:>3} | {tf_k[0]:9.3e} {tf_k[1]:<22} | {tf_2k[0]:9.3e} {tf_2k[1]:<22} | "
                    f"{family:<12} {err:9.3e} {f.val_loss:9.3e} {f.parameters:>6} {f.fit_seconds:6.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
