"""Sampling many samples across processes: one seed per sample, shards keyed by index, resumable.

    torchrun --nproc-per-node 4 -m odesolve sample --model digits --samples 50000 --out DIR
    odesolve.distributed.sample(model, plan, "DIR", n=50000, shape=(1, 8, 8), seed=0, batch=1024)

Sample ``j`` of a job with seed ``s`` is keyed by ``key(s, j) = (s mod 2^31) * 2^32 + j``
(``sample_keys``): its initial noise is the ``odesolve.noise.PerSampleNormal`` normal of
that key at call ``-1`` (no plan call has a negative index), and a stochastic plan's noise comes
from the same key (``noise_source``: independent normals per call, or Brownian paths where
the plan's increments overlap). So a sample depends on its index alone, never on the process or the
position in a batch that computed it.

The job's ``n`` samples are cut into batches of ``batch`` consecutive indices (batch ``b`` holds
``b * batch .. min(n, (b + 1) * batch) - 1``), the unit of work and of storage: the network sees the
same batches whatever the number of processes, so the merged result is bit-identical for 1, 2 or 4
processes on the same hardware. Rank 0 lists the batches not yet on disk and deals them to the
ranks in turn (batch ``missing[i]`` to rank ``i mod world``); each rank writes each batch it computes
as ``DIR/shards/START-STOP.npy`` (a temporary file renamed into place, so a shard on disk is
whole), and rank 0 shows the progress of the whole job (the shards on disk), then merges them into
``DIR/samples.npz`` (an uncompressed zip with fixed timestamps: the same bytes whatever the number of
processes)
and removes the shards.

Resuming. ``DIR/manifest.json`` holds the job's settings (everything that changes the numbers: the
plan's coefficients and grid, model, dtype, device type, seed, ``n``, ``batch``, the torch
version). The same command run again, with any number of processes, computes only the batches
missing on disk; a finished job is not recomputed; settings that differ from an unfinished job's are
refused (``SettingsMismatch``), naming each difference. A finished job with other settings is
replaced. Across machines ``DIR`` must be a shared file system.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import noise as _noise

__all__ = [
    "FORMAT",
    "Outcome",
    "SettingsMismatch",
    "initial_noise",
    "noise_source",
    "plan_digest",
    "rank_and_world",
    "sample",
    "sample_keys",
    "setup",
    "write_npz",
]

FORMAT = "odesolve.distributed/1"
INITIAL_CALL = -1  # the noise "call" of the initial state: no plan call has a negative index
_SHARD = re.compile(r"^(\d{10})-(\d{10})\.npy$")


class SettingsMismatch(ValueError):
    """``DIR`` holds an unfinished job with other settings."""


# -- the seed -> noise rule ----------------------------------------------------------------------


def sample_keys(seed: int, start: int, stop: int) -> list[int]:
    """The noise keys of samples ``start .. stop - 1`` of a job seeded ``seed``:
    ``(seed mod 2^31) * 2^32 + j`` (distinct for every index below 2^32 and seed below 2^31)."""
    if not 0 <= start <= stop <= 2**32:
        raise ValueError(f"sample indices must satisfy 0 <= start <= stop <= 2^32, got {start}, {stop}")
    base = (int(seed) % 2**31) * 2**32
    return [base + j for j in range(start, stop)]


def initial_noise(seed: int, start: int, stop: int, shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The initial states ``x_T`` of samples ``start .. stop - 1``, shape ``(stop - start, *shape)``:
    standard normals keyed by ``sample_keys`` (the normal of call ``-1`` of
    ``odesolve.noise.PerSampleNormal``), computed on ``device``."""
    source = _noise.PerSampleNormal(sample_keys(seed, start, stop))
    return source.standard_normal(INITIAL_CALL, None, (stop - start, *shape), torch.float64, device).to(dtype)


def noise_source(plan, seed: int, start: int, stop: int) -> _noise.NoiseSource | None:
    """The noise of samples ``start .. stop - 1`` for ``plan``: ``None`` for an ODE plan, Brownian
    paths where the plan's increments overlap (``plan.correlated_noise``), else independent normals."""
    if not plan.stochastic:
        return None
    keys = sample_keys(seed, start, stop)
    return _noise.BrownianPaths(keys) if plan.correlated_noise else _noise.PerSampleNormal(keys)


def plan_digest(plan) -> str:
    """A hex digest equal for two plans whose every coefficient, time and grid point is equal."""
    from .execute import plan_fingerprint

    method, prediction, path, calls, window, steps, dtypes, data = plan_fingerprint(plan)
    head = repr((method, prediction, type(path).__name__, calls, window, steps, [str(d) for d in dtypes]))
    return hashlib.sha256(head.encode() + data).hexdigest()[:32]


