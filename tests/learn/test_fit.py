"""odesolve.learn.fit: the fitted samplers beat their initial method on held-out noise, report
what they claim, save and load exactly, and refuse bad input."""

import json

import pytest
import torch

import odesolve as ods
from odesolve import learn
from odesolve.methods.fitted import FittedPlan
from odesolve.toy.reference import solve


def _rmse(a, b):
    return float(((a - b) ** 2).mean().sqrt())


@pytest.mark.parametrize("family, factor", [("grid", 2), ("coefficients", 3)])
def test_fit_lowers_the_held_out_loss(fitted, family, factor):
    f = fitted[family]
    assert f.val_loss < f.init_val_loss / factor, f
    assert len(f.history) >= 1 and min(f.history) == pytest.approx(f.val_loss, rel=1e-12)  # select: early stopping
    assert 0 < f.parameters <= 200 and f.fit_seconds > 0 and f.nfe == 4


@pytest.mark.parametrize("family", ["grid", "coefficients"])
def test_reported_loss_matches_a_rerun_of_sample(gmm, noise, fitted, family):
    prob, model = gmm
    f = fitted[family]
    xv = noise[1]
    y = solve(model, xv, f.grid.t[0], f.grid.t[-1], rtol=1e-10, atol=1e-10)
    assert _rmse(ods.sample(model, xv, f.grid, method=f.method), y) == pytest.approx(f.val_loss, rel=1e-9)
    plan = f.method.compile(prob.path, f.grid)
    assert plan.calls == 4
    assert float(f.grid.t[0]) == 80.0 and float(f.grid.t[-1]) == 0.0  # the ends are kept
    assert bool((f.grid.t[1:] < f.grid.t[:-1]).all())


def test_parameter_counts(fitted):
    # Karras to sigma = 0 with 4 steps: 3 finite interior/end points move (the last finite one is free);
    # dpmpp-2m's rows, window 3: update rows 0..3 have 1, 2, 3, 3 outputs, input rows 0, 1, 2, 2 (each - 1)
    assert fitted["grid"].parameters == 3
    assert fitted["coefficients"].parameters == 3 + (0 + 1 + 2 + 2) + (0 + 0 + 1 + 1)
    assert fitted["grid"].method is ods.methods.get("dpmpp-2m")
    assert isinstance(fitted["coefficients"].method, FittedPlan)
    assert fitted["coefficients"].method.name not in ods.methods.names()


@pytest.mark.parametrize("family", ["grid", "coefficients"])
def test_save_load_round_trip_is_bit_identical(tmp_path, gmm, noise, fitted, family):
    prob, model = gmm
    f = fitted[family]
    file = tmp_path / "solver.json"
    f.save(file)
    g = learn.load(file)
    assert torch.equal(g.grid.t, f.grid.t)
    x = prob.prior(50, torch.Generator().manual_seed(99))
    assert torch.equal(ods.sample(model, x, g.grid, method=g.method), ods.sample(model, x, f.grid, method=f.method))
    for name in (
        "family",
        "init",
        "nfe",
        "parameters",
        "train_loss",
        "val_loss",
        "init_val_loss",
        "fit_seconds",
        "history",
        "settings",
        "model",
    ):
        assert getattr(g, name) == getattr(f, name), name
    doc = json.loads(file.read_text())
    assert doc["grid"] == f.grid.t.tolist()  # exact float64 (repr round trip)
    assert doc["settings"]["train_size"] == 64 and doc["settings"]["val_size"] == 32
    if family == "coefficients":
        assert g.method == f.method and hash(g.method) == hash(f.method)


def test_default_validation_split_is_disjoint(gmm):
    prob, model = gmm
    x = prob.prior(40, torch.Generator().manual_seed(5))
    seen = []
    f = learn.fit(
        model,
        x,
        nfe=3,
        family="grid",
        iterations=3,
        epochs=1,
        teacher=lambda z: (seen.append(z.clone()), solve(model, z, 80.0, 0.0, rtol=1e-10, atol=1e-10))[1],
    )
    assert f.settings["train_size"] == 30 and f.settings["val_size"] == 10
    assert len(seen) == 1 and torch.equal(seen[0], x.to(torch.float64))  # the teacher runs once, on both parts


def test_teacher_method_agrees_with_the_reference(gmm):
    prob, model = gmm
    x = prob.prior(32, torch.Generator().manual_seed(6))
    grid = ods.grids.karras(prob.path, 4)
    ref = learn.teacher_solve(model, x, grid)
    fine = learn.teacher_solve(model, x, grid, "dpmpp-3m", teacher_steps=400)
    assert _rmse(fine, ref) < 1e-3
    refined = learn.refine(grid, 3)
    assert refined.steps == 3 * 3 + 1  # the step to sigma = 0 stays one step
    assert set(grid.t.tolist()) <= set(refined.t.tolist())


@pytest.mark.parametrize("nfe", [0, -1, 2.5, True])
def test_refuses_bad_nfe(gmm, noise, nfe):
    _, model = gmm
    with pytest.raises((ValueError, TypeError), match="nfe"):
        learn.fit(model, noise[0], nfe=nfe)


def test_refuses_bad_input(gmm, noise):
    prob, model = gmm
    x = noise[0]
    with pytest.raises(ValueError, match="family"):
        learn.fit(model, x, family="bespoke")
    with pytest.raises(ValueError, match="x_T"):
        learn.fit(model, x[:, 0])
    with pytest.raises(ValueError, match="x_T_val"):
        learn.fit(model, x, x_T_val=torch.zeros(8, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="x_T"):
        learn.fit(model, x.tolist())
    with pytest.raises(ValueError, match="state shape"):
        learn.fit(model, torch.zeros(16, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="epochs"):
        learn.fit(model, x, family="coefficients", epochs=1)
    with pytest.raises(ValueError, match="nfe"):
        learn.fit(model, x, nfe=5, grid=ods.grids.karras(prob.path, 4))
    with pytest.raises(ValueError, match="nfe"):
        learn.fit(model, x, nfe=4, init="heun")  # Karras grids give heun 3, 5, 7, ... calls
    with pytest.raises(ValueError, match="not registered"):
        learn.fit(model, x, init="no-such-method")
    with pytest.raises(TypeError, match="model"):
        learn.fit(lambda x, t: x, x)
    with pytest.raises(TypeError, match="teacher"):
        learn.fit(model, x, teacher=3.0)
    with pytest.raises(ValueError, match="x_T"):
        learn.fit(model, x[:3])  # too few to hold out a validation quarter


def test_load_refuses_other_files(tmp_path):
    file = tmp_path / "x.json"
    file.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a fitted sampler"):
        learn.load(file)


def test_progress_and_callback_report_every_epoch(gmm, capsys):
    prob, model = gmm
    x = prob.prior(24, torch.Generator().manual_seed(7))
    seen = []
    f = learn.fit(
        model,
        x,
        nfe=3,
        family="coefficients",
        iterations=3,
        epochs=3,
        restarts=1,
        progress=True,
        select=False,
        callback=lambda epoch, loss: seen.append((epoch, loss)),
    )
    assert [e for e, _ in seen] == [0, 1, 2] and tuple(v for _, v in seen) == f.history
    assert f.val_loss == pytest.approx(f.history[-1], rel=1e-12)  # without select: the last epoch
    assert "fit" in capsys.readouterr().err  # the progress bar
