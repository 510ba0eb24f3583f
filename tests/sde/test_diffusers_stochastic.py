"""Same noise in, same samples out: odesolve's stochastic tables against diffusers' own stochastic
schedulers (diffusers is an oracle here: its step loop is driven as a pipeline drives it).

The model is the exact denoiser of a 2-D Gaussian mixture, evaluated by each side at the noise level
it uses for the call. The normals are odesolve's: ``PerSampleNormal(seeds)`` answers call k with
``xi_k``; odesolve gets the source (``noise=``), diffusers gets ``xi_k`` at its step k, through
``variance_noise=`` where ``step`` takes it (DDIM, DPMSolverMultistep) and through the scheduler
module's ``randn_tensor`` where it does not (DDPM, EulerAncestralDiscrete). The grids are the
schedulers' own: their integer timesteps on the path of their float32 ``alphas_cumprod`` (DDPM, DDIM),
or their float32 sigmas (Euler ancestral, DPM-Solver++ SDE).

Differences, and why:

- ``DDPMScheduler`` (``ddpm``, eta = 1; ``variance_type="fixed_small"``: the posterior variance
  beta_tilde) and ``DDIMScheduler`` with ``eta > 0`` (``ddpm`` with ``eta``): with the scheduler's
  tables converted to float64 after ``set_timesteps``, the loop runs in float64: equal to 1e-12
  relative, but for one thing: DDPM clamps the posterior variance at 1e-20, so its last step to
  alpha = 1 from a timestep t > 0 ("trailing" spacing ends at t = T/N - 1) adds ``1e-10 xi`` where the
  exact posterior adds nothing (a difference of 3e-10 measured, in a sample of size ~1).
- ``DDIMScheduler`` steps from t to ``t - T // N`` whatever its ``timestep_spacing``: with "trailing"
  that is not always the next timestep (T = 1000, N = 12: 916 -> 833, and the next call is made at
  832), so the state and the time the model is told differ by one training step; no grid describes
  that, and the comparison uses "leading" spacing, where the two agree.
- ``EulerAncestralDiscreteScheduler`` (``euler-ancestral``) and ``DPMSolverMultistepScheduler`` with
  ``algorithm_type="sde-dpmsolver++"`` (``dpmpp-2m-sde``): their ``step`` casts the sample (and the
  noise) to float32 on every step, so the runs agree to float32 accuracy, 1e-5 relative (measured
  ~1e-7). The algorithms are the same: DPM-Solver++(2M) SDE's midpoint slope term, its first-order
  first step and its first-order last step to sigma = 0 (diffusers' ``lower_order_final``; in odesolve a
  step of infinite length takes the one-node update) are odesolve's.
"""

import math

import pytest
import torch

import odesolve as ods
from odesolve import noise as N
from odesolve.toy.gmm import GaussianMixture

diffusers = pytest.importorskip("diffusers")

MIXTURE = GaussianMixture(
    [0.3, 0.7], [[-1.0, 0.5], [1.5, -0.5]], [[[0.2, 0.05], [0.05, 0.1]], [[0.3, 0.0], [0.0, 0.2]]]
)
EDM = ods.paths.EDM()
COS0 = ods.paths.VPCosine(s=0.0)  # reaches alpha = 0: float32 sigmas of any size are noise levels on it
B = 5
SEEDS = range(100, 100 + B)


def x0_at(x, alpha, sigma):
    """The exact denoiser at (alpha, sigma): x / alpha is the EDM state at noise level sigma / alpha."""
    a, s = float(alpha), float(sigma)
    return MIXTURE.denoiser(x.double() / a, torch.tensor(s / a, dtype=torch.float64), EDM)


def xi(k, shape):
    return N.PerSampleNormal(SEEDS).standard_normal(k, None, shape, torch.float64)


def path_of(s) -> ods.paths.VPDiscrete:
    """The discrete VP path of the scheduler's float32 alphas_cumprod, exactly."""
    ac = s.alphas_cumprod.to(torch.float64)
    return ods.paths.VPDiscrete(1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]]))


def _model(path):
    return MIXTURE.model(path, "x0")


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


class _Feed:
    """Stands in for the scheduler module's randn_tensor: answers step k with xi_k."""

    def __init__(self):
        self.k = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        out = xi(self.k, shape).to(dtype or torch.float64)
        self.k += 1
        return out


