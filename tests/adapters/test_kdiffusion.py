"""odesolve.adapters.kdiffusion: k-diffusion style functions generated from the registry.

They must equal odesolve.sample on the EDM path, and -- where k-diffusion implements the same
update -- k-diffusion's own sample_* functions. k-diffusion's package imports heavy optional
dependencies at import time, so only its ``sampling.py`` is loaded, by path, with a stub for
``utils.append_dims`` (skipped where k-diffusion or torchsde is not installed, unless
ODESOLVE_REQUIRE_KDIFFUSION=1).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from _adapters_lib import gmm_x0, rel

import odesolve as ods
from odesolve.adapters import kdiffusion as kd

SIGMAS = torch.cat(
    [ods.grids.karras(ods.paths.EDM(), 11, 0.02, 60.0, to_zero=False).sigmas, torch.zeros(1, dtype=torch.float64)]
)  # Karras ramp to 0.02, then a step to 0


def denoiser(x, sigma, scale=1.0):
    return gmm_x0(x, 1.0, sigma.double().reshape(-1)[0]).to(x.dtype) * scale


def _x(seed=0):
    return torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 60.0


def test_one_function_per_registered_method():
    """Every registered method has a function (k-diffusion's own where the name is k-diffusion's), and
    available() lists k-diffusion's names and the generated ones, each once."""
    names = kd.available()
    assert len(names) == len(set(names))
    assert set(kd.KDIFFUSION_NAMES) <= set(names)
    for name in ods.methods.names():
        f = getattr(kd, "sample_" + name.replace("-", "_"))
        assert callable(f) and f.__name__ == "sample_" + name.replace("-", "_")
        assert f.__name__ in names
    assert "sample_dpmpp_2m" in dir(kd) and "sample_unipc_bh2_3" in dir(kd)
    with pytest.raises(AttributeError, match="available"):
        kd.sample_no_such_method  # noqa: B018


@pytest.mark.parametrize("name", [n for n in ods.methods.names() if not ods.methods.get(n).stochastic])
def test_generated_function_equals_odesolve_sample(name):
    x = _x()
    got = getattr(kd, "sample_" + name.replace("-", "_"))(denoiser, x, SIGMAS, extra_args={"scale": 1.0})
    model = ods.Model(lambda xx, t: denoiser(xx, t), ods.paths.EDM(), "x0")
    want = ods.sample(model, x, ods.grids.from_sigmas(ods.paths.EDM(), SIGMAS), method=name)
    assert torch.isfinite(got).all()
    assert rel(got, want) <= 1e-12


def test_callback_and_options():
    seen = []
    x = _x(1)
    kd.sample_heun(denoiser, x, SIGMAS, callback=seen.append)
    assert [c["i"] for c in seen] == list(range(len(SIGMAS) - 1))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert torch.equal(seen[0]["x"], x) and float(seen[0]["sigma"]) == pytest.approx(60.0)
    assert rel(seen[0]["denoised"], denoiser(x, SIGMAS[:1])) <= 1e-12  # the prediction at sigma_i
    # options go to compile
    a = kd.sample_dpmpp_3m(denoiser, x, SIGMAS[:-1], lower_order_final=True)
    b = kd.sample_dpmpp_3m(denoiser, x, SIGMAS[:-1])
    assert rel(a, b) > 1e-6


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp-2m", "dpmpp-3m", "dpm-solver-2"])
def test_callback_reports_the_state_at_the_start_of_every_step(name):
    """Step i's callback gets x_i (the state at sigma_i, before the step) and the denoiser's output at
    (x_i, sigma_i): the states equal ods.sample's trajectory, the predictions a fresh model call."""
    seen = []
    x = _x(5)
    getattr(kd, "sample_" + name.replace("-", "_"))(denoiser, x, SIGMAS, callback=seen.append)
    model = ods.Model(lambda xx, t: denoiser(xx, t), kd.PATH, "x0")
    _, traj = ods.sample(model, x, ods.grids.from_sigmas(kd.PATH, SIGMAS), method=name, return_trajectory=True)
    assert [c["i"] for c in seen] == list(range(len(SIGMAS) - 1))
    for c in seen:
        i = c["i"]
        assert rel(c["x"], traj[i]) <= 1e-14, i
        assert float(c["sigma"]) == pytest.approx(float(SIGMAS[i]), rel=1e-12)
        assert rel(c["denoised"], denoiser(traj[i], SIGMAS[i : i + 1])) <= 1e-12, i
    assert len({id(c["x"]) for c in seen}) == len(seen)  # every dict keeps its own state


