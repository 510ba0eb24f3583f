"""``odesolve sample``: draw samples from a model of the zoo with a registered method or a fitted solver.

    odesolve sample --model digits --method dpmpp-3m --nfe 10 --n 10000 --batch 1024 --device cpu --seed 0 --out DIR
    odesolve sample --model digits --solver solver.json --n 10000 --out DIR
    torchrun --nproc-per-node 4 -m odesolve sample --model digits --samples 50000 --out DIR

writes ``DIR/samples.npz`` (``samples``: float32, shape ``(n, *image)``, in the model's data
coordinates, unclipped; with the method, the grid times, the real NFE and the seed) and
``DIR/grid.png`` (the first 100 samples). ``run(args)`` is the command; ``add_arguments(parser)``
declares its options; every option is checked before the sampling starts. ``--samples`` is
``--n`` under a name torchrun's own parser does not take for an abbreviation of its options.

NFE budget. ``--nfe`` is the number of network evaluations allowed per sample. The grid gets
``nfe // calls_per_step`` steps, and then as many as fit: a step that ends at sigma = 0 (the last
step of the default grids) takes one model call whatever the method (the DDIM limit ``x = x0_hat``
for the exponential methods; docs/theory.md section 2), so
a singlestep method such as ``dpm-solver-3`` at ``--nfe 10`` runs 4 steps (3 + 3 + 3 + 1 calls),
and a method that spends an extra call on a warm-up (``dpmpp-3m-corrected``) runs one step fewer.
The real NFE (the compiled plan's number of calls) is printed and stored. ``--solver FILE`` (a
sampler saved by ``odesolve.learn``) brings its own grid and coefficients: ``--method``, ``--nfe``
and ``--grid`` are then refused.

Determinism, processes, resuming (``odesolve.distributed``). Sample ``j``'s initial noise and,
for a stochastic method, its noise path are keyed by ``(seed mod 2^31) * 2^32 + j``, so they
depend on neither ``--batch``, the device's random generator nor the number of processes. The
samples are computed in batches of ``--batch`` consecutive indices, written as shards in
``DIR/shards`` and merged: the same ``samples.npz``, byte for byte, from 1 process or N
(``torchrun``) on the same hardware. A killed run restarted with the same command computes only
the missing batches; ``DIR/manifest.json`` refuses a restart with other settings.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from . import _checks

__all__ = ["GRIDS", "HELP", "add_arguments", "make_grid", "run", "steps_for_nfe"]

HELP = "sample from a model of the zoo with a registered method or a fitted solver, in one process or under torchrun"

GRIDS = ("trailing", "lambda", "karras")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the options of ``odesolve sample`` on ``parser``."""
    parser.add_argument("--model", default="digits", help="a model of odesolve.toy.zoo (default: digits)")
    parser.add_argument(
        "--method", default=None, help="a registered method (odesolve methods lists them; default: dpmpp-3m)"
    )
    parser.add_argument("--nfe", type=int, default=None, help="network evaluations per sample (default: 10)")
    parser.add_argument(
        "--samples",
        "--n",
        dest="n",
        type=int,
        default=10000,
        help="number of samples (default: 10000); under torchrun write --samples",
    )
    parser.add_argument(
        "--solver",
        type=Path,
        default=None,
        help="a fitted solver (odesolve.learn's JSON file): its grid and coefficients replace "
        "--method, --nfe and --grid",
    )
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
        default=None,
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


def _plan(args: argparse.Namespace, model):
    """The plan of ``--solver``, or of ``--method`` at ``--nfe`` on ``--grid``; returns
    ``(plan, description)``."""
    from .. import methods

    if args.solver is not None:
        given = [o for o, v in (("--method", args.method), ("--nfe", args.nfe), ("--grid", args.grid)) if v is not None]
        if given:
            raise _checks.UsageError(f"--solver brings its own grid and coefficients; drop {', '.join(given)}")
        from .. import learn

        try:
            fitted = learn.load(args.solver)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise _checks.UsageError(f"--solver {str(args.solver)!r} is not a fitted solver: {err}") from None
        if fitted.grid.path != model.path:
            raise _checks.UsageError(
                f"--solver {str(args.solver)!r} was fitted on the path {fitted.grid.path!r}, but "
                f"--model {args.model!r} runs on {model.path!r}"
            )
        plan = fitted.method.compile(model.path, fitted.grid)
        return plan, f"fitted solver {args.solver.name} ({fitted.family}, init {fitted.init})"
    method = methods.get(args.method or "dpmpp-3m")
    nfe, kind = args.nfe if args.nfe is not None else 10, args.grid or "trailing"
    steps = steps_for_nfe(model.path, method, nfe, kind)
    if steps is None:
        raise _checks.UsageError(f"--nfe {nfe} is too small for one step of {method.name!r}")
    plan = method.compile(model.path, make_grid(model.path, steps, kind))
    return plan, f"{method.name} (order {method.order}), {steps} steps on the {kind} grid, requested NFE {nfe}"


