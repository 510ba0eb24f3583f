"""The problem registry: names, determinism, shapes, paths."""

import math

import pytest
import torch

from odesolve.models import Model
from odesolve.paths import EDM, VE, VP, FlowMatching
from odesolve.toy import Gaussian, GaussianMixture, LowRankMixture, problems
from odesolve.toy.problems import _FACTORIES

F64 = torch.float64


def test_names_and_kinds():
    assert {"gmm2d", "lowrank64", "lowrank1024", "gaussian"} <= set(problems.names())
    gmm2d = problems.get("gmm2d").distribution
    assert isinstance(gmm2d, GaussianMixture) and gmm2d.dim == 2 and 5 <= gmm2d.n_components <= 8
    assert len(set(gmm2d.weights.tolist())) == gmm2d.n_components  # different weights
    ev = gmm2d.eigenvalues
    assert (ev[:, -1] / ev[:, 0] > 1.5).any()  # anisotropic
    # well separated: mean distances over 5 times the largest standard deviation
    dist = torch.cdist(gmm2d.means, gmm2d.means) + 1e9 * torch.eye(gmm2d.n_components, dtype=F64)
    assert dist.min() > 5 * ev.max().sqrt()
    lr64, lr1024 = problems.get("lowrank64").distribution, problems.get("lowrank1024").distribution
    assert isinstance(lr64, LowRankMixture) and lr64.dim == 64 and lr64.rank < 64
    assert isinstance(lr1024, LowRankMixture) and lr1024.dim == 1024 and lr1024.rank < 1024
    gauss = problems.get("gaussian").distribution
    assert isinstance(gauss, Gaussian) and gauss.dim == 8
    spread = gauss.eigenvalues.max() / gauss.eigenvalues.min()
    assert 99 < spread < 101  # two decades


def test_deterministic_and_frozen():
    for name in problems.names():
        a = problems.get(name)
        assert problems.get(name) is a
        b = _FACTORIES[name]()  # built again from the same seeds
        assert torch.equal(a.distribution.means, b.distribution.means)
        assert torch.equal(a.distribution.covs, b.distribution.covs)
        with pytest.raises(AttributeError):
            a.name = "other"
    with pytest.raises(ValueError, match="name must be one of"):
        problems.get("nope")


@pytest.mark.parametrize("name", ["gmm2d", "lowrank64", "lowrank1024", "gaussian"])
def test_problem_runs_on_any_path(name):
    prob = problems.get(name)
    assert isinstance(prob.path, EDM) and prob.times() == (80.0, 0.002)
    g = torch.Generator().manual_seed(0)
    for path in (EDM(), VP.linear(), VP.cosine(), FlowMatching(), VE(sigma_max=100.0)):
        p = prob.with_path(path)
        assert p.path is path and p.distribution is prob.distribution
        t0, t1 = p.times()
        assert path.t_min <= t1 < t0 <= path.t_max
        assert math.isclose(path.noise_level(torch.tensor(t0, dtype=F64)).item(), 80.0, rel_tol=1e-9)
        x = p.prior(4, g)
        assert x.shape == (4, prob.dim)
        m = p.model("eps")
        assert isinstance(m, Model) and m.path is path
        for t in (t0, 0.5 * (t0 + t1), t1):
            assert torch.isfinite(m.x0(x, t)).all()
        assert p.target().dim == prob.dim
    assert prob.data(3, g).shape == (3, prob.dim)
    with pytest.raises(TypeError, match="path must be|parameter 'path'"):
        prob.with_path("EDM")
