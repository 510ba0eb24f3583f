"""Tiny random diffusers networks (built from configs, no downloaded weights) and an exact toy model."""

from __future__ import annotations

import warnings

import torch

warnings.filterwarnings("ignore", category=FutureWarning)
import diffusers

D = 6
_g = torch.Generator().manual_seed(7)
MEANS = torch.randn(3, D, generator=_g, dtype=torch.float64) * 0.8
VARS = torch.tensor([0.04, 0.25, 0.6], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def gmm_x0(x, alpha, sigma):
    """E[x0 | x_t = x] for a three-component isotropic Gaussian mixture in 6 dimensions (float64)."""
    shape = x.shape
    x = x.reshape(shape[0], -1).to(torch.float64)
    a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1, 1)
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
    c = a * a * VARS[None, :, None] + s * s
    diff = x[:, None, :] - a * MEANS[None]
    logw = torch.log(WEIGHTS)[None] - 0.5 * D * torch.log(c[..., 0]) - 0.5 * (diff * diff).sum(-1) / c[..., 0]
    w = torch.softmax(logw, dim=1)[..., None]
    return (w * (MEANS[None] + a * VARS[None, :, None] / c * diff)).sum(1).reshape(shape)


def tiny_unet(out_channels=3, seed=0, sample_size=8):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=out_channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def tiny_cond_unet(seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=4,
        attention_head_dim=2,
    ).eval()


def loop(scheduler, net, x, steps, *, scale_input=False, generator=None, **set_kwargs):
    """A pipeline's denoising loop (as DDPMPipeline / StableDiffusionPipeline write it)."""
    scheduler.set_timesteps(steps, **set_kwargs)
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)
    with torch.no_grad():
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t) if scale_input else x
            out = net(inp, t)
            out = out.sample if hasattr(out, "sample") else out
            x = scheduler.step(out, t, x).prev_sample
    return x


def rel(a, b):
    a, b = a.to(torch.float64), b.to(torch.float64)
    return float((a - b).abs().max() / b.abs().max())
