"""Distributed sampling (odesolve.distributed, ``odesolve sample`` under torchrun): the merged
samples.npz is the same bytes for 1, 2 and 4 processes (gloo on the CPU), a killed job resumes
without losing, duplicating or recomputing a batch, and other settings are refused."""

import datetime
import hashlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import odesolve as ods
from odesolve import commands, distributed
from odesolve.toy import zoo

N, BATCH = 64, 8  # 8 batches
ARGS = ["--samples", str(N), "--batch", str(BATCH), "--nfe", "3", "--no-progress"]
full = os.environ.get("ODESOLVE_FULL") == "1"


def digest(file) -> str:
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def shard_names(out) -> set[str]:
    folder = Path(out) / "shards"
    return {p.name for p in folder.glob("*.npy")} if folder.is_dir() else set()


def all_shards() -> set[str]:
    return {f"{a:010d}-{min(N, a + BATCH):010d}.npy" for a in range(0, N, BATCH)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, no process group: the bytes every other run must reproduce (per method)."""
    out = {}
    for method in ("dpmpp-2m", "dpmpp-2m-sde"):
        d = tmp_path_factory.mktemp(method)
        assert commands.main(["sample", "--method", method, *ARGS, "--out", str(d)]) == 0
        out[method] = d / "samples.npz"
    return out


# -- processes forked from the test, joined by gloo on localhost ----------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, work):
    """One rank: join the group, run ``work(rank)`` (its exit status)."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=datetime.timedelta(60)
    )
    status = work(rank)
    torch.distributed.destroy_process_group()
    os._exit(status)


def command(argv, kill_after=None, log=None, stderr=None):
    """``odesolve sample argv`` as a rank's work; with ``kill_after`` rank 1 dies (exit 3) right after
    writing that many shards; ``log`` gets the shards each rank computed; ``stderr`` each rank's
    standard error (files ``stderr.RANK``)."""

    def work(rank):
        if stderr is not None:
            sys.stderr = open(f"{stderr}.{rank}", "w")
        if kill_after is not None and rank == 1:
            write, count = distributed._write_shard, [0]

            def write_then_die(*a, **k):
                file = write(*a, **k)
                count[0] += 1
                if count[0] == kill_after:
                    os._exit(3)
                return file

            distributed._write_shard = write_then_die
        if log is not None:
            sample = distributed.sample

            def logged(*a, **k):
                result = sample(*a, **k)
                Path(f"{log}.{rank}").write_text(json.dumps(result.computed))
                return result

            distributed.sample = logged
        status = commands.main(argv)
        sys.stderr.flush()
        return status

    return work


def launch(world, work, limit=120) -> list[int]:
    """Fork ``world`` ranks running ``work``; when one fails the others are killed (as torchrun
    does); their exit codes."""
    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, work)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + limit
    while any(p.exitcode is None for p in procs) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in procs):
            for p in procs:
                if p.exitcode is None:
                    p.kill()
        time.sleep(0.05)
    for p in procs:
        if p.exitcode is None:
            p.kill()
        p.join()
    return [p.exitcode for p in procs]


@pytest.mark.parametrize("world, method", [(2, "dpmpp-2m-sde"), (4, "dpmpp-2m-sde"), (4, "dpmpp-2m")])
def test_merged_samples_are_the_same_bytes_for_any_number_of_processes(world, method, reference, tmp_path):
    out = tmp_path / "out"
    assert launch(world, command(["sample", "--method", method, *ARGS, "--out", str(out)])) == [0] * world
    assert digest(out / "samples.npz") == digest(reference[method])
    assert not (out / "shards").exists()  # merged, then removed
    assert json.loads((out / "manifest.json").read_text())["finished"] is True


def test_rank_0_alone_reports_the_progress_of_the_whole_job(reference, tmp_path):
    out, err = tmp_path / "out", tmp_path / "stderr"
    argv = ["sample", "--method", "dpmpp-2m-sde", *ARGS[:-1], "--out", str(out)]  # with the progress bar
    assert launch(2, command(argv, stderr=err)) == [0, 0]
    rank0, rank1 = (Path(f"{err}.{r}").read_text() for r in (0, 1))
    assert f"{N}/{N}" in rank0 and "2 processes" in rank0  # the whole job, not rank 0's half
    assert rank1.strip() == ""
    assert digest(out / "samples.npz") == digest(reference["dpmpp-2m-sde"])


