"""The fit's options: GITS's dynamic program, LD3's soft teacher forcing, the l2 loss, moved call
times, and the ``odesolve fit`` command (its file loads, and its reported loss reruns)."""

import itertools
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import learn
from odesolve.analysis import step_exactness
from odesolve.commands import main
from odesolve.toy import problems
from odesolve.toy.reference import solve


def _rmse(a, b):
    return float(((a - b) ** 2).mean().sqrt())


@settings(max_examples=40, deadline=None)
@given(M=st.integers(2, 7), data=st.data())
def test_dp_path_is_the_cheapest_path(M, data):
    steps = data.draw(st.integers(1, M))
    seed = data.draw(st.integers(0, 2**31 - 1))
    cost = torch.rand(M + 1, M + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    idx, total = learn.dp_path(cost, steps)
    brute = min(
        (sum(float(cost[a, b]) for a, b in itertools.pairwise((0, *inner, M))), (0, *inner, M))
        for inner in itertools.combinations(range(1, M), steps - 1)
    )
    assert total == pytest.approx(brute[0], rel=1e-12)
    assert idx[0] == 0 and idx[-1] == M and len(idx) == steps + 1
    assert sum(float(cost[a, b]) for a, b in itertools.pairwise(idx)) == pytest.approx(total, rel=1e-12)


def test_dp_path_refuses_bad_input():
    with pytest.raises(ValueError, match="steps"):
        learn.dp_path(torch.ones(4, 4), 4)
    with pytest.raises(ValueError, match="square"):
        learn.dp_path(torch.ones(3, 4), 1)
    with pytest.raises(ValueError, match="finite"):
        learn.dp_path(torch.full((4, 4), math.inf), 2)


def test_dp_grid_beats_karras_for_ddim(gmm, noise):
    prob, model = gmm
    x, xv = noise
    grid = ods.grids.karras(prob.path, 4)
    f = learn.fit(model, x[:32], nfe=4, family="grid", init="ddim", grid=grid, x_T_val=xv, search="dp", fine=3)
    fine = learn.refine(grid, 3).t
    assert all(bool((fine == v).any()) for v in f.grid.t)  # the grid is a path through the fine points
    assert f.grid.steps == 4 and f.parameters == 3 and f.settings["search"] == "dp"
    assert f.val_loss < 0.75 * f.init_val_loss, f  # measured: 0.48 of Karras's (DDIM, NFE 4)
    y = solve(model, xv, 80.0, 0.0, rtol=1e-10, atol=1e-10)
    assert _rmse(ods.sample(model, xv, f.grid, method="ddim"), y) == pytest.approx(f.val_loss, rel=1e-9)
    with pytest.raises(ValueError, match="callable"):
        learn.fit(model, x, nfe=4, init="ddim", grid=grid, x_T_val=xv, search="dp", teacher=lambda v: v)
    with pytest.raises(ValueError, match="family 'grid'"):
        learn.fit(model, x, nfe=4, family="coefficients", x_T_val=xv, search="dp")


def test_soft_teacher_forcing_and_l2_loss_lower_the_held_out_loss(gmm, noise):
    _, model = gmm
    x, xv = noise
    for kw in ({"soft_radius": 0.05}, {"loss": "l2"}):
        f = learn.fit(model, x, nfe=4, family="grid", x_T_val=xv, iterations=10, epochs=1, restarts=1, **kw)
        assert f.val_loss < f.init_val_loss / 2, (kw, f)
        assert f.settings[next(iter(kw))] == next(iter(kw.values()))
    bad_options = ({"soft_radius": 1.0}, {"soft_radius": -0.1}, {"loss": "l1"}, {"search": "random"}, {"fine": 0})
    for bad in (*bad_options, {"shift_times": True}):  # shift_times: family "grid" has no calls to move
        with pytest.raises(ValueError, match=next(iter(bad))):
            learn.fit(model, x, nfe=4, x_T_val=xv, **bad)


def test_shifted_call_times_keep_order_one(gmm, noise):
    prob, model = gmm
    x, xv = noise
    grid = ods.grids.karras(prob.path, 5, to_zero=False)
    f = learn.fit(
        model,
        x,
        nfe=5,
        family="coefficients",
        grid=grid,
        x_T_val=xv,
        iterations=8,
        epochs=2,
        shift_times=True,
        select=False,
    )
    plain = 4 + (0 + 1 + 2 + 2 + 2) + (0 + 0 + 1 + 1 + 1)  # the grid, then dpmpp-2m's rows at window 3
    assert f.parameters == plain + 5  # one time per call (all at finite lambda)
    plan = f.method.compile(prob.path, f.grid)
    assert not torch.allclose(plan.times, f.grid.t[:-1])  # the calls moved off the grid
    shift = plan.path.lambda_(plan.times) - f.grid.lambdas[:-1]
    assert bool((shift.abs() <= 1 + 1e-12).all())
    assert step_exactness(plan, max_degree=1).bound() >= 1
    assert f.val_loss < f.init_val_loss  # the last epoch, unselected (64 starts: 1.33 -> 0.96 measured)


def test_fit_command_writes_a_file_that_reruns(tmp_path, capsys):
    out = tmp_path / "solver.json"
    args = ["fit", "--model", "gmm2d", "--family", "grid", "--nfe", "4", "--n-train", "48", "--n-val", "24"]
    args += ["--epochs", "1", "--iterations", "6", "--seed", "5", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    assert "parameters" in capsys.readouterr().out
    f = learn.load(out)
    assert f.model == "gmm2d" and f.nfe == 4 and json.loads(out.read_text())["settings"]["train_size"] == 48
    assert f.plan().calls == 4 and f.plan().grid.path == f.grid.path  # what odesolve sample --solver runs
    prob = problems.get("gmm2d")
    model = prob.model("x0")
    xv = prob.prior(24, torch.Generator().manual_seed(6))  # the command's validation noise: seed + 1
    y = solve(model, xv, 80.0, 0.0, rtol=1e-10, atol=1e-10)
    assert _rmse(ods.sample(model, xv, f.grid, method=f.method), y) == pytest.approx(f.val_loss, rel=1e-9)
    assert f.val_loss < f.init_val_loss


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "--model"),
        (["--nfe", "0"], "--nfe"),
        (["--init", "no-such-method"], "--init"),
        (["--model", "gmm2d", "--n-val", "0"], "--n-val"),
    ],
)
def test_fit_command_refuses_bad_arguments(tmp_path, capsys, args, message):
    assert main(["fit", *args, "--out", str(tmp_path / "s.json")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
