"""The ODE-SDE gap study (scripts/ode_sde_gap.py) in reduced form: gmm2d, 2000 samples, NFE 5 and 100,
two ODE and two SDE methods, the exact model and a model whose data prediction is biased by 3 above
noise level 10 (odesolve.toy.perturbed); dpmpp-2m against dpmpp-2m-sde (ODESOLVE_FULL=1 adds ddim and ddpm).
Claims checked: with the biased model the best SDE lands
closer to the target than the best ODE at NFE 100 (stochasticity contracts the early error) but not at
NFE 5 (its discretisation error dominates), so the crossover lies in (5, 100]; with the exact model the
SDE has no such advantage. Sliced W2 floor (two exact samples of 2000 points) ~0.25."""

import os
import sys

import pytest
import torch
from jaxtyping import TypeCheckError

import odesolve as ods
from odesolve.toy import problems
from odesolve.toy.perturbed import perturbed_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import ode_sde_gap as gap

FULL = os.environ.get("ODESOLVE_FULL", "0") == "1"
METHODS = ("ddim", "dpmpp-2m", "ddpm", "dpmpp-2m-sde") if FULL else ("dpmpp-2m", "dpmpp-2m-sde")


@pytest.fixture(scope="module")
def rows():
    out = gap.study("gmm2d", (0.0, 3.0), (5, 100), METHODS, n=2000, seed=0)
    print(gap.table(out, 2000, gap.floor("gmm2d", 2000, 0)))
    return out


@pytest.mark.slow
def test_stochasticity_contracts_the_error_of_a_biased_model(rows):
    o, s = gap.best(rows, 3.0, False), gap.best(rows, 3.0, True)
    fl = gap.floor("gmm2d", 2000, 0)
    assert s[100].w2 < o[100].w2 - 0.15, (s[100], o[100])  # measured 0.3 apart
    assert o[100].w2 > fl + 0.4  # the bias is visible above the estimator's floor
    assert s[5].w2 > o[5].w2  # at NFE 5 the SDE's discretisation error dominates
    assert gap.crossover(rows, 3.0, 0.5 * fl) == 100
    assert s[100].nll < o[100].nll  # and it lands in denser regions of the target


@pytest.mark.slow
def test_no_sde_advantage_with_the_exact_model(rows):
    """Exact model at NFE 100: both land on the target within the estimator's noise (two exact samples
    differ by ~0.25 in sliced W2; these two runs share x_T), far from the biased model's gap."""
    o, s = gap.best(rows, 0.0, False), gap.best(rows, 0.0, True)
    assert abs(s[100].w2 - o[100].w2) < 0.08, (s[100], o[100])  # measured 0.05
    biased = gap.best(rows, 3.0, False)[100].w2 - gap.best(rows, 3.0, True)[100].w2
    assert biased > 4 * abs(s[100].w2 - o[100].w2)  # measured 8 times
    assert s[5].w2 > o[5].w2  # and at NFE 5 the ODE is ahead
    assert gap.crossover(rows, 0.0, 0.5 * gap.floor("gmm2d", 2000, 0)) is None


def test_the_perturbed_model():
    pb = problems.get("gmm2d")
    x = pb.prior(64, torch.Generator().manual_seed(0))
    t = torch.full((64,), 20.0, dtype=torch.float64)
    exact = pb.distribution.denoiser(x, t, pb.path)
    assert torch.equal(perturbed_model(pb.distribution, pb.path, 0.0)(x, t), exact)
    m = perturbed_model(pb.distribution, pb.path, 2.0, onset=10.0)
    err = m(x, t) - exact
    r = 20.0**2 / (20.0**2 + 10.0**2)  # rho^2 / (rho^2 + onset^2) on EDM
    assert float(err.abs().max()) <= 2.0 * r * 2**0.5 + 1e-12 and float(err.pow(2).mean().sqrt()) > 0.5 * r
    low = perturbed_model(pb.distribution, pb.path, 2.0, onset=10.0)(x, torch.full((64,), 0.01, dtype=torch.float64))
    assert float((low - pb.distribution.denoiser(x, torch.full((64,), 0.01), pb.path)).abs().max()) < 1e-5
    eps = perturbed_model(pb.distribution, pb.path, 2.0, onset=10.0, prediction="eps")
    assert eps.prediction == "eps" and torch.allclose(eps.x0(x, t), m(x, t), rtol=1e-12, atol=1e-12)
    for bad, match in (({"bias": -1.0}, "bias"), ({"bias": 1.0, "onset": 0.0}, "onset")):
        with pytest.raises(ValueError, match=match):
            perturbed_model(pb.distribution, pb.path, **bad)
    with pytest.raises((TypeError, TypeCheckError)):  # the annotation is checked under the test suite's hook
        perturbed_model("gmm2d", pb.path, 1.0)
    with pytest.raises((ValueError, TypeCheckError), match="prediction"):
        perturbed_model(pb.distribution, pb.path, 1.0, prediction="noise")


def test_the_script_writes_its_table_and_figure(tmp_path):
    pytest.importorskip("matplotlib")
    rows = gap.main(["--nfe", "5", "--ode", "ddim", "--sde", "ddpm", "--n", "200", "--out", str(tmp_path)])
    assert {r.method for r in rows} == {"ddim", "ddpm"} and all(r.w2 > 0 for r in rows)
    text = (tmp_path / "ode_sde_gap.md").read_text()
    assert "ddim (ODE)" in text and "ddpm (SDE)" in text and "crossover" in text
    assert (tmp_path / "ode_sde_gap.png").stat().st_size > 1000
    assert ods.methods.get("ddpm").stochastic
