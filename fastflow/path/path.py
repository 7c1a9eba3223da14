"""flow_matching's module `flow_matching.path.path`, for imports that name it: ProbPath."""
from .base import ProbPath

__all__ = ["ProbPath"]
