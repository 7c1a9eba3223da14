"""flow_matching's module `flow_matching.utils.manifolds.manifold`, for imports that name it: Euclidean, Manifold."""
from . import Euclidean, Manifold

__all__ = ["Euclidean", "Manifold"]
