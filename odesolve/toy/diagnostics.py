"""Diagnostics of samplers and models on the exact toys: hallucination by mode interpolation, the
Fokker-Planck residual of a model's score, and the split of a sampler's error on low-rank mixtures.

**Mode interpolation** (Aithal, Maini, Lipton & Kolter, "Understanding Hallucinations in Diffusion
Models through Mode Interpolation", NeurIPS 2024, arXiv 2406.09358). A learned denoiser is a smooth
approximation of the exact one, whose responsibilities switch sharply between modes; the smooth model
sends samples into the gap between modes, where the data has no mass. Here:

- [`tempered_model`][odesolve.toy.diagnostics.tempered_model]: the exact per-component Wiener filters
  with responsibilities from a likelihood flattened by a temperature ``tau >= 1``,
  ``w_k ~ pi_k N(x; alpha mu_k, C_k)^(1/tau)``: the switch between two modes is ``tau`` times wider,
  the model is exact inside each mode (``w`` saturated), at pure noise (``w = pi``) and at ``tau = 1``;
- [`between_modes`][odesolve.toy.diagnostics.between_modes]: the exact label of a hallucination: the
  Mahalanobis distance ``(x - mu_k)^T Sigma_k^-1 (x - mu_k)`` to *every* component exceeds the
  ``1 - tail`` quantile of ``chi^2_dim`` (so at most a fraction ``tail`` of exact samples is labelled);
- [`record`][odesolve.toy.diagnostics.record] and [`x0_variance`][odesolve.toy.diagnostics.x0_variance]:
  the paper's detector, the variance of the data prediction ``x0_hat`` over the last steps of a
  trajectory (noise levels in a window), summed over coordinates;
- [`roc`][odesolve.toy.diagnostics.roc]: the detector's ROC curve and AUC against the exact label.

**The Fokker-Planck residual** (Lai et al., "FP-Diffusion: Improving Score-based Diffusion Models by
Enforcing the Underlying Score Fokker-Planck Equation", ICML 2023, arXiv 2210.04296; Deveney et al.,
"Closing the ODE-SDE gap in score-based diffusion models through the Fokker-Planck equation", 2023,
arXiv 2311.15996). For the forward SDE ``dx = f x dt + g dW`` of a Gaussian path (``f = alpha'/alpha``,
``g^2 = (sigma^2)' - 2 f sigma^2``) the score ``s = grad log p_t`` obeys

    d s/dt = grad_x [ (g^2/2) (div s + |s|^2) - f x.s ],

and the probability-flow ODE and the reverse SDE of a model share their marginals only where its
score satisfies it. [`fokker_planck_residual`][odesolve.toy.diagnostics.fokker_planck_residual]
evaluates ``R = ds/dt - grad_x[...]`` by automatic differentiation (time derivative included): zero for
every exact mixture, non-zero for ``odesolve.toy.perturbed`` and tempered models.

**Low-rank mixtures** (MoLRG; Wang et al., arXiv 2409.02426).
[`error_split`][odesolve.toy.diagnostics.error_split] splits a sampler's error ``e = x - x*`` against
the reference end point ``x*`` into the part inside a subspace and the orthogonal rest
(``|e|^2 = |P e|^2 + |(I - P) e|^2``): the subspace of the component that owns ``x*``, or the span of
all components (subspaces and means). On the complement of the span, when all components share their
noise floor ``s^2``, the exact denoiser is linear, ``x0_hat = alpha s^2 / (alpha^2 s^2 + sigma^2) x``,
whatever the responsibilities: each complement coordinate follows the probability-flow ODE of the
1-D Gaussian ``N(0, s^2)``, so a deterministic sampler maps it by one number ``R`` (its result on that
Gaussian from ``x = 1``) and the exact flow by ``R* = sqrt((alpha_1^2 s^2 + sigma_1^2) / (alpha_0^2 s^2
+ sigma_0^2))``. [`complement_error`][odesolve.toy.diagnostics.complement_error] predicts the complement
error ``(R - R*)^2 |Q_perp^T x_T|^2`` from this alone.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..grids import Grid
from ..models import Model, Prediction, _check_prediction
from ..paths import Path, check_real
from ._spectral import SpectralMixture

__all__ = [
    "ROC",
    "ErrorSplit",
    "FokkerPlanckResidual",
    "Trajectory",
    "between_modes",
    "complement_error",
    "complement_factor",
    "error_split",
    "fokker_planck_residual",
    "mahalanobis",
    "record",
    "roc",
    "span_basis",
    "tempered_model",
    "x0_variance",
]


def _check_mixture(mixture, name: str = "mixture") -> SpectralMixture:
    if not isinstance(mixture, SpectralMixture):
        raise TypeError(f"{name} must be an odesolve.toy mixture, got {type(mixture).__name__}")
    return mixture


def _check_samples(x, mixture: SpectralMixture, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != mixture.dim:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (batch, {mixture.dim}), got {got}")
    return x.to(torch.float64)


# --------------------------------------------------------------------------------------------
# Mode interpolation
# --------------------------------------------------------------------------------------------


def tempered_model(
    distribution: SpectralMixture, path: Path, temperature: float, *, prediction: Prediction = "x0"
) -> Model:
    """The exact denoiser of ``distribution`` with a tempered posterior over its components:
    ``x0_hat = sum_k w_k [mu_k + alpha Sigma_k C_k^-1 (x - alpha mu_k)]``,
    ``w_k ~ pi_k N(x; alpha mu_k, C_k)^(1 / temperature)`` (``temperature >= 1``; 1 is the exact model).

    A stand-in for an under-fitted network that is exact inside each mode but too smooth between
    them, the cause of mode interpolation (Aithal et al. 2024, arXiv 2406.09358)."""
    _check_mixture(distribution, "distribution")
    if not isinstance(path, Path):
        raise TypeError(f"path must be an odesolve.paths.Path, got {type(path).__name__}")
    tau = check_real(temperature, "temperature", 1.0)
    _check_prediction(prediction)

    def fn(x: Tensor, t: Tensor) -> Tensor:
        xd = distribution._check_x(x)
        la, ls = distribution._log_coefficients(xd, t, path)
        st = distribution._state(xd, la, ls)
        log_w = distribution._params(xd.device).log_w
        st = st._replace(logits=log_w + (st.logits - log_w) / tau)
        one = torch.ones(xd.shape[0], dtype=torch.float64, device=xd.device)
        return distribution._combine(xd, st, one, torch.zeros_like(one)).to(x.dtype)

    fn.__name__ = f"tempered({type(distribution).__name__}, temperature={tau:g}).x0"
    model = Model(fn, path, "x0")
    return model if prediction == "x0" else model.with_prediction(prediction)


def mahalanobis(x: Float[Tensor, "batch dim"], mixture: SpectralMixture) -> Float[Tensor, "batch K"]:
    """Squared Mahalanobis distances ``(x - mu_k)^T Sigma_k^-1 (x - mu_k)`` to every component, in the
    mixture's spectral form (``O(B K d r)``)."""
    _check_mixture(mixture)
    x = _check_samples(x, mixture)
    p = mixture._params(x.device)
    diff = x[:, None, :] - p.mu  # (B, K, d)
    z = torch.einsum("bkd,kdr->bkr", diff, p.V)
    out = (z * z / p.ev).sum(-1)
    if mixture.rank < mixture.dim:
        rest = diff - torch.einsum("bkr,kdr->bkd", z, p.V)
        out = out + (rest * rest).sum(-1) / p.floor
    return out


