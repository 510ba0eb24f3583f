"""Peer libraries, loaded at run time and skipped (with a printed note) when unavailable.

k-diffusion: its package ``__init__`` imports training-time modules (accelerate, clip, wandb, ...), so
only ``k_diffusion/sampling.py`` and the ``utils.py`` it imports are loaded, by file path, from the
installed package (``pip install --no-deps k-diffusion``) or from the folder named by the environment
variable ``ODESOLVE_BENCH_KDIFFUSION`` (a directory that contains ``k_diffusion/``, e.g. an unpacked
wheel). Nothing of k-diffusion is copied into this repository. Third-party modules that ``utils.py``
imports at module level but ``sampling.py`` never uses (torchvision, PIL, safetensors, and torchsde,
which only its Brownian-tree noise sampler needs) are replaced by empty placeholder modules while
those two files load, if they are not installed.

diffusers: imported normally (``import diffusers``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from functools import cache

__all__ = ["diffusers_module", "k_sampling", "notes", "versions"]

_NOTES: list[str] = []
_PKG = "_odesolve_bench_k_diffusion"  # private package name: never shadows a real k_diffusion import


def notes() -> list[str]:
    """Messages about peers that could not be loaded."""
    return list(_NOTES)


def _note(msg: str):
    if msg not in _NOTES:
        _NOTES.append(msg)
        print(f"[benchmarks] note: {msg}", flush=True)


def _k_diffusion_dirs() -> list[str]:
    dirs = []
    env = os.environ.get("ODESOLVE_BENCH_KDIFFUSION")
    if env:
        dirs.append(os.path.join(env, "k_diffusion"))
    try:
        spec = importlib.util.find_spec("k_diffusion")  # locates the package without running its __init__
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(spec.submodule_search_locations)
    return [d for d in dirs if os.path.isfile(os.path.join(d, "sampling.py"))]


def _placeholders(names):
    """Insert empty modules for the missing ``names``; returns those inserted (to remove later)."""
    added = []
    for name in names:
        try:
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                continue
        except (ImportError, ValueError):
            pass
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                mod = types.ModuleType(sub)
                mod.__path__ = []  # a package, so that submodule placeholders attach
                sys.modules[sub] = mod
                added.append(sub)
                if i > 1:
                    setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], mod)
    return added


@cache
def k_sampling():
    """k-diffusion's ``sampling`` module, or None (with a note) when it cannot be loaded."""
    dirs = _k_diffusion_dirs()
    if not dirs:
        _note(
            "k-diffusion not found (pip install --no-deps k-diffusion, or set ODESOLVE_BENCH_KDIFFUSION); "
            "its samplers are skipped"
        )
        return None
    d = dirs[0]
    added = _placeholders(["torchvision.transforms.functional", "PIL.Image", "safetensors", "torchsde"])
    try:
        pkg = types.ModuleType(_PKG)
        pkg.__path__ = [d]
        sys.modules[_PKG] = pkg
        mods = {}
        for sub in ("utils", "sampling"):
            spec = importlib.util.spec_from_file_location(f"{_PKG}.{sub}", os.path.join(d, f"{sub}.py"))
            mod = importlib.util.module_from_spec(spec)
            sys.modules[f"{_PKG}.{sub}"] = mod
            spec.loader.exec_module(mod)
            setattr(pkg, sub, mod)
            mods[sub] = mod
        sampling = mods["sampling"]
        sampling.__benchmark_source__ = d
        return sampling
    except Exception as err:
        _note(f"k-diffusion at {d} could not be loaded ({type(err).__name__}: {err}); its samplers are skipped")
        return None
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)


@cache
def diffusers_module():
    """``diffusers`` or None (with a note)."""
    try:
        import diffusers  # noqa: F401

        return importlib.import_module("diffusers")
    except Exception as err:
        _note(f"diffusers could not be imported ({type(err).__name__}: {err}); its schedulers are skipped")
        return None


def versions() -> dict:
    import platform

    import torch

    import odesolve

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "odesolve": odesolve.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or "",
        "cpu_count": os.cpu_count(),
    }
    d = diffusers_module()
    out["diffusers"] = getattr(d, "__version__", None) if d else None
    k = k_sampling()
    if k is not None:
        ver = None
        try:
            from importlib.metadata import version

            ver = version("k-diffusion")
        except Exception:
            pass
        out["k_diffusion"] = ver or k.__benchmark_source__
    else:
        out["k_diffusion"] = None
    try:
        out["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return out