def _check(args: argparse.Namespace):
    """Every option checked before any work; returns ``(device, model, plan, description, out)``."""
    from .. import distributed
    from ..toy import metrics, zoo

    n, _ = (_checks.positive(o, v) for o, v in (("--samples/--n", args.n), ("--batch", args.batch)))
    if args.nfe is not None:
        _checks.positive("--nfe", args.nfe)
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
    if args.solver is not None and not Path(args.solver).is_file():
        raise _checks.UsageError(f"--solver {str(args.solver)!r} is not a file")
    device = distributed.setup(_checks.device(args.device))
    dtype = _DTYPES[args.dtype] if isinstance(args.dtype, str) else args.dtype
    model = zoo.load(args.model, device=device, dtype=dtype)
    plan, description = _plan(args, model)
    name = Path(args.solver).stem if args.solver is not None else plan.method
    out = Path(args.out) if args.out is not None else Path("out") / f"{args.model}-{name}-nfe{plan.calls}"
    return device, model, plan, description, _checks.output_folder("--out", out)


def run(args: argparse.Namespace) -> int:
    """``odesolve sample``; returns the exit status (0 on success, 2 on bad arguments)."""
    from .. import distributed
    from ..toy import metrics, zoo

    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        try:
            device, model, plan, description, out = _check(args)
        except ValueError as err:
            return _checks.fail("sample", err)
        rank, world = distributed.rank_and_world()
        shape = tuple(zoo.config(args.model)["net"]["shape"])
        if rank == 0:
            print(
                f"{args.model}: {description}, real NFE {plan.calls}, {args.n} samples, batch {args.batch}, "
                f"{device.type}, {args.dtype}" + (f", {world} processes" if world > 1 else ""),
                file=sys.stderr,
            )
        method = _method_meta(args, plan)
        meta = {"model": args.model, **method, "nfe": plan.calls, "seed": args.seed, "n": args.n}
        meta.update(device=device.type, dtype=args.dtype, steps=plan.grid.steps)
        try:
            result = distributed.sample(
                model,
                plan,
                out,
                n=args.n,
                shape=shape,
                seed=args.seed,
                batch=args.batch,
                device=device,
                settings={"model": args.model, "dtype": args.dtype},
                meta=meta,
                progress=getattr(args, "progress", True),
            )
        except distributed.SettingsMismatch as err:
            return _checks.fail("sample", err)
        if rank != 0:
            return 0
        samples = torch.from_numpy(result.samples)
        png = out / "grid.png"
        _save_png(samples[:100], png, f"{args.model}: {plan.method}, NFE {plan.calls}, seed {args.seed}")
        what = (
            "already on disk (manifest.json): nothing computed"
            if result.resumed == result.batches
            else (
                f"in {result.seconds:.1f} s"
                + (f", {result.resumed} of {result.batches} batches resumed" if result.resumed else "")
            )
        )
        line = f"wrote {result.file} and {png}: {args.n} samples at NFE {plan.calls} {what}"
        if args.fd:
            clf, _, _ = metrics.digits_classifier(seed=0)
            with torch.inference_mode():
                fd = metrics.frechet_distance(clf.features(samples), clf.features(zoo.data("digits")))
            line += f"; Frechet distance of classifier features to the data {fd:.3f}"
        print(line)
        return 0
    finally:
        if not joined and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _method_meta(args: argparse.Namespace, plan) -> dict:
    """The method's entries of ``meta``: its name and order, the requested NFE and grid, or the solver file."""
    if args.solver is not None:
        return {"method": plan.method, "solver": Path(args.solver).name}
    from .. import methods

    m = methods.get(args.method or "dpmpp-3m")
    return {
        "method": m.name,
        "order": m.order,
        "nfe_requested": args.nfe if args.nfe is not None else 10,
        "grid": args.grid or "trailing",
    }
