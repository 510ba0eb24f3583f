"""``odesolve methods``: list the registered methods with their declared orders."""

from __future__ import annotations

import argparse

HELP = "list the registered methods with their declared orders"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``odesolve methods`` takes no options."""
    return parser


def run(args: argparse.Namespace) -> int:
    from .. import methods

    for name in methods.names():
        m = methods.get(name)
        print(
            f"{name:22s} order {m.order}  calls/step {m.calls_per_step}  history {m.history}  {m.prediction} prediction"
        )
    return 0
