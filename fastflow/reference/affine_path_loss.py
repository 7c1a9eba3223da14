"""Fused affine path loss: per-sample sums of squared error against a target never stored,
and the gradient in the same pass.

    target   = c * x_1 + d * x_0 + e * eps            (x_0 / eps regenerated from rng)
    sq_sum_b = sum_i mask_i * (v_i - target_i)^2      -> fp32 [B] (float64 for float64 inputs)
    grad     = 2 * grad_scale_b * mask * (v - target) (written only when grad is given)

``grad`` is a buffer of ``v``'s shape and dtype. Weights, the reduction (mean / sum /
per_sample) and its divisor are ``[B]``-sized torch ops in ``fastflow.ops.affine_path``,
folded into ``grad_scale`` so the backward only scales by the upstream gradient.
"""
from __future__ import annotations

import torch

from ._common import compute_dtype, gaussian_like, per_sample


def _residual(v, x_1, x_0, c, d, e, rng, mask):
    dtype = compute_dtype(v, x_1, x_0, c)
    x1 = x_1.to(dtype)
    x0 = gaussian_like(rng, 0, v).to(dtype) if x_0 is None else x_0.to(dtype)
    target = per_sample(c, x1) * x1 + per_sample(d, x1) * x0
    if e is not None:
        target = target + per_sample(e, x1) * gaussian_like(rng, 1, v).to(dtype)
    r = v.to(dtype) - target
    return r if mask is None else r * mask.to(dtype)


def affine_path_loss(v, x_1, x_0, c, d, e, rng, mask, grad_scale=None, grad=None):
    r = _residual(v, x_1, x_0, c, d, e, rng, mask)
    if grad is not None:
        grad.copy_(2.0 * per_sample(grad_scale, r) * r)
    return r.square().reshape(v.shape[0], -1).sum(dim=1)
