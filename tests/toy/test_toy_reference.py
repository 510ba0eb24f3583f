"""reference.solve / trajectory: accuracy against closed forms and an independent integration, both
backends, the self-check, and the prior-to-data transport reproducing the data distribution."""

import math
import warnings

import numpy as np
import pytest
import scipy.integrate
import torch

from odesolve.models import Model
from odesolve.paths import EDM, VP, FlowMatching
from odesolve.toy import metrics, problems, reference
from odesolve.toy.reference import ReferenceAccuracyError

F64 = torch.float64


@pytest.fixture(scope="module")
def gauss():
    return problems.get("gaussian").distribution


def test_trajectory_matches_the_closed_form_at_every_time(gauss):
    path = VP.linear()
    times = torch.tensor([1.0, 0.5, 0.1, 0.01, 0.0], dtype=F64)
    x = gauss.sample_prior(4, path, generator=torch.Generator().manual_seed(0))
    states, err = reference.trajectory(gauss.model(path, "x0"), x, times, return_error=True)
    exact = torch.stack([gauss.flow(x, 1.0, t, path) for t in times])
    assert states.shape == (5, 4, 8) and torch.equal(states[0], x)
    assert (states - exact).abs().max() <= 1e-9
    assert err.shape == states.shape and err.max() <= 1e-7


def test_torchdiffeq_backend_agrees(gauss):
    path = FlowMatching()
    x = gauss.sample_prior(4, path, t=0.99, generator=torch.Generator().manual_seed(1))
    exact = gauss.flow(x, 0.99, 0.0, path)
    out = reference.solve(
        gauss.model(path, "eps"), x, 0.99, 0.0, backend="torchdiffeq", rtol=1e-10, atol=1e-10, check="off"
    )
    assert (out - exact).abs().max() <= 1e-8 * max(1.0, exact.abs().max().item())


def test_mixture_against_an_independent_integration():
    """gmm2d under EDM from sigma = 80 to 0.05: the lambda-time solver against scipy's DOP853 on the
    textbook form dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, eq. 3)."""
    prob = problems.get("gmm2d")
    gmm, path = prob.distribution, EDM()
    x = prob.prior(8, torch.Generator().manual_seed(2))
    ours = reference.solve(gmm.model(path, "x0"), x, 80.0, 0.05, check="off")

    def f(sig, y):
        xx = torch.from_numpy(y).view(8, 2)
        return ((xx - gmm.denoiser(xx, sig, path)) / sig).reshape(-1).numpy()

    sol = scipy.integrate.solve_ivp(
        f, (80.0, 0.05), x.reshape(-1).numpy(), method="DOP853", rtol=1e-12, atol=1e-12, t_eval=[0.05]
    )
    theirs = torch.from_numpy(np.ascontiguousarray(sol.y[:, -1])).view(8, 2)
    assert (ours - theirs).abs().max() <= 1e-8 * (1 + theirs.abs().max())


def test_round_trip_and_same_time(gauss):
    path = EDM()
    x = gauss.sample(3, torch.Generator().manual_seed(3)) + 0.002 * torch.randn(3, 8, dtype=F64)
    model = gauss.model(path, "x0")
    up = reference.solve(model, x, 0.002, 20.0, check="off")
    back = reference.solve(model, up, 20.0, 0.002, check="off")
    assert (back - x).abs().max() <= 1e-8
    assert torch.equal(reference.solve(model, x, 1.0, 1.0), x)


class _Drifting:
    """An x0-model that changes after ``threshold`` calls by a constant offset: the loose solve of the
    self-check sees a different model than the tight one (a smooth stand-in for a model whose output is
    not a function of (x, t), e.g. one with dropout left on)."""

    def __init__(self, gauss, path, offset):
        self.gauss, self.path, self.offset = gauss, path, offset
        self.calls, self.threshold = 0, None

    def __call__(self, x, t):
        self.calls += 1
        late = self.threshold is not None and self.calls > self.threshold
        return self.gauss.denoiser(x, t, self.path) + (self.offset if late else 0.0)


