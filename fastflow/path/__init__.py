"""``fastflow.path``: flow_matching's path module, fused."""
from . import scheduler
from .affine import AffineProbPath, CondOTProbPath
from .base import ProbPath
from .geodesic import GeodesicProbPath
from .mixture import MixtureDiscreteProbPath
from .path_sample import DiscretePathSample, PathSample

__all__ = ["ProbPath", "AffineProbPath", "CondOTProbPath", "MixtureDiscreteProbPath", "GeodesicProbPath",
           "PathSample", "DiscretePathSample", "scheduler"]
