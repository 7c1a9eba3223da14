"""Cross-entropy over V with the gradient written in the forward pass (FORMULAS.md §4):

    loss_i = logsumexp(z_i) - z_i[x_1_i]                   (0 where x_1_i == ignore_index)
    grad_i = grad_scale_i * (softmax(z_i) - e_{x_1_i})     (0 on ignored rows)

``logits [N, V]`` (fp32 / bf16 / fp16, any row stride), ``x_1 [N]`` int32 / int64,
``grad_scale`` fp32 ``[N]`` or None, ``grad`` an ``[N, V]`` buffer in the logits dtype or None
(it may be ``logits`` itself). Each program owns ``R`` rows: pass 1 streams the row in tiles
of ``BLOCK_V`` with an online max / sum (logsumexp) and reads ``z[x_1]``; pass 2, only when
``grad`` is given, re-reads each tile and writes ``exp(z - max) / sum`` minus the one-hot, scaled.
The logits of ignored rows are never read (their loss is 0, their gradient row zeros).
A row's statistics are complete before its first gradient element is written, so the
gradient may overwrite the logits in place. fp32 arithmetic; losses fp32 ``[N]``. Logits
whose last dimension is not contiguous are copied (a non-contiguous ``grad`` is written
through a contiguous temporary).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import cast_out, next_pow2, online_lse_update, rows_per_tile, softmax_terms

MAX_BLOCK_V = 4096  # V tile (the tests lower it to exercise multi-tile rows on small V)
MAX_TILE = 4096     # R * BLOCK_V


def row_tiling(N: int, V: int, max_block_v: int):
    BLOCK_V = min(next_pow2(V), max_block_v)
    R = rows_per_tile(N, BLOCK_V, MAX_TILE)
    num_warps = 8 if R * BLOCK_V >= 4096 else 4
    return BLOCK_V, R, (triton.cdiv(N, R),), num_warps


@triton.jit
def _row_stats(z_ptr, stride_z, rows, rmask, V, R: tl.constexpr, BLOCK_V: tl.constexpr):
    """Per-row ``(m, log_s, inv_s)`` of ``z`` by an online max / sum over V tiles: the max, the log
    of ``s = sum exp(z - m)`` and ``1 / s`` (NaN for a +inf max: torch.softmax's row of NaN), so
    that ``p = exp(z - m) / s`` and ``log p = (z - m) - log_s``. Formed from ``lse = m + log_s``
    they would lose bits next to large logits (from ~1e3: z - lse is only as exact as lse).
    (0, 0, 1) for the rows outside ``rmask``, so their discarded terms compute no -inf - -inf
    (the interpreter warns of it)."""
    zrow = z_ptr + rows * stride_z
    m = tl.full((R,), -float("inf"), tl.float32)
    s = tl.zeros((R,), tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        cm = rmask[:, None] & (cols < V)[None, :]
        z = tl.load(zrow[:, None] + cols[None, :], mask=cm, other=-float("inf")).to(tl.float32)
        m, s = online_lse_update(m, s, z)
    # s = 0 (an all -inf row, or outside rmask): log_s = -inf and inv_s = inf, as log and 1 / x give
    # them, written out because the interpreter warns of log(0) and 1 / 0
    zero = s == 0.0
    s1 = tl.where(zero, 1.0, s)
    inv_s = tl.where(m == float("inf"), float("nan"), tl.where(zero, float("inf"), 1.0 / s1))
    log_s = tl.where(zero, -float("inf"), tl.log(s1))
    return tl.where(rmask, m, 0.0), tl.where(rmask, log_s, 0.0), tl.where(rmask, inv_s, 1.0)


@triton.jit
def _cross_entropy_kernel(
    z_ptr, stride_z, x1_ptr, gs_ptr, g_ptr, stride_g, loss_ptr, N, V, ignore_index,
    WRITE_GRAD: tl.constexpr, R: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * R + tl.arange(0, R).to(tl.int64)
    rmask = rows < N
    x1 = tl.load(x1_ptr + rows, mask=rmask, other=0).to(tl.int64)
    valid = (x1 != ignore_index) & rmask
    i1 = tl.where(valid, x1, 0)
    # z[x_1] is read before any gradient is written (grad may be the logits): first, and with a
    # barrier before the gradient pass
    z1 = tl.load(z_ptr + rows * stride_z + i1, mask=valid, other=0.0).to(tl.float32)
    m, log_s, inv_s = _row_stats(z_ptr, stride_z, rows, valid, V, R, BLOCK_V)  # ignored rows: not read
    finite = (m == m) & (tl.abs(m) < float("inf"))
    # (m - z1) + log_s: (m + log_s) - z1 rounds log_s away next to logits of 1e8 and more
    loss = tl.where(finite, (m - z1) + log_s, (m + log_s) - z1)
    tl.store(loss_ptr + rows, tl.where(valid, loss, 0.0), mask=rmask)
    if WRITE_GRAD:
        tl.debug_barrier()
        scale = tl.where(valid, tl.load(gs_ptr + rows, mask=rmask, other=0.0), 0.0)
        zrow = z_ptr + rows * stride_z
        grow = g_ptr + rows * stride_g
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            cm = rmask[:, None] & (cols < V)[None, :]
            z = tl.load(zrow[:, None] + cols[None, :], mask=cm & valid[:, None], other=-float("inf")).to(tl.float32)
            p = softmax_terms(z, m, inv_s)
            g = p - tl.where(cols[None, :] == i1[:, None], 1.0, 0.0)
            g = tl.where(valid[:, None], g * scale[:, None], 0.0)
            tl.store(grow[:, None] + cols[None, :], cast_out(g, g_ptr), mask=cm)


def launch_row_loss(kernel, logits, row_inputs, ignore_index: int, grad_scale, grad, max_block_v: int):
    """Runs a row-loss kernel ``(z, stride_z, *row_inputs, gs, g, stride_g, loss, N, V,
    ignore_index)``: logits get a unit last stride (a copy if needed), the gradient goes to
    ``grad`` (through a buffer when its last stride is not 1). Returns the fp32 ``[N]`` losses."""
    N, V = logits.shape
    z = logits if logits.stride(-1) == 1 else logits.contiguous()
    write = grad is not None and grad_scale is not None
    dst = grad
    if write and grad.stride(-1) != 1:
        dst = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
    loss = torch.empty(N, dtype=torch.float32, device=logits.device)
    BLOCK_V, R, grid, num_warps = row_tiling(N, V, max_block_v)
    kernel[grid](z, z.stride(0), *(t.contiguous() for t in row_inputs),
                 grad_scale.contiguous() if write else loss, dst if write else z,
                 dst.stride(0) if write else 0, loss, N, V, int(ignore_index),
                 WRITE_GRAD=write, R=R, BLOCK_V=BLOCK_V, num_warps=num_warps)
    if write and dst is not grad:
        grad.copy_(dst)
    return loss


def cross_entropy(logits, x_1, ignore_index: int, grad_scale, grad):
    return launch_row_loss(_cross_entropy_kernel, logits, (x_1,), ignore_index, grad_scale, grad, MAX_BLOCK_V)
