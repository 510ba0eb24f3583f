"""k-diffusion's noise convention as an odesolve noise source.

k-diffusion's stochastic samplers draw noise through ``noise_sampler(sigma, sigma_next) -> tensor``:
a standard normal of x's shape for the step from ``sigma`` to ``sigma_next`` (its
``BrownianTreeNoiseSampler`` answers the normalised Brownian increment over [sigma_next, sigma], so
correlated requests stay consistent). An odesolve plan names the noise of each call by an interval
of path time (``plan.noise_interval``); on k-diffusion's path (EDM, t = sigma) that interval is the
sigma pair, so ``NoiseSamplerSource`` answers call k with ``noise_sampler(sigma_a, sigma_b)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...noise import BrownianPaths, NoiseSource
from ...paths import check_real

__all__ = ["NoiseSamplerSource", "ScaledNoise", "StepStream", "brownian_tree_sampler", "torch_stream_sampler"]


class NoiseSamplerSource(NoiseSource):
    """Answers a plan's noise requests with ``noise_sampler(sigma_a, sigma_b) * s_noise``, where
    ``(sigma_a, sigma_b)`` is the call's noise interval (k-diffusion's order: the noisier end first),
    as 0-dim tensors of ``sigma_dtype``. ``batch``: the number of samples the sampler answers for."""

    brownian = True  # the sampler is asked for the plan's intervals; a Brownian one answers them consistently

    def __init__(
        self,
        noise_sampler: Callable[[Tensor, Tensor], Tensor],
        batch: int,
        s_noise: float = 1.0,
        sigma_dtype: torch.dtype = torch.float64,
    ):
        if not callable(noise_sampler):
            raise TypeError(
                f"noise_sampler must be callable as noise_sampler(sigma, sigma_next) -> tensor, "
                f"got {type(noise_sampler).__name__}"
            )
        self.noise_sampler, self.batch = noise_sampler, int(batch)
        self.s_noise = check_real(s_noise, "s_noise", 0.0)
        self.sigma_dtype = sigma_dtype

    def __len__(self) -> int:
        return self.batch

    def __repr__(self):
        return f"NoiseSamplerSource({self.noise_sampler!r}, batch={self.batch}, s_noise={self.s_noise})"

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu") -> Tensor:
        if interval is None:
            raise ValueError(
                f"noise_sampler: call {call} of the plan names no noise interval, so it has no (sigma, sigma_next) "
                "to ask a k-diffusion noise sampler for; pass noise= (an odesolve.noise source) instead"
            )
        a, b = (torch.tensor(float(v), dtype=self.sigma_dtype) for v in interval)
        z = self.noise_sampler(a, b)
        if not isinstance(z, Tensor) or z.numel() != torch.Size(shape).numel():
            raise ValueError(
                f"noise_sampler(sigma, sigma_next) must return a tensor of the state's shape {tuple(shape)}, "
                f"got {tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}"
            )
        z = z.reshape(shape).to(device, dtype)
        return z * self.s_noise if self.s_noise != 1 else z


class ScaledNoise(NoiseSource):
    """An odesolve noise source whose normals are multiplied by ``s_noise`` (k-diffusion's noise scale)."""

    def __init__(self, source: NoiseSource, s_noise: float):
        if not isinstance(source, NoiseSource):
            raise TypeError(f"noise must be an odesolve.noise source, got {type(source).__name__}")
        self.source, self.seeds, self.brownian = source, source.seeds, source.brownian
        self.s_noise = check_real(s_noise, "s_noise", 0.0)

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu") -> Tensor:
        return self.source.standard_normal(call, interval, shape, dtype, device) * self.s_noise


class StepStream(NoiseSource):
    """k-diffusion's churn noise (sample_euler / sample_heun / sample_dpm_2): one ``randn`` of x's shape
    per grid step, from torch's global stream (or ``generator``), drawn in step order whether or not
    the step uses it (k-diffusion draws it every step). The plan's call whose noise interval starts at
    ``sigmas[n]`` gets step n's; ``finish()`` draws those of the remaining steps."""

    def __init__(self, x: Tensor, sigmas: Tensor, generator: torch.Generator | None = None):
        self.x, self.generator, self.batch = x, generator, int(x.shape[0])
        self.steps = {float(s): n for n, s in enumerate(torch.as_tensor(sigmas, dtype=torch.float64)[:-1].tolist())}
        self.drawn: dict[int, Tensor] = {}
        self.next = 0

    def __len__(self) -> int:
        return self.batch

    def _draw_to(self, n: int):
        while self.next <= n:
            x = self.x
            self.drawn[self.next] = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
            self.next += 1

    def finish(self):
        """Draw the normals of the steps not reached, so that the stream ends where k-diffusion leaves it."""
        self._draw_to(len(self.steps) - 1)
        self.drawn.clear()

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu") -> Tensor:
        n = None if interval is None else self.steps.get(float(interval[0]))
        if n is None:
            raise ValueError(f"noise: call {call} names no grid step's noise interval, got {interval!r}")
        self._draw_to(n)
        return self.drawn.pop(n).reshape(shape).to(device, dtype)


def torch_stream_sampler(x: Tensor, generator: torch.Generator | None = None) -> Callable:
    """k-diffusion's default for its ancestral samplers: a fresh ``randn`` of x's shape per request,
    from torch's global stream (or ``generator``)."""
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def brownian_tree_sampler(x: Tensor, sigmas: Tensor) -> Callable:
    """k-diffusion's default for its SDE samplers: one Brownian path for the batch on
    [min positive sigma, max sigma], from torchsde's Brownian tree with an entropy drawn from torch's
    global stream; it answers ``(W(sigma_next) - W(sigma)) / sqrt|sigma - sigma_next|``. Without
    torchsde: odesolve's per-sample ``odesolve.noise.BrownianPaths``, seeds drawn from the same stream."""
    sigmas = torch.as_tensor(sigmas)
    lo, hi = sigmas[sigmas > 0].min(), sigmas.max()
    seed = torch.randint(0, 2**63 - 1, []).item()
    try:
        import torchsde
    except ImportError:
        paths = BrownianPaths([seed] + [int(s) for s in torch.randint(0, 2**63 - 1, (x.shape[0] - 1,))])

        def sample(sigma, sigma_next):
            w = paths.increment(float(sigma), float(sigma_next), x.shape, torch.float64, x.device)
            return (w / float(abs(sigma_next - sigma)) ** 0.5).to(x.dtype)

        return sample
    tree = torchsde.BrownianTree(lo, torch.zeros_like(x), hi, entropy=seed)

    def sample(sigma, sigma_next):
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        sign = 1.0 if a < b else -1.0
        w = tree(torch.minimum(a, b), torch.maximum(a, b)) * sign
        return w / (b - a).abs().sqrt()

    return sample
