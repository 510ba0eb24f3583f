"""SA-Solver (Xue et al. 2023) against diffusers' SASolverScheduler given the same noise, and its
coefficients against the exponential integrals they approximate.

diffusers is an oracle only. Its scheduler and the table agree step for step wherever diffusers
applies the paper's Adams weights; at the steps where a predictor or corrector uses two nodes
diffusers adds an O(h^3) term of its own (a UniPC-like adjustment its comments describe as not
changing the order), which the paper's rule does not have: with that term added to the table's
weights the two agree sample for sample."""

import math

import pytest
import torch

import odesolve as ods
from odesolve import noise as N
from odesolve.adapters.diffusers import path_from_config
from odesolve.methods import stochastic_adams as SA
from odesolve.methods.stochastic_adams import StochasticAdams, adams_weights
from odesolve.toy.gaussian import Gaussian

diffusers = pytest.importorskip("diffusers")
GAUSS = Gaussian([0.5, -0.3], [[0.25, 0.05], [0.05, 0.4]])


class _Replay(N.NoiseSource):
    """xi_k = the k-th of a list of normals (what diffusers draws at its k-th step)."""

    def __init__(self, normals):
        super().__init__(range(normals[0].shape[0]))
        self.normals = normals

    def standard_normal(self, call, interval, shape, dtype=torch.float64, device="cpu"):
        return self.normals[call].to(dtype)


def _diffusers_two_node_term(nodes, h, kappa):
    """The term diffusers adds to two-node weights (per alpha_t), from its comments: predictor
    +-kappa (h^2/2 - (kappa h - 1 + e^{-kappa h}) / kappa^2) / h_prev, corrector
    +-kappa (h/2 - (kappa h - 1 + e^{-kappa h}) / (kappa^2 h)) on the newest and the next output."""
    e = kappa * h - 1 + torch.exp(-kappa * h)
    corrector = nodes[:, 0] > 0  # the corrector's newest node is the step's end
    pred = kappa * (h**2 / 2 - e / kappa**2) / (nodes[:, 0] - nodes[:, 1])
    corr = kappa * (h / 2 - e / (kappa**2 * h))
    d = torch.where(corrector, corr, pred)
    return torch.stack([d, -d], -1)


def _both(predictor, corrector, steps, tau=1.0, B=8, with_diffusers_term=False):
    """(odesolve, diffusers) samples from the same x_T and the same normals; ``with_diffusers_term``
    adds diffusers' own two-node term to the table's weights."""
    sch = diffusers.SASolverScheduler(
        predictor_order=predictor, corrector_order=corrector, tau_func=lambda t: tau, prediction_type="sample"
    )
    sch.set_timesteps(steps)
    path = path_from_config(sch.config)
    times = torch.cat([sch.timesteps.to(torch.float64), torch.zeros(1, dtype=torch.float64)])
    grid = ods.grids.from_times(path, times)  # diffusers ends at timestep 0 (sigma > 0)
    assert torch.allclose(path.noise_level(grid.t), sch.sigmas.to(torch.float64), rtol=2e-4)  # its float32 sigmas
    gen = torch.Generator().manual_seed(3)
    x_T = torch.randn(B, 2, dtype=torch.float64, generator=gen) * float(path.sigma(grid.t[0]))
    normals = [torch.randn(B, 2, dtype=torch.float64, generator=gen) for _ in range(steps)]
    model = GAUSS.model(path, "x0")
    m = StochasticAdams(f"sa-{with_diffusers_term}", order=1, weak_order=1, predictor=predictor, corrector=corrector)
    if with_diffusers_term:
        weights = SA.adams_weights
        SA.adams_weights = lambda n, h, k: (
            weights(n, h, k) + (_diffusers_two_node_term(n, h, k) if n.shape[-1] == 2 else 0)
        )
    try:
        plan = m.compile(path, grid, lower_order_final=True, tau=tau)
    finally:
        if with_diffusers_term:
            SA.adams_weights = weights
    ours = ods.execute(plan, model, x_T, noise=_Replay(normals))
    replay = iter(normals)
    sch_noise = diffusers.schedulers.scheduling_sasolver.randn_tensor
    x = x_T.clone()
    try:
        diffusers.schedulers.scheduling_sasolver.randn_tensor = lambda *a, **k: next(replay)
        for k, t in enumerate(sch.timesteps):
            x = sch.step(model(x, grid.t[k].expand(B)), t, x).prev_sample
    finally:
        diffusers.schedulers.scheduling_sasolver.randn_tensor = sch_noise
    return ours, x


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_equals_diffusers_where_it_applies_the_papers_weights(tau):
    """One node each (no two-node step anywhere): sample for sample, to diffusers' float32 sigmas."""
    ours, theirs = _both(1, 1, steps=12, tau=tau)
    assert _rel(ours, theirs) <= 2e-5, _rel(ours, theirs)


@pytest.mark.parametrize("tau", [0.0, 1.0])
@pytest.mark.parametrize("orders", [(2, 2), (3, 3), (4, 4), (3, 2)])
def test_the_difference_to_diffusers_is_its_two_node_term(orders, tau):
    """Every predictor of more than one node starts with a two-node step (the warm-up), where diffusers
    adds its own term: without it the samples differ by about 1e-2, with it they agree sample for sample."""
    assert _rel(*_both(*orders, steps=12, tau=tau)) > 1e-3
    ours, theirs = _both(*orders, steps=12, tau=tau, with_diffusers_term=True)
    assert _rel(ours, theirs) <= 2e-5, _rel(ours, theirs)


def test_adams_weights_integrate_polynomials_exactly():
    """sum_j b_j P(r_j) = int_0^h kappa e^{-kappa (h - r)} P(r) dr for P of degree < nodes (quadrature
    of the integral in float64 by the closed form of the moments)."""
    h = torch.tensor([0.3, 1.7], dtype=torch.float64)
    nodes = torch.stack([torch.tensor([0.0, -0.25, -0.6, 0.3]), torch.tensor([0.0, -1.5, -2.5, 1.7])]).double()
    for kappa in (1.0, 2.0):
        b = adams_weights(nodes, h, kappa)
        for deg in range(4):
            got = (b * nodes**deg).sum(-1)
            # int_0^h kappa e^{-kappa (h - r)} r^deg dr, by the series of e^{kappa r} (exact to float64)
            want = torch.zeros_like(h)
            for i, hh in enumerate(h.tolist()):
                s, term, n = 0.0, None, 0
                # kappa e^{-kappa h} sum_n kappa^n h^{n+deg+1} / (n! (n+deg+1))
                while True:
                    term = kappa**n * hh ** (n + deg + 1) / (math.factorial(n) * (n + deg + 1))
                    s += term
                    n += 1
                    if term < 1e-18 * s and n > 5:
                        break
                want[i] = kappa * math.exp(-kappa * hh) * s
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-14), (kappa, deg, got, want)
