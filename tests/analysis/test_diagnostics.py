"""odesolve.toy.diagnostics: mode interpolation (hallucination) labels and detector, the score
Fokker-Planck residual, the error split of low-rank mixtures.

Default run: a few seconds. ``slow``: the hallucination study's claims over methods and NFE
(scripts/diagnostics_study.py in reduced form)."""

import math
import os
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve.paths import EDM, VP
from odesolve.toy import GaussianMixture, LowRankMixture, problems, reference
from odesolve.toy import diagnostics as dg
from odesolve.toy import strategies as ts
from odesolve.toy.perturbed import perturbed_model

FULL = os.environ.get("ODESOLVE_FULL", "0") == "1"


# -- between modes ------------------------------------------------------------------------------


@settings(max_examples=4, deadline=None, derandomize=True)
@given(ts.mixtures(), st.integers(0, 2**16))
def test_between_modes_agrees_with_brute_force(mix, seed):
    """Mahalanobis distances from dense solves, component by component, and the label from them."""
    g = torch.Generator().manual_seed(seed)
    x = mix.mean + 3.0 * torch.randn(40, mix.dim, dtype=torch.float64, generator=g)
    from scipy.stats import chi2

    brute = torch.stack(
        [((x - m) * torch.linalg.solve(c, (x - m).T).T).sum(1) for m, c in zip(mix.means, mix.covs)], dim=1
    )
    assert torch.allclose(dg.mahalanobis(x, mix), brute, rtol=1e-9, atol=1e-9)
    labels = dg.between_modes(x, mix, tail=0.01)
    assert torch.equal(labels, (brute > chi2.ppf(1 - 0.01, mix.dim)).all(dim=1))


def test_between_modes_low_rank_and_false_positive_rate():
    """The spectral (Woodbury) distances of a low-rank mixture equal the dense ones; exact samples are
    labelled at a rate <= tail (binomial bound at 4 sigma)."""
    pb = problems.get("lowrank64")
    x = pb.data(2000, torch.Generator().manual_seed(0))
    d_low = dg.mahalanobis(x[:50], pb.distribution)
    d_dense = dg.mahalanobis(x[:50], pb.distribution.dense())
    assert torch.allclose(d_low, d_dense, rtol=1e-9)
    tail = 0.01
    rate = dg.between_modes(x, pb.distribution, tail).double().mean().item()
    assert rate <= tail + 4 * math.sqrt(tail / 2000)


def test_between_modes_refuses_bad_input():
    mix = problems.get("gmm2d").distribution
    with pytest.raises(ValueError, match="tail"):
        dg.between_modes(torch.zeros(3, 2), mix, tail=1.5)
    with pytest.raises(ValueError, match="shape"):
        dg.between_modes(torch.zeros(3, 3), mix)


# -- the tempered model and the detector -------------------------------------------------------------


def test_tempered_model_is_exact_at_temperature_one_and_at_pure_noise():
    pb = problems.get("gmm2d")
    x = pb.prior(64, torch.Generator().manual_seed(0))
    for t in (0.1, 1.0, 20.0):
        exact = pb.distribution.denoiser(x / 20 * t, t, pb.path)
        assert torch.allclose(dg.tempered_model(pb.distribution, pb.path, 1.0).x0(x / 20 * t, t), exact, atol=1e-12)
    # alpha -> 0 (flow matching at t -> 1): the responsibilities are the weights, as for the exact model
    path = ods.paths.FlowMatching()
    mean = pb.distribution.mean
    out = dg.tempered_model(pb.distribution, path, 3.0).x0(x, 1.0 - 1e-9)
    assert torch.allclose(out, mean.expand_as(out), atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        dg.tempered_model(pb.distribution, pb.path, 0.5)


def _hallucination_run(temperature: float, method: str, nfe: int, n: int = 2000):
    pb = problems.get("gmm2d")
    x_T = pb.prior(n, torch.Generator().manual_seed(0))
    grid = ods.grids.karras(pb.path, nfe, pb.sigma_min, pb.sigma_max, to_zero=False)
    model = dg.tempered_model(pb.distribution, pb.path, temperature)
    kw = {"generator": torch.Generator().manual_seed(1)} if "sde" in method else {}
    traj = dg.record(model, x_T, grid, method, **kw)
    return traj, dg.between_modes(traj.x, pb.target())


def test_detector_separates_hallucinations_of_the_tempered_model():
    """Aithal et al.'s claim on gmm2d: with a too-smooth posterior (temperature 2) DPM-Solver++(2M) at
    NFE 50 puts >= 1% of its samples between the modes, and the variance of x0_hat over the steps at
    noise levels 0.05..0.5 flags them with AUC > 0.95 (0.964 measured; 0.988 with 4000 samples)."""
    traj, label = _hallucination_run(2.0, "dpmpp-2m", 50)
    frac = label.double().mean().item()
    assert frac > 0.01
    score = dg.x0_variance(traj, max_level=0.5, min_level=0.05)
    result = dg.roc(score, label)
    assert result.auc > 0.95
    assert result.fpr[0] == 0 and result.tpr[-1] == 1 and bool((result.fpr[1:] >= result.fpr[:-1]).all())


def test_roc_auc_is_the_mann_whitney_statistic():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 6, (300,), generator=g).double()  # many ties
    labels = torch.rand(300, generator=g) < 0.3
    pos, neg = scores[labels], scores[~labels]
    mw = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean().item()
    assert abs(dg.roc(scores, labels).auc - mw) < 1e-12
    assert dg.roc(torch.arange(4.0), torch.tensor([False, False, True, True])).auc == 1.0
    with pytest.raises(ValueError, match="both classes"):
        dg.roc(scores, torch.ones(300, dtype=torch.bool))


