"""The one interpreter (odesolve.execute.Program): its cache, its step-wise protocol, and the
checks every driver gets."""

import dataclasses

import pytest
import torch
from exact import GAUSS

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.execute import Program, StepEnd, plan_fingerprint, prepare

EDM = P.EDM()


def _setup(n=6, batch=5, dtype=torch.float64):
    grid = G.karras(EDM, n, sigma_min=0.02, sigma_max=5.0, to_zero=False)
    x = torch.randn(batch, 4, generator=torch.Generator().manual_seed(4), dtype=dtype) * 5.0
    return grid, x, GAUSS.model(EDM)


def _drive(program, model, x, **kw):
    """A hand-written driver: the protocol of the module docstring."""
    run = program.steps(x, **kw)
    k, X, t, end = next(run)
    calls, ends = [], []
    while k < program.calls:
        calls.append((k, X.clone(), t))
        k, X, t, end = run.send(model(X, t))
        if end is not None:
            ends.append(end)
    return X, calls, ends, run


# -- the cache ---------------------------------------------------------------------------------


def test_equal_plans_share_a_program_and_different_plans_never_do():
    grid, x, model = _setup()
    m = ods.methods.get("dpmpp-3m")
    a, b = m.compile(EDM, grid), m.compile(EDM, grid)  # equal content, distinct tensors (compile copies)
    assert a is not b and prepare(a, "x0", x.shape, x.dtype) is prepare(b, "x0", x.shape, x.dtype)
    changed = dataclasses.replace(a, update_hist=a.update_hist * (1 + 1e-12))
    noisy = dataclasses.replace(a, update_noise=torch.full_like(a.update_noise, 1e-3))
    other_grid = m.compile(EDM, G.karras(EDM, 6, sigma_min=0.02, sigma_max=5.000001, to_zero=False))
    programs = [prepare(p, "x0", x.shape, x.dtype) for p in (a, changed, noisy, other_grid)]
    assert len({id(p) for p in programs}) == 4
    assert len({plan_fingerprint(p) for p in (a, changed, noisy, other_grid)}) == 4
    # and they compute different things: the program of `changed` is not that of `a`
    assert not torch.equal(ods.execute(a, model, x), ods.execute(changed, model, x))
    # the key also separates what the program is prepared for
    keys = [
        prepare(a, pred, shape, dt)
        for pred, shape, dt in (
            ("x0", x.shape, x.dtype),
            ("eps", x.shape, x.dtype),
            ("x0", (4, 4), x.dtype),
            ("x0", x.shape, torch.float32),
        )
    ]
    assert len({id(p) for p in keys}) == 4


def test_repeated_sample_neither_compiles_nor_prepares_again(monkeypatch):
    grid, x, model = _setup()
    m = ods.methods.get("unipc-bh2-3")
    compiled, built = [], []
    compile_, init_ = type(m).compile, Program.__init__
    monkeypatch.setattr(type(m), "compile", lambda self, *a, **k: compiled.append(1) or compile_(self, *a, **k))
    monkeypatch.setattr(Program, "__init__", lambda self, *a, **k: built.append(1) or init_(self, *a, **k))
    first = ods.sample(model, x, grid, method=m, lower_order_final=True)
    assert len(compiled) == len(built) == 1
    same_grid = G.Grid(EDM, grid.t.clone())  # an equal grid, another object
    again = ods.sample(model, x * 1.0, same_grid, method="unipc-bh2-3", lower_order_final=True)
    assert torch.equal(first, again) and len(compiled) == len(built) == 1
    ods.sample(model, x, grid, method=m, lower_order_final=False)  # other options: another plan
    assert len(compiled) == len(built) == 2


def test_discrete_paths_with_the_same_repr_do_not_share_programs():
    """Two discrete schedules with equal reprs (T and terminal SNR): the cache keys on equality."""
    lin = P.VPDiscrete.from_schedule("linear")
    scaled = P.VPDiscrete.from_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert repr(lin) == repr(scaled) and lin != scaled
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = []
    for path in (lin, scaled):
        grid = G.from_times(path, [999.0, 700.0, 400.0, 100.0, 0.0])
        model = GAUSS.model(path)
        got = ods.sample(model, x, grid, method="dpmpp-2m")
        fresh = Program(ods.methods.get("dpmpp-2m").compile(path, grid), "x0", x.shape, x.dtype).run(model, x)
        assert torch.equal(got, fresh)
        outs.append(got)
    assert float((outs[0] - outs[1]).abs().max()) > 1e-3


