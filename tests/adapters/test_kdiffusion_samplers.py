"""k-diffusion's sampler names in odesolve.adapters.kdiffusion: same signature, and same noise in gives
the same samples out (float64, <= 1e-12) as k-diffusion's own ``sampling.py`` (loaded alone, see
test_kdiffusion.py), for every name, with a noise_sampler passed to both, with k-diffusion's
BrownianTreeNoiseSampler, and with k-diffusion's default noise under the same torch seed."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from _adapters_lib import rel
from test_kdiffusion import SIGMAS, denoiser, kdiffusion_oracle

import odesolve as ods
from odesolve.adapters import kdiffusion as kd


@pytest.fixture(scope="module")
def K():
    """k-diffusion's sampling.py, loaded alone (skipped where not installed, unless CI requires it)."""
    return kdiffusion_oracle()


def _x(seed=0, batch=3):
    return torch.randn(batch, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 60.0


def keyed_noise(shape):
    """A noise_sampler whose answer depends only on (sigma, sigma_next): the same for any caller and order."""

    def sample(sigma, sigma_next):
        key = hash((round(float(sigma), 13), round(float(sigma_next), 13))) % 2**62
        return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(key))

    return sample


def counting(noise_sampler, calls):
    def sample(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return noise_sampler(sigma, sigma_next)

    return sample


DETERMINISTIC = [
    ("sample_euler", {}),
    ("sample_heun", {}),
    ("sample_dpm_2", {}),
    ("sample_dpmpp_2m", {}),
    ("sample_euler", {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}),  # no-op values
    ("sample_heun", {"s_churn": 5.0, "s_tmin": 100.0, "s_tmax": 200.0}),  # churn outside every sigma: no-op
    ("sample_dpm_2", {"s_noise": 1.003}),
    ("sample_dpmpp_sde", {"eta": 0.0}),
    ("sample_dpmpp_sde", {"eta": 0.0, "r": 1 / 3}),
    ("sample_dpmpp_sde", {"eta": 0.0, "r": 0.75}),
]
STOCHASTIC = [
    ("sample_euler_ancestral", {}),
    ("sample_euler_ancestral", {"eta": 0.6, "s_noise": 0.8}),
    ("sample_euler_ancestral", {"eta": 1.7}),  # sigma_up capped at sigma_next: Euler to 0, then noise
    ("sample_dpm_2_ancestral", {}),
    ("sample_dpm_2_ancestral", {"eta": 0.5, "s_noise": 1.2}),
    ("sample_dpmpp_2s_ancestral", {}),
    ("sample_dpmpp_2s_ancestral", {"eta": 0.3, "s_noise": 0.9}),
    ("sample_dpmpp_2m_sde", {}),
    ("sample_dpmpp_2m_sde", {"eta": 0.7, "s_noise": 0.9, "solver_type": "heun"}),
    ("sample_dpmpp_3m_sde", {}),
    ("sample_dpmpp_3m_sde", {"eta": 0.4, "s_noise": 1.1}),
    ("sample_dpmpp_sde", {}),
    ("sample_dpmpp_sde", {"eta": 0.7, "s_noise": 0.9, "r": 1 / 3}),
    ("sample_dpmpp_sde", {"eta": 1.8, "r": 0.75}),  # sigma_up capped at the stage's sigma
    ("sample_euler_ancestral", {"eta": 0.0}),
    ("sample_dpmpp_3m_sde", {"eta": 0.0}),
]
ASKS_PER_STEP = {"sample_dpmpp_sde": 2}  # noise_sampler(sigma, sigma_s) and noise_sampler(sigma, sigma_next)
_ids = lambda cases: [
    f"{n}-{'-'.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}' for k, v in kw.items())}" for n, kw in cases
]


def test_every_k_diffusion_name_is_provided_with_k_diffusions_signature(K):
    """k-diffusion's parameters, in order and with their defaults, then odesolve's keyword-only extras
    (sample_dpm_adaptive is odesolve.adaptive's batch-wide driver; its parity is in tests/core/test_adaptive.py)."""
    names = sorted(n for n in vars(K) if n.startswith("sample_"))
    assert set(names) <= set(kd.KDIFFUSION_NAMES)
    assert set(kd.KDIFFUSION_NAMES) - set(names) == {"sample_dpmpp_2m_sde_gpu", "sample_dpmpp_3m_sde_gpu"}
    for name in [*names, "sample_dpmpp_2m_sde_gpu", "sample_dpmpp_3m_sde_gpu"]:
        if name not in kd.KDIFFUSION_NAMES:
            continue
        theirs = inspect.signature(getattr(K, name.removesuffix("_gpu"))).parameters
        ours = inspect.signature(getattr(kd, name)).parameters
        assert list(ours)[: len(theirs)] == list(theirs), name
        for p in theirs:
            assert ours[p].default == theirs[p].default and ours[p].kind == theirs[p].kind, (name, p)
        assert all(ours[p].kind is inspect.Parameter.KEYWORD_ONLY for p in list(ours)[len(theirs) :]), name


@pytest.mark.parametrize("name, kwargs", DETERMINISTIC, ids=_ids(DETERMINISTIC))
def test_deterministic_samplers_equal_k_diffusions(K, name, kwargs):
    x = _x(1)
    theirs = getattr(K, name)(denoiser, x, SIGMAS, disable=True, **kwargs)
    got = getattr(kd, name)(denoiser, x, SIGMAS, **kwargs)
    assert rel(got, theirs) <= 1e-12


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 10])
def test_dpm_fast_equals_k_diffusions(K, n):
    """k-diffusion computes DPM-Solver-fast's times in torch's default dtype: with float64 the same samples
    to 1e-12 for every budget n (orders 3, ..., 3 and n mod 3, or 2 and 1 when 3 divides n)."""
    x = _x(9)
    torch.set_default_dtype(torch.float64)
    try:
        theirs = K.sample_dpm_fast(denoiser, x, 0.02, 60.0, n, disable=True)
    finally:
        torch.set_default_dtype(torch.float32)
    got = kd.sample_dpm_fast(denoiser, x, 0.02, 60.0, n, eta=0.0, s_noise=1.0, noise_sampler=None)
    assert rel(got, theirs) <= 1e-12
    calls = []
    kd.sample_dpm_fast(lambda xx, s: calls.append(1) or denoiser(xx, s), x, 0.02, 60.0, n)
    assert len(calls) == n


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_equals_k_diffusions(K, order):
    """k-diffusion integrates its Lagrange weights with scipy's quad: exact for these polynomials."""
    x = _x(2)
    assert (
        rel(
            kd.sample_lms(denoiser, x, SIGMAS, order=order),
            K.sample_lms(denoiser, x, SIGMAS, disable=True, order=order),
        )
        <= 1e-9
    )


