"""Bad input through the public API: paths, grids, models, methods and ``ods.sample``.

Every case either asserts the error type AND that its message names the argument at fault (a
regex), or asserts the correct result where the input is legitimate but at an edge. The executor,
diffusers scheduler and CLI cases live with those modules' tests.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.adapters import kdiffusion as kd
from odesolve.models import classifier_free_guidance, clip_data, conversion, dynamic_thresholding

NAN, INF = math.nan, math.inf
EDM, VPL, FM = P.EDM(), P.VP.linear(), P.FlowMatching()
VPD = P.VP.discrete()
ZSNR = P.VP.discrete(rescale_zero_terminal_snr=True)


def _x0_model(path=EDM):
    return ods.Model(lambda x, t: 0.5 * x, path, "x0")


def _fn(x, t, c):
    return x * c.reshape((-1,) + (1,) * (x.ndim - 1))


BAD_PATHS = [
    ("linear-beta_max-inf", lambda: P.VP.linear(beta_max=INF), ValueError, r"beta_max must be a finite real number"),
    ("linear-beta_min-nan", lambda: P.VP.linear(beta_min=NAN), ValueError, r"beta_min must be"),
    ("linear-beta_min-negative", lambda: P.VP.linear(beta_min=-0.1), ValueError, r"beta_min must be .*>= 0"),
    ("linear-beta-order", lambda: P.VP.linear(beta_min=5.0, beta_max=1.0), ValueError, r"beta_min < beta_max"),
    ("linear-beta_min-str", lambda: P.VP.linear(beta_min="0.1"), TypeError, r"beta_min must be a finite real"),
    ("cosine-s-nan", lambda: P.VP.cosine(s=NAN), ValueError, r"s must be a finite real number >= 0"),
    ("cosine-s-minus-one", lambda: P.VP.cosine(s=-1.0), ValueError, r"s must be a finite real number >= 0"),
    ("cosine-s-inf", lambda: P.VP.cosine(s=INF), ValueError, r"\bs must be"),
    ("betas-2d", lambda: P.VP.from_betas(torch.tensor([[0.1, 0.2], [0.3, 0.4]])), ValueError, r"betas must be a 1-D"),
    ("betas-nested-list", lambda: P.VP.from_betas([[0.1, 0.2], [0.3, 0.4]]), (ValueError, TypeError), r"betas must be"),
    ("betas-nan", lambda: P.VP.from_betas([0.1, NAN, 0.2]), ValueError, r"betas must lie in \(0, 1\).*betas\[1\]"),
    ("betas-above-one", lambda: P.VP.from_betas([0.1, 1.5]), ValueError, r"betas must lie in \(0, 1\)"),
    ("betas-zero", lambda: P.VP.from_betas([0.0, 0.1]), ValueError, r"betas\[0\]"),
    ("betas-one-not-last", lambda: P.VP.from_betas([1.0, 0.5]), ValueError, r"the last may be 1"),
    ("betas-too-short", lambda: P.VP.from_betas([0.1]), ValueError, r"betas must be a 1-D sequence of at least 2"),
    ("betas-str", lambda: P.VP.from_betas("abc"), TypeError, r"betas"),
    ("betas-bool", lambda: P.VP.from_betas([True, True]), TypeError, r"betas must be real"),
    (
        "betas-complex",
        lambda: P.VP.from_betas(torch.tensor([0.1, 0.2], dtype=torch.complex64)),
        TypeError,
        r"betas must be real",
    ),
    (
        "T-negative",
        lambda: P.VP.discrete(num_train_timesteps=-5),
        ValueError,
        r"num_train_timesteps must be an integer",
    ),
    ("T-float", lambda: P.VP.discrete(num_train_timesteps=10.5), TypeError, r"num_train_timesteps must be an integer"),
    ("T-bool", lambda: P.VP.discrete(num_train_timesteps=True), TypeError, r"num_train_timesteps"),
    ("beta_end-above-one", lambda: P.VP.discrete(beta_end=2.0), ValueError, r"beta_end must be .*\(0, 1\)"),
    ("beta_start-nan", lambda: P.VP.discrete(beta_start=NAN), ValueError, r"beta_start"),
    ("schedule-unknown", lambda: P.VP.discrete("cosine"), ValueError, r"schedule must be"),
    ("rescale-str", lambda: P.VP.discrete(rescale_zero_terminal_snr="yes"), TypeError, r"rescale_zero_terminal_snr"),
    ("ve-sigma_max-inf", lambda: P.VE(sigma_max=INF), ValueError, r"sigma_max must be a finite"),
    ("ve-sigma_min-zero", lambda: P.VE(sigma_min=0.0), ValueError, r"sigma_min must be .*> 0"),
    ("ve-order", lambda: P.VE(sigma_min=10.0, sigma_max=1.0), ValueError, r"sigma_min < sigma_max"),
    ("edm-t_max-nan", lambda: P.EDM(t_max=NAN), ValueError, r"t_max must be"),
    ("edm-t_max-negative", lambda: P.EDM(t_max=-1.0), ValueError, r"t_max must be .*> 0"),
    ("alpha-of-str", lambda: VPL.alpha("abc"), TypeError, r"\bt must be a number"),
    ("lambda-of-complex", lambda: VPL.lambda_(torch.tensor([0.5j])), TypeError, r"\bt must be real"),
]

BAD_GRIDS = [
    (
        "discrete-offset-past-end",
        lambda: G.discrete(VPD, 10, "leading", steps_offset=5000),
        ValueError,
        r"steps_offset must be in \[0, 99\]",
    ),
    ("discrete-offset-negative", lambda: G.discrete(VPD, 10, "leading", steps_offset=-1), ValueError, r"steps_offset"),
    ("discrete-offset-float", lambda: G.discrete(VPD, 10, "leading", steps_offset=1.5), TypeError, r"steps_offset"),
    (
        "discrete-more-steps-than-T",
        lambda: G.discrete(VPD, 2000),
        ValueError,
        r"steps must be at most num_train_timesteps = 1000",
    ),
    ("discrete-fractional-steps", lambda: G.discrete(VPD, 10.7), TypeError, r"steps must be an integer"),
    ("discrete-integral-float-steps", lambda: G.discrete(VPD, 10.0), TypeError, r"steps must be an integer"),
    ("discrete-bool-steps", lambda: G.discrete(VPD, True), TypeError, r"steps must be an integer"),
    ("discrete-zero-steps", lambda: G.discrete(VPD, 0), ValueError, r"steps must be an integer >= 1"),
    ("discrete-spacing", lambda: G.discrete(VPD, 10, spacing="middle"), (ValueError, TypeError), r"spacing must be"),
    ("discrete-final", lambda: G.discrete(VPD, 10, final="last"), (ValueError, TypeError), r"final must be"),
    ("discrete-continuous-path", lambda: G.discrete(VPL, 5), TypeError, r"path must be a VPDiscrete"),
    ("karras-huge-steps", lambda: G.karras(EDM, 10**7), ValueError, r"steps must be an integer in \[1, 100000\]"),
    ("karras-float-steps", lambda: G.karras(EDM, 10.0), TypeError, r"steps must be an integer"),
    ("karras-bool-steps", lambda: G.karras(EDM, True), TypeError, r"steps must be an integer"),
    ("karras-one-step-to-zero", lambda: G.karras(EDM, 1), ValueError, r"steps must be at least 2 with to_zero"),
    ("karras-rho-nan", lambda: G.karras(EDM, 10, rho=NAN), ValueError, r"rho must be a finite real number > 0"),
    ("karras-rho-zero", lambda: G.karras(EDM, 10, rho=0.0), ValueError, r"rho must be"),
    ("karras-sigma_min-nan", lambda: G.karras(EDM, 10, sigma_min=NAN), ValueError, r"sigma_min must be"),
    ("karras-sigma_max-inf", lambda: G.karras(EDM, 10, sigma_max=INF), ValueError, r"sigma_max must be a finite"),
    (
        "karras-sigma-order",
        lambda: G.karras(EDM, 10, sigma_min=5.0, sigma_max=1.0),
        ValueError,
        r"sigma_min < sigma_max",
    ),
    ("karras-sigma_max-str", lambda: G.karras(EDM, 10, sigma_max="80"), TypeError, r"sigma_max must be"),
    ("karras-sigma_max-out-of-path", lambda: G.karras(VPL, 10, sigma_max=1e6), ValueError, r"sigma_max <= "),
    (
        "karras-zero-snr-default-sigma_max",
        lambda: G.karras(P.VP.cosine(), 10, sigma_max=None),
        ValueError,
        r"sigma_max must be finite",
    ),
    ("karras-to_zero-str", lambda: G.karras(EDM, 10, to_zero="no"), TypeError, r"to_zero must be a bool"),
    ("karras-path-str", lambda: G.karras("edm", 10), TypeError, r"path must be an odesolve.paths.Path"),
    ("lambda-t_start-nan", lambda: G.uniform_lambda(VPL, 5, t_start=NAN), ValueError, r"t_start must be"),
    ("lambda-infinite-t_start", lambda: G.uniform_lambda(EDM, 5), ValueError, r"t_start"),
    (
        "lambda-alpha-zero-start",
        lambda: G.uniform_lambda(FM, 5),
        ValueError,
        r"t_start, t_end must have finite log-SNR",
    ),
    ("time-t_start-outside", lambda: G.uniform_time(VPL, 5, t_start=2.0), ValueError, r"t_start must be .*\[0, 1\]"),
    (
        "time-t_start-below-t_end",
        lambda: G.uniform_time(VPL, 5, t_start=0.2, t_end=0.5),
        ValueError,
        r"t_start must be larger than t_end",
    ),
    ("time-float-steps", lambda: G.uniform_time(VPL, 5.5), TypeError, r"steps must be an integer"),
    ("time-t_end-str", lambda: G.uniform_time(VPL, 5, t_end="0"), TypeError, r"t_end must be"),
    ("quadratic-t_end-negative", lambda: G.time_quadratic(VPL, 5, t_end=-1.0), ValueError, r"t_end must be"),
    ("quadratic-infinite-start", lambda: G.time_quadratic(EDM, 5), ValueError, r"t_start must be finite"),
    ("times-nan", lambda: G.from_times(EDM, [1.0, NAN]), ValueError, r"times must lie in the domain"),
    ("times-increasing", lambda: G.from_times(EDM, [1.0, 2.0]), ValueError, r"times must be decreasing"),
    ("times-too-short", lambda: G.from_times(EDM, [1.0]), ValueError, r"times must be a 1-D sequence of at least 2"),
    ("times-all-equal", lambda: G.from_times(EDM, [1.0, 1.0]), ValueError, r"times must contain at least 2 distinct"),
    ("times-infinite", lambda: G.from_times(EDM, [INF, 1.0]), ValueError, r"times must be finite"),
    ("times-str", lambda: G.from_times(EDM, "abc"), TypeError, r"times must be a number"),
    ("times-complex", lambda: G.from_times(EDM, torch.tensor([2.0 + 0j, 1.0])), TypeError, r"times must be real"),
    ("times-numpy-complex", lambda: G.from_times(EDM, np.array([2.0 + 1j, 1.0])), TypeError, r"times must be real"),
    ("times-bool-list", lambda: G.from_times(EDM, [True, False]), TypeError, r"times must be real"),
    (
        "times-too-many",
        lambda: G.from_times(EDM, torch.linspace(10.0, 0.0, 200_002, dtype=torch.float64)),
        ValueError,
        r"times must hold at most",
    ),
    ("sigmas-increasing", lambda: G.from_sigmas(EDM, [1.0, 2.0, 0.0]), ValueError, r"sigmas must be decreasing"),
    ("sigmas-inf-on-edm", lambda: G.from_sigmas(EDM, [INF, 1.0, 0.0]), ValueError, r"sigmas: an infinite noise"),
    ("sigmas-2d", lambda: G.from_sigmas(EDM, [[2.0, 1.0]]), ValueError, r"sigmas must be a 1-D"),
    ("sigmas-nan", lambda: G.from_sigmas(EDM, [NAN, 1.0]), ValueError, r"sigmas must be non-negative"),
    ("sigmas-negative", lambda: G.from_sigmas(EDM, [1.0, -1.0]), ValueError, r"sigmas must be non-negative"),
    ("strength-zero", lambda: G.karras(EDM, 10).strength(0.0), ValueError, r"strength must be .*\(0, 1\]"),
    ("strength-above-one", lambda: G.karras(EDM, 10).strength(1.5), ValueError, r"strength must be"),
    ("strength-nan", lambda: G.karras(EDM, 10).strength(NAN), ValueError, r"strength must be"),
    ("strength-str", lambda: G.karras(EDM, 10).strength("0.5"), TypeError, r"strength must be"),
    ("grid-path-str", lambda: G.Grid("edm", torch.tensor([1.0, 0.0])), TypeError, r"path must be"),
]

BAD_MODELS = [
    ("prediction-unknown", lambda: ods.Model(lambda x, t: x, EDM, "noise"), ValueError, r"prediction must be one of"),
    (
        "prediction-list",
        lambda: ods.Model(lambda x, t: x, EDM, ["eps"]),
        (ValueError, TypeError),
        r"prediction must be one of",
    ),
    (
        "dtype-str",
        lambda: ods.Model(lambda x, t: x, EDM, "eps", dtype="float16"),
        TypeError,
        r"dtype must be a floating torch.dtype",
    ),
    ("dtype-int", lambda: ods.Model(lambda x, t: x, EDM, "eps", dtype=torch.int32), TypeError, r"dtype must be"),
    ("fn-not-callable", lambda: ods.Model(3, EDM, "eps"), TypeError, r"fn must be callable"),
    ("path-str", lambda: ods.Model(lambda x, t: x, "edm", "eps"), TypeError, r"path must be"),
    (
        "output-shape",
        lambda: ods.Model(lambda x, t: x[:, :1], EDM, "eps")(torch.ones(2, 3), 1.0),
        ValueError,
        r"the model must return a tensor of the input's shape",
    ),
    ("t-shape", lambda: _x0_model()(torch.ones(2, 3), torch.ones(3)), ValueError, r"t must be a scalar or have shape"),
    ("call-x-list", lambda: _x0_model()([[1.0, 2.0]], 1.0), TypeError, r"x must be a torch.Tensor"),
    (
        "predict-x-scalar",
        lambda: _x0_model().predict(torch.tensor(1.0), 1.0, "eps"),
        TypeError,
        r"x must be a torch.Tensor of shape \(batch",
    ),
    (
        "target-unknown",
        lambda: _x0_model().predict(torch.ones(2, 3), 1.0, "noise"),
        (ValueError, TypeError),
        r"target must be one of",
    ),
    (
        "threshold-max_value-zero",
        lambda: dynamic_thresholding(_x0_model(), max_value=0.0),
        ValueError,
        r"max_value .*must be a finite real number > 0",
    ),
    (
        "threshold-max_value-negative",
        lambda: dynamic_thresholding(_x0_model(), max_value=-1.0),
        ValueError,
        r"max_value",
    ),
    ("threshold-ratio-zero", lambda: dynamic_thresholding(_x0_model(), ratio=0.0), ValueError, r"ratio .*\(0, 1\]"),
    ("threshold-ratio-above-one", lambda: dynamic_thresholding(_x0_model(), ratio=1.5), ValueError, r"ratio"),
    ("threshold-ratio-nan", lambda: dynamic_thresholding(_x0_model(), ratio=NAN), ValueError, r"ratio"),
    ("threshold-not-a-model", lambda: dynamic_thresholding(lambda x, t: x), TypeError, r"model must be"),
    ("clip-range-zero", lambda: clip_data(_x0_model(), 0.0), ValueError, r"clip_sample_range must be .*> 0"),
    ("clip-range-negative", lambda: clip_data(_x0_model(), -1.0), ValueError, r"clip_sample_range"),
    (
        "guidance-scale-nan",
        lambda: classifier_free_guidance(_fn, NAN, torch.ones(2), torch.zeros(2)),
        ValueError,
        r"scale must be a finite real number",
    ),
    (
        "guidance-scale-str",
        lambda: classifier_free_guidance(_fn, "7.5", torch.ones(2), torch.zeros(2)),
        TypeError,
        r"scale must be",
    ),
    (
        "guidance-cond-uncond-shapes",
        lambda: classifier_free_guidance(_fn, 7.5, torch.ones(2), torch.zeros(3)),
        ValueError,
        r"cond and uncond must have the same shape",
    ),
    (
        "guidance-batch",
        lambda: classifier_free_guidance(_fn, 7.5, torch.ones(3), torch.zeros(3))(torch.ones(2, 4), torch.ones(2)),
        ValueError,
        r"cond and uncond must have one row per sample",
    ),
    (
        "guidance-fn",
        lambda: classifier_free_guidance(3, 7.5, torch.ones(2), torch.zeros(2)),
        TypeError,
        r"fn must be callable",
    ),
    (
        "eps-to-x0-flow-matching-t1",
        lambda: conversion(FM, "eps", "x0", 1.0),
        ValueError,
        r"prediction 'eps' cannot be converted to 'x0' at t = 1 .*alpha > 0",
    ),
    (
        "score-to-x0-zero-snr",
        lambda: conversion(ZSNR, "score", "x0", 999.0),
        ValueError,
        r"prediction 'score' cannot be converted to 'x0' at t = 999",
    ),
    (
        "x0-to-eps-at-sigma-zero",
        lambda: conversion(EDM, "x0", "eps", torch.tensor([1.0, 0.0])),
        ValueError,
        r"prediction 'x0' cannot be converted to 'eps' at t = 0 .*sigma > 0",
    ),
    ("conversion-target", lambda: conversion(EDM, "x0", "v", 1.0), ValueError, r"target must be 'x0' or 'eps'"),
    ("conversion-t-nan", lambda: conversion(VPL, "eps", "x0", NAN), ValueError, r"t must be times of VPLinear"),
]

BAD_METHODS = [
    ("get-int", lambda: ods.methods.get(42), (ValueError, TypeError), r"method 42"),
    ("get-none", lambda: ods.methods.get(None), (ValueError, TypeError), r"method None"),
    ("get-typo", lambda: ods.methods.get("dpmpp2m"), ValueError, r"did you mean 'dpmpp-2m'"),
    ("get-unhashable", lambda: ods.methods.get(["dpmpp-2m"]), (ValueError, TypeError), r"method \['dpmpp-2m'\]"),
    ("register-str", lambda: ods.methods.register("dpmpp-2m"), TypeError, r"method must be an odesolve.methods.Method"),
    (
        "register-twice",
        lambda: ods.methods.register(ods.methods.get("dpmpp-2m")),
        ValueError,
        r"already registered \(pass replace=True\)",
    ),
]


def _grid():
    return G.karras(EDM, 6, sigma_max=10.0)


def _plan():
    return ods.methods.get("dpmpp-2m").compile(EDM, _grid())


X = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

BAD_SAMPLES = [
    ("grid-name", lambda: ods.sample(_x0_model(), X, "karras"), TypeError, r"grid must be an odesolve.grids.Grid"),
    ("grid-tensor", lambda: ods.sample(_x0_model(), X, _grid().t), TypeError, r"grid must be"),
    ("x-list", lambda: ods.sample(_x0_model(), X.tolist(), _grid()), TypeError, r"x must be a torch.Tensor"),
    ("x-nan", lambda: ods.sample(_x0_model(), torch.full((2, 3), NAN), _grid()), ValueError, r"x must be finite"),
    ("x-inf", lambda: ods.sample(_x0_model(), torch.full((2, 3), INF), _grid()), ValueError, r"x must be finite"),
    (
        "x-int",
        lambda: ods.sample(_x0_model(), torch.ones(2, 3, dtype=torch.int64), _grid()),
        TypeError,
        r"x must have a floating dtype",
    ),
    (
        "x-scalar",
        lambda: ods.sample(_x0_model(), torch.tensor(1.0), _grid()),
        (ValueError, TypeError),
        r"x must have shape \(batch",
    ),
    ("x-empty-batch", lambda: ods.sample(_x0_model(), torch.ones(0, 3), _grid()), ValueError, r"batch >= 1"),
    ("model-function", lambda: ods.sample(lambda x, t: x, X, _grid()), TypeError, r"model must be an odesolve.Model"),
    ("model-other-path", lambda: ods.sample(_x0_model(VPL), X, _grid()), ValueError, r"model.path .* differs"),
    (
        "method-unknown",
        lambda: ods.sample(_x0_model(), X, _grid(), method="nope"),
        ValueError,
        r"method 'nope' is not registered",
    ),
    (
        "plan-with-options",
        lambda: ods.sample(_x0_model(), X, _grid(), method=_plan(), lower_order_final=True),
        TypeError,
        r"options \['lower_order_final'\] cannot be applied",
    ),
    (
        "plan-other-grid",
        lambda: ods.sample(_x0_model(), X, G.karras(EDM, 5), method=_plan()),
        ValueError,
        r"method: the plan was compiled for another grid",
    ),
    (
        "model-output-shape",
        lambda: ods.sample(ods.Model(lambda x, t: x[:1], EDM, "x0"), X, _grid()),
        ValueError,
        r"the model must return a tensor of the input's shape",
    ),
    (
        "model-output-nan",
        lambda: ods.sample(ods.Model(lambda x, t: x * NAN, EDM, "x0"), X, _grid()),
        ods.NonFiniteError,
        r"the model returned NaN or Inf at call 0 \(grid step 0, t = 10",
    ),
    (
        "eps-model-from-alpha-zero",
        lambda: ods.sample(ods.Model(lambda x, t: x, FM, "eps"), X, G.uniform_time(FM, 6), method="dpmpp-2m"),
        ValueError,
        r"prediction 'eps' cannot be converted to 'x0' at t = 1",
    ),
    (
        "eps-model-from-zero-snr",
        lambda: ods.sample(ods.Model(lambda x, t: x, ZSNR, "eps"), X, G.discrete(ZSNR, 6), method="ddim"),
        ValueError,
        r"prediction 'eps' cannot be converted to 'x0' at t = 999",
    ),
]


def _denoiser(x, sigma):
    return 0.5 * x


SIGMAS = torch.tensor([10.0, 1.0, 0.0])
BAD_KDIFFUSION = [
    (
        "kd-sigmas-increasing",
        lambda: kd.sample_euler(_denoiser, X, [1.0, 2.0, 0.0]),
        ValueError,
        r"sigmas must be decreasing",
    ),
    (
        "kd-sigmas-one",
        lambda: kd.sample_euler(_denoiser, X, torch.tensor([10.0])),
        ValueError,
        r"sigmas must be a 1-D sequence of at least 2",
    ),
    (
        "kd-sigmas-nan",
        lambda: kd.sample_euler(_denoiser, X, torch.tensor([NAN, 1.0, 0.0])),
        ValueError,
        r"sigmas must be non-negative",
    ),
    (
        "kd-sigmas-inf",
        lambda: kd.sample_euler(_denoiser, X, torch.tensor([INF, 1.0, 0.0])),
        ValueError,
        r"sigmas: an infinite noise level",
    ),
    ("kd-model-str", lambda: kd.sample_euler("model", X, SIGMAS), TypeError, r"model must be callable"),
    ("kd-x-list", lambda: kd.sample_euler(_denoiser, X.tolist(), SIGMAS), TypeError, r"x must be a torch.Tensor"),
    (
        "kd-extra_args-list",
        lambda: kd.sample_euler(_denoiser, X, SIGMAS, extra_args=[1]),
        TypeError,
        r"extra_args must be a dict",
    ),
    (
        "kd-callback-int",
        lambda: kd.sample_euler(_denoiser, X, SIGMAS, callback=3),
        TypeError,
        r"callback must be callable",
    ),
    (
        "kd-output-shape",
        lambda: kd.sample_euler(lambda x, s: x[:1], X, SIGMAS),
        ValueError,
        r"the model must return a tensor of the input's shape",
    ),
]

CASES = BAD_PATHS + BAD_GRIDS + BAD_MODELS + BAD_METHODS + BAD_SAMPLES + BAD_KDIFFUSION


# The test suite runs odesolve under a runtime type checker (tests/conftest.py): where an annotation
# refuses the value first, its TypeError must name the same argument (``parameter 'name'``).
CHECKER_NAMES = {"get-int": "name", "get-none": "name", "get-unhashable": "name", "register-str": "method"}


def _argument(case_id, message):
    return CHECKER_NAMES.get(case_id) or re.search(r"[A-Za-z_]\w*", message.removeprefix(r"\b")).group(0)


@pytest.mark.parametrize("case_id, call, error, message", [pytest.param(*c, id=c[0]) for c in CASES])
def test_bad_input_is_refused_naming_the_argument(case_id, call, error, message):
    with pytest.raises(error) as info:
        call()
    text = str(info.value)
    if type(info.value).__name__ == "TypeCheckError":
        assert f"parameter '{_argument(case_id, message)}'" in text, text
    else:
        assert re.search(message, text), text


def test_the_suite_is_large():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)


# -- legitimate inputs at the edges: the correct result ----------------------------------------------------


def test_velocity_and_v_convert_to_x0_exactly_at_alpha_zero():
    """Flow matching at t = 1: x = eps, velocity = eps - x0, v = -x0, so x0 = x - F and x0 = -F."""
    assert [float(c) for c in conversion(FM, "velocity", "x0", 1.0)] == [1.0, -1.0]
    assert [float(c) for c in conversion(FM, "v", "x0", 1.0)] == [0.0, -1.0]


def test_v_model_from_alpha_zero_samples_a_point_mass_exactly():
    """All data at x0 = 2: the exact v-prediction on flow matching is v = alpha eps - sigma x0 with
    eps = (x - alpha x0)/sigma, and every x0-prediction method lands on x0 = 2 from t = 1."""

    def v(x, t):
        a, s = FM.alpha(t)[:, None], FM.sigma(t)[:, None]
        return (a * (x - a * 2.0) / s - s * 2.0).to(x.dtype)

    out = ods.sample(ods.Model(v, FM, "v"), X, G.uniform_time(FM, 4), method="dpmpp-2m")
    assert torch.allclose(out, torch.full_like(X, 2.0), rtol=0, atol=1e-12)


def test_steps_offset_at_its_largest_keeps_every_step():
    g = G.discrete(VPD, 10, "leading", steps_offset=99)
    assert g.steps == 10 and g.t[:-1].tolist() == [999.0 - 100 * i for i in range(10)]


def test_zero_terminal_snr_betas_end_at_one():
    path = P.VP.from_betas([0.1, 0.2, 1.0])
    assert path.zero_terminal_snr and float(path.alpha(torch.tensor(2.0))) == 0.0


def test_velocity_converts_to_x0_at_alpha_zero_on_a_discrete_zero_snr_path():
    """Zero terminal SNR, t = T-1: alpha = 0, so velocity = alpha' x0 (sigma' = 0) and x0 = velocity / alpha'.
    alpha' is the slope of the last, linear segment: -sqrt(alphas_cumprod[T-2])."""
    c_x, c_f = conversion(ZSNR, "velocity", "x0", 999.0)
    slope = -(float(ZSNR.alphas_cumprod[-2]) ** 0.5)
    assert float(c_x) == 0.0 and float(c_f) == pytest.approx(1 / slope, rel=1e-12)
