"""Every registered method against its paper's update, written out independently in float64
(``_paper.py``), on three grids: a continuous VP path with a uniform-lambda grid ending at
sigma > 0 and at sigma = 0, and the EDM path with a Karras grid ending at sigma = 0."""

from __future__ import annotations

import pytest
import torch
from _oracle_lib import rel, vp_model, x_start
from _paper import PAPER

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
        pytest.skip(f"no independent reference for {name!r} yet")
    grid = GRIDS[grid_name]
    x = _x(grid)
    got = ods.sample(vp_model(grid.path), x, grid, method=name)
    want = PAPER[name](grid.path, grid.t, x)
    assert torch.isfinite(got).all()
    assert rel(got, want) <= 1e-9, f"{name} on {grid_name}: relative difference {rel(got, want):.3e}"