def _load_sampling_module():
    """k-diffusion's ``sampling.py`` alone, loaded by file path: its package ``__init__`` imports
    torchvision, clean-fid and others, but ``sampling`` needs only torch, scipy, torchdiffeq, torchsde
    and tqdm, and ``utils.append_dims`` (stubbed here). ``pip install --no-deps k-diffusion torchsde``
    is enough (torchsde also needs trampoline)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = types.ModuleType("_kdiffusion_isolated")
    pkg.__path__ = []
    utils = types.ModuleType("_kdiffusion_isolated.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules.setdefault(pkg.__name__, pkg)
    sys.modules.setdefault(utils.__name__, utils)
    path = Path(spec.submodule_search_locations[0]) / "sampling.py"
    s = importlib.util.spec_from_file_location("_kdiffusion_isolated.sampling", path)
    mod = importlib.util.module_from_spec(s)
    sys.modules[s.name] = mod
    s.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def K():
    return kdiffusion_oracle()


def kdiffusion_oracle():
    """k-diffusion's sampling module; skipped where it is not installed, unless
    ODESOLVE_REQUIRE_KDIFFUSION=1 (CI), where a missing oracle is a failure."""
    required = os.environ.get("ODESOLVE_REQUIRE_KDIFFUSION", "0") == "1"
    try:
        mod = _load_sampling_module()
    except ImportError as err:
        if required:
            pytest.fail(f"k-diffusion's sampling.py could not be imported: {err}")
        pytest.skip(f"k-diffusion's sampling.py needs {err.name}")
    if mod is None:
        if required:
            pytest.fail("ODESOLVE_REQUIRE_KDIFFUSION=1 but k-diffusion is not installed")
        pytest.skip("k-diffusion is not installed")
    return mod


def test_callback_equals_k_diffusions(K):
    """k-diffusion's own callback for the same sampler: same x, sigma and denoised at every step."""
    x = _x(6)
    for kname, ours in [("sample_euler", "euler"), ("sample_heun", "heun"), ("sample_dpmpp_2m", "dpmpp-2m")]:
        theirs, got = [], []
        K.__dict__[kname](denoiser, x, SIGMAS, disable=True, callback=theirs.append)
        getattr(kd, "sample_" + ours.replace("-", "_"))(denoiser, x, SIGMAS, callback=got.append)
        assert [c["i"] for c in got] == [c["i"] for c in theirs], kname
        for a, b in zip(got, theirs):
            assert rel(a["x"], b["x"]) <= 1e-12, (kname, a["i"])
            assert rel(a["denoised"], b["denoised"]) <= 1e-12, (kname, a["i"])
            assert float(a["sigma"]) == pytest.approx(float(b["sigma"]), rel=1e-12)


@pytest.mark.parametrize(
    "kname, ours, kwargs",
    [
        ("sample_dpmpp_2s_ancestral", "dpmpp-2s", {"eta": 0.0}),
        ("sample_dpmpp_sde", "dpmpp-2s", {"eta": 0.0}),
        ("sample_dpmpp_2m_sde", "dpmpp-2m", {"eta": 0.0}),
        ("sample_dpmpp_2m_sde", "dpmpp-2m-taylor", {"eta": 0.0, "solver_type": "heun"}),
        ("sample_dpmpp_3m_sde", "dpmpp-3m-taylor", {"eta": 0.0}),
    ],
)
def test_k_diffusion_samplers_at_eta_0_are_the_deterministic_tables(K, kname, ours, kwargs):
    x = _x(2)
    theirs = getattr(K, kname)(denoiser, x, SIGMAS, disable=True, **kwargs)
    got = kd.sampler(ours)(denoiser, x, SIGMAS)
    assert rel(got, theirs) <= 1e-12


def test_k_diffusion_3m_differs_from_dpmpp_3m_only_in_the_warm_up_step(K):
    x = _x(3)
    theirs = K.sample_dpmpp_3m_sde(denoiser, x, SIGMAS, disable=True, eta=0.0)
    diff = rel(kd.sample_dpmpp_3m(denoiser, x, SIGMAS), theirs)
    assert 1e-8 < diff < 1e-2  # the second step: midpoint (diffusers) vs Taylor (k-diffusion) weight


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_k_diffusion_lms(K, order):
    """k-diffusion's LMS (Lagrange in sigma, scipy quadrature) is lms-N, including its full-order step to 0."""
    x = _x(4)
    theirs = K.sample_lms(denoiser, x, SIGMAS, disable=True, order=order)
    got = getattr(kd, f"sample_lms_{order}")(denoiser, x, SIGMAS)
    assert rel(got, theirs) <= 1e-9


@pytest.mark.parametrize("name", ["ddpm", "dpmpp-2m-sde"])
def test_stochastic_functions_take_per_sample_noise(name):
    """The generated function of a stochastic table runs with seeds= (one per sample) and gives
    ods.sample's result for the same seeds; without any noise it refuses, naming the options."""
    x = _x(3)[:3]
    f = kd.sampler(name)
    out = f(denoiser, x, SIGMAS, seeds=[5, 6, 7])
    grid = ods.grids.from_sigmas(ods.paths.EDM(), SIGMAS.double())
    ref = ods.sample(
        ods.Model(lambda xx, t: denoiser(xx, t), ods.paths.EDM(), "x0"), x, grid, method=name, seeds=[5, 6, 7]
    )
    assert torch.isfinite(out).all() and rel(out, ref) <= 1e-12
    assert rel(f(denoiser, x[1:2], SIGMAS, seeds=[6]), out[1:2]) <= 1e-12  # the sample, not the batch
    with pytest.raises(ValueError, match="seeds="):
        f(denoiser, x, SIGMAS)
