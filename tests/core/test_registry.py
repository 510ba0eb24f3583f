"""Contract tests run over the whole registry: a method is tested by being registered."""

import math

import pytest
import torch

import odesolve as ods
from odesolve import grids as G, paths as P

from exact import GAUSS, measured_order

NAMES = ods.methods.names()
EDM, VP = P.EDM(), P.VP.linear()


def _vp_t(level):
    return float(VP.t_of_noise_level(torch.tensor(level, dtype=torch.float64)))


# Grids that start at moderate noise, where x0 still changes along the path: the one-off error of a
# low-order warm-up step is then visible, and measured slopes are the asymptotic orders by N = 64..128
SETUPS = {
    "edm-karras": (EDM, lambda n: G.karras(EDM, n, sigma_min=0.02, sigma_max=0.5, to_zero=False)),
    "vp-uniform-lambda": (VP, lambda n: G.uniform_lambda(VP, n, _vp_t(0.5), _vp_t(0.02))),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("setup", list(SETUPS))
def test_measured_order_is_the_declared_order(name, setup):
    path, make_grid = SETUPS[setup]
    s, errs = measured_order(name, path, make_grid, steps=(32, 64, 128))
    assert abs(s[-1] - ods.methods.get(name).order) <= 0.2, (s, errs)


@pytest.mark.parametrize("name", NAMES)
def test_table_declares_its_structure(name):
    m = ods.methods.get(name)
    assert m.order >= 1 and m.calls_per_step >= 1 and m.history >= 0 and m.form in ("data", "noise")
    assert m.paper, "every table cites its source"
    plan = m.compile(EDM, G.karras(EDM, 12))
    assert plan.prediction == m.prediction
    assert plan.window <= m.history + m.calls_per_step + 1  # the ring holds no more than a warm-up needs
    steps = plan.step.tolist()
    assert sorted(set(steps)) == list(range(12))  # every step calls the model
    assert plan.calls <= 12 * m.calls_per_step + 1


@pytest.mark.parametrize("name", NAMES)
def test_step_to_sigma_zero_is_the_analytic_limit(name):
    """The last step to sigma = 0 has h = inf in lambda; every method takes the limit of its
    first-order update there, x_N = alpha_N x0(x_{N-1}), with no NaN (diffusers #9007, #5689).
    Methods that interpolate in rho or t (iPNDM, PLMS, DEIS, LMS) step in rho, where sigma = 0 is
    regular: they keep their full update, as their papers do."""
    grid = G.karras(EDM, 10)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    model = GAUSS.model(EDM)
    out, traj = ods.sample(model, x, grid, method=name, return_trajectory=True)
    assert bool(torch.isfinite(traj).all())
    m = ods.methods.get(name)
    if not isinstance(m, ods.methods.FixedAdams) and getattr(m, "variable", "lambda") == "lambda":
        assert torch.allclose(out, model.x0(traj[-2], grid.t[-2]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_zero_terminal_snr_start(name):
    """alpha = 0 at the first time: data-form methods take the exact limit, noise-form ones refuse."""
    path = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
    grid = G.discrete(path, 20, spacing="trailing")
    m = ods.methods.get(name)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = ods.Model(GAUSS.x0(path), path, "x0")
    if m.form == "noise":
        with pytest.raises(ValueError, match="alpha = 0"):
            ods.sample(model, x, grid, method=name)
        return
    out, traj = ods.sample(model, x, grid, method=name, return_trajectory=True)
    assert bool(torch.isfinite(traj).all())
    # the first step is the alpha -> 0 limit of DDIM: x_1 = sigma_1 x_T + alpha_1 x0(x_T)
    a1, s1 = path.alpha(grid.t[1]), path.sigma(grid.t[1])
    assert torch.allclose(traj[1], s1 * x + a1 * model.x0(x, grid.t[0]), rtol=1e-12, atol=1e-12)
    # lambda-steps near alpha = 0 do not shrink with N on a trailing grid (log 2, log 3/2, ...),
    # so 20 steps leave an error of ~0.1-0.2 on this problem (DDIM: 0.18, 2M: 0.12)
    ref = GAUSS.flow(path, x, grid.t[0], grid.t[-1])
    assert float((out - ref).abs().max()) < 0.25


def test_unknown_names_get_the_closest_known_names():
    with pytest.raises(ValueError, match="'dpmpp-2m'"):
        ods.methods.get("dpmpp_2m")


def test_register_refuses_duplicates_and_non_tables():
    with pytest.raises(ValueError, match="already registered"):
        ods.methods.register(ods.methods.get("ddim"))
    with pytest.raises(TypeError, match="Method"):
        ods.methods.register("ddim")


def test_lower_order_final_lowers_the_last_two_steps():
    grid = G.karras(EDM, 8, sigma_min=0.02, sigma_max=5.0, to_zero=False)
    plain = ods.methods.get("dpmpp-3m").compile(EDM, grid)
    low = ods.methods.get("dpmpp-3m").compile(EDM, grid, lower_order_final=True)
    nonzero = lambda p, k: int((p.update_hist[k] != 0).sum())  # noqa: E731
    assert [nonzero(plain, k) for k in range(8)] == [1, 2, 3, 3, 3, 3, 3, 3]
    assert [nonzero(low, k) for k in range(8)] == [1, 2, 3, 3, 3, 3, 2, 1]
    assert math.isclose(float(low.update_hist[-1, 0]), float(ods.methods.get("ddim").compile(EDM, grid).update_hist[-1, 0]))
