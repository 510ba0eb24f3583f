"""odesolve: diffusion ODE solvers as coefficient tables, compiled into plans, run by one executor."""

from . import grids, methods, models, noise, paths
from .execute import NonFiniteError, Sampler, execute, sample
from .grids import Grid
from .models import Model
from .plan import Plan

__all__ = ["paths", "grids", "models", "methods", "noise", "Model", "Grid", "Plan", "sample", "execute", "Sampler", "NonFiniteError"]
__version__ = "0.1.0"
