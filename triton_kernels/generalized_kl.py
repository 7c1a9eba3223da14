"""Generalized KL of the mixture path with the gradient written in the forward pass
(FORMULAS.md §4, flow_matching's MixturePathGeneralizedKL). With ``p = softmax(z_i)``,
``j_i = d_kappa / (1 - kappa)`` of the row's sample and ``delta_i = [x_t_i == x_1_i]``:

    loss_i = -j_i * (p[x_t] - delta + (1 - delta) * log p[x_1])
    grad_i = -grad_scale_i * j_i * (p[x_t] * (e_{x_t} - p) + (1 - delta) * (e_{x_1} - p))

(0 on rows with ``x_1 == ignore_index``; ``(1 - delta) * log p[x_1]`` is 0 when delta = 1
even if ``p[x_1] = 0``). Shapes: ``logits [N, V]``, ``x_1, x_t [N]`` int32 / int64, ``jump``
fp32 ``[N]``, ``grad_scale`` fp32 ``[N]`` or None, ``grad`` an ``[N, V]`` buffer or None (may
be ``logits`` itself). Pass 1: online logsumexp over V tiles plus the two gathered logits;
pass 2 (only with ``grad``): re-read each tile, write the gradient. A row's statistics are
complete before its gradient is written, so in-place works. fp32 arithmetic, fp32 losses;
logits whose last dimension is not contiguous are copied.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import cast_out, softmax_terms
from .cross_entropy import _row_stats, launch_row_loss

MAX_BLOCK_V = 4096


@triton.jit
def _generalized_kl_kernel(
    z_ptr, stride_z, x1_ptr, xt_ptr, jump_ptr, gs_ptr, g_ptr, stride_g, loss_ptr, N, V, ignore_index,
    WRITE_GRAD: tl.constexpr, R: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * R + tl.arange(0, R).to(tl.int64)
    rmask = rows < N
    x1 = tl.load(x1_ptr + rows, mask=rmask, other=0).to(tl.int64)
    xt = tl.load(xt_ptr + rows, mask=rmask, other=0).to(tl.int64)
    valid = (x1 != ignore_index) & rmask
    i1 = tl.where(valid, x1, 0)
    it = tl.where(valid, xt, 0)
    off = xt != x1
    offf = tl.where(off, 1.0, 0.0)
    jump = tl.load(jump_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    zrow = z_ptr + rows * stride_z
    # z[x_1], z[x_t] are read before any gradient is written (grad may be the logits): first,
    # and with a barrier before the gradient pass
    z1 = tl.load(zrow + i1, mask=valid, other=0.0).to(tl.float32)
    zt = tl.load(zrow + it, mask=valid, other=0.0).to(tl.float32)
    m, log_s, inv_s = _row_stats(z_ptr, stride_z, rows, valid, V, R, BLOCK_V)  # ignored rows: not read
    log_p_x1 = (z1 - m) - log_s
    p_xt = tl.exp(zt - tl.where(m == -float("inf"), 0.0, m)) * inv_s  # as softmax_terms
    loss = -jump * ((p_xt - (1.0 - offf)) + tl.where(off, log_p_x1, 0.0))
    tl.store(loss_ptr + rows, tl.where(valid, loss, 0.0), mask=rmask)
    if WRITE_GRAD:
        tl.debug_barrier()
        gs = tl.load(gs_ptr + rows, mask=rmask, other=0.0)
        scale = tl.where(valid, gs * jump, 0.0)
        grow = g_ptr + rows * stride_g
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            cm = rmask[:, None] & (cols < V)[None, :]
            z = tl.load(zrow[:, None] + cols[None, :], mask=cm & valid[:, None], other=-float("inf")).to(tl.float32)
            p = softmax_terms(z, m, inv_s)
            g = -(p_xt + offf)[:, None] * p
            g = g + tl.where(cols[None, :] == it[:, None], p_xt[:, None], 0.0)
            g = g + tl.where(cols[None, :] == i1[:, None], offf[:, None], 0.0)
            g = tl.where(valid[:, None], -g * scale[:, None], 0.0)
            tl.store(grow[:, None] + cols[None, :], cast_out(g, g_ptr), mask=cm)


def generalized_kl(logits, x_1, x_t, jump, ignore_index: int, grad_scale, grad):
    return launch_row_loss(_generalized_kl_kernel, logits, (x_1, x_t, jump), ignore_index, grad_scale, grad,
                           MAX_BLOCK_V)
