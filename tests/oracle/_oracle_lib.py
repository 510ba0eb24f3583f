"""Shared pieces of the oracle tests: an exact Gaussian-mixture denoiser, a loop that runs a
diffusers scheduler the way a pipeline does, and the map from a scheduler's tables to a grid.

The toy model is a mixture of three isotropic Gaussians in 6 dimensions with different variances,
so the denoiser is smooth and nonlinear and every solver's error is visible. It is written in
float64 in terms of (x, alpha, sigma), so it is defined at alpha = 0 and at sigma = 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import odesolve as ods

D = 6
_g = torch.Generator().manual_seed(1234)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MEANS = torch.randn(3, D, generator=_g, dtype=torch.float64) * 0.8
VARS = torch.tensor([0.04, 0.25, 0.6], dtype=torch.float64)


def gmm_x0(x, alpha, sigma):
    """E[x0 | x_t = x] for x_t = alpha x0 + sigma eps, x0 ~ sum_k w_k N(mu_k, v_k I); float64.

    ``x`` is (B, D); ``alpha``, ``sigma`` are scalars or (B,) tensors."""
    x = x.to(torch.float64)
    a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1, 1)
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
    mu, v = MEANS[None], VARS[None, :, None]
    c = a * a * v + s * s  # (B, K, 1)
    diff = x[:, None, :] - a * mu  # (B, K, D)
    logw = torch.log(WEIGHTS)[None, :] - 0.5 * D * torch.log(c[..., 0]) - 0.5 * (diff * diff).sum(-1) / c[..., 0]
    w = torch.softmax(logw, dim=1)[..., None]
    return (w * (mu + a * v / c * diff)).sum(1)


def x0_edm(xbar, rho):
    """The denoiser in k-diffusion / EDM coordinates: D(xbar, rho) with xbar = x / alpha, rho = sigma / alpha."""
    return gmm_x0(xbar, 1.0, rho)


def vp_of_rho(rho):
    rho = torch.as_tensor(rho, dtype=torch.float64)
    if torch.isinf(rho).all():
        return torch.zeros_like(rho), torch.ones_like(rho)
    a = 1.0 / torch.sqrt(1.0 + rho * rho)
    return a, rho * a


def convert_vp(x, a, s, x0, prediction):
    """The model output of type ``prediction`` (diffusers names) from x0 at (x, a, s), VP coordinates."""
    x = x.to(torch.float64)
    if prediction == "sample":
        return x0
    eps = (x - a * x0) / s
    if prediction == "epsilon":
        return eps
    if prediction == "v_prediction":
        return a * eps - s * x0
    raise ValueError(prediction)


def x_start(batch=4, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, D, generator=g, dtype=torch.float64) * scale


# ---------------------------------------------------------------------------------------------
# odesolve side
# ---------------------------------------------------------------------------------------------


def vp_model(path):
    """odesolve Model predicting x0 on a VP path (any time variable)."""

    def fn(x, t):
        return gmm_x0(x, path.alpha(t), path.sigma(t)).to(x.dtype)

    return ods.Model(fn, path=path, prediction="x0")


def edm_model(path):
    def fn(x, t):
        return gmm_x0(x, path.alpha(t), path.sigma(t)).to(x.dtype)

    return ods.Model(fn, path=path, prediction="x0")


def path_of(scheduler) -> ods.paths.VPDiscrete:
    """The VPDiscrete path whose alphas_cumprod are the scheduler's float32 values, exactly."""
    ac = scheduler.alphas_cumprod.to(torch.float64)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    return ods.paths.VPDiscrete(1 - ac / prev)


def rel(a, b):
    a, b = a.to(torch.float64), b.to(torch.float64)
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------------------------------
# diffusers side
# ---------------------------------------------------------------------------------------------


def _index(s):
    i = getattr(s, "step_index", None)
    if i is None:
        i = getattr(s, "begin_index", None) or 0
    return i


def level_sigmas(s, t):
    """(alpha, sigma) of the call, from a scheduler that keeps k-diffusion sigmas per call."""
    return vp_of_rho(s.sigmas[_index(s)].double())


