"""The noise diffusers' stochastic schedulers draw, as an [`odesolve.noise`][odesolve.noise] source.

diffusers' ``step`` draws each step's normals with ``diffusers.utils.torch_utils.randn_tensor(shape,
generator=..., device=..., dtype=...)``: one ``torch.Generator`` draws the whole batch (on the generator's
device, moved to the sample's); a list of generators, one per sample, draws sample ``i`` from generator ``i``.
`RandnTensorNoise` calls that function once per noise-injecting call of a plan, in the dtype the
namesake scheduler draws in, so that a plan run from the same generator(s) consumes the same normals in
the same order as the scheduler it replaces.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from ...noise import NoiseSource

__all__ = ["RandnTensorNoise", "check_generators"]


def check_generators(generator, batch: int):
    """``generator`` as diffusers accepts it: None, one ``torch.Generator`` or a list of ``batch`` of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)):
        bad = [type(g).__name__ for g in generator if not isinstance(g, torch.Generator)]
        if bad:
            raise TypeError(f"generator: a list of generators must hold torch.Generator objects only, got {bad[0]}")
        if len(generator) != batch:
            raise ValueError(
                f"generator: {len(generator)} generators for a batch of {batch} samples (one per sample, "
                "as diffusers' randn_tensor draws sample i from generator i)"
            )
        return list(generator)
    raise TypeError(
        f"generator must be a torch.Generator, a list of them (one per sample) or None, got {type(generator).__name__}"
    )


class RandnTensorNoise(NoiseSource):
    """``xi_k = randn_tensor(shape, generator, device, draw_dtype)`` at every call that injects noise:
    diffusers' draw from ``generator`` (None: torch's default stream; a list: one generator per sample), cast
    to the executor's working dtype. ``draw_dtype``: the dtype the namesake scheduler draws in (the model
    output's, or float32 for DPMSolverMultistep). Not per sample: the noise depends on the batch (as in
    diffusers) unless a list of generators is given."""

    def __init__(self, generator, batch: int, draw_dtype: torch.dtype):
        self.generator = check_generators(generator, batch)
        self.batch = batch
        self.draw_dtype = draw_dtype

    def __len__(self) -> int:
        return self.batch

    def __repr__(self):
        return f"RandnTensorNoise(batch={self.batch}, draw_dtype={self.draw_dtype})"

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu"):
        self._check_batch_of(shape)
        z = randn_tensor(tuple(shape), generator=self.generator, device=torch.device(device), dtype=self.draw_dtype)
        return z.to(dtype)

    def _check_batch_of(self, shape):
        if len(shape) < 1 or shape[0] != self.batch:
            raise ValueError(f"noise: drawn for a batch of {self.batch} samples, asked for shape {tuple(shape)}")
