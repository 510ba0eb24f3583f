"""Every registered method against its paper's update, written out independently in float64
(``_paper.py``), on three grids: a continuous VP path with a uniform-lambda grid ending at
sigma > 0 and at sigma = 0, and the EDM path with a Karras grid ending at sigma = 0."""

from __future__ import annotations

import pytest
import torch
from _oracle_lib import edm_model, rel, vp_model, x_start
from _paper import PAPER
from _paper_sde import edm_sde, er_sde, restart, sa_solver, score_sde_pc

import odesolve as ods

VP = ods.paths.VP.linear()
EDM = ods.paths.EDM()


def _grids():
    g = ods.grids.uniform_lambda(VP, 12, t_start=1.0, t_end=1e-3)
    return {
        "vp-lambda": g,
        "vp-lambda-to-zero": ods.grids.from_times(VP, torch.cat([g.t, torch.zeros(1, dtype=torch.float64)])),
        "edm-karras-to-zero": ods.grids.karras(EDM, 10, sigma_min=0.01, sigma_max=80.0),
    }


GRIDS = _grids()


def _x(grid):
    x = x_start()
    return x * float(grid.path.sigma(grid.t[0]))  # a sample of about the right scale at t_0


@pytest.mark.parametrize("grid_name", list(GRIDS))
@pytest.mark.parametrize("name", ods.methods.names())
def test_method_equals_paper_formula(name, grid_name):
    if name not in PAPER:
        if ods.methods.get(name).stochastic:
            pytest.skip(f"{name!r} is stochastic: test_stochastic_method_equals_paper_algorithm")
        pytest.skip(f"no independent reference for {name!r} yet")
    grid = GRIDS[grid_name]
    x = _x(grid)
    got = ods.sample(vp_model(grid.path), x, grid, method=name)
    want = PAPER[name](grid.path, grid.t, x)
    assert torch.isfinite(got).all()
    assert rel(got, want) <= 1e-9, f"{name} on {grid_name}: relative difference {rel(got, want):.3e}"


# -- the stochastic samplers: the published algorithms, driven by the same per-call normals ----------------

PAPER_SDE = {
    "edm-sde": edm_sde,
    "restart": restart,
    "score-sde-pc": score_sde_pc,
    "sa-solver": sa_solver,
    **{f"er-sde-{k}": (lambda t, x, noise, k=k: er_sde(t, x, noise, k)) for k in (1, 2, 3)},
}
SDE_GRIDS = {
    "edm-karras": ods.grids.karras(EDM, 12, sigma_min=0.02, sigma_max=20.0, to_zero=False),
    "edm-karras-to-zero": ods.grids.karras(EDM, 12, sigma_min=0.02, sigma_max=20.0),
}


@pytest.mark.parametrize("grid_name", list(SDE_GRIDS))
@pytest.mark.parametrize("name", sorted(PAPER_SDE))
def test_stochastic_method_equals_paper_algorithm(name, grid_name):
    """Sample for sample, given the same normal at each model call (odesolve's PerSampleNormal keys
    them by call index; the references count their calls in the algorithm's order)."""
    grid = SDE_GRIDS[grid_name]
    if name == "sa-solver" and grid_name.endswith("to-zero"):
        pytest.skip("the reference's weights are quadratures over finite lambda intervals")
    x = x_start(scale=float(grid.t[0]))
    src = ods.noise.PerSampleNormal(range(x.shape[0]))
    got = ods.sample(edm_model(EDM), x, grid, method=name, noise=src)
    want = PAPER_SDE[name](grid.t, x, lambda k, shape: src.standard_normal(k, None, shape))
    assert torch.isfinite(got).all()
    assert rel(got, want) <= 1e-9, f"{name} on {grid_name}: relative difference {rel(got, want):.3e}"
