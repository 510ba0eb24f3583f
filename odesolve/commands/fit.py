"""``odesolve fit``: fit a sampler to a model of the zoo or an exact toy problem, and save it.

    odesolve fit --model digits --family coefficients --init dpmpp-2m --nfe 5 --shift-times --epochs 6 --out solver.json
    odesolve sample --model digits --solver solver.json ...      # run it (see odesolve sample)

Models: the zoo's networks (``digits``: the grid is ``--grid`` with the steps that make ``--nfe``
calls, as ``odesolve sample`` builds it; the teacher is the reference solver
``odesolve.toy.reference.solve_by_halving`` with ``--teacher-steps`` steps) and the exact toy
problems (``gmm2d``, ``lowrank64``, ...: a Karras grid, the adaptive reference solver as teacher).
Training and validation noise are two seeded draws (``--seed`` and ``--seed + 1``), never mixed.
The file is ``odesolve.learn.load``'s JSON: the grid, the method (a registered name or the
fitted plan's rows), the model's name, the settings, the parameter count, the fit time and the
loss on the validation noise (root mean squared error against the teacher).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from . import _checks

__all__ = ["HELP", "add_arguments", "run"]

HELP = "fit a sampler (grid or coefficients) to a model and save it as a JSON file"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the options of ``odesolve fit`` on ``parser``."""
    from ..commands.sample import GRIDS
    from ..learn import FAMILIES

    parser.add_argument("--model", default="digits", help="a zoo model or a toy problem (default: digits)")
    parser.add_argument("--family", default="coefficients", choices=FAMILIES, help="what is fitted")
    parser.add_argument("--init", default="dpmpp-2m", help="the registered method it starts from (default: dpmpp-2m)")
    parser.add_argument("--nfe", type=int, default=5, help="model calls of the fitted sampler (default: 5)")
    parser.add_argument("--grid", default="trailing", choices=GRIDS, help="initial grid of a zoo model")
    parser.add_argument("--n-train", type=int, default=256, help="training starting points (default: 256)")
    parser.add_argument("--n-val", type=int, default=128, help="validation starting points (default: 128)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of L-BFGS (default: 4)")
    parser.add_argument("--iterations", type=int, default=20, help="L-BFGS iterations per epoch (default: 20)")
    parser.add_argument("--loss", default="mse", choices=("mse", "l2"), help="training loss (default: mse)")
    parser.add_argument(
        "--shift-times", action="store_true", help="coefficients: also move each call's time (up to 1 in lambda)"
    )
    parser.add_argument("--restarts", type=int, default=2, help="starting grids of the first epoch (default: 2)")
    parser.add_argument("--teacher-steps", type=int, default=128, help="reference steps for a zoo model (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training noise; validation: seed + 1")
    parser.add_argument("--out", type=Path, default=Path("solver.json"), help="output file (default: solver.json)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def _setup(args):
    """``(model, grid, teacher, x_train, x_val)`` for ``args.model``."""
    from ..methods import get
    from ..toy import problems, reference, zoo
    from .sample import make_grid, steps_for_nfe

    g_train = torch.Generator().manual_seed(args.seed)
    g_val = torch.Generator().manual_seed(args.seed + 1)
    if args.model in zoo.names():
        model = zoo.load(args.model)
        steps = steps_for_nfe(model.path, get(args.init), args.nfe, args.grid)
        if steps is None:
            raise _checks.UsageError(f"--nfe {args.nfe} is too small for one step of {args.init!r}")
        grid = make_grid(model.path, steps, args.grid)
        shape = tuple(zoo.config(args.model)["net"]["shape"])
        x_train = torch.randn((args.n_train, *shape), generator=g_train)
        x_val = torch.randn((args.n_val, *shape), generator=g_val)

        def teacher(x):
            return reference.solve_by_halving(model, x, steps=args.teacher_steps)

        teacher.__name__ = f"solve_by_halving(steps={args.teacher_steps})"
        return model, grid, teacher, x_train, x_val
    if args.model in problems.names():
        prob = problems.get(args.model)
        model = prob.model(get(args.init).prediction)
        return model, None, None, prob.prior(args.n_train, g_train), prob.prior(args.n_val, g_val)
    raise _checks.UsageError(
        f"--model must be a zoo model {zoo.names()} or a toy problem {problems.names()}, got {args.model!r}"
    )


def run(args: argparse.Namespace) -> int:
    """``odesolve fit``; returns the exit status (0 on success, 2 on bad arguments)."""
    from .. import learn
    from ..methods import get

    try:
        for option in ("nfe", "n_train", "n_val", "epochs", "iterations", "restarts", "teacher_steps"):
            _checks.positive("--" + option.replace("_", "-"), getattr(args, option))
        _checks.seed(args.seed)
        try:
            get(args.init)
        except (KeyError, ValueError) as err:
            raise _checks.UsageError(f"--init: {err}") from None
        if args.out.exists() and args.out.is_dir():
            raise _checks.UsageError(f"--out {str(args.out)!r} is a folder; give a file name")
        model, grid, teacher, x_train, x_val = _setup(args)
        print(f"{args.model}: fitting {args.family} from {args.init} at NFE {args.nfe}", file=sys.stderr)
        fitted = learn.fit(
            model,
            x_train,
            nfe=args.nfe,
            family=args.family,
            init=args.init,
            grid=grid,
            teacher=teacher,
            x_T_val=x_val,
            epochs=args.epochs,
            iterations=args.iterations,
            restarts=args.restarts,
            loss=args.loss,
            shift_times=args.shift_times,
            progress=args.progress,
        )
    except ValueError as err:
        return _checks.fail("fit", err)
    fitted = dataclasses.replace(fitted, model=args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fitted.save(args.out)
    print(
        f"wrote {args.out}: {fitted.family} from {fitted.init}, NFE {fitted.nfe}, {fitted.parameters} parameters, "
        f"held-out RMSE against the teacher {fitted.val_loss:.4g} (from {fitted.init_val_loss:.4g}), "
        f"fit {fitted.fit_seconds:.1f} s"
    )
    return 0
