"""The ``odesolve`` command: wiring (console script, ``python -m odesolve``) and every bad argument
refused before any work, with exit status 2 and a message naming the option."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from odesolve import cli, commands
from odesolve.commands import _checks


def run(argv, capsys):
    status = commands.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_console_script_entry_and_subcommands_are_one_parser():
    assert cli.main is commands.main
    choices = commands.parser()._subparsers._group_actions[0].choices
    assert set(choices) == set(commands.SUBCOMMANDS) == {"report", "sample", "methods", "fit"}


def test_python_dash_m_odesolve_runs_the_command():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run(
        [sys.executable, "-m", "odesolve", "methods"], capture_output=True, text=True, env=env, check=False, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    import odesolve

    assert [line.split()[0] for line in lines] == odesolve.methods.names()


@pytest.mark.parametrize(
    "argv, option",
    [
        (["sample", "--n", "0"], "--n"),
        (["sample", "--samples", "0"], "--samples"),
        (["sample", "--n", "-3"], "--n"),
        (["sample", "--batch", "0"], "--batch"),
        (["sample", "--nfe", "0"], "--nfe"),
        (["sample", "--nfe", "-1"], "--nfe"),
        (["sample", "--seed", "-1"], "--seed"),
        (["sample", "--seed", str(2**64)], "--seed"),
        (["sample", "--device", "nonsense"], "--device"),
        (["sample", "--device", "cuda:97"], "--device"),
        (["sample", "--device", "meta"], "--device"),  # holds no data: nothing could be copied back
        (["sample", "--fd", "--n", "128"], "--fd"),
        (["sample", "--fd", "--n", "8"], "--fd"),
        (["report", "--nfe", "0"], "--nfe"),
        (["report", "--problem", "nope"], "--problem"),
        (["report", "dpmpp-9m"], "dpmpp-9m"),
    ],
)
def test_bad_arguments_are_refused_at_once_naming_the_option(argv, option, capsys, tmp_path):
    t0 = time.perf_counter()
    status, out, err = run(argv + ["--out", str(tmp_path / "o")], capsys)
    assert status == 2 and option in err and out == ""
    assert time.perf_counter() - t0 < 10  # refused before any sampling or analysis (each takes far longer)
    assert not (tmp_path / "o" / "samples.npz").exists()


@pytest.mark.parametrize("command", ["sample", "report"])
def test_out_that_is_an_existing_file_is_refused_before_work(command, capsys, tmp_path):
    f = tmp_path / "taken"
    f.write_text("keep me")
    status, _, err = run([command, "--out", str(f)], capsys)
    assert status == 2 and "--out" in err and "existing file" in err
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("command", ["sample", "report"])
def test_out_below_a_file_is_refused_before_work(command, capsys, tmp_path):
    """A folder that cannot be created (its parent is a file): refused even for root."""
    (tmp_path / "file").write_text("")
    status, _, err = run([command, "--out", str(tmp_path / "file" / "sub")], capsys)
    assert status == 2 and "--out" in err and "not a writable folder" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
@pytest.mark.parametrize("command", ["sample", "report"])
def test_unwritable_out_is_refused_before_work(command, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        status, _, err = run([command, "--out", str(locked / "sub")], capsys)
        assert status == 2 and "--out" in err and "not a writable folder" in err
        status, _, err = run([command, "--out", str(locked)], capsys)
        assert status == 2 and "not a writable folder" in err
    finally:
        locked.chmod(0o700)


def test_checks_accept_the_edges_of_their_ranges(tmp_path):
    assert _checks.seed(0) == 0 and _checks.seed(2**64 - 1) == 2**64 - 1
    assert _checks.positive("--n", 1) == 1
    with pytest.raises(ValueError, match="--n"):
        _checks.positive("--n", True)
    assert _checks.device("cpu").type == "cpu"
    assert _checks.output_folder("--out", tmp_path / "a" / "b").is_dir()


def test_fd_with_enough_samples_runs(capsys, tmp_path):
    """129 samples (one more than the 128 features) give a finite Frechet distance."""
    status, out, err = run(
        ["sample", "--n", "129", "--nfe", "2", "--method", "ddim", "--fd", "--no-progress", "--out", str(tmp_path)],
        capsys,
    )
    assert status == 0, err
    fd = float(out.split("Frechet distance of classifier features to the data")[1])
    assert 0 < fd < 1e4


def test_samples_is_the_long_name_of_n(capsys, tmp_path):
    """``--samples`` (the name that survives torchrun's parser) and ``--n`` are one option."""
    common = ["sample", "--nfe", "2", "--method", "ddim", "--batch", "4", "--no-progress"]
    assert run([*common, "--samples", "6", "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run([*common, "--n", "6", "--out", str(tmp_path / "b")], capsys)[0] == 0
    a, b = ((tmp_path / d / "samples.npz").read_bytes() for d in "ab")
    assert a == b
    assert np.load(tmp_path / "a" / "samples.npz")["samples"].shape == (6, 1, 8, 8)
    status, _, err = run(["sample", "--samples", "0", "--out", str(tmp_path / "c")], capsys)
    assert status == 2 and "--samples" in err


def _saved_solver(tmp_path, path=None, steps=3):
    import odesolve as ods
    from odesolve import learn
    from odesolve.toy import zoo

    path = path if path is not None else zoo.load("digits").path
    grid = ods.grids.discrete(path, steps)
    fitted = learn.Fitted(
        family="grid",
        grid=grid,
        method=ods.methods.get("dpmpp-2m"),
        nfe=steps,
        init="dpmpp-2m",
        parameters=0,
        train_loss=0.0,
        val_loss=0.0,
        init_val_loss=0.0,
        fit_seconds=0.0,
    )
    file = tmp_path / "solver.json"
    fitted.save(file)
    return file


def test_solver_file_samples_like_its_method_on_its_grid(capsys, tmp_path):
    file = _saved_solver(tmp_path)
    common = ["sample", "--n", "10", "--batch", "4", "--no-progress"]
    status, out, err = run([*common, "--solver", str(file), "--out", str(tmp_path / "s")], capsys)
    assert status == 0 and "NFE 3" in out, err
    status, _, err = run([*common, "--method", "dpmpp-2m", "--nfe", "3", "--out", str(tmp_path / "m")], capsys)
    assert status == 0, err
    s, m = (np.load(tmp_path / d / "samples.npz") for d in "sm")
    assert np.array_equal(s["samples"], m["samples"]) and np.array_equal(s["times"], m["times"])


@pytest.mark.parametrize("extra", [["--method", "ddim"], ["--nfe", "4"], ["--grid", "karras"]])
def test_solver_with_method_options_is_refused(extra, capsys, tmp_path):
    file = _saved_solver(tmp_path)
    status, out, err = run(["sample", "--solver", str(file), *extra, "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "--solver" in err and extra[0] in err and out == ""


def test_solver_that_is_not_a_solver_or_for_another_path_is_refused(capsys, tmp_path):
    from odesolve.paths import VPDiscrete

    status, _, err = run(["sample", "--solver", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "--solver" in err and "not a file" in err
    (tmp_path / "junk.json").write_text('{"format": "something else"}')
    status, _, err = run(["sample", "--solver", str(tmp_path / "junk.json"), "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "--solver" in err and "not a fitted solver" in err
    other = _saved_solver(tmp_path, path=VPDiscrete.from_schedule("scaled_linear", 1000))
    status, _, err = run(["sample", "--solver", str(other), "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and "--solver" in err and "fitted on the path" in err
