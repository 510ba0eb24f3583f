"""Oracle tests: odesolve against diffusers' schedulers, k-diffusion's samplers and the papers' formulas."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids OpenMP oversubscription on shared CI machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
