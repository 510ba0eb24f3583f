"""Shared fixtures of the zoo tests: the digits model, its classifier and one batch of samples."""

import pytest
import torch
from zoo_setup import BEST, N_SAMPLES

import odesolve as ods
from odesolve.commands.sample import make_grid, steps_for_nfe
from odesolve.toy import metrics, zoo


@pytest.fixture(scope="session")
def model():
    return zoo.load("digits")


@pytest.fixture(scope="session")
def classifier():
    """(classifier, train index, test index), trained here on a seeded 75 % split (about 2 s)."""
    return metrics.digits_classifier(seed=0)


@pytest.fixture(scope="session")
def x_T():
    return torch.randn((N_SAMPLES, 1, 8, 8), generator=torch.Generator().manual_seed(1234))


@pytest.fixture(scope="session")
def samples(model, x_T):
    """N_SAMPLES samples of BEST at NFE 10 on the trailing grid (the `odesolve sample` default)."""
    steps = steps_for_nfe(model.path, BEST, 10)
    with torch.inference_mode():
        return ods.sample(model, x_T, make_grid(model.path, steps), method=BEST)
