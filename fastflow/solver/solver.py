"""flow_matching's module `flow_matching.solver.solver`, for imports that name it: Solver."""
from .base import Solver

__all__ = ["Solver"]
