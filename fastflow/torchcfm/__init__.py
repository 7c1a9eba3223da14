"""torchcfm's API on fastflow's kernels, under torchcfm's module names: a torchcfm user changes
``torchcfm`` to ``fastflow.torchcfm`` in the imports (``conditional_flow_matching`` holds the
matchers, ``optimal_transport`` the minibatch OT plans)."""
from . import conditional_flow_matching, optimal_transport
from .conditional_flow_matching import (CFMSample, ConditionalFlowMatcher,  # noqa: F401  (_exact_ot_perm: tests)
                                        ExactOptimalTransportConditionalFlowMatcher,
                                        SchrodingerBridgeConditionalFlowMatcher, TargetConditionalFlowMatcher,
                                        VariancePreservingConditionalFlowMatcher, _exact_ot_perm, pad_t_like_x)
from .optimal_transport import OTPlanSampler, wasserstein

__all__ = conditional_flow_matching.__all__ + optimal_transport.__all__ + ["conditional_flow_matching",
                                                                           "optimal_transport"]
