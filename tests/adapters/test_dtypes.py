"""Half-precision networks with a float32 state, on CPU.

``odesolve.Model(fn, path, prediction, dtype=torch.float16)`` casts the network's inputs; the
executor keeps the state and the history in float32 (or better). The result must stay within a
modest multiple of the half-precision unit roundoff u of the float64 result, and keeping the state
in float32 must not be worse than keeping it in half precision.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _adapters_lib import diffusers, gmm_x0, rel, tiny_unet

import odesolve as ods
from odesolve.adapters.diffusers import grid_from_config, model_from_diffusers

PATH = ods.paths.VP.discrete()
GRID = ods.grids.discrete(PATH, 20, spacing="trailing", final="first")
METHODS = ["ddim", "dpmpp-2m", "unipc-bh2-3", "heun"]


def _fn(x, t):  # the exact denoiser, evaluated on the (rounded) input, rounded to the input's dtype
    return gmm_x0(x.double(), PATH.alpha(t), PATH.sigma(t)).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_with_float32_state(dtype):
    u = torch.finfo(dtype).eps / 2
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    total32, total_half = 0.0, 0.0
    for method in METHODS:
        ref = ods.sample(ods.Model(_fn, PATH, "x0"), x, GRID, method=method)
        out32 = ods.sample(ods.Model(_fn, PATH, "x0", dtype=dtype), x.float(), GRID, method=method)
        out_half = ods.sample(ods.Model(_fn, PATH, "x0", dtype=dtype), x.to(dtype), GRID, method=method)
        assert out32.dtype == torch.float32 and out_half.dtype == dtype
        e32, e_half = rel(out32, ref), rel(out_half, ref)
        assert e32 <= 128 * u, f"{method}, {dtype} model, float32 state: error {e32 / u:.1f} u"
        total32, total_half = total32 + e32, total_half + e_half
    assert total32 < total_half


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_unet_with_float32_state(dtype):
    cfg = diffusers.DDPMScheduler(prediction_type="sample").config
    unet = tiny_unet()
    grid = grid_from_config(cfg, 10)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ods.sample(model_from_diffusers(unet.double(), cfg), x.double(), grid, method="dpmpp-2m")
        half = model_from_diffusers(copy.deepcopy(unet).to(dtype), cfg, dtype=dtype)
        out = ods.sample(half, x, grid, method="dpmpp-2m")
    assert out.dtype == torch.float32
    assert rel(out, ref) <= 64 * torch.finfo(dtype).eps / 2


def test_network_dtype_is_the_default_input_dtype():
    unet = tiny_unet()
    cfg = diffusers.DDPMScheduler().config
    model = model_from_diffusers(unet, cfg)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert model(x, torch.tensor(10.0)).dtype == torch.float32


def test_scheduler_keeps_a_float32_state_for_a_half_precision_pipeline():
    from _adapters_lib import loop

    from odesolve.adapters.diffusers import OdesolveScheduler

    cfg = diffusers.DDPMScheduler(prediction_type="sample").config
    unet = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = loop(OdesolveScheduler.from_config(cfg, method="unipc-bh2-3"), unet, x, 10)
    half = copy.deepcopy(unet).to(torch.float16)
    s = OdesolveScheduler.from_config(cfg, method="unipc-bh2-3")
    out = loop(s, half, x.half(), 10)
    assert out.dtype == torch.float16 and s._program.working_dtype == torch.float32
    assert rel(out, ref) <= 64 * torch.finfo(torch.float16).eps / 2
