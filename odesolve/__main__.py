"""``python -m odesolve``: the ``odesolve`` command ([`odesolve.commands`][odesolve.commands])."""

import sys

from .commands import main

sys.exit(main())
