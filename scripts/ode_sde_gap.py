"""The ODE-SDE gap: how far ODE and SDE samples land from the data when the model is wrong.

The model is the toy's exact denoiser plus a smooth bias of size ``b`` that vanishes at low noise
(:func:`odesolve.toy.perturbed.perturbed_model`). For every method and NFE the samples start from the
same exact draws of p at sigma_max (common random numbers), run on a Karras grid (rho = 7) ending at
sigma_min, SDE methods driven by per-sample noise (``PerSampleNormal``; ``BrownianPaths`` for a plan whose
noise intervals overlap), and are compared with an exact sample of the target p at sigma_min: the
sliced W2 (:func:`odesolve.toy.metrics.sliced_w2`, 256 directions) and the NLL under the target. (The
exact W2 between two empirical measures, by optimal assignment, is no use here: on a mixture of
well-separated modes it is dominated by the multinomial noise of the mode counts, W2 ~ 0.7 between two
exact samples of 2000 points of gmm2d, and that noise falls only as n^(-1/4).)

The seed papers' claim (Karras et al. 2022, section 4; Xu et al., Restart sampling, 2023, arXiv
2306.14878, Theorem 1): the SDE's noise contracts
the error accumulated early, the ODE carries it to the end, so with a biased model and enough steps
the SDE lands closer; with the exact model the ODE, with its smaller discretisation error, does not
lose. ``crossover``: the smallest NFE from which the best SDE's W2 stays below the best ODE's by more
than the estimator's noise (half the distance between two exact samples).

    python scripts/ode_sde_gap.py [--problem gmm2d] [--bias 0 3] [--onset 10] [--nfe 5 10 20 40 70 100]
        [--ode ddim dpmpp-2m heun] [--sde ddpm dpmpp-2m-sde euler-maruyama] [--n 8000] [--out DIR]

The bias acts above the noise level ``onset`` (data units; see ``perturbed_model``): on the linear
Gaussian test an x0 error delta made at noise level rho reaches the sample as
``delta (drho/rho) s / sqrt(s^2 + rho^2)`` through the ODE and as ``2 delta (drho/rho) s^2 / (s^2 + rho^2)``
through the SDE (data std s): the SDE injects twice the error but contracts it, and wins for errors
made above ``rho = sqrt(3) s``. gmm2d's data spread is s ~ 3, so the default onset is 10.

writes ``ode_sde_gap.md`` (the table), ``ode_sde_gap.json`` and ``ode_sde_gap.png`` (W2 against NFE).
Any registered method name is accepted (a new stochastic method, Restart for instance, joins with
``--sde restart``); whether a method is an SDE is read from its table (``stochastic``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass

import torch

import odesolve as ods
from odesolve.toy import metrics, problems
from odesolve.toy.perturbed import perturbed_model

ODE = ("ddim", "dpmpp-2m", "heun")
SDE = ("ddpm", "dpmpp-2m-sde", "euler-maruyama")
NFES = (5, 10, 20, 40, 70, 100)


@dataclass(frozen=True)
class Row:
    problem: str
    bias: float
    method: str
    stochastic: bool
    nfe: int
    steps: int
    w2: float  # sliced W2 to the target
    nll: float


def w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Sliced W2 (256 fixed directions) between two sample sets."""
    return metrics.sliced_w2(x, y, projections=256)


