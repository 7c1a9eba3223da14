"""flow_matching's module `flow_matching.loss.generalized_loss`, for imports that name it: MixturePathGeneralizedKL."""
from . import MixturePathGeneralizedKL

__all__ = ["MixturePathGeneralizedKL"]


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from ..path.mixture import MixtureDiscreteProbPath  # noqa: E402,F401
