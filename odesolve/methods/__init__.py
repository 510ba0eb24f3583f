"""The registry of method tables: ``names()``, ``get(name)``, ``register(table)``.

Adding a method is one table and one line here; the executor, the analysis and the tests that
run over the registry pick it up.
"""

from __future__ import annotations

import difflib

from . import classical, exponential_multistep, exponential_rk
from .base import Method, chi, phi
from .classical import FixedAdams, RungeKutta
from .exponential_multistep import ExponentialMultistep
from .exponential_rk import ExponentialRK

__all__ = ["names", "get", "register", "Method", "ExponentialRK", "ExponentialMultistep", "RungeKutta", "FixedAdams",
           "phi", "chi"]

_REGISTRY: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` under ``method.name``."""
    if not isinstance(method, Method):
        raise TypeError(f"method must be an odesolve.methods.Method, got {type(method).__name__}")
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a method named {method.name!r} is already registered (pass replace=True)")
    _REGISTRY[method.name] = method
    return method


def names() -> list[str]:
    """Every registered method name."""
    return list(_REGISTRY)


def get(name: "str | Method") -> Method:
    """The table registered as ``name``; an unknown name is refused with the closest known names."""
    if isinstance(name, Method):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), _REGISTRY, n=4, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"method {name!r} is not registered{hint} (odesolve.methods.names() lists all)") from None


for _m in (*exponential_rk.TABLES, *exponential_multistep.TABLES, *classical.TABLES):
    register(_m)
