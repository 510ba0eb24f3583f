"""k-diffusion style sampler functions: k-diffusion's own names, and one per registered method.

k-diffusion's names (``samplers``): ``sample_euler``, ``sample_euler_ancestral``, ``sample_heun``,
``sample_dpm_2``, ``sample_dpm_2_ancestral``, ``sample_lms``, ``sample_dpm_fast``,
``sample_dpmpp_2s_ancestral``, ``sample_dpmpp_sde``, ``sample_dpmpp_2m``, ``sample_dpmpp_2m_sde``,
``sample_dpmpp_3m_sde`` (and ComfyUI's ``*_gpu`` aliases), with k-diffusion's signatures and results:
the same noise in gives the same samples out. Their noise: k-diffusion's
``noise_sampler(sigma, sigma_next)`` (``NoiseSamplerSource``), or odesolve's per-sample
``noise=`` / ``seeds=``.

For every other registered method ``name`` (``-`` replaced by ``_``) this module offers

    sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, generator=None,
                  noise=None, seeds=None, **options)

with the same model, callback and progress conventions (``run``), ``options`` going to the
method's ``compile`` (for example ``lower_order_final=True``); a stochastic method needs one of
``generator=``, ``noise=`` or ``seeds=``. These are resolved when first accessed (PEP 562), so a
method registered later gets one too; ``available()`` lists every function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ... import methods
from . import samplers
from .noise import NoiseSamplerSource, ScaledNoise, brownian_tree_sampler, torch_stream_sampler
from .run import PATH, run
from .samplers import *  # noqa: F403  (k-diffusion's names)

__all__ = [
    "PATH",
    "KDIFFUSION_NAMES",
    "NoiseSamplerSource",
    "ScaledNoise",
    "available",
    "brownian_tree_sampler",
    "run",
    "sampler",
    "torch_stream_sampler",
    *samplers.__all__,
]

KDIFFUSION_NAMES = tuple(samplers.__all__)


def _identifier(name: str) -> str:
    return "sample_" + name.replace("-", "_")


def available() -> list[str]:
    """Every function: k-diffusion's names, then one per registered method not already named so."""
    generated = [_identifier(n) for n in methods.names()]
    return [*KDIFFUSION_NAMES, *(g for g in generated if g not in KDIFFUSION_NAMES)]


def _lookup(identifier: str) -> str | None:
    hits = [n for n in (*methods.names(), *methods.aliases()) if _identifier(n) == identifier]
    if len(hits) > 1:
        raise AttributeError(f"{identifier} is ambiguous: methods {hits} map to the same function name")
    return hits[0] if hits else None


def sampler(name: str) -> Callable:
    """The k-diffusion style function of the registered method ``name`` (the generated form)."""
    method = methods.get(name)

    def sample(
        model: Callable,
        x: Tensor,
        sigmas: Tensor,
        extra_args: dict | None = None,
        callback: Callable[[dict], None] | None = None,
        disable: bool | None = None,
        generator: torch.Generator | None = None,
        noise=None,
        seeds=None,
        **options,
    ) -> Tensor:
        return run(
            method,
            model,
            x,
            sigmas,
            extra_args,
            callback,
            disable,
            options,
            generator=generator,
            noise=noise,
            seeds=seeds,
        )

    sample.__name__ = sample.__qualname__ = _identifier(method.name)
    sample.__doc__ = (
        f"k-diffusion style sampler for odesolve's {method.name!r} (declared order {method.order}; "
        f"{method.paper or 'see odesolve.methods'}).\n\n"
        "sample(model, x, sigmas, extra_args=None, callback=None, disable=None, generator=None, noise=None, "
        "seeds=None, **options); a stochastic method needs one of generator=, noise= (an odesolve.noise "
        "source) or seeds= (one per sample)"
    )
    return sample


_CACHE: dict[str, Callable] = {}


def __getattr__(identifier: str):
    if identifier.startswith("sample_"):
        name = _lookup(identifier)
        if name is not None:
            if name not in _CACHE or _CACHE[name].__odesolve_method__ is not methods.get(name):
                f = sampler(name)
                f.__odesolve_method__ = methods.get(name)
                _CACHE[name] = f
            return _CACHE[name]
    raise AttributeError(
        f"module {__name__!r} has no attribute {identifier!r}"
        + ("; available: " + ", ".join(available()) if identifier.startswith("sample_") else "")
    )


def __dir__():
    return sorted(set(globals()) | set(available()))
