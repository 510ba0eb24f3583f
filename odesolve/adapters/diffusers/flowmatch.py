"""Heun's method on the flow ODE in the flow time, as ``FlowMatchHeunDiscreteScheduler`` takes it.

On the flow path x = (1 - t) x0 + t eps the probability-flow ODE is dx/dt = v = (x - x0) / t.
odesolve's registered ``heun`` integrates in (rho, x / alpha) (Karras et al. 2022), which is
undefined where flow sampling starts (t = 1, alpha = 0); FlowMatchHeunDiscreteScheduler takes Heun's
steps in t itself: ``x1 = x + dt v(x, t)``, ``x' = x + dt (v(x, t) + v(x1, t')) / 2``, and Euler on the
last step to t = 0. As rows on the data prediction ``D`` (v = (x - D) / t):
``x1 = (t'/t) x + (1 - t'/t) D0``, ``x' = (1 + dt/t) x + dt (1/t' - 2/t) D0 / 2 - dt D1 / (2 t')``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ...methods.base import Method, table
from ...plan import Rows

__all__ = ["FLOW_HEUN", "FlowHeun"]


@table
class FlowHeun(Method):
    """Heun's method (Karras et al. 2022, Alg. 1) in the flow time t on the data prediction; Euler on a
    last step to t = 0."""

    variable: ClassVar[str] = "t"

    @property
    def calls_per_step(self) -> int:
        return 2

    def _rows(self, g, **options) -> Rows:
        t = g.t
        N = g.steps
        n = torch.arange(N)
        t0, t1 = t[:-1], t[1:]
        dt = t1 - t0
        staged = t1 > 0
        counts = torch.where(staged, 2, 1)
        first = torch.cumsum(counts, 0) - counts
        rows = Rows(int(counts.sum()))
        rows.call(first, n, t0)
        e = ~staged  # Euler: x' = x + dt (x - D0) / t
        rows.update_state(first[e], (1 + dt / t0)[e])
        rows.update(first[e], first[e], (-dt / t0)[e])
        s = staged
        k0, k1 = first[s], first[s] + 1
        rows.call(k1, n[s], t1[s])
        rows.input_state(k1, (t1 / t0)[s])
        rows.input(k1, k0, (1 - t1 / t0)[s])
        rows.update_state(k1, (1 + dt / t0)[s])
        rows.update(k1, k0, (dt / 2 * (1 / t1 - 2 / t0))[s])
        rows.update(k1, k1, (-dt / (2 * t1))[s])
        return rows


FLOW_HEUN = FlowHeun("flowmatch-heun", order=2, prediction="x0", paper="Karras et al. 2022, Alg. 1, in the flow time")
