"""Mixture discrete path sample (FORMULAS.md §4): ``x_t = x_1`` with probability kappa, else ``x_0``.

Shapes: ``x_1 [B, ...]`` integer, ``kappa`` fp32 ``[B]``. ``x_0`` given, or drawn from the
source: uniform over ``vocab_size`` when ``mask_id`` is None, else every ``x_0 = mask_id``.
``u`` is ``noise`` (explicit uniforms, x_1's shape) or uniform stream 0 of ``rng``; the
uniform source token is ``(w * V) >> 32`` of stream 1 (``2 * ceil(numel / 4)`` counters).
"""
from __future__ import annotations

import torch

from . import philox
from ._common import per_sample


def mixture_path_sample(x_1, x_0, kappa, rng, noise, vocab_size: int, mask_id: int | None):
    n = x_1.numel()
    if noise is not None:
        u = noise.float()
    else:
        u = philox.uniform_stream(rng[0], rng[1], n, x_1.device).view(x_1.shape)
    if x_0 is None:
        if mask_id is not None:
            x_0 = torch.full_like(x_1, mask_id)
        else:
            w = philox.uint32_stream(rng[0], rng[1] + (n + 3) // 4, n, x_1.device)
            x_0 = ((w * vocab_size) >> 32).view(x_1.shape).to(x_1.dtype)
    return torch.where(u < per_sample(kappa, u), x_1, x_0.to(x_1.dtype))