def steps_for(method, path, nfe: int, sigma_min: float, sigma_max: float) -> int:
    """The most grid steps whose plan makes at most ``nfe`` model calls (0 if even one step makes more)."""
    calls = lambda n: method.compile(path, ods.grids.karras(path, n, sigma_min, sigma_max, to_zero=False)).calls
    steps = nfe
    while steps > 0 and (c := calls(steps)) > nfe:
        steps = min(steps - 1, steps * nfe // c)
    while steps < nfe and calls(steps + 1) <= nfe:  # the estimate undershoots for plans with a warm-up
        steps += 1
    return steps


def study(
    problem: str = "gmm2d",
    biases=(0.0, 3.0),
    nfes=NFES,
    methods=ODE + SDE,
    n: int = 8000,
    seed: int = 0,
    onset: float = 10.0,
) -> list[Row]:
    pb = problems.get(problem)
    g = torch.Generator().manual_seed(seed)
    x_T = pb.prior(n, g)
    target = pb.target()
    reference = target.sample(n, torch.Generator().manual_seed(seed + 1))
    rows = []
    for b in biases:
        model = perturbed_model(pb.distribution, pb.path, b, onset=onset)
        for name in methods:
            m = ods.methods.get(name)
            stochastic = bool(getattr(m, "stochastic", False))
            for nfe in nfes:
                steps = steps_for(m, pb.path, nfe, pb.sigma_min, pb.sigma_max)
                if steps == 0:
                    continue
                grid = ods.grids.karras(pb.path, steps, pb.sigma_min, pb.sigma_max, to_zero=False)
                plan = m.compile(pb.path, grid)
                kw = {}
                if plan.stochastic:
                    source = ods.noise.BrownianPaths if plan.correlated_noise else ods.noise.PerSampleNormal
                    kw["noise"] = source(range(seed * n, seed * n + n))
                x = ods.sample(model, x_T, grid, plan, **kw)
                nll = metrics.nll(x, target)
                rows.append(Row(problem, float(b), m.name, stochastic, nfe, steps, w2(x, reference), nll))
    return rows


def best(rows: list[Row], bias: float, stochastic: bool) -> dict[int, Row]:
    """Per NFE, the row of the lowest W2 among the ODE (or SDE) methods."""
    out: dict[int, Row] = {}
    for r in rows:
        if r.bias == bias and r.stochastic == stochastic and (r.nfe not in out or r.w2 < out[r.nfe].w2):
            out[r.nfe] = r
    return out


def crossover(rows: list[Row], bias: float, margin: float = 0.0) -> int | None:
    """The smallest NFE from which, at every larger NFE studied, the best SDE's W2 is below the best ODE's
    by more than ``margin`` (differences below the estimator's noise are not resolved; :func:`main` uses
    half the distance between two exact samples)."""
    o, s = best(rows, bias, False), best(rows, bias, True)
    nfes = sorted(set(o) & set(s))
    found = None
    for nfe in reversed(nfes):
        if s[nfe].w2 < o[nfe].w2 - margin:
            found = nfe
        else:
            break
    return found


def floor(problem: str = "gmm2d", n: int = 8000, seed: int = 0) -> float:
    """Sliced W2 between two exact samples of the target (the estimator's floor at this n)."""
    target = problems.get(problem).target()
    return w2(
        target.sample(n, torch.Generator().manual_seed(seed + 2)),
        target.sample(n, torch.Generator().manual_seed(seed + 1)),
    )


def table(rows: list[Row], n: int, floor_w2: float) -> str:
    lines = []
    for b in sorted({r.bias for r in rows}):
        sub = [r for r in rows if r.bias == b]
        nfes = sorted({r.nfe for r in sub})
        names = list(dict.fromkeys(r.method for r in sub))
        lines.append(f"### bias {b:g} (sliced W2 to the target; two exact samples: {floor_w2:.3f} at n = {n})\n")
        lines.append("| method | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for name in names:
            cell = {r.nfe: r for r in sub if r.method == name}
            sde = "SDE" if sub[[r.method for r in sub].index(name)].stochastic else "ODE"
            lines.append(
                f"| {name} ({sde}) | " + " | ".join(f"{cell[k].w2:.3f}" if k in cell else "" for k in nfes) + " |"
            )
        c = crossover(rows, b, 0.5 * floor_w2)
        lines.append(
            f"\ncrossover NFE (best SDE below best ODE by more than {0.5 * floor_w2:.3f}, half the exact-sample "
            f"distance, from there on): {c if c is not None else 'none'}\n"
        )
    return "\n".join(lines)


def figure(rows: list[Row], floor_w2: float | None = None):
    from odesolve.analysis.plots import _figure

    biases = sorted({r.bias for r in rows})
    fig = _figure(figsize=(4.2 * len(biases), 3.6))
    axes = fig.subplots(1, len(biases), squeeze=False)[0]
    for ax, b in zip(axes, biases):
        sub = [r for r in rows if r.bias == b]
        for i, name in enumerate(dict.fromkeys(r.method for r in sub)):
            pts = sorted((r.nfe, r.w2, r.stochastic) for r in sub if r.method == name)
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], "-o" if pts[0][2] else "--s", ms=3, label=name, color=f"C{i}"
            )
        if floor_w2 is not None:
            ax.axhline(floor_w2, color="k", lw=0.8, ls=":", label="exact-sample floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(f"bias {b:g}" + (" (exact model)" if b == 0 else ""))
    axes[0].set_ylabel("sliced W2 to the target")
    axes[-1].legend(fontsize=7)
    return fig


def main(argv=None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="gmm2d")
    ap.add_argument("--bias", type=float, nargs="+", default=[0.0, 3.0])
    ap.add_argument("--onset", type=float, default=10.0)
    ap.add_argument("--nfe", type=int, nargs="+", default=list(NFES))
    ap.add_argument("--ode", nargs="+", default=list(ODE))
    ap.add_argument("--sde", nargs="+", default=list(SDE))
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=".")
    a = ap.parse_args(argv)
    rows = study(a.problem, a.bias, a.nfe, a.ode + a.sde, a.n, a.seed, a.onset)
    fl = floor(a.problem, a.n, a.seed)
    os.makedirs(a.out, exist_ok=True)
    text = table(rows, a.n, fl)
    with open(os.path.join(a.out, "ode_sde_gap.md"), "w") as f:
        f.write(f"# ODE-SDE gap on {a.problem}\n\n{text}\n")
    with open(os.path.join(a.out, "ode_sde_gap.json"), "w") as f:
        json.dump({"floor_w2": fl, "rows": [asdict(r) for r in rows]}, f, indent=1)
    figure(rows, fl).savefig(os.path.join(a.out, "ode_sde_gap.png"), dpi=110)
    print(text)
    return rows


if __name__ == "__main__":
    main()
