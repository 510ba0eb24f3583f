"""Plans: a sampler compiled for one (method, path, grid) into a straight-line program.

A plan is a list of model calls k = 0 .. K-1. The executor keeps a state ``s`` (initially x_T)
and a ring of the last ``window`` model outputs ``F``, converted to the plan's ``prediction``
("x0" or "eps"). Call k does

    X_k  = input_state[k]  * s + sum_j input_hist[k, j]  * F_{k-j}      (j >= 1)
    F_k  = prediction of the model at (X_k, times[k])
    s   <- update_state[k] * s + sum_j update_hist[k, j] * F_{k-j}  +  update_noise[k] * xi_k   (j >= 0)

and the result is the final ``s``. Every deterministic sampler in the literature is of this form
(its coefficients depend only on the grid); SDE samplers add the Gaussian inputs ``xi_k``.
Coefficients are float64 torch tensors, so gradients flow from them to the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .grids import Grid
from .paths import Path

__all__ = ["Plan", "LinComb", "PlanBuilder"]


@dataclass(frozen=True, eq=False)
class Plan:
    """Float64 coefficients of a compiled sampler (see the module docstring for the semantics)."""

    method: str
    path: Path
    grid: Grid
    prediction: Literal["x0", "eps"]
    times: Tensor  # (K,) model-call times, in the path's time
    step: Tensor  # (K,) grid step of each call (int64)
    input_state: Tensor  # (K,)
    input_hist: Tensor  # (K, W); column 0 is always 0
    update_state: Tensor  # (K,)
    update_hist: Tensor  # (K, W)
    update_noise: Tensor  # (K,)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        K = self.times.numel()
        for name in ("input_state", "update_state", "update_noise", "step"):
            if getattr(self, name).shape != (K,):
                raise ValueError(f"plan.{name} must have shape ({K},), got {tuple(getattr(self, name).shape)}")
        for name in ("input_hist", "update_hist"):
            v = getattr(self, name)
            if v.ndim != 2 or v.shape[0] != K:
                raise ValueError(f"plan.{name} must have shape ({K}, window), got {tuple(v.shape)}")
        if self.prediction not in ("x0", "eps"):
            raise ValueError(f"prediction must be 'x0' or 'eps', got {self.prediction!r}")
        for name in ("times", "input_state", "input_hist", "update_state", "update_hist", "update_noise"):
            v = getattr(self, name)
            if not bool(torch.isfinite(v).all()):
                bad = torch.nonzero(~torch.isfinite(v))[0].tolist()
                raise ValueError(f"plan.{name} of {self.method!r} has a non-finite coefficient at index {bad}")
        if bool((self.input_hist[:, 0] != 0).any()):
            raise ValueError("plan.input_hist[:, 0] must be 0: a call cannot use its own output")

    @property
    def calls(self) -> int:
        """Number of model calls (NFE)."""
        return self.times.numel()

    @property
    def window(self) -> int:
        return self.update_hist.shape[1]

    @property
    def stochastic(self) -> bool:
        return bool((self.update_noise != 0).any())

    def table(self, digits: int = 6) -> str:
        """The coefficients as a readable table, one line per model call."""
        W = self.window
        f = lambda v: f"{float(v):+.{digits}g}"  # noqa: E731
        head = f"{self.method} on {self.grid!r}: {self.calls} calls, history {W}, buffer holds {self.prediction}"
        lines = [head, f"{'k':>3} {'step':>4} {'t':>12} | input: s, F[k-1..k-{W - 1}] | update: s, F[k..k-{W - 1}]"]
        for k in range(self.calls):
            inp = " ".join(f(v) for v in [self.input_state[k], *self.input_hist[k, 1:]])
            up = " ".join(f(v) for v in [self.update_state[k], *self.update_hist[k]])
            noise = f"  noise {f(self.update_noise[k])}" if self.stochastic else ""
            lines.append(f"{k:>3} {int(self.step[k]):>4} {float(self.times[k]):>12.6g} | {inp} | {up}{noise}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Plan({self.method!r}, calls={self.calls}, window={self.window}, prediction={self.prediction!r})"


class LinComb(dict):
    """A linear combination of the state ``"s"`` and model outputs ``F_k`` (keys: call index k)."""

    def __add__(self, other: "LinComb") -> "LinComb":
        out = LinComb(self)
        for key, v in other.items():
            out[key] = out[key] + v if key in out else v
        return out

    def __sub__(self, other: "LinComb") -> "LinComb":
        return self + other * -1.0

    def __mul__(self, c) -> "LinComb":
        return LinComb({key: v * c for key, v in self.items()})

    __rmul__ = __mul__


def _f64(v) -> Tensor:
    return v if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64)


class PlanBuilder:
    """Collects calls and state updates written as :class:`LinComb` and builds a :class:`Plan`."""

    def __init__(self, method: str, grid: Grid, prediction: str):
        self.method, self.grid, self.prediction = method, grid, prediction
        self.times, self.steps, self.inputs, self.updates, self.noise = [], [], [], [], []

    def call(self, t: Tensor, step: int, input: LinComb | None = None) -> int:
        """Add a model call at time ``t`` on ``input`` (default: the state); returns its index."""
        self.times.append(_f64(t))
        self.steps.append(step)
        self.inputs.append(LinComb({"s": _f64(1.0)}) if input is None else input)
        self.updates.append(None)
        self.noise.append(_f64(0.0))
        return len(self.times) - 1

    def update(self, new_state: LinComb, noise=0.0):
        """Set the state after the last call to ``new_state`` (plus ``noise`` times a N(0, I) draw)."""
        if self.updates[-1] is not None:
            raise RuntimeError("one state update per call")
        self.updates[-1] = new_state
        self.noise[-1] = _f64(noise)

    def build(self, path: Path, **meta) -> Plan:
        K = len(self.times)
        identity = LinComb({"s": _f64(1.0)})
        updates = [identity if u is None else u for u in self.updates]
        W = 1
        for k in range(K):
            for key in list(self.inputs[k]) + list(updates[k]):
                if key != "s":
                    if not (0 <= key <= k) or (key == k and key in self.inputs[k]):
                        raise ValueError(f"call {k} refers to the output of call {key}, which is not yet known")
                    W = max(W, k - key + 1)
        zero = _f64(0.0)

        def rows(combs):
            state = torch.stack([_f64(c.get("s", zero)) for c in combs])
            hist = torch.stack([torch.stack([_f64(c.get(k - j, zero)) for j in range(W)]) for k, c in enumerate(combs)])
            return state, hist

        in_s, in_h = rows(self.inputs)
        up_s, up_h = rows(updates)
        return Plan(method=self.method, path=path, grid=self.grid, prediction=self.prediction,
                    times=torch.stack(self.times), step=torch.tensor(self.steps, dtype=torch.int64),
                    input_state=in_s, input_hist=in_h, update_state=up_s, update_hist=up_h,
                    update_noise=torch.stack(self.noise), meta=meta)
