"""LowRankMixture: agrees with the dense GaussianMixture, and scales to d = 1024 in O(B K d r)."""

import math
import time

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odesolve.paths import EDM, VP, FlowMatching
from odesolve.toy import LowRankMixture, problems
from odesolve.toy import strategies as ts

F64 = torch.float64
PREDICTIONS = ("x0", "eps", "v", "velocity", "score")


@settings(max_examples=30, deadline=None)
@given(mix=ts.lowrank_mixtures(), path=ts.paths(), data=st.data(), seed=st.integers(0, 2**16))
def test_lowrank_agrees_with_dense(mix, path, data, seed):
    dense = mix.dense()
    assert mix.rank < mix.dim and dense.rank == mix.dim
    t = data.draw(ts.noise_times(path), label="t")
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([mix.sample_marginal(5, t, path, g), 10 * torch.randn(2, mix.dim, dtype=F64, generator=g)])
    lp, lp_dense = mix.log_prob(x, t, path), dense.log_prob(x, t, path)
    assert (lp - lp_dense).abs().max() <= 1e-10 * (1 + lp_dense.abs().max())
    assert (mix.responsibilities(x, t, path) - dense.responsibilities(x, t, path)).abs().max() <= 1e-10
    for k in PREDICTIONS:
        a, b = mix.predict(x, t, path, k), dense.predict(x, t, path, k)
        assert (a - b).abs().max() <= 1e-10 * b.abs().max(), k
    # data level (sigma = 0) too
    assert torch.allclose(mix.log_prob(x), dense.log_prob(x), rtol=1e-10, atol=1e-10)


def test_covariance_and_samples():
    g = torch.Generator().manual_seed(0)
    U = torch.randn(2, 6, 2, dtype=F64, generator=g)  # general (non-orthonormal) factors
    mix = LowRankMixture([0.4, 0.6], torch.randn(2, 6, dtype=F64, generator=g), U, noise=[0.1, 0.2])
    expected = U @ U.transpose(1, 2) + torch.tensor([0.01, 0.04], dtype=F64)[:, None, None] * torch.eye(6, dtype=F64)
    assert torch.allclose(mix.covs, expected, atol=1e-13)
    n = 40000
    x, k = mix.sample(n, torch.Generator().manual_seed(1), return_components=True)
    for j in range(2):
        xj = x[k == j]
        C = expected[j]
        se = ((C.diagonal()[:, None] * C.diagonal()[None, :] + C**2) / xj.shape[0]).sqrt()
        assert ((torch.cov(xj.T) - C).abs() <= 6 * se).all()
    # the noise floor is what the sample has off the subspace
    P = torch.linalg.svd(U[0], full_matrices=False)[0]
    off = (x[k == 0] - mix.means[0]) - (x[k == 0] - mix.means[0]) @ P @ P.T
    assert abs(off.pow(2).sum(1).mean().item() / (4 * 0.01) - 1) < 0.05


def test_d1024_is_fast_and_matches_dense_on_a_subset():
    prob = problems.get("lowrank1024")
    mix = prob.distribution
    assert (mix.dim, mix.n_components, mix.rank) == (1024, 8, 8)
    x = mix.sample_marginal(256, 0.5, EDM(), torch.Generator().manual_seed(2))
    tic = time.perf_counter()
    for k in PREDICTIONS:
        out = mix.predict(x, 0.5, EDM(), k)
        assert torch.isfinite(out).all()
    elapsed = time.perf_counter() - tic
    # 5 predictions of B K d r = 256 * 8 * 1024 * 8 = 1.7e7 multiply-adds each (plus the B K d residual):
    # well under a second; a dense O(B K d^2) evaluation would be 128 times the work
    assert elapsed < 10.0, elapsed
    # against the dense mixture: eigh of 1024 x 1024 covariances is the slow part, so two components
    g = torch.Generator().manual_seed(3)
    small = LowRankMixture(
        [0.3, 0.7],
        torch.randn(2, 1024, dtype=F64, generator=g),
        torch.randn(2, 1024, 8, dtype=F64, generator=g) / 8,
        noise=[0.05, 0.2],
    )
    dense = small.dense()
    for path, t in [(EDM(), 0.5), (VP.cosine(), 0.9), (FlowMatching(), 0.01)]:
        xs = small.sample_marginal(3, t, path, g)
        for k in ("x0", "eps", "score"):
            a, b = small.predict(xs, t, path, k), dense.predict(xs, t, path, k)
            assert (a - b).abs().max() <= 1e-10 * b.abs().max()
        assert torch.allclose(small.log_prob(xs, t, path), dense.log_prob(xs, t, path), rtol=1e-12)


def test_mixture_of_subspaces_denoiser_formula():
    """Zero means, orthonormal U_k, s -> the MoLRG formula of docs/theory.md section 7.3 with the floor:
    x0_hat = sum_k w_k [alpha ev/c P P^T + alpha f/c_perp (I - P P^T)] x."""
    g = torch.Generator().manual_seed(3)
    d, r = 10, 3
    P = torch.linalg.qr(torch.randn(2, d, r, dtype=F64, generator=g))[0]
    mix = LowRankMixture([0.5, 0.5], None, P, noise=0.1)
    x = torch.randn(4, d, dtype=F64, generator=g)
    a, s = 0.8, 0.6  # VP linear at some t: read alpha, sigma from the path
    path = VP.linear()
    t = path.t_of_lambda(torch.tensor(math.log(a / s), dtype=F64))
    w = mix.responsibilities(x, t, path)
    ev, f = 1 + 0.01, 0.01
    per = []
    for k in range(2):
        proj = x @ P[k] @ P[k].T
        per.append(a * ev / (a * a * ev + s * s) * proj + a * f / (a * a * f + s * s) * (x - proj))
    expected = (w[:, :, None] * torch.stack(per, 1)).sum(1)
    assert torch.allclose(mix.denoiser(x, t, path), expected, atol=1e-12)
