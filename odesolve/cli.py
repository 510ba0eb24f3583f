"""The ``odesolve`` command: ``odesolve report`` (the main job) and ``odesolve sample``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="odesolve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="orders, errors and stability of methods on an exact problem")
    sample = sub.add_parser("sample", help="sample from a model of the zoo with a registered method")
    sub.add_parser("methods", help="list the registered methods with their declared orders")
    from .analysis import report as report_mod
    from . import sampling as sampling_mod

    report_mod.add_arguments(report)
    report.set_defaults(run=report_mod.run)
    sampling_mod.add_arguments(sample)
    sample.set_defaults(run=sampling_mod.run)
    args = parser.parse_args(argv)
    if args.command == "methods":
        from . import methods

        for name in methods.names():
            m = methods.get(name)
            print(f"{name:22s} order {m.order}  calls/step {m.calls_per_step}  history {m.history}  {m.form} form")
        return 0
    return int(args.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