@pytest.mark.parametrize("name, kwargs", STOCHASTIC, ids=_ids(STOCHASTIC))
def test_stochastic_samplers_equal_k_diffusions_with_the_same_noise_sampler(K, name, kwargs):
    """The same noise_sampler in both: the same samples, and it is asked for the same (sigma, sigma_next)."""
    x = _x(3)
    ns = keyed_noise(x.shape)
    asked_k, asked_o = [], []
    theirs = getattr(K, name)(denoiser, x, SIGMAS, disable=True, noise_sampler=counting(ns, asked_k), **kwargs)
    got = getattr(kd, name)(denoiser, x, SIGMAS, noise_sampler=counting(ns, asked_o), **kwargs)
    assert rel(got, theirs) <= 1e-12
    assert set(asked_o) <= set(asked_k)  # k-diffusion also asks where the noise is multiplied by 0
    if kwargs.get("eta", 1.0) != 0:
        assert len(asked_o) == ASKS_PER_STEP.get(name, 1) * (len(SIGMAS) - 2)  # every step but the one to 0
        if name == "sample_dpmpp_sde":  # and in k-diffusion's order
            assert asked_o == asked_k


@pytest.mark.parametrize(
    "name", ["sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_euler_ancestral", "sample_dpmpp_sde"]
)
@pytest.mark.parametrize("end", [len(SIGMAS), len(SIGMAS) - 1, 6], ids=["to-0", "to-sigma-min", "to-sigma-5"])
@pytest.mark.filterwarnings("ignore:Should have ta>=t0")  # torchsde: the tree's float32 ends, in both runs
def test_k_diffusions_brownian_tree_noise_sampler_works(K, name, end):
    """Also on sigmas that end above 0 (ComfyUI's split sampling), where sample_dpmpp_sde's last noise
    comes after the plan."""
    x = _x(4)
    sigmas = SIGMAS[:end]
    tree = K.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=11)
    theirs = getattr(K, name)(denoiser, x, sigmas, disable=True, noise_sampler=tree, eta=0.8)
    got = getattr(kd, name)(denoiser, x, sigmas, noise_sampler=tree, eta=0.8)
    assert rel(got, theirs) <= 1e-12


