"""The ``odesolve`` command: one module per subcommand, wired here.

    odesolve report  [METHOD ...] [--problem gmm2d] [--nfe 5 10 20] [--out report]
    odesolve sample  [--model digits] [--method dpmpp-3m | --solver FILE] [--nfe 10] [--samples 10000] [--out DIR]
    torchrun --nproc-per-node N -m odesolve sample ... --samples 50000 --out DIR
    odesolve methods

Each subcommand module declares ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status: 0 success, 1 a failed check, 2 bad arguments). Arguments are
validated before any work starts (`odesolve.commands._checks`). ``python -m odesolve`` and the
``odesolve`` console script (``odesolve.cli:main``) both call [`main`][odesolve.commands.main]. A new
subcommand is a module here and its name in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS = ("report", "sample", "methods", "fit")  # one module of this package each


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``odesolve`` with every subcommand."""
    top = argparse.ArgumentParser(prog="odesolve", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        p = sub.add_parser(
            name, help=module.HELP, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``odesolve`` on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = parser().parse_args(argv)
    return int(args.run(args) or 0)
