"""Noise that belongs to each sample: sources keyed by one integer seed per sample.

A stochastic plan adds ``update_noise[k] * xi_k`` at call k ([`odesolve.plan`][odesolve.plan]). The executor
asks a noise source for ``xi_k`` of the whole batch; a source answers every sample from its own
seed alone, so sample i's noise (and, for a model that treats samples independently, its result)
does not depend on the batch size, its position in the batch or the number of processes.

- [`PerSampleNormal`][odesolve.noise.PerSampleNormal]: independent standard normals per call, keyed by (seed, call
  index).
- [`BrownianPaths`][odesolve.noise.BrownianPaths]: one two-sided Brownian motion ``W: R -> R^d`` per sample (``W(0) =
  0``), a deterministic function of (seed, time): it answers any increment ``W(t) - W(s)`` the same
  whatever order and resolution the grid queries it in, so the same seed at 10 and at 40 steps
  follows the same path. For a call whose plan names its Brownian interval (``plan.noise_interval``)
  the source answers ``xi_k = (W(b) - W(a)) / sqrt(|b - a|)``; a call without an interval gets an
  independent normal keyed by (seed, call).

The normals are counter-based: ``z = Box-Muller(u1, u2)`` with ``u1, u2`` the splitmix64 stream
(Steele, Lea & Flood, OOPSLA 2014) of a key hashed from (seed, what is drawn, element), computed
in int64 and float64 torch ops on the target device, no generator state.

The Brownian path is Levy's construction (Levy 1948; Ciesielski's Schauder basis) on dyadic blocks:
on each side of 0, block 0 is [0, 1] and block j >= 1 is [2^(j-1), 2^j]. The value at a block's end
is the sum of independent N(0, width) block increments; inside a block of width w,

    W(a + u) = W(a) + u/w * sqrt(w) Z_root + sum_{l < depth} tent_l(u) Z_{l, node_l(u)},

with ``tent_l`` the hat function of the level-l dyadic interval containing u, of height
``sqrt(w 2^-l) / 2`` (the standard deviation of the Brownian bridge at its midpoint). The path is
exactly Brownian at the dyadic points of level ``depth`` and linear between them (a resolution of
``w 2^-depth``: 2.3e-10 for ``|t| <= 1`` at the default depth 32).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["BrownianPaths", "NoiseSource", "PerSampleNormal"]

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_CALL, _BROWNIAN = 1, 2  # what is drawn: a normal per call, a node of the Brownian construction


def _signed(v: int) -> int:
    """A 64-bit word as the int64 torch stores."""
    v &= _MASK
    return v - (1 << 64) if v >= 1 << 63 else v


def _mix(z: int) -> int:
    """The splitmix64 finaliser on Python ints (the reference the torch version is tested against)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


@functools.lru_cache(maxsize=1 << 16)
def _key(*words: int) -> int:
    """One 64-bit key from a tuple of integers."""
    h = 0
    for w in words:
        h = _mix(h ^ (w & _MASK) + _GAMMA)
    return h


