"""The registry of method tables: ``names()``, ``get(name)``, ``register(table)``, ``aliases()``.

Adding a method is one table and one line here; the executor, the analysis and the tests that
run over the registry pick it up. Names whose tables compile to plans bit-identical to another
registered table's are aliases: ``get`` answers them, ``names`` lists each distinct method once.

``MIDPOINT``, ``BH1`` and ``HALF_SECOND_DIFFERENCE`` are the published weight rows of
[`ExponentialMultistep`][odesolve.methods.exponential_multistep.ExponentialMultistep] (``weights=MIDPOINT +
HALF_SECOND_DIFFERENCE`` is DPM-Solver++(3M)).
"""

from __future__ import annotations

import difflib

from . import (
    ancestral,
    classical,
    exponential_multistep,
    exponential_rk,
    extended_reverse_sde,
    momentum,
    noise_jumps,
    stochastic,
    stochastic_adams,
)
from .base import Method, chi, phi
from .classical import FixedAdams, RungeKutta
from .exponential_multistep import BH1, HALF_SECOND_DIFFERENCE, MIDPOINT, ExponentialMultistep, Weight
from .exponential_rk import ExponentialRK

__all__ = [
    "BH1",
    "HALF_SECOND_DIFFERENCE",
    "MIDPOINT",
    "ExponentialMultistep",
    "ExponentialRK",
    "FixedAdams",
    "Method",
    "RungeKutta",
    "Weight",
    "aliases",
    "chi",
    "get",
    "names",
    "phi",
    "register",
    "register_alias",
    "unregister",
]

_REGISTRY: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` under ``method.name``."""
    if not isinstance(method, Method):
        raise TypeError(f"method must be an odesolve.methods.Method, got {type(method).__name__}")
    if (method.name in _REGISTRY or method.name in _ALIASES) and not replace:
        raise ValueError(f"a method named {method.name!r} is already registered (pass replace=True)")
    _ALIASES.pop(method.name, None)
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove the method (and its aliases) registered as ``name``; returns its table."""
    if name not in _REGISTRY:
        raise ValueError(f"method {name!r} is not registered (aliases are not unregistered alone)")
    for alias in [a for a, t in _ALIASES.items() if t == name]:
        del _ALIASES[alias]
    return _REGISTRY.pop(name)


def register_alias(alias: str, target: str) -> None:
    """Make ``get(alias)`` answer the table registered as ``target`` (one method, two names)."""
    if alias in _REGISTRY or alias in _ALIASES:
        raise ValueError(f"a method named {alias!r} is already registered")
    if target not in _REGISTRY:
        raise ValueError(f"alias target {target!r} is not registered")
    _ALIASES[alias] = target


def names() -> list[str]:
    """Every distinct registered method (aliases are listed by [`aliases`][odesolve.methods.aliases])."""
    return list(_REGISTRY)


def aliases() -> dict[str, str]:
    """``{alias: name}`` for the names whose plans are bit-identical to a registered method's."""
    return dict(_ALIASES)


def get(name: str | Method) -> Method:
    """The table registered as ``name`` (or aliased to it); an unknown name is refused with the
    closest known names."""
    if isinstance(name, Method):
        return name
    try:
        return _REGISTRY[_ALIASES.get(name, name)]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), [*_REGISTRY, *_ALIASES], n=4, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"method {name!r} is not registered{hint} (odesolve.methods.names() lists all)") from None


for _m in (
    *exponential_rk.TABLES,
    *exponential_multistep.TABLES,
    *classical.TABLES,
    *momentum.TABLES,
    *stochastic.TABLES,
    *stochastic_adams.TABLES,
    *extended_reverse_sde.TABLES,
    *noise_jumps.TABLES,
):
    register(_m)
for _m in ancestral.TABLES:  # stochastic tables built on deterministic ones (ancestral, multistep SDE)
    register(_m)

# Tables that reduce to another's plan on every grid (tests/core/test_registry.py compiles both):
# one output per step is the DDIM update, whatever the interpolation variable or the weight variant.
ALIASED_TABLES = (*exponential_multistep.ALIASED, *classical.ALIASED, *stochastic.ALIASED)
for _m, _target in ALIASED_TABLES:
    register_alias(_m.name, _target)