def _chi2_quantile(q: float, dof: int) -> float:
    from scipy.stats import chi2

    return float(chi2.ppf(q, dof))


def between_modes(
    x: Float[Tensor, "batch dim"], mixture: SpectralMixture, tail: float = 1e-3
) -> Bool[Tensor, " batch"]:
    """True where ``x`` lies between the modes: its squared Mahalanobis distance to every component
    exceeds the ``1 - tail`` quantile of ``chi^2_dim``. An exact sample of component ``k`` exceeds it
    for ``k`` with probability ``tail``, so at most a fraction ``tail`` of exact samples is labelled."""
    tail = check_real(tail, "tail", 0.0, 1.0, lo_open=True, hi_open=True)
    return (mahalanobis(x, mixture) > _chi2_quantile(1.0 - tail, mixture.dim)).all(dim=1)


class Trajectory(NamedTuple):
    """A sampler's run: the end points, and the data prediction of each step's last model call."""

    x: Tensor  # (B, *shape) the samples
    levels: Tensor  # (steps,) the noise level sigma/alpha at the end of each step
    x0: Tensor  # (steps, B, *shape) x0_hat of each step's last call, float64


def record(model: Model, x: Tensor, grid: Grid, method="dpmpp-2m", **options) -> Trajectory:
    """Run [`odesolve.sample`][odesolve.execute.sample] (``options`` are passed on: ``noise``, ``seeds``,
    method options) and keep the data prediction of every step."""
    from ..execute import sample

    if "callback" in options:
        raise TypeError("record sets the callback itself; do not pass callback=")
    preds: list[Tensor] = []
    out = sample(model, x, grid, method, callback=lambda d: preds.append(d["denoised"].to(torch.float64)), **options)
    return Trajectory(out, grid.path.noise_level(grid.t[1:]), torch.stack(preds))