def level_alphas_cumprod(s, t):
    ac = s.alphas_cumprod[int(t)].double()
    return ac.sqrt(), (1 - ac).sqrt()


def level_ipndm(s, t):
    i = _index(s)
    return s.alphas[i].double(), s.betas[i].double()


def run_diffusers(
    s,
    steps,
    x,
    level,
    *,
    coords="vp",
    prediction="epsilon",
    edm=False,
    set_kwargs=None,
    step_kwargs=None,
    calls=None,
    after_set=None,
    skip_last=False,
):
    """Run ``s`` like a pipeline from ``x`` (float64); the model is the exact denoiser at the noise
    level the scheduler itself uses for the call (``level(s, t) -> (alpha, sigma)``).

    coords="vp": the state is x_t; coords="kd": the state is x_t / alpha (k-diffusion's), and
    the network input is scale_model_input(state). ``after_set(s)`` runs after set_timesteps (to
    re-tabulate the scheduler in float64); ``skip_last`` stops before the last step."""
    s.set_timesteps(steps, **(set_kwargs or {}))
    if after_set is not None:
        after_set(s)
    x = x.clone()
    n = 0
    timesteps = s.timesteps[:-1] if skip_last else s.timesteps
    for t in timesteps:
        a, sg = level(s, t)
        if edm:  # EDM preconditioning: denoised = c_skip x + c_out F
            rho = s.sigmas[_index(s)].double()
            x0 = gmm_x0(x, 1.0, rho)
            sd = s.config.sigma_data
            c_skip = sd**2 / (rho**2 + sd**2)
            c_out = rho * sd / (rho**2 + sd**2) ** 0.5
            out = (x0 - c_skip * x) / c_out
            s.scale_model_input(x, t)
        elif coords == "kd":
            xin = s.scale_model_input(x, t)  # = x_t on the VP path
            x0 = gmm_x0(xin, a, sg)
            out = convert_vp(xin, a, sg, x0, prediction)
        else:
            x0 = gmm_x0(x, a, sg)
            out = convert_vp(x, a, sg, x0, prediction)
        x = s.step(out.to(x.dtype), t, x, **(step_kwargs or {})).prev_sample
        n += 1
    if calls is not None:
        calls.append(n)
    return x


# ---------------------------------------------------------------------------------------------
# reference solutions of the probability-flow ODE
# ---------------------------------------------------------------------------------------------

_MU, _V, _LW = MEANS.numpy(), VARS.numpy(), torch.log(WEIGHTS).numpy()


def _x0_np(xb, rho):
    """gmm_x0 in k-diffusion coordinates, numpy float64, for the ODE solver."""
    c = _V + rho * rho  # (K,)
    diff = xb[:, None, :] - _MU[None]  # (B, K, D)
    logw = _LW[None] - 0.5 * D * np.log(c)[None] - 0.5 * (diff * diff).sum(-1) / c[None]
    logw -= logw.max(1, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(1, keepdims=True)
    return (w[..., None] * (_MU[None] + (_V / c)[None, :, None] * diff)).sum(1)


def reference_kd(xbar, rho0: float, rho1: float):
    """The exact PF-ODE solution in k-diffusion coordinates: d xbar / d log rho = xbar - D(xbar, rho),
    from noise level rho0 to rho1 > 0 (DOP853, rtol = atol = 1e-12, float64)."""
    from scipy.integrate import solve_ivp

    shape = tuple(xbar.shape)
    y0 = xbar.detach().to(torch.float64).reshape(-1).numpy()

    def f(s, y):
        xb = y.reshape(shape)
        return (xb - _x0_np(xb, math.exp(s))).reshape(-1)

    sol = solve_ivp(f, (math.log(rho0), math.log(rho1)), y0, method="DOP853", rtol=1e-12, atol=1e-12)
    return torch.from_numpy(sol.y[:, -1].reshape(shape).copy())


def convergence_slope(ns, errors):
    """Least-squares slope of log(error) against log(1/N)."""
    ln = np.log(np.asarray(ns, dtype=np.float64))
    le = np.log(np.asarray(errors, dtype=np.float64))
    return float(-np.polyfit(ln, le, 1)[0])