# -- processes -----------------------------------------------------------------------------------


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the torch.distributed group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def setup(device="cpu") -> torch.device:
    """Join the process group torchrun describes (``WORLD_SIZE`` and ``MASTER_ADDR`` in the
    environment; gloo for the CPU, NCCL for CUDA) unless one is initialised already, and return this
    rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK``. A process not started by torchrun joins
    nothing."""
    device = torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    if launched and torch.distributed.is_available() and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _broadcast(obj, rank: int, world: int):
    if world == 1:
        return obj
    box = [obj if rank == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(world: int):
    if world > 1:
        torch.distributed.barrier()


# -- files ---------------------------------------------------------------------------------------


def write_npz(file, arrays: dict) -> Path:
    """``np.savez`` (uncompressed: sampled floats compress by a few per cent, at a cost comparable to
    the rest of the driver) with fixed zip timestamps, written to a temporary file and renamed: the
    same arrays give the same bytes, and ``file`` is never seen half written."""
    file = Path(file)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    os.replace(tmp, file)
    return file


def _write_shard(folder: Path, start: int, stop: int, samples: np.ndarray) -> Path:
    """``folder/START-STOP.npy``, written under a temporary name and renamed into place."""
    file = folder / f"{start:010d}-{stop:010d}.npy"
    tmp = folder / f".{file.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, samples, allow_pickle=False)
    os.replace(tmp, file)
    return file


def _shards_on_disk(folder: Path) -> set[tuple[int, int]]:
    if not folder.is_dir():
        return set()
    found = set()
    for entry in os.scandir(folder):
        m = _SHARD.match(entry.name)
        if m:
            found.add((int(m[1]), int(m[2])))
    return found


def _read_manifest(file: Path) -> dict | None:
    if not file.exists():
        return None
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise SettingsMismatch(f"{file} is not a readable manifest ({err}); remove it to start a new job") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SettingsMismatch(f"{file} is not a manifest of odesolve.distributed ({FORMAT!r} expected)")
    return doc


def _write_json(file: Path, doc: dict):
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, file)


def _differences(old: dict, new: dict) -> list[str]:
    def short(v):
        r = repr(v)
        return r if len(r) <= 60 else r[:57] + "..."

    keys = sorted(set(old) | set(new))
    return [f"{k}: {short(old.get(k))} on disk, {short(new.get(k))} now" for k in keys if old.get(k) != new.get(k)]


