"""Local truncation errors and their accumulation; the report end to end (Python and command line)."""

import argparse
import math
from pathlib import Path

import numpy as np
import pytest

import odesolve as ods
from odesolve.analysis import local_errors, run_report
from odesolve.commands import report as report_mod


def test_local_errors_orders_and_the_fan(mixture_problem):
    coarse = local_errors("ddim", mixture_problem, steps=8, fan=True)
    fine = local_errors("ddim", mixture_problem, steps=16, fan=False)
    # DDIM: local error O(h^2): halving the steps divides the largest local error by about 4
    assert 3.0 < coarse.local.max() / fine.local.max() < 5.5
    # Lady Windermere's fan: the carried contributions add up to the global error exactly
    assert coarse.fan_residual <= 1e-8 * coarse.global_error
    assert coarse.fan is not None and len(coarse.fan) == 8
    # a multistep method: the first-order first step has the largest local error
    lte = local_errors("dpmpp-2m-taylor", mixture_problem, steps=12, fan=False)
    assert lte.local[0] > 3 * np.median(lte.local[1:])
    assert "global error" in lte.table()


def test_report_end_to_end(tmp_path):
    res = run_report(["ddim", "dpmpp-2m"], problem="gmm2d", nfe=(5, 10), out=tmp_path, quick=True, progress=False)
    assert [r.method for r in res.rows] == ["ddim", "dpmpp-2m"]
    assert res.ok and all(r.derived == r.declared for r in res.rows)
    assert res.rows[0].stability == pytest.approx(-2 / math.expm1(0.5), rel=1e-8)
    assert all(np.isfinite(list(r.errors.values())).all() for r in res.rows)
    for name in (
        "convergence.png",
        "errors.png",
        "stability.png",
        "guidance.png",
        "local_errors.png",
        "trajectories.png",
    ):
        f = tmp_path / name
        assert f.exists() and f.stat().st_size > 1000, name
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = Path(res.markdown).read_text()
    assert "| ddim |" in md and "![stability.png](stability.png)" in md
    assert "ddim" in res.table()


def test_report_command_line(tmp_path, capsys):
    parser = report_mod.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["ddim", "--quick", "--nfe", "6", "--out", str(tmp_path), "--no-figures", "--no-progress"])
    assert report_mod.run(args) == 0
    out = capsys.readouterr().out
    assert "ddim" in out and "err@6" in out and (tmp_path / "report.md").exists()
    args = parser.parse_args(["ddim", "--problem", "no-such-problem", "--quick", "--out", str(tmp_path)])
    assert report_mod.run(args) == 2
    assert "--problem must be one of" in capsys.readouterr().err


def test_run_report_refuses_a_file_as_out_before_any_work(tmp_path):
    """The folder is checked first: a file given as ``out`` fails at once, and is left untouched."""
    f = tmp_path / "report.md"
    f.write_text("mine")
    with pytest.raises(ValueError, match="out must be a folder"):
        run_report(["ddim"], out=f, quick=True, progress=False)
    assert f.read_text() == "mine"


def test_report_refuses_stochastic_methods_and_lists_them_apart(tmp_path):
    noisy = [n for n in ods.methods.names() if ods.methods.get(n).stochastic]
    assert noisy  # the registry has stochastic tables
    with pytest.raises(ValueError, match=r"methods: \['ddpm'\] inject noise"):
        run_report(["ddim", "ddpm"], problem="gmm2d", nfe=(5,), out=None, quick=True, progress=False)
    res = run_report(["ddim"], problem="gmm2d", nfe=(5,), out=tmp_path, quick=True, progress=False, figures=False)
    text = (tmp_path / "report.md").read_text()
    assert [r.method for r in res.rows] == ["ddim"]
    assert "Stochastic methods are not in this table" in text and all(f"`{n}`" in text for n in noisy)
