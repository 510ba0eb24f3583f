"""k-diffusion style sampler functions for every registered method, generated from the registry.

For each name in [`odesolve.methods.names`][odesolve.methods.names] (``-`` replaced by ``_``) this module offers

    sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, **options)

with k-diffusion's conventions: ``model(x, sigma, **extra_args)`` is a denoiser in EDM
coordinates (``x = x0 + sigma * eps``; it returns the prediction of x0, and ``sigma`` is a tensor
of shape ``(batch,)`` in the dtype of ``sigmas``), ``x`` is the state at ``sigmas[0]`` and
``sigmas`` is a decreasing tensor of noise levels that may end at 0. ``callback`` is called once
per step with ``{'x', 'i', 'sigma', 'sigma_hat', 'denoised'}`` (the state at the start of step
``i`` and the model's prediction there), ``disable`` switches the progress bar off (k-diffusion
shows it by default; here it shows only when ``disable is False``), and ``options`` go to the
method's ``compile`` (for example ``lower_order_final=True``).

The functions are resolved when first accessed (PEP 562), so a method registered later gets one
too; ``available()`` lists them. ``sample_dpmpp_2m``, ``sample_euler`` and ``sample_heun`` compute
what k-diffusion's functions of the same name compute (see docs/interop.md for the others).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .. import grids, methods
from ..execute import execute
from ..models import Model
from ..paths import EDM

__all__ = ["PATH", "available", "sampler"]

PATH = EDM()  # k-diffusion's coordinates: alpha = 1, sigma = t


def _identifier(name: str) -> str:
    return "sample_" + name.replace("-", "_")


def available() -> list[str]:
    """The names of the generated functions, one per registered method."""
    return [_identifier(n) for n in methods.names()]


def _lookup(identifier: str) -> str | None:
    hits = [n for n in (*methods.names(), *methods.aliases()) if _identifier(n) == identifier]
    if len(hits) > 1:
        raise AttributeError(f"{identifier} is ambiguous: methods {hits} map to the same function name")
    return hits[0] if hits else None


def sampler(name: str) -> Callable:
    """The k-diffusion style function of the registered method ``name``."""
    method = methods.get(name)

    @torch.no_grad()
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
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
        if extra_args is not None and not isinstance(extra_args, dict):
            raise TypeError(
                f"extra_args must be a dict of keyword arguments for the model, got {type(extra_args).__name__}"
            )
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable as callback(dict) or None, got {type(callback).__name__}")
        if not isinstance(sigmas, Tensor):
            sigmas = torch.as_tensor(sigmas)
        extra = {} if extra_args is None else extra_args
        sdtype = sigmas.dtype if sigmas.is_floating_point() else torch.float32
        grid = grids.from_sigmas(PATH, sigmas.detach().to("cpu", torch.float64))
        plan = method.compile(PATH, grid, **options)

        first = {}  # grid step -> denoised of its first model call (k-diffusion reports that one)
        calls = {"k": 0}
        steps = plan.step.tolist()

        def fn(xx: Tensor, t: Tensor) -> Tensor:
            k = calls["k"]
            calls["k"] = k + 1
            out = model(xx, t.to(xx.device, sdtype), **extra)
            if callback is not None and (k == 0 or steps[k] != steps[k - 1]):
                first[steps[k]] = out
            return out

        cb = None
        if callback is not None:
            state = {"x": x}
            gsig = grid.sigmas.to(sdtype)

            def cb(info):
                i = int(info["i"])
                callback(
                    {
                        "x": state["x"],
                        "i": i,
                        "sigma": gsig[i],
                        "sigma_hat": gsig[i],
                        "denoised": first.pop(i, info["denoised"]),
                    }
                )
                state["x"] = info["x"].clone()  # the executor's live state: it moves on with the next step

        return execute(
            plan,
            Model(fn, PATH, "x0"),
            x,
            callback=cb,
            progress=disable is False,
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
    return sorted(list(globals()) + available())
