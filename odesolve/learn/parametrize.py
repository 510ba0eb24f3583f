"""Parametrisations of what a fit learns, each exact at its initial value and consistent for every value.

- [`GridLogits`][odesolve.learn.parametrize.GridLogits]: the interior times of a grid as a softmax over its steps in
  lambda; the grid stays strictly decreasing with both ends fixed (as LD3, Tong et al. 2025, learns its grid).
- [`RowCorrection`][odesolve.learn.parametrize.RowCorrection]: a correction to a plan's history coefficients with zero
  sum in every row,
  so the fitted plan integrates a constant prediction exactly wherever the initial one did, and its
  state factors (the exact linear part) are untouched (the consistency conditions of BNS / S4S).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from ..grids import Grid
from ..plan import Plan

__all__ = ["GridLogits", "RowCorrection"]

SHIFT = 1.0  # the most a call time moves, in lambda


class GridLogits:
    """``lambda_i = lambda_a + L cumsum(softmax(theta))_i`` on the part of ``grid`` with finite
    lambda (indices a..b); points with infinite lambda (sigma = 0, alpha = 0) stay.

    ``L = lambda_b - lambda_a`` is fixed, except where the grid goes on from ``b`` to sigma = 0: there
    the last finite point is a model call like any other, and ``L = 2 L_0 sigmoid(theta_end)`` (at most
    twice the initial span) is learned too.
    ``theta = (log(initial steps in lambda), 0)`` reproduces ``grid`` (to round-off); the softmax
    ignores a common shift, so the degrees of freedom are ``b - a - 1`` (+ 1 for a free end)."""

    def __init__(self, grid: Grid):
        lam = grid.lambdas.detach()
        finite = torch.nonzero(torch.isfinite(lam)).flatten()
        if finite.numel() < 2:
            raise ValueError(f"grid must have at least 2 times with finite lambda (0 < sigma, 0 < alpha), got {grid!r}")
        self.path, self.a, self.b = grid.path, int(finite[0]), int(finite[-1])
        self.t = grid.t.detach()
        self.free_end = self.b < grid.steps and bool(torch.isposinf(lam[-1]))
        self.lam_a, self.span = lam[self.a], lam[self.b] - lam[self.a]
        steps = torch.log(lam[self.a + 1 : self.b + 1] - lam[self.a : self.b])
        self.initial = torch.cat([steps, torch.zeros(int(self.free_end), dtype=torch.float64)])

    @property
    def free(self) -> int:
        """Degrees of freedom: the interior points of the finite part, and its end where it is free."""
        return max(0, self.b - self.a - 1) + int(self.free_end)

    def grid(self, theta: Tensor) -> Grid:
        if self.free == 0:
            return Grid(self.path, self.t)
        n = self.b - self.a
        span = 2 * self.span * torch.sigmoid(theta[n]) if self.free_end else self.span
        frac = torch.cumsum(torch.softmax(theta[:n], 0), 0)
        frac = frac if self.free_end else frac[:-1]
        inner = self.path.t_of_lambda(self.lam_a + span * frac)
        rest = self.t[self.b + 1 :] if self.free_end else self.t[self.b :]
        g = Grid(self.path, torch.cat([self.t[: self.a + 1], inner, rest]))
        if g.steps != self.t.numel() - 1:
            raise ValueError(
                f"the grid's times collapsed in float64 (steps {self.t.numel() - 1} -> {g.steps}): "
                f"{g.t.detach().tolist()}"
            )
        return g


class RowCorrection:
    """``hist[k] += scale_k (c[k] - mean of c[k] over the allowed entries of row k)`` for the update and
    input rows of a plan, with a window of ``window`` outputs (``F_k .. F_{k-window+1}``; inputs from
    ``F_{k-1}``). ``scale_k`` is the size of the initial row (so the parameters are relative).

    The allowed entries are those whose output exists (``j <= k``); a row with one allowed entry cannot
    change. Zero row sums keep ``sum_j hist[k, j]`` and hence the plan's result on a constant prediction.
    """

    def __init__(self, plan: Plan, window: int, shift_times: bool = False):
        K = plan.calls
        lam = plan.path.lambda_(plan.times.detach())
        self.shift_mask = (torch.isfinite(lam) if shift_times else torch.zeros(K, dtype=torch.bool)).to(torch.float64)
        self.window = W = max(int(window), plan.window)
        k, j = torch.arange(K)[:, None], torch.arange(W)[None, :]
        self.update_mask = (j <= k).to(torch.float64)
        self.input_mask = ((j >= 1) & (j <= k)).to(torch.float64)
        up, inp = self._pad(plan.update_hist.detach()), self._pad(plan.input_hist.detach())
        self.update_scale = up.abs().sum(1, keepdim=True).clamp(min=1e-12)
        self.input_scale = torch.maximum(inp.abs().sum(1, keepdim=True), self.update_scale)

    def _pad(self, v: Tensor) -> Tensor:
        return torch.nn.functional.pad(v, (0, self.window - v.shape[1]))

    @property
    def free(self) -> int:
        per_row = lambda m: int((m.sum(1) - 1).clamp(min=0).sum())
        return per_row(self.update_mask) + per_row(self.input_mask) + int(self.shift_mask.sum())

    def zeros(self) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(torch.zeros_like(v) for v in (self.update_mask, self.input_mask, self.shift_mask))

    @staticmethod
    def _centred(c: Tensor, mask: Tensor) -> Tensor:
        n = mask.sum(1, keepdim=True)
        c = c * mask
        return torch.where(n > 1, (c - c.sum(1, keepdim=True) / n.clamp(min=1)) * mask, torch.zeros_like(c))

    def apply(self, plan: Plan, update: Tensor, inputs: Tensor, shift: Tensor | None = None) -> Plan:
        """``plan`` with the corrections added (same grid and state factors; the call times moved by
        ``SHIFT tanh(shift)`` in lambda where ``shift_times``)."""
        times = plan.times
        if shift is not None and bool(self.shift_mask.any()):
            lam = plan.path.lambda_(times)
            moved = plan.path.t_of_lambda(torch.where(self.shift_mask > 0, lam, 0.0) + SHIFT * torch.tanh(shift))
            times = torch.where(self.shift_mask > 0, moved, times)
        return dataclasses.replace(
            plan,
            times=times,
            update_hist=self._pad(plan.update_hist) + self.update_scale * self._centred(update, self.update_mask),
            input_hist=self._pad(plan.input_hist) + self.input_scale * self._centred(inputs, self.input_mask),
        )