def x0_variance(trajectory: Trajectory, max_level: float, min_level: float = 0.0) -> Float[Tensor, " batch"]:
    """The hallucination detector of Aithal et al. (2024): the variance over steps of ``x0_hat``, over the
    steps whose end noise level lies in ``[min_level, max_level]`` (the last steps), summed over
    coordinates (population variance, ``1/m``)."""
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory (from record), got {type(trajectory).__name__}")
    max_level = check_real(max_level, "max_level", 0.0, lo_open=True)
    min_level = check_real(min_level, "min_level", 0.0)
    sel = (trajectory.levels >= min_level) & (trajectory.levels <= max_level)
    m = int(sel.sum())
    if m < 2:
        raise ValueError(
            f"max_level: the window [{min_level:g}, {max_level:g}] holds {m} step(s) of the trajectory "
            f"(levels {trajectory.levels.min():.3g} .. {trajectory.levels.max():.3g}); it needs at least 2"
        )
    d = trajectory.x0[sel]
    return d.var(dim=0, correction=0).flatten(1).sum(dim=1)


class ROC(NamedTuple):
    """A receiver operating characteristic: a sample is flagged when its score exceeds a threshold."""

    fpr: Tensor  # false positive rates, increasing from 0 to 1
    tpr: Tensor  # true positive rates
    thresholds: Tensor  # flag when score >= threshold (the first one is +inf)
    auc: float  # P(score of a positive > score of a negative) + P(tie) / 2


def roc(scores: Float[Tensor, " n"], labels: Bool[Tensor, " n"]) -> ROC:
    """The ROC of ``scores`` against boolean ``labels`` (True = positive), with the AUC as the
    Mann-Whitney statistic (ties count one half); needs both classes."""
    if not isinstance(scores, Tensor) or scores.ndim != 1:
        raise ValueError(f"scores must be a 1-D tensor, got {getattr(scores, 'shape', type(scores).__name__)}")
    if not isinstance(labels, Tensor) or labels.dtype != torch.bool or labels.shape != scores.shape:
        raise ValueError(f"labels must be a bool tensor of the shape of scores {tuple(scores.shape)}")
    s = scores.to(torch.float64).cpu()
    y = labels.cpu()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels must hold both classes, got {n_pos} positive and {n_neg} negative")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("scores must be finite")
    order = torch.argsort(s, descending=True, stable=True)
    s, y = s[order], y[order]
    last = torch.cat([s[1:] != s[:-1], torch.tensor([True])])  # the end of each run of equal scores
    tp = torch.cumsum(y.double(), 0)[last]
    fp = torch.cumsum((~y).double(), 0)[last]
    zero = torch.zeros(1, dtype=torch.float64)
    tpr, fpr = torch.cat([zero, tp / n_pos]), torch.cat([zero, fp / n_neg])
    auc = float(torch.trapezoid(tpr, fpr))  # the trapezoid over tied runs is the half-credit of ties
    return ROC(fpr, tpr, torch.cat([torch.tensor([math.inf], dtype=torch.float64), s[last]]), auc)


