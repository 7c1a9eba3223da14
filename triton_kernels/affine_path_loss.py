"""Fused affine path loss and its gradient in one pass, the target never stored (FORMULAS.md §2):

    target   = c_b * x_1 + d_b * x_0 + e_b * eps     (x_0 / eps regenerated from rng)
    sq_sum_b = sum_i mask_i * (v_i - target_i)^2     -> fp32 [B]
    grad     = 2 * grad_scale_b * mask * (v - target) -> v's dtype (only when grad is given)

``x_0 = None``: Gaussian stream 0 of ``rng``; ``e`` given: ``eps`` is stream 1 (counters from
``offset + ceil(numel / 4)``), exactly the noise ``affine_path_sample`` drew. ``mask`` is a
bool tensor of ``v``'s shape (a broadcast mask is materialised by ``.contiguous()``).

Each program reduces its tile to one fp32 partial per (sample, window); a ``[B, n_windows]``
buffer is summed by torch (deterministic, no atomics). With ``grad`` the same pass writes the
gradient, so a training step reads ``v`` and ``x_1`` once. fp32 arithmetic; non-contiguous inputs
are copied to contiguous memory by the launcher.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import cast_out, flat, row_coef, sample_tile, sample_tiling
from .affine_path_sample import affine_combination


@triton.jit
def _residual(v_ptr, x1_ptr, x0_ptr, c_ptr, d_ptr, e_ptr, rng_ptr, mask_ptr, rows, idx, mask, ctr,
              B, stream1, HAS_X0: tl.constexpr, HAS_E: tl.constexpr, HAS_MASK: tl.constexpr):
    v = tl.load(v_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    target = affine_combination(x1_ptr, x0_ptr, c_ptr, d_ptr, e_ptr, rng_ptr, rows, idx, mask, ctr, B,
                                stream1, HAS_X0, HAS_E)
    r = v - target
    if HAS_MASK:
        m = tl.load(mask_ptr + idx, mask=mask, other=0).to(tl.float32)
        r = r * m
    return tl.where(mask, r, 0.0)


@triton.jit
def _affine_path_loss_kernel(
    v_ptr, x1_ptr, x0_ptr, c_ptr, d_ptr, e_ptr, rng_ptr, mask_ptr, gs_ptr, grad_ptr, partial_ptr,
    B, D, n_win, stream1,
    HAS_X0: tl.constexpr, HAS_E: tl.constexpr, HAS_MASK: tl.constexpr, HAS_GRAD: tl.constexpr,
    R: tl.constexpr, BLOCK: tl.constexpr,
):
    rows, idx, mask, w, ctr = sample_tile(tl.program_id(0), B, D, n_win, R, BLOCK)
    r = _residual(v_ptr, x1_ptr, x0_ptr, c_ptr, d_ptr, e_ptr, rng_ptr, mask_ptr, rows, idx, mask,
                  ctr, B, stream1, HAS_X0, HAS_E, HAS_MASK)
    part = tl.sum(r * r, axis=1)
    tl.store(partial_ptr + rows * n_win + w, part, mask=rows < B)
    if HAS_GRAD:
        gs = row_coef(gs_ptr, rows, B, True)
        tl.store(grad_ptr + idx, cast_out(2.0 * gs * r, grad_ptr), mask=mask)


def _args(v, x_1, x_0, c, d, e, rng, mask):
    vv = flat(v)
    B = vv.shape[0]
    D = vv.numel() // max(B, 1)  # (an empty batch: a grid of no programs)
    x1 = flat(x_1)
    x0 = flat(x_0)
    m = None if mask is None else flat(mask.expand_as(v))
    cc = flat(c)
    ptrs = (vv, x1, x0 if x0 is not None else x1, cc, flat(d), flat(e) if e is not None else cc,
            rng if rng is not None else cc, m if m is not None else vv)
    flags = dict(HAS_X0=x0 is not None, HAS_E=e is not None, HAS_MASK=m is not None)
    return ptrs, flags, B, D, (vv.numel() + 3) // 4


def affine_path_loss(v, x_1, x_0, c, d, e, rng, mask, grad_scale=None, grad=None):
    ptrs, flags, B, D, stream1 = _args(v, x_1, x_0, c, d, e, rng, mask)
    BLOCK, R, n_win, grid, num_warps = sample_tiling(B, D)
    partial = torch.empty((B, n_win), dtype=torch.float32, device=v.device)
    # the kernel writes a contiguous buffer of v's dtype; grad is filled from it if it is not one
    dst = grad if grad is None or (grad.is_contiguous() and grad.dtype == v.dtype) else torch.empty_like(
        v, memory_format=torch.contiguous_format)
    gs = flat(grad_scale) if grad is not None else ptrs[3]
    _affine_path_loss_kernel[grid](*ptrs, gs, dst if dst is not None else ptrs[0], partial, B, D, n_win,
                                   stream1, **flags, HAS_GRAD=grad is not None, R=R, BLOCK=BLOCK,
                                   num_warps=num_warps)
    if dst is not None and dst is not grad:
        grad.copy_(dst)
    return partial.view(B) if n_win == 1 else partial.sum(dim=1)
