"""flow_matching's module `flow_matching.path.path`, for imports that name it: ProbPath."""
from .base import ProbPath

__all__ = ["ProbPath"]


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from .path_sample import PathSample  # noqa: E402,F401
