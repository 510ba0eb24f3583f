"""The diffusers schedulers, their configs, and the odesolve method and grid each one equals.

A ``Case`` runs a diffusers scheduler like a pipeline with the exact Gaussian-mixture model
(``_oracle_lib.run_diffusers``), maps its timesteps / sigmas to an odesolve grid, runs odesolve,
and returns the relative difference of the final samples. ``f64`` re-tabulates the scheduler in
float64 after ``set_timesteps`` (its own tensors -- ``sigmas``, ``alphas_cumprod``... -- replaced by
float64 tensors holding the same values; no code is replaced), which shows that the remaining
difference of the shipped scheduler comes from its float32 tables. Schedulers that cast the
sample to float32 inside ``step`` (DPMSolverMultistep, Euler, EDMEuler) have no ``f64`` variant.

``scripts/oracle_report.py`` prints the table of docs/diffusers-differences.md from these cases.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction as Fr

import torch
from _oracle_lib import (
    edm_model,
    level_alphas_cumprod,
    level_ipndm,
    level_sigmas,
    path_of,
    rel,
    run_diffusers,
    vp_model,
    x_start,
)

import odesolve as ods
from odesolve.methods import HALF_SECOND_DIFFERENCE, ExponentialMultistep, ExponentialRK

warnings.filterwarnings("ignore", category=FutureWarning)
import diffusers as d

# --- tables diffusers runs that odesolve does not register under a name -------------------------
# diffusers DEISMultistepScheduler ("logrho"): Lagrange in log rho = -lambda, integrated d rho exactly,
# i.e. the eps-prediction exponential Adams method with exact weights. For 2 nodes it is also
# DPMSolverMultistepScheduler(algorithm_type="dpmsolver", solver_type="heun").
DEIS_LOGRHO = {q: f"deis-logrho-{q}" for q in (1, 2, 3)}  # registered names
# DPMSolverMultistepScheduler(solver_order=3, solver_type="heun"): 3M whose 2-node warm-up step
# uses the Taylor weight (= k-diffusion's sample_dpmpp_3m_sde with eta = 0)
DPMPP_3M_TAYLOR_WARMUP = ExponentialMultistep(
    "dpmpp-3m-taylor-warmup", order=2, prediction="x0", nodes=3, weights=HALF_SECOND_DIFFERENCE
)
DPM_3M_TAYLOR_WARMUP = ExponentialMultistep(
    "dpm-solver-3m-taylor-warmup", order=2, prediction="eps", nodes=3, weights=HALF_SECOND_DIFFERENCE
)

# DPMSolverSinglestepScheduler's updates as exponential RK tables (c = 0, 1/2 or 0, 1/3, 2/3 when
# the grid is uniform in lambda). Coefficient rows are (chi_1, chi_2, chi_3) weights per stage.
_h, _3, _23 = Fr(1, 2), Fr(1, 3), Fr(2, 3)
SINGLESTEP = {}
for _prediction, _alg in (("x0", "dpmsolver++"), ("eps", "dpmsolver")):
    SINGLESTEP[(_alg, "heun", 2)] = ExponentialRK(
        f"{_alg}-2s-taylor",
        order=2,
        prediction=_prediction,
        c=(Fr(0), _h),
        a=(((Fr(1),),),),
        b=((Fr(1), Fr(-2)), (Fr(0), Fr(2))),
    )
    # order 3, "midpoint": the stage at 2/3 is diffusers' 2nd-order midpoint update from the step
    # start (weights 0, 1 on chi_1), the final update is DPM-Solver-3's
    SINGLESTEP[(_alg, "midpoint", 3)] = ExponentialRK(
        f"{_alg}-3s-diffusers-midpoint",
        order=3,
        prediction=_prediction,
        c=(Fr(0), _3, _23),
        a=(((Fr(1),),), ((Fr(0),), (Fr(1),))),
        b=((Fr(1), Fr(-3, 2)), (Fr(0),), (Fr(0), Fr(3, 2))),
    )
    # order 3, "heun": DPM-Solver-3's stages, final update in Taylor form with D1 and D2
    SINGLESTEP[(_alg, "heun", 3)] = ExponentialRK(
        f"{_alg}-3s-diffusers-heun",
        order=3,
        prediction=_prediction,
        c=(Fr(0), _3, _23),
        a=(((Fr(1),),), ((Fr(1), Fr(-2)), (Fr(0), Fr(2)))),
        b=((Fr(1), Fr(-9, 2), Fr(9)), (Fr(0), Fr(6), Fr(-18)), (Fr(0), Fr(-3, 2), Fr(9))),
    )
SINGLESTEP[("dpmsolver++", "midpoint", 2)] = "dpmpp-2s"
SINGLESTEP[("dpmsolver", "midpoint", 2)] = "dpm-solver-2"
SINGLESTEP[("dpmsolver++", "midpoint", 1)] = SINGLESTEP[("dpmsolver++", "heun", 1)] = "ddim"
SINGLESTEP[("dpmsolver", "midpoint", 1)] = SINGLESTEP[("dpmsolver", "heun", 1)] = "dpm-solver-1"
PAPER_SINGLESTEP_3 = {"dpmsolver++": "dpmpp-3s", "dpmsolver": "dpm-solver-3"}

# a discrete schedule whose half log-SNR is linear in the timestep index, so that diffusers'
# singlestep intermediate timesteps are lambda-midpoints (1200 = 12 * 100 steps of 100 indices)
T_LIN = 1201
_LAM = torch.linspace(5.0, -5.0, T_LIN, dtype=torch.float64)
AC_LIN = torch.sigmoid(2 * _LAM)
BETAS_LIN = 1 - AC_LIN / torch.cat([torch.ones(1, dtype=torch.float64), AC_LIN[:-1]])


COS0 = ods.paths.VPCosine(s=0.0)


def _f64(*names):
    def hook(s):
        for n in names:
            setattr(s, n, getattr(s, n).to(torch.float64))

    return hook


def _singlestep_f64(s):
    """Exact float64 sigmas of the lambda-linear schedule (its float32 values are not exactly
    lambda-equispaced, so diffusers' r0 would differ from 1/2 by ~1e-7)."""
    ts = s.timesteps.long()
    sig = torch.sqrt((1 - AC_LIN[ts]) / AC_LIN[ts])
    last = torch.sqrt((1 - AC_LIN[0]) / AC_LIN[0])
    s.sigmas = torch.cat([sig, last.reshape(1)])


def _ipndm_f64(s):
    s.betas = s.betas.to(torch.float64)
    s.alphas = torch.sqrt(1 - s.betas**2)


@dataclass
class Case:
    id: str
    make: Callable
    steps: int
    method: object
    grid: str = "sigmas"  # sigmas | times | heun | singlestep | ipndm | edm
    level: Callable = level_sigmas
    coords: str = "vp"
    prediction: str = "epsilon"
    options: dict = field(default_factory=dict)
    step_kwargs: dict = field(default_factory=dict)
    f64: Callable | None = None
    tol: float = 1e-5
    skip_last: bool = False
    note: str = ""
    calls: list = field(default_factory=list)

    @property
    def method_name(self):
        return self.method if isinstance(self.method, str) else self.method.name

    def _grid(self, s, f64=False):
        if self.grid == "edm":
            sig = s.sigmas.double().clone()
            sig[-1] = torch.minimum(sig[-1], sig[-2])  # EDMDPMSolver(final "sigma_min") ends 4e-10 backwards
            return ods.paths.EDM(), sig
        if self.grid == "ipndm":  # diffusers' "betas" are sigma, "alphas" alpha of the cosine path with s = 0
            return ods.paths.VPCosine(s=0.0), torch.atan2(s.betas.double(), s.alphas.double()) * (2 / math.pi)
        if self.grid == "discrete" and not f64:  # integer timesteps on the scheduler's own path
            path = path_of(s)
            final = -1.0 if float(s.sigmas[-1]) == 0 else 0.0
            return path, torch.cat([s.timesteps.double(), torch.tensor([final], dtype=torch.float64)])
        path = path_of(s)
        if self.grid == "times":  # DDIM / PNDM: integer timesteps and the final alpha
            ts = (
                s._timesteps[::-1].astype(float).tolist()
                if hasattr(s, "_timesteps") and s._timesteps is not None and isinstance(s, d.PNDMScheduler)
                else s.timesteps.double().tolist()
            )
            final = -1.0 if float(s.final_alpha_cumprod) == 1.0 else 0.0
            return path, torch.tensor(ts + [final], dtype=torch.float64)
        # noise levels: on a path that reaches alpha = 0, so that float32 sigmas just above the
        # schedule's largest noise level are represented exactly
        path = COS0
        sig = s.sigmas.double()
        if self.grid == "heun":
            sig = torch.cat([sig[:1], sig[1::2]])
        if self.grid == "singlestep":
            sig = sig[:: s.config.solver_order]
        return path, sig

    def run(self, f64: bool = False):
        """Relative difference between diffusers and odesolve, and both final samples."""
        s = self.make()
        x = x_start()
        edm = self.grid == "edm"
        if edm:
            x = x * float(s.config.sigma_max)
        elif self.coords == "kd":
            s.set_timesteps(self.steps)
            x = x / (1 + s.sigmas[0].double() ** 2) ** -0.5
        hook = self.f64 if f64 else None
        xd = run_diffusers(
            s,
            self.steps,
            x,
            self.level,
            coords=self.coords,
            prediction=self.prediction,
            edm=edm,
            step_kwargs=self.step_kwargs,
            after_set=hook,
            skip_last=self.skip_last,
            calls=self.calls,
        )
        path, pts = self._grid(s, f64)
        if self.grid in ("times", "ipndm") or (self.grid == "discrete" and not f64):
            grid = ods.grids.from_times(path, pts)
        else:
            grid = ods.grids.from_sigmas(path, pts)
        if self.skip_last:
            grid = ods.Grid(path, grid.t[:-1])
        model = edm_model(path) if edm else vp_model(path)
        if self.prediction == "v_prediction" and self.grid == "ipndm":
            pass  # the toy model is exact, so its prediction type does not matter to odesolve
        a0 = 1.0 if edm or self.coords != "kd" else float(path.alpha(grid.t[0]))
        xo = ods.sample(model, x * a0, grid, method=self.method, **self.options)
        if self.coords == "kd" and not edm:
            xo = xo / float(path.alpha(grid.t[-1]))
        return rel(xo, xd), xd, xo


def _dpm_cases():
    out = []
    names = {
        ("dpmsolver++", "midpoint", 1): "ddim",
        ("dpmsolver++", "heun", 1): "ddim",
        ("dpmsolver", "midpoint", 1): "dpm-solver-1",
        ("dpmsolver", "heun", 1): "dpm-solver-1",
        ("dpmsolver++", "midpoint", 2): "dpmpp-2m",
        ("dpmsolver++", "heun", 2): "dpmpp-2m-taylor",
        ("dpmsolver", "midpoint", 2): "dpm-solver-2m",
        ("dpmsolver", "heun", 2): DEIS_LOGRHO[2],
        ("dpmsolver++", "midpoint", 3): "dpmpp-3m",
        ("dpmsolver++", "heun", 3): DPMPP_3M_TAYLOR_WARMUP,
        ("dpmsolver", "midpoint", 3): "dpm-solver-3m",
        ("dpmsolver", "heun", 3): DPM_3M_TAYLOR_WARMUP,
    }
    for alg in ("dpmsolver++", "dpmsolver"):
        final = "zero" if alg == "dpmsolver++" else "sigma_min"
        for st in ("midpoint", "heun"):
            for order in (1, 2, 3):
                for N in (8, 20):
                    m = names[(alg, st, order)]
                    opts = {"lower_order_final": True} if N < 15 and order > 1 else {}
                    out.append(
                        Case(
                            f"DPMSolverMultistep-{alg}-{st}-o{order}-N{N}-{final}",
                            lambda alg=alg, st=st, order=order, final=final: d.DPMSolverMultistepScheduler(
                                algorithm_type=alg, solver_type=st, solver_order=order, final_sigmas_type=final
                            ),
                            N,
                            m,
                            options=opts,
                            grid="discrete",
                        )
                    )
    cfgs = [
        ("v_prediction", {"prediction_type": "v_prediction"}),
        ("sample", {"prediction_type": "sample"}),
        ("trailing", {"timestep_spacing": "trailing"}),
        ("leading", {"timestep_spacing": "leading", "steps_offset": 1}),
        ("karras", {"use_karras_sigmas": True}),
        ("lu-lambdas", {"use_lu_lambdas": True}),
        ("scaled_linear", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
        ("squaredcos", {"beta_schedule": "squaredcos_cap_v2"}),
    ]
    for tag, kw in cfgs:
        pred = kw.get("prediction_type", "epsilon")
        low_snr = tag == "squaredcos"
        out.append(
            Case(
                f"DPMSolverMultistep-dpmpp-2m-{tag}-N10",
                lambda kw=kw: d.DPMSolverMultistepScheduler(**kw),
                10,
                "dpmpp-2m",
                options={"lower_order_final": True},
                prediction=pred,
                grid="sigmas" if tag in ("karras", "lu-lambdas") else "discrete",
                tol=1e-3 if low_snr else 1e-5,
                note="starts at alpha = 5e-5: diffusers' float32 alpha_t, sigma_t in x0 = (x - sigma eps) / "
                "alpha lose 1e-3 relative to cancellation"
                if low_snr
                else "",
            )
        )
    return out


def _singlestep_cases():
    out = []
    for alg in ("dpmsolver++", "dpmsolver"):
        for st in ("midpoint", "heun"):
            for order in (1, 2, 3):
                out.append(
                    Case(
                        f"DPMSolverSinglestep-{alg}-{st}-o{order}-N12-lambda-linear",
                        lambda alg=alg, st=st, order=order: d.DPMSolverSinglestepScheduler(
                            num_train_timesteps=T_LIN,
                            trained_betas=BETAS_LIN.float().numpy(),
                            algorithm_type=alg,
                            solver_type=st,
                            solver_order=order,
                            final_sigmas_type="sigma_min",
                            lower_order_final=False,
                        ),
                        12,
                        SINGLESTEP[(alg, st, order)],
                        grid="singlestep",
                        f64=_singlestep_f64,
                    )
                )
    return out


def _unipc_cases():
    out = []
    for bh in ("bh1", "bh2"):
        for order in (1, 2, 3):
            for corr in (True, False):
                name = f"unipc-{bh}-{order}" if corr else f"unip-{bh}-{order}"
                for N, final, lof in ((8, "sigma_min", True), (20, "sigma_min", False), (10, "zero", True)):
                    if bh == "bh1" and final == "zero":
                        continue  # diffusers gives NaN there: test_oracle_regressions
                    out.append(
                        Case(
                            f"UniPCMultistep-{bh}-o{order}-{'corrector' if corr else 'no-corrector'}-N{N}-"
                            f"{final}{'-lower_order_final' if lof else ''}",
                            lambda bh=bh, order=order, corr=corr, final=final, lof=lof: d.UniPCMultistepScheduler(
                                solver_type=bh,
                                solver_order=order,
                                final_sigmas_type=final,
                                lower_order_final=lof,
                                disable_corrector=[] if corr else list(range(1000)),
                            ),
                            N,
                            name,
                            options={"lower_order_final": lof},
                            f64=_f64("sigmas"),
                            grid="discrete",
                        )
                    )
    out.append(
        Case(
            "UniPCMultistep-bh2-o3-karras-N12",
            lambda: d.UniPCMultistepScheduler(solver_order=3, use_karras_sigmas=True),
            12,
            "unipc-bh2-3",
            options={"lower_order_final": True},
            f64=_f64("sigmas"),
        )
    )
    return out


def _deis_cases():
    out = []
    for order in (1, 2, 3):
        for N in (8, 20):
            opts = {"lower_order_final": True} if N < 15 else {}
            out.append(
                Case(
                    f"DEISMultistep-o{order}-N{N}",
                    lambda order=order: d.DEISMultistepScheduler(solver_order=order),
                    N,
                    DEIS_LOGRHO[order],
                    options=opts,
                    f64=_f64("sigmas"),
                    grid="discrete",
                    tol=1e-4 if order == 3 else 1e-5,
                    note="order 3: float32 cancellation in the closed-form log-rho weights" if order == 3 else "",
                )
            )
    return out


def _other_cases():
    out = []
    for tag, kw, N in (
        ("trailing-alpha1", {"timestep_spacing": "trailing", "set_alpha_to_one": True}, 10),
        ("leading-offset1-alpha0", {"timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False}, 20),
        ("trailing-v_prediction", {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 10),
        ("leading-sample", {"prediction_type": "sample"}, 25),
    ):
        pred = kw.get("prediction_type", "epsilon")
        out.append(
            Case(
                f"DDIM-{tag}-N{N}",
                lambda kw=kw: d.DDIMScheduler(clip_sample=False, **kw),
                N,
                "ddim",
                grid="times",
                level=level_alphas_cumprod,
                prediction=pred,
                f64=_f64("alphas_cumprod", "final_alpha_cumprod"),
            )
        )
    for tag, kw, N in (
        ("offset1", {"steps_offset": 1}, 10),
        ("offset0-zero-length-last", {}, 20),
        ("alpha1", {"steps_offset": 1, "set_alpha_to_one": True}, 25),
    ):
        out.append(
            Case(
                f"PNDM-PLMS-{tag}-N{N}",
                lambda kw=kw: d.PNDMScheduler(skip_prk_steps=True, **kw),
                N,
                "plms",
                grid="times",
                level=level_alphas_cumprod,
                f64=_f64("alphas_cumprod", "final_alpha_cumprod"),
            )
        )
    for N in (10, 20):
        sig = torch.sin(torch.linspace(0.999, 0, N + 1, dtype=torch.float64) * math.pi / 2) ** 2
        out.append(
            Case(
                f"IPNDM-v_prediction-alpha0.0022-start-N{N}",
                lambda sig=sig: d.IPNDMScheduler(trained_betas=sig.numpy()),
                N,
                "ipndm",
                grid="ipndm",
                level=level_ipndm,
                prediction="v_prediction",
                f64=_ipndm_f64,
            )
        )
    for order in (1, 2, 3, 4):
        out.append(
            Case(
                f"LMSDiscrete-order{order}-N10",
                d.LMSDiscreteScheduler,
                10,
                f"lms-{order}",
                coords="kd",
                step_kwargs={"order": order},
                f64=_f64("sigmas"),
            )
        )
    for tag, kw in (
        ("linspace", {}),
        ("karras", {"use_karras_sigmas": True}),
        ("trailing", {"timestep_spacing": "trailing"}),
        ("v_prediction", {"prediction_type": "v_prediction"}),
    ):
        for N in (10, 25):
            pred = kw.get("prediction_type", "epsilon")
            out.append(
                Case(
                    f"EulerDiscrete-{tag}-N{N}",
                    lambda kw=kw: d.EulerDiscreteScheduler(**kw),
                    N,
                    "euler",
                    coords="kd",
                    prediction=pred,
                )
            )
    for tag, kw in (("linspace", {}), ("karras", {"use_karras_sigmas": True})):
        out.append(
            Case(
                f"HeunDiscrete-{tag}-N10",
                lambda kw=kw: d.HeunDiscreteScheduler(**kw),
                10,
                "heun",
                coords="kd",
                grid="heun",
                f64=_f64("sigmas"),
            )
        )
    for final in ("zero", "sigma_min"):
        out.append(
            Case(
                f"EDMEuler-{final}-N10",
                lambda final=final: d.EDMEulerScheduler(final_sigmas_type=final),
                10,
                "euler",
                grid="edm",
            )
        )
    for st in ("midpoint", "heun"):
        for order in (1, 2, 3):
            for N in (10, 20):
                m = {
                    1: "ddim",
                    2: "dpmpp-2m" if st == "midpoint" else "dpmpp-2m-taylor",
                    3: "dpmpp-3m" if st == "midpoint" else DPMPP_3M_TAYLOR_WARMUP,
                }[order]
                if st == "heun" and order == 1:
                    continue
                opts = {"lower_order_final": True} if N < 15 and order > 1 else {}
                out.append(
                    Case(
                        f"EDMDPMSolverMultistep-{st}-o{order}-N{N}-zero",
                        lambda st=st, order=order: d.EDMDPMSolverMultistepScheduler(solver_order=order, solver_type=st),
                        N,
                        m,
                        grid="edm",
                        options=opts,
                        f64=_f64("sigmas"),
                    )
                )
    for order, N in ((1, 10), (2, 10), (2, 20)):
        # final "sigma_min" appends a last step of length ~0 (float32 Karras end 0.0019999996 -> 0.002):
        # below 15 steps diffusers' lower_order_final acts on it and on the real last step
        m = {1: "ddim", 2: "dpmpp-2m"}[order]
        out.append(
            Case(
                f"EDMDPMSolverMultistep-o{order}-N{N}-sigma_min",
                lambda order=order: d.EDMDPMSolverMultistepScheduler(solver_order=order, final_sigmas_type="sigma_min"),
                N,
                m,
                grid="edm",
                f64=_f64("sigmas"),
            )
        )
    return out


CASES = _dpm_cases() + _singlestep_cases() + _unipc_cases() + _deis_cases() + _other_cases()
