"""Models: a network (any callable) with the path it was trained on and what it predicts.

``Model(fn, path=path, prediction="eps")`` wraps ``fn(x, t) -> tensor``. Every prediction type is
an affine function of ``x`` and the network output ``F`` at the same time ``t``:

=========== ============================== ===========================================
prediction  meaning                        data prediction x0
=========== ============================== ===========================================
eps         the noise eps                  (x - sigma F) / alpha
x0          the data x0                    F
v           alpha eps - sigma x0           (alpha x - sigma F) / (alpha^2 + sigma^2)
velocity    dx/dt = alpha' x0 + sigma' eps (sigma' x - sigma F) / (alpha sigma' - sigma alpha')
score       grad log p_t = -eps / sigma    (x + sigma^2 F) / alpha
=========== ============================== ===========================================

so conversions are two float64 coefficients per time, computed once for a whole grid
([`Model.conversion`][odesolve.models.Model.conversion]), and the solvers never branch on the prediction type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from .paths import Path, as_time, check_real

__all__ = ["Model", "Prediction", "classifier_free_guidance", "clip_data", "dynamic_thresholding"]

Prediction = Literal["eps", "x0", "v", "velocity", "score"]
PREDICTIONS = get_args(Prediction)


def _check_prediction(prediction, name="prediction"):
    if not isinstance(prediction, str) or prediction not in PREDICTIONS:
        raise ValueError(f"{name} must be one of {PREDICTIONS}, got {prediction!r}")
    return prediction


def conversion(path: Path, prediction: str, target: str, t) -> tuple[Float[Tensor, "*t"], Float[Tensor, "*t"]]:
    """Coefficients ``(c_x, c_F)`` with ``target = c_x * x + c_F * F`` for an output ``F`` of type
    ``prediction`` at times ``t`` (float64, broadcast over ``t``). ``target`` is ``"x0"`` or ``"eps"``."""
    _check_prediction(prediction)
    if target not in ("x0", "eps"):
        raise ValueError(f"target must be 'x0' or 'eps', got {target!r}")
    t = as_time(t)
    if bool(torch.isnan(t).any()):
        raise ValueError(f"t must be times of {path!r}, got NaN")
    cx, cf = _coefficients(path, prediction, target, t)
    bad = ~(torch.isfinite(cx) & torch.isfinite(cf))
    if bool(bad.any()):
        tb = float(t.expand_as(bad)[bad].flatten()[0])
        a, s = float(path.alpha(tb)), float(path.sigma(tb))
        if target == "x0":
            why = (
                f"at alpha = {a:g} the state is pure noise, so a {prediction!r} output carries no information "
                "about x0 (zero terminal SNR, or flow matching at t = 1). Start the grid where alpha > 0 (for "
                "example a t_start below the path's t_max), or use a model that predicts 'v', 'velocity' or 'x0'"
            )
        else:
            why = (
                f"at sigma = {s:g} the state carries no noise, so a {prediction!r} output carries no information "
                "about eps. End the grid where sigma > 0, or use a data-prediction method (target 'x0')"
            )
        raise ValueError(
            f"prediction {prediction!r} cannot be converted to {target!r} at t = {tb:g} of {path!r}: {why}"
        )
    return cx, cf


def _coefficients(path: Path, prediction: str, target: str, t: Tensor) -> tuple[Tensor, Tensor]:
    a, s = path.alpha(t), path.sigma(t)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    if prediction in ("x0", "eps"):
        if prediction == target:
            return zero, one
        # x0 = (x - s eps)/a ; eps = (x - a x0)/s
        d = a if target == "x0" else s
        other = s if target == "x0" else a
        return 1 / d, -other / d
    if prediction == "score":  # eps = -s F
        if target == "eps":
            return zero, -s
        return 1 / a, s * s / a
    if prediction == "v":
        n = a * a + s * s
        return (a / n, -s / n) if target == "x0" else (s / n, a / n)
    da, ds = path.derivatives(t)
    det = a * ds - s * da  # = -alpha sigma d(lambda)/dt > 0
    return (ds / det, -s / det) if target == "x0" else (-da / det, a / det)


class Model:
    """A denoising network with its path and prediction type.

    ``fn(x, t)`` receives ``x`` (the state, cast to ``dtype`` when given) and ``t``, a float64
    tensor of shape ``(batch,)`` in the path's own time, and returns a tensor shaped like ``x``.
    ``model(x, t)`` returns the native prediction; ``x0``, ``eps``, ``v``, ``velocity`` and
    ``score`` return the others through the exact linear relations above.
    """

    def __init__(
        self,
        fn: Callable[[Tensor, Tensor], Tensor],
        path: Path,
        prediction: str = "eps",
        *,
        dtype: torch.dtype | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable fn(x, t) -> tensor, got {type(fn).__name__}")
        if not isinstance(path, Path):
            raise TypeError(f"path must be an odesolve.paths.Path, got {type(path).__name__}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and (dtype.is_floating_point or dtype.is_complex)):
            raise TypeError(f"dtype must be a floating torch.dtype such as torch.float16 or None, got {dtype!r}")
        if dtype is not None and dtype.is_complex:
            raise TypeError(f"dtype must be a real floating torch.dtype, got {dtype}")
        self.fn, self.path, self.prediction = fn, path, _check_prediction(prediction)
        self.dtype = dtype

    def __repr__(self):
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"Model({name}, path={self.path!r}, prediction={self.prediction!r})"

    def _times(self, x: Tensor, t) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim == 0:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"x must be a torch.Tensor of shape (batch, ...), got {got}")
        t = as_time(t).to(x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape (batch,) = ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    def __call__(self, x: Shaped[Tensor, " batch *shape"], t) -> Shaped[Tensor, " batch *shape"]:
        t = self._times(x, t)
        out = self.fn(x if self.dtype is None else x.to(self.dtype), t)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the model must return a tensor of the input's shape {tuple(x.shape)}, got {got}")
        return out

    def predict(self, x: Shaped[Tensor, " batch *shape"], t, target: Prediction) -> Shaped[Tensor, " batch *shape"]:
        """The prediction ``target`` at ``(x, t)``, in the dtype of ``x`` (at least float32)."""
        _check_prediction(target, "target")
        out = self(x, t)
        if target == self.prediction:
            return out.to(torch.promote_types(x.dtype, torch.float32))
        t = self._times(x, t)
        wd = torch.promote_types(x.dtype, torch.float32)
        shape = (-1,) + (1,) * (x.ndim - 1)
        if target in ("x0", "eps"):
            cx, cf = conversion(self.path, self.prediction, target, t)
            return cx.to(x.device, wd).view(shape) * x.to(wd) + cf.to(x.device, wd).view(shape) * out.to(wd)
        x0 = self.predict(x, t, "x0")
        eps = self.predict(x, t, "eps")
        a, s = (v.to(x.device, wd).view(shape) for v in (self.path.alpha(t), self.path.sigma(t)))
        if target == "v":
            return a * eps - s * x0
        if target == "score":
            return -eps / s
        da, ds = (v.to(x.device, wd).view(shape) for v in self.path.derivatives(t))
        return da * x0 + ds * eps

    def x0(self, x, t):
        return self.predict(x, t, "x0")

    def eps(self, x, t):
        return self.predict(x, t, "eps")

    def v(self, x, t):
        return self.predict(x, t, "v")

    def velocity(self, x, t):
        return self.predict(x, t, "velocity")

    def score(self, x, t):
        return self.predict(x, t, "score")

    def conversion(self, target: str, t) -> tuple[Tensor, Tensor]:
        """``(c_x, c_F)`` with ``target = c_x x + c_F model(x, t)``; see [`conversion`][odesolve.models.conversion]."""
        return conversion(self.path, self.prediction, target, t)

    def with_prediction(self, target: Prediction) -> Model:
        """The same network, seen through another prediction type."""
        return Model(lambda x, t: self.predict(x, t, target), self.path, target)


def classifier_free_guidance(fn: Callable, scale: float, cond, uncond) -> Callable[[Tensor, Tensor], Tensor]:
    """``fn(x, t, c)`` -> guided ``fn(x, t)``: ``F_u + scale (F_c - F_u)`` (Ho & Salimans 2022).

    Conditional and unconditional outputs come from one batched call on ``[x, x]``. The
    combination is affine-invariant, so it means the same for every prediction type.
    """

    if not callable(fn):
        raise TypeError(f"fn must be callable fn(x, t, c) -> tensor, got {type(fn).__name__}")
    scale = check_real(scale, "scale")
    if isinstance(cond, Tensor) != isinstance(uncond, Tensor):
        raise TypeError(
            f"cond and uncond must both be tensors or both not, got {type(cond).__name__} and {type(uncond).__name__}"
        )
    if isinstance(cond, Tensor) and (cond.ndim == 0 or cond.shape != uncond.shape):
        raise ValueError(
            f"cond and uncond must have the same shape (batch, ...), got {tuple(cond.shape)} and {tuple(uncond.shape)}"
        )

    def guided(x: Tensor, t: Tensor) -> Tensor:
        if isinstance(cond, Tensor) and cond.shape[0] != x.shape[0]:
            raise ValueError(
                f"cond and uncond must have one row per sample: batch {x.shape[0]}, got {cond.shape[0]} rows"
            )
        c = torch.cat([uncond, cond]) if isinstance(cond, Tensor) else [uncond, cond]
        out_u, out_c = fn(torch.cat([x, x]), torch.cat([t, t]), c).chunk(2)
        return out_u + scale * (out_c - out_u)

    return guided


def dynamic_thresholding(model: Model, ratio: float = 0.995, max_value: float = 1.0) -> Model:
    """Imagen's dynamic thresholding (Saharia et al. 2022), as used by DPM-Solver++: the data
    prediction is clipped per sample to ``[-s, s]`` and divided by ``s``, where ``s`` is the
    ``ratio`` quantile of ``|x0|`` clamped to ``[1, max_value]``. The result predicts ``x0``."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an odesolve.Model, got {type(model).__name__}")
    ratio = check_real(ratio, "ratio (diffusers: dynamic_thresholding_ratio)", 0.0, 1.0, lo_open=True)
    max_value = check_real(max_value, "max_value (diffusers: sample_max_value)", 0.0, lo_open=True)

    def thresholded(x: Tensor, t: Tensor) -> Tensor:
        x0 = model.x0(x, t)
        flat = x0.reshape(x0.shape[0], -1).abs()
        s = torch.quantile(flat.float(), ratio, dim=1).to(x0.dtype).clamp(min=1.0, max=max_value)
        s = s.view((-1,) + (1,) * (x0.ndim - 1))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    return Model(thresholded, model.path, "x0")


def clip_data(model: Model, clip_sample_range: float = 1.0) -> Model:
    """The data prediction of ``model`` clipped to ``[-clip_sample_range, clip_sample_range]`` (DDIM's
    ``clip_sample``). The result predicts ``x0``."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an odesolve.Model, got {type(model).__name__}")
    r = check_real(clip_sample_range, "clip_sample_range", 0.0, lo_open=True)

    def clipped(x: Tensor, t: Tensor) -> Tensor:
        return model.x0(x, t).clamp(-r, r)

    return Model(clipped, model.path, "x0")