# -- the step-wise protocol ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dpmpp-3m", "heun", "dpm-solver-3", "deis-2"])
def test_driving_the_steps_by_hand_is_execute(method):
    grid, x, model = _setup()
    plan = ods.methods.get(method).compile(EDM, grid)
    program = prepare(plan, model.prediction, x.shape, x.dtype)
    out, calls, ends, run = _drive(program, model, x, step_ends=True)
    assert torch.equal(out, ods.execute(plan, model, x))
    assert [k for k, *_ in calls] == list(range(plan.calls))
    assert all(torch.equal(t, plan.times[k].expand(x.shape[0])) for k, _, t in calls)
    _, traj = ods.execute(plan, model, x, return_trajectory=True)
    assert [e.step for e in ends] == list(range(grid.steps)) and all(isinstance(e, StepEnd) for e in ends)
    assert all(torch.equal(e.x, traj[e.step + 1]) and torch.equal(e.t, grid.t[e.step + 1]) for e in ends)
    with pytest.raises(StopIteration):
        run.send(None)


def test_step_ends_report_the_data_prediction_of_the_last_call():
    grid, x, model = _setup()
    plan = ods.methods.get("deis-2").compile(EDM, grid)  # an eps-buffer plan: denoised is converted
    _, calls, ends, _ = _drive(prepare(plan, model.prediction, x.shape, x.dtype), model, x, step_ends=True)
    last = {int(plan.step[k]): (X, t) for k, X, t in calls}
    for e in ends:
        X, t = last[e.step]
        assert torch.allclose(e.denoised, model.x0(X, t), rtol=1e-12, atol=1e-12)


def test_a_driver_may_replace_the_state_at_the_start_of_a_step():
    """What a diffusers pipeline does between steps (inpainting): with DDIM (no history) the rest of
    the run is the run from the replaced state on the remaining grid."""
    grid, x, model = _setup()
    plan = ods.methods.get("ddim").compile(EDM, grid)
    program = prepare(plan, model.prediction, x.shape, x.dtype)
    y = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    run = program.steps(x)
    k, X, t, _ = next(run)
    while k < program.calls:
        if k == 2:
            assert program.plain_input[k]
            X.copy_(y)
        k, X, t, _ = run.send(model(X, t))
    assert torch.allclose(X, ods.sample(model, y, G.Grid(EDM, grid.t[2:]), method="ddim"), rtol=1e-14, atol=1e-14)


