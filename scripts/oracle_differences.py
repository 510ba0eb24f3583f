"""Print the numbers quoted in docs/diffusers-differences.md: ``python scripts/oracle_differences.py``."""

import math
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "oracle"))
warnings.filterwarnings("ignore")

import torch

torch.set_num_threads(1)
import diffusers as d
from _cases import BETAS_LIN, COS0, DEIS_LOGRHO, DPMPP_3M_TAYLOR_WARMUP, T_LIN
from _oracle_lib import (
    convergence_slope,
    edm_model,
    level_alphas_cumprod,
    level_ipndm,
    level_sigmas,
    path_of,
    reference_kd,
    rel,
    run_diffusers,
    vp_model,
    x_start,
)

import odesolve as ods

EDM = ods.paths.EDM()
x = x_start()


def edm_orders(methods, ns=(16, 32, 64, 128)):
    xe = x * 20.0
    ref = reference_kd(xe, 20.0, 0.02)
    for m in methods:
        errs = [
            rel(ods.sample(edm_model(EDM), xe, ods.grids.karras(EDM, n, 0.02, 20.0, to_zero=False), method=m), ref)
            for n in ns
        ]
        name = m if isinstance(m, str) else m.name
        errors = ", ".join(f"{e:.2e}" for e in errs)
        print(f"  {name}: errors {errors} (N = {ns}); slope {convergence_slope(ns, errs):.2f}")


print("1. 3M: published (half D2) vs corrected, Karras grids sigma 20 -> 0.02, exact GMM")
edm_orders(["dpmpp-3m", DPMPP_3M_TAYLOR_WARMUP, "dpmpp-3m-corrected", "dpmpp-2m"])

print(
    "2. 3M warm-up: midpoint (diffusers solver_type=midpoint, odesolve dpmpp-3m) vs Taylor (k-diffusion 3M SDE eta=0)"
)
g = ods.grids.karras(EDM, 10, 0.02, 20.0)
a = ods.sample(edm_model(EDM), x * 20, g, method="dpmpp-3m")
b = ods.sample(edm_model(EDM), x * 20, g, method=DPMPP_3M_TAYLOR_WARMUP)
print(f"  10 Karras steps: relative difference {rel(a, b):.2e}")

print("3. singlestep 3rd order: diffusers' variants vs DPM-Solver-3 (paper), lambda-linear schedule, 12 steps")
for alg in ("dpmsolver++", "dpmsolver"):
    for st in ("midpoint", "heun"):
        s = d.DPMSolverSinglestepScheduler(
            num_train_timesteps=T_LIN,
            trained_betas=BETAS_LIN.float().numpy(),
            algorithm_type=alg,
            solver_type=st,
            solver_order=3,
            final_sigmas_type="sigma_min",
            lower_order_final=False,
        )
        xd = run_diffusers(s, 12, x, level_sigmas)
        grid = ods.grids.from_sigmas(COS0, s.sigmas.double()[::3])
        paper = ods.sample(vp_model(COS0), x, grid, method="dpmpp-3s" if alg == "dpmsolver++" else "dpm-solver-3")
        rho0, rho1 = float(s.sigmas[0]), float(s.sigmas[-1])
        a0, a1 = (1 + rho0**2) ** -0.5, (1 + rho1**2) ** -0.5
        ref = reference_kd(x / a0, rho0, rho1) * a1
        print(
            f"  {alg} {st}: diffusers vs paper {rel(xd, paper):.2e}; error vs exact: diffusers {rel(xd, ref):.2e}, "
            f"paper {rel(paper, ref):.2e}"
        )

print("4. DEIS: diffusers (log-rho, = eps-prediction exponential Adams) vs odesolve deis-N (tAB, Lagrange in t)")
for order in (2, 3):
    for N in (10, 20):
        s = d.DEISMultistepScheduler(solver_order=order)
        xd = run_diffusers(s, N, x, level_sigmas)
        grid = ods.grids.from_sigmas(COS0, s.sigmas.double())
        opts = {"lower_order_final": True} if N < 15 else {}
        tab = ods.sample(vp_model(COS0), x, grid, method=f"deis-{order}", **opts)
        pathg = ods.grids.from_sigmas(path_of(s), s.sigmas.double())
        tab2 = ods.sample(vp_model(pathg.path), x, pathg, method=f"deis-{order}", **opts)
        rho0, rho1 = float(s.sigmas[0]), float(s.sigmas[-1])
        ref = reference_kd(x * (1 + rho0**2) ** 0.5, rho0, rho1) * (1 + rho1**2) ** -0.5
        print(
            f"  order {order}, {N} steps: diffusers vs deis-{order} {rel(xd, tab2):.2e}; errors: diffusers "
            f"{rel(xd, ref):.2e}, deis-{order} on the model's discrete time {rel(tab2, ref):.2e}"
        )

