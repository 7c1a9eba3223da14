"""Cross-entropy over V with the gradient written in the forward pass (FORMULAS.md §4).

    loss_i = logsumexp(z_i) - z_i[x_1_i]                 (0 where x_1_i == ignore_index)
    grad_i = grad_scale_i * (softmax(z_i) - e_{x_1_i})   (written only when grad is given)

Shapes: ``logits [N, V]``, ``x_1 [N]`` integer, ``grad_scale`` fp32 ``[N]`` (0 on ignored
rows) or None, ``grad`` an ``[N, V]`` buffer in the logits dtype (it may be ``logits``
itself). Returns the fp32 ``[N]`` losses (float64 for float64 logits).
"""
from __future__ import annotations

import torch

from ._common import compute_dtype


def _valid_rows(x_1, ignore_index):
    valid = x_1 != ignore_index
    return valid, torch.where(valid, x_1, 0).long()


def cross_entropy(logits, x_1, ignore_index: int, grad_scale, grad):
    z = logits.to(compute_dtype(logits))
    valid, idx = _valid_rows(x_1, ignore_index)
    m = z.amax(dim=-1)
    finite = m.isfinite()
    z1 = z.gather(-1, idx[:, None]).squeeze(-1)
    # (m - z1) + log(sum exp(z - m)): logsumexp(z) - z1 rounds the logsumexp first, which loses
    # log(V) next to logits of 1e8 or more (and the whole loss at 3e38). In a row without a finite
    # max nothing is shifted, and log_s is its logsumexp (+inf, -inf or NaN, as torch.logsumexp's)
    log_s = torch.log(torch.exp(z - torch.where(finite, m, 0.0)[:, None]).sum(-1))
    loss = torch.where(valid, torch.where(finite, (m - z1) + log_s, log_s - z1), 0.0)
    if grad is not None:
        g = torch.softmax(z, dim=-1)
        g.scatter_add_(-1, idx[:, None], -torch.ones_like(m)[:, None])
        # ignored rows: a zero gradient even where their logits hold NaN / inf (0 * NaN would not be)
        grad.copy_(torch.where(valid[:, None], g * grad_scale[:, None], 0.0))
    return loss
