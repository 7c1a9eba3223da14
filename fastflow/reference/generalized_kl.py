"""Generalized KL of the mixture path (FORMULAS.md §4, flow_matching's MixturePathGeneralizedKL).

With ``p = softmax(z_i)``, ``j_i = d_kappa / (1 - kappa)`` of the row's sample and
``delta_i = [x_t_i == x_1_i]``:

    loss_i = -j_i * (p[x_t] - delta + (1 - delta) * log p[x_1])
    grad_i = -grad_scale_i * j_i * (p[x_t] * (e_{x_t} - p) + (1 - delta) * (e_{x_1} - p))

The ``(1 - delta) * log p[x_1]`` term is 0 where delta = 1 even when ``p[x_1] = 0`` (a masked
logit): flow_matching multiplies, which gives NaN there. Shapes: ``logits [N, V]``, ``x_1, x_t [N]`` integer, ``jump`` fp32 ``[N]``, ``grad_scale``
fp32 ``[N]`` or None, ``grad`` an ``[N, V]`` buffer (may alias ``logits``). Rows with
``x_1 == ignore_index`` give 0. Returns fp32 ``[N]`` (float64 for float64 logits).
"""
from __future__ import annotations

import torch

from ._common import compute_dtype
from .cross_entropy import _valid_rows


def generalized_kl(logits, x_1, x_t, jump, ignore_index: int, grad_scale, grad):
    z = logits.to(compute_dtype(logits))
    valid, i1 = _valid_rows(x_1, ignore_index)
    it = torch.where(valid, x_t, 0).long()
    log_p = torch.log_softmax(z, dim=-1)
    p = log_p.exp()
    log_p_x1 = log_p.gather(-1, i1[:, None]).squeeze(-1)
    p_xt = p.gather(-1, it[:, None]).squeeze(-1)
    off = (x_t != x_1).to(z.dtype)
    # (1 - delta) log p[x_1] is 0 where delta = 1, even if p[x_1] = 0 (flow_matching's 0 * -inf is NaN)
    loss = torch.where(valid, -jump * (p_xt - (1 - off) + torch.where(off > 0, log_p_x1, 0.0)), 0.0)
    if grad is not None:
        g = -(p_xt + off)[:, None] * p
        g.scatter_add_(-1, it[:, None], p_xt[:, None])
        g.scatter_add_(-1, i1[:, None], off[:, None])
        grad.copy_(torch.where(valid[:, None], -g * (grad_scale * jump)[:, None], 0.0))  # ignored rows: 0
    return loss