@pytest.mark.parametrize(("steps", "spacing"), [(10, "leading"), (25, "trailing")])
def test_ddpm_scheduler(monkeypatch, steps, spacing):
    from diffusers.schedulers import scheduling_ddpm

    s = diffusers.DDPMScheduler(clip_sample=False, timestep_spacing=spacing, beta_schedule="scaled_linear")
    path = path_of(s)
    s.set_timesteps(steps)
    s.alphas_cumprod = s.alphas_cumprod.to(torch.float64)
    s.alphas = s.alphas.to(torch.float64)
    s.betas = s.betas.to(torch.float64)
    s.one = torch.tensor(1.0, dtype=torch.float64)
    feed = _Feed()
    monkeypatch.setattr(scheduling_ddpm, "randn_tensor", feed)
    x_T = torch.randn(B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = x_T.clone()
    for k, t in enumerate(s.timesteps):
        ac = s.alphas_cumprod[int(t)]
        a, sg = ac.sqrt(), (1 - ac).sqrt()
        eps = (x - a * x0_at(x, a, sg)) / sg
        feed.k = k  # diffusers draws only where t > 0; step k consumes xi_k either way
        x = s.step(eps, t, x).prev_sample
    times = torch.cat([s.timesteps.double(), torch.tensor([-1.0], dtype=torch.float64)])  # last: alpha = 1
    grid = ods.grids.from_times(path, times)
    got = ods.sample(_model(path), x_T, grid, "ddpm", noise=N.PerSampleNormal(SEEDS))
    assert _rel(got, x) < (1e-12 if spacing == "leading" else 1e-9)  # trailing: the 1e-10 xi of the last step


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_ddim_scheduler_with_eta(eta):
    s = diffusers.DDIMScheduler(
        clip_sample=False, timestep_spacing="leading", set_alpha_to_one=True, beta_schedule="scaled_linear"
    )
    path = path_of(s)
    steps = 12
    s.set_timesteps(steps)
    s.alphas_cumprod = s.alphas_cumprod.to(torch.float64)
    s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    x_T = torch.randn(B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = x_T.clone()
    for k, t in enumerate(s.timesteps):
        ac = s.alphas_cumprod[int(t)]
        a, sg = ac.sqrt(), (1 - ac).sqrt()
        eps = (x - a * x0_at(x, a, sg)) / sg
        x = s.step(eps, t, x, eta=eta, variance_noise=xi(k, x.shape)).prev_sample
    grid = ods.grids.from_times(path, torch.cat([s.timesteps.double(), torch.tensor([-1.0], dtype=torch.float64)]))
    got = ods.sample(_model(path), x_T, grid, "ddpm", eta=eta, noise=N.PerSampleNormal(SEEDS))
    assert _rel(got, x) < 1e-12


def _sigma_loop(s, steps, x_T, call):
    """A k-diffusion-style scheduler: the state is x / alpha, the network sees scale_model_input(x)."""
    x = x_T.clone()
    for k, t in enumerate(s.timesteps):
        rho = s.sigmas[k].double()
        a = 1 / math.sqrt(1 + float(rho) ** 2)
        xin = s.scale_model_input(x, t).double()
        eps = (xin - a * x0_at(xin, a, a * rho)) / (a * rho)
        x = call(s, eps, t, x, k)
    return x


@pytest.mark.parametrize("steps", [8, 20])
def test_euler_ancestral_scheduler(monkeypatch, steps):
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as mod

    s = diffusers.EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="trailing")
    s.set_timesteps(steps)
    feed = _Feed()
    monkeypatch.setattr(mod, "randn_tensor", feed)
    xbar_T = torch.randn(B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * float(s.sigmas[0])

    def call(s, eps, t, x, k):
        feed.k = k
        return s.step(eps, t, x).prev_sample.double()

    want = _sigma_loop(s, steps, xbar_T, call)
    grid = ods.grids.from_sigmas(COS0, s.sigmas.double())  # ends at sigma = 0 (alpha = 1)
    a0 = float(COS0.alpha(grid.t[0]))
    got = ods.sample(_model(COS0), xbar_T * a0, grid, "euler-ancestral", noise=N.PerSampleNormal(SEEDS))
    assert _rel(got, want) < 1e-5


@pytest.mark.parametrize("steps", [8, 20])
def test_dpmsolver_multistep_sde_scheduler(steps):
    s = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", algorithm_type="sde-dpmsolver++", solver_order=2, timestep_spacing="trailing"
    )
    s.set_timesteps(steps)
    x_T = torch.randn(B, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = x_T.clone()
    for k, t in enumerate(s.timesteps):
        rho = s.sigmas[k].double()
        a = 1 / math.sqrt(1 + float(rho) ** 2)
        eps = (x - a * x0_at(x, a, a * rho)) / (a * rho)
        x = s.step(eps, t, x, variance_noise=xi(k, x.shape)).prev_sample.double()
    grid = ods.grids.from_sigmas(COS0, s.sigmas.double())  # the state is x_t: VP coordinates throughout
    got = ods.sample(_model(COS0), x_T, grid, "dpmpp-2m-sde", noise=N.PerSampleNormal(SEEDS))
    assert _rel(got, x) < 1e-5
