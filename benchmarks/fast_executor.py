"""A prototype executor, for measurement only: the changes to ``odesolve/execute.py`` that the
overhead benchmark recommends, written outside the library so that their effect can be timed
against the real executor in the same process. It runs the same :class:`~odesolve.plan.Plan`
semantics (module docstring of ``odesolve.plan``) for deterministic plans without gradients;
anything else is handed to :func:`odesolve.execute`.

What it does differently, and why (numbers in benchmarks/README.md and the results):

1. No per-call ``torch.isfinite(out).all()`` on CPU. ``isfinite`` is a composite op (several
   full-size temporaries): on a 16.8 MB tensor it costs ~6 elementwise passes, more than the whole
   update. NaN and Inf propagate through the linear updates, so the final state is checked once;
   only if it is non-finite is the plan re-run with per-call checks to name the call (the models
   are deterministic functions; a non-deterministic one is named as "some call").
   The input check uses ``torch.isfinite(x.sum())`` first (one pass) and the exact check only when
   that fails (a finite tensor whose sum overflows).
2. The model output is copied into a ring slot (as the library does; ``copy_outputs=False`` keeps
   references instead, correct only for models that return a fresh tensor per call); with
   ``chunk`` the copy is fused, slice by slice, with the update that reads it.
3. No ``mv`` over the ring: the state update ``s' = a s + sum_j b_j F_j`` is a chain of in-place
   ``add_(F_j, alpha=b_j)`` on a preallocated ping-pong buffer, over the non-zero terms only
   (the BLAS ``gemv`` on a (d, W) transposed ring runs at ~40 % of the elementwise bandwidth on
   this CPU and reads every ring row, zero coefficients included), and no tensor is allocated per
   call.
4. Optionally (``chunk``), the chain runs over slices of ``chunk`` elements, so that the
   intermediate passes stay in cache and main memory sees only the k+1 reads and 1 write of the
   floor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import odesolve as ods
from odesolve.models import conversion

__all__ = ["FastProgram", "execute_fast"]


class FastProgram:
    """A plan prepared for one model, shape, dtype, device (no gradients, no noise).

    ``copy_outputs=True`` (the safe default) copies each model output into a ring slot, as the
    library does: a model may return a buffer that it overwrites on its next call (CUDA-graph
    replays, some compiled models). ``False`` keeps references to the outputs (no copy), which is
    correct only for models that return a fresh tensor per call.
    """

    def __init__(self, plan, model, shape, device, dtype, chunk: int | None = None, copy_outputs: bool = True,
                 update: str = "chain", check: str = "end"):
        """``update="mv"`` and ``check="each"`` reproduce the library's current choices (a ``gemv``
        over a contiguous ring; ``isfinite(out).all()`` after every call) for the ablation."""
        self.plan, self.model, self.shape, self.dtype = plan, model, torch.Size(shape), dtype
        self.dev = torch.device(device)
        self.wd = wd = torch.promote_types(dtype, torch.float32)
        self.N = N = math.prod(shape)
        c = chunk if chunk and chunk < N else N
        self.spans = [(i, min(i + c, N)) for i in range(0, N, c)]
        K, W = plan.calls, plan.window
        f = lambda v: v.to(wd).tolist()
        in_s, up_s = f(plan.input_state), f(plan.update_state)
        in_h, up_h = f(plan.input_hist), f(plan.update_hist)
        self.cx, self.cf = (f(v) for v in conversion(plan.path, model.prediction, plan.prediction, plan.times))
        self.identity_conv = model.prediction == plan.prediction
        self.update_mode, self.check = update, check
        self.copy_outputs = copy_outputs or not self.identity_conv or update == "mv"
        self.W = W
        # per call: (state coefficient, [(call index, coefficient)]) without zero terms; None = no op
        self.inputs, self.updates = [], []
        for k in range(K):
            terms = [(k - j, in_h[k][j]) for j in range(1, W) if in_h[k][j] != 0.0]
            self.inputs.append(None if (in_s[k] == 1.0 and not terms) else (in_s[k], terms))
            terms = [(k - j, up_h[k][j]) for j in range(W) if up_h[k][j] != 0.0]
            self.updates.append(None if (up_s[k] == 1.0 and not terms) else (up_s[k], terms))
        B = shape[0]
        self.t_rows = [t.expand(B) for t in plan.times.to(self.dev).unbind(0)]
        self.state = torch.empty(N, dtype=wd, device=self.dev)  # updated in place: one state buffer
        self.xbuf = torch.empty(N, dtype=wd, device=self.dev) if any(i is not None for i in self.inputs) else None
        self.hist = torch.zeros((W, N), dtype=wd, device=self.dev)
        self.ring = list(self.hist.unbind(0)) if self.copy_outputs else None
        if update == "mv":  # ring rows in absolute slots, as the library permutes them
            self.up_rows = []
            for k in range(K):
                row = torch.zeros(W, dtype=wd)
                for j in range(W):
                    row[(k - j) % W] = up_h[k][j]
                self.up_rows.append(row.to(self.dev))
            self.up_s = up_s

    def _combine_span(self, a: float, s: Tensor, terms, ring, o: Tensor, lo: int, hi: int):
        """o = a s[lo:hi] + sum_j b_j ring[j][lo:hi]  (o is the output slice; may be s itself)."""
        whole = hi - lo == self.N  # no slicing (each slice is a view: ~1 us of dispatch)
        sl = (lambda t: t) if whole else (lambda t: t[lo:hi])
        if a != 0.0:
            if o.data_ptr() == s.data_ptr() + lo * s.element_size():
                o.mul_(a)
            else:
                torch.mul(sl(s), a, out=o)
            rest = terms
        else:
            (j0, b0), rest = terms[0], terms[1:]
            torch.mul(sl(ring[j0]), b0, out=o)
        for j, b in rest:
            o.add_(sl(ring[j]), alpha=b)

    def run(self, x: Tensor, check_each: bool = False, copy_result: bool = True):
        N, shape, W = self.N, self.shape, self.W
        s = self.state
        s.copy_(x.reshape(N))
        ring: dict[int, Tensor] = {}
        for k in range(self.plan.calls):
            inp = self.inputs[k]
            if inp is None:
                X = s
            else:
                X = self.xbuf
                for lo, hi in self.spans:
                    self._combine_span(inp[0], s, inp[1], ring, X if len(self.spans) == 1 else X[lo:hi], lo, hi)
            out = self.model(X.view(shape), self.t_rows[k])
            if (check_each or self.check == "each") and not bool(torch.isfinite(out).all()):
                if not check_each:
                    from odesolve.execute import _raise_nonfinite

                    _raise_nonfinite(self.plan, k)
                return k
            out = out.reshape(N)
            if self.copy_outputs:
                F = self.ring[k % W]
            else:
                F = out if out.dtype == self.wd else out.to(self.wd)
            ring[k] = F
            ring.pop(k - W, None)
            up = self.updates[k]
            if self.update_mode == "mv":
                if self.identity_conv:
                    F.copy_(out)
                else:
                    torch.mul(out, self.cf[k], out=F)
                    F.add_(X, alpha=self.cx[k])
                if up is not None:
                    s = torch.mv(self.hist.T, self.up_rows[k]).add_(s, alpha=self.up_s[k])
                del out
                continue
            if len(self.spans) == 1:
                if self.copy_outputs:
                    if self.identity_conv:
                        F.copy_(out)
                    else:
                        torch.mul(out, self.cf[k], out=F)
                        F.add_(X, alpha=self.cx[k])
                if up is not None:  # in place: each element of s is read before it is written
                    self._combine_span(up[0], s, up[1], ring, s, 0, N)
            else:
                for lo, hi in self.spans:  # the output enters the ring and the update uses it, slice by slice
                    if self.copy_outputs:
                        if self.identity_conv:
                            F[lo:hi].copy_(out[lo:hi])
                        else:
                            torch.mul(out[lo:hi], self.cf[k], out=F[lo:hi])
                            F[lo:hi].add_(X[lo:hi], alpha=self.cx[k])
                    if up is not None:
                        self._combine_span(up[0], s, up[1], ring, s[lo:hi], lo, hi)
            del out  # once copied, the model's output must not stay alive across the next model call
        if check_each:
            return -1
        if copy_result or self.dtype != self.wd:
            return s.view(shape).to(self.dtype, copy=True)
        return s.view(shape)


def execute_fast(plan, model, x: Tensor, *, chunk: int | None = None, copy_outputs: bool = True,
                 program: FastProgram | None = None) -> Tensor:
    """Like :func:`odesolve.execute` (deterministic plans, no gradients, no trajectory)."""
    if plan.stochastic or (torch.is_grad_enabled() and (x.requires_grad or plan.update_hist.requires_grad)):
        return ods.execute(plan, model, x)
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite (the initial state contains NaN or Inf)")
    own = program is None
    prog = program or FastProgram(plan, model, x.shape, x.device, x.dtype, chunk, copy_outputs)
    out = prog.run(x, copy_result=not own)
    if not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
        k = prog.run(x, check_each=True)
        from odesolve.execute import _raise_nonfinite

        if k >= 0:
            _raise_nonfinite(plan, k)
        raise ods.NonFiniteError(f"the final state of {plan.method!r} is not finite")
    return out
