"""Learned samplers: fit a grid or a whole non-stationary plan to one model.

    fitted = odesolve.learn.fit(model, x_T_train, nfe=5, family="coefficients", init="dpmpp-2m", grid=grid)
    x0 = ods.sample(model, x_T_test, fitted.grid, method=fitted.method)
    fitted.save("solver.json");  fitted = odesolve.learn.load("solver.json")

A fitted sampler is an ordinary method (a registered table on a learned grid, or a
`FittedPlan`): it compiles to a Plan, runs in the one executor and
is analysed like any other. It reports its parameter count, fit time and loss on held-out noise.
"""

from .fit import FAMILIES, LOSSES, SEARCHES, Fitted, dp_path, fit, refine, teacher_solve
from .io import load, save
from .parametrize import GridLogits, RowCorrection

__all__ = [
    "FAMILIES",
    "LOSSES",
    "SEARCHES",
    "Fitted",
    "GridLogits",
    "RowCorrection",
    "dp_path",
    "fit",
    "load",
    "refine",
    "save",
    "teacher_solve",
]
