"""Row scaling, the backward of the fused losses (whose gradient the forward already wrote):

    grad[i, :] *= g[i]        in place; rows with g[i] == 1 are neither read nor written

``grad [N, V]`` (any row stride; a non-unit last stride goes through a contiguous temporary),
``g`` fp32 ``[N]``. A program takes a tile of rows and columns and loads its ``g`` values
first; rows with ``g == 1`` are masked out of every load and store, and a program whose rows all
have ``g == 1`` does nothing, so the common ``loss.backward()`` (upstream gradient 1) costs no
pass over the gradient.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import cast_out
from .cross_entropy import row_tiling

MAX_BLOCK_V = 4096


@triton.jit
def _scale_rows_kernel(g_ptr, grad_ptr, stride, N, V, n_col_tiles, R: tl.constexpr, BLOCK_V: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rb = pid // n_col_tiles
    rows = rb * R + tl.arange(0, R).to(tl.int64)
    rmask = rows < N
    g = tl.load(g_ptr + rows, mask=rmask, other=1.0).to(tl.float32)
    need = rmask & (g != 1.0)
    if tl.max(need.to(tl.int32), axis=0) > 0:
        cols = (pid - rb * n_col_tiles) * BLOCK_V + tl.arange(0, BLOCK_V).to(tl.int64)
        cm = need[:, None] & (cols < V)[None, :]
        ptr = grad_ptr + rows[:, None] * stride + cols[None, :]
        x = tl.load(ptr, mask=cm, other=0.0).to(tl.float32)
        tl.store(ptr, cast_out(x * g[:, None], grad_ptr), mask=cm)


def scale_rows(grad, g):
    N, V = grad.shape
    dst = grad if grad.stride(-1) == 1 else grad.contiguous()
    BLOCK_V, R, _, num_warps = row_tiling(N, V, MAX_BLOCK_V)
    # a program a tile of R rows x BLOCK_V columns: the fused path loss's rows are its samples,
    # a few long ones (8 of 2^20 elements), which a program a row would leave on 8 SMs
    n_col_tiles = triton.cdiv(V, BLOCK_V)
    _scale_rows_kernel[(triton.cdiv(N, R) * n_col_tiles,)](g.contiguous(), dst, dst.stride(0), N, V, n_col_tiles,
                                                         R=R, BLOCK_V=BLOCK_V, num_warps=num_warps)
    if dst is not grad:
        grad.copy_(dst)
