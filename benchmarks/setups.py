"""Problems, paths and grids of the accuracy benchmark.

Setups (a path and a family of grids indexed by the number of steps N):

- ``edm-karras``: EDM path (alpha = 1, sigma = t), Karras grid sigma_min 0.002, sigma_max 80, rho 7,
  the last step to sigma = 0 (as EDM and k-diffusion do);
- ``vp-logsnr``: the discrete linear-beta VP path of diffusers (beta 1e-4 .. 2e-2, 1000 steps; the
  float32 ``alphas_cumprod`` that diffusers computes, so all libraries see the same schedule), N - 1
  steps uniform in log-SNR from t = 999 to t = 0, then the step to t = -1 (sigma = 0);
- ``vp-trailing``: the same path, diffusers' "trailing" timesteps (Lin et al. 2024) and the step to
  t = -1, i.e. exactly what ``timestep_spacing="trailing"`` gives in diffusers.

Problems come from :mod:`odesolve.toy.problems` ("gmm2d", "lowrank64"); starting points are exact
samples of p_T, one fixed draw per (problem, setup), shared by every library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import odesolve as ods
from odesolve import grids
from odesolve.paths import EDM, Path, VPDiscrete

__all__ = ["SETUPS", "Setup", "get_problem", "start_points", "vp_path"]

T_TRAIN = 1000
BETA_START, BETA_END = 1e-4, 2e-2


def vp_path() -> VPDiscrete:
    """diffusers' linear-beta schedule: float32 ``alphas_cumprod`` (as diffusers computes it), as float64 betas."""
    betas32 = torch.linspace(BETA_START, BETA_END, T_TRAIN, dtype=torch.float32)
    ac = torch.cumprod(1.0 - betas32, dim=0).to(torch.float64)
    betas = torch.cat([1 - ac[:1], 1 - ac[1:] / ac[:-1]])
    return VPDiscrete(betas)


@dataclass(frozen=True, eq=False)
class Setup:
    key: str
    path: Path
    t_start: float
    sigma_min_positive: float  # the smallest non-zero noise level of the grids (for samplers that stop there)
    make_grid: Callable[[int], ods.Grid]
    diffusers_native: bool  # diffusers' own set_timesteps gives this grid (no override needed)
    description: str

    def grid(self, steps: int) -> ods.Grid:
        return self.make_grid(steps)

    @property
    def t_end(self) -> float:
        return float(self.path.t_min)


def _edm() -> Setup:
    path = EDM()

    def make(n: int) -> ods.Grid:
        if n == 1:
            return grids.from_sigmas(path, [80.0, 0.0])
        return grids.karras(path, steps=n, sigma_min=0.002, sigma_max=80.0, rho=7.0)

    return Setup(
        "edm-karras",
        path,
        80.0,
        0.002,
        make,
        False,
        "EDM path, Karras grid (sigma 80 -> 0.002, rho 7) + step to sigma 0",
    )


def _vp_logsnr(path: VPDiscrete) -> Setup:
    def make(n: int) -> ods.Grid:
        if n == 1:
            return grids.from_times(path, [float(T_TRAIN - 1), -1.0])
        g = grids.uniform_lambda(path, n - 1, t_start=float(T_TRAIN - 1), t_end=0.0)
        return grids.from_times(path, torch.cat([g.t, torch.tensor([-1.0], dtype=torch.float64)]))

    s_min = float(path.noise_level(torch.tensor(0.0, dtype=torch.float64)))
    return Setup(
        "vp-logsnr",
        path,
        float(T_TRAIN - 1),
        s_min,
        make,
        False,
        "VP linear-beta (discrete, T=1000), N-1 steps uniform in log-SNR t=999 -> 0, + step to t=-1",
    )


def _vp_trailing(path: VPDiscrete) -> Setup:
    s_min = float(path.noise_level(torch.tensor(0.0, dtype=torch.float64)))
    return Setup(
        "vp-trailing",
        path,
        float(T_TRAIN - 1),
        s_min,
        lambda n: grids.discrete(path, n, spacing="trailing", final="zero"),
        True,
        "VP linear-beta (discrete, T=1000), diffusers 'trailing' timesteps, + step to t=-1",
    )


def make_setups() -> dict[str, Setup]:
    vp = vp_path()
    return {s.key: s for s in (_edm(), _vp_logsnr(vp), _vp_trailing(vp))}


SETUPS = make_setups()


def get_problem(name: str):
    """The named exact problem of :mod:`odesolve.toy.problems`."""
    from odesolve.toy import problems

    return problems.get(name)


def start_points(problem, setup: Setup, n: int, seed: int = 0) -> Tensor:
    """``n`` exact samples of p at ``setup.t_start`` (float64), the same for every library."""
    g = torch.Generator().manual_seed(seed)
    return problem.distribution.sample_prior(n, setup.path, setup.t_start, g, kind="exact")
