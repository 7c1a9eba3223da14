"""flow_matching's module `flow_matching.utils.categorical_sampler`, for imports that name it: categorical."""
from . import categorical

__all__ = ["categorical"]
