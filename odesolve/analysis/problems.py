"""Initial value problems of the probability-flow ODE with exact solutions, for convergence studies.

A `Problem` (of `odesolve.toy.problems`) is a distribution with a
path and a noise range; an [`InitialValueProblem`][odesolve.analysis.problems.InitialValueProblem] is what a
convergence study integrates: a distribution whose exact model is ``distribution.model(path, prediction)``
(anything with that method: [`odesolve.toy.GaussianMixture`][odesolve.toy.gmm.GaussianMixture], a user's own), a path,
the noise
levels ``sigma_start > sigma_end`` between which the probability-flow ODE is integrated, float64
starting states, and a reference: a callable ``reference(model, x, t_from, t_to) -> x_to`` (default:
[`odesolve.toy.reference.solve`][odesolve.toy.reference.solve], DOP853 at rtol = atol = 1e-12, with its own error
estimate) or
the exact final states.

`get` builds the initial value problem of a named problem: the registry of
`odesolve.toy.problems` (``gmm2d``, ``gaussian``, ``lowrank64``, ...) when it has the name,
else the small built-in ones below (``gmm1d``, ``gmm2d-easy``, ``gaussian2d``). Order studies stop
at ``sigma_end > 0``: a step to sigma = 0 is infinitely long in lambda, so no power of the step
size bounds its error.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import paths as _paths
from ..models import Model
from ..paths import Path

__all__ = ["BUILTIN", "InitialValueProblem", "as_ivp", "describe", "get", "names"]


@dataclass(eq=False)
class InitialValueProblem:
    """The PF-ODE of ``distribution`` under ``path`` from the states ``x`` at noise level ``sigma_start``
    to ``sigma_end``, with its exact solution (see the module docstring). ``exact()`` is computed
    once and kept."""

    name: str
    distribution: object
    path: Path
    x: Tensor
    sigma_start: float
    sigma_end: float
    reference: Callable | Tensor | None = None
    description: str = ""
    _exact: Tensor | None = field(default=None, repr=False)
    _reference_error: float = field(default=float("nan"), repr=False)

    def __post_init__(self):
        if not hasattr(self.distribution, "model"):
            raise TypeError(f"distribution must have .model(path, prediction), got {type(self.distribution).__name__}")
        if not isinstance(self.path, Path):
            raise TypeError(f"path must be an odesolve.paths.Path, got {type(self.path).__name__}")
        if not (math.isfinite(self.sigma_start) and self.sigma_start > self.sigma_end >= 0):
            raise ValueError(
                f"sigma_start, sigma_end must satisfy inf > sigma_start > sigma_end >= 0, got "
                f"{self.sigma_start}, {self.sigma_end}"
            )
        x = torch.as_tensor(self.x)
        if x.ndim < 1 or x.shape[0] < 1 or not bool(torch.isfinite(x).all()):
            raise ValueError("x must be a finite (batch, ...) tensor of starting states")
        self.x = x.to(torch.float64)
        if isinstance(self.reference, Tensor):
            if self.reference.shape != self.x.shape:
                raise ValueError(
                    f"reference states must have the shape of x {tuple(self.x.shape)}, got "
                    f"{tuple(self.reference.shape)}"
                )
            self._exact, self.reference = self.reference.to(torch.float64), None
            self._reference_error = 0.0

    def model(self, prediction: str = "x0") -> Model:
        return self.distribution.model(self.path, prediction)

    @property
    def t_start(self) -> Tensor:
        return self.path.t_of_noise_level(torch.tensor(self.sigma_start, dtype=torch.float64))

    @property
    def t_end(self) -> Tensor:
        return self.path.t_of_noise_level(torch.tensor(self.sigma_end, dtype=torch.float64))

    def exact(self) -> Tensor:
        """The exact states at ``sigma_end`` (a reference solve, once)."""
        if self._exact is None:
            ref = self.reference or _default_reference()
            out = ref(self.model("x0"), self.x, self.t_start, self.t_end)
            if isinstance(out, tuple):
                out, err = out
                self._reference_error = float(torch.as_tensor(err).abs().max())
            self._exact = torch.as_tensor(out).to(torch.float64)
        return self._exact

    def flow(self, x: Tensor, t0, t1) -> Tensor:
        """The exact flow from ``t0`` to ``t1`` (the reference)."""
        if float(t0) == float(t1):
            return x
        out = (self.reference or _default_reference())(self.model("x0"), x, t0, t1)
        return out[0] if isinstance(out, tuple) else out

    def trajectory(self, x: Tensor, times) -> Tensor:
        """Exact states at every time in ``times`` (monotone; the first is the time of ``x``): one
        solve through all of them with the default reference, successive flows otherwise."""
        times = torch.as_tensor(times, dtype=torch.float64)
        key = (id(x), x.shape, times.numpy().tobytes())
        cache = self.__dict__.setdefault("_trajectories", {})
        if key in cache and cache[key][0] is x:
            return cache[key][1]
        out = self._trajectory(x, times)
        if len(cache) > 16:
            cache.clear()
        cache[key] = (x, out)
        return out

    def _trajectory(self, x: Tensor, times: Tensor) -> Tensor:
        if self.reference is None:
            try:
                from ..toy import reference as toy_reference

                return toy_reference.trajectory(self.model("x0"), x, times, check="off")
            except ImportError:  # pragma: no cover
                pass
        out = [x]
        for a, b in itertools.pairwise(times):
            out.append(self.flow(out[-1], a, b))
        return torch.stack(out)

    @property
    def reference_error(self) -> float:
        """An estimate of the reference's own error (max abs), NaN when unknown."""
        self.exact()
        return self._reference_error

    def error(self, x: Tensor) -> float:
        """Root-mean-square error of final states ``x`` against the exact ones."""
        d = torch.as_tensor(x).to(torch.float64) - self.exact()
        return float(torch.sqrt(torch.mean(d * d)))


