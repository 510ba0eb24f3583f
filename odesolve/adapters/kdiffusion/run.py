"""The one runner behind every k-diffusion style function: k-diffusion's arguments in, a plan run by
odesolve's executor, k-diffusion's callback out.

``model(x, sigma, **extra_args)`` is a denoiser in EDM coordinates (``x = x0 + sigma * eps``; it
returns the prediction of x0, and ``sigma`` is a tensor of shape ``(batch,)`` in the dtype of
``sigmas``), ``x`` is the state at ``sigmas[0]`` and ``sigmas`` a decreasing tensor of noise levels
that may end at 0. ``callback`` is called once per step with ``{'x', 'i', 'sigma', 'sigma_hat',
'denoised'}`` (the state at the start of step ``i`` and the model's prediction there); ``disable``
switches the progress bar off (k-diffusion shows it by default; here it shows only when
``disable is False``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ... import grids, methods
from ...execute import execute
from ...models import Model
from ...paths import EDM

__all__ = ["PATH", "check_arguments", "grid_of", "run"]

PATH = EDM()  # k-diffusion's coordinates: alpha = 1, sigma = t


def check_arguments(model, extra_args, callback) -> dict:
    """k-diffusion's ``model``, ``extra_args`` and ``callback`` checked; returns the extra arguments."""
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, sigma, **extra_args), got {type(model).__name__}")
    if extra_args is not None and not isinstance(extra_args, dict):
        raise TypeError(
            f"extra_args must be a dict of keyword arguments for the model, got {type(extra_args).__name__}"
        )
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(dict) or None, got {type(callback).__name__}")
    return {} if extra_args is None else extra_args


def grid_of(sigmas) -> tuple[grids.Grid, torch.dtype]:
    """The grid of k-diffusion's ``sigmas`` on ``PATH``, and the dtype the model gets sigma in."""
    if not isinstance(sigmas, Tensor):
        sigmas = torch.as_tensor(sigmas)
    sdtype = sigmas.dtype if sigmas.is_floating_point() else torch.float32
    return grids.from_sigmas(PATH, sigmas.detach().to("cpu", torch.float64)), sdtype


@torch.no_grad()
def run(
    method,
    model: Callable,
    x: Tensor,
    sigmas,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    options: dict | None = None,
    *,
    grid: grids.Grid | None = None,
    noise=None,
    generator: torch.Generator | None = None,
    seeds=None,
) -> Tensor:
    """Sample with the registered ``method`` (a name or a table, compiled with ``options``) on the
    grid of ``sigmas`` (or ``grid``), with k-diffusion's model, callback and progress conventions
    (module docstring). ``noise`` / ``generator`` / ``seeds``: the noise of a stochastic plan, as
    for ``odesolve.execute``."""
    method = methods.get(method)
    extra = check_arguments(model, extra_args, callback)
    if grid is None:
        grid, sdtype = grid_of(sigmas)
    else:
        sdtype = x.dtype if isinstance(x, Tensor) and x.is_floating_point() else torch.float32
    plan = method.compile(PATH, grid, **(options or {}))

    first = {}  # grid step -> (denoised, model input or None, time) of its first model call (k-diffusion reports it)
    calls = {"k": 0}
    steps = plan.step.tolist()
    jumped = (plan.input_noise != 0).tolist()  # EDM's churn: the first call's input is x_hat, not the state

    def fn(xx: Tensor, t: Tensor) -> Tensor:
        k = calls["k"]
        calls["k"] = k + 1
        tt = t.to(xx.device, sdtype)
        out = model(xx, tt, **extra)
        if callback is not None and (k == 0 or steps[k] != steps[k - 1]):
            first[steps[k]] = (out, xx.clone() if jumped[k] else None, tt)
        return out

    cb = None
    if callback is not None:
        state = {"x": x}
        gsig = grid.sigmas.to(sdtype)

        def cb(info):
            i = int(info["i"])
            denoised, x_hat, sigma_hat = first.pop(i, (info["denoised"], None, gsig[i]))
            callback(
                {
                    "x": state["x"] if x_hat is None else x_hat,
                    "i": i,
                    "sigma": gsig[i],
                    "sigma_hat": sigma_hat.reshape(-1)[0] if sigma_hat.ndim else sigma_hat,
                    "denoised": denoised,
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
