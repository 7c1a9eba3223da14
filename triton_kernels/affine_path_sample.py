"""Affine path sample in one pass (FORMULAS.md §2):

    x_t = a_b * x_1 + b_b * x_0 + s_b * eps

``x_1 [B, ...]`` (fp32 / bf16 / fp16), ``x_0`` like it or None, ``a, b, s`` fp32 ``[B]`` (``s``
may be None). With ``x_0 = None`` the source is Gaussian stream 0 of ``rng`` (element ``i``
= ``randn4x(seed, offset + i // 4)[i % 4]``), ``eps`` is stream 1 (counters from
``offset + ceil(numel / 4)``); the noise lives only in registers. fp32 arithmetic, output in
``x_1``'s dtype. Non-contiguous inputs are copied to contiguous memory by the launcher.
Traffic: read ``x_1`` (and ``x_0``), write ``x_t``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _philox
from ._common import cast_out, flat, row_coef, sample_tile, sample_tiling


@triton.jit
def affine_combination(x1_ptr, x0_ptr, a_ptr, b_ptr, s_ptr, rng_ptr, rows, idx, mask, ctr, B, stream1,
                       HAS_X0: tl.constexpr, HAS_S: tl.constexpr):
    """``a x_1 + b x_0 + s eps`` of one tile in fp32, ``x_0`` loaded or regenerated (stream 0),
    ``eps`` from stream 1: the path sample, and the loss's target (with c, d, e)."""
    a = row_coef(a_ptr, rows, B, True)
    b = row_coef(b_ptr, rows, B, True)
    x1 = tl.load(x1_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    if not HAS_X0 or HAS_S:
        seed = tl.load(rng_ptr)
        offset = tl.load(rng_ptr + 1)
    if HAS_X0:
        x0 = tl.load(x0_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    else:
        x0 = _philox.gaussian_block(seed, offset + ctr)
    y = a * x1 + b * x0
    if HAS_S:
        s = row_coef(s_ptr, rows, B, True)
        y = y + s * _philox.gaussian_block(seed, offset + stream1 + ctr)
    return y


@triton.jit
def _affine_path_sample_kernel(
    x1_ptr, x0_ptr, a_ptr, b_ptr, s_ptr, rng_ptr, out_ptr, B, D, n_win, stream1,
    HAS_X0: tl.constexpr, HAS_S: tl.constexpr,
    R: tl.constexpr, BLOCK: tl.constexpr,
):
    rows, idx, mask, w, ctr = sample_tile(tl.program_id(0), B, D, n_win, R, BLOCK)
    y = affine_combination(x1_ptr, x0_ptr, a_ptr, b_ptr, s_ptr, rng_ptr, rows, idx, mask, ctr, B,
                           stream1, HAS_X0, HAS_S)
    tl.store(out_ptr + idx, cast_out(y, out_ptr), mask=mask)


def affine_path_sample(x_1, x_0, a, b, s, rng, out=None):
    x1 = flat(x_1)
    x0 = flat(x_0)
    B = x1.shape[0]
    D = x1.numel() // max(B, 1)  # (an empty batch: a grid of no programs)
    direct = out is not None and out.is_contiguous() and out.dtype == x_1.dtype
    dst = out if direct else torch.empty(x_1.shape, dtype=x_1.dtype, device=x_1.device)
    BLOCK, R, n_win, grid, num_warps = sample_tiling(B, D)
    _affine_path_sample_kernel[grid](
        x1, x0 if x0 is not None else x1, flat(a), flat(b), flat(s) if s is not None else a,
        rng if rng is not None else a, dst, B, D, n_win, (x1.numel() + 3) // 4,
        HAS_X0=x0 is not None, HAS_S=s is not None, R=R, BLOCK=BLOCK, num_warps=num_warps)
    if out is None:
        return dst
    if not direct:
        out.copy_(dst)
    return out