def _srl(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 words."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix_t(z: Tensor) -> Tensor:
    """The splitmix64 finaliser on int64 tensors (multiplication wraps modulo 2^64)."""
    z = (z ^ _srl(z, 30)) * _signed(_M1)
    z = (z ^ _srl(z, 27)) * _signed(_M2)
    return z ^ _srl(z, 31)


def _uniform(z: Tensor) -> Tensor:
    """The top 53 bits of a word as a float64 in (0, 1)."""
    return (_srl(z, 11).to(torch.float64) + 0.5) * 2.0**-53


def _normals(bases: Tensor, d: int) -> Tensor:
    """Standard normals of shape ``(*bases.shape, d)``: element e of base b is Box-Muller of words
    2e+1 and 2e+2 of the splitmix64 stream started at b."""
    return _weighted_normals(bases, d)


def _weighted_normals(bases: Tensor, d: int, weights: list[float] | None = None) -> Tensor:
    """``_normals``, or with ``weights`` (one per column of ``bases`` of shape ``(batch, terms)``) the
    sum ``z[:, 0] w_0 + z[:, 1] w_1 + ...`` in that order, shape ``(batch, d)``.

    Computed in chunks of elements small enough to stay in cache, with in-place operations: every
    element goes through the same float64 operations in the same order as the plain expression
    (``sqrt(-2 log u1) cos(2 pi u2)``, then the weighted sum term by term, no fused multiply-add), so the
    values do not depend on the chunking."""
    device = bases.device
    rows = bases.numel()
    flat = bases.reshape(rows, 1)
    out = torch.empty((bases.shape[0], d) if weights is not None else (rows, d), dtype=torch.float64, device=device)
    step = max(1, min(d, _CHUNK * torch.get_num_threads() // max(rows, 1)))  # each thread keeps a chunk in cache
    e_all = torch.arange(d, device=device, dtype=torch.int64).mul_(2).add_(1).mul_(_signed(_GAMMA))
    state = torch.empty((rows, step), dtype=torch.int64, device=device)
    tmp = torch.empty_like(state)
    u1 = torch.empty((rows, step), dtype=torch.float64, device=device)
    u2 = torch.empty_like(u1)
    for c0 in range(0, d, step):
        n = min(step, d - c0)
        st, tm, v1, v2 = state[:, :n], tmp[:, :n], u1[:, :n], u2[:, :n]
        torch.add(flat, e_all[c0 : c0 + n], out=st)
        tm.copy_(st)
        _uniform_(_mix_(st, v2.view(torch.int64)), v1)
        tm.add_(_signed(_GAMMA))
        _uniform_(_mix_(tm, v2.view(torch.int64)), v2)
        v1.log_().mul_(-2.0).sqrt_()
        v2.mul_(2.0 * math.pi).cos_()
        v1.mul_(v2)
        if weights is None:
            out[:, c0 : c0 + n] = v1
        else:
            z = v1.view(bases.shape[0], bases.shape[1], n)
            acc = out[:, c0 : c0 + n]
            torch.mul(z[:, 0], weights[0], out=acc)
            for i in range(1, len(weights)):
                acc.add_(z[:, i].mul_(weights[i]))
    return out.view(*bases.shape, d) if weights is None else out


_CHUNK = 1 << 15  # elements per chunk and thread of _weighted_normals (torch's grain size)


def _mix_(z: Tensor, tmp: Tensor) -> Tensor:
    """``_mix_t`` in place (``tmp``: a scratch int64 tensor of z's shape)."""
    for shift, mult in ((30, _signed(_M1)), (27, _signed(_M2)), (31, None)):
        torch.bitwise_right_shift(z, shift, out=tmp)
        tmp.bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(tmp)
        if mult is not None:
            z.mul_(mult)
    return z


def _uniform_(z: Tensor, out: Tensor) -> Tensor:
    """``_uniform`` into ``out`` (float64); ``z`` is overwritten."""
    z.bitwise_right_shift_(11).bitwise_and_((1 << 53) - 1)
    out.copy_(z)
    return out.add_(0.5).mul_(2.0**-53)


def _seeds(seeds) -> tuple[int, ...]:
    if isinstance(seeds, Tensor):
        if seeds.is_floating_point() or seeds.is_complex() or seeds.dtype == torch.bool or seeds.ndim != 1:
            raise TypeError(
                f"seeds must be a 1-D sequence of integers, got a tensor of {seeds.dtype}, shape {tuple(seeds.shape)}"
            )
        seeds = seeds.tolist()
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError(
            f"seeds must be a sequence of integers (one per sample, e.g. range(batch)), got {type(seeds).__name__}"
        )
    out = []
    for s in seeds:
        if isinstance(s, bool) or not hasattr(s, "__index__"):
            raise TypeError(f"seeds must be integers, got {s!r} of type {type(s).__name__}")
        s = int(s.__index__())
        if not 0 <= s < 1 << 63:
            raise ValueError(f"seeds must be integers in [0, 2^63), got {s}")
        out.append(s)
    if not out:
        raise ValueError("seeds must hold one seed per sample, got none")
    return tuple(out)


class NoiseSource:
    """Per-sample noise keyed by ``seeds`` (one integer in [0, 2^63) per sample, in batch order)."""

    brownian = False  # answers Brownian increments (correlated across the calls of a plan)

    def __init__(self, seeds):
        self.seeds = _seeds(seeds)

    def __len__(self) -> int:
        return len(self.seeds)

    def __repr__(self):
        s = self.seeds
        shown = f"{list(s[:4])[:-1]}...{s[-1]}" if len(s) > 4 else list(s)
        return f"{type(self).__name__}({len(s)} seeds: {shown})"

    def _bases(self, keys: list[int], device) -> Tensor:
        """``(batch, len(keys))`` int64 stream starts: one per (sample, key)."""
        seeds = torch.tensor([_signed(_mix(s + _GAMMA)) for s in self.seeds], dtype=torch.int64, device=device)
        k = torch.tensor([_signed(x) for x in keys], dtype=torch.int64, device=device)
        return _mix_t(seeds[:, None] ^ k[None, :])

    def _normal(self, key: int, shape, dtype, device) -> Tensor:
        shape = torch.Size(shape)
        self._check_batch(shape)
        z = _normals(self._bases([key], device)[:, 0], math.prod(shape[1:]))
        return z.view(shape).to(dtype)

    def _check_batch(self, shape):
        if len(shape) < 1 or shape[0] != len(self.seeds):
            raise ValueError(
                f"noise: the source holds {len(self.seeds)} seeds, one per sample, but the batch has "
                f"shape {tuple(shape)}"
            )

    def standard_normal(
        self, call: int, interval: tuple[float, float] | None, shape, dtype=torch.float64, device="cpu"
    ) -> Tensor:
        """``xi`` of call ``call`` for a batch of ``shape`` (batch first): standard normal per element."""
        raise NotImplementedError


class PerSampleNormal(NoiseSource):
    """Independent standard normals per call and sample, keyed by (seed, call index): a plan's
    noise intervals are not read (each call's normal is independent of every other call's)."""

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu") -> Tensor:
        return self._normal(_key(_CALL, int(call)), shape, dtype, device)


class BrownianPaths(NoiseSource):
    """One Brownian path per sample, keyed by its seed (construction in the module docstring).

    ``depth``: dyadic levels inside each block (the path is linear below ``width 2^-depth``)."""

    brownian = True

    def __init__(self, seeds, depth: int = 32):
        super().__init__(seeds)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 52:
            raise ValueError(f"depth must be an integer in [1, 52], got {depth!r}")
        self.depth = depth
        self._cache: dict = {}

    def _terms(self, t: float, sign: float, into: dict):
        """Add ``sign * W(t)`` to ``into`` as {node key: weight of its normal}."""
        if t == 0.0:
            return
        side, u = (1, t) if t > 0 else (-1, -t)
        block = 0 if u <= 1.0 else math.ceil(math.log2(u))
        while block > 0 and u <= 2.0 ** (block - 1):  # log2 rounding at exact powers of two
            block -= 1
        while u > 2.0**block:
            block += 1
        for j in range(block):  # the whole blocks below
            w = 1.0 if j == 0 else 2.0 ** (j - 1)
            k = _key(_BROWNIAN, side, j, -1, 0)
            into[k] = into.get(k, 0.0) + sign * math.sqrt(w)
        a = 0.0 if block == 0 else 2.0 ** (block - 1)
        w = 1.0 if block == 0 else a
        x = (u - a) / w  # position in the block, in [0, 1]
        k = _key(_BROWNIAN, side, block, -1, 0)
        into[k] = into.get(k, 0.0) + sign * x * math.sqrt(w)
        for level in range(self.depth):
            n = 1 << level
            node = min(int(x * n), n - 1)
            y = x * n - node  # position in the node, in [0, 1]
            tent = 0.5 * math.sqrt(w / n) * (1.0 - abs(2.0 * y - 1.0))
            if tent:
                k = _key(_BROWNIAN, side, block, level, node)
                into[k] = into.get(k, 0.0) + sign * tent

    def value(self, t: float, shape, dtype=torch.float64, device="cpu") -> Tensor:
        """``W(t)`` of every sample, shape ``shape`` (batch first; ``W(0) = 0``): a sum over the
        construction's nodes in a fixed order, elementwise (no result depends on the batch). The
        last few values are kept, so a grid's consecutive increments share their common end."""
        shape, device = torch.Size(shape), torch.device(device)
        self._check_batch(shape)
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"a Brownian path is queried at finite times, got {t}")
        key = (t, shape, device)
        w = self._cache.get(key)
        if w is None:
            terms: dict = {}
            self._terms(t, 1.0, terms)
            keys = list(terms)
            if keys:  # sum_i z_i * weight_i over the terms, in order
                w = _weighted_normals(self._bases(keys, device), math.prod(shape[1:]), [terms[k] for k in keys])
                w = w.view(shape)
            else:
                w = torch.zeros(shape, dtype=torch.float64, device=device)
            self._cache[key] = w
            while len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
        return w.to(dtype, copy=True)

    def increment(self, s: float, t: float, shape, dtype=torch.float64, device="cpu") -> Tensor:
        """``W(t) - W(s)`` of every sample, shape ``shape`` (batch first)."""
        return (self.value(t, shape, torch.float64, device) - self.value(s, shape, torch.float64, device)).to(dtype)

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu") -> Tensor:
        if interval is None:
            return self._normal(_key(_CALL, int(call)), shape, dtype, device)
        a, b = (float(v) for v in interval)
        if a == b:
            raise ValueError(f"a noise interval must have positive length, got [{a}, {b}] at call {call}")
        return (self.increment(a, b, shape, torch.float64, device) / math.sqrt(abs(b - a))).to(dtype)