def test_x0_variance_window_must_hold_two_steps():
    traj, _ = _hallucination_run(1.0, "ddim", 5, n=8)
    with pytest.raises(ValueError, match="max_level"):
        dg.x0_variance(traj, max_level=1e-3)


@pytest.mark.slow
def test_hallucination_persists_with_nfe_for_the_ode_and_not_for_the_exact_model():
    """The exact model's fraction between modes falls with NFE towards the label's false-positive rate;
    the tempered model's stays (it is the model's, not the solver's); the 2M SDE hallucinates less.
    (Default: NFE 50, 2000 samples; ODESOLVE_FULL=1: NFE 20 and 100, 4000 samples.)"""
    n = 4000 if FULL else 2000
    fr = {}
    for tau in (1.0, 2.0):
        for method in ("dpmpp-2m", "dpmpp-2m-sde"):
            for nfe in (20, 100) if FULL else (50,):
                fr[tau, method, nfe] = _hallucination_run(tau, method, nfe, n)[1].double().mean().item()
    nfe = 100 if FULL else 50
    assert fr[1.0, "dpmpp-2m", nfe] < 0.006
    assert fr[2.0, "dpmpp-2m", nfe] > 4 * fr[1.0, "dpmpp-2m", nfe]
    assert fr[2.0, "dpmpp-2m-sde", nfe] < 0.5 * fr[2.0, "dpmpp-2m", nfe]
    if FULL:
        assert fr[2.0, "dpmpp-2m", 100] > 0.5 * fr[2.0, "dpmpp-2m", 20]  # more steps do not remove them


# -- the Fokker-Planck residual -------------------------------------------------------------------


@settings(max_examples=6, deadline=None, derandomize=True)
@given(ts.mixtures(dims=st.integers(1, 3)), ts.paths(("vp-linear", "vp-cosine", "edm", "flow")), st.floats(-2.0, 2.5))
def test_fp_residual_vanishes_for_exact_mixtures(mix, path, log_level):
    """The exact score of every mixture satisfies the score Fokker-Planck equation under every path,
    whatever the model's prediction type: the relative residual is rounding (at most 6e-9 seen, for an
    x0-model at noise level 0.01, whose score ``(alpha x0 - x) / sigma^2`` loses ``log10(1/sigma^2)`` digits)."""
    t = float(path.t_of_noise_level(torch.tensor(10.0**log_level)).clamp(path.t_min, path.t_max))
    x = mix.sample_marginal(16, t, path, torch.Generator().manual_seed(0))
    for prediction in ("eps", "x0"):
        r = dg.fokker_planck_residual(mix.model(path, prediction), x, t)
        assert r.terms.abs().max() > 0
        assert r.relative < 1e-7, (prediction, r.relative)


def test_fp_residual_is_linear_in_the_bias_of_a_perturbed_model():
    """``R(b) = b R_1 + O(b^2)``: doubling a small bias doubles the residual; a bias of 0 is exact."""
    pb = problems.get("gmm2d")
    for path in (EDM(), VP.linear()):
        t = float(path.t_of_noise_level(torch.tensor(2.0)))
        x = pb.distribution.sample_marginal(64, t, path, torch.Generator().manual_seed(0))
        res = {
            b: dg.fokker_planck_residual(perturbed_model(pb.distribution, path, b, onset=1.0), x, t)
            for b in (0.0, 1e-3, 2e-3)
        }
        assert res[0.0].relative < 1e-12
        assert res[1e-3].relative > 1e-5
        ratio = res[2e-3].residual.norm() / res[1e-3].residual.norm()
        assert abs(float(ratio) - 2.0) < 1e-2
    tempered = dg.fokker_planck_residual(dg.tempered_model(pb.distribution, pb.path, 2.0), x, 2.0)
    assert tempered.relative > 1e-2


def test_fp_residual_refuses_the_data_end():
    pb = problems.get("gmm2d")
    with pytest.raises(ValueError, match="sigma > 0"):
        dg.fokker_planck_residual(pb.model("eps"), torch.zeros(2, 2, dtype=torch.float64), 0.0)


