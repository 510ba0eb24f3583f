import dataclasses

import pytest
import torch
from exact import GAUSS, DiagonalGaussian

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P

EDM = P.EDM()


def _setup(n=8, batch=6, dtype=torch.float64):
    grid = G.karras(EDM, n, sigma_min=0.02, sigma_max=5.0, to_zero=False)
    x = torch.randn(batch, 4, generator=torch.Generator().manual_seed(1), dtype=dtype) * 5.0
    return grid, x, GAUSS.model(EDM)


def test_trajectory_and_callback_follow_the_grid():
    grid, x, model = _setup()
    seen = []
    out, traj = ods.sample(model, x, grid, method="dpmpp-2m", return_trajectory=True, callback=seen.append)
    assert traj.shape == (grid.steps + 1, *x.shape) and torch.equal(traj[-1], out) and torch.equal(traj[0], x)
    assert [d["step"] for d in seen] == list(range(grid.steps))
    assert all(torch.equal(d["t"], grid.t[i + 1]) for i, d in enumerate(seen))


def test_callback_denoised_is_the_data_prediction_for_noise_form_methods():
    grid, x, model = _setup()
    seen = []
    ods.sample(model, x, grid, method="deis-2", callback=seen.append)
    # the last call of step 0 is at grid.t[0] on x itself
    assert torch.allclose(seen[0]["denoised"], model.x0(x, grid.t[0]), rtol=1e-12, atol=1e-12)


def test_same_input_same_output_bit_for_bit():
    grid, x, model = _setup()
    a = ods.sample(model, x, grid, method="unipc-bh2-3")
    b = ods.sample(model, x.clone(), grid, method="unipc-bh2-3")
    assert torch.equal(a, b)


