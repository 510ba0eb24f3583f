"""Adapter tests: diffusers and k-diffusion interop (skipped where diffusers is not installed)."""

import pytest

pytest.importorskip("diffusers")
