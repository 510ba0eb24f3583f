"""Guidance: models built from two predictions of the data, ``D_c`` (guiding) and ``D_u`` (guided against).

Every wrapper here takes [`Model`][odesolve.models.Model]s and returns a Model that predicts ``x0``, so any
method of the executor runs it. With ``Delta = D_c - D_u`` and a scale ``s`` (diffusers' ``guidance_scale``;
``s = 1`` is no guidance):

- [`classifier_free_guidance`][odesolve.models.classifier_free_guidance] (Ho & Salimans 2022): ``D_u + s Delta``
  (on the raw network output; re-exported here).
- [`adaptive_projected_guidance`][odesolve.guidance.adaptive_projected_guidance] (APG, Sadat et al. 2024,
  arXiv 2410.02416): ``D_c + (s - 1) (Delta_perp + eta Delta_par)``, ``Delta`` split per sample into its parts
  parallel and orthogonal to ``D_c``, after a negative momentum and a norm threshold.
- [`cfg_plus_plus`][odesolve.guidance.cfg_plus_plus] (CFG++, Chung et al. 2024, arXiv 2406.08070): DDIM steps
  to ``alpha' (D_u + lam Delta) + sigma' eps_u``, renoised with the *unconditional* noise.
- [`autoguidance`][odesolve.guidance.autoguidance] (Karras et al. 2024, arXiv 2406.02507):
  ``D_weak + w (D_good - D_weak)``, guiding a model with a weaker version of itself.
- [`guidance_interval`][odesolve.guidance.guidance_interval] (Kynkaanniemi et al. 2024, arXiv 2404.07724): a
  guided model for noise levels in ``(sigma_lo, sigma_hi]``, the unguided one elsewhere; composes with all above.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .grids import Grid
from .models import Model, classifier_free_guidance
from .paths import check_real

__all__ = [
    "AdaptiveProjectedGuidance",
    "adaptive_projected_guidance",
    "autoguidance",
    "cfg_plus_plus",
    "classifier_free_guidance",
    "guidance_interval",
]


def _check_pair(a, b, names: tuple[str, str]) -> None:
    for m, name in zip((a, b), names):
        if not isinstance(m, Model):
            raise TypeError(f"{name} must be an odesolve.Model, got {type(m).__name__}")
    if a.path != b.path:
        raise ValueError(f"{names[0]} and {names[1]} must share one path, got {a.path!r} and {b.path!r}")


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.view((-1,) + (1,) * (like.ndim - 1))


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)


class AdaptiveProjectedGuidance:
    """The APG data prediction as a stateful ``fn(x, t) -> x0``; see
    [`adaptive_projected_guidance`][odesolve.guidance.adaptive_projected_guidance].

    The momentum's running difference is the state. It is reset by [`reset`][odesolve.guidance.
    AdaptiveProjectedGuidance.reset], and automatically when a call comes at a larger time than the previous
    one (a new sampling run starts at the noise end) or with another batch shape.
    """

    def __init__(self, cond: Model, uncond: Model, scale: float, eta: float, norm_threshold: float, momentum: float):
        _check_pair(cond, uncond, ("cond", "uncond"))
        self.cond, self.uncond = cond, uncond
        self.scale = check_real(scale, "scale")
        self.eta = check_real(eta, "eta")
        self.norm_threshold = check_real(norm_threshold, "norm_threshold", 0.0, lo_open=True, allow_inf=True)
        self.momentum = check_real(momentum, "momentum", -1.0, 1.0, lo_open=True, hi_open=True)
        self.reset()

    def reset(self) -> None:
        """Forget the momentum (call it between sampling runs that do not start at a larger time)."""
        self._running: Tensor | None = None
        self._last_t: float | None = None

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        d_c, d_u = self.cond.x0(x, t), self.uncond.x0(x, t)
        delta = d_c - d_u
        t_now = float(t.max())
        if self._running is None or self._running.shape != delta.shape or t_now > self._last_t:
            self._running = torch.zeros_like(delta)
        delta = delta + self.momentum * self._running
        self._running, self._last_t = delta, t_now
        if math.isfinite(self.norm_threshold):
            norm = delta.flatten(1).norm(dim=1)
            shrink = (self.norm_threshold / norm.clamp(min=torch.finfo(norm.dtype).tiny)).clamp(max=1.0)
            delta = delta * _per_sample(shrink, delta)
        dc2 = _dot(d_c, d_c)
        coef = torch.where(dc2 > 0, _dot(delta, d_c) / dc2.clamp(min=torch.finfo(dc2.dtype).tiny), 0.0)
        parallel = _per_sample(coef, d_c) * d_c
        return d_c + (self.scale - 1.0) * (delta - parallel + self.eta * parallel)


def adaptive_projected_guidance(
    cond: Model,
    uncond: Model,
    scale: float,
    *,
    eta: float = 0.0,
    norm_threshold: float = math.inf,
    momentum: float = 0.0,
) -> Model:
    """Adaptive projected guidance (Sadat, Hilliges & Weber 2024, arXiv 2410.02416), predicting ``x0``.

    Per call, with ``Delta = D_c - D_u`` (data predictions of ``cond`` and ``uncond``):

    1. momentum: ``Delta <- Delta + momentum * Delta_prev`` (``Delta_prev`` the previous call's result; the paper
       uses a negative ``momentum``, e.g. ``-0.5``);
    2. rescaling: ``Delta <- Delta * min(1, norm_threshold / ||Delta||)`` (per-sample norm);
    3. projection: ``Delta_par = (<Delta, D_c> / <D_c, D_c>) D_c``, ``Delta_perp = Delta - Delta_par``;
    4. ``D = D_c + (scale - 1) (Delta_perp + eta Delta_par)``.

    ``eta = 1``, ``momentum = 0`` and no threshold is classifier-free guidance of ``scale``. The momentum is
    state, kept by the returned model's ``fn`` (an [`AdaptiveProjectedGuidance`][odesolve.guidance.
    AdaptiveProjectedGuidance]): it runs over the model *calls*, one per step for DDIM / Euler as in the paper,
    and is reset when a call comes at a larger time than the last (a new run) or by ``model.fn.reset()``.
    """
    fn = AdaptiveProjectedGuidance(cond, uncond, scale, eta, norm_threshold, momentum)
    return Model(fn, cond.path, "x0")


def cfg_plus_plus(cond: Model, uncond: Model, scale: float, grid: Grid) -> Model:
    """CFG++ (Chung et al. 2024, arXiv 2406.08070) for DDIM on ``grid``, predicting ``x0``.

    The paper's step from ``x`` at ``t_i`` to ``t_{i+1}`` (``alpha'``, ``sigma'``) is
    ``x' = alpha' D_lam + sigma' eps_u`` with ``D_lam = D_u + lam (D_c - D_u)``, ``lam`` in ``[0, 1]``, and
    ``eps_u = (x - alpha D_u) / sigma``: the guided data prediction, renoised with the unconditional noise.
    A DDIM step with data prediction ``D`` is ``alpha' D + sigma' (x - alpha D) / sigma``; solving for ``D``
    gives the model returned here,

        ``D = D_u + lam / (1 - exp(-h)) (D_c - D_u)``,  ``h = lambda(t_{i+1}) - lambda(t_i)``,

    so ``method="ddim"`` on ``grid`` runs the paper's algorithm exactly (CFG++ is CFG with a step-dependent scale
    ``lam / (1 - e^-h) > lam``; the last step to ``sigma = 0`` uses ``lam``). The model needs the step, so it
    accepts only the times of ``grid`` before its last; other methods evaluate elsewhere and are refused there.
    """
    _check_pair(cond, uncond, ("cond", "uncond"))
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
    if grid.path != cond.path:
        raise ValueError(f"grid must be on the models' path {cond.path!r}, got {grid.path!r}")
    lam = check_real(scale, "scale (CFG++'s lambda)", 0.0)
    times, lambdas = grid.t, grid.lambdas
    h = lambdas[1:] - lambdas[:-1]
    step_scale = lam / -torch.expm1(-h)  # inf - finite = inf -> lam at a last step to sigma = 0

    def guided(x: Tensor, t: Tensor) -> Tensor:
        tt = times.to(t.device)
        i = (t[:, None] - tt[None, :-1]).abs().argmin(dim=1)
        off = (t - tt[i]).abs() > 1e-12 * tt[i].abs().clamp(min=1.0)
        if bool(off.any()):
            raise ValueError(
                f"cfg_plus_plus: t = {float(t[off][0]):g} is not a time of the grid before its last; CFG++ is "
                "defined for DDIM steps (method='ddim' on the grid given to cfg_plus_plus)"
            )
        d_c, d_u = cond.x0(x, t), uncond.x0(x, t)
        return d_u + _per_sample(step_scale.to(t.device, d_u.dtype)[i], d_u) * (d_c - d_u)

    return Model(guided, cond.path, "x0")


def autoguidance(good: Model, weak: Model, scale: float) -> Model:
    """Autoguidance (Karras et al. 2024, arXiv 2406.02507): ``D = D_weak + scale (D_good - D_weak)``, predicting
    ``x0``; ``weak`` is a weaker version of the same model (smaller, or trained shorter), both of one condition.
    ``scale = 1`` (or ``weak == good``) is ``good`` itself."""
    _check_pair(good, weak, ("good", "weak"))
    w = check_real(scale, "scale")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        d_weak = weak.x0(x, t)
        return d_weak + w * (good.x0(x, t) - d_weak)

    return Model(guided, good.path, "x0")


def guidance_interval(guided: Model, unguided: Model, sigma_lo: float = 0.0, sigma_hi: float = math.inf) -> Model:
    """Guidance limited to an interval of noise levels (Kynkaanniemi et al. 2024, arXiv 2404.07724), predicting
    ``x0``: ``guided`` where the noise level ``sigma / alpha`` lies in ``(sigma_lo, sigma_hi]``, ``unguided`` (the
    conditional model: scale 1) elsewhere. ``guided`` is any guided model (CFG, APG, autoguidance, ...).
    Only the model whose noise levels are present in the batch is called (both when a batch holds both)."""
    _check_pair(guided, unguided, ("guided", "unguided"))
    lo = check_real(sigma_lo, "sigma_lo", 0.0)
    hi = check_real(sigma_hi, "sigma_hi", lo, allow_inf=True)
    if hi <= lo:
        raise ValueError(f"sigma_hi must be > sigma_lo = {lo:g}, got {hi:g}")

    def limited(x: Tensor, t: Tensor) -> Tensor:
        sigma = guided.path.noise_level(t)
        inside = (sigma > lo) & (sigma <= hi)
        if bool(inside.all()):
            return guided.x0(x, t)
        if not bool(inside.any()):
            return unguided.x0(x, t)
        return torch.where(_per_sample(inside.to(x.device), x), guided.x0(x, t), unguided.x0(x, t))

    return Model(limited, guided.path, "x0")
