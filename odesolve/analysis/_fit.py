"""Least-squares slopes of error against resolution, with the round-off floor and the
pre-asymptotic points dropped (shared by the numeric order and the convergence studies)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["Fit", "fit_slope"]


@dataclass(frozen=True)
class Fit:
    """``err ~ C x^(-slope)`` fitted on ``used``; ``local`` are the slopes between neighbours."""

    slope: float
    intercept: float  # log C
    used: tuple[int, ...]
    dropped_floor: tuple[int, ...]
    dropped_preasymptotic: tuple[int, ...]
    local: tuple[float, ...]

    @property
    def constant(self) -> float:
        return float(np.exp(self.intercept))


def fit_slope(x, err, *, floor: float = 0.0, tol: float = 0.3, min_points: int = 2) -> Fit:
    """Fit ``log err = log C - slope log x`` (``x`` increasing: steps or NFE).

    Dropped as round-off floor: points with ``err <= floor`` or not finite, and, from the fine end,
    points where the error stopped decreasing (local slope < 0.5 while the coarser ones decrease).
    Dropped as pre-asymptotic: coarse points whose local slope differs from the finest local slope
    by more than ``tol``. At least ``min_points`` points are kept when there are that many.
    """
    x = np.asarray(x, dtype=np.float64)
    e = np.asarray(err, dtype=np.float64)
    if x.shape != e.shape or x.ndim != 1:
        raise ValueError(f"x and err must be 1-D of equal length, got {x.shape} and {e.shape}")
    idx = list(np.argsort(x))
    good = [i for i in idx if np.isfinite(e[i]) and e[i] > floor]
    floor_drop = [i for i in idx if i not in good]

    def ls(i, j):
        return float(-(np.log(e[j]) - np.log(e[i])) / (np.log(x[j]) - np.log(x[i])))

    # stagnation at the fine end: the floor reached above `floor`
    while len(good) > min_points and ls(good[-2], good[-1]) < 0.5 and ls(good[-3], good[-2]) >= 0.5:
        floor_drop.append(good.pop())
    local = tuple(ls(a, b) for a, b in itertools.pairwise(good))
    if len(good) < 2:
        return Fit(float("nan"), float("nan"), tuple(good), tuple(sorted(floor_drop)), (), local)
    ref = local[-1]
    keep = len(good) - 2  # index into good of the coarsest kept point
    while keep > 0 and abs(local[keep - 1] - ref) <= tol:
        keep -= 1
    keep = min(keep, max(0, len(good) - min_points))
    used = good[keep:]
    pre = good[:keep]
    lx, le = np.log(x[used]), np.log(e[used])
    A = np.stack([np.ones_like(lx), -lx], 1)
    (c, s), *_ = np.linalg.lstsq(A, le, rcond=None)
    return Fit(
        float(s),
        float(c),
        tuple(int(i) for i in used),
        tuple(sorted(int(i) for i in floor_drop)),
        tuple(int(i) for i in pre),
        local,
    )