@pytest.mark.parametrize("name, kwargs", STOCHASTIC[:14], ids=_ids(STOCHASTIC[:14]))
def test_default_noise_under_the_same_torch_seed(K, name, kwargs):
    """No noise_sampler: torch.randn from the global stream (ancestral samplers) or a Brownian tree
    seeded from it (SDE samplers), as k-diffusion draws them."""
    x = _x(5)
    torch.manual_seed(1234)
    theirs = getattr(K, name)(denoiser, x, SIGMAS, disable=True, **kwargs)
    torch.manual_seed(1234)
    got = getattr(kd, name)(denoiser, x, SIGMAS, **kwargs)
    assert rel(got, theirs) <= 1e-12


def test_callback_of_a_stochastic_sampler_equals_k_diffusions(K):
    x = _x(6)
    for name in ("sample_euler_ancestral", "sample_dpmpp_2s_ancestral", "sample_dpmpp_3m_sde", "sample_dpmpp_sde"):
        ns = keyed_noise(x.shape)
        theirs, got = [], []
        K.__dict__[name](denoiser, x, SIGMAS, disable=True, callback=theirs.append, noise_sampler=ns, eta=0.9)
        getattr(kd, name)(denoiser, x, SIGMAS, callback=got.append, noise_sampler=ns, eta=0.9)
        assert [c["i"] for c in got] == [c["i"] for c in theirs] == list(range(len(SIGMAS) - 1))
        for a, b in zip(got, theirs):
            assert rel(a["x"], b["x"]) <= 1e-12 and rel(a["denoised"], b["denoised"]) <= 1e-12, (name, a["i"])
            assert float(a["sigma"]) == float(b["sigma"]) and float(a["sigma_hat"]) == float(b["sigma_hat"])


def test_float32_inputs_follow_k_diffusion(K):
    """float32 state and sigmas: the model gets float32 sigmas, and the result agrees to float32 round-off."""
    x = _x(7).float()
    s = SIGMAS.float()
    ns = keyed_noise(x.shape)
    f32 = lambda sigma, sigma_next: ns(sigma, sigma_next).float()
    seen = []

    def model(xx, sigma):
        seen.append(sigma.dtype)
        return denoiser(xx, sigma)

    theirs = K.sample_dpmpp_2m_sde(denoiser, x, s, disable=True, noise_sampler=f32)
    got = kd.sample_dpmpp_2m_sde(model, x, s, noise_sampler=f32)
    assert got.dtype == torch.float32 and set(seen) == {torch.float32}
    assert rel(got, theirs) <= 1e-5


def test_per_sample_seeds_are_odesolve_brownian_paths():
    """seeds= gives ods.sample's result with the same seeds; s_noise scales that noise."""
    x = _x(8)
    model = ods.Model(lambda xx, t: denoiser(xx, t), kd.PATH, "x0")
    grid = ods.grids.from_sigmas(kd.PATH, SIGMAS)
    for name, method in (("sample_euler_ancestral", "ddpm"), ("sample_dpmpp_3m_sde", "dpmpp-3m-sde")):
        got = getattr(kd, name)(denoiser, x, SIGMAS, seeds=[3, 4, 5], eta=0.5)
        want = ods.sample(model, x, grid, method=ods.methods.get(method), seeds=[3, 4, 5], eta=0.5)
        assert rel(got, want) <= 1e-12
        quiet = getattr(kd, name)(denoiser, x, SIGMAS, seeds=[3, 4, 5], eta=0.5, s_noise=0.0)
        assert (
            rel(quiet, getattr(kd, name)(denoiser, x, SIGMAS, noise_sampler=keyed_noise(x.shape), eta=0.5, s_noise=0.0))
            <= 1e-12
        )
        assert rel(quiet, got) > 1e-3


CHURN = [
    {"s_churn": 1.0},
    {"s_churn": 40.0, "s_tmin": 0.5, "s_tmax": 10.0, "s_noise": 1.003},
    {"s_churn": 5.0, "s_noise": 0.0},  # the steps still start at sigma_hat, with no noise
    {},  # no churn: k-diffusion still draws one randn per step
]