def test_a_killed_job_resumes_losing_duplicating_and_recomputing_nothing(reference, tmp_path):
    out, log = tmp_path / "out", tmp_path / "computed"
    argv = ["sample", "--method", "dpmpp-2m-sde", *ARGS, "--out", str(out)]
    codes = launch(2, command(argv, kill_after=2))
    assert codes[1] == 3 and not (out / "samples.npz").exists()
    written = shard_names(out)
    assert 2 <= len(written) < len(all_shards()) and written <= all_shards()
    for name in written:  # every shard on disk is whole
        assert np.load(out / "shards" / name).shape == (BATCH, 1, 8, 8)
    assert launch(2, command(argv, log=log)) == [0, 0]
    computed = [f"{a:010d}-{b:010d}.npy" for r in (0, 1) for a, b in json.loads(Path(f"{log}.{r}").read_text())]
    assert len(computed) == len(set(computed))  # nothing computed twice
    assert set(computed) == all_shards() - written  # nothing recomputed, nothing lost
    assert digest(out / "samples.npz") == digest(reference["dpmpp-2m-sde"])


def test_a_diffusers_network_through_the_python_entry_point(tmp_path):
    """The adapter's model wrapper around a tiny diffusers UNet: 2 ranks write the bytes of 1."""
    diffusers = pytest.importorskip("diffusers")
    from odesolve.adapters.diffusers.model import model_from_diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    model = model_from_diffusers(unet, diffusers.DDPMScheduler().config)
    plan = ods.methods.get("dpmpp-2m-sde").compile(model.path, ods.grids.discrete(model.path, 3))

    def job(out):
        return distributed.sample(model, plan, out, n=12, shape=(3, 8, 8), batch=4, progress=False)

    assert job(tmp_path / "one").world == 1
    assert launch(2, lambda rank: job(tmp_path / "two").world - 2) == [0, 0]  # exit 0: a group of two
    assert digest(tmp_path / "one" / "samples.npz") == digest(tmp_path / "two" / "samples.npz")
    assert np.isfinite(np.load(tmp_path / "one" / "samples.npz")["samples"]).all()


