"""Test-suite configuration: runtime shape/dtype checking of odesolve's annotations.

jaxtyping's import hook wraps every function of the package with beartype, so a shape or dtype
annotation (``Float64[Tensor, " steps_plus_one"]``) that does not hold fails the tests.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
from jaxtyping import install_import_hook

if "odesolve" not in sys.modules:
    with install_import_hook("odesolve", "beartype.beartype"):
        import odesolve
        import odesolve.methods
        import odesolve.toy  # noqa: F401

os.environ.setdefault("ODESOLVE_FULL", "0")
# helpers shared by the core tests (pytest-markdown-docs imports test modules before pytest adds their folder)
sys.path.insert(0, str(Path(__file__).parent / "core"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Small tensors and tiny networks: one intra-op thread avoids OpenMP barriers stalling on a
    shared 2-core machine, and makes timings independent of the core count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
