"""Argument checks shared by the subcommands, run before any work: a bad argument is refused in
the first second with a message naming the option, never after minutes of sampling."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed accepts [0, 2^64 - 1]


class UsageError(ValueError):
    """A command-line argument that cannot work; the message names the option."""


def fail(command: str, err: Exception | str) -> int:
    """Print ``odesolve COMMAND: error: ...`` to stderr; exit status 2."""
    print(f"odesolve {command}: error: {err}", file=sys.stderr)
    return 2


def positive(option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{option} must be a positive integer, got {value!r}")
    return value


def seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise UsageError(f"--seed must be an integer in [0, 2^64 - 1], got {value!r}")
    return value


def device(value: str) -> torch.device:
    """A torch device that can hold a tensor and copy it back to the CPU."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise UsageError(f"--device {value!r} is not a torch device: {err}") from None
    try:
        (torch.zeros(1, device=dev) + 1).cpu()
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"--device {value!r} is not usable on this machine: {msg}") from None
    return dev


def output_folder(option: str, value) -> Path:
    """Create the folder ``value`` if missing and check that a file can be written in it."""
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {str(out)!r} is an existing file; give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".odesolve-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(f"{option} {str(out)!r} is not a writable folder: {err.strerror or err}") from None
    return out