@pytest.mark.skipif(not full, reason="torchrun end to end: ODESOLVE_FULL=1 (the forked ranks above run the same code)")
@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_torchrun_command_line_gives_the_same_bytes(world, reference, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world), "-m", "odesolve"]
    cmd += ["sample", "--method", "dpmpp-2m-sde", *ARGS, "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert digest(tmp_path / "samples.npz") == digest(reference["dpmpp-2m-sde"])
    assert run.stdout.count("wrote ") == 1  # rank 0 alone reports


def test_torchrun_parser_keeps_samples_and_rejects_n():
    """torchrun's own parser: ``--samples`` reaches odesolve; ``--n`` is taken for an ambiguous
    abbreviation of torchrun's --nnodes / --nproc-per-node (the reason for the long name)."""
    from torch.distributed.run import get_args_parser

    args = get_args_parser().parse_args(["--nproc-per-node", "2", "-m", "odesolve", "sample", *ARGS, "--out", "x"])
    assert args.training_script == "odesolve" and args.training_script_args[:3] == ["sample", "--samples", str(N)]
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--nproc-per-node", "2", "-m", "odesolve", "sample", "--n", "5"])


# -- one process: resuming and the manifest ------------------------------------------------------


def small_job(out, seed=0, n=20, batch=6, **kw):
    model = zoo.load("digits")
    grid = ods.grids.discrete(model.path, 3)
    plan = ods.methods.get("dpmpp-2m").compile(model.path, grid)
    return distributed.sample(model, plan, out, n=n, shape=(1, 8, 8), seed=seed, batch=batch, progress=False, **kw)


class Killed(Exception):
    pass


def test_one_process_resume_and_finished_job(tmp_path, monkeypatch):
    whole = small_job(tmp_path / "whole")
    assert whole.batches == 4 and len(whole.computed) == 4 and whole.resumed == 0
    write, count = distributed._write_shard, [0]

    def write_then_die(*a, **k):
        write(*a, **k)
        count[0] += 1
        if count[0] == 2:
            raise Killed

    monkeypatch.setattr(distributed, "_write_shard", write_then_die)
    with pytest.raises(Killed):
        small_job(tmp_path / "cut")
    monkeypatch.undo()
    resumed = small_job(tmp_path / "cut")
    assert resumed.resumed == 2 and resumed.computed == ((12, 18), (18, 20))
    assert digest(tmp_path / "cut" / "samples.npz") == digest(tmp_path / "whole" / "samples.npz")
    again = small_job(tmp_path / "cut")  # finished: nothing computed, the same samples
    assert again.computed == () and again.resumed == 4 and np.array_equal(again.samples, whole.samples)


def test_sample_depends_on_its_index_alone(tmp_path):
    """Batch 6 and batch 20 (one batch) agree to float32 batch arithmetic; the keys are the rule."""
    a = small_job(tmp_path / "a").samples
    b = small_job(tmp_path / "b", batch=20).samples
    np.testing.assert_allclose(a, b, rtol=0, atol=5e-5)
    assert distributed.sample_keys(2**31 + 5, 3, 5) == [5 * 2**32 + 3, 5 * 2**32 + 4]
    x = distributed.initial_noise(7, 10, 13, (2, 3))
    assert torch.equal(x[1], distributed.initial_noise(7, 11, 12, (2, 3))[0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), start=st.integers(0, 2**32 - 40), length=st.integers(1, 30), data=st.data())
def test_a_sample_noise_is_a_function_of_its_seed_and_index(seed, start, length, data):
    """Any range of samples: sample j's initial noise and path noise are those of j drawn alone."""
    j = data.draw(st.integers(start, start + length - 1))
    whole = distributed.initial_noise(seed, start, start + length, (3,))
    assert torch.equal(whole[j - start], distributed.initial_noise(seed, j, j + 1, (3,))[0])
    assert distributed.sample_keys(seed, start, start + length)[j - start] == (seed % 2**31) * 2**32 + j
    plan = ods.methods.get("dpmpp-2m-sde").compile(ods.paths.EDM(), ods.grids.karras(ods.paths.EDM(), 3))
    many, one = (distributed.noise_source(plan, seed, a, b) for a, b in ((start, start + length), (j, j + 1)))
    assert torch.equal(
        many.standard_normal(1, (0.5, 1.0), (length, 3))[j - start], one.standard_normal(1, (0.5, 1.0), (1, 3))[0]
    )


def test_other_settings_of_an_unfinished_job_are_refused(tmp_path, monkeypatch, capsys):
    def die(*a, **k):
        raise Killed

    monkeypatch.setattr(distributed, "_write_shard", die)
    with pytest.raises(Killed):
        small_job(tmp_path)
    monkeypatch.undo()
    with pytest.raises(distributed.SettingsMismatch, match=r"seed: 0 on disk, 1 now"):
        small_job(tmp_path, seed=1)
    with pytest.raises(distributed.SettingsMismatch, match=r"batch: 6 on disk, 5 now"):
        small_job(tmp_path, batch=5)
    # the command says so with exit status 2, naming the setting
    monkeypatch.setattr(distributed, "_write_shard", die)
    with pytest.raises(Killed):
        commands.main(["sample", *ARGS, "--out", str(tmp_path / "cli")])
    monkeypatch.undo()
    capsys.readouterr()
    assert commands.main(["sample", *ARGS, "--nfe", "4", "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert "unfinished job with other settings" in err and "nfe: 3 on disk, 4 now" in err
    assert small_job(tmp_path).resumed == 0  # the same settings resume it


def test_a_finished_job_with_other_settings_is_replaced(tmp_path):
    first = small_job(tmp_path, seed=0)
    second = small_job(tmp_path, seed=1)
    assert second.resumed == 0 and len(second.computed) == 4 and not np.array_equal(first.samples, second.samples)
