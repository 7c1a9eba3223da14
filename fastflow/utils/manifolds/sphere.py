"""flow_matching's module `flow_matching.utils.manifolds.sphere`, for imports that name it: Sphere."""
from . import Sphere

__all__ = ["Sphere"]