# -- the job -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What ``sample`` did on this rank. ``samples``: the merged ``(n, *shape)`` float32 array
    on rank 0 (``None`` elsewhere); ``computed``: the batches (``(start, stop)``) this rank computed;
    ``resumed``: batches found on disk when the job started (all of them for a finished job)."""

    file: Path
    samples: np.ndarray | None
    batches: int
    computed: tuple[tuple[int, int], ...]
    resumed: int
    seconds: float
    rank: int
    world: int


def sample(
    model,
    plan,
    out,
    *,
    n: int,
    shape: Sequence[int],
    seed: int = 0,
    batch: int = 1024,
    device=None,
    settings: dict | None = None,
    meta: dict | None = None,
    progress: bool = True,
) -> Outcome:
    """Draw samples ``0 .. n - 1`` of ``plan`` with ``model`` across the ranks of the process group
    (one process without one) into ``out/samples.npz``: ``samples`` (float32, ``(n, *shape)``),
    ``times`` (the grid) and ``meta`` (JSON: ``meta``, ``settings`` and the job's own numbers).

    Every rank calls it with the same arguments. ``device``: this rank's device (default: the
    model's parameters', else the CPU); ``settings``: more entries for the manifest (anything else
    that changes the numbers); ``progress``: a progress bar of the whole job on rank 0 (stderr).
    The batches (``batch`` consecutive indices) are the unit of work: see the module docstring."""
    from .execute import execute

    for name, v in (("n", n), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if n > 2**32:
        raise ValueError(f"n must be at most 2^32 (the sample index is part of its noise key), got {n}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    shape = tuple(int(s) for s in shape)
    if device is None:
        p = next(iter(getattr(model.fn, "parameters", lambda: iter(()))()), None)
        device = p.device if isinstance(p, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    rank, world = rank_and_world()
    out = Path(out)
    shards, manifest_file, npz = out / "shards", out / "manifest.json", out / "samples.npz"
    batches = [(s, min(n, s + batch)) for s in range(0, n, batch)]
    job = {
        "plan": plan_digest(plan),
        "method": plan.method,
        "times": plan.grid.t.tolist(),
        "nfe": plan.calls,
        "n": n,
        "batch": batch,
        "seed": seed,
        "shape": list(shape),
        "device": device.type,
        "torch": torch.__version__,
        **(settings or {}),
    }
    job = json.loads(json.dumps(job))  # as the manifest will read back (tuples become lists)
    t0 = time.perf_counter()

    # rank 0 decides what is on disk and what is missing; every rank follows that decision
    decision = None
    if rank == 0:
        try:
            decision = _start(out, shards, manifest_file, npz, job, batches)
        except Exception as err:  # every rank raises it, rather than wait for rank 0
            decision = {"error": str(err), "mismatch": isinstance(err, SettingsMismatch)}
    decision = _broadcast(decision, rank, world)
    if "error" in decision:
        raise (SettingsMismatch if decision["mismatch"] else RuntimeError)(decision["error"])
    missing = [tuple(b) for b in decision["missing"]]
    resumed = len(batches) - len(missing)
    mine = missing[rank::world]

    bar = None
    if rank == 0 and progress and missing:
        from tqdm import tqdm

        bar = tqdm(
            total=n, initial=n - sum(b - a for a, b in missing), unit="sample", file=sys.stderr, desc=f"{plan.method}"
        )
    done, known = [], set(batches)
    with torch.inference_mode():
        for start, stop in mine:
            x = initial_noise(seed, start, stop, shape, torch.float32, device)
            x0 = execute(plan, model, x, noise=noise_source(plan, seed, start, stop))
            _write_shard(shards, start, stop, x0.to(torch.float32).cpu().numpy())
            done.append((start, stop))
            if bar is not None:
                bar.n = sum(b - a for a, b in _shards_on_disk(shards) & known)
                bar.refresh()
    _barrier(world)
    samples = None
    if rank == 0:
        if bar is not None:
            bar.n = n
            bar.close()
        samples = _finish(out, shards, manifest_file, npz, job, batches, plan, meta, decision["finished"])
    _barrier(world)
    return Outcome(npz, samples, len(batches), tuple(done), resumed, time.perf_counter() - t0, rank, world)


def _start(out: Path, shards: Path, manifest_file: Path, npz: Path, job: dict, batches) -> dict:
    """On rank 0: check ``out`` against ``job``; returns ``{"missing": [...], "finished": bool}``."""
    old = _read_manifest(manifest_file)
    same = old is not None and old.get("settings") == job
    if same and old.get("finished") and npz.exists():
        return {"missing": [], "finished": True}
    if old is not None and not same and not old.get("finished"):
        diff = _differences(old.get("settings", {}), job)
        raise SettingsMismatch(
            f"{out} holds an unfinished job with other settings ({'; '.join(diff)}). Rerun with the "
            f"settings on disk to resume it, or give another output folder, or remove {manifest_file} "
            f"and {shards} to discard it"
        )
    if not same:  # a new job, or a finished one with other settings: replaced
        for stale in (npz, *(shards.glob("*.npy") if shards.is_dir() else ())):
            stale.unlink(missing_ok=True)
        if old is not None:
            print(f"{out}: replacing a finished job with other settings", file=sys.stderr)
    shards.mkdir(parents=True, exist_ok=True)
    for tmp in shards.glob(".*.tmp"):  # writes cut short by a kill
        tmp.unlink()
    _write_json(manifest_file, {"format": FORMAT, "settings": job, "finished": False})
    on_disk = _shards_on_disk(shards)
    return {"missing": [b for b in batches if b not in on_disk], "finished": False}


def _finish(out, shards, manifest_file, npz, job, batches, plan, meta, finished) -> np.ndarray:
    """On rank 0: merge the shards into ``samples.npz`` (or read a finished job's), mark the job
    finished, remove the shards."""
    shape = tuple(job["shape"])
    if finished:
        with np.load(npz) as f:
            return f["samples"]
    samples = np.empty((job["n"], *shape), dtype=np.float32)
    for start, stop in batches:
        file = shards / f"{start:010d}-{stop:010d}.npy"
        part = np.load(file, allow_pickle=False)
        if part.shape != (stop - start, *shape) or part.dtype != np.float32:
            raise ValueError(
                f"shard {file} holds {part.dtype} of shape {part.shape}, expected float32 of shape "
                f"{(stop - start, *shape)}; remove it and rerun to recompute it"
            )
        samples[start:stop] = part
    info = {**(meta or {}), "settings": job}
    write_npz(npz, {"samples": samples, "times": plan.grid.t.numpy(), "meta": json.dumps(info, sort_keys=True)})
    _write_json(manifest_file, {"format": FORMAT, "settings": job, "finished": True})
    for start, stop in batches:
        (shards / f"{start:010d}-{stop:010d}.npy").unlink(missing_ok=True)
    try:
        shards.rmdir()
    except OSError:
        pass
    return samples
