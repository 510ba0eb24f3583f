"""Theory tooling (provisional init)."""
from .numeric import numeric_order, polynomial_errors, step_exactness
