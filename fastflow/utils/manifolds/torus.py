"""flow_matching's module `flow_matching.utils.manifolds.torus`, for imports that name it: FlatTorus."""
from . import FlatTorus

__all__ = ["FlatTorus"]


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from .manifold import Manifold  # noqa: E402,F401
