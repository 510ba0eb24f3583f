"""Plans: a sampler compiled for one (method, path, grid) into a straight-line program.

A plan is a list of model calls k = 0 .. K-1. The executor keeps a state ``s`` (initially x_T)
and a ring of the last ``window`` model outputs ``F``, converted to the plan's ``prediction``
("x0" or "eps"). Call k does

    X_k  = input_state[k]  * s + sum_j input_hist[k, j]  * F_{k-j}      (j >= 1)
    F_k  = prediction of the model at (X_k, times[k])
    s   <- update_state[k] * s + sum_j update_hist[k, j] * F_{k-j}  +  update_noise[k] * xi_k   (j >= 0)

and the result is the final ``s``. A noise jump before a call (the churn of Karras et al.'s
stochastic sampler) adds the same ``xi_k`` to the input as well: ``X_k += input_noise[k] * xi_k``
(``input_noise`` is 0 unless a method sets it). Every deterministic sampler in the literature is of this form
(its coefficients depend only on the grid); SDE samplers add the Gaussian inputs ``xi_k``.

Noise: ``xi_k`` is standard normal, independent across calls, unless the plan names the Brownian
increment it is: ``noise_interval[k] = (a, b)`` (in the path's time) makes
``xi_k = (W(b) - W(a)) / sqrt(|b - a|)`` for one Brownian motion W per sample, so that a method
may consume correlated increments (several sub-intervals of one step) and a Brownian noise source
([`odesolve.noise.BrownianPaths`][odesolve.noise.BrownianPaths]) follows one path whatever the grid. Independent normals
are the law of these increments exactly when the noisy intervals do not overlap
(``not plan.correlated_noise``).
Coefficients are float64 torch tensors, so gradients flow from them to the grid.

Per-sample plans: every coefficient and time may carry a trailing batch axis (``times`` of shape
``(calls, batch)``, ``input_hist`` of shape ``(calls, window, batch)``): sample b then runs the
plan with the coefficients ``[..., b]`` (one step of a different length per sample, as the
adaptive driver `odesolve.adaptive` compiles it). ``grid`` is then the envelope of the
samples' steps; ``step`` has no batch axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float64, Int64
from torch import Tensor

from .grids import Grid
from .paths import Path

__all__ = ["Plan", "Rows"]


@dataclass(frozen=True, eq=False)
class Plan:
    """Float64 coefficients of a compiled sampler (see the module docstring for the semantics)."""

    method: str
    path: Path
    grid: Grid
    prediction: Literal["x0", "eps"]
    times: Float64[Tensor, " calls *batch"]  # model-call times, in the path's time
    step: Int64[Tensor, " calls"]  # grid step of each call
    input_state: Float64[Tensor, " calls *batch"]
    input_hist: Float64[Tensor, " calls window *batch"]  # column 0 is always 0
    update_state: Float64[Tensor, " calls *batch"]
    update_hist: Float64[Tensor, " calls window *batch"]
    update_noise: Float64[Tensor, " calls *batch"]
    meta: dict = field(default_factory=dict)
    noise_interval: Float64[Tensor, "calls 2"] | None = None  # Brownian interval (a, b) of each noisy call
    input_noise: Float64[Tensor, " calls *batch"] | None = None  # X_k += input_noise[k] xi_k (None: zeros)

    def __post_init__(self):
        if self.times.ndim not in (1, 2):
            raise ValueError(f"plan.times must have shape (calls,) or (calls, batch), got {tuple(self.times.shape)}")
        K, batch = self.times.shape[0], tuple(self.times.shape[1:])
        if self.input_noise is None:
            object.__setattr__(self, "input_noise", torch.zeros(K, *batch, dtype=torch.float64))
        for name in ("input_state", "update_state", "update_noise", "input_noise", "step"):
            want = (K,) if name == "step" else (K, *batch)
            if tuple(getattr(self, name).shape) != want:
                raise ValueError(f"plan.{name} must have shape {want}, got {tuple(getattr(self, name).shape)}")
        for name in ("input_hist", "update_hist"):
            v = getattr(self, name)
            if v.ndim != 2 + len(batch) or v.shape[0] != K or tuple(v.shape[2:]) != batch:
                want = f"({K}, window{', batch' * len(batch)})"
                raise ValueError(f"plan.{name} must have shape {want}, got {tuple(v.shape)}")
        if self.prediction not in ("x0", "eps"):
            raise ValueError(f"prediction must be 'x0' or 'eps', got {self.prediction!r}")
        for name in (
            "times",
            "input_state",
            "input_hist",
            "update_state",
            "update_hist",
            "update_noise",
            "input_noise",
        ):
            v = getattr(self, name)
            if not bool(torch.isfinite(v).all()):
                bad = torch.nonzero(~torch.isfinite(v))[0].tolist()
                raise ValueError(f"plan.{name} of {self.method!r} has a non-finite coefficient at index {bad}")
        if bool((self.input_hist[:, 0] != 0).any()):
            raise ValueError("plan.input_hist[:, 0] must be 0: a call cannot use its own output")
        if self.noise_interval is not None:
            iv = self.noise_interval
            if not isinstance(iv, Tensor) or iv.shape != (K, 2) or iv.dtype != torch.float64:
                raise ValueError(
                    f"plan.noise_interval must be a float64 tensor of shape ({K}, 2), got "
                    f"{getattr(iv, 'dtype', type(iv).__name__)} {tuple(getattr(iv, 'shape', ()))}"
                )
            named, unnamed = torch.isfinite(iv).all(1), torch.isnan(iv).all(1)  # NaN rows: independent normals
            bad = self._noisy() & ~((named & (iv[:, 0] != iv[:, 1])) | unnamed)
            if bool(bad.any()):
                raise ValueError(
                    f"plan.noise_interval of {self.method!r}: noisy call {int(torch.nonzero(bad)[0])} "
                    "needs a finite interval of positive length (or NaN, NaN: an independent normal)"
                )

    @property
    def calls(self) -> int:
        """Number of model calls (NFE)."""
        return self.times.shape[0]

    @property
    def batch(self) -> int | None:
        """The number of samples of a per-sample plan (coefficients with a batch axis), else None."""
        return self.times.shape[1] if self.times.ndim == 2 else None

    @property
    def window(self) -> int:
        return self.update_hist.shape[1]

    def _noisy(self) -> Tensor:
        """The calls that draw a normal xi_k."""
        return (self.update_noise != 0) | (self.input_noise != 0)

    @property
    def stochastic(self) -> bool:
        return bool(self._noisy().any())

    @property
    def correlated_noise(self) -> bool:
        """Whether two noisy calls name overlapping Brownian intervals (their ``xi`` are correlated:
        only a Brownian noise source draws them in law)."""
        if self.noise_interval is None:
            return False
        iv = self.noise_interval.detach()
        iv = iv[self._noisy() & torch.isfinite(iv).all(1)]
        lo, hi = iv.min(1).values, iv.max(1).values
        order = torch.argsort(lo)
        return bool((hi[order][:-1] > lo[order][1:]).any())

    def table(self, digits: int = 6) -> str:
        """The coefficients as a readable table, one line per model call."""
        W = self.window
        f = lambda v: f"{float(v):+.{digits}g}"
        head = f"{self.method} on {self.grid!r}: {self.calls} calls, history {W}, buffer holds {self.prediction}"
        lines = [head, f"{'k':>3} {'step':>4} {'t':>12} | input: s, F[k-1..k-{W - 1}] | update: s, F[k..k-{W - 1}]"]
        for k in range(self.calls):
            inp = " ".join(f(v) for v in [self.input_state[k], *self.input_hist[k, 1:]])
            up = " ".join(f(v) for v in [self.update_state[k], *self.update_hist[k]])
            noise = f"  noise {f(self.update_noise[k])}" if self.stochastic else ""
            if self.input_noise[k] != 0:
                noise += f" (input {f(self.input_noise[k])})"
            if (
                self.stochastic
                and self.noise_interval is not None
                and self._noisy()[k]
                and bool(torch.isfinite(self.noise_interval[k]).all())
            ):
                noise += f" dW[{float(self.noise_interval[k, 0]):.6g}, {float(self.noise_interval[k, 1]):.6g}]"
            lines.append(f"{k:>3} {int(self.step[k]):>4} {float(self.times[k]):>12.6g} | {inp} | {up}{noise}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Plan({self.method!r}, calls={self.calls}, window={self.window}, prediction={self.prediction!r})"


def _f64(v) -> Tensor:
    return v if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64)


class Rows:
    """The rows of a plan with K calls, given sparsely and batch-wise (tensors over many calls at once),
    so that a method compiles all its steps with a few tensor operations:

    - ``call(k, step, t)``: calls k are made at times t in grid steps ``step``;
    - ``input_state(k, c)`` / ``update_state(k, c)``: the factor of the state (default 1);
    - ``input(k, j, c)`` / ``update(k, j, c)``: add c F_j to the input / update row of call k
      (entries of one (k, j) add up);
    - ``noise(k, c, a, b, input=0)``: call k's update adds ``c xi_k`` (and its input ``input xi_k``),
      ``xi_k`` the normalised Brownian increment over ``[a, b]`` (path time); without ``a, b`` an
      independent normal.

    `plan` builds the dense [`Plan`][odesolve.plan.Plan] (window = the largest k - j + 1); every coefficient
    stays differentiable. With ``batch`` the rows are per-sample: times and coefficients broadcast
    to ``(len(k), batch)`` (a per-sample plan, module docstring).
    """

    def __init__(self, K: int, batch: int | None = None):
        self.K = int(K)
        self._batch = () if batch is None else (int(batch),)
        self._times, self._step, self._in_s, self._up_s, self._in, self._up = [], [], [], [], [], []
        self._noise, self._interval, self._in_noise = [], [], []

    @staticmethod
    def _idx(k) -> Tensor:
        return torch.as_tensor(k, dtype=torch.int64).reshape(-1)

    def call(self, k, step, t):
        k = self._idx(k)
        self._times.append((k, self._values(t, k)))
        self._step.append((k, torch.as_tensor(step, dtype=torch.int64).expand(k.shape)))

    def input_state(self, k, c):
        k = self._idx(k)
        self._in_s.append((k, self._values(c, k)))

    def update_state(self, k, c):
        k = self._idx(k)
        self._up_s.append((k, self._values(c, k)))

    def input(self, k, j, c):
        k, j = self._idx(k), self._idx(j)
        if k.numel() and bool((j >= k).any() | (j < 0).any()):
            raise ValueError("an input row refers to the output of a call that is not yet known")
        self._in.append((k, j, self._values(c, k)))

    def update(self, k, j, c):
        k, j = self._idx(k), self._idx(j)
        if k.numel() and bool((j > k).any() | (j < 0).any()):
            raise ValueError("an update row refers to the output of a call that is not yet known")
        self._up.append((k, j, self._values(c, k)))

    def noise(self, k, c, a=None, b=None, input=0.0):
        k = self._idx(k)
        self._noise.append((k, self._values(c, k)))
        self._in_noise.append((k, self._values(input, k)))
        if (a is None) != (b is None):
            raise ValueError("a noise interval needs both ends a and b")
        if a is not None:
            ab = torch.stack(
                [
                    torch.as_tensor(a, dtype=torch.float64).expand(k.shape),
                    torch.as_tensor(b, dtype=torch.float64).expand(k.shape),
                ],
                -1,
            )
            self._interval.append((k, ab))

    def _values(self, c, k: Tensor) -> Tensor:
        return torch.as_tensor(c, dtype=torch.float64).expand(*k.shape, *self._batch)

    def _vector(self, pairs, fill, dtype=torch.float64, batched: bool = True) -> Tensor:
        out = torch.full((self.K, *(self._batch if batched else ())), fill, dtype=dtype)
        for k, v in pairs:
            if k.numel():
                out = out.index_put((k,), v.to(dtype))
        return out

    def _dense(self, triples, W) -> Tensor:
        out = torch.zeros(self.K, W, *self._batch, dtype=torch.float64)
        for k, j, c in triples:
            if k.numel():
                out = out.index_put((k, k - j), c, accumulate=True)
        return out

    def plan(self, method: str, path: Path, grid: Grid, prediction: str, meta: dict | None = None) -> Plan:
        ones = [(k, torch.ones_like(k, dtype=torch.float64)) for k, _ in self._times]
        called = self._vector(ones, 0.0, batched=False)
        if not bool((called == 1).all()):
            raise ValueError(f"{method}: calls {torch.nonzero(called != 1).flatten()[:4].tolist()} have no time")
        W = max([1] + [int((k - j).max()) + 1 for k, j, _ in self._in + self._up if k.numel()])
        return Plan(
            method=method,
            path=path,
            grid=grid,
            prediction=prediction,
            times=self._vector(self._times, 0.0),
            step=self._vector(self._step, 0, torch.int64, batched=False),
            input_state=self._vector(self._in_s, 1.0),
            input_hist=self._dense(self._in, W),
            update_state=self._vector(self._up_s, 1.0),
            update_hist=self._dense(self._up, W),
            update_noise=self._vector(self._noise, 0.0),
            meta=meta or {},
            noise_interval=self._intervals(),
            input_noise=self._vector(self._in_noise, 0.0),
        )

    def _intervals(self) -> Tensor | None:
        if not self._interval:
            return None
        out = torch.full((self.K, 2), math.nan, dtype=torch.float64)
        for k, ab in self._interval:
            if k.numel():
                out = out.index_put((k,), ab)
        return out
