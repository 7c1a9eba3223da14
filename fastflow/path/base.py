"""The paths' base class, as flow_matching's ``ProbPath``."""
from __future__ import annotations

from torch import Tensor


class ProbPath:
    """Base of ``AffineProbPath`` and ``MixtureDiscreteProbPath`` (and of paths users write):
    ``sample(x_0, x_1, t)`` draws the path at times ``t``."""

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def assert_sample_shape(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> None:
        """Raises ValueError unless ``t`` is ``[B]`` and ``x_0``, ``x_1`` are ``[B, ...]`` of one shape."""
        if t.dim() != 1:
            raise ValueError(f"t: expected a 1-D tensor of one time per sample, got shape {tuple(t.shape)}")
        if x_0.shape != x_1.shape:
            raise ValueError(f"x_0: expected the shape of x_1 {tuple(x_1.shape)}, got {tuple(x_0.shape)}")
        if t.shape[0] != x_1.shape[0]:
            raise ValueError(f"t: expected one time per sample of x_1 ({x_1.shape[0]}), got {t.shape[0]}")
