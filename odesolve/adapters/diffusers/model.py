"""A diffusers network (UNet2DModel, UNet2DConditionModel, the transformer models) as an odesolve Model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...models import Model, dynamic_thresholding
from ...paths import Path
from .config import positive
from .families import family_for

__all__ = ["model_from_diffusers", "network_output"]


def network_output(out, like: Tensor) -> Tensor:
    """The prediction in a network's return value: ``.sample`` (diffusers' output classes) or the
    first element of a tuple, with the mean half of a learned-variance output (twice ``like``'s channels)."""
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(
            f"the network must return a tensor, an object with .sample or a tuple, got {type(out).__name__}"
        )
    if out.ndim == like.ndim and like.ndim >= 2 and out.shape[1] == 2 * like.shape[1]:  # learned variance
        out = out[:, : like.shape[1]]
    return out


def _parameter(network) -> Tensor | None:
    if isinstance(network, torch.nn.Module):
        return next(network.parameters(), None)
    return None


def _network_input(network, x: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``x`` on the network's device check, in the network's dtype (its parameters' by default)."""
    p = _parameter(network)
    if p is None:
        return x
    if p.device != x.device:
        raise ValueError(
            f"the network {type(network).__name__} is on {p.device} but x is on {x.device}; "
            f"move one of them (network.to({str(x.device)!r}) or x.to({str(p.device)!r}))"
        )
    if p.is_floating_point() and x.dtype != p.dtype:
        if dtype is None:
            return x.to(p.dtype)  # e.g. a float16 network fed the float32 state
        if not torch.is_autocast_enabled():
            raise ValueError(
                f"the network {type(network).__name__} has {p.dtype} parameters but model_from_diffusers "
                f"was asked to feed it {dtype}; pass dtype={p.dtype} (or leave dtype=None), or convert "
                f"the network with network.to({dtype})"
            )
    return x


def _call(network, x: Tensor, timestep: Tensor, kwargs: dict):
    """Call the network; torch's dtype and device mismatch errors from inside it are re-raised naming x's."""
    try:
        return network(x, timestep, **kwargs)
    except RuntimeError as e:
        msg = str(e)
        if any(k in msg for k in ("same dtype", "scalar type", "should be the same", "same device", "two devices")):
            raise ValueError(
                f"the network {type(network).__name__} failed on an input of dtype {x.dtype} on "
                f"{x.device} ({msg.splitlines()[0]}); pass model_from_diffusers(..., dtype=) the dtype "
                "the network computes in, and keep the network and x on one device"
            ) from e
        raise


def model_from_diffusers(
    network: Callable,
    config,
    *,
    dtype: torch.dtype | None = None,
    clip_sample: bool = False,
    thresholding: bool = False,
    path: Path | None = None,
    **network_kwargs,
) -> Model:
    """An [`odesolve.Model`][odesolve.models.Model] for a diffusers network and the scheduler config it was trained
    with.

    ``network(sample, timestep, **network_kwargs)`` is called with the state (cast to ``dtype``
    when given, e.g. ``torch.float16`` for a half-precision network with a float32 state; by
    default to the dtype of the network's parameters) and the network's timestep as float32
    (`network_time`); ``.sample`` (or the first element of a tuple) is its output. A network
    with a learned variance (twice the channels) gives its first half. EDM networks are
    preconditioned (``c_skip x + c_out F(c_in x)``) and predict x0. ``clip_sample=True`` clips the
    data prediction to ``config.clip_sample_range`` (as DDIMScheduler does when its config says
    so), ``thresholding=True`` applies dynamic thresholding with the config's ratio and maximum
    (Saharia et al. 2022); both are off by default, whatever the config says, since the model is
    the network (OdesolveScheduler follows the config).

    A network on another device than the state, or given a ``dtype`` other than its parameters',
    is refused with an error naming both.
    """
    if not callable(network):
        raise TypeError(f"network must be callable as network(sample, timestep, ...), got {type(network).__name__}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float16, got {dtype!r}")
    family = family_for(config)
    own = family.path
    if path is None:
        path = own
    elif type(path) is not type(own):
        raise ValueError(f"path {path!r} does not describe the config's model ({own!r})")

    def fn(x: Tensor, t: Tensor) -> Tensor:
        x = _network_input(network, x, dtype)
        tn = family.network_time(t).to(torch.float32)
        pre = family.preconditioning(t)
        if pre is None:
            return network_output(_call(network, x, tn, network_kwargs), x)
        c_skip, c_out, c_in = (c.to(x.device, torch.float32).view((-1,) + (1,) * (x.ndim - 1)) for c in pre)
        F = network_output(_call(network, x * c_in.to(x.dtype), tn, network_kwargs), x)
        return (c_skip * x.float() + c_out * F.float()).to(F.dtype)

    fn.__name__ = type(network).__name__
    model = Model(fn, path=path, prediction=family.prediction, dtype=dtype)
    cfg = family.cfg
    if thresholding:
        ratio = positive(cfg, "dynamic_thresholding_ratio", 0.995)
        model = dynamic_thresholding(model, ratio, positive(cfg, "sample_max_value", 1.0))
    elif clip_sample:
        r = positive(cfg, "clip_sample_range", 1.0)
        inner = model
        model = Model(lambda x, t: inner.x0(x, t).clamp(-r, r), path=path, prediction="x0")
    return model
