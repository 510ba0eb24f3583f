"""The digits model of the zoo: it loads, its samples are digits, and solvers converge on it.

Numbers quoted in the comments were measured with the shipped weights (odesolve/toy/weights/digits.pt,
seed 0) and the test's classifier (metrics.digits_classifier(seed=0)); see docs/digits.md.
"""

import pytest
import torch
from zoo_setup import BEST, N_SAMPLES

import odesolve as ods
from odesolve.commands.sample import make_grid, steps_for_nfe
from odesolve.paths import VPDiscrete
from odesolve.toy import metrics, reference, zoo

# Bounds, justified where they are used. Measured values are for the shipped weights.
CONFIDENCE_MARGIN = 0.05  # samples' mean confidence >= held-out real digits' - this
FD_BOUND = 2.5  # what 400 real digits drawn from the data set get: 2.43 (test split), 2.52 (train split)
SOLVER_RMS_NFE10 = 0.072  # RMS error of BEST at NFE 10 against the reference, trailing grid (400 samples)
BF16_UNIT_ROUNDOFF = 2.0**-8


def confidence(clf, x):
    """Mean over images of the classifier's largest class probability."""
    return float(clf.probabilities(x).max(1).values.mean())


def untrained_samples(model, x_T):
    """Samples (BEST, NFE 10) of a randomly initialised DigitsNet: the zero-initialised output layers
    (which make a new network predict eps = 0 exactly) get torch's default initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = zoo.DigitsNet(**zoo.config("digits")["net"])
        net.out.reset_parameters()
        for block in net.blocks:
            block.lin2.reset_parameters()
    m = ods.Model(lambda x, t: net(x, t), path=model.path, prediction="eps")
    with torch.inference_mode():
        return ods.sample(m, x_T, make_grid(model.path, steps_for_nfe(model.path, BEST, 10)), method=BEST)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_gives_a_model_on_the_ddpm_linear_path(model):
    assert isinstance(model, ods.Model) and model.prediction == "eps"
    assert isinstance(model.path, VPDiscrete) and model.path.t_max == 999
    ref = VPDiscrete.from_schedule("linear", 1000)
    assert torch.equal(model.path.alphas_cumprod, ref.alphas_cumprod)
    x = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        out = model(x, torch.tensor([999.0, 500.5, 0.0], dtype=torch.float64))
    assert out.shape == x.shape and out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'cifar'.*'digits'"):
        zoo.load("cifar")
    with pytest.raises(ValueError, match="'cifar'"):
        zoo.data("cifar")


def test_data_are_the_1797_digits_in_minus_one_one():
    x, y = zoo.data("digits"), zoo.labels("digits")
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.shape == (1797,)
    levels = torch.unique(x)
    assert levels.numel() == 17 and float(levels[0]) == -1.0 and float(levels[-1]) == 1.0
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_the_network_predicts_the_noise(model):
    """Denoising loss E|eps_hat - eps|^2 on 512 training images. The trivial prediction eps_hat = 0
    scores 1 (an untrained network 1.1). The network beats it by a factor > 3 at t = 50, > 8 at
    t = 300, > 100 at t = 700 (measured 0.30, 0.086, 0.0027): eps is hardest to tell where the noise
    is smallest, since naming it there means knowing the image to within sigma (0.07 at t = 50)."""
    x0 = zoo.data("digits")[:512]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    losses = []
    with torch.inference_mode():
        for t in (50.0, 300.0, 700.0):
            tt = torch.full((x0.shape[0],), t, dtype=torch.float64)
            a, s = (float(v) for v in (model.path.alpha(t), model.path.sigma(t)))
            losses.append(float((model(a * x0 + s * eps, tt) - eps).pow(2).mean()))
    assert losses[0] < 1 / 3 and losses[1] < 1 / 8 and losses[2] < 1 / 100, losses


# --------------------------------------------------------------------------------------------
# The samples are digits
# --------------------------------------------------------------------------------------------


def test_classifier_is_accurate(classifier):
    clf, _, test = classifier
    x, y = zoo.data("digits"), zoo.labels("digits")
    acc = float((clf(x[test]).argmax(1) == y[test]).float().mean())
    assert acc > 0.95, acc


def test_samples_are_recognisable_digits(model, classifier, samples, x_T):
    """The classifier is about as sure of the samples' classes as of held-out real digits, and far
    surer than of images without digits.

    Measured mean confidence: held-out real digits 0.988; BEST at NFE 10 0.960 (DDIM at NFE 10
    0.943, at NFE 5 0.927); pure noise (x_T clipped to [-1, 1]) 0.68; samples of an untrained
    network (clipped) 0.76. The threshold, real - 0.05, lets the sampler leave the classifier
    unsure of about 1 image in 20 more than real digits do; images without digits fall more than
    0.1 below it."""
    clf, _, test = classifier
    c_real = confidence(clf, zoo.data("digits")[test])
    c_samples = confidence(clf, samples)
    c_noise = confidence(clf, x_T.clamp(-1, 1))
    c_untrained = confidence(clf, untrained_samples(model, x_T).clamp(-1, 1))
    threshold = c_real - CONFIDENCE_MARGIN
    assert c_samples > threshold, (c_samples, c_real)
    assert max(c_noise, c_untrained) < threshold - 0.1, (c_noise, c_untrained, threshold)
    # every class is sampled, each within half and 1.5 times its share (measured: 33 to 45 of 400)
    counts = torch.bincount(clf(samples).argmax(1), minlength=10)
    assert 0.5 * N_SAMPLES / 10 < int(counts.min()) and int(counts.max()) < 1.5 * N_SAMPLES / 10, counts.tolist()


def test_frechet_distance_of_samples_to_the_data(model, classifier, samples, x_T):
    """Frechet distance of the classifier's second hidden layer (128 features) to that of all 1797
    images, from 400 images. Measured: BEST at NFE 10 1.60; the reference ODE solution 1.35;
    dpmpp-2m 1.93 and DDIM 3.06 at NFE 10; 400 real digits of the data set 2.43 to 2.52 (at
    n = 400 the estimate's bias dominates: the samples, which concentrate on typical digits, beat
    random real subsets); an untrained network 372; noise 502. The bound is what 400 real digits
    get: a sampler must be as close to the data as the data themselves are at this sample size."""
    clf, _, test = classifier
    feats = clf.features(zoo.data("digits"))
    fd = metrics.frechet_distance(clf.features(samples), feats)
    fd_real = metrics.frechet_distance(clf.features(zoo.data("digits")[test][:N_SAMPLES]), feats)
    fd_untrained = metrics.frechet_distance(clf.features(untrained_samples(model, x_T).clamp(-1, 1)), feats)
    assert fd < FD_BOUND <= fd_real + 0.1, (fd, fd_real)
    assert fd_untrained > 50 * FD_BOUND, fd_untrained


def test_frechet_distance_is_zero_for_equal_sets_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g, dtype=torch.float64)
    b = 2.0 * torch.randn(300, 5, generator=g, dtype=torch.float64) + 1.0
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-9)
    # two isotropic Gaussians: |mu|^2 + d (s_a - s_b)^2, here about 5 + 5 = 10
    assert 8.0 < metrics.frechet_distance(a, b) < 12.0


# --------------------------------------------------------------------------------------------
# Reference solution and convergence
# --------------------------------------------------------------------------------------------


def test_reference_is_converged_and_solvers_approach_it(model, x_T):
    """DPM-Solver-3 with 128 and 64 steps agree to 2e-4 (the bound is 1e-3; grey levels are 0.125
    apart; 128 and 256 steps agree to 1e-5). Against it, on 32 samples:

    - on the uniform-lambda grid, which ends at t = 0 (sigma = 0.01) before the step to sigma = 0,
      BEST's error falls by more than 4 (second order) from NFE 10 to 20 (measured: about 10);
    - on the trailing grid the last step, one DDIM step from t = 1000/N - 1 to sigma = 0, dominates:
      every method converges at first order there (measured ratio 1.9; bound 2.5), yet BEST at NFE 10
      stays within 1.5 times its 400-sample RMS error of 0.072, and beats DDIM by 2."""
    x = x_T[:32]
    ref, err = reference.solve_by_halving(model, x, steps=128, return_error=True)
    assert err < 2e-4 * 2
    errors = {}
    with torch.inference_mode():
        for kind in ("lambda", "trailing"):
            for name in (BEST, "ddim"):
                for nfe in (10, 20):
                    grid = make_grid(model.path, steps_for_nfe(model.path, name, nfe, kind), kind)
                    out = ods.sample(model, x, grid, method=name)
                    errors[kind, name, nfe] = float((out - ref).pow(2).mean().sqrt())
    assert errors["lambda", BEST, 10] / errors["lambda", BEST, 20] > 4, errors
    assert errors["trailing", BEST, 10] / errors["trailing", BEST, 20] < 2.5, errors
    assert errors["trailing", BEST, 10] < 1.5 * SOLVER_RMS_NFE10, errors
    assert errors["trailing", "ddim", 10] > 2 * errors["trailing", BEST, 10], errors


def test_reference_refuses_an_unconverged_solve(model, x_T):
    with pytest.raises(reference.ReferenceAccuracyError, match="differ by"):
        reference.solve_by_halving(model, x_T[:4], steps=4, method="ddim")


# --------------------------------------------------------------------------------------------
# Low precision
# --------------------------------------------------------------------------------------------


def test_bfloat16_network_with_float32_state_stays_close(model, classifier, x_T, samples):
    """The network in bfloat16 (parameters and activations; the noise level is embedded in float32),
    the state accumulated in float32 by the executor.

    - One call: bfloat16 keeps 8 significant bits (unit roundoff u = 2^-8 = 0.0039); with layer
      norms holding the activations at O(1) the output's relative RMS error should be a few u at
      most: bound 4u, measured 1.06u.
    - Through the 10 steps of BEST the samples move by RMS 0.016, less than half the solver's own
      error at NFE 10 (0.072 against the reference): bound SOLVER_RMS_NFE10 / 2. The ODE
      separates nearby starts near class boundaries, so a few samples move more: 2.3 % change
      their class (bound 5 %), and the Frechet distance moves by 1 % (bound 10 %)."""
    clf = classifier[0]
    mb = zoo.load("digits", dtype=torch.bfloat16)
    assert mb.fn.network.inp.weight.dtype == torch.bfloat16
    xt = torch.randn((256, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    tt = torch.rand(256, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 999
    with torch.inference_mode():
        e32, e16 = model(xt, tt), mb(xt, tt)
        grid = make_grid(model.path, steps_for_nfe(model.path, BEST, 10))
        out16 = ods.sample(mb, x_T, grid, method=BEST)
    assert e16.dtype == torch.bfloat16 and out16.dtype == torch.float32
    rel = float((e16.float() - e32).pow(2).mean().sqrt() / e32.pow(2).mean().sqrt())
    assert rel < 4 * BF16_UNIT_ROUNDOFF, rel
    assert float((out16 - samples).pow(2).mean().sqrt()) < SOLVER_RMS_NFE10 / 2
    flips = float((clf(out16).argmax(1) != clf(samples).argmax(1)).float().mean())
    assert flips < 0.05, flips
    feats = clf.features(zoo.data("digits"))
    fd16, fd32 = (metrics.frechet_distance(clf.features(v), feats) for v in (out16, samples))
    assert abs(fd16 - fd32) < 0.1 * fd32, (fd16, fd32)


# --------------------------------------------------------------------------------------------
# The zoo's objects: built whole, nothing attached afterwards
# --------------------------------------------------------------------------------------------


def test_loaded_model_carries_its_network_in_its_function(model):
    """``zoo.load`` returns a plain Model whose ``fn`` is a ZooDenoiser holding the network; the same
    network called at lambda(t) gives the model's output bit for bit."""
    assert type(model) is ods.Model and isinstance(model.fn, zoo.ZooDenoiser)
    assert not hasattr(model, "network") and not hasattr(model, "config")
    net = model.fn.network
    assert isinstance(net, zoo.DigitsNet) and net.shape == tuple(zoo.config("digits")["net"]["shape"])
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    t = torch.tensor([10.0, 600.0], dtype=torch.float64)
    with torch.inference_mode():
        assert torch.equal(model(x, t), net(x, model.fn.lambda_of_t(t)))


