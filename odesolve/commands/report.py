"""``odesolve report``: every method's declared, derived and measured order, its error at a few NFE
and its stability interval, as one table, PNG figures and a Markdown report in ``--out``.

The work is ``odesolve.analysis.report.run_report``; this module parses and checks the arguments
(before the minutes of analysis start) and prints the table. (This docstring is the command's
``--help`` text: plain text, no links.)
"""

from __future__ import annotations

import argparse

from . import _checks

HELP = "orders, errors and stability of methods on an exact problem"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Declare the options of ``odesolve report`` on ``parser``."""
    parser.add_argument(
        "methods",
        nargs="*",
        metavar="METHOD",
        help="registered method names (default: all; odesolve methods lists them)",
    )
    parser.add_argument(
        "--problem",
        default="gmm2d",
        help="exact problem: a name of odesolve.toy.problems or of the small built-in ones of "
        "odesolve.analysis.problems (default: gmm2d)",
    )
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20], help="NFE budgets for the error columns")
    parser.add_argument("--out", default="report", help="folder for report.md and the figures; created if missing")
    parser.add_argument("--quick", action="store_true", help="fewer samples and resolutions (a smoke test)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check(args: argparse.Namespace) -> None:
    from .. import methods
    from ..analysis import problems

    for k in args.nfe:
        _checks.positive("--nfe", k)
    for name in args.methods:
        methods.get(name)  # ValueError naming the known methods
    if args.problem not in problems.names():
        raise _checks.UsageError(f"--problem must be one of {problems.names()}, got {args.problem!r}")
    _checks.output_folder("--out", args.out)


def run(args: argparse.Namespace) -> int:
    """Run ``odesolve report`` with parsed ``args``; prints the table. Exit status 0, or 1 when a
    declared order disagrees with the derived one, 2 on bad arguments."""
    from ..analysis.report import run_report

    try:
        _check(args)
    except ValueError as err:
        return _checks.fail("report", err)
    res = run_report(
        args.methods or None,
        args.problem,
        tuple(args.nfe),
        args.out,
        args.quick,
        progress=not args.no_progress,
        figures=not args.no_figures,
    )
    print(res.table())
    if res.markdown:
        print(
            f"\nwrote {res.markdown}"
            + (f" and {len(res.figures)} figures" if res.figures else "")
            + f" in {res.seconds:.1f} s"
        )
    return 0 if res.ok else 1
