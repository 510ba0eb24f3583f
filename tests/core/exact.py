"""A self-contained exact problem for the core tests: a Gaussian N(mu, diag(var)).

Its probability-flow ODE is linear, with the closed-form solution (Wang & Vastola 2023)
x_t = alpha_t mu + sqrt(C_t / C_s) (x_s - alpha_s mu),  C = alpha^2 var + sigma^2,
taken per coordinate, so no integrator is involved in the reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import odesolve as ods


class DiagonalGaussian:
    def __init__(self, mean, var):
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.var = torch.as_tensor(var, dtype=torch.float64)

    def x0(self, path):
        def fn(x, t):
            a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
            C = a * a * self.var + s * s
            return self.mean + a * self.var / C * (x.to(torch.float64) - a * self.mean)

        return fn

    def model(self, path, prediction="x0"):
        return ods.Model(self.x0(path), path, "x0").with_prediction(prediction) if prediction != "x0" else \
            ods.Model(self.x0(path), path, "x0")

    def flow(self, path, x, t_from, t_to):
        tf, tt = (torch.as_tensor(v, dtype=torch.float64) for v in (t_from, t_to))
        af, sf, at, st = path.alpha(tf), path.sigma(tf), path.alpha(tt), path.sigma(tt)
        Cf, Ct = af**2 * self.var + sf**2, at**2 * self.var + st**2
        return at * self.mean + torch.sqrt(Ct / Cf) * (x - af * self.mean)


GAUSS = DiagonalGaussian([0.5, -1.0, 0.0, 2.0], [1.0, 0.25, 0.04, 0.01])


def slopes(errors, nfes):
    e, n = np.asarray(errors), np.asarray(nfes, dtype=float)
    return np.log(e[:-1] / e[1:]) / np.log(n[1:] / n[:-1])


def measured_order(method, path, make_grid, steps=(32, 64, 128, 256), problem=GAUSS, seed=0):
    """Slope of the max-norm error against the step count over the last refinement."""
    g = torch.Generator().manual_seed(seed)
    g0 = make_grid(steps[0])
    x = torch.randn(16, problem.mean.numel(), generator=g, dtype=torch.float64) * float(path.sigma(g0.t[0])) \
        + float(path.alpha(g0.t[0])) * problem.mean
    model = problem.model(path)
    errs = []
    for n in steps:
        grid = make_grid(n)
        ref = problem.flow(path, x, grid.t[0], grid.t[-1])
        errs.append(float((ods.sample(model, x, grid, method=method) - ref).abs().max()))
    return slopes(errs, steps), errs


__all__ = ["DiagonalGaussian", "GAUSS", "measured_order", "slopes", "math"]