def test_float32_state_is_within_float32_error_of_float64():
    grid, x, model = _setup()
    ref = ods.sample(model, x, grid, method="dpmpp-3m")
    x32 = x.float()
    model32 = ods.Model(lambda x, t: GAUSS.x0(EDM)(x, t).float(), EDM, "x0")
    out = ods.sample(model32, x32, grid, method="dpmpp-3m")
    assert out.dtype == torch.float32
    assert float((out.double() - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_fp16_model_with_fp32_state_stays_within_fp16_noise():
    grid, x, _ = _setup(n=10)
    f = GAUSS.x0(EDM)
    ref = ods.sample(ods.Model(f, EDM, "x0"), x, grid, method="dpmpp-2m")
    calls = []

    def half(x, t):
        calls.append(x.dtype)
        return f(x, t).half()  # the network computes in fp16 and returns fp16

    out = ods.sample(ods.Model(half, EDM, "x0", dtype=torch.float16), x.float(), grid, method="dpmpp-2m")
    assert set(calls) == {torch.float16} and out.dtype == torch.float32
    # each of the 10 outputs carries a relative rounding error <= 2^-11 of |x0| <= ~3; the state
    # is a contraction of them, so the end error stays at the level of one fp16 rounding of |x0|
    err = float((out.double() - ref).abs().max())
    assert err < 4 * 2.0**-11 * 3.0, err
    assert err > 0  # and fp16 was really used


def test_nan_from_the_model_names_the_step():
    grid, x, _ = _setup()
    bad = ods.Model(lambda x, t: torch.where(t[:, None] < 1.0, torch.nan, GAUSS.x0(EDM)(x, t)), EDM, "x0")
    with pytest.raises(ods.NonFiniteError, match=r"call \d+ \(grid step \d+, t = 0\.\d+"):
        ods.sample(bad, x, grid, method="ddim")


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(method="dpmpp-2"), ValueError, "did you mean"),
        (dict(method="heun", lower_order_final=True), TypeError, "options"),
        (dict(x=torch.ones(3, 4, dtype=torch.int64)), TypeError, "floating"),
        (dict(x=torch.full((3, 4), torch.nan)), ValueError, "finite"),
        (dict(x="noise"), TypeError, r"x must be a torch.Tensor|parameter 'x'"),
        (dict(model=lambda x, t: x), TypeError, r"odesolve.Model|parameter 'model'"),
        (dict(model=ods.Model(lambda x, t: x, P.VP.linear(), "eps")), ValueError, "model.path"),
        (dict(grid=[80.0, 1.0]), TypeError, r"grid must be|parameter 'grid'"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(kwargs, err, match):
    grid, x, model = _setup()
    args = dict(model=model, x=x, grid=grid, method="dpmpp-2m") | kwargs
    with pytest.raises(err, match=match):
        ods.sample(args.pop("model"), args.pop("x"), args.pop("grid"), **args)


def test_noise_inputs_need_a_generator_and_are_reproducible():
    grid, x, model = _setup()
    plan = ods.methods.get("ddim").compile(EDM, grid)
    noisy = dataclasses.replace(plan, update_noise=torch.full_like(plan.update_noise, 0.1))
    with pytest.raises(ValueError, match="generator"):
        ods.execute(noisy, model, x)
    a = ods.execute(noisy, model, x, generator=torch.Generator().manual_seed(3))
    b = ods.execute(noisy, model, x, generator=torch.Generator().manual_seed(3))
    c = ods.execute(plan, model, x)
    assert torch.equal(a, b) and float((a - c).abs().max()) > 1e-3


def test_gradients_flow_from_the_error_to_the_grid():
    """Compile is torch float64 end to end: d error / d grid matches central differences."""
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    model = GAUSS.model(EDM)
    s0 = torch.tensor([5.0, 2.0, 0.7, 0.2, 0.02], dtype=torch.float64)
    target = GAUSS.flow(EDM, x, 5.0, 0.02)

    def loss(s):
        grid = G.from_sigmas(EDM, s)
        return ((ods.sample(model, x, grid, method="dpmpp-3m") - target) ** 2).sum()

    s = s0.clone().requires_grad_(True)
    loss(s).backward()
    e = 1e-6
    for i in (1, 2, 3):
        d = torch.zeros_like(s0)
        d[i] = e
        fd = (loss(s0 + d) - loss(s0 - d)) / (2 * e)
        assert float(s.grad[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-10)


def test_plan_table_lists_every_call():
    grid, _, _ = _setup(n=4)
    plan = ods.methods.get("dpm-solver-3").compile(EDM, grid)
    text = plan.table()
    assert plan.calls == 12 and len(text.splitlines()) == 2 + plan.calls and "buffer holds eps" in text


def test_plan_with_nan_coefficients_is_refused():
    grid, _, _ = _setup(n=4)
    plan = ods.methods.get("ddim").compile(EDM, grid)
    with pytest.raises(ValueError, match="update_hist"):
        dataclasses.replace(plan, update_hist=plan.update_hist * torch.nan)


def test_point_mass_is_integrated_exactly_by_every_x0_prediction_method():
    """x0 constant: the x0-prediction variation-of-constants formula is exact (Lu et al. 2022b)."""
    point = DiagonalGaussian([0.3, -0.7, 1.1, 0.0], [0.0, 0.0, 0.0, 0.0])
    path = P.VP.linear()
    grid = G.uniform_lambda(path, 6, 0.9, 1e-3)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = point.flow(path, x, grid.t[0], grid.t[-1])
    for name in ods.methods.names():
        if ods.methods.get(name).prediction == "x0" and not ods.methods.get(name).stochastic:
            out = ods.sample(point.model(path), x, grid, method=name)
            assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12), name


def test_sampler_runs_a_prepared_plan_many_times():
    grid, x, model = _setup()
    sampler = ods.Sampler(model, grid, "unipc-bh2-3", shape=x.shape, dtype=x.dtype)
    for scale in (1.0, 0.5):
        assert torch.equal(sampler(x * scale), ods.sample(model, x * scale, grid, method="unipc-bh2-3"))
    with pytest.raises(ValueError, match="x must have shape"):
        sampler(x[:2])
    with pytest.raises(ValueError, match="capture"):
        ods.Sampler(model, grid, "ddim", shape=x.shape, capture="graph")
    with pytest.raises(ValueError, match="CUDA device"):
        ods.Sampler(model, grid, "ddim", shape=x.shape, capture="cuda-graph")


@pytest.fixture
def no_runtime_typechecks():
    """dynamo cannot trace beartype's checks; the test suite's runtime checking is paused."""
    import jaxtyping

    old = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", old)


@pytest.mark.slow
def test_sampler_compiled_with_torch_compile_matches_eager(no_runtime_typechecks):
    """torch.compile of the whole loop of a multistep plan with history (CPU here: a C++ compiler
    builds it). The captured loop runs the same program, without per-call checks: a non-finite
    result is re-run eagerly to name the call."""
    grid = G.karras(EDM, 6 if __import__("os").environ.get("ODESOLVE_FULL") != "1" else 10, sigma_max=5.0)
    model = ods.Model(lambda x, t: torch.tanh(x) / (1 + t[:, None]), EDM, "x0")
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    sampler = ods.Sampler(model, grid, "dpmpp-3m", shape=x.shape, capture="compile")
    assert sampler.plan.window == 3 and sampler.plan.calls == grid.steps
    eager = ods.sample(model, x, grid, method="dpmpp-3m")
    assert torch.allclose(sampler(x), eager, rtol=1e-6, atol=1e-6)
    assert torch.allclose(sampler(2 * x), ods.sample(model, 2 * x, grid, method="dpmpp-3m"), rtol=1e-6, atol=1e-6)
    bad = ods.Sampler(
        ods.Model(lambda x, t: x / (t[:, None] - float(grid.t[3])), EDM, "x0"),
        grid,
        "dpmpp-3m",
        shape=x.shape,
        capture="compile",
    )
    with pytest.raises(ods.NonFiniteError, match="call 3"):
        bad(x)