# -- low-rank mixtures: the error split -----------------------------------------------------------------


def _small_lowrank(seed: int = 0) -> LowRankMixture:
    g = torch.Generator().manual_seed(seed)
    K, d, r = 3, 10, 2
    U = torch.linalg.qr(torch.randn(K, d, r, dtype=torch.float64, generator=g))[0] * torch.tensor([1.0, 0.6])
    return LowRankMixture([0.5, 0.3, 0.2], None, U, noise=0.1)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(st.integers(0, 2**16), st.sampled_from(["ddim", "dpmpp-2m", "heun", "ipndm"]), st.integers(3, 12))
def test_sampler_complement_is_the_scalar_gaussian_solve(seed, method, steps):
    """On the complement of the span the exact denoiser is linear and decoupled: the sampler's
    complement equals R * (complement of x_T), R its result on the 1-D Gaussian N(0, s^2)."""
    mix = _small_lowrank(seed % 7)
    path = EDM()
    x_T = mix.sample_prior(32, path, 80.0, torch.Generator().manual_seed(seed))
    grid = ods.grids.karras(path, steps, 0.002, 80.0, to_zero=False)
    x = ods.sample(mix.model(path, "eps"), x_T, grid, method)
    Q = dg.span_basis(mix)
    assert Q.shape == (10, 6)
    R, _ = dg.complement_factor(mix, grid, method)
    rest = lambda v: v - (v @ Q) @ Q.T
    assert torch.allclose(rest(x), R * rest(x_T), rtol=1e-9, atol=1e-12)


def test_error_split_adds_up_and_the_exact_complement_error_is_zero():
    """Pythagoras for both projectors; the reference solution's complement is R* x_T's (the exact
    Gaussian flow), so the predicted complement error of a sampler is its measured one."""
    mix = _small_lowrank(1)
    path = EDM()
    x_T = mix.sample_prior(8, path, 80.0, torch.Generator().manual_seed(0))
    grid = ods.grids.karras(path, 6, 0.002, 80.0, to_zero=False)
    model = mix.model(path, "x0")
    ref = reference.solve(model, x_T, 80.0, 0.002, rtol=1e-9, atol=1e-9, check="off")
    x = ods.sample(model, x_T, grid, "dpmpp-2m")
    Q = dg.span_basis(mix)
    _, R_exact = dg.complement_factor(mix, grid, "dpmpp-2m")
    rest = lambda v: v - (v @ Q) @ Q.T
    assert float((rest(ref) - R_exact * rest(x_T)).abs().max()) < 1e-7
    for where in ("nearest", "span"):
        split = dg.error_split(x, ref, mix, where)
        assert torch.allclose(split.inside + split.outside, split.total, rtol=1e-12)
        assert bool((split.inside > 0).all()) and bool((split.outside > 0).all())
        assert float(dg.error_split(ref, ref, mix, where).total.max()) == 0.0
    predicted = dg.complement_error(mix, x_T, grid, "dpmpp-2m")
    measured = dg.error_split(x, ref, mix, "span").outside
    assert torch.allclose(measured, predicted, rtol=1e-4)


def test_error_split_refuses_bad_input():
    mix = _small_lowrank()
    x = torch.zeros(4, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="where"):
        dg.error_split(x, x, mix, "union")
    with pytest.raises(ValueError, match="reference"):
        dg.error_split(x, x[:3], mix)
    dense = GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 2.0]]])
    grid = ods.grids.karras(EDM(), 4, 0.002, 80.0, to_zero=False)
    with pytest.raises(ValueError, match="low-rank"):
        dg.complement_factor(dense, grid)
    unequal = LowRankMixture([0.5, 0.5], None, torch.ones(2, 3, 1), noise=[0.1, 0.2])
    with pytest.raises(ValueError, match="floors"):
        dg.complement_factor(unequal, grid)


# -- the study script, in reduced form ---------------------------------------------------------------


def test_study_script_runs_in_reduced_form():
    """scripts/diagnostics_study.py (the numbers of docs/diagnostics.md) at toy sizes: its tables are built
    and carry the claims they are quoted for."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "scripts"))
    import diagnostics_study as study

    text = study.hallucination(n=300, temperatures=(2.0,), nfes=(20,), methods=("ddim",))
    assert "| ddim | " in text
    text = study.fokker_planck(n=200, biases=(0.0, 1.0), nfe=10, levels=3, residual_samples=16)
    exact, biased = (float(line.split("|")[2]) for line in text.splitlines() if line.startswith(("| 0 |", "| 1 |")))
    assert exact < 1e-6 < 1e-3 < biased
    text = study.lowrank(n=4, nfes=(5,), methods=("ddim",), rtol=1e-6)
    cells = text.splitlines()[-1].split("|")
    assert abs(float(cells[7]) / float(cells[8]) - 1) < 1e-2  # the complement error as predicted
