"""`odesolve sample` end to end (odesolve.commands.sample.run), and its NFE -> steps rule."""

import argparse
import json

import numpy as np
import pytest

import odesolve as ods
from odesolve.commands import sample as sampling
from odesolve.toy import zoo


def args_for(tmp_path, **kw):
    parser = sampling.add_arguments(argparse.ArgumentParser())
    argv = ["--n", "12", "--batch", "5", "--nfe", "4", "--out", str(tmp_path), "--no-progress"]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_sample_writes_npz_and_png(tmp_path, capsys):
    assert sampling.run(args_for(tmp_path / "a", method="dpmpp-3m")) == 0
    with np.load(tmp_path / "a" / "samples.npz") as f:
        samples, times, meta = f["samples"], f["times"], json.loads(str(f["meta"]))
    assert samples.shape == (12, 1, 8, 8) and samples.dtype == np.float32 and np.isfinite(samples).all()
    assert meta["nfe"] == 4 and meta["method"] == "dpmpp-3m" and meta["seed"] == 0
    assert times[0] == 999 and times[-1] == -1 and len(times) == 5  # trailing grid, 4 steps
    png = (tmp_path / "a" / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert "NFE 4" in capsys.readouterr().out


def test_sample_is_deterministic_given_the_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert sampling.run(args_for(tmp_path / name, seed=seed)) == 0
    a, b, c = (np.load(tmp_path / name / "samples.npz")["samples"] for name in "abc")
    assert np.array_equal(a, b) and not np.allclose(a, c)


@pytest.mark.parametrize("method", ["ddpm", "dpmpp-2m-sde"])
def test_stochastic_methods_sample_with_per_sample_noise(method, tmp_path):
    """A sample's noise is keyed by its index: the same samples whatever the batch size (up to the
    network's own float32 batch arithmetic), other samples for another seed, and not the ODE's."""
    runs = {"b5": dict(batch=5), "b12": dict(batch=12), "seed1": dict(batch=5, seed=1)}
    for name, kw in runs.items():
        assert sampling.run(args_for(tmp_path / name, method=method, **kw)) == 0
    b5, b12, s1 = (np.load(tmp_path / name / "samples.npz")["samples"] for name in runs)
    assert np.isfinite(b5).all() and np.allclose(b5, b12, rtol=0, atol=5e-5)
    assert not np.allclose(b5, s1, atol=1e-2)
    assert sampling.run(args_for(tmp_path / "ode", method="ddim")) == 0
    assert not np.allclose(b5, np.load(tmp_path / "ode" / "samples.npz")["samples"], atol=1e-2)


def test_sample_reports_bad_arguments(tmp_path, capsys):
    assert sampling.run(args_for(tmp_path, model="cifar")) == 2
    assert "'cifar'" in capsys.readouterr().err
    assert sampling.run(args_for(tmp_path, method="dpmpp-9m")) == 2
    assert "dpmpp-9m" in capsys.readouterr().err
    assert sampling.run(args_for(tmp_path, method="dpm-solver-3", nfe=0)) == 2


@pytest.mark.parametrize(
    "method, nfe, steps, calls",
    [
        ("dpmpp-3m", 10, 10, 10),  # multistep: one call a step
        ("dpm-solver-3", 10, 4, 10),  # 3 + 3 + 3 + 1: the step to sigma = 0 is one DDIM call
        ("dpm-solver-3", 5, 2, 4),  # 3 + 1
        ("heun", 10, 5, 9),  # 2 * 4 + 1; 6 steps would need 11
        ("dpmpp-3m-corrected", 10, 9, 10),  # its DPM-Solver++(2S) warm-up step costs one extra call
        ("ddim", 1, 1, 1),
    ],
)
def test_steps_for_nfe_fills_the_budget(method, nfe, steps, calls):
    path = zoo.load("digits").path
    assert sampling.steps_for_nfe(path, method, nfe) == steps
    plan = ods.methods.get(method).compile(path, sampling.make_grid(path, steps))
    assert plan.calls == calls


@pytest.mark.parametrize("kind", sampling.GRIDS)
def test_grids_run_from_the_noise_end_to_sigma_zero(kind):
    path = zoo.load("digits").path
    g = sampling.make_grid(path, 7, kind)
    assert g.steps == 7 and float(g.t[0]) == pytest.approx(999) and float(g.t[-1]) == -1
