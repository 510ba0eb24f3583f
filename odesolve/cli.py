"""The ``odesolve`` console script (``odesolve.cli:main``); the subcommands live in
[`odesolve.commands`][odesolve.commands]."""

from __future__ import annotations

import sys

from .commands import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
