"""Geodesic probability paths on a manifold (flow_matching's ``GeodesicProbPath``).

``x_t = exp_{x_0}(kappa_t log_{x_0}(x_1))`` with ``kappa_t`` the scheduler's ``alpha_t``, and
``dx_t = d x_t / dt`` by forward-mode autodiff through the manifold's maps, so any manifold
(and any differentiable scheduler) works without a closed form. Plain PyTorch: the cost is
in the manifold's maps, not in memory traffic a fused kernel would save.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import _checks
from ..utils import expand_tensor_like
from .base import ProbPath
from .path_sample import PathSample


class GeodesicProbPath(ProbPath):
    """``GeodesicProbPath(scheduler, manifold).sample(x_0, x_1, t)``: points ``[B, ..., D]`` on
    ``manifold`` (any object with ``expmap`` / ``logmap``, flow_matching's included)."""

    def __init__(self, scheduler, manifold):
        if not callable(scheduler):
            raise TypeError(f"scheduler: expected a callable t -> SchedulerOutput, got {type(scheduler).__name__}")
        if not all(callable(getattr(manifold, m, None)) for m in ("expmap", "logmap")):
            raise TypeError(f"manifold: expected a Manifold (with expmap and logmap), got {type(manifold).__name__}")
        self.scheduler = scheduler
        self.manifold = manifold

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> PathSample:
        """``x_t = exp_{x_0}(kappa_t log_{x_0}(x_1))`` and ``dx_t = d x_t / dt``.

        ``x_0``, ``x_1 [B, ..., D]`` on the manifold, ``t [B]`` in [0, 1]. The sample's ``t`` is
        broadcast to ``[B, ..., 1]``, as flow_matching returns it.
        """
        _checks.tensor("x_1", x_1, _checks.REAL_DTYPES, ndim_min=2)
        _checks.tensor("x_0", x_0, _checks.REAL_DTYPES)
        _checks.tensor("t", t, _checks.REAL_DTYPES)
        self.assert_sample_shape(x_0, x_1, t)
        _checks.same_device("x_0", x_0, x_1)
        _checks.same_device("t", t, x_1)
        t_b = _checks.coefficient("t", t, x_1.shape[0], x_1, lo=0.0, hi=1.0)  # (the range check; t keeps its dtype)
        # alpha_t and its derivative as the jvp below takes it (d_alpha_t itself is not read)
        kappa = torch.func.jvp(lambda t: self.scheduler(t).alpha_t, (t_b,), (torch.ones_like(t_b),))
        _checks.scheduled(dict(zip(("alpha_t", "d alpha_t / dt"), kappa)), "alpha_t", "d alpha_t / dt")
        t = expand_tensor_like(t, x_1[..., :1]).clone()  # broadcasts against the last (manifold) dim

        v = self.manifold.logmap(x_0, x_1)  # independent of t: outside the forward-mode pass

        def along(t: Tensor) -> Tensor:
            return self.manifold.expmap(x_0, self.scheduler(t).alpha_t * v)

        x_t, dx_t = torch.func.jvp(along, (t,), (torch.ones_like(t),))
        return PathSample(x_1, x_0, t, x_t.reshape_as(x_1), dx_t.reshape_as(x_1))


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from .scheduler.scheduler import ConvexScheduler  # noqa: E402,F401
from ..utils.manifolds.utils import geodesic  # noqa: E402,F401
from ..utils.manifolds.manifold import Manifold  # noqa: E402,F401
