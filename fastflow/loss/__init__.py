"""``fastflow.loss``: flow_matching's loss module, fused."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _checks
from ..ops.discrete import LOSS_REDUCTIONS, generalized_kl, mixture_cross_entropy


class MixturePathGeneralizedKL(torch.nn.modules.loss._Loss):
    """flow_matching's generalized KL of a mixture path, fused (FORMULAS.md §4).

    ``forward(logits [B, ..., V], x_1, x_t [B, ...], t [B])``. The jump coefficient
    ``d_kappa / (1 - kappa)`` is infinite at t = 1 (kappa = 1): such a time raises
    ValueError naming ``t`` (flow_matching returns inf/NaN there).

    ``overwrite_logits=True`` writes the gradient into the logits' memory instead of a new
    ``[B, ..., V]`` buffer: the logits are lost after the call (see ``generalized_kl``).
    """

    def __init__(self, path, reduction: str = "mean", ignore_index: Optional[int] = None,
                 backend: Optional[str] = None, overwrite_logits: bool = False):
        super().__init__(reduction=_checks.choice("reduction", reduction, LOSS_REDUCTIONS))  # (a _Loss, as flow_matching's)
        self.path = path
        self.ignore_index, self.backend = ignore_index, backend
        if not isinstance(overwrite_logits, bool):
            raise TypeError(f"overwrite_logits: expected a bool, got {type(overwrite_logits).__name__}")
        self.overwrite_logits = overwrite_logits

    def forward(self, logits: Tensor, x_1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        _checks.tensor("x_1", x_1, _checks.INDEX_DTYPES, ndim_min=1)
        t = _checks.time("t", t, x_1.shape[0], logits)
        s = self.path.scheduler(t)
        kappa, d_kappa = (_checks.per_sample("scheduler", c, x_1.shape[0], logits) for c in (s.alpha_t, s.d_alpha_t))
        _checks.scheduled({"alpha_t": kappa, "d_alpha_t": d_kappa}, "alpha_t", "d_alpha_t")
        _checks.values("t", kappa < 1, "the jump coefficient d_kappa/(1 - kappa) is infinite where kappa_t = 1 "
                       "(t = 1); sample t in [0, 1)")
        return generalized_kl(logits, x_1, x_t, d_kappa / (1 - kappa), self.ignore_index, self.reduction,
                              backend=self.backend, overwrite_logits=self.overwrite_logits)


__all__ = ["MixturePathGeneralizedKL", "mixture_cross_entropy", "generalized_kl"]