def test_self_check_raises_warns_or_is_off(gauss):
    """With an offset of 0.1 in x0 for the loose solve, the two solutions differ by 0.1 (1 - 1/5) = 0.08
    (EDM from sigma 5 to 1), far above the bound 1e4 (atol + rtol max|x|) ~ 1e-3 (atol = rtol = 1e-8);
    with no offset they agree."""
    path = EDM()
    x = gauss.sample_prior(3, path, t=5.0, generator=torch.Generator().manual_seed(5))
    fn = _Drifting(gauss, path, 0.1)
    model = Model(fn, path, "x0")
    tol = {"rtol": 1e-8, "atol": 1e-8}
    out, err = reference.solve(model, x, 5.0, 1.0, check="off", return_error=True, **tol)
    assert torch.equal(err, torch.zeros_like(out))
    fn.threshold, fn.calls = fn.calls, 0  # the tight solve of the next call sees the same model, the loose one not
    with pytest.raises(ReferenceAccuracyError, match="not converged"):
        reference.solve(model, x, 5.0, 1.0, **tol)
    fn.calls = 0
    with pytest.warns(RuntimeWarning, match="not converged"):
        again = reference.solve(model, x, 5.0, 1.0, check="warn", **tol)
    assert torch.equal(again, out)
    fn.threshold = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference.solve(model, x, 5.0, 1.0, **tol)


def test_prior_to_data_reproduces_the_data_distribution():
    """Exact samples of p at sigma = 80, transported by the exact flow to sigma = 0, are exact samples of
    the data. Their mean NLL and sliced W2 (to an independent exact set) must look like those of another
    exact set of the same size:

    - NLL: the difference of two independent means of n per-sample NLLs has standard deviation
      sqrt(2 Var / n) (Var estimated from exact samples); we allow 4 of those;
    - sliced W2 of two independent n-samples is itself a noisy O(n^{-1/2}) quantity: we compare with
      its spread over 8 independent exact-vs-exact replicates and allow mean + 4 standard deviations.

    The exact prior is used, so there is no prior-mismatch bias. (N(0, 80^2 I) would add
    KL(p_80 || N(0, 80^2 I)) ~ (|mean|^2 + tr Cov) / (2 * 80^2) ~ 2e-3 nats, ten times below the NLL
    tolerance here, but it is a bias, and we want none.)
    """
    prob = problems.get("gmm2d")
    gmm, n = prob.distribution, 1000
    g = torch.Generator().manual_seed(6)
    x_T = prob.prior(n, g)
    x_0 = reference.solve(prob.model("x0"), x_T, 80.0, 0.0, check="off")  # accuracy is tested elsewhere
    ref = gmm.sample(n, g)
    exact = gmm.sample(n, g)
    lp = -gmm.log_prob(exact)
    se = math.sqrt(2 * lp.var().item() / n)
    assert abs(metrics.nll(x_0, gmm) - metrics.nll(exact, gmm)) <= 4 * se
    null = torch.tensor([metrics.sliced_w2(gmm.sample(n, g), ref) for _ in range(8)], dtype=F64)
    assert metrics.sliced_w2(x_0, ref) <= null.mean() + 4 * null.std()
    # the test has power: samples of p at sigma = 0.5 (what stopping the flow there would give) fail the
    # NLL check by far (sliced W2 is a blunt instrument here: it moves by ~0.05 against a null spread of 0.07)
    blurred = x_0 + 0.5 * torch.randn(x_0.shape, dtype=F64, generator=g)
    assert metrics.nll(blurred, gmm) - metrics.nll(exact, gmm) > 10 * se
    # mode weights: E[TV] of a multinomial histogram is ~0.4 sum_k sqrt(pi_k (1 - pi_k) / n) = 0.028 here
    assert metrics.mode_coverage(x_0, gmm).tv <= math.sqrt(gmm.n_components / n)  # 0.077


def test_bad_arguments(gauss):
    model = gauss.model(EDM())
    x = torch.zeros(2, 8, dtype=F64)
    with pytest.raises(ValueError, match="times must be strictly monotone"):
        reference.trajectory(model, x, [3.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="times must lie in the domain"):
        reference.trajectory(model, x, [3.0, -1.0])
    with pytest.raises((ValueError, TypeError), match="check must be|parameter 'check'"):
        reference.solve(model, x, 1.0, 0.0, check="maybe")
    with pytest.raises((ValueError, TypeError), match="backend must be|parameter 'backend'"):
        reference.solve(model, x, 1.0, 0.0, backend="jax")
    with pytest.raises(ValueError, match="method must name"):
        reference.solve(model, x, 1.0, 0.5, method="Nope")
    with pytest.raises(ValueError, match="t_from and t_to must be scalars"):
        reference.solve(model, x, torch.ones(2), 0.0)
    with pytest.raises(TypeError, match="model must be|parameter 'model'"):
        reference.solve(lambda x, t: x, x, 1.0, 0.0)
