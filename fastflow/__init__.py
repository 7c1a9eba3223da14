"""fastflow: fused kernels for the hot loops of flow-matching models.

flow_matching's API under the same module paths (``fastflow.path``, ``.path.scheduler``,
``.solver``, ``.loss``, ``.utils``), each name also flat here, plus fused entry points.
"""
from ._source_tree import map_triton_kernels as _map_triton_kernels

_map_triton_kernels()  # ``fastflow.triton_kernels`` when run from a source tree (see there)

from . import csrc_backend as _csrc_backend  # noqa: E402,F401  (warns here if the compiled build failed)
from ._memory import empty_cache as empty_cpu_cache  # noqa: E402
from .backends import available_backends, get_backend, set_backend, use_backend  # noqa: E402
from .diffusion import DDPMScheduler, ddim_step, ddpm_step  # noqa: E402
from .loss import MixturePathGeneralizedKL, generalized_kl, mixture_cross_entropy  # noqa: E402
from .ops.affine_path import affine_path_loss, affine_path_sample  # noqa: E402
from .ops.discrete import JumpNoise, jump_step, mixture_path_sample  # noqa: E402
from .ops.step_combine import step_combine  # noqa: E402
from .path import (AffineProbPath, CondOTProbPath, DiscretePathSample,  # noqa: E402
                   GeodesicProbPath, MixtureDiscreteProbPath, PathSample, ProbPath)
from .path.scheduler import (CondOTScheduler, ConvexScheduler, CosineScheduler,  # noqa: E402
                             LinearVPScheduler, OTSigmaMinScheduler, PolynomialConvexScheduler,
                             ScheduleTransformedModel, Scheduler, SchedulerOutput, VPScheduler, is_convex)
from .solver import MixtureDiscreteEulerSolver, ODESolver, RiemannianODESolver, Solver, euler_step  # noqa: E402
from .utils import ModelWrapper, categorical, expand_tensor_like, gradient, unsqueeze_to_match  # noqa: E402
from .utils.manifolds import Euclidean, FlatTorus, Manifold, Product, Sphere, geodesic  # noqa: E402
from . import torchcfm  # noqa: E402  (fastflow.torchcfm after `import fastflow`, as the README says)
from .torchcfm import (ConditionalFlowMatcher, ExactOptimalTransportConditionalFlowMatcher,  # noqa: E402
                       SchrodingerBridgeConditionalFlowMatcher, TargetConditionalFlowMatcher,
                       VariancePreservingConditionalFlowMatcher)

__version__ = "0.1.0"
__all__ = [n for n in dir() if not n.startswith("_")]
