"""Fit a sampler to one model: the grid alone, or every coefficient of its plan.

The loss is global, as in LD3 (Tong et al. 2025) and BNS (Shaul et al. 2024): the mean squared
difference between the fitted sampler's final states and a teacher's from the same starting noise,
its gradient taken through the differentiable compile (`Method.compile` is float64 torch) and
the executor. The teacher's final states are computed once per fit, for the training and the
validation noise, which never mix: the validation loss is reported after every epoch, never enters
a gradient, and (with ``select``, the default) picks the epoch that is returned (early stopping).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import grids as _grids
from .. import methods as _methods
from ..execute import execute, sample
from ..grids import Grid
from ..methods.fitted import FittedPlan
from ..models import Model
from ..paths import check_int
from .parametrize import GridLogits, RowCorrection

__all__ = ["FAMILIES", "LOSSES", "SEARCHES", "Fitted", "dp_path", "fit", "teacher_solve"]

FAMILIES = ("grid", "coefficients")
SEARCHES = ("gradient", "dp")
LOSSES = ("mse", "l2")


@dataclass(frozen=True, eq=False)
class Fitted:
    """A fitted sampler: run it with ``ods.sample(model, x_T, fitted.grid, method=fitted.method)``.

    ``val_loss`` / ``train_loss`` / ``init_val_loss``: root mean squared error against the teacher
    (per element) on the validation noise after and before the fit, and on the training noise;
    ``history``: the validation loss after each epoch; ``parameters``: the degrees of freedom fitted;
    ``fit_seconds``: wall time of the fit, the teacher included."""

    family: str
    grid: Grid
    method: _methods.Method
    nfe: int
    init: str
    parameters: int
    train_loss: float
    val_loss: float
    init_val_loss: float
    fit_seconds: float
    history: tuple[float, ...] = ()
    settings: dict = field(default_factory=dict)
    model: str = ""

    def plan(self):
        """The compiled ``odesolve.plan.Plan`` (``method`` on ``grid``): what ``sample`` runs."""
        return self.method.compile(self.grid.path, self.grid)

    def sample(self, model: Model, x_T: Tensor, **kwargs) -> Tensor:
        """``ods.sample(model, x_T, self.grid, method=self.method, **kwargs)``."""
        return sample(model, x_T, self.grid, method=self.method, **kwargs)

    def save(self, path) -> None:
        """Write a JSON file with exact float64 numbers (see [`odesolve.learn.load`][odesolve.learn.io.load])."""
        from .io import save

        save(self, path)

    def __repr__(self):
        return (
            f"Fitted({self.family!r}, init={self.init!r}, nfe={self.nfe}, parameters={self.parameters}, "
            f"val_loss={self.val_loss:.4g} (from {self.init_val_loss:.4g}), fit {self.fit_seconds:.1f} s)"
        )


def teacher_solve(model: Model, x_T: Tensor, grid: Grid, teacher=None, *, teacher_steps: int = 256) -> Tensor:
    """The teacher's final states from ``x_T`` at ``grid.t[0]`` to ``grid.t[-1]`` (float64):

    - ``None`` or ``"reference"``: [`odesolve.toy.reference.solve`][odesolve.toy.reference.solve] (adaptive DOP853 at
      ``rtol = atol = 1e-10``, self-checked), for exact float64 models;
    - a registered method name or table: that method on ``grid`` with every step split into
      ``ceil(teacher_steps / grid.steps)`` steps uniform in lambda (steps of infinite length stay one);
    - a callable ``x_T -> x_0``."""
    x = x_T.detach().to(torch.float64)
    if teacher is None or (isinstance(teacher, str) and teacher == "reference"):
        from ..toy.reference import solve

        return solve(model, x, grid.t[0], grid.t[-1], rtol=1e-10, atol=1e-10)
    if isinstance(teacher, (str, _methods.Method)):
        teacher = _methods.get(teacher)
        check_int(teacher_steps, "teacher_steps", 1)
        fine = refine(grid, math.ceil(teacher_steps / grid.steps))
        with torch.no_grad():
            return sample(model, x, fine, method=teacher).to(torch.float64)
    if callable(teacher):
        with torch.no_grad():
            out = teacher(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ValueError(
                f"teacher must return a tensor of the starting noise's shape {tuple(x.shape)}, got "
                f"{getattr(out, 'shape', type(out).__name__)}"
            )
        return out.detach().to(torch.float64)
    raise TypeError(
        f"teacher must be None, 'reference', a registered method name or table, or a callable "
        f"x_T -> x_0; got {type(teacher).__name__}"
    )


def refine(grid: Grid, m: int) -> Grid:
    """Every step of ``grid`` split into ``m`` steps uniform in lambda (steps of infinite length stay one)."""
    lam = grid.lambdas
    pieces = [grid.t[:1]]
    u = torch.linspace(0, 1, m + 1, dtype=torch.float64)[1:]
    for n in range(grid.steps):
        if bool(torch.isfinite(lam[n : n + 2]).all()):
            pieces.append(grid.path.t_of_lambda(lam[n] + (lam[n + 1] - lam[n]) * u)[:-1])
        pieces.append(grid.t[n + 1 : n + 2])
    return Grid(grid.path, torch.cat(pieces))


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return ((a - b) ** 2).mean()


def _l2(a: Tensor, b: Tensor) -> Tensor:
    return ((a - b) ** 2).flatten(1).sum(1).add(1e-30).sqrt().mean()


def fit(
    model: Model,
    x_T: Tensor,
    nfe: int = 5,
    family: str = "grid",
    init="dpmpp-2m",
    grid: Grid | None = None,
    teacher=None,
    x_T_val: Tensor | None = None,
    *,
    window: int = 3,
    iterations: int = 60,
    epochs: int = 6,
    teacher_steps: int = 256,
    restarts: int = 4,
    select: bool = True,
    loss: str = "mse",
    shift_times: bool = False,
    search: str = "gradient",
    fine: int = 8,
    soft_radius: float = 0.0,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
) -> Fitted:
    """Fit a sampler with ``nfe`` model calls to ``model`` from the starting noise ``x_T`` (at ``grid.t[0]``).

    Args:
        family: ``"grid"`` (the interior times of ``grid``, for the registered method ``init``) or
            ``"coefficients"`` (the grid and a zero-row-sum correction of every history coefficient
            of ``init``'s plan, reading up to ``window`` outputs: a non-stationary table,
            `FittedPlan`, exact for constant predictions and for the
            linear part as its initial method is).
        init: a registered deterministic method (name or table).
        grid: the initial grid, its ends kept (default: Karras, EDM's sigma range, to sigma = 0, with
            the steps that make ``nfe`` calls); ``init`` must make ``nfe`` calls on it.
        teacher: see [`teacher_solve`][odesolve.learn.fit.teacher_solve] (default: the high-accuracy reference solver).
        x_T_val: validation noise (default: the last quarter of ``x_T``, not trained on).
        iterations, epochs: L-BFGS iterations (strong Wolfe line search) per epoch, and epochs; the
            validation loss is computed after each epoch (``callback(epoch, val_loss)``).
        restarts: starting grids of the first epoch (the initial one and seeded perturbations); the one
            with the lowest training loss goes on.
        loss: ``"mse"`` (the mean squared error) or ``"l2"`` (the mean over samples of the error's norm,
            as LD3: a few training points with large errors weigh less).
        shift_times: for ``"coefficients"``, also move each model call's time by up to 1 in lambda
            (``tanh``-bounded; the plan's result on a constant prediction does not depend on it).
        search: for ``"grid"``: ``"gradient"`` (L-BFGS through the compile) or ``"dp"``, the dynamic
            program of GITS (Chen et al. 2024) over the points of ``grid`` refined ``fine`` times:
            the teacher's states at every fine point, the squared error of one step of ``init``
            between every pair of points (the local truncation error), and the path of ``grid.steps``
            steps with the least total cost (no gradients: any model, any method; ``init`` makes one
            step from each point as it makes its first, so multistep methods are judged by their
            starting step). ``teacher`` must be None, ``"reference"`` or a method (states are needed
            at every fine point).
        soft_radius: LD3's soft teacher forcing (Tong et al. 2025): the sampler may start anywhere
            in a ball of radius ``soft_radius * |x_T|`` around each training point to reach its
            teacher's state; the starts are fitted with the sampler and never used on validation noise.
        select: return the parameters of the epoch with the lowest validation loss (early stopping;
            the coefficients can overfit the training noise); otherwise those of the last epoch. With
            ``select`` the reported ``val_loss`` took part in a choice: measure on a third draw of noise.
    """
    t_start = time.perf_counter()
    if not isinstance(model, Model):
        raise TypeError(f"model must be an odesolve.Model, got {type(model).__name__}")
    nfe = check_int(nfe, "nfe", 1)
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    m = _methods.get(init) if isinstance(init, str) else init
    if not isinstance(m, _methods.Method):
        raise TypeError(f"init must be a registered method name or an odesolve.methods.Method, got {init!r}")
    if isinstance(m, FittedPlan):
        raise TypeError("init must be a method that compiles for any grid, not a FittedPlan")
    window = check_int(window, "window", 1, 16)
    iterations, epochs = check_int(iterations, "iterations", 1), check_int(epochs, "epochs", 1)
    restarts = check_int(restarts, "restarts", 1)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if shift_times and family != "coefficients":
        raise ValueError(f"shift_times moves the calls of a fitted plan: family must be 'coefficients', got {family!r}")
    if search == "dp" and family != "grid":
        raise ValueError(f"search 'dp' fits family 'grid' only, got family {family!r}")
    fine = check_int(fine, "fine", 1)
    if isinstance(soft_radius, bool) or not isinstance(soft_radius, (int, float)) or not 0 <= soft_radius < 1:
        raise ValueError(f"soft_radius must be a number in [0, 1), got {soft_radius!r}")
    if family == "coefficients" and epochs < 2:
        raise ValueError(f"epochs must be at least 2 for family 'coefficients' (grid, then coefficients), got {epochs}")
    if grid is None:  # the Karras grid on which init makes nfe calls (a last step to sigma = 0 may make fewer)
        candidates = [_grids.karras(model.path, n) for n in range(2, nfe + 2)]
        grid = next((g for g in candidates if m.compile(g.path, g).calls == nfe), None)
        if grid is None:
            raise ValueError(f"nfe = {nfe}: no Karras grid gives {m.name} exactly {nfe} model calls; pass a grid")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an odesolve.grids.Grid, got {type(grid).__name__}")
    if grid.path != model.path:
        raise ValueError(f"grid was built for {grid.path!r}, not for the model's path {model.path!r}")
    grid = Grid(grid.path, grid.t.detach())
    plan0 = m.compile(grid.path, grid)
    if plan0.calls != nfe:
        raise ValueError(
            f"nfe = {nfe} but {m.name} on the given grid ({grid.steps} steps) makes {plan0.calls} model "
            "calls; pass a grid with nfe / calls_per_step steps"
        )
    if plan0.stochastic:
        raise ValueError(f"init {m.name!r} injects noise; fit a deterministic method")
    x_train, x_val = _split(x_T, x_T_val)
    try:  # one call on one starting point: a state shape the model does not take is named here
        with torch.no_grad():
            probe = model(x_train[:1], grid.t[:1])
        ok = isinstance(probe, Tensor) and probe.shape == x_train[:1].shape
    except (RuntimeError, ValueError, IndexError, TypeError):
        ok = False
    if not ok:
        raise ValueError(
            f"x_T: the model does not map starting points of state shape {tuple(x_train.shape[1:])} to "
            "outputs of that shape; pass x_T of shape (batch, *state) for this model"
        )
    if search == "dp":
        return _fit_dp(model, m, grid, teacher, x_train, x_val, nfe, fine, teacher_steps, t_start)
    targets = teacher_solve(model, torch.cat([x_train, x_val]), grid, teacher, teacher_steps=teacher_steps)
    y_train, y_val = targets[: len(x_train)], targets[len(x_train) :]

    logits = GridLogits(grid)
    theta = logits.initial.clone().requires_grad_(True)
    params = [theta]
    corr = None
    if family == "coefficients":
        corr = RowCorrection(plan0, window, shift_times)
        params += [p.requires_grad_(True) for p in corr.zeros()]

    def build(ps) -> tuple[Grid, object]:
        g = logits.grid(ps[0])
        plan = m.compile(g.path, g)
        return g, plan if corr is None else corr.apply(plan, *ps[1:])

    def mse(x, y, ps) -> Tensor:
        _, plan = build(ps)
        return _mse(execute(plan, model, x), y)

    # LD3's soft teacher forcing: per training point a start within soft_radius |x_T| of it
    extra, norm = [], x_train.flatten(1).norm(dim=1).view(-1, *[1] * (x_train.ndim - 1))
    if soft_radius > 0:
        extra = [torch.zeros_like(x_train).requires_grad_(True)]

    def starts_of(x) -> Tensor:
        if not extra:
            return x
        d = extra[0]
        dn = d.flatten(1).norm(dim=1).view_as(norm)
        return x + soft_radius * norm * d / torch.sqrt(1 + dn**2)

    def objective(x, y, ps) -> Tensor:
        _, plan = build(ps)
        out = execute(plan, model, starts_of(x))
        return _l2(out, y) if loss == "l2" else _mse(out, y)

    def val_loss(ps) -> float:
        with torch.no_grad():
            return math.sqrt(float(mse(x_val, y_val, [p.detach() for p in ps])))

    init_val = val_loss(params)

    def closure():
        opt.zero_grad()
        try:
            value = objective(x_train, y_train, params)
        except (ValueError, FloatingPointError):  # a line search reached a degenerate grid: reject the point
            return torch.tensor(math.inf, dtype=torch.float64)
        if torch.isfinite(value):
            value.backward()
        return value

    # the grid alone first (for "coefficients": half the epochs), from ``restarts`` starting grids (the
    # initial one and seeded perturbations of its logits: the loss has local minima); the best on the
    # training noise goes on, then (for "coefficients") everything from there
    def lbfgs(ps):
        return torch.optim.LBFGS(
            ps,
            lr=1.0,
            max_iter=iterations,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-14,
        )

    gen = torch.Generator().manual_seed(0)
    starts = [theta.detach().clone()] + [
        theta.detach() + 0.5 * torch.randn(theta.shape, dtype=torch.float64, generator=gen) for _ in range(restarts - 1)
    ]
    history, best = [], [p.detach().clone() for p in params]
    bar = _bar(epochs, progress)
    for epoch in range(epochs):
        if epoch == 0:
            found = []
            for start in starts:
                with torch.no_grad():
                    theta.copy_(start)
                    for e in extra:
                        e.zero_()
                opt = lbfgs([theta] + extra)
                opt.step(closure)
                if torch.isfinite(theta).all():
                    found.append(
                        (
                            float(objective(x_train, y_train, [theta.detach()] + params[1:]).detach()),
                            len(found),
                            theta.detach().clone(),
                            opt,
                        )
                    )
            if not found:
                raise FloatingPointError("fit: every starting grid diverged")
            _, _, start, opt = min(found, key=lambda f: f[:2])
            with torch.no_grad():
                theta.copy_(start)
        elif corr is not None and epoch == epochs // 2:
            opt = lbfgs(params + extra)
        if epoch > 0:
            opt.step(closure)
        if not all(bool(torch.isfinite(p).all()) for p in params):  # a diverged line search: stop
            break
        last = [p.detach().clone() for p in params]
        history.append(val_loss(params))
        if not select or history[-1] <= min(history):
            best = last
        if callback is not None:
            callback(epoch, history[-1])
        if bar is not None:
            bar.set_postfix(val_loss=f"{history[-1]:.4g}")
            bar.update(1)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        g, plan = build(best)
        g = Grid(g.path, g.t.detach())
        train = math.sqrt(float(mse(x_train, y_train, best)))
        val = val_loss(best)
    if corr is None:
        method, free = m, logits.free
    else:
        plan = dataclasses.replace(plan, grid=g)
        method = FittedPlan.from_plan(
            plan,
            f"fitted-{m.name}-nfe{nfe}",
            interpolation=m.variable,
            paper="odesolve.learn.fit (coefficients, BNS/S4S-style)",
        )
        free = logits.free + corr.free
    settings = {
        "search": "gradient",
        "window": window,
        "iterations": iterations,
        "epochs": epochs,
        "restarts": restarts,
        "select": select,
        "loss": loss,
        "shift_times": shift_times,
        "soft_radius": soft_radius,
        "teacher": _teacher_name(teacher),
        "teacher_steps": teacher_steps,
        "train_size": len(x_train),
        "val_size": len(x_val),
        "initial_grid": grid.t.tolist(),
    }
    return Fitted(
        family=family,
        grid=g,
        method=method,
        nfe=nfe,
        init=m.name,
        parameters=free,
        train_loss=train,
        val_loss=val,
        init_val_loss=init_val,
        fit_seconds=time.perf_counter() - t_start,
        history=tuple(history),
        settings=settings,
        model=repr(model),
    )


def dp_path(cost: Tensor, steps: int) -> tuple[list[int], float]:
    """The path ``0 = i_0 < i_1 < ... < i_steps = M`` with the least ``sum_s cost[i_{s-1}, i_s]`` (a
    dynamic program over the ``(M + 1, M + 1)`` matrix ``cost``; ``inf`` marks a forbidden step), and
    that sum. GITS (Chen et al. 2024) chooses its grid this way."""
    if not isinstance(cost, Tensor) or cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 2:
        raise ValueError(f"cost must be a square (M + 1, M + 1) tensor with M >= 1, got {getattr(cost, 'shape', cost)}")
    M = cost.shape[0] - 1
    steps = check_int(steps, "steps", 1, M)
    cost = cost.to(torch.float64).triu(1) + torch.full_like(cost, math.inf, dtype=torch.float64).tril()
    best = torch.full((steps + 1, M + 1), math.inf, dtype=torch.float64)
    back = torch.zeros((steps + 1, M + 1), dtype=torch.long)
    best[0, 0] = 0.0
    for s in range(1, steps + 1):
        best[s], back[s] = (best[s - 1][:, None] + cost).min(0)  # [i, j]: s - 1 steps to i, then one to j
    total = float(best[steps, M])
    if not math.isfinite(total):
        raise ValueError(f"no path of {steps} steps has a finite cost")
    idx = [M]
    for s in range(steps, 0, -1):
        idx.append(int(back[s, idx[-1]]))
    return idx[::-1], total


def _fit_dp(model, m, grid, teacher, x_train, x_val, nfe, fine, teacher_steps, t_start) -> Fitted:
    """GITS: the grid of ``grid.steps`` steps through points of ``refine(grid, fine)`` whose summed
    one-step errors of ``m`` against the teacher's states are least (dynamic programming)."""
    if callable(teacher) and not isinstance(teacher, (str, _methods.Method)):
        raise ValueError(
            "search 'dp' needs the teacher's states at every fine point: teacher must be None, "
            "'reference' or a registered method, not a callable"
        )
    fg = refine(grid, fine)
    M, K = fg.steps, grid.steps
    per_segment = max(1, math.ceil(teacher_steps / M))
    states = [x_train]
    for i in range(M):  # the teacher's trajectory through every fine point
        seg = Grid(fg.path, fg.t[i : i + 2])
        states.append(teacher_solve(model, states[-1], seg, teacher, teacher_steps=per_segment))
    cost = torch.full((M + 1, M + 1), math.inf, dtype=torch.float64)
    with torch.no_grad():
        for i in range(M):
            for j in range(i + 1, M + 1):
                try:
                    plan = m.compile(fg.path, Grid(fg.path, fg.t[[i, j]]))
                except ValueError:
                    continue
                out = execute(plan, model, states[i])
                cost[i, j] = float(((out.to(torch.float64) - states[j]) ** 2).mean())
    path_idx, total = dp_path(cost, K)
    g = Grid(fg.path, fg.t[path_idx].clone())
    calls = m.compile(g.path, g).calls
    if calls != nfe:
        raise ValueError(f"search 'dp': {m.name} makes {calls} calls on the chosen grid, not {nfe}")
    y = teacher_solve(model, torch.cat([x_train, x_val]), grid, teacher, teacher_steps=teacher_steps)
    y_train, y_val = y[: len(x_train)], y[len(x_train) :]

    def rmse(grid_, x, y_):
        with torch.no_grad():
            return math.sqrt(float(_mse(sample(model, x, grid_, method=m).to(torch.float64), y_)))

    val = rmse(g, x_val, y_val)
    settings = {
        "search": "dp",
        "fine": fine,
        "teacher": _teacher_name(teacher),
        "teacher_steps": teacher_steps,
        "train_size": len(x_train),
        "val_size": len(x_val),
        "initial_grid": grid.t.tolist(),
        "local_cost": total,
    }
    return Fitted(
        family="grid",
        grid=g,
        method=m,
        nfe=nfe,
        init=m.name,
        parameters=max(0, K - 1),
        train_loss=rmse(g, x_train, y_train),
        val_loss=val,
        init_val_loss=rmse(grid, x_val, y_val),
        fit_seconds=time.perf_counter() - t_start,
        history=(val,),
        settings=settings,
        model=repr(model),
    )


def _split(x_T, x_T_val) -> tuple[Tensor, Tensor]:
    def check(x, name):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of starting noise, got {type(x).__name__}")
        if not x.is_floating_point() or x.ndim < 2:
            raise ValueError(
                f"{name} must be a floating tensor of shape (batch, *state), got {x.dtype} {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be finite")
        return x.detach().to(torch.float64)

    x_T = check(x_T, "x_T")
    if x_T_val is None:
        n_val = len(x_T) // 4
        if n_val < 1:
            raise ValueError(f"x_T must hold at least 4 starting points when x_T_val is not given, got {len(x_T)}")
        return x_T[: len(x_T) - n_val], x_T[len(x_T) - n_val :]
    x_T_val = check(x_T_val, "x_T_val")
    if x_T_val.shape[1:] != x_T.shape[1:]:
        raise ValueError(
            f"x_T_val must have the state shape of x_T {tuple(x_T.shape[1:])}, got {tuple(x_T_val.shape[1:])}"
        )
    return x_T, x_T_val


def _teacher_name(teacher) -> str:
    if teacher is None or isinstance(teacher, str):
        return teacher or "reference"
    if isinstance(teacher, _methods.Method):
        return teacher.name
    return getattr(teacher, "__name__", type(teacher).__name__)


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fit", unit="epoch")
