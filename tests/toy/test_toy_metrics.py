"""metrics: values that can be computed by hand."""

import math

import pytest
import torch

from odesolve.toy import GaussianMixture, metrics, problems

F64 = torch.float64


@pytest.fixture(scope="module")
def two_modes():
    return GaussianMixture([0.25, 0.75], [[-5.0, 0.0], [5.0, 0.0]], torch.eye(2, dtype=F64).expand(2, 2, 2) * 0.1)


def test_endpoint_error(two_modes):
    ref = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [5.0, 1.0], [-5.0, 1.0]], dtype=F64)
    x = ref + torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [12.0, 0.0]], dtype=F64)  # errors 5, 0, 0, 12
    e = metrics.endpoint_error(x, ref, two_modes)
    assert e.rmse == pytest.approx(math.sqrt((25 + 144) / 4 / 2))
    assert e.median == pytest.approx((0 + 5 / math.sqrt(2)) / 2)  # per-sample RMS errors 0, 0, 5/sqrt2, 12/sqrt2
    assert e.same_mode == pytest.approx(0.75)  # (-2, 4) stays in the left mode; (7, 1) flips to the right one
    assert metrics.endpoint_error(x, ref).same_mode is None
    with pytest.raises(ValueError, match="reference must have the shape of x"):
        metrics.endpoint_error(x, ref[:2])


def test_nll_is_the_mean_negative_log_density(two_modes):
    x = two_modes.sample(100, torch.Generator().manual_seed(0))
    assert metrics.nll(x, two_modes) == pytest.approx(-two_modes.log_prob(x).mean().item(), rel=1e-14)
    # a single standard normal in 1-D: E[-log p] = (1 + log 2 pi) / 2, checked to 4 standard errors
    g = GaussianMixture([1.0], [[0.0]], [[[1.0]]])
    n = 40000
    y = g.sample(n, torch.Generator().manual_seed(1))
    assert abs(metrics.nll(y, g) - 0.5 * (1 + math.log(2 * math.pi))) <= 4 * math.sqrt(0.5 / n)


def test_sliced_w2_by_hand():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 3, dtype=F64, generator=g)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    # a shift moves every projection by theta.c: SW2^2 = mean_theta (theta.c)^2, same directions as the metric
    theta = torch.randn(3, 64, dtype=F64, generator=torch.Generator().manual_seed(7))
    theta = theta / theta.norm(dim=0)
    expected = (c @ theta).pow(2).mean().sqrt().item()
    assert metrics.sliced_w2(x + c, x, 64, torch.Generator().manual_seed(7)) == pytest.approx(expected, rel=1e-12)
    # and E over directions of (theta.c)^2 = |c|^2 / d
    assert metrics.sliced_w2(x + c, x, 20000) == pytest.approx(c.norm().item() / math.sqrt(3), rel=0.03)
    assert metrics.sliced_w2(x, x) == 0.0
    # unequal sizes: the empirical quantile functions are compared, duplicating a set changes little
    assert metrics.sliced_w2(torch.cat([x, x]), x) < 0.05
    # deterministic default generator
    y = torch.randn(300, 3, dtype=F64, generator=g)
    assert metrics.sliced_w2(x, y) == metrics.sliced_w2(x, y)


def test_mode_coverage(two_modes):
    x = torch.tensor([[-5.0, 0.0]] * 3 + [[5.0, 0.0]] * 1, dtype=F64)
    cov = metrics.mode_coverage(x, two_modes)
    assert torch.equal(cov.histogram, torch.tensor([0.75, 0.25], dtype=F64))
    assert cov.tv == pytest.approx(0.5)
    prob = problems.get("gmm2d")
    n = 20000
    data = prob.data(n, torch.Generator().manual_seed(3))
    # exact samples: TV of a multinomial histogram is O(sqrt(K / n)) ~ 0.017; modes are well separated
    assert metrics.mode_coverage(data, prob.distribution).tv < 0.03
