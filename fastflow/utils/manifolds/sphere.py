"""flow_matching's module `flow_matching.utils.manifolds.sphere`, for imports that name it: Sphere."""
from . import Sphere

__all__ = ["Sphere"]


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from .manifold import Manifold  # noqa: E402,F401
