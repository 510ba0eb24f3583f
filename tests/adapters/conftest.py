"""Adapter tests: diffusers and k-diffusion interop (skipped where diffusers is not installed)."""

import pytest
import torch

pytest.importorskip("diffusers")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks: one thread avoids OpenMP oversubscription on shared CI machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
