"""Theory tooling for odesolve's methods and plans: order, stability, truncation error, reports.

Everything works on compiled plans (or on tables, compiled for you), so a new method is analysed by
being registered:

- order, derived numerically: [`numeric_order`][odesolve.analysis.numeric.numeric_order] (polynomial-in-time and linear
  test models pushed through the plan on refinement families; the warm-up rule ``min(p_int + 1, p_b + 2)``),
  [`polynomial_errors`][odesolve.analysis.numeric.polynomial_errors],
  [`step_exactness`][odesolve.analysis.numeric.step_exactness]; and symbolically:
  [`derive`][odesolve.analysis.symbolic.derive] (closed-form
  exponential Adams coefficients, Hochbruck-Ostermann stiff order conditions of exponential RK
  tables, Butcher trees, linear multistep conditions); [`order`][odesolve.analysis.order] picks one;
- order, measured: [`convergence`][odesolve.analysis.convergence] and
  [`assert_order`][odesolve.analysis.convergence.assert_order] on exact problems
  ([`problems`][odesolve.analysis.problems]) along grid families ([`families`][odesolve.analysis.families]);
- linear stability: [`step_matrices`][odesolve.analysis.stability.step_matrices],
  [`amplification`][odesolve.analysis.stability.amplification],
  [`stability_function`][odesolve.analysis.stability.stability_function],
  [`stability_region`][odesolve.analysis.stability.stability_region],
  [`boundary_locus`][odesolve.analysis.stability.boundary_locus],
  [`stability_interval`][odesolve.analysis.stability.stability_interval], and classifier-free
  guidance: [`guidance_mu`][odesolve.analysis.stability.guidance_mu],
  [`guidance_stability`][odesolve.analysis.stability.guidance_stability]; classical tables in
  [`lmm`][odesolve.analysis.lmm];
- mean-square stability of stochastic plans (multiplicative and additive linear test SDEs):
  ``odesolve.analysis.mean_square`` (``ms_radius``, ``ms_stability_region``, ``stationary_variance``,
  ``moment_operators``);
- truncation error: [`local_errors`][odesolve.analysis.truncation.local_errors] (exact history; Lady Windermere's fan);
- figures: [`plots`][odesolve.analysis.plots] (matplotlib imported on use);
- the ``odesolve report`` command: [`run_report`][odesolve.analysis.run_report] ([`report`][odesolve.analysis.report]).
"""

from . import families, lmm, mean_square, plots, problems
from .convergence import ConvergenceResult, assert_order, convergence, nominal_steps
from .families import Family
from .lmm import LinearMultistep, adams_bashforth, adams_moulton
from .mean_square import MeanSquareRegion, moment_operators, ms_radius, ms_stability_region, stationary_variance
from .numeric import OrderResult, numeric_order, polynomial_errors, step_exactness
from .problems import InitialValueProblem
from .stability import (
    GuidanceStability,
    StabilityRegion,
    amplification,
    boundary_locus,
    guidance_mu,
    guidance_stability,
    plan_transfer,
    spectral_radius,
    stability_function,
    stability_interval,
    stability_region,
    step_matrices,
    uniform_grid,
)
from .symbolic import SymbolicLimitError, derive
from .truncation import LocalErrors, local_errors

__all__ = [
    "ConvergenceResult",
    "Family",
    "GuidanceStability",
    "InitialValueProblem",
    "LinearMultistep",
    "LocalErrors",
    "MeanSquareRegion",
    "OrderResult",
    "StabilityRegion",
    "SymbolicLimitError",
    "adams_bashforth",
    "adams_moulton",
    "amplification",
    "assert_order",
    "boundary_locus",
    "convergence",
    "derive",
    "families",
    "guidance_mu",
    "guidance_stability",
    "lmm",
    "local_errors",
    "mean_square",
    "moment_operators",
    "ms_radius",
    "ms_stability_region",
    "nominal_steps",
    "numeric_order",
    "order",
    "plan_transfer",
    "plots",
    "polynomial_errors",
    "problems",
    "run_report",
    "spectral_radius",
    "stability_function",
    "stability_interval",
    "stability_region",
    "stationary_variance",
    "step_exactness",
    "step_matrices",
    "uniform_grid",
]


def order(method, *, symbolic: bool = True) -> int:
    """The derived global order of ``method`` (a name or a table): from [`derive`][odesolve.analysis.symbolic.derive]
    when the table
    has a closed form (fast, exact), else from [`numeric_order`][odesolve.analysis.numeric.numeric_order]."""
    if symbolic:
        try:
            return derive(method).order
        except (SymbolicLimitError, TypeError):
            pass
    return numeric_order(method).order


def run_report(*args, **kwargs):
    """See [`odesolve.analysis.report.run_report`][odesolve.analysis.report.run_report] (imported on use: it pulls in
    tqdm)."""
    from .report import run_report as _run

    return _run(*args, **kwargs)
