r"""Symbolic analysis of method tables: [`derive`][odesolve.analysis.symbolic.derive].

- **Exponential Adams** ([`ExponentialMultistep`][odesolve.methods.exponential_multistep.ExponentialMultistep] in
  lambda, q nodes): the coefficients in closed form as functions of the step ``h``, the node ratios ``r_m =
  (lambda_{n-m} -
  lambda_n)/h`` and the phi-functions, ``c = V^{-T} w`` with ``V_{mi} = r_m^i``,
  ``w_i = i! h phi_{i+1}(zeta)`` (``zeta = -h`` for x0 prediction, ``+h`` for eps),
  the published modifications (midpoint / B(h) = h weight for two nodes, the halved second
  difference of 3M), the UniC corrector, their exactness degrees, and the global order from the rule
  of [`numeric`][odesolve.analysis.numeric] (warm-up and corrector included). ``rho``-interpolating tables
  (``lms-k``) give variable-step Adams-Bashforth in rho, AB-k in the equal-step limit.
- **Exponential Runge-Kutta** ([`ExponentialRK`][odesolve.methods.exponential_rk.ExponentialRK]): the stiff order
  conditions of Hochbruck & Ostermann (2005, SIAM J. Numer. Anal. 43, "Explicit exponential Runge-Kutta methods for
  semilinear parabolic problems", Table 5.1; also Acta Numerica 19 (2010), Table 2.2) up to order 4,
  for ``u' = -A u + g(t, u)``. In lambda-time the x0-prediction form is ``d(x/alpha)/dlambda = -(x/alpha) + x0``
  (A = 1) and the eps-prediction form ``d(x/sigma)/dlambda = (x/sigma) - eps`` (A = -1): the linear part is a
  scalar, so J = g_u commutes with it and every condition is a scalar identity in ``zeta = -hA``. With
  ``b_i(zeta) = sum_l B_il phi_l(zeta)``, ``a_ij(zeta) = sum_l A_ijl c_i phi_l(c_i zeta)`` and

      psi_j(zeta)    = phi_j(zeta) - sum_i b_i(zeta) c_i^{j-1}/(j-1)!
      psi_{j,i}(zeta) = phi_j(c_i zeta) c_i^j - sum_k a_ik(zeta) c_k^{j-1}/(j-1)!

  the conditions are: (1) psi_1 = 0; (2) psi_2 = 0; (3) psi_3 = 0; (4) sum_i b_i J psi_{2,i} = 0;
  (5) psi_4 = 0; (6) sum_i b_i J psi_{3,i} = 0; (7) sum_i b_i J sum_k a_ik J psi_{2,k} = 0;
  (8) sum_i b_i c_i K psi_{2,i} = 0, assuming the row-sum condition (C) psi_{1,i} = 0. Condition r of
  order q_r enters the local error as ``h^{q_r}`` times its residual, so a residual of valuation
  ``v_r`` in h costs ``h^{q_r + v_r}``: the *classical* order is ``min_r (q_r + v_r) - 1`` (<= 4 here),
  the *stiff* order the largest p whose conditions hold identically in ``zeta`` (uniformly in large
  steps; RES, Zhang et al. 2023, fixes this for DPM-Solver++(2S)).
- **Classical Runge-Kutta** ([`RungeKutta`][odesolve.methods.classical.RungeKutta]): the order conditions
  ``b^T Phi(t) = 1/gamma(t)`` over rooted trees (Butcher), generated up to order 8, and the stability
  function ``R(z) = 1 + z b^T (I - zA)^{-1} 1``.
- **Linear multistep** ([`LinearMultistep`][odesolve.analysis.lmm.LinearMultistep], and the equal-step Adams
  formulas inside [`FixedAdams`][odesolve.methods.classical.FixedAdams]): the classical conditions ``C_q = 0``, with the
  warm-up and the grid class (uniform / smooth / arbitrary) in the global order.

Requests beyond what the implementation or the time budget (``TIME_LIMIT`` seconds, or
``timeout=``) allows are refused with [`SymbolicLimitError`][odesolve.analysis.symbolic._core.SymbolicLimitError]
before the work starts (cost
estimate) or when the budget runs out.
"""

from __future__ import annotations

from ._core import MAX_ADAMS_NODES, MAX_ERK_ORDER, MAX_RK_ORDER, SERIES_TERMS, SymbolicLimitError, _Budget
from .adams import AdamsDerivation
from .butcher import RKDerivation, rooted_trees
from .erk import Condition, ERKDerivation
from .lmm import FixedAdamsDerivation, LMMDerivation
from .series import phi, phi_numpy

__all__ = [
    "MAX_ADAMS_NODES",
    "MAX_ERK_ORDER",
    "MAX_RK_ORDER",
    "SERIES_TERMS",
    "TIME_LIMIT",
    "AdamsDerivation",
    "Condition",
    "ERKDerivation",
    "FixedAdamsDerivation",
    "LMMDerivation",
    "RKDerivation",
    "SymbolicLimitError",
    "derive",
    "phi",
    "phi_numpy",
    "rooted_trees",
]

TIME_LIMIT = 30.0  # seconds a symbolic derivation may take (read when a derivation starts)


def derive(table: object, *, max_order: int | None = None, timeout: float | None = None):
    """Symbolic analysis of a method table (see the module docstring): an object with ``.order`` and
    ``.summary()``; the fields depend on the kind of table.

    Every table provides its own derivation (``table.derivation(max_order, budget)``, defined in the
    family's file), so a new family is analysed here without an edit.

    Args:
        table: a registered name, a method table, or a [`LinearMultistep`][odesolve.analysis.lmm.LinearMultistep].
        max_order: the highest order of conditions to check (exponential RK: <= 4, the default;
            Runge-Kutta: <= 8, default 4 + 1).
        timeout: seconds allowed (default ``TIME_LIMIT``).

    Raises:
        SymbolicLimitError: the request is beyond the implementation or the time budget.
    """
    from .._plan import as_method

    if isinstance(table, str):
        table = as_method(table)
    if max_order is not None and (isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1):
        raise ValueError(f"max_order must be a positive integer, got {max_order!r}")
    derivation = getattr(table, "derivation", None)
    if not callable(derivation):
        raise TypeError(
            f"derive does not know tables of type {type(table).__name__}: a table provides "
            "derivation(max_order, budget) (use numeric_order for any compiled plan)"
        )
    return derivation(max_order, _Budget(timeout, f"derive({getattr(table, 'name', table)!r})"))
