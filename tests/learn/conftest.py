"""One small fit per family, shared by the tests of odesolve.learn (fits take seconds)."""

import pytest
import torch

import odesolve as ods
from odesolve import learn
from odesolve.toy import problems


@pytest.fixture(scope="session")
def gmm():
    prob = problems.get("gmm2d")
    return prob, prob.model("x0")


@pytest.fixture(scope="session")
def noise(gmm):
    prob, _ = gmm
    return (prob.prior(64, torch.Generator().manual_seed(11)), prob.prior(32, torch.Generator().manual_seed(12)))


@pytest.fixture(scope="session")
def fitted(gmm, noise):
    """Both families at NFE 4 on a Karras grid to sigma = 0."""
    _, model = gmm
    x, xv = noise
    return {
        fam: learn.fit(model, x, nfe=4, family=fam, init="dpmpp-2m", x_T_val=xv, iterations=15, epochs=2)
        for fam in learn.FAMILIES
    }


@pytest.fixture(scope="session")
def fitted_finite(gmm, noise):
    """Coefficients on a grid that ends at sigma_min > 0 (finite lambda: the order analysis applies)."""
    prob, model = gmm
    x, xv = noise
    grid = ods.grids.karras(prob.path, 5, to_zero=False)
    return learn.fit(
        model, x, nfe=5, family="coefficients", init="dpmpp-2m", grid=grid, x_T_val=xv, iterations=10, epochs=2
    )