# --------------------------------------------------------------------------------------------
# The Fokker-Planck residual
# --------------------------------------------------------------------------------------------


class FokkerPlanckResidual(NamedTuple):
    """The score Fokker-Planck equation ``ds/dt = grad_x phi`` at (x, t), per sample, float64."""

    residual: Tensor  # (B, d) ds/dt - grad_x phi
    dt_score: Tensor  # (B, d) ds/dt
    terms: Tensor  # (3, B, d) the gradients of (g^2/2) div s, (g^2/2) |s|^2 and -f x.s (they sum to grad_x phi)

    @property
    def relative(self) -> float:
        """``|R| / (|ds/dt| + sum_j |term_j|)`` in the root mean square over the batch: the residual
        against the size of the equation's terms (robust where the terms cancel)."""
        size = self.dt_score.square().sum().sqrt() + self.terms.square().sum(dim=(1, 2)).sqrt().sum()
        return float(self.residual.square().sum().sqrt() / size)


def fokker_planck_residual(model: Model, x: Float[Tensor, "batch dim"], t) -> FokkerPlanckResidual:
    """The residual of the score Fokker-Planck equation (module docstring; Lai et al. 2023,
    arXiv 2210.04296) of ``model.score`` at ``(x, t)`` under ``model.path``: every derivative by
    automatic differentiation through the model (which must be differentiable in ``x`` and ``t``);
    ``2 dim + 3`` backward passes. ``t``: a time or one per sample, inside the path (``0 < sigma``)."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an odesolve.Model, got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a tensor of shape (batch, dim), got {getattr(x, 'shape', type(x).__name__)}")
    path = model.path
    B, d = x.shape
    t = path.check_times(torch.as_tensor(t, dtype=torch.float64), "t").to(x.device)
    if t.ndim == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise ValueError(f"t must be a time or have shape (batch,) = ({B},), got {tuple(t.shape)}")
    if bool((path.sigma(t) <= 0).any()):
        raise ValueError("t must have sigma > 0 (the score is singular at the data)")
    da, ds = path.derivatives(t)
    a, s = path.alpha(t), path.sigma(t)
    f = (da / a)[:, None]
    g2 = (2 * s * ds - 2 * (da / a) * s * s)[:, None]
    with torch.enable_grad(), torch.inference_mode(False):
        xg = x.detach().to(torch.float64).clone().requires_grad_(True)
        tg = t.detach().clone().requires_grad_(True)
        score = model.score(xg, tg).to(torch.float64)
        grads = [torch.autograd.grad(score[:, i].sum(), (xg, tg), create_graph=True) for i in range(d)]
        dt_score = torch.stack([gt for _, gt in grads], dim=1)
        div = sum(gx[:, i] for i, (gx, _) in enumerate(grads))
        parts = (0.5 * g2[:, 0] * div, 0.5 * g2[:, 0] * score.square().sum(1), -f[:, 0] * (xg * score).sum(1))
        terms = torch.stack([torch.autograd.grad(v.sum(), xg, retain_graph=True)[0] for v in parts])
    dt_score = dt_score.detach()
    return FokkerPlanckResidual(dt_score - terms.sum(0), dt_score, terms.detach())


# --------------------------------------------------------------------------------------------
# Low-rank mixtures: the error inside and outside the subspaces
# --------------------------------------------------------------------------------------------


class ErrorSplit(NamedTuple):
    """Per-sample squared errors ``|e|^2 = |P e|^2 + |(I - P) e|^2``."""

    total: Tensor  # (B,) |e|^2
    inside: Tensor  # (B,) |P e|^2
    outside: Tensor  # (B,) |(I - P) e|^2

    def rms(self) -> tuple[float, float, float]:
        """Root mean squares over the batch of the three parts (total, inside, outside)."""
        return tuple(float(v.mean().sqrt()) for v in self)


def span_basis(mixture: SpectralMixture, tol: float = 1e-10) -> Float[Tensor, "dim m"]:
    """An orthonormal basis of the span of all components' subspaces (their stored eigenvectors) and
    means: the smallest subspace outside of which the mixture is isotropic noise (for equal floors)."""
    _check_mixture(mixture)
    p = mixture._params(mixture.device)
    K, d, r = p.V.shape
    A = torch.cat([p.V.permute(1, 0, 2).reshape(d, K * r), p.mu.T], dim=1)
    U, S, _ = torch.linalg.svd(A, full_matrices=False)
    return U[:, S > tol * S.max().clamp(min=1.0)]


def error_split(
    x: Float[Tensor, "batch dim"],
    reference: Float[Tensor, "batch dim"],
    mixture: SpectralMixture,
    where: str = "nearest",
) -> ErrorSplit:
    """Split ``e = x - reference`` by an orthogonal projector ``P``: ``where="nearest"``, the subspace of
    the component that owns the reference end point (most responsible under the data); ``"span"``, the
    span of all components ([`span_basis`][odesolve.toy.diagnostics.span_basis])."""
    _check_mixture(mixture)
    x = _check_samples(x, mixture)
    ref = _check_samples(reference, mixture, "reference")
    if x.shape != ref.shape:
        raise ValueError(f"reference must have the shape of x {tuple(x.shape)}, got {tuple(ref.shape)}")
    e = x - ref
    if where == "nearest":
        V = mixture._params(x.device).V[mixture.assign(ref)]  # (B, d, r)
        inside = torch.einsum("bd,bdr->br", e, V).square().sum(1)
    elif where == "span":
        inside = (e @ span_basis(mixture).to(x.device)).square().sum(1)
    else:
        raise ValueError(f"where must be 'nearest' or 'span', got {where!r}")
    total = e.square().sum(1)
    return ErrorSplit(total, inside, (total - inside).clamp(min=0))


def _common_floor(mixture: SpectralMixture) -> float:
    f = mixture._floor
    if mixture.rank == mixture.dim:
        raise ValueError(f"mixture must be low-rank (rank < dim), got rank {mixture.rank} = dim")
    if bool((f - f[0]).abs().max() > 1e-12 * f[0]):
        raise ValueError(f"mixture: the components' noise floors must be equal, got {f.tolist()}")
    return float(f[0])


def complement_factor(mixture: SpectralMixture, grid: Grid, method="dpmpp-2m", **options) -> tuple[float, float]:
    """``(R, R*)``: the factor by which ``method`` on ``grid`` maps a coordinate of the complement of the
    span (the result on the 1-D Gaussian ``N(0, s^2)`` from ``x = 1``, ``s^2`` the common noise floor),
    and the exact flow's ``sqrt((alpha_1^2 s^2 + sigma_1^2) / (alpha_0^2 s^2 + sigma_0^2))``. Deterministic
    methods only."""
    from ..execute import sample
    from .gaussian import Gaussian

    _check_mixture(mixture)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
    f = _common_floor(mixture)
    model = Gaussian([0.0], [[f]]).model(grid.path)
    R = float(sample(model, torch.ones(1, 1, dtype=torch.float64), grid, method, **options)[0, 0])
    (a0, a1), (s0, s1) = grid.path.alpha(grid.t[[0, -1]]), grid.path.sigma(grid.t[[0, -1]])
    return R, float(torch.sqrt((a1 * a1 * f + s1 * s1) / (a0 * a0 * f + s0 * s0)))


def complement_error(
    mixture: SpectralMixture, x_T: Float[Tensor, "batch dim"], grid: Grid, method="dpmpp-2m", **options
) -> Float[Tensor, " batch"]:
    """The predicted squared error outside the span, ``(R - R*)^2 |(I - Q Q^T) x_T|^2``
    ([`complement_factor`][odesolve.toy.diagnostics.complement_factor]), of a deterministic sampler
    started at ``x_T`` on the exact model of ``mixture``; equal to ``error_split(..., where="span").outside``
    to rounding."""
    x_T = _check_samples(x_T, mixture, "x_T")
    Q = span_basis(mixture).to(x_T.device)
    R, R_exact = complement_factor(mixture, grid, method, **options)
    rest = x_T - (x_T @ Q) @ Q.T
    return (R - R_exact) ** 2 * rest.square().sum(1)
