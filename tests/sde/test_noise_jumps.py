"""EDM's churn and Restart without their jumps are Heun's method; their jumps are exact forward noise
(the marginal of a Gaussian is kept through a jump); bad options are refused by name."""

import pytest
import torch

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.toy.gaussian import Gaussian

EDM, VP = P.EDM(), P.VP.linear()
GAUSS = Gaussian([0.5, -0.3], [[0.25, 0.05], [0.05, 0.4]])
CASES = [(EDM, G.karras(EDM, 8, sigma_min=0.05, sigma_max=5.0)), (VP, G.uniform_lambda(VP, 8, 0.8, 1e-2))]


@pytest.mark.parametrize("path, grid", CASES)
def test_without_jumps_both_are_heun(path, grid):
    x = torch.linspace(-2, 2, 10, dtype=torch.float64).reshape(5, 2) * float(path.sigma(grid.t[0]))
    model = GAUSS.model(path, "x0")
    heun = ods.sample(model, x, grid, method="heun")
    churn0 = ods.sample(model, x, grid, method="edm-sde", s_churn=0.0, seeds=range(5))
    restart0 = ods.sample(model, x, grid, method="restart", restart=(), seeds=range(5))
    assert torch.allclose(churn0, heun, rtol=1e-13, atol=1e-13)
    assert torch.allclose(restart0, heun, rtol=1e-13, atol=1e-13)


def test_restart_makes_its_jumps_and_repeats():
    grid = G.karras(EDM, 8, sigma_min=0.05, sigma_max=5.0)
    plan = ods.methods.get("restart").compile(EDM, grid, restart=((0.1, 1.0, 3),), restart_steps=2)
    jumps = torch.nonzero(plan.input_noise).flatten()
    assert len(jumps) == 3  # K = 3 jumps of sqrt(1 - 0.1^2), at sigma_max, on disjoint fixed intervals
    assert torch.allclose(plan.input_noise[jumps], torch.full((3,), (1 - 0.01) ** 0.5, dtype=torch.float64))
    assert torch.allclose(plan.times[jumps], torch.ones(3, dtype=torch.float64))
    assert plan.noise_interval[jumps].tolist() == [[-1.0, 0.0], [-2.0, -1.0], [-3.0, -2.0]]
    assert not plan.correlated_noise
    # 8 Heun steps (the last to sigma = 0 an Euler step), one split at sigma = 0.1, 3 restarts of 2 Heun steps
    assert plan.calls == 2 * 8 - 1 + 2 + 3 * 2 * 2


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("restart", ((1.0, 0.1, 2),), "rho_max"),
        ("restart", ((0.1, 1.0, 0),), "K"),
        ("restart", "0.1-1.0", "restart must be a tuple"),
        ("restart_steps", 0, "restart_steps"),
    ],
)
def test_restart_refuses_bad_options(option, value, match):
    grid = G.karras(EDM, 6)
    with pytest.raises((ValueError, TypeError), match=match):
        ods.methods.get("restart").compile(EDM, grid, **{option: value})


def test_churn_refuses_bad_options():
    grid = G.karras(EDM, 6)
    with pytest.raises(ValueError, match="s_churn"):
        ods.methods.get("edm-sde").compile(EDM, grid, s_churn=-1.0)
    with pytest.raises(TypeError, match="s_noise"):
        ods.methods.get("edm-sde").compile(EDM, grid, s_noise="1")
