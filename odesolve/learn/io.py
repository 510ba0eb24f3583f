"""Fitted samplers on disk: one JSON file, every float64 written as its shortest round-trip repr
(Python's ``json`` does), so a loaded sampler runs bit-identically to the saved one."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path as FsPath

import torch
from torch import Tensor

from .. import methods as _methods
from .. import paths as _paths
from ..grids import Grid
from ..methods.fitted import FittedPlan
from .fit import Fitted

__all__ = ["FORMAT", "load", "save"]

FORMAT = "odesolve.learn/1"
_PATHS = {
    c.__name__: c
    for c in (_paths.EDM, _paths.VE, _paths.VPLinear, _paths.VPCosine, _paths.VPDiscrete, _paths.FlowMatching)
}


def _path_to_json(path: _paths.Path) -> dict:
    name = type(path).__name__
    if _PATHS.get(name) is not type(path):
        raise TypeError(f"path {path!r} of type {name} cannot be saved (known: {sorted(_PATHS)})")
    out = {"type": name}
    for f in dataclasses.fields(path):
        if f.init:
            v = getattr(path, f.name)
            v = v.tolist() if isinstance(v, Tensor) else v
            out[f.name] = repr(v) if isinstance(v, float) and not math.isfinite(v) else v  # JSON has no inf
    return out


def _path_from_json(d: dict) -> _paths.Path:
    d = dict(d)
    cls = _PATHS.get(d.pop("type", None))
    if cls is None:
        raise ValueError(f"unknown path type in the file: {d!r}")
    if cls is _paths.VPDiscrete:
        return cls(torch.tensor(d["betas"], dtype=torch.float64))
    return cls(**{k: float(v) if isinstance(v, str) else v for k, v in d.items()})


def save(fitted: Fitted, file) -> None:
    """Write ``fitted`` to ``file`` (JSON)."""
    if not isinstance(fitted, Fitted):
        raise TypeError(f"fitted must be an odesolve.learn.Fitted, got {type(fitted).__name__}")
    m = fitted.method
    if isinstance(m, FittedPlan):
        fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "path"}
        method = {"kind": "plan", **fields}
    else:
        if _methods.get(m.name) is not m:
            raise ValueError(
                f"method {m.name!r} is not the registered table of that name; only registered methods "
                "and FittedPlan tables can be saved"
            )
        method = {"kind": "registered", "name": m.name}
    doc = {
        "format": FORMAT,
        "family": fitted.family,
        "init": fitted.init,
        "nfe": fitted.nfe,
        "path": _path_to_json(fitted.grid.path),
        "grid": fitted.grid.t.tolist(),
        "method": method,
        "parameters": fitted.parameters,
        "train_loss": fitted.train_loss,
        "val_loss": fitted.val_loss,
        "init_val_loss": fitted.init_val_loss,
        "fit_seconds": fitted.fit_seconds,
        "history": list(fitted.history),
        "settings": fitted.settings,
        "model": fitted.model,
    }
    FsPath(file).write_text(json.dumps(doc, indent=1, allow_nan=False))


def load(file) -> Fitted:
    """The [`Fitted`][odesolve.learn.fit.Fitted] sampler saved in ``file`` by
    [`Fitted.save`][odesolve.learn.fit.Fitted.save]."""
    doc = json.loads(FsPath(file).read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{file}: not a fitted sampler (format {FORMAT!r} expected)")
    path = _path_from_json(doc["path"])
    grid = Grid(path, torch.tensor(doc["grid"], dtype=torch.float64))
    spec = dict(doc["method"])
    kind = spec.pop("kind")
    if kind == "registered":
        method = _methods.get(spec["name"])
    elif kind == "plan":
        rows = lambda v: tuple(tuple(float(c) for c in r) for r in v)
        for name in ("grid_times", "times", "input_state", "update_state"):
            spec[name] = tuple(float(v) for v in spec[name])
        spec["input_hist"], spec["update_hist"] = rows(spec["input_hist"]), rows(spec["update_hist"])
        spec["step"] = tuple(int(s) for s in spec["step"])
        method = FittedPlan(path=path, **spec)
    else:
        raise ValueError(f"{file}: unknown method kind {kind!r}")
    return Fitted(
        family=doc["family"],
        grid=grid,
        method=method,
        nfe=doc["nfe"],
        init=doc["init"],
        parameters=doc["parameters"],
        train_loss=doc["train_loss"],
        val_loss=doc["val_loss"],
        init_val_loss=doc["init_val_loss"],
        fit_seconds=doc["fit_seconds"],
        history=tuple(doc["history"]),
        settings=doc["settings"],
        model=doc["model"],
    )
