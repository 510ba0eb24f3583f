"""``odesolve sample``: draw samples from a model of the zoo with a registered method.

    odesolve sample --model digits --method dpmpp-3m --nfe 10 --n 10000 --batch 1024 --device cpu --seed 0 --out DIR

writes ``DIR/samples.npz`` (``samples``: float32, shape ``(n, *image)``, in the model's data
coordinates, unclipped; with the method, the grid times, the real NFE and the seed) and
``DIR/grid.png`` (the first 100 samples). ``run(args)`` is the command; ``add_arguments(parser)``
declares its options; every option is checked before the sampling starts.

NFE budget. ``--nfe`` is the number of network evaluations allowed per sample. The grid gets
``nfe // calls_per_step`` steps, and then as many as fit: a step that ends at sigma = 0 (the last
step of the default grids) takes one model call whatever the method (the DDIM limit ``x = x0_hat``
for the exponential methods; docs/theory.md section 2), so
a singlestep method such as ``dpm-solver-3`` at ``--nfe 10`` runs 4 steps (3 + 3 + 3 + 1 calls),
and a method that spends an extra call on a warm-up (``dpmpp-3m-corrected``) runs one step fewer.
The real NFE (the compiled plan's number of calls) is printed and stored.

Determinism. The initial noise is drawn for all ``n`` samples at once on the CPU from
``torch.Generator().manual_seed(seed)``, so the samples do not depend on ``--batch`` or on the
device's random generator; on the CPU the same seed gives bit-identical samples. A stochastic
method's noise for sample ``j`` is keyed by ``(seed mod 2^31) * 2^32 + j`` (``odesolve.noise``:
independent normals per call, or Brownian paths where the plan's increments overlap), so it too
depends on neither ``--batch`` nor the device.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from . import _checks

__all__ = ["GRIDS", "HELP", "add_arguments", "make_grid", "run", "steps_for_nfe"]

HELP = "sample from a model of the zoo with a registered method"

GRIDS = ("trailing", "lambda", "karras")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the options of ``odesolve sample`` on ``parser``."""
    parser.add_argument("--model", default="digits", help="a model of odesolve.toy.zoo (default: digits)")
    parser.add_argument("--method", default="dpmpp-3m", help="a registered method (odesolve methods lists them)")
    parser.add_argument("--nfe", type=int, default=10, help="network evaluations per sample (default: 10)")
    parser.add_argument("--n", type=int, default=10000, help="number of samples (default: 10000)")
    parser.add_argument("--batch", type=int, default=1024, help="samples per batch (default: 1024)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(_DTYPES),
        help="dtype of the network's parameters; the state stays in float32 (default: float32)",
    )
    parser.add_argument(
        "--grid",
        default="trailing",
        choices=GRIDS,
        help="time grid: trailing integer timesteps as diffusers spaces them (default), steps "
        "uniform in log-SNR ('lambda'), or Karras et al.'s rho = 7 ('karras'); each ends "
        "with the step to sigma = 0",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default: 0)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: out/MODEL-METHOD-nfeNFE); created if missing"
    )
    parser.add_argument(
        "--fd",
        action="store_true",
        help="also print the Frechet distance of classifier features to the data (digits only; needs "
        "--n above the 128 features)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def make_grid(path, steps: int, kind: str = "trailing"):
    """The grid ``kind`` (one of [`GRIDS`][odesolve.commands.sample.GRIDS]) with ``steps`` steps on a discrete VP
    ``path``,
    from its noise end to t = -1 (sigma = 0)."""
    from .. import grids
    from ..toy import reference

    if kind == "trailing":
        return grids.discrete(path, steps, "trailing")
    if kind == "lambda":
        if steps < 2:
            return grids.discrete(path, 1, "trailing")
        return reference.halving_grid(path, steps)
    if kind == "karras":
        if steps < 2:
            return grids.discrete(path, 1, "trailing")
        lo, hi = (float(path.noise_level(torch.tensor(v, dtype=torch.float64))) for v in (0.0, path.t_max))
        return grids.karras(path, steps, sigma_min=lo, sigma_max=hi, rho=7.0)
    raise ValueError(f"grid must be one of {GRIDS}, got {kind!r}")


def steps_for_nfe(path, method, nfe: int, kind: str = "trailing") -> int | None:
    """The most steps of ``method`` on the grid ``kind`` whose plan makes at most ``nfe`` model
    calls, starting from ``nfe // calls_per_step``; ``None`` if not even one step fits."""
    from .. import methods

    m = method if isinstance(method, methods.Method) else methods.get(method)
    if not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    T = int(path.t_max) + 1

    def calls(steps):
        return m.compile(path, make_grid(path, steps, kind)).calls

    steps = min(max(1, nfe // m.calls_per_step), T)
    while steps > 1 and calls(steps) > nfe:
        steps -= 1
    if calls(steps) > nfe:
        return None
    while steps < T and calls(steps + 1) <= nfe:
        steps += 1
    return steps


def _save_png(images: torch.Tensor, file: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = images.shape[0]
    cols = min(10, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < k:
            img = images[i]
            ax.imshow(
                img[0] if img.shape[0] == 1 else img.permute(1, 2, 0),
                cmap="gray_r",
                vmin=-1,
                vmax=1,
                interpolation="nearest",
            )
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - 0.35 / fig.get_figheight(), wspace=0.08, hspace=0.08
    )
    fig.savefig(file, dpi=100)
    plt.close(fig)


def _check(args: argparse.Namespace):
    """Every option checked before any work; returns ``(device, model, method, out)``."""
    from .. import methods
    from ..toy import metrics, zoo

    n, _, nfe = (_checks.positive(o, v) for o, v in (("--n", args.n), ("--batch", args.batch), ("--nfe", args.nfe)))
    _checks.seed(args.seed)
    if args.fd:
        if args.model != "digits":
            raise _checks.UsageError(f"--fd is defined for the digits model only, got --model {args.model!r}")
        if n <= metrics.DIGITS_FEATURES:
            k = metrics.DIGITS_FEATURES
            raise _checks.UsageError(
                f"--fd needs more samples than the classifier has features ({k}) for a "
                f"non-singular covariance: got --n {n}; use --n {k + 1} or more (the "
                f"estimate's bias falls like 1/n)"
            )
    device = _checks.device(args.device)
    dtype = _DTYPES[args.dtype] if isinstance(args.dtype, str) else args.dtype
    model = zoo.load(args.model, device=device, dtype=dtype)
    method = methods.get(args.method)
    out = Path(args.out) if args.out is not None else Path("out") / f"{args.model}-{method.name}-nfe{nfe}"
    return device, model, method, _checks.output_folder("--out", out)


def run(args: argparse.Namespace) -> int:
    """``odesolve sample``; returns the exit status (0 on success, 2 on bad arguments)."""
    import numpy as np

    from ..execute import execute
    from ..toy import metrics, zoo

    def fail(msg):
        return _checks.fail("sample", msg)

    try:
        device, model, method, out = _check(args)
    except ValueError as err:
        return fail(err)
    path = model.path
    steps = steps_for_nfe(path, method, args.nfe, args.grid)
    if steps is None:
        return fail(f"--nfe {args.nfe} is too small for one step of {method.name!r}")
    grid = make_grid(path, steps, args.grid)
    plan = method.compile(path, grid)

    shape = tuple(zoo.config(args.model)["net"]["shape"])
    x_T = torch.randn((args.n, *shape), generator=torch.Generator().manual_seed(args.seed))
    print(
        f"{args.model}: {method.name} (order {method.order}), {steps} steps on the {args.grid} grid, "
        f"real NFE {plan.calls} (requested {args.nfe}), {args.n} samples, batch {args.batch}, "
        f"{device}, {args.dtype}",
        file=sys.stderr,
    )
    bar = None
    if getattr(args, "progress", True):
        from tqdm import tqdm

        bar = tqdm(total=args.n, unit="img", desc=f"{method.name} NFE {plan.calls}", file=sys.stderr)
    chunks = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, args.n, args.batch):
            xb = x_T[i : i + args.batch].to(device)
            chunks.append(execute(plan, model, xb, noise=_noise(plan, args.seed, i, xb.shape[0])).float().cpu())
            if bar is not None:
                bar.update(xb.shape[0])
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    samples = torch.cat(chunks)

    meta = {
        "model": args.model,
        "method": method.name,
        "order": method.order,
        "nfe": plan.calls,
        "nfe_requested": args.nfe,
        "steps": steps,
        "grid": args.grid,
        "seed": args.seed,
        "n": args.n,
        "device": str(device),
        "dtype": args.dtype,
        "seconds": round(seconds, 3),
    }
    npz = out / "samples.npz"
    np.savez_compressed(npz, samples=samples.numpy(), times=grid.t.numpy(), meta=json.dumps(meta))
    png = out / "grid.png"
    _save_png(samples[:100], png, f"{args.model}: {method.name}, NFE {plan.calls}, seed {args.seed}")
    line = f"wrote {npz} and {png}: {args.n} samples at NFE {plan.calls} in {seconds:.1f} s"
    if args.fd:
        clf, _, _ = metrics.digits_classifier(seed=0)
        with torch.inference_mode():
            fd = metrics.frechet_distance(clf.features(samples), clf.features(zoo.data("digits")))
        line += f"; Frechet distance of classifier features to the data {fd:.3f}"
    print(line)
    return 0


def _noise(plan, seed: int, start: int, count: int):
    """The per-sample noise source of samples ``start .. start + count - 1`` (None for an ODE plan)."""
    if not plan.stochastic:
        return None
    from .. import noise

    keys = [(seed % 2**31) * 2**32 + j for j in range(start, start + count)]
    return noise.BrownianPaths(keys) if plan.correlated_noise else noise.PerSampleNormal(keys)
