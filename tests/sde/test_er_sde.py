"""ER-SDE-Solver's noise-scale functions at their ends: phi = rho is the probability-flow ODE (DDIM),
phi = rho^2 the reverse diffusion (DDPM = DPM-Solver++(1) SDE); every choice stays finite at an
alpha = 0 start and on a step to sigma = 0."""

import pytest
import torch

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.methods.extended_reverse_sde import NOISE_SCALES
from odesolve.toy.gaussian import Gaussian

EDM, VP = P.EDM(), P.VP.linear()
ZSNR = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
_FIELDS = ("update_state", "update_hist", "update_noise")


@pytest.mark.parametrize("path, grid", [(EDM, G.karras(EDM, 9)), (VP, G.uniform_lambda(VP, 9, 0.9, 1e-3))])
def test_the_ode_and_the_reverse_diffusion_are_ddim_and_ddpm(path, grid):
    ode = ods.methods.get("er-sde-1").compile(path, grid, noise_scale="ode")
    ddim = ods.methods.get("ddim").compile(path, grid)
    assert not ode.stochastic
    assert torch.allclose(ode.update_state, ddim.update_state, rtol=1e-12, atol=1e-15)
    assert torch.allclose(ode.update_hist[:, 0], ddim.update_hist[:, 0], rtol=1e-12, atol=1e-15)
    sde = ods.methods.get("er-sde-1").compile(path, grid, noise_scale="sde")
    ddpm = ods.methods.get("ddpm").compile(path, grid)
    for f in _FIELDS:
        assert torch.allclose(getattr(sde, f), getattr(ddpm, f), rtol=1e-12, atol=1e-15), f


@pytest.mark.parametrize("scale", sorted(NOISE_SCALES))
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_every_noise_scale_is_finite_from_zero_snr_to_sigma_zero(scale, stages):
    grid = G.discrete(ZSNR, 10, spacing="trailing")
    plan = ods.methods.get(f"er-sde-{stages}").compile(ZSNR, grid, noise_scale=scale)
    assert all(bool(torch.isfinite(getattr(plan, f)).all()) for f in _FIELDS)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = Gaussian([0.5, -0.2], [[0.3, 0.0], [0.0, 0.1]]).model(ZSNR, "x0")
    out = ods.sample(model, x, grid, method=plan, seeds=range(4))
    assert bool(torch.isfinite(out).all())


def test_an_unknown_noise_scale_is_refused():
    with pytest.raises(ValueError, match="noise_scale must be one of"):
        ods.methods.get("er-sde-2").compile(EDM, G.karras(EDM, 5), noise_scale="cubic")
