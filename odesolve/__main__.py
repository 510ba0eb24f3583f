"""``python -m odesolve``: the ``odesolve`` command (:mod:`odesolve.commands`)."""

import sys

from .commands import main

sys.exit(main())
