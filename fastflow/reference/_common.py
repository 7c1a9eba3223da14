"""Helpers the reference ops share: the arithmetic's dtype, per-sample broadcasting, noise."""
from __future__ import annotations

import torch

from . import philox


def compute_dtype(*tensors) -> torch.dtype:
    """fp32, the kernels' arithmetic; float64 when a float input is float64 (the public ops send
    float64 data here, computed in float64 as flow_matching would)."""
    return torch.float64 if any(t is not None and t.dtype is torch.float64 for t in tensors) else torch.float32


def per_sample(coef: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | float:
    """A ``[B]`` coefficient broadcast against ``x`` of shape ``[B, ...]`` (0 when None)."""
    if coef is None:
        return 0.0
    return coef.view(-1, *([1] * (x.dim() - 1)))


def gaussian_like(rng: torch.Tensor, stream: int, like: torch.Tensor) -> torch.Tensor:
    """Gaussian noise of ``like``'s shape from element-wise stream ``stream`` of ``rng`` (fp32: a
    float64 call draws the same numbers as any other).

    Stream ``k`` starts at counter ``offset + k * ceil(numel / 4)``, so the streams of one
    call never overlap.
    """
    n = like.numel()
    offset = rng[1] + stream * ((n + 3) // 4)
    return philox.normal_stream(rng[0], offset, n, like.device).view(like.shape)
