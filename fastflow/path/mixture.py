"""The mixture discrete path (FORMULAS.md §4): each token is ``x_1`` with probability
``kappa_t``, else the source token. Drop-in for flow_matching's MixtureDiscreteProbPath;
``x_0=None`` draws the source in the kernel (uniform over V, or the mask token)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _checks
from .._rng import new_rng
from ..ops.discrete import _mixture_path_sample
from .base import ProbPath
from .path_sample import DiscretePathSample
from .scheduler import ConvexScheduler, is_convex


class MixtureDiscreteProbPath(ProbPath):
    """Mixture path of a convex scheduler (``kappa_t = alpha_t``, ``alpha_t + sigma_t = 1``)."""

    def __init__(self, scheduler):
        if not callable(scheduler) or not is_convex(scheduler):
            raise ValueError("scheduler: a mixture path needs a convex scheduler (alpha_t + sigma_t = 1), "
                             f"got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def sample(self, x_0: Optional[Tensor] = None, x_1: Optional[Tensor] = None, t: Optional[Tensor] = None,
               source: str = "uniform", vocab_size: Optional[int] = None, mask_id: Optional[int] = None,
               generator: Optional[torch.Generator] = None, backend: Optional[str] = None) -> DiscretePathSample:
        """``x_t = x_1`` with probability ``kappa_t``, else ``x_0`` (given, or drawn from ``source``:
        ``"uniform"`` over ``vocab_size`` tokens, or ``"mask"`` = ``mask_id``)."""
        if x_1 is None or t is None:
            raise ValueError("x_1, t: both are required")
        _checks.tensor("x_1", x_1, _checks.INDEX_DTYPES, ndim_min=1)
        _checks.tensor("t", t)
        if t.shape != (x_1.shape[0],):
            raise ValueError(f"t: expected shape ({x_1.shape[0]},) (one time per sample), got {tuple(t.shape)}")
        t_b = _checks.time("t", t, x_1.shape[0], x_1)
        s = self.scheduler  # (fastflow's convex schedulers compute kappa_t alone)
        kappa = _checks.per_sample("scheduler", s._kappa_t(t_b) if isinstance(s, ConvexScheduler) else s(t_b).alpha_t,
                                   x_1.shape[0], x_1)
        if x_0 is None:
            _checks.choice("source", source, ("uniform", "mask"))
            if source == "uniform":
                mask_id = None
            elif not isinstance(mask_id, int) or mask_id < 0:
                raise ValueError(f"mask_id: expected a token id with source='mask', got {mask_id!r}")
        if vocab_size is not None or (x_0 is None and mask_id is None):  # (a uniform source needs one)
            if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
                raise ValueError(f"vocab_size: expected a positive int (with source='uniform' too), got {vocab_size!r}")
            vocab_size = _checks.vocab_size(vocab_size, x_1)  # (and one the draws hold)
            _checks.tokens("x_1", x_1, vocab_size)
            if x_0 is not None:
                _checks.tokens("x_0", x_0, vocab_size)
        rng = new_rng(x_1.device, generator)
        x_t = _mixture_path_sample(x_1, x_0, kappa, rng, vocab_size or 0, mask_id, backend=backend)
        return DiscretePathSample(x_1, x_0, t, x_t, rng=rng, vocab_size=vocab_size or 0, mask_id=mask_id,
                                  backend=backend)

    def posterior_to_velocity(self, posterior_logits: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``d_kappa / (1 - kappa) * (softmax(logits) - onehot(x_t))`` as flow_matching."""
        posterior = torch.softmax(posterior_logits, dim=-1)
        onehot = F.one_hot(x_t, num_classes=posterior.shape[-1])
        t = t.reshape(*t.shape, *([1] * (onehot.dim() - t.dim())))
        s = self.scheduler(t)
        return s.d_alpha_t / (1 - s.alpha_t) * (posterior - onehot)


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from ..utils.utils import expand_tensor_like, unsqueeze_to_match  # noqa: E402,F401
