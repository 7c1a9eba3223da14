"""flow_matching's module `flow_matching.utils.manifolds.utils`, for imports that name it: geodesic."""
from . import geodesic

__all__ = ["geodesic"]