def test_noise_is_drawn_from_the_generator_in_order():
    grid, x, model = _setup()
    plan = ods.methods.get("ddim").compile(EDM, grid)
    noisy = dataclasses.replace(plan, update_noise=torch.linspace(0.1, 0.6, plan.calls, dtype=torch.float64))
    out = ods.execute(noisy, model, x, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    xis = [torch.randn(x.numel(), generator=g, dtype=x.dtype).view(x.shape) for _ in range(plan.calls)]
    # the same rows by hand: DDIM's update, plus noise
    s = x.clone()
    for k in range(plan.calls):
        F = model(s, plan.times[k])
        s = plan.update_state[k] * s + plan.update_hist[k, 0] * F + noisy.update_noise[k] * xis[k]
    assert torch.allclose(out, s, rtol=1e-13, atol=1e-13)


# -- what every driver is protected from ------------------------------------------------------------


def test_callback_receives_copies_of_the_state():
    grid, x, model = _setup()
    kept = []
    _, traj = ods.sample(model, x, grid, method="dpmpp-2m", callback=kept.append, return_trajectory=True)
    assert [d["step"] for d in kept] == list(range(grid.steps))
    for d in kept:  # each dict still holds the state of its own step
        assert torch.equal(d["x"], traj[d["step"] + 1])
    kept[0]["x"].zero_()  # and writing into it changes nothing else
    assert not torch.equal(traj[1], kept[0]["x"])
    kept = []
    ods.sample(model, x, grid, method="dpmpp-2m", callback=kept.append)  # without a trajectory
    assert len({d["x"].data_ptr() for d in kept}) == len(kept)
    assert torch.equal(kept[-1]["x"], traj[-1]) and not torch.equal(kept[0]["x"], traj[-1])


def test_a_model_that_modifies_its_input_in_place_is_refused():
    grid, x, _ = _setup()
    f = GAUSS.x0(EDM)

    def scribbler(x, t):
        out = f(x, t)
        x.mul_(0.5)
        return out

    for method in ("dpmpp-2m", "heun"):  # the state itself, and a stage input
        with pytest.raises(ValueError, match=r"model Model\(scribbler.*modified its input in place at call 0"):
            ods.sample(ods.Model(scribbler, EDM, "x0"), x, grid, method=method)
    with torch.inference_mode():  # inference tensors have no version counter: runs unguarded
        out = ods.sample(GAUSS.model(EDM), x, grid, method="dpmpp-2m")
    assert torch.equal(out, ods.sample(GAUSS.model(EDM), x, grid, method="dpmpp-2m"))


@pytest.mark.parametrize(
    "method, options, match",
    [
        (None, {}, r"method must be a registered name.*NoneType"),
        (42, {}, r"method must be a registered name.*int 42"),
        ("dpmpp-3m", {"lower_order_final": [True]}, r"option lower_order_final=\[True\] must be hashable"),
    ],
)
def test_bad_method_or_option_types_are_named(method, options, match):
    grid, x, model = _setup()
    with pytest.raises(TypeError, match=match):
        ods.sample(model, x, grid, method=method, **options)
    with pytest.raises(TypeError, match=match):
        ods.Sampler(model, grid, method, shape=x.shape, dtype=x.dtype, **options)


@pytest.mark.parametrize(
    "fn, err, match",
    [
        (lambda x, t: x > 0, TypeError, r"dtype torch.bool at call 0 .*the state x is torch.float64"),
        (lambda x, t: x.to(torch.int32), TypeError, r"dtype torch.int32 at call 0"),
        (lambda x, t: x.to(torch.complex128), TypeError, r"dtype torch.complex128"),
        (lambda x, t: torch.empty(x.shape, device="meta"), ValueError, r"on device meta at call 0.*on device cpu"),
        (lambda x, t: "x0", TypeError, r"must return a torch.Tensor, got str"),
    ],
)
def test_bad_model_outputs_are_refused_naming_the_call(fn, err, match):
    grid, x, _ = _setup()
    plan = ods.methods.get("dpmpp-2m").compile(EDM, grid)
    program = prepare(plan, "x0", x.shape, x.dtype)
    run = program.steps(x)
    _, X, t, _ = next(run)
    with pytest.raises(err, match=match):
        run.send(fn(X, t))


def test_complex_state_is_refused():
    grid, x, model = _setup()
    with pytest.raises(TypeError, match="imaginary part"):
        ods.sample(model, x.to(torch.complex128), grid, method="dpmpp-2m")


def test_the_program_refuses_a_state_it_was_not_prepared_for():
    grid, x, _ = _setup()
    program = prepare(ods.methods.get("ddim").compile(EDM, grid), "x0", x.shape, x.dtype)
    for bad in (x[:2], x.float()):
        with pytest.raises(ValueError, match="prepared for"):
            program.steps(bad)
    with pytest.raises(ValueError, match="prediction must be one of"):
        prepare(program.plan, "noise", x.shape, x.dtype)


def test_an_eps_model_at_alpha_zero_is_refused_before_sampling():
    """Zero terminal SNR: x0 = (x - sigma eps) / alpha is undefined at alpha = 0, so an x0-prediction
    plan cannot use an eps model's first output; refused up front, not reported as a model NaN."""
    path = P.VP.discrete("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
    grid = G.discrete(path, 10, spacing="trailing")
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps_model = GAUSS.model(path, "eps")
    with pytest.raises(ValueError, match=r"prediction: at call 0 .*alpha = 0.*'eps' cannot be converted to 'x0'"):
        ods.sample(eps_model, x, grid, method="dpmpp-2m")
    v_model = GAUSS.model(path, "v")  # defined there: samples
    assert bool(torch.isfinite(ods.sample(v_model, x, grid, method="dpmpp-2m")).all())


def test_a_plan_is_run_only_on_its_own_grid():
    grid, x, model = _setup()
    plan = ods.methods.get("dpmpp-2m").compile(EDM, grid)
    lin, cos = P.VP.linear(), P.VP.cosine()
    vp_grid = G.uniform_time(lin, 5, 0.9, 0.1)
    with pytest.raises(ValueError, match="another grid"):  # the same times on another path
        ods.sample(GAUSS.model(cos), x, G.Grid(cos, vp_grid.t), method=ods.methods.get("ddim").compile(lin, vp_grid))
    with pytest.raises(ValueError, match="another grid"):
        ods.sample(model, x, G.karras(EDM, 7, sigma_min=0.02, sigma_max=5.0, to_zero=False), method=plan)
    assert torch.equal(ods.sample(model, x, G.Grid(EDM, grid.t.clone()), method=plan), ods.execute(plan, model, x))
