"""Reproducibility on CPU: reruns are bit-identical, and a sample's result does not depend on the
batch it is computed in (alone, in a batch, at any position of the batch).

- Exact toy models (odesolve.toy.GaussianMixture, every prediction type): every registered method
  on EDM (Karras grid), VP linear (uniform lambda), VP discrete (trailing spacing) and flow matching
  (uniform time from t = 0.98, an x0 model so that alpha stays > 0 where the eps-prediction methods
  need it): bit-identical (``torch.equal``).
- The digits network (odesolve.toy.zoo): reruns are bit-identical; with the network called one
  sample at a time the sampler is bit-identical alone, in a batch and permuted (the sampler itself
  mixes no samples); with the network called on the whole batch the results agree to
  ``DIGITS_ATOL`` -- float32 matrix products may take a different kernel (blocking, summation
  order) for another batch size, which changes the last bits of each network output (measured
  about 4e-6 after 10 steps on values of size ~1, i.e. ~30 float32 ulps; the bound leaves 10x).
"""

from __future__ import annotations

import pytest
import torch

import odesolve as ods
from odesolve import grids as G
from odesolve import paths as P
from odesolve.toy import GaussianMixture

DIGITS_ATOL = 5e-5
B = 6


def _digits() -> ods.Model:
    """The zoo's digits network as an odesolve.Model (the one place that loads it)."""
    from odesolve.toy import zoo

    return zoo.load("digits")


MIXTURE = GaussianMixture(
    torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
    torch.tensor([[-2.0, 0.5], [0.3, 1.0], [1.5, -1.0]], dtype=torch.float64),
    torch.diag_embed(torch.tensor([[0.1, 0.3], [0.2, 0.05], [0.4, 0.2]], dtype=torch.float64)),
)

SETUPS = {
    "edm-karras-eps": (P.EDM(), lambda p: G.karras(p, 8, sigma_max=20.0), "eps"),
    "vp-linear-lambda-v": (P.VP.linear(), lambda p: G.uniform_lambda(p, 8, 1.0, 1e-3), "v"),
    "vp-discrete-trailing-velocity": (P.VP.discrete(), lambda p: G.discrete(p, 8), "velocity"),
    "flow-matching-time-x0": (P.FlowMatching(), lambda p: G.uniform_time(p, 8, 0.98, 0.0), "x0"),
}


def _start(path, grid, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    t0 = grid.t[:1]
    return path.alpha(t0) * MIXTURE.sample(n, generator=g) + path.sigma(t0) * torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_exact_models_are_batch_invariant_and_rerun_identically(setup):
    path, make_grid, prediction = SETUPS[setup]
    grid = make_grid(path)
    model = MIXTURE.model(path, prediction)
    x = _start(path, grid, B)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    for method in ods.methods.names():
        # stochastic methods: sample i's noise is keyed by its seed i, and travels with it
        noisy = ods.methods.get(method).stochastic
        seeds = (lambda idx: {"seeds": idx.tolist()}) if noisy else (lambda idx: {})
        idx = torch.arange(B)
        full = ods.sample(model, x, grid, method=method, **seeds(idx))
        assert torch.isfinite(full).all(), method
        assert torch.equal(full, ods.sample(model, x, grid, method=method, **seeds(idx))), method
        assert torch.equal(ods.sample(model, x[perm], grid, method=method, **seeds(perm)), full[perm]), method
        assert torch.equal(ods.sample(model, x[B - 1 :], grid, method=method, **seeds(idx[B - 1 :])), full[B - 1 :]), (
            method
        )
        assert torch.equal(ods.sample(model, x[1:4], grid, method=method, **seeds(idx[1:4])), full[1:4]), method


def test_float32_state_is_batch_invariant_with_the_exact_model():
    path, make_grid, prediction = SETUPS["edm-karras-eps"]
    grid = make_grid(path)
    model = MIXTURE.model(path, prediction)
    x = _start(path, grid, B).float()
    full = ods.sample(model, x, grid, method="dpmpp-3m")
    assert full.dtype == torch.float32
    assert torch.equal(torch.cat([ods.sample(model, x[i : i + 1], grid, method="dpmpp-3m") for i in range(B)]), full)


@pytest.fixture(scope="module")
def digits():
    model = _digits()
    grid = G.discrete(model.path, 10)
    x = torch.randn(B, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return model, grid, x


def _one_at_a_time(model: ods.Model) -> ods.Model:
    """The same network, called on one sample at a time: batch-invariant by construction."""

    def fn(x, t):
        return torch.cat([model.fn(x[i : i + 1], t[i : i + 1]) for i in range(x.shape[0])])

    return ods.Model(fn, model.path, model.prediction)


@pytest.mark.parametrize("method", ["ddim", "dpmpp-2m", "unipc-bh2-3", "heun"])
def test_digits_network_reruns_identically_and_the_sampler_mixes_no_samples(digits, method):
    model, grid, x = digits
    with torch.inference_mode():
        full = ods.sample(model, x, grid, method=method)
        assert torch.equal(full, ods.sample(model, x, grid, method=method))
        single = _one_at_a_time(model)
        ref = ods.sample(single, x, grid, method=method)
        perm = torch.tensor([5, 2, 0, 4, 1, 3])
        assert torch.equal(ods.sample(single, x[perm], grid, method=method), ref[perm])
        assert torch.equal(ods.sample(single, x[1:2], grid, method=method), ref[1:2])
        assert torch.equal(ods.sample(single, x[2:5], grid, method=method), ref[2:5])
        # the batched network: equal to float32 rounding of its matrix products
        assert (full - ref).abs().max() <= DIGITS_ATOL
        assert (ods.sample(model, x[perm], grid, method=method) - full[perm]).abs().max() <= DIGITS_ATOL
        assert (ods.sample(model, x[1:2], grid, method=method) - full[1:2]).abs().max() <= DIGITS_ATOL
