"""flow_matching's module `flow_matching.utils.manifolds.torus`, for imports that name it: FlatTorus."""
from . import FlatTorus

__all__ = ["FlatTorus"]
