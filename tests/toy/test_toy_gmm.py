"""GaussianMixture: densities, scores and predictions against independent formulas, limits, sampling."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odesolve.models import Model
from odesolve.paths import EDM, VE, VP, FlowMatching
from odesolve.toy import GaussianMixture
from odesolve.toy import strategies as ts

F64 = torch.float64
PREDICTIONS = ("x0", "eps", "v", "velocity", "score")


def _points(gmm, t, path, seed, n=6):
    """Points where p_t lives, plus a few far out."""
    g = torch.Generator().manual_seed(seed)
    x = gmm.sample_marginal(n, t, path, g)
    far = 3 * x.abs().max() * torch.randn(2, gmm.dim, dtype=F64, generator=g)
    return torch.cat([x, far])


def _naive(weights, means, covs, x, a, s):
    """Dense textbook formulas: log p_t and E[x0 | x] with MultivariateNormal and linalg.solve."""
    d = means.shape[1]
    logits, post = [], []
    for w, mu, S in zip(weights, means, covs):
        C = a * a * S + s * s * torch.eye(d, dtype=F64)
        mvn = torch.distributions.MultivariateNormal(a * mu, covariance_matrix=C)
        logits.append(math.log(w) + mvn.log_prob(x))
        post.append(mu + a * torch.linalg.solve(C, (x - a * mu).T).T @ S)
    logits = torch.stack(logits, 1)
    r = torch.softmax(logits, 1)
    return torch.logsumexp(logits, 1), (r[:, :, None] * torch.stack(post, 1)).sum(1)


@settings(max_examples=30, deadline=None)
@given(gmm=ts.mixtures(dims=st.integers(1, 5)), path=ts.paths(), data=st.data(), seed=st.integers(0, 2**16))
def test_score_is_the_gradient_of_log_p(gmm, path, data, seed):
    t = data.draw(ts.noise_times(path), label="t")
    x = _points(gmm, t, path, seed).requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x, t, path).sum(), x)
    score = gmm.score(x.detach(), t, path)
    assert (score - grad).abs().max() <= 1e-9 * grad.abs().max() + 1e-300


@settings(max_examples=30, deadline=None)
@given(path=ts.paths(), data=st.data(), seed=st.integers(0, 2**16))
def test_log_prob_and_denoiser_match_dense_textbook_formulas(path, data, seed):
    d = data.draw(st.integers(1, 4), label="d")
    K = data.draw(st.integers(1, 3), label="K")
    w = data.draw(ts.weights(K), label="weights")
    mu = torch.stack([data.draw(ts.vectors(d, -3, 3)) for _ in range(K)])
    covs = torch.stack([data.draw(ts.spd_matrices(d, 100.0)) for _ in range(K)])
    gmm = GaussianMixture(w, mu, covs)
    t = data.draw(ts.noise_times(path, 1e-2, 1e2), label="t")
    x = _points(gmm, t, path, seed)
    tt = torch.tensor(t, dtype=F64)
    lp, x0 = _naive(w.tolist(), mu, covs, x, path.alpha(tt).item(), path.sigma(tt).item())
    assert torch.allclose(gmm.log_prob(x, t, path), lp, rtol=1e-10, atol=1e-10)
    assert (gmm.denoiser(x, t, path) - x0).abs().max() <= 1e-10 * (1 + x0.abs().max())


@settings(max_examples=30, deadline=None)
@given(gmm=ts.mixtures(), path=ts.paths(), data=st.data(), seed=st.integers(0, 2**16))
def test_predictions_agree_through_the_path_relations(gmm, path, data, seed):
    t = data.draw(ts.noise_times(path), label="t")
    x = _points(gmm, t, path, seed)
    tt = torch.full((x.shape[0],), t, dtype=F64)
    a, s = path.alpha(tt)[:, None], path.sigma(tt)[:, None]
    da, ds = (v[:, None] for v in path.derivatives(tt))
    p = {k: gmm.predict(x, tt, path, k) for k in PREDICTIONS}
    x0, eps = p["x0"], p["eps"]

    def close(u, v, scale):
        assert (u - v).abs().max() <= 1e-10 * scale

    close(a * x0 + s * eps, x, x.abs().max() + (a * x0).abs().max())
    close(s * p["score"], -eps, eps.abs().max() + 1e-300)
    close(p["v"], a * eps - s * x0, (a * eps).abs().max() + (s * x0).abs().max())
    close(p["velocity"], da * x0 + ds * eps, (da * x0).abs().max() + (ds * eps).abs().max())
    # every Model view of the exact network gives back the same predictions
    for native in PREDICTIONS:
        m = gmm.model(path, native)
        for target in ("x0", "eps"):
            ref = p[target]
            scale = (x.abs().max() + ref.abs().max()) / torch.minimum(a, s).min().clamp(max=1.0)
            close(m.predict(x, tt, target), ref, scale)


def test_marginal_is_the_same_mixture():
    g = torch.Generator().manual_seed(0)
    covs = torch.eye(3, dtype=F64).expand(2, 3, 3) * torch.tensor([0.5, 2.0], dtype=F64)[:, None, None]
    gmm = GaussianMixture([0.2, 0.8], torch.randn(2, 3, dtype=F64, generator=g), covs)
    for path, t in [(EDM(), 2.5), (VP.linear(), 0.4), (FlowMatching(), 0.9)]:
        x = torch.randn(7, 3, dtype=F64, generator=g)
        m = gmm.marginal(t, path)
        assert torch.allclose(m.log_prob(x), gmm.log_prob(x, t, path), rtol=1e-13, atol=1e-13)
        assert torch.allclose(m.responsibilities(x), gmm.responsibilities(x, t, path), atol=1e-13)


# -- limits ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gmm3():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(3, 3, 3, dtype=F64, generator=g)
    return GaussianMixture(
        [0.5, 0.3, 0.2],
        3 * torch.randn(3, 3, dtype=F64, generator=g),
        A @ A.transpose(1, 2) / 3 + 0.05 * torch.eye(3, dtype=F64),
    )


CLEAN_ENDS = [(EDM(), 0.0), (VP.linear(), 0.0), (VP.cosine(), 0.0), (FlowMatching(), 0.0), (VP.discrete(), -1.0)]
ZERO_SNR = [(VP.cosine(), 1.0), (FlowMatching(), 1.0), (VP.discrete(rescale_zero_terminal_snr=True), 999.0)]


@pytest.mark.parametrize("path,t", CLEAN_ENDS, ids=lambda v: type(v).__name__ if not isinstance(v, float) else str(v))
def test_clean_end_sigma_zero(gmm3, path, t):
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    a = path.alpha(torch.tensor(t, dtype=F64)).item()
    assert path.sigma(torch.tensor(t, dtype=F64)).item() == 0
    assert torch.allclose(gmm3.denoiser(x, t, path), x / a, atol=1e-13)
    assert torch.equal(gmm3.eps(x, t, path), torch.zeros_like(x))
    assert torch.allclose(gmm3.log_prob(x, t, path), gmm3.log_prob(x / a) - 3 * math.log(a), atol=1e-12)
    assert torch.allclose(gmm3.score(x, t, path), gmm3.score(x / a, 0.0, EDM()) / a, atol=1e-12)
    for k in ("v", "score"):
        assert torch.isfinite(gmm3.predict(x, t, path, k)).all()


@pytest.mark.parametrize("path,t", ZERO_SNR, ids=lambda v: type(v).__name__ if not isinstance(v, float) else str(v))
def test_zero_terminal_snr_alpha_zero(gmm3, path, t):
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    s = path.sigma(torch.tensor(t, dtype=F64)).item()
    assert path.alpha(torch.tensor(t, dtype=F64)).item() == 0
    assert torch.allclose(gmm3.denoiser(x, t, path), gmm3.mean.expand(5, 3), atol=1e-13)
    assert torch.allclose(gmm3.eps(x, t, path), x / s, atol=1e-13)
    assert torch.allclose(gmm3.score(x, t, path), -x / s**2, atol=1e-13)
    assert torch.allclose(gmm3.responsibilities(x, t, path), gmm3.weights.expand(5, 3), atol=1e-14)
    ref = torch.distributions.Normal(0.0, s).log_prob(x).sum(1)
    assert torch.allclose(gmm3.log_prob(x, t, path), ref, atol=1e-12)


@pytest.mark.parametrize("sigma", [1e3, 1e8, 1e50, 1e200])
def test_huge_sigma(gmm3, sigma):
    """For sigma -> inf: x0 -> mixture mean, eps -> (x - mean)/sigma, log p -> log N(0, sigma^2 I)."""
    x = sigma * torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    path = EDM()
    for k in PREDICTIONS[:-1] + ("score",):
        assert torch.isfinite(gmm3.predict(x, sigma, path, k)).all()
    rel = 1e2 / sigma + 1e-13  # the first correction is O(|x| Sigma / sigma^2) = O(1/sigma); plus round-off
    assert (gmm3.denoiser(x, sigma, path) - gmm3.mean).abs().max() <= rel * 10
    assert torch.allclose(gmm3.eps(x, sigma, path), (x - gmm3.mean) / sigma, rtol=0, atol=rel)
    assert torch.allclose(gmm3.score(x, sigma, path) * sigma * sigma, -(x - gmm3.mean), rtol=rel, atol=rel)
    lp = gmm3.log_prob(x, sigma, path)
    ref = -0.5 * ((x / sigma) ** 2).sum(1) - 3 * math.log(sigma) - 1.5 * math.log(2 * math.pi)
    assert torch.isfinite(lp).all() and torch.allclose(lp, ref, rtol=1e-6, atol=rel * 10)


def test_tiny_sigma_is_continuous(gmm3):
    """At noise level 1e-9 the denoiser is x / alpha up to O(1e-18) and eps = O(1e-9): no cancellation."""
    x = gmm3.sample(6, torch.Generator().manual_seed(4))
    for path in (EDM(), VP.linear(), VE(sigma_min=1e-12, sigma_max=10.0), FlowMatching()):
        t0 = path.t_of_noise_level(torch.tensor(1e-9, dtype=F64))
        xt = path.alpha(t0) * x
        assert (gmm3.denoiser(xt, t0, path) - x).abs().max() < 1e-12
        eps = gmm3.eps(xt, t0, path)
        assert torch.isfinite(eps).all() and 0 < eps.abs().max() < 1e-6


# -- sampling ---------------------------------------------------------------------------------------


def _moments(gmm):
    mean = gmm.mean
    second = (gmm.weights[:, None, None] * (gmm.covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def test_sample_moments_and_determinism(gmm3):
    n = 40000
    x, k = gmm3.sample(n, torch.Generator().manual_seed(5), return_components=True)
    y = gmm3.sample(n, torch.Generator().manual_seed(5))
    assert torch.equal(x, y)
    mean, cov = _moments(gmm3)
    # standard errors: sqrt(var / n) for the mean, sqrt((C_ii C_jj + C_ij^2) / n) for Gaussian-like covariances
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() <= 5 * se_mean).all()
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(x.T) - cov).abs() <= 6 * se_cov).all()
    frac = torch.bincount(k, minlength=3).double() / n
    assert ((frac - gmm3.weights).abs() <= 5 * (gmm3.weights * (1 - gmm3.weights) / n).sqrt()).all()


def test_sample_marginal_and_prior(gmm3):
    n, path, t = 40000, VP.linear(), 0.5
    x = gmm3.sample_marginal(n, t, path, torch.Generator().manual_seed(6))
    mean, cov = _moments(gmm3.marginal(t, path))
    assert ((x.mean(0) - mean).abs() <= 5 * (cov.diagonal() / n).sqrt()).all()
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(x.T) - cov).abs() <= 6 * se_cov).all()
    g = gmm3.sample_prior(n, EDM(), t=80.0, generator=torch.Generator().manual_seed(7), kind="gaussian")
    assert abs(g.std().item() / 80.0 - 1) < 5 / math.sqrt(2 * 3 * n)
    with pytest.raises(ValueError, match="t must be given"):
        gmm3.sample_prior(3, EDM())


def test_model_is_an_odesolve_model(gmm3):
    path = EDM()
    m = gmm3.model(path, "eps")
    assert isinstance(m, Model) and m.prediction == "eps" and m.path is path
    x = torch.randn(4, 3)
    out = m(x, torch.full((4,), 1.5))
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), gmm3.eps(x.double(), 1.5, path), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(gmm3):
    x = torch.randn(16, 3, dtype=F64)
    on_gpu = gmm3.to("cuda")
    for path in (EDM(), VP.cosine(), VP.discrete()):
        for k in PREDICTIONS:
            cpu = gmm3.predict(x, 0.5, path, k)
            gpu = on_gpu.predict(x.cuda(), torch.tensor(0.5, dtype=F64, device="cuda"), path, k)
            assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-12)
    assert on_gpu.sample(8, torch.Generator("cuda").manual_seed(0)).device.type == "cuda"
