"""``fastflow.solver``: flow_matching's solvers on fused step kernels, and the DDPM / DDIM steps."""
from .discrete_solver import MixtureDiscreteEulerSolver
from .euler import euler_step
from .ode_solver import ODESolver
from .riemannian_ode_solver import RiemannianODESolver
from ..utils import ModelWrapper  # flow_matching.solver exports it too
from .base import Solver

__all__ = ["Solver", "ODESolver", "MixtureDiscreteEulerSolver", "RiemannianODESolver", "euler_step", "ModelWrapper"]
