"""odesolve.noise: per-sample normals and Brownian paths, tested statistically and bit for bit.

Statistical tolerances are 5 standard errors of the estimate (a false failure about once in
3.5 million runs); every draw is deterministic (counter-based), so a run that passes always passes.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from odesolve import noise as N

Z = 5.0  # standard errors allowed


def _close(estimate, value, stderr):
    assert abs(float(estimate) - value) <= Z * stderr, (float(estimate), value, stderr)


# -- the hash --------------------------------------------------------------------------------------


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_torch_splitmix_equals_the_python_reference(words):
    """int64 torch arithmetic (wrapping multiplication, logical shifts) reproduces splitmix64."""
    got = N._mix_t(torch.tensor(words, dtype=torch.int64)).tolist()
    assert got == [N._signed(N._mix(w)) for w in words]


# -- per-sample normals ------------------------------------------------------------------------------


def test_per_sample_normals_are_standard_normal_and_independent():
    n = 40_000
    src = N.PerSampleNormal(range(n))
    z = src.standard_normal(0, None, (n, 3)).double()
    z2 = src.standard_normal(1, None, (n, 3)).double()
    for v in (z[:, 0], z[:, 2], z2[:, 1]):
        _close(v.mean(), 0.0, 1 / math.sqrt(n))
        _close(v.var(), 1.0, math.sqrt(2 / n))
        _close((v**4).mean(), 3.0, math.sqrt(96 / n))  # Var z^4 = 105 - 9
    for a, b in ((z[:, 0], z[:, 1]), (z[:, 0], z2[:, 0]), (z[:-1, 0], z[1:, 0])):  # elements, calls, seeds
        _close((a * b).mean(), 0.0, 1 / math.sqrt(n))
    assert stats.kstest(z[:, 0].numpy(), "norm").pvalue > 1e-4


@given(position=st.integers(0, 63), call=st.integers(0, 10_000))
@settings(max_examples=20, deadline=None)
def test_a_samples_noise_depends_only_on_its_seed(position, call):
    seeds = list(range(1000, 1064))
    batch = N.PerSampleNormal(seeds).standard_normal(call, None, (64, 2, 3))
    alone = N.PerSampleNormal([seeds[position]]).standard_normal(call, None, (1, 2, 3))
    assert torch.equal(batch[position : position + 1], alone)
    moved = seeds[position:] + seeds[:position]  # the same seed at position 0 of another batch
    assert torch.equal(N.PerSampleNormal(moved).standard_normal(call, None, (64, 2, 3))[:1], alone)


def test_float32_noise_is_the_float64_noise_rounded():
    src = N.PerSampleNormal(range(5))
    assert torch.equal(
        src.standard_normal(3, None, (5, 7), torch.float32), src.standard_normal(3, None, (5, 7), torch.float64).float()
    )


# -- Brownian paths -----------------------------------------------------------------------------------

INTERVALS = [(0.0, 1.0), (0.3, 0.30001), (-2.5, 0.7), (0.9, 1.3), (80.0, 9.72), (700.5, 999.0), (-1.0, -0.999)]


@pytest.mark.parametrize("s,t", INTERVALS)
def test_increments_have_mean_zero_and_variance_the_interval(s, t):
    n = 20_000
    w = N.BrownianPaths(range(n)).increment(s, t, (n, 2))
    L = abs(t - s)
    for v in w.unbind(1):
        _close(v.mean(), 0.0, math.sqrt(L / n))
        _close(v.var(), L, L * math.sqrt(2 / n))
    assert stats.kstest((w[:, 0] / math.sqrt(L)).numpy(), "norm").pvalue > 1e-4


def test_disjoint_increments_are_independent_and_overlapping_ones_correlated():
    n = 20_000
    src = N.BrownianPaths(range(n))
    a, b, c = (src.increment(s, t, (n, 1))[:, 0] for s, t in ((0.2, 0.9), (0.9, 2.6), (0.5, 1.5)))
    _close(torch.corrcoef(torch.stack([a, b]))[0, 1], 0.0, 1 / math.sqrt(n))
    # Cov(W(0.9)-W(0.2), W(1.5)-W(0.5)) = |[0.5, 0.9]| = 0.4
    _close((a * c).mean(), 0.4, math.sqrt((0.7 * 1.0 + 0.16) / n))
    # independent across elements and across seeds
    w = src.increment(0.0, 1.0, (n, 2))
    _close((w[:, 0] * w[:, 1]).mean(), 0.0, 1 / math.sqrt(n))
    _close((w[:-1, 0] * w[1:, 0]).mean(), 0.0, 1 / math.sqrt(n))


def test_bridge_law_of_the_midpoint():
    """Given W(s) and W(u), W(m) is normal with mean the linear interpolation and variance
    (m - s)(u - m)/(u - s): the regression of W(m) - W(s) on W(u) - W(s) has that slope and residual."""
    n = 20_000
    src = N.BrownianPaths(range(n))
    s, m, u = 0.37, 1.1, 3.3
    x = src.increment(s, m, (n, 1))[:, 0].double().numpy()
    y = src.increment(s, u, (n, 1))[:, 0].double().numpy()
    slope = np.dot(x, y) / np.dot(y, y)
    resid = x - slope * y
    _close(slope, (m - s) / (u - s), math.sqrt((m - s) * (u - m) / (u - s) / np.dot(y, y)))
    v = (m - s) * (u - m) / (u - s)
    _close(resid.var(), v, v * math.sqrt(2 / n))


@given(
    points=st.lists(st.floats(-50.0, 1000.0, allow_nan=False), min_size=3, max_size=7, unique=True),
    seed=st.integers(0, 2**40),
)
@settings(max_examples=12, deadline=None)
def test_increments_add_up_whatever_the_partition(points, seed):
    """Refinement consistency: the increments over a fine partition sum to the coarse increment, and
    every increment is the same number whatever was queried before (a deterministic function of the
    seed and the two times)."""
    pts = sorted(points)
    src = N.BrownianPaths([seed, seed + 1])
    whole = src.increment(pts[0], pts[-1], (2, 3))
    parts = sum(src.increment(a, b, (2, 3)) for a, b in itertools.pairwise(pts))
    assert torch.allclose(parts, whole, rtol=0, atol=1e-11 * (1 + abs(pts[-1]) + abs(pts[0])))
    fresh = N.BrownianPaths([seed, seed + 1])
    for a, b in reversed(list(itertools.pairwise(pts))):  # another object, another order
        assert torch.equal(fresh.increment(a, b, (2, 3)), src.increment(a, b, (2, 3)))
    assert torch.equal(src.increment(pts[-1], pts[0], (2, 3)), -whole)


def test_normalised_increments_and_the_fallback():
    src = N.BrownianPaths([4, 5])
    xi = src.standard_normal(7, (2.0, 1.5), (2, 3))
    assert torch.allclose(xi, src.increment(2.0, 1.5, (2, 3)) / math.sqrt(0.5), rtol=1e-15, atol=0)
    fallback = src.standard_normal(7, None, (2, 3))
    assert torch.equal(fallback, N.PerSampleNormal([4, 5]).standard_normal(7, None, (2, 3)))
    assert torch.equal(src.value(0.0, (2, 3)), torch.zeros(2, 3, dtype=torch.float64))


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="seeds.*none"):
        N.BrownianPaths([])
    with pytest.raises(ValueError, match=r"seeds.*\[0, 2\^63\)"):
        N.PerSampleNormal([-1])
    with pytest.raises(TypeError, match="seeds must be integers"):
        N.PerSampleNormal([1.5])
    with pytest.raises(TypeError, match="seeds must be integers"):
        N.PerSampleNormal([True])
    with pytest.raises(TypeError, match="seeds must be a sequence"):
        N.PerSampleNormal(3)
    with pytest.raises(TypeError, match="seeds must be a 1-D sequence"):
        N.PerSampleNormal(torch.zeros(3))
    with pytest.raises(ValueError, match="depth"):
        N.BrownianPaths([1], depth=0)
    with pytest.raises(ValueError, match="2 seeds.*batch has shape \\(3, 1\\)"):
        N.BrownianPaths([1, 2]).increment(0.0, 1.0, (3, 1))
    with pytest.raises(ValueError, match="finite"):
        N.BrownianPaths([1]).increment(0.0, math.inf, (1, 1))
    with pytest.raises(ValueError, match="positive length"):
        N.BrownianPaths([1]).standard_normal(0, (1.0, 1.0), (1, 1))
    assert torch.equal(
        N.PerSampleNormal(torch.arange(3)).standard_normal(0, None, (3, 1)),
        N.PerSampleNormal(range(3)).standard_normal(0, None, (3, 1)),
    )


# -- the chunked generator ----------------------------------------------------------------------------


def _plain_normals(bases, d):
    """The defining expression, whole tensors at once: Box-Muller of words 2e+1 and 2e+2 of each stream."""
    e = torch.arange(d, dtype=torch.int64)
    state = bases[..., None] + (2 * e + 1) * N._signed(N._GAMMA)
    u1, u2 = N._uniform(N._mix_t(state)), N._uniform(N._mix_t(state + N._signed(N._GAMMA)))
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 15])
def test_chunked_normals_equal_the_plain_expression_bit_for_bit(monkeypatch, chunk):
    """The cache-sized, in-place generator (any chunk size, including chunks that split a row) gives the
    values of the defining expression exactly, and so does its weighted sum over terms (summed in order)."""
    monkeypatch.setattr(N, "_CHUNK", chunk)
    bases = N._mix_t(torch.arange(3 * 5, dtype=torch.int64).reshape(3, 5) * 7919 + 11)
    plain = _plain_normals(bases, 37)
    assert torch.equal(N._normals(bases, 37), plain)
    w = [0.5, -1.25, 3.0e-3, 2.0, 0.7]
    expected = plain[:, 0] * w[0]
    for i in range(1, 5):
        expected = expected + plain[:, i] * w[i]
    assert torch.equal(N._weighted_normals(bases, 37, w), expected)
    chunked = N.BrownianPaths([3, 9]).increment(0.37, 5.1, (2, 4, 9))
    monkeypatch.setattr(N, "_CHUNK", 1 << 20)
    assert torch.equal(chunked, N.BrownianPaths([3, 9]).increment(0.37, 5.1, (2, 4, 9)))
