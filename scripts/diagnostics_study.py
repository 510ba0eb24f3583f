"""Studies of odesolve.toy.diagnostics on the exact toys (the numbers quoted in docs/diagnostics.md).

    python scripts/diagnostics_study.py hallucination [--n 4000] [--temperature 1 2 3] [--nfe 10 20 50 100]
    python scripts/diagnostics_study.py fokker-planck [--n 4000] [--bias 0 0.5 1 2 3] [--nfe 100]
    python scripts/diagnostics_study.py lowrank [--n 200] [--nfe 5 10 20 50]

- ``hallucination`` (Aithal et al. 2024, arXiv 2406.09358): gmm2d, the tempered model
  (``tempered_model``), per method and NFE the fraction of samples between the modes of the target
  (``between_modes``, tail 1e-3) and the AUC of the detector ``x0_variance`` (steps at noise levels
  0.05..0.5) against that label, with the true positive rate at a 5 % false positive rate.
- ``fokker-planck`` (Lai et al. 2023, arXiv 2210.04296): gmm2d, the perturbed models of
  scripts/ode_sde_gap.py (bias above noise level ``--onset``); the relative score Fokker-Planck
  residual at exact samples of p_t, averaged over 12 log-spaced noise levels in [0.002, 80], next to the
  ODE-SDE gap that scripts/ode_sde_gap.py measures (sliced W2 to the target of DPM-Solver++(2M) and its
  SDE at the given NFE).
- ``lowrank`` (MoLRG, arXiv 2409.02426): lowrank64, deterministic samplers against the reference
  solution, the RMS error split into the owning component's subspace and the rest, and into the span
  of all components and its complement, with the complement predicted by the 1-D Gaussian solve
  (``complement_error``).

Each prints a Markdown table (and writes it to ``--out``, default the current folder).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

import odesolve as ods
from odesolve.toy import diagnostics as dg
from odesolve.toy import problems, reference
from odesolve.toy.perturbed import perturbed_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ode_sde_gap  # the ODE-SDE gap's machinery: steps per NFE, the study, the W2

WINDOW = (0.05, 0.5)  # noise levels of the detector's steps on gmm2d


def _run(model, x_T, pb, method: str, nfe: int, seed: int = 0):
    m = ods.methods.get(method)
    steps = ode_sde_gap.steps_for(m, pb.path, nfe, pb.sigma_min, pb.sigma_max)
    grid = ods.grids.karras(pb.path, steps, pb.sigma_min, pb.sigma_max, to_zero=False)
    plan = m.compile(pb.path, grid)
    kw = {}
    if plan.stochastic:
        source = ods.noise.BrownianPaths if plan.correlated_noise else ods.noise.PerSampleNormal
        kw["noise"] = source(range(seed * len(x_T), (seed + 1) * len(x_T)))
    return grid, dg.record(model, x_T, grid, plan, **kw)


def hallucination(n=4000, temperatures=(1.0, 2.0, 3.0), nfes=(10, 20, 50, 100), methods=None, seed=0) -> str:
    methods = methods or ("ddim", "dpmpp-2m", "heun", "ddpm", "dpmpp-2m-sde")
    pb = problems.get("gmm2d")
    x_T = pb.prior(n, torch.Generator().manual_seed(seed))
    target = pb.target()
    lines = []
    for tau in temperatures:
        model = dg.tempered_model(pb.distribution, pb.path, tau)
        lines += [
            f"\n### temperature {tau:g}" + (" (the exact model)" if tau == 1 else ""),
            "",
            "fraction between modes / detector AUC / TPR at 5 % FPR",
            "",
            "| method | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
            "|---|" + "---|" * len(nfes),
        ]
        for name in methods:
            cells = []
            for nfe in nfes:
                _, traj = _run(model, x_T, pb, name, nfe, seed)
                label = dg.between_modes(traj.x, target)
                frac = label.double().mean().item()
                try:
                    r = dg.roc(dg.x0_variance(traj, WINDOW[1], WINDOW[0]), label)
                    tpr5 = float(r.tpr[r.fpr <= 0.05].max())
                    cells.append(f"{frac:.4f} / {r.auc:.3f} / {tpr5:.2f}")
                except ValueError:  # too few steps in the window, or no sample between modes
                    cells.append(f"{frac:.4f} / - / -")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fp_residual(model, pb, levels, n: int, seed: int = 0) -> list[float]:
    """The relative Fokker-Planck residual of ``model`` at ``n`` exact samples of p_t, per noise level."""
    out = []
    for i, rho in enumerate(levels):
        t = float(pb.path.t_of_noise_level(torch.tensor(float(rho), dtype=torch.float64)))
        x = pb.distribution.sample_marginal(n, t, pb.path, torch.Generator().manual_seed(seed + i))
        out.append(dg.fokker_planck_residual(model, x, t).relative)
    return out


def fokker_planck(
    n=4000, biases=(0.0, 0.5, 1.0, 2.0, 3.0), nfe=100, onset=10.0, seed=0, levels=12, residual_samples=256
) -> str:
    pb = problems.get("gmm2d")
    levels = torch.logspace(math.log10(pb.sigma_min), math.log10(pb.sigma_max), levels, dtype=torch.float64)
    rows = ode_sde_gap.study("gmm2d", biases, (nfe,), ("dpmpp-2m", "dpmpp-2m-sde"), n, seed, onset)
    floor = ode_sde_gap.floor("gmm2d", n, seed)
    lines = [
        f"gmm2d, bias above noise level {onset:g}; ODE-SDE gap at NFE {nfe}, n = {n} (two exact samples: "
        f"sliced W2 {floor:.3f})",
        "",
        "| bias | mean relative FP residual | max over levels | W2 ODE (2M) | W2 SDE (2M SDE) | gap ODE - SDE |",
        "|---|---|---|---|---|---|",
    ]
    for b in biases:
        model = perturbed_model(pb.distribution, pb.path, b, onset=onset)
        res = fp_residual(model, pb, levels, residual_samples, seed)
        w = {r.stochastic: r.w2 for r in rows if r.bias == b}
        lines.append(
            f"| {b:g} | {sum(res) / len(res):.2e} | {max(res):.2e} | {w[False]:.3f} | {w[True]:.3f} | "
            f"{w[False] - w[True]:+.3f} |"
        )
    return "\n".join(lines)


def lowrank(n=200, nfes=(5, 10, 20, 50), methods=None, seed=0, rtol=1e-10) -> str:
    methods = methods or ("ddim", "dpmpp-2m", "dpmpp-3m", "unipc-bh2-2", "ipndm", "heun")
    pb = problems.get("lowrank64")
    mix = pb.distribution
    model = pb.model("x0")
    x_T = pb.prior(n, torch.Generator().manual_seed(seed))
    t0, t1 = pb.times()
    ref = reference.solve(model, x_T, t0, t1, rtol=rtol, atol=rtol, check="raise" if rtol <= 1e-8 else "off")
    lines = [
        f"lowrank64 (d = 64, 5 components of rank 4, span of dimension {dg.span_basis(mix).shape[1]}), n = {n}; "
        "RMS error per sample: total / own subspace / rest || span / complement (predicted)",
        "",
        "| method | NFE | total | own subspace | rest | span | complement | predicted complement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        m = ods.methods.get(name)
        for nfe in nfes:
            steps = ode_sde_gap.steps_for(m, pb.path, nfe, pb.sigma_min, pb.sigma_max)
            if steps == 0:
                continue
            grid = ods.grids.karras(pb.path, steps, pb.sigma_min, pb.sigma_max, to_zero=False)
            x = ods.sample(model, x_T, grid, name)
            tot, own, rest = dg.error_split(x, ref, mix, "nearest").rms()
            _, span, comp = dg.error_split(x, ref, mix, "span").rms()
            pred = dg.complement_error(mix, x_T, grid, name).mean().sqrt().item()
            lines.append(
                f"| {name} | {nfe} | {tot:.2e} | {own:.2e} | {rest:.2e} | {span:.2e} | {comp:.2e} | {pred:.2e} |"
            )
    return "\n".join(lines)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=("hallucination", "fokker-planck", "lowrank"))
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--nfe", type=int, nargs="+", default=None)
    ap.add_argument("--temperature", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    ap.add_argument("--bias", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 3.0])
    ap.add_argument("--onset", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=".")
    a = ap.parse_args(argv)
    if a.study == "hallucination":
        text = hallucination(a.n or 4000, a.temperature, a.nfe or (10, 20, 50, 100), seed=a.seed)
    elif a.study == "fokker-planck":
        text = fokker_planck(a.n or 4000, a.bias, (a.nfe or [100])[0], a.onset, a.seed)
    else:
        text = lowrank(a.n or 200, a.nfe or (5, 10, 20, 50), seed=a.seed)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"diagnostics_{a.study}.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