@pytest.mark.parametrize("name", ["sample_euler", "sample_heun", "sample_dpm_2"])
@pytest.mark.parametrize("kwargs", CHURN, ids=_ids([("churn", kw) for kw in CHURN]))
def test_churn_equals_k_diffusions_under_the_same_torch_seed(K, name, kwargs):
    """EDM's churn: the same samples and callbacks (x_hat, sigma_hat) as k-diffusion from the same global
    stream, which both leave in the same state (one randn_like(x) per step)."""
    x = _x(10)
    runs = []
    for f in (getattr(K, name), getattr(kd, name)):
        torch.manual_seed(77)
        seen = []
        extra = {"disable": True} if f is getattr(K, name) else {}
        out = f(denoiser, x, SIGMAS, callback=seen.append, **extra, **kwargs)
        runs.append((out, seen, torch.randn(4)))
    (theirs, cb_k, after_k), (got, cb_o, after_o) = runs
    assert rel(got, theirs) <= 1e-12
    assert torch.equal(after_k, after_o)
    assert [c["i"] for c in cb_o] == [c["i"] for c in cb_k]
    for a, b in zip(cb_o, cb_k):
        assert rel(a["x"], b["x"]) <= 1e-12 and rel(a["denoised"], b["denoised"]) <= 1e-12
        assert abs(float(a["sigma_hat"]) - float(b["sigma_hat"])) <= 1e-12 * float(b["sigma_hat"])


def test_churn_with_seeds_is_the_churn_table_with_brownian_paths():
    """seeds=: the churn of step n is the Brownian increment over the step (one path per sample)."""
    from odesolve.methods.noise_jumps import HEUN_CHURN

    x = _x(11)
    model = ods.Model(lambda xx, t: denoiser(xx, t), kd.PATH, "x0")
    grid = ods.grids.from_sigmas(kd.PATH, SIGMAS)
    opts = {"s_churn": 10.0, "s_tmin": 0.1, "s_tmax": 20.0, "s_noise": 1.0}
    got = kd.sample_heun(denoiser, x, SIGMAS, seeds=[3, 4, 5], **opts)
    want = ods.sample(model, x, grid, method=HEUN_CHURN, seeds=[3, 4, 5], **opts)
    assert rel(got, want) <= 1e-12
    assert rel(got, kd.sample_heun(denoiser, x, SIGMAS)) > 1e-3


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: kd.sample_euler(denoiser, _x(), SIGMAS, s_churn=-1.0), ValueError, "s_churn"),
        (
            lambda: kd.sample_heun(denoiser, _x(), SIGMAS, s_churn=1.0, seeds=[1, 2, 3], generator=torch.Generator()),
            ValueError,
            "one of noise=",
        ),
        (lambda: kd.sample_dpmpp_sde(denoiser, _x(), SIGMAS, r=0.0), ValueError, r"r must be"),
        (lambda: kd.sample_dpmpp_sde(denoiser, _x(), SIGMAS, eta=0.0, r=1.5), ValueError, r"r must be"),
        (lambda: kd.sample_lms(denoiser, _x(), SIGMAS, order=5), ValueError, r"order.*1, 2, 3 or 4"),
        (lambda: kd.sample_dpm_fast(denoiser, _x(), 0.02, 60.0, 6, eta=0.5), ValueError, r"eta.*supported: eta=0"),
        (lambda: kd.sample_dpm_fast(denoiser, _x(), 0.0, 60.0, 6), ValueError, "sigma_min"),
        (lambda: kd.sample_dpm_fast(denoiser, _x(), 0.02, 60.0, 0), ValueError, "n must be a positive integer"),
        (lambda: kd.sample_dpmpp_2m_sde(denoiser, _x(), SIGMAS, solver_type="euler"), ValueError, "solver_type"),
        (lambda: kd.sample_euler_ancestral(denoiser, _x(), SIGMAS, eta=-1.0), ValueError, "eta"),
        (lambda: kd.sample_euler_ancestral(denoiser, _x(), SIGMAS, s_noise="1"), TypeError, "s_noise"),
        (
            lambda: kd.sample_euler_ancestral(
                denoiser, _x(), SIGMAS, noise_sampler=keyed_noise((3, 6)), seeds=[1, 2, 3]
            ),
            ValueError,
            r"one of noise_sampler=, noise=, seeds=",
        ),
        (
            lambda: kd.sample_euler_ancestral(denoiser, _x(), SIGMAS, noise_sampler=3),
            TypeError,
            "noise_sampler must be callable",
        ),
        (
            lambda: kd.sample_euler_ancestral(denoiser, _x(), SIGMAS, noise_sampler=lambda s, t: torch.zeros(2)),
            ValueError,
            r"noise_sampler\(sigma, sigma_next\) must return a tensor of the state's shape",
        ),
    ],
)
def test_unsupported_values_are_refused_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
