"""Smoke test of the benchmarks (benchmarks/README.md): the one-command run in its tiny mode writes its
outputs with finite numbers, and identical methods give identical samples across libraries.

Tolerances for "identical" (relative RMS difference of the samples, float64 state, same grid, same
start, same exact model):

- k-diffusion computes its coefficients in float64 like odesolve: 1e-12;
- diffusers builds its schedule and sigmas in float32 inside the schedulers: 1e-4 (measured up to
  ~4e-6 for HeunDiscrete, ~3e-7 for the DPM-Solver/UniPC schedulers).
"""

from __future__ import annotations

import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TOL = {"k-diffusion": 1e-12, "diffusers": 1e-4}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    import torch

    from benchmarks import run

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("bench")
    try:
        results = run.main(["--smoke", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out, results


def _finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def test_outputs_exist_and_are_finite(smoke):
    out, _ = smoke
    for name in ("results.json", "results.md", "accuracy.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    ods_rows = [r for r in data["accuracy"]["rows"] if r["lib"] == "odesolve"]
    assert ods_rows, "no odesolve accuracy rows"
    for r in ods_rows:
        assert r["error"] is None, r
        assert _finite(r["rmse"]) and r["rmse"] >= 0, r
        assert _finite(r["nll"]), r
        assert r["nfe"] <= r["nfe_budget"], r
    for ref in data["accuracy"]["references"]:
        assert all(_finite(e) and e < 1e-4 for e in ref["error_estimate_max"]), ref
    rows = data["overhead"]["rows"]
    assert rows
    for r in rows:
        assert _finite(r["per_step_s"]) and r["per_step_s"] > 0, r
        assert _finite(r["floor_per_step_s"]) and r["floor_per_step_s"] > 0, r
    if sys.platform.startswith("linux"):
        mem = [r for r in data["memory"]["rows"] if "peak_extra_tensors" in r]
        assert mem, data["memory"].get("errors")
        for r in mem:
            assert _finite(r["peak_extra_MB"]) and r["peak_extra_tensors"] > 0.5, r
    md = (out / "results.md").read_text()
    assert "| odesolve |" in md
    # every part names the commit it was measured at
    assert md.count("Measured at commit `") == len([p for p in ("accuracy", "overhead", "memory") if p in data])


def test_more_steps_reduce_the_error(smoke):
    """dpmpp-2m at NFE 10 beats NFE 5 on the trailing VP grid (a benchmark that could not tell
    methods apart would fail here)."""
    _, results = smoke
    rows = {(r["setup"], r["nfe_budget"]): r for r in results["accuracy"]["rows"] if r["key"] == "odesolve:dpmpp-2m"}
    assert rows[("vp-trailing", 10)]["rmse"] < 0.5 * rows[("vp-trailing", 5)]["rmse"]


def test_identical_methods_agree_across_libraries(smoke):
    _, results = smoke
    twins = [r for r in results["accuracy"]["rows"] if "twin_rel_rms" in r]
    from benchmarks import peers

    libs = {r["lib"] for r in twins}
    if peers.k_sampling() is not None:
        assert "k-diffusion" in libs
    if peers.diffusers_module() is not None:
        assert "diffusers" in libs
    if not twins:
        pytest.skip("no peer library importable")
    for r in twins:
        assert r["twin_rel_rms"] <= TOL[r["lib"]], (r["key"], r["twin"], r["setup"], r["nfe_budget"], r["twin_rel_rms"])


def test_the_odesolve_contenders_agree():
    """The overhead part times ods.sample (loop and with the grid built) and a prepared Sampler: one
    executor, so the same sample bit for bit, with the plan's number of model calls."""
    import torch

    from benchmarks.overhead import _runners

    for family in ("dpmpp-2m", "unipc-bh2-3"):
        runners, plan = _runners(family, (4, 3), torch.device("cpu"), torch.float32, libs=("odesolve",))
        outs = {}
        for lib in ("odesolve", "odesolve(Sampler)"):
            fn, counter = runners[lib][0]()
            outs[lib] = fn()
            assert counter.n == plan.calls, (family, lib, counter.n)
        fn, counter = runners["odesolve"][1]()
        outs["with_setup"] = fn()
        ref = outs["odesolve"]
        assert all(torch.equal(v, ref) for v in outs.values()), family