def test_config_is_a_copy():
    cfg = zoo.config("digits")
    cfg["net"]["shape"] = [3, 3]
    assert zoo.config("digits")["net"]["shape"] == [1, 8, 8]
    with pytest.raises(ValueError, match="'cifar'"):
        zoo.config("cifar")


def test_frechet_distance_refuses_a_singular_covariance():
    """n <= d samples give a covariance of rank n - 1 < d: refused, naming the set and the counts."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=g), torch.randn(300, 16, generator=g)
    with pytest.raises(ValueError, match=r"a must have more rows.*got 8 samples of 16 features"):
        metrics.frechet_distance(a, b)
    with pytest.raises(ValueError, match=r"b must have more rows.*got 16 samples of 16 features"):
        metrics.frechet_distance(b, b[:16])
    assert metrics.frechet_distance(b[:17], b) > 0  # one more sample than features is enough


def test_solve_by_halving_refuses_bad_arguments(model, x_T):
    with pytest.raises(ValueError, match="steps must be an integer >= 4"):
        reference.solve_by_halving(model, x_T[:2], steps=3)
    edm = ods.Model(lambda x, t: x, ods.paths.EDM(), "x0")
    with pytest.raises(TypeError, match="VPDiscrete"):
        reference.solve_by_halving(edm, x_T[:2])
