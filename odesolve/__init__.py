"""odesolve: diffusion ODE solvers as coefficient tables, compiled into plans, run by one executor."""

from . import adaptive, grids, guidance, interpolants, learn, methods, models, noise, paths
from .execute import NonFiniteError, Sampler, execute, sample
from .grids import Grid
from .models import Model
from .plan import Plan

__all__ = [
    "Grid",
    "Model",
    "NonFiniteError",
    "Plan",
    "Sampler",
    "adaptive",
    "execute",
    "grids",
    "guidance",
    "interpolants",
    "learn",
    "methods",
    "models",
    "noise",
    "paths",
    "sample",
]
__version__ = "0.1.0"
