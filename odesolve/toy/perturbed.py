"""A perturbed model: the exact denoiser of a toy distribution plus a smooth bias of chosen size, the
stand-in for a learned model's error in studies of how samplers accumulate or contract model error
(the ODE-SDE gap: Karras et al. 2022, section 4; Xu et al., Restart sampling, 2023, arXiv 2306.14878).

    x0_b(x, t) = x0(x, t) + bias * r(t) * u(x / sqrt(alpha^2 + sigma^2)),
    u(y) = sqrt(2) sin(y A + phi),   r(t) = rho^2 / (rho^2 + onset^2),   rho = sigma / alpha,

``A`` (dim x dim, entries N(0, frequency^2 / dim)) and ``phi`` (uniform in [0, 2 pi)) drawn once from
``seed``. ``u`` is smooth, bounded, and of unit root mean square per coordinate over random phases; the
input is scaled to the size of the marginal, so the field varies on the scale of the data at every time.
``r`` makes the error vanish at low noise (where ``x0 ~ x`` and a learned model is accurate; below the
noise level ``onset`` it falls as ``rho^2``) and tend to 1 at high noise, so ``bias`` is the RMS error of
the data prediction per coordinate at high noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..models import Model, Prediction, _check_prediction
from ..paths import Path, check_real
from ._spectral import SpectralMixture

__all__ = ["perturbed_model"]


def perturbed_model(
    distribution: SpectralMixture,
    path: Path,
    bias: float,
    *,
    prediction: Prediction = "x0",
    frequency: float = 1.0,
    onset: float = 1.0,
    seed: int = 0,
) -> Model:
    """The exact model of ``distribution`` under ``path`` with the smooth bias of size ``bias`` added to its
    data prediction (formula in the module docstring); ``bias = 0`` is the exact model. Returned as an
    ``odesolve.models.Model`` predicting ``prediction`` (the biased x0 converted exactly,
    ``odesolve.models.Model.with_prediction``)."""
    if not isinstance(distribution, SpectralMixture):
        raise TypeError(f"distribution must be an odesolve.toy mixture, got {type(distribution).__name__}")
    if not isinstance(path, Path):
        raise TypeError(f"path must be an odesolve.paths.Path, got {type(path).__name__}")
    bias = check_real(bias, "bias", 0.0)
    frequency = check_real(frequency, "frequency", 0.0, lo_open=True)
    onset = check_real(onset, "onset", 0.0, lo_open=True)
    _check_prediction(prediction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    d = distribution.dim
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, dtype=torch.float64, generator=g) * (frequency / math.sqrt(d))
    phi = torch.rand(d, dtype=torch.float64, generator=g) * (2 * math.pi)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        xd = x.to(torch.float64)
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        a, s = path.alpha(tt), path.sigma(tt)
        if a.ndim:
            a, s = a.reshape(-1, *([1] * (x.ndim - 1))), s.reshape(-1, *([1] * (x.ndim - 1)))
        scale = torch.sqrt(a * a + s * s)
        x0 = distribution.denoiser(xd, t, path)
        if bias:
            r = s * s / (s * s + (onset * a) ** 2)
            x0 = x0 + bias * r * math.sqrt(2.0) * torch.sin((xd / scale) @ A.to(x.device) + phi.to(x.device))
        return x0.to(x.dtype)

    fn.__name__ = f"perturbed({type(distribution).__name__}, bias={bias:g}).x0"
    model = Model(fn, path, "x0")
    return model if prediction == "x0" else model.with_prediction(prediction)
