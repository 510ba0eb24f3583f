"""Shared fixtures of the toy tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The toy tests run many small float64 ops, for which intra-op threads only add overhead (and on
    an oversubscribed 2-core machine, OpenMP barriers cost milliseconds per op): one thread per module,
    restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