def _default_reference():
    try:
        from ..toy import reference as toy_reference
    except ImportError:  # pragma: no cover - odesolve.toy is part of the package
        return _scipy_reference

    def ref(model, x, t0, t1):
        # the toy reference's own two-tolerance check doubles its cost; its accuracy is tested there
        return toy_reference.solve(model, x, t0, t1, check="off")

    return ref


def _scipy_reference(model: Model, x: Tensor, t0, t1, rtol: float = 1e-12, atol: float = 1e-12):
    """Fallback: DOP853 on y = x / sigma, dy/dlambda = e^lambda x0(sigma y) (finite lambda only)."""
    from scipy.integrate import solve_ivp

    path = model.path
    l0, l1 = float(path.lambda_(torch.as_tensor(t0))), float(path.lambda_(torch.as_tensor(t1)))
    if not (math.isfinite(l0) and math.isfinite(l1)):
        raise ValueError("the fallback reference needs 0 < sigma at both ends")
    shape = x.shape

    def rhs(lam, y):
        t = path.t_of_lambda(torch.tensor(lam, dtype=torch.float64))
        s = float(path.sigma(t))
        xx = torch.from_numpy(y).view(shape) * s
        return (math.exp(lam) * model.x0(xx, t).to(torch.float64)).reshape(-1).numpy()

    s0 = float(path.sigma(torch.as_tensor(t0)))
    sol = solve_ivp(rhs, (l0, l1), (x / s0).reshape(-1).numpy(), method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference integration failed: {sol.message}")
    s1 = float(path.sigma(torch.as_tensor(t1)))
    return torch.from_numpy(sol.y[:, -1]).view(shape) * s1


def _gmm(weights, means, covs):
    from ..toy import GaussianMixture

    return GaussianMixture(
        torch.tensor(weights, dtype=torch.float64),
        torch.tensor(means, dtype=torch.float64),
        torch.tensor(covs, dtype=torch.float64),
    )


def _mixture_2d():
    c = lambda a, b, r: [[a * a, r * a * b], [r * a * b, b * b]]
    return _gmm(
        [0.45, 0.35, 0.2],
        [[-1.0, 0.4], [1.0, 0.8], [0.2, -1.0]],
        [c(0.45, 0.3, 0.3), c(0.35, 0.5, -0.4), c(0.5, 0.35, 0.0)],
    )


def _mixture_1d():
    return _gmm([0.6, 0.4], [[-0.8], [1.1]], [[[0.3**2]], [[0.45**2]]])


def _gaussian_2d():
    from ..toy import Gaussian

    return Gaussian(
        torch.tensor([0.3, -0.5], dtype=torch.float64), torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    )


def _flow_reference(dist):
    def ref(model, x, t0, t1):
        return dist.flow(x, t0, t1, model.path)

    return ref


BUILTIN = {
    "gmm1d": ("a 1-D mixture of two Gaussians (std 0.3 and 0.45)", _mixture_1d),
    "gmm2d-easy": ("a 2-D mixture of three correlated Gaussians (std 0.3 to 0.5)", _mixture_2d),
    "gaussian2d": ("a 2-D Gaussian (closed-form flow, no ODE solve)", _gaussian_2d),
}


def get(
    name: str,
    *,
    path: Path | None = None,
    sigma_start: float = 2.0,
    sigma_end: float = 0.05,
    n: int = 32,
    seed: int = 0,
) -> InitialValueProblem:
    """The initial value problem of the named problem ``name`` with ``n`` starting states drawn from the
    exact marginal at ``sigma_start``: the registry of `odesolve.toy.problems` first (its
    distribution and path), then [`BUILTIN`][odesolve.analysis.problems.BUILTIN]."""
    desc = ""
    dist = None
    try:
        from ..toy import problems as toy_problems
    except ImportError:  # pragma: no cover - odesolve.toy is part of the package
        toy_problems = None
    if toy_problems is not None and name in getattr(toy_problems, "names", list)():
        tp = toy_problems.get(name)
        dist, path, desc = tp.distribution, path or tp.path, getattr(tp, "description", "")
    elif name in BUILTIN:
        desc, factory = BUILTIN[name]
        dist = factory()
    else:
        known = sorted(set(BUILTIN) | set(getattr(toy_problems, "names", list)() if toy_problems else []))
        raise ValueError(f"problem {name!r} is unknown; known problems: {known}")
    P = as_ivp(dist, path=path, sigma_start=sigma_start, sigma_end=sigma_end, n=n, seed=seed, name=name)
    P.description = desc
    return P


def names() -> list[str]:
    """Every name `get` knows: the registry of `odesolve.toy.problems` and
    [`BUILTIN`][odesolve.analysis.problems.BUILTIN]."""
    from ..toy import problems as toy_problems

    return sorted(set(toy_problems.names()) | set(BUILTIN))


def describe(name: str) -> str:
    """A one-line description of a named problem."""
    try:
        from ..toy import problems as toy_problems

        if name in toy_problems.names():
            return toy_problems.get(name).description
    except ImportError:  # pragma: no cover
        pass
    return BUILTIN[name][0] if name in BUILTIN else name


def as_ivp(
    problem,
    *,
    path: Path | None = None,
    sigma_start: float = 2.0,
    sigma_end: float = 0.05,
    x: Tensor | None = None,
    reference=None,
    n: int = 32,
    seed: int = 0,
    name: str | None = None,
) -> InitialValueProblem:
    """An [`InitialValueProblem`][odesolve.analysis.problems.InitialValueProblem] from a name (`get`), an
    InitialValueProblem, a
    `odesolve.toy.problems.Problem`, or anything with ``.model(path, prediction)`` (then
    ``x`` defaults to ``n`` draws of its marginal at ``sigma_start`` when it has ``sample_marginal``,
    and ``reference`` to the exact flow for distributions with ``flow`` or to the DOP853 reference)."""
    if isinstance(problem, InitialValueProblem):
        return problem
    if isinstance(problem, str):
        return get(problem, path=path, sigma_start=sigma_start, sigma_end=sigma_end, n=n, seed=seed)
    from ..toy import problems as toy_problems

    if isinstance(problem, toy_problems.Problem):  # its distribution under its path
        path = path or problem.path
        name = name or getattr(problem, "name", None)
        problem = problem.distribution
    if not hasattr(problem, "model"):
        raise TypeError(
            f"problem must be a name ({names()}), an InitialValueProblem, an odesolve.toy Problem, or "
            f"have .model(path, prediction); "
            f"got {type(problem).__name__}"
        )
    path = path or _paths.EDM()
    t0 = path.t_of_noise_level(torch.tensor(sigma_start, dtype=torch.float64))
    if x is None:
        if not hasattr(problem, "sample_marginal"):
            raise ValueError("x (the starting states) must be given for a distribution without sample_marginal")
        g = torch.Generator().manual_seed(seed)
        x = problem.sample_marginal(n, t0, path, generator=g)
    if reference is None and hasattr(problem, "flow"):
        reference = _flow_reference(problem)
    return InitialValueProblem(
        name or type(problem).__name__, problem, path, x, float(sigma_start), float(sigma_end), reference
    )
