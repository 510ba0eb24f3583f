"""Failures that peer libraries ship, and what odesolve does in the same situation.

Each odesolve check asserts that the run is finite and, where it can be measured, that the method
converges at its declared order on the exact Gaussian-mixture problem. The ``TestDiffusersBehaviour``
class pins the diffusers behaviour that docs/diffusers-differences.md describes (if diffusers
changes it, that document needs updating).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import pytest
import torch
from _cases import DEIS_LOGRHO
from _oracle_lib import (
    convergence_slope,
    edm_model,
    gmm_x0,
    level_sigmas,
    path_of,
    reference_kd,
    rel,
    run_diffusers,
    vp_model,
    x0_edm,
    x_start,
)

import odesolve as ods

warnings.filterwarnings("ignore", category=FutureWarning)

import diffusers as d

EDM = ods.paths.EDM()
SIGMA_MAX, SIGMA_MIN = 20.0, 0.02


@pytest.fixture(scope="module")
def edm_problem():
    """x_T at sigma = 20 and the exact PF-ODE solution at sigma = 0.02 (EDM coordinates)."""
    x = x_start() * SIGMA_MAX
    return x, reference_kd(x, SIGMA_MAX, SIGMA_MIN)


# Order checks below bound the measured slope on both sides. At these step counts the errors of the
# pathological grids are pre-asymptotic and run up to one order above the declared one (unipc-bh1-3
# measures 3.96), so the upper bound is declared + 1; the lower bound is the declared order - 0.2.


def _order(method, edm_problem, ns, to_zero=False, duplicate_last=False):
    x, ref = edm_problem
    if to_zero:
        ref = x0_edm(ref, torch.tensor(SIGMA_MIN, dtype=torch.float64))
    errors = []
    for n in ns:
        g = ods.grids.karras(EDM, n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, to_zero=to_zero)
        if duplicate_last:  # diffusers' Karras grid with final_sigmas_type="sigma_min": a zero-length last step
            g = ods.grids.from_sigmas(EDM, torch.cat([g.sigmas, g.sigmas[-1:]]))
        out = ods.sample(edm_model(EDM), x, g, method=method)
        assert torch.isfinite(out).all(), f"{method} with {n} steps is not finite"
        errors.append(rel(out, ref))
    return convergence_slope(ns, errors), errors


# ---------------------------------------------------------------------------------------------
# 1. UniPC with B(h) = h and a last step to sigma = 0 (diffusers: -inf * 0 = NaN)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_bh1_step_to_sigma_zero_is_finite_and_matches(order):
    s = d.UniPCMultistepScheduler(solver_type="bh1", solver_order=order, final_sigmas_type="zero")
    x = x_start()
    before_last = run_diffusers(s, 10, x, level_sigmas, skip_last=True)  # the input of the last model call
    path = path_of(s)
    grid = ods.grids.from_times(path, torch.cat([s.timesteps.double(), torch.tensor([-1.0], dtype=torch.float64)]))
    out = ods.sample(vp_model(path), x, grid, method=f"unipc-bh1-{order}", lower_order_final=True)
    assert torch.isfinite(out).all()
    # the step to sigma = 0 is the DDIM limit: the data prediction at the last model call
    a, sg = level_sigmas(s, None)
    assert rel(out, gmm_x0(before_last, a, sg)) <= 1e-5


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_bh1_to_sigma_zero_declared_order(order, edm_problem):
    name = f"unipc-bh1-{order}"
    slope, errors = _order(name, edm_problem, [16, 32, 64, 128], to_zero=True)
    declared = ods.methods.get(name).order
    assert declared - 0.2 <= slope < declared + 1, (
        f"{name}: measured order {slope:.2f} (errors {errors}), declared {declared}"
    )


# ---------------------------------------------------------------------------------------------
# 2. third-order multistep, Karras grid with a zero-length last step (diffusers: NaN from 15 steps)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [15, 20])
def test_karras_zero_length_last_step_is_merged(steps):
    s = d.DPMSolverMultistepScheduler(solver_order=3, use_karras_sigmas=True, final_sigmas_type="sigma_min")
    x = x_start()
    before = run_diffusers(s, steps, x, level_sigmas, skip_last=True)  # diffusers' state before its h = 0 step
    assert s.sigmas[-1] == s.sigmas[-2]
    grid = ods.grids.from_sigmas(ods.paths.VPCosine(s=0.0), s.sigmas.double())
    assert grid.steps == steps - 1  # the zero-length step is merged
    out = ods.sample(vp_model(grid.path), x, grid, method="dpmpp-3m")
    assert torch.isfinite(out).all()
    assert rel(out, before) <= 1e-5


@pytest.mark.parametrize("method", ["dpmpp-3m", "dpmpp-3m-corrected", "unipc-bh2-3"])
def test_third_order_multistep_zero_length_last_step_declared_order(method, edm_problem):
    slope, errors = _order(method, edm_problem, [16, 32, 64, 128], duplicate_last=True)
    declared = ods.methods.get(method).order
    assert declared - 0.2 <= slope < declared + 1, (
        f"{method}: measured order {slope:.2f} (errors {errors}), declared {declared}"
    )


# ---------------------------------------------------------------------------------------------
# 3. iPNDM started at alpha = 0 (zero terminal SNR)
# ---------------------------------------------------------------------------------------------

ZSNR = ods.paths.VP.discrete("scaled_linear", 1000, 0.00085, 0.012, rescale_zero_terminal_snr=True)


@pytest.mark.parametrize(
    "method", ["ipndm", "plms", "euler", "heun", "dpm-solver-2m", "deis-2", "lms-2", "dpm-solver-2"]
)
def test_noise_form_methods_refuse_a_start_at_alpha_zero(method):
    grid = ods.grids.discrete(ZSNR, 10, spacing="trailing")
    assert float(ZSNR.alpha(grid.t[0])) == 0.0
    with pytest.raises(ValueError, match="alpha = 0"):
        ods.sample(vp_model(ZSNR), x_start(), grid, method=method)


COS0 = ods.paths.VPCosine(s=0.0)


@functools.cache
def _reference_from_alpha_zero(t_end):
    return _solve_from_alpha_zero(x_start(), t_end)


def _solve_from_alpha_zero(x, t_end):
    """The PF-ODE solution from alpha = 0 on a VP path: with u = e^lambda and y = x / sigma,
    dy/du = E[x0 | x] (docs/theory.md section 1, x0-prediction form), regular at u = 0 where y = x_T."""
    from scipy.integrate import solve_ivp

    shape = tuple(x.shape)

    def f(u, y):
        a, s = u / math.sqrt(1 + u * u), 1 / math.sqrt(1 + u * u)
        return gmm_x0(torch.from_numpy(y.reshape(shape)) * s, a, s).reshape(-1).numpy()

    u1 = float(torch.exp(COS0.lambda_(torch.tensor(t_end, dtype=torch.float64))))
    sol = solve_ivp(f, (0.0, u1), x.reshape(-1).numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
    return torch.from_numpy(sol.y[:, -1].reshape(shape).copy()) / math.sqrt(1 + u1 * u1)


@pytest.mark.parametrize("method", ["ddim", "dpmpp-2m"])
def test_data_form_methods_from_alpha_zero_declared_order(method):
    x, t_end = x_start(), 0.05
    ref = _reference_from_alpha_zero(t_end)
    ns, errors = [16, 32, 64, 128], []
    for n in ns:
        g = ods.grids.uniform_time(COS0, n, t_start=1.0, t_end=t_end)
        out = ods.sample(vp_model(COS0), x, g, method=method)
        assert torch.isfinite(out).all()
        errors.append(rel(out, ref))
    slope = convergence_slope(ns, errors)
    declared = ods.methods.get(method).order
    assert declared - 0.2 <= slope < declared + 1, (
        f"{method} from alpha = 0: measured order {slope:.2f} (errors {errors})"
    )


# ---------------------------------------------------------------------------------------------
# 4. DEIS-3: diffusers' error grows from 14 to 15 steps (lower_order_final switches off there)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deis_problem():
    s = d.DEISMultistepScheduler(solver_order=3)
    s.set_timesteps(10)
    rho0, rho1 = float(s.sigmas[0]), float(s.sigmas[-1])
    x = x_start()
    a0, a1 = (1 + rho0**2) ** -0.5, (1 + rho1**2) ** -0.5
    return x, reference_kd(x / a0, rho0, rho1) * a1


def _deis_errors(method, x, ref, ns):
    errors = []
    for n in ns:
        s = d.DEISMultistepScheduler(solver_order=3)
        s.set_timesteps(n)
        grid = ods.grids.from_sigmas(ods.paths.VPCosine(s=0.0), s.sigmas.double())
        out = ods.sample(vp_model(grid.path), x, grid, method=method, lower_order_final=True)
        assert torch.isfinite(out).all()
        errors.append(rel(out, ref))
    return errors


@pytest.mark.parametrize("method", [DEIS_LOGRHO[3], "deis-3", "dpmpp-3m", "unipc-bh2-3"], ids=lambda m: str(m))
def test_deis3_error_decreases_monotonically_from_10_to_16_steps(method, deis_problem):
    x, ref = deis_problem
    errors = _deis_errors(method, x, ref, list(range(10, 17)))
    assert all(b < a for a, b in itertools.pairwise(errors)), f"{method}: errors {[f'{e:.3e}' for e in errors]}"


# ---------------------------------------------------------------------------------------------
# 5. PNDM below 13 model calls (diffusers' pseudo Runge-Kutta warm-up needs 4 steps = 13 calls)
# ---------------------------------------------------------------------------------------------


def test_plms_below_13_calls_runs():
    path = ods.paths.VP.discrete()
    x = x_start()
    for n in range(1, 13):
        grid = ods.grids.discrete(path, n, spacing="leading", steps_offset=1)
        plan = ods.methods.get("plms").compile(path, grid)
        assert plan.calls == n + (0 if grid.sigmas[1] == 0 else 1)  # + the discarded Heun evaluation
        out = ods.sample(vp_model(path), x, grid, method="plms")
        assert torch.isfinite(out).all(), f"plms with {n} steps"


@pytest.mark.parametrize("method", ["plms", "ipndm"])
def test_plms_ipndm_declared_order(method, edm_problem):
    slope, errors = _order(method, edm_problem, [64, 128, 256])
    declared = ods.methods.get(method).order
    assert declared - 0.2 <= slope < declared + 1, (
        f"{method}: measured order {slope:.2f} (errors {errors}), declared {declared}"
    )


# ---------------------------------------------------------------------------------------------
# the diffusers behaviour the documentation describes
# ---------------------------------------------------------------------------------------------


class TestDiffusersBehaviour:
    def test_unipc_bh1_to_zero_is_nan(self):
        s = d.UniPCMultistepScheduler(solver_type="bh1", solver_order=2, final_sigmas_type="zero")
        assert torch.isnan(run_diffusers(s, 10, x_start(), level_sigmas)).all()

    def test_third_order_karras_sigma_min_is_nan_from_15_steps(self):
        for n, nan in ((14, False), (15, True)):
            s = d.DPMSolverMultistepScheduler(solver_order=3, use_karras_sigmas=True, final_sigmas_type="sigma_min")
            assert bool(torch.isnan(run_diffusers(s, n, x_start(), level_sigmas)).any()) == nan

    def test_ipndm_first_step_from_alpha_zero_ignores_the_model(self):
        outs = []
        for shift in (0.0, 3.0):
            s = d.IPNDMScheduler()
            s.set_timesteps(10)
            assert float(s.alphas[0]) == 0.0
            x = x_start()
            outs.append(s.step(torch.full_like(x, shift), s.timesteps[0], x).prev_sample)
        assert torch.equal(outs[0], outs[1])
        assert torch.allclose(outs[0], s.betas[1].double() * x_start())

    def test_pndm_prk_needs_13_calls(self):
        with pytest.raises(ValueError):
            d.PNDMScheduler(skip_prk_steps=False).set_timesteps(3)
        s = d.PNDMScheduler(skip_prk_steps=False)
        s.set_timesteps(4)
        assert len(s.timesteps) == 13

    def test_deis3_error_grows_from_14_to_15_steps(self, deis_problem):
        x, ref = deis_problem
        errors = []
        for n in (14, 15):
            s = d.DEISMultistepScheduler(solver_order=3)
            errors.append(rel(run_diffusers(s, n, x, level_sigmas), ref))
        assert errors[1] > 2 * errors[0]
