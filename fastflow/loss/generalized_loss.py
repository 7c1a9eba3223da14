"""flow_matching's module `flow_matching.loss.generalized_loss`, for imports that name it: MixturePathGeneralizedKL."""
from . import MixturePathGeneralizedKL

__all__ = ["MixturePathGeneralizedKL"]
