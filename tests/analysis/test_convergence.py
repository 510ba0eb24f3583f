"""Convergence studies: the fit (floor and pre-asymptotic points), exact problems, assert_order,
and problems given as any object with .model(path, prediction) plus a reference callable."""

import math

import numpy as np
import pytest
import torch

import odesolve as ods
from odesolve.analysis import assert_order, convergence, problems
from odesolve.analysis._fit import fit_slope
from odesolve.analysis.families import Family


def test_fit_drops_floor_and_preasymptotic_points():
    n = np.array([4, 8, 16, 32, 64, 128, 256], dtype=float)
    err = 3.0 * n**-2.0 * (1 + 4.0 / n**1.5)  # pre-asymptotic at the coarse end
    err[-1] = err[-2] * 0.9  # round-off floor reached
    fit = fit_slope(n, err, floor=1e-12)
    assert fit.dropped_floor == (6,)
    assert 0 in fit.dropped_preasymptotic and 5 in fit.used
    assert fit.slope == pytest.approx(2.0, abs=0.1)
    fit = fit_slope(n, np.where(n > 64, 1e-17, 5 * n**-3.0), floor=1e-15)
    assert fit.dropped_floor == (5, 6) and fit.slope == pytest.approx(3.0, abs=1e-9)


def test_convergence_on_the_exact_mixture(mixture_problem):
    res = convergence("dpmpp-2m", mixture_problem, "karras", steps=(16, 32, 64, 128))
    assert res.slope == pytest.approx(2.0, abs=0.2)
    assert res.nfe == (16, 32, 64, 128) and len(res.errors) == 4
    assert all(e > 0 for e in res.errors) and res.errors[-1] < res.errors[0] / 30
    assert "measured order" in res.table()
    res = assert_order("rk4", mixture_problem, 4, grids="uniform", nfe=(32, 64, 128, 256))
    assert res.nfe[0] == 32  # 8 steps of 4 calls
    with pytest.raises(AssertionError, match="expected 3"):
        assert_order("heun", mixture_problem, 3, nfe=(32, 64, 128))


class _Gaussian1D:
    """A user's own distribution: N(m, s^2) in 1-D, with only .model(path, prediction)."""

    m, s2 = 0.3, 0.2

    def model(self, path, prediction="x0"):
        def x0(x, t):
            a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
            return self.m + a * self.s2 / (a * a * self.s2 + s * s) * (x - a * self.m)

        return ods.Model(x0, path, "x0").with_prediction(prediction)

    def flow(self, x, t0, t1, path):  # the closed-form PF-ODE flow
        c0 = path.alpha(t0) ** 2 * self.s2 + path.sigma(t0) ** 2
        c1 = path.alpha(t1) ** 2 * self.s2 + path.sigma(t1) ** 2
        return path.alpha(t1) * self.m + torch.sqrt(c1 / c0) * (x - path.alpha(t0) * self.m)


def test_any_object_with_a_model_and_a_reference():
    dist = _Gaussian1D()
    path = ods.paths.VP.linear()
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    ref = lambda model, x, t0, t1: dist.flow(x, t0, t1, path)
    res = assert_order(
        "heun",
        dist,
        2,
        x=x,
        reference=ref,
        path=path,
        sigma_start=2.0,
        sigma_end=0.05,
        grids="uniform",
        nfe=(16, 32, 64, 128),
    )
    assert res.problem == "_Gaussian1D"
    # the scipy fallback reference agrees with the closed form
    P = problems.as_ivp(dist, x=x, path=path, sigma_start=2.0, sigma_end=0.05, reference=problems._scipy_reference)
    assert torch.allclose(P.exact(), dist.flow(x, P.t_start, P.t_end, path), atol=1e-9)
    # and the named problems come from odesolve.toy where it has them
    g = problems.get("gmm2d", sigma_start=1.0, sigma_end=0.1, n=4)
    assert g.x.shape == (4, 2) and g.description


def test_bad_problems():
    with pytest.raises(ValueError, match="unknown"):
        problems.get("no-such-problem")
    with pytest.raises(TypeError, match="model"):
        convergence("ddim", 42)
    with pytest.raises(ValueError, match="x .the starting states"):
        problems.as_ivp(_Gaussian1D())
    with pytest.raises(ValueError, match="at least 2"):
        convergence("ddim", "gmm1d", steps=(8,), sigma_start=1.0, sigma_end=0.1, n=2)
    fam = Family("karras", sigma_start=1.0, sigma_end=0.1)
    assert math.isclose(float(fam(8).sigmas[-1]), 0.1)
