"""A self-contained exact problem for the core tests: a Gaussian N(mu, diag(var)).

Its probability-flow ODE is linear, with the closed-form solution (Wang & Vastola 2023)
x_t = alpha_t mu + sqrt(C_t / C_s) (x_s - alpha_s mu),  C = alpha^2 var + sigma^2,
taken per coordinate, so no integrator is involved in the reference.
"""

from __future__ import annotations

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
        return (
            ods.Model(self.x0(path), path, "x0").with_prediction(prediction)
            if prediction != "x0"
            else ods.Model(self.x0(path), path, "x0")
        )

    def flow(self, path, x, t_from, t_to):
        tf, tt = (torch.as_tensor(v, dtype=torch.float64) for v in (t_from, t_to))
        af, sf, at, st = path.alpha(tf), path.sigma(tf), path.alpha(tt), path.sigma(tt)
        Cf, Ct = af**2 * self.var + sf**2, at**2 * self.var + st**2
        return at * self.mean + torch.sqrt(Ct / Cf) * (x - af * self.mean)


GAUSS = DiagonalGaussian([0.5, -1.0, 0.0, 2.0], [1.0, 0.25, 0.04, 0.01])


__all__ = ["GAUSS", "DiagonalGaussian"]
