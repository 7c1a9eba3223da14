"""``fastflow.path``: flow_matching's path module, fused."""
from . import scheduler
from .affine import AffineProbPath, CondOTProbPath
from .mixture import MixtureDiscreteProbPath
from .path_sample import DiscretePathSample, PathSample

__all__ = ["AffineProbPath", "CondOTProbPath", "MixtureDiscreteProbPath", "PathSample",
           "DiscretePathSample", "scheduler"]
