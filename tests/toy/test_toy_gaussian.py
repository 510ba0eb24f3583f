"""Gaussian: the closed-form PF-ODE flow and reverse-SDE law, checked against the ODE itself, a
reference integration and a Monte Carlo Euler-Maruyama simulation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odesolve.paths import EDM, VE, VP, FlowMatching
from odesolve.toy import Gaussian, problems, reference
from odesolve.toy import strategies as ts

F64 = torch.float64


def _x(gauss, t, path, n=5, seed=0):
    return gauss.sample_marginal(n, t, path, torch.Generator().manual_seed(seed))


# -- the closed form against the reference integrator ------------------------------------------------

CASES = [  # (path, t_from, t_to, prediction, check): ends at sigma = 0 and starts at alpha = 0 included
    (EDM(), 80.0, 0.0, "x0", "raise"),
    (VP.linear(), 1.0, 0.0, "eps", "off"),
    (VP.cosine(), 1.0, 0.0, "v", "raise"),  # alpha = 0 -> sigma = 0
    (FlowMatching(), 1.0, 0.0, "velocity", "off"),  # alpha = 0 -> sigma = 0
    (VE(), 1.0, 0.0, "score", "off"),
    (VP.discrete(rescale_zero_terminal_snr=True), 999.0, -1.0, "eps", "off"),  # alpha = 0 -> sigma = 0
    (EDM(), 0.002, 80.0, "x0", "off"),  # forward in time
]


@pytest.mark.parametrize(
    "path,t_from,t_to,prediction,check", CASES, ids=[f"{type(c[0]).__name__}-{c[1]}-{c[2]}-{c[3]}" for c in CASES]
)
def test_flow_agrees_with_reference_solve(path, t_from, t_to, prediction, check):
    gauss = problems.get("gaussian").distribution  # 8-D, eigenvalues from 0.01 to 1
    x = _x(gauss, t_from, path, n=6)
    ref, err = reference.solve(gauss.model(path, prediction), x, t_from, t_to, return_error=True, check=check)
    exact = gauss.flow(x, t_from, t_to, path)
    scale = max(1.0, exact.abs().max().item())
    assert (ref - exact).abs().max() <= 1e-9 * scale
    assert err.max() <= 1e-7 * scale  # the self-check's estimate is small too (0 when off)


@settings(max_examples=40, deadline=None)
@given(gauss=ts.gaussians(), path=ts.paths(), data=st.data())
def test_flow_composes_and_inverts(gauss, path, data):
    ts_ = sorted((data.draw(ts.times(path), label=f"t{i}") for i in range(3)), reverse=True)
    s, u, t = ts_
    x = _x(gauss, s, path)
    direct = gauss.flow(x, s, t, path)
    two = gauss.flow(gauss.flow(x, s, u, path), u, t, path)
    assert torch.isfinite(direct).all()
    assert (direct - two).abs().max() <= 1e-11 * (1 + direct.abs().max())
    if (
        path.alpha(torch.tensor(t, dtype=F64)) > 0
        and path.sigma(torch.tensor(t, dtype=F64)) > 0
        and path.alpha(torch.tensor(s, dtype=F64)) > 0
    ):
        back = gauss.flow(direct, t, s, path)
        assert (back - x).abs().max() <= 1e-8 * (1 + x.abs().max())


@settings(max_examples=30, deadline=None)
@given(
    gauss=ts.gaussians(dims=st.integers(1, 4)),
    path=ts.paths(("vp-linear", "vp-cosine", "edm", "ve", "flow")),
    data=st.data(),
)
def test_flow_solves_the_pf_ode(gauss, path, data):
    """d/dt flow(x, s, t) = velocity(flow(x, s, t), t): the closed form satisfies the ODE (autograd in t)."""
    s = data.draw(ts.noise_times(path, 1e-2, 1e2), label="s")
    t0 = data.draw(ts.noise_times(path, 1e-2, 1e2), label="t")
    x = _x(gauss, s, path, n=4)
    t = torch.full((4,), t0, dtype=F64, requires_grad=True)
    xt = gauss.flow(x, s, t, path)
    dxdt = torch.stack([torch.autograd.grad(xt[:, j].sum(), t, retain_graph=True)[0] for j in range(gauss.dim)], 1)
    vel = gauss.velocity(xt.detach(), t.detach(), path)
    assert (dxdt - vel).abs().max() <= 1e-9 * (1 + vel.abs().max())


def test_flow_limits_are_exact():
    gauss = problems.get("gaussian").distribution
    x = _x(gauss, 1.0, VP.cosine())
    # from alpha = 0 (sigma_1 = 1) to sigma = 0 (alpha_0 = 1): x_0 = mu + Sigma^{1/2} x_1
    end = gauss.flow(x, 1.0, 0.0, VP.cosine())
    Q, ev = gauss.eigenvectors[0], gauss.eigenvalues[0]
    expected = gauss.mean + ((x @ Q) * ev.sqrt()) @ Q.T  # sigma_1 = 1, C_0 = Sigma
    assert torch.allclose(end, expected, atol=1e-13)
    assert torch.allclose(gauss.flow(x, 0.3, 0.3, VP.cosine()), x, atol=1e-14)


# -- the reverse SDE ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(gauss=ts.gaussians(), path=ts.paths(), data=st.data())
def test_reverse_sde_law_preserves_the_marginals(gauss, path, data):
    """If x_s ~ p_s, the law of x_t is p_t: M C_s M^T + Cov = C_t
    (with x_t = alpha_t mu + M (x_s - alpha_s mu) + noise)."""
    s, t = sorted((data.draw(ts.times(path), label=f"t{i}") for i in range(2)), reverse=True)
    lam = path.lambda_(torch.tensor([s, t], dtype=F64))
    if lam[0] == lam[1]:
        return
    d = gauss.dim
    eye = torch.eye(d, dtype=F64)
    base = torch.zeros(1, d, dtype=F64)
    # M from the mean map applied to alpha_s mu + basis vectors
    a_s = path.alpha(torch.tensor(s, dtype=F64)).item()
    law0 = gauss.reverse_sde_marginal(a_s * gauss.mean[None] + base, s, t, path)
    M = (gauss.reverse_sde_marginal(a_s * gauss.mean[None] + eye, s, t, path).mean - law0.mean).T
    C = lambda tt: gauss.marginal(tt, path).covs[0]
    lhs = M @ C(s) @ M.T + law0.cov
    assert torch.isfinite(lhs).all()
    assert (lhs - C(t)).abs().max() <= 1e-10 * (1 + C(t).abs().max())


def test_reverse_sde_limits():
    gauss = problems.get("gaussian").distribution
    path = VP.cosine()
    x = _x(gauss, 0.6, path)
    same = gauss.reverse_sde_marginal(x, 0.6, 0.6, path)
    assert torch.allclose(same.mean, x, atol=1e-13) and same.cov.abs().max() == 0
    # to sigma = 0: the posterior law of x0 given x_s
    a, s = path.alpha(torch.tensor(0.6, dtype=F64)).item(), path.sigma(torch.tensor(0.6, dtype=F64)).item()
    Sigma = gauss.cov
    Cs = a * a * Sigma + s * s * torch.eye(8, dtype=F64)
    post_cov = Sigma - a * a * Sigma @ torch.linalg.solve(Cs, Sigma)
    law = gauss.reverse_sde_marginal(x, 0.6, 0.0, path)
    assert torch.allclose(law.cov, post_cov, atol=1e-12)
    assert torch.allclose(law.mean, gauss.denoiser(x, 0.6, path), atol=1e-12)
    # from alpha = 0: x_s carries no information, the law is p_t
    law = gauss.reverse_sde_marginal(x, 1.0, 0.3, path)
    p = gauss.marginal(0.3, path)
    assert torch.allclose(law.mean, p.means.expand_as(x), atol=1e-13)
    assert torch.allclose(law.cov, p.covs[0], atol=1e-13)
    with pytest.raises(ValueError, match="t_to must be no noisier than t_from"):
        gauss.reverse_sde_marginal(x, 0.3, 0.6, path)


@pytest.mark.parametrize("path,s,t", [(EDM(), 2.0, 0.2), (FlowMatching(), 0.7, 0.1)], ids=["EDM", "FlowMatching"])
def test_reverse_sde_marginal_by_euler_maruyama(path, s, t):
    """Euler-Maruyama for dx = [f x - g^2 score] dt + g dW backwards from s to t, f = (log alpha)',
    g^2 = (sigma^2)' - 2 f sigma^2, n paths from one start point: mean and covariance match the
    closed form within 5 Monte Carlo standard errors plus the EM weak error: measured (400k paths)
    at about 0.6 / steps on both paths, halving when the steps double (weak order 1); we allow 1.5 / steps.
    A wrong law fails by far: the ODE's mean factor sqrt(c_t / c_s) instead of alpha_s c_t / (alpha_t c_s)
    moves the mean by ~0.1, twenty times the tolerance."""
    gauss = Gaussian([0.5, -1.0], [[0.8, 0.3], [0.3, 0.5]])
    n, steps = 20000, 400
    g = torch.Generator().manual_seed(11)
    x0 = torch.tensor([[1.0, 0.5]], dtype=F64) * path.sigma(torch.tensor(s, dtype=F64))
    law = gauss.reverse_sde_marginal(x0, s, t, path)
    x = x0.expand(n, 2).clone()
    grid = torch.linspace(s, t, steps + 1, dtype=F64)
    a, sg = path.alpha(grid[:-1]), path.sigma(grid[:-1])
    da, ds = path.derivatives(grid[:-1])
    f = da / a
    g2 = 2 * sg * ds - 2 * f * sg * sg
    dt = grid[:-1] - grid[1:]  # > 0: time runs backwards
    noise = torch.sqrt(g2 * dt)
    for i in range(steps):
        drift = f[i] * x - g2[i] * gauss.score(x, grid[i], path)
        x = x - drift * dt[i] + noise[i] * torch.randn(n, 2, dtype=F64, generator=g)
    cov = law.cov
    se_mean = (cov.diagonal() / n).sqrt()
    bias = 1.5 / steps
    assert ((x.mean(0) - law.mean[0]).abs() <= 5 * se_mean + bias).all()
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(x.T) - cov).abs() <= 5 * se_cov + bias).all()
    # and it is not the ODE: the SDE law has a non-degenerate covariance
    assert cov.diagonal().min() > 10 * se_cov.max()
