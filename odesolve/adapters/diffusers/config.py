"""Reading a diffusers scheduler config: its fields as a dict, and refusals that name the field.

A config is a scheduler, its ``.config`` or a plain dict (a saved ``scheduler_config.json``).
diffusers records which fields hold only their class's defaults (``_use_default_values``) and drops
them when a config moves to another scheduler class; `read_config` drops them too, so that
``grid_from_config(cfg)`` is the grid of ``OdesolveScheduler.from_config(cfg)``. The fields that
tell the model families apart (``keep``: each family's ``marks``) are kept even where they hold defaults.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

__all__ = ["check_common", "count", "num_train_timesteps", "positive", "read_config", "refuse"]


def read_config(config, keep=()) -> dict:
    """The config as a dict without its default-valued fields (see the module docstring).

    A scheduler object adds its class name as ``_class_name`` (saved configs carry it already)."""
    name = None
    if hasattr(config, "config") and not isinstance(config, dict):
        name = type(config).__name__
        config = config.config
    if not hasattr(config, "get") or not hasattr(config, "items"):
        raise TypeError(f"config must be a diffusers scheduler, its .config or a dict, got {type(config).__name__}")
    defaults = set(config.get("_use_default_values", None) or ()) - set(keep)
    cfg = {k: v for k, v in dict(config).items() if k not in defaults and k != "_use_default_values"}
    if name is not None:
        cfg.setdefault("_class_name", name)
    return cfg


def refuse(cfg: dict, field: str, allowed: tuple | Callable, why: str = "") -> None:
    """Raise a ``ValueError`` naming ``field`` unless its value is in ``allowed`` (or ``allowed(value)``)."""
    value = cfg.get(field, None)
    ok = value in allowed if isinstance(allowed, tuple) else allowed(value)
    if not ok:
        expected = f" (expected one of {allowed})" if isinstance(allowed, tuple) else ""
        raise ValueError(
            f"config field {field}={value!r} is not supported by odesolve's diffusers adapter"
            + expected
            + (f": {why}" if why else "")
        )


def check_common(cfg: dict) -> None:
    """Refuse the options no family supports (each changes what the network or the grid means)."""
    refuse(cfg, "timestep_type", (None, "discrete"), "the network must take the timestep index")
    refuse(cfg, "interpolation_type", (None, "linear"))
    refuse(cfg, "invert_sigmas", (None, False))
    refuse(cfg, "stochastic_sampling", (None, False))
    refuse(cfg, "euler_at_final", (None, False), "use lower_order_final or a final step to sigma = 0")
    refuse(cfg, "lambda_min_clipped", lambda v: v is None or v == -math.inf)
    refuse(
        cfg,
        "variance_type",
        (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"),
    )
    num_train_timesteps(cfg)


def count(value, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools, fractions, strings and NaN are refused naming ``name``."""
    ok = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not ok or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def num_train_timesteps(cfg: dict) -> int:
    """The config's ``num_train_timesteps`` (1000 when absent), at least 2."""
    return count(cfg.get("num_train_timesteps", 1000), "config field num_train_timesteps", minimum=2)


def positive(cfg: dict, field: str, default: float) -> float:
    """A finite positive float field (``default`` when absent or None)."""
    value = cfg.get(field)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
        raise ValueError(f"config field {field} must be a finite positive number, got {value!r}")
    return float(value)