print("5. DEIS-3 error vs steps (linspace, sigma 157 -> 0.01)")
s = d.DEISMultistepScheduler(solver_order=3)
s.set_timesteps(10)
rho0, rho1 = float(s.sigmas[0]), float(s.sigmas[-1])
ref = reference_kd(x * (1 + rho0**2) ** 0.5, rho0, rho1) * (1 + rho1**2) ** -0.5
rows = []
for N in range(10, 21):
    s = d.DEISMultistepScheduler(solver_order=3)
    xd = run_diffusers(s, N, x, level_sigmas)
    grid = ods.grids.from_sigmas(COS0, s.sigmas.double())
    xo = ods.sample(vp_model(COS0), x, grid, method=DEIS_LOGRHO[3], lower_order_final=True)
    rows.append(
        f"  {N}: diffusers {rel(xd, ref):.3e}  odesolve (same method, lower_order_final at every N) {rel(xo, ref):.3e}"
    )
print("\n".join(rows))

print("6. iPNDM from alpha = 0 (IPNDMScheduler's default grid, v-prediction, VP cosine path s = 0)")
from test_oracle_regressions import _solve_from_alpha_zero

for N in (10, 20, 40, 80):
    s = d.IPNDMScheduler()
    xd = run_diffusers(s, N, x, level_ipndm, prediction="v_prediction", skip_last=True)
    t = torch.atan2(s.betas.double(), s.alphas.double()) * (2 / math.pi)
    t_end = float(t[-2])
    ref = _solve_from_alpha_zero(x, t_end)
    grid = ods.grids.from_times(COS0, t[:-1])
    outs = {m: rel(ods.sample(vp_model(COS0), x, grid, method=m), ref) for m in ("dpmpp-2m", "unipc-bh2-3", "ddim")}
    print(
        f"  {N} steps (to t = {t_end:.3f}): diffusers iPNDM {rel(xd, ref):.2e}; odesolve "
        + ", ".join(f"{m} {e:.2e}" for m, e in outs.items())
    )

print("7. PNDM with pseudo Runge-Kutta warm-up (skip_prk_steps=False) vs PLMS, error vs the exact solution")
for N in (4, 8, 16, 32):
    s = d.PNDMScheduler(skip_prk_steps=False, steps_offset=1)
    calls = []
    xd = run_diffusers(s, N, x, level_alphas_cumprod, calls=calls)
    ts = s._timesteps[::-1].astype(float).tolist() + [0.0]
    path = path_of(s)
    ac0, ac1 = s.alphas_cumprod[int(ts[0])].double(), s.alphas_cumprod[0].double()
    rho0, rho1 = float(((1 - ac0) / ac0).sqrt()), float(((1 - ac1) / ac1).sqrt())
    ref = reference_kd(x / float(ac0.sqrt()), rho0, rho1) * float(ac1.sqrt())
    grid = ods.grids.from_times(path, torch.tensor(ts, dtype=torch.float64))
    xo = ods.sample(vp_model(path), x, grid, method="plms")
    print(
        f"  {N} steps: PNDM {calls[0]} calls error {rel(xd, ref):.2e}; odesolve plms "
        f"{ods.methods.get('plms').compile(path, grid).calls} calls error {rel(xo, ref):.2e}"
    )

print("8. DDIM's prev_timestep = t - T // N with linspace spacing (10 steps)")
s = d.DDIMScheduler(timestep_spacing="linspace", clip_sample=False)
xd = run_diffusers(s, 10, x, level_alphas_cumprod)
path = path_of(s)
grid = ods.grids.from_times(path, torch.tensor(s.timesteps.double().tolist() + [-1.0]))
xo = ods.sample(vp_model(path), x, grid, method="ddim")
print(f"  timesteps {s.timesteps.tolist()}: diffusers vs DDIM on those timesteps {rel(xd, xo):.2e}")

print("9. PNDM (PLMS) with v_prediction: combines raw v outputs, then converts with the current state")
s = d.PNDMScheduler(skip_prk_steps=True, steps_offset=1, prediction_type="v_prediction")
xd = run_diffusers(s, 10, x, level_alphas_cumprod, prediction="v_prediction")
path = path_of(s)
grid = ods.grids.from_times(path, torch.tensor(s._timesteps[::-1].astype(float).tolist() + [0.0]))
xo = ods.sample(vp_model(path), x, grid, method="plms")
s2 = d.PNDMScheduler(skip_prk_steps=True, steps_offset=1)
xe = run_diffusers(s2, 10, x, level_alphas_cumprod)
print(f"  10 steps: diffusers v-prediction vs plms {rel(xd, xo):.2e} (epsilon-prediction vs plms {rel(xe, xo):.2e})")

print("10. LMS including its last step to sigma = 0 (rho-interpolation keeps the full order there)")
for order in (2, 3):
    s = d.LMSDiscreteScheduler()
    s.set_timesteps(10)
    xk = x * (1 + s.sigmas[0].double() ** 2) ** 0.5
    xd = run_diffusers(s, 10, xk, level_sigmas, coords="kd", step_kwargs={"order": order})
    grid = ods.grids.from_sigmas(COS0, s.sigmas.double())
    xo = ods.sample(vp_model(COS0), x, grid, method=f"lms-{order}")
    print(f"  order {order}, 10 steps: {rel(xo, xd):.2e}")
