import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import paths as P

PATHS = [
    P.VP.linear(),
    P.VP.linear(beta_min=0.05, beta_max=12.0),
    P.VP.cosine(),
    P.VP.discrete(),
    P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012),
    P.VP.discrete("squaredcos_cap_v2"),
    P.VP.discrete("linear", rescale_zero_terminal_snr=True),
    P.EDM(),
    P.VE(),
    P.FlowMatching(),
]


def _interior(path, u):
    hi = 200.0 if math.isinf(path.t_max) else path.t_max
    return path.t_min + (hi - path.t_min) * u


@pytest.mark.parametrize("path", PATHS, ids=repr)
@given(u=st.floats(0.001, 0.999))
@settings(max_examples=40, deadline=None)
def test_lambda_inverse_round_trip(path, u):
    t = torch.tensor(_interior(path, u), dtype=torch.float64)
    assert float(path.t_of_lambda(path.lambda_(t))) == pytest.approx(float(t), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_lambda_is_decreasing_and_ends_are_analytic(path):
    hi = 200.0 if math.isinf(path.t_max) else path.t_max
    t = torch.linspace(path.t_min, hi, 2001, dtype=torch.float64)
    lam = path.lambda_(t)
    assert not torch.isnan(lam).any()
    assert bool((lam[1:] < lam[:-1]).all())
    assert not torch.isnan(path.t_of_lambda(lam)).any()
    if path.is_vp:  # alpha^2 + sigma^2 = 1
        assert torch.allclose(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t), atol=1e-12)


@pytest.mark.parametrize("path", [p for p in PATHS if not isinstance(p, P.VPDiscrete)], ids=repr)
def test_derivatives_match_finite_differences(path):
    t = torch.tensor([_interior(path, u) for u in (0.2, 0.5, 0.8)], dtype=torch.float64)
    da, ds = path.derivatives(t)
    e = 1e-6 * max(1.0, float(t.abs().max()))
    fa = (path.alpha(t + e) - path.alpha(t - e)) / (2 * e)
    fs = (path.sigma(t + e) - path.sigma(t - e)) / (2 * e)
    assert torch.allclose(da, fa, rtol=1e-6, atol=1e-8) and torch.allclose(ds, fs, rtol=1e-6, atol=1e-8)


def test_zero_terminal_snr_and_clean_end():
    p = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
    assert float(p.alpha(p.t_max)) == 0.0 and float(p.lambda_(p.t_max)) == -math.inf
    assert float(p.sigma(-1.0)) == 0.0 and float(p.lambda_(-1.0)) == math.inf
    assert float(P.FlowMatching().lambda_(1.0)) == -math.inf and float(P.EDM().lambda_(0.0)) == math.inf


def test_discrete_schedules_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for kw in [
        dict(beta_schedule="linear"),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        dict(beta_schedule="squaredcos_cap_v2"),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True),
    ]:
        sched = diffusers.DDPMScheduler(**kw)
        ours = P.VP.discrete(
            kw["beta_schedule"],
            beta_start=kw.get("beta_start", 0.0001),
            beta_end=kw.get("beta_end", 0.02),
            rescale_zero_terminal_snr=kw.get("rescale_betas_zero_snr", False),
        )
        ref = sched.alphas_cumprod.double()
        # diffusers builds betas in float32: agreement to float32 precision
        assert torch.allclose(ours.alphas_cumprod, ref, rtol=2e-5, atol=1e-7), kw
        t = torch.arange(1000, dtype=torch.float64)
        assert torch.allclose(ours.alpha(t) ** 2, ours.alphas_cumprod, rtol=1e-12, atol=1e-15)


def test_discrete_interpolates_log_alpha_linearly():
    p = P.VP.discrete()
    la = p.log_alpha(torch.tensor([10.0, 11.0, 10.25], dtype=torch.float64))
    assert float(la[2]) == pytest.approx(0.75 * float(la[0]) + 0.25 * float(la[1]), rel=1e-14)


@pytest.mark.parametrize("bad", [dict(beta_min=-1.0), dict(beta_min=5.0, beta_max=1.0)])
def test_bad_vp_parameters_are_refused(bad):
    with pytest.raises(ValueError, match="beta_min"):
        P.VP.linear(**bad)


def test_bad_betas_and_schedule_are_refused():
    with pytest.raises(ValueError, match="betas"):
        P.VP.from_betas([0.1, 1.5])
    with pytest.raises(ValueError, match="schedule"):
        P.VP.discrete("quadratic")
    with pytest.raises(ValueError, match="sigma_min"):
        P.VE(sigma_min=2.0, sigma_max=1.0)


def test_check_times_names_the_argument():
    with pytest.raises(ValueError, match=r"times must lie in the domain"):
        ods.paths.VP.linear().check_times([0.5, 1.5], "times")
