import math

import pytest
import torch

from odesolve import grids as G
from odesolve import paths as P


def test_karras_matches_the_edm_formula():
    g = G.karras(P.EDM(), steps=10, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    i = torch.arange(10, dtype=torch.float64)
    ref = (80.0 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert g.steps == 10 and float(g.sigmas[-1]) == 0.0
    assert torch.allclose(g.sigmas[:-1], ref, rtol=1e-13)


@pytest.mark.parametrize("path", [P.VP.linear(), P.VP.cosine(), P.VP.discrete(), P.FlowMatching(), P.EDM()], ids=repr)
def test_noise_levels_mean_the_same_on_every_path(path):
    g = G.karras(path, steps=8, sigma_min=0.01, sigma_max=10.0, to_zero=False)
    assert torch.allclose(
        g.sigmas, G.karras(P.EDM(), steps=8, sigma_min=0.01, sigma_max=10.0, to_zero=False).sigmas, rtol=1e-9
    )


def test_uniform_lambda_has_equal_steps():
    g = G.uniform_lambda(P.VP.linear(), 7, 1.0, 1e-3)
    d = g.lambdas[1:] - g.lambdas[:-1]
    assert torch.allclose(d, d[0].expand_as(d), rtol=1e-10)


def test_discrete_spacings_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    path = P.VP.discrete()
    for spacing, offset in [("leading", 1), ("trailing", 0), ("linspace", 0)]:
        s = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
        s.set_timesteps(10)
        g = G.discrete(path, 10, spacing=spacing, steps_offset=offset)
        assert g.t[:-1].tolist() == s.timesteps.double().tolist(), spacing
        assert float(g.t[-1]) == -1.0


def test_zero_length_steps_are_merged():
    g = G.from_sigmas(P.EDM(), [80.0, 10.0, 1.0, 0.002, 0.002, 0.0])
    assert g.steps == 4 and g.sigmas.tolist() == [80.0, 10.0, 1.0, 0.002, 0.0]  # EDM: t is sigma, exactly


def test_strength_keeps_the_last_steps():
    g = G.karras(P.EDM(), 10)
    h = g.strength(0.3)
    assert h.steps == 3 and torch.equal(h.t, g.t[-4:])


def test_grid_may_start_at_alpha_zero():
    path = P.VP.discrete(rescale_zero_terminal_snr=True)
    g = G.discrete(path, 10, spacing="trailing")
    assert float(g.alphas[0]) == 0.0 and math.isinf(float(g.sigmas[0]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: G.from_sigmas(P.EDM(), [1.0, 2.0, 0.5]), "decreasing"),
        (lambda: G.from_times(P.VP.linear(), [1.5, 0.5]), "domain"),
        (lambda: G.karras(P.EDM(), 0), "steps"),
        (lambda: G.karras(P.VP.linear(), 10, sigma_max=1e6), "sigma_max"),
        (lambda: G.from_sigmas(P.EDM(), [1.0, -1.0]), "sigmas"),
        (lambda: G.uniform_lambda(P.EDM(), 5), "t_start"),
        (lambda: G.discrete(P.VP.linear(), 5), "VPDiscrete"),
        (lambda: G.from_times(P.EDM(), [[1.0, 0.5]]), "1-D"),
    ],
)
def test_bad_grids_are_refused_with_the_argument_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
