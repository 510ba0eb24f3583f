"""The public hypothesis strategies draw valid objects; odesolve.toy does not import hypothesis."""

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odesolve.paths import Path
from odesolve.toy import Gaussian, GaussianMixture, LowRankMixture
from odesolve.toy import strategies as ts


def test_toy_does_not_import_hypothesis_or_strategies():
    code = "import sys, odesolve.toy; print('hypothesis' in sys.modules, 'odesolve.toy.strategies' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@settings(max_examples=25, deadline=None)
@given(gmm=ts.mixtures(condition=50.0), lr=ts.lowrank_mixtures(), g=ts.gaussians(), path=ts.paths(), data=st.data())
def test_drawn_objects_are_valid(gmm, lr, g, path, data):
    assert isinstance(gmm, GaussianMixture) and isinstance(lr, LowRankMixture) and isinstance(g, Gaussian)
    ev = gmm.eigenvalues
    assert (ev > 0).all() and (ev.max(1).values / ev.min(1).values <= 50.0 * (1 + 1e-9)).all()
    assert lr.rank < lr.dim
    assert torch.allclose(gmm.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert isinstance(path, Path)
    t = data.draw(ts.times(path))
    assert path.t_min <= t <= path.t_max
    tn = data.draw(ts.noise_times(path, 1e-2, 1e2))
    rho = path.noise_level(torch.tensor(tn, dtype=torch.float64)).item()
    assert path.t_min <= tn <= path.t_max and rho > 0


@settings(max_examples=25, deadline=None)
@given(data=st.data(), path=ts.paths())
def test_random_grids(data, path):
    grids = pytest.importorskip("odesolve.grids")
    ratio = 1.5
    grid = data.draw(ts.grids(path, ratio=ratio))
    assert isinstance(grid, grids.Grid)
    t = grid.t
    assert (t[1:] < t[:-1]).all() and t.dtype == torch.float64
    lam = path.lambda_(t)
    h = lam[1:] - lam[:-1]
    h = h[torch.isfinite(h)]
    assert (h > 0).all()
    if h.numel() >= 2:  # bounded ratios of consecutive steps in lambda
        r = h[1:] / h[:-1]
        assert (r <= ratio * (1 + 1e-6)).all() and (r >= (1 - 1e-6) / ratio).all()
