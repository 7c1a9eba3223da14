"""Affine path sample: ``x_t = a * x_1 + b * x_0 + s * eps`` (FORMULAS.md §2).

Shapes: ``x_1 [B, ...]``, ``x_0`` like ``x_1`` or None, ``a, b, s`` fp32 ``[B]`` (``s`` may be
None). With ``x_0 = None`` the source is standard Gaussian noise from stream 0 of ``rng``;
``eps`` is stream 1. A call reads at most ``2 * ceil(numel / 4)`` counters from the offset.
The same op materialises the target ``c x_1 + d x_0 + e eps`` and regenerates ``x_0``.
"""
from __future__ import annotations

import torch

from ._common import compute_dtype, gaussian_like, per_sample


def affine_path_sample(x_1, x_0, a, b, s, rng, out=None):
    dtype = compute_dtype(x_1, x_0, a)
    x1 = x_1.to(dtype)
    x0 = gaussian_like(rng, 0, x_1).to(dtype) if x_0 is None else x_0.to(dtype)
    x_t = per_sample(a, x1) * x1 + per_sample(b, x1) * x0
    if s is not None:
        x_t = x_t + per_sample(s, x1) * gaussian_like(rng, 1, x_1).to(dtype)
    if out is None:
        return x_t.to(x_1.dtype).contiguous()  # (as the fused ops and the fake kernels)
    return out.copy_(x_t)
