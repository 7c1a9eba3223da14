"""Mixture discrete path sample in one pass (FORMULAS.md §4):

    x_t = x_1  if u < kappa_b  else  x_0

``x_1 [B, ...]`` integer, ``kappa`` fp32 ``[B]``. ``u`` is ``noise`` (explicit uniforms of
``x_1``'s shape) or uniform stream 0 of ``rng`` (element ``i``: word ``i % 4`` of
``philox(seed, offset + i // 4)`` mapped as ``tl.rand``). ``x_0`` is given, or every
``x_0 = mask_id``, or uniform over ``vocab_size``: ``umulhi(w, V)`` of stream 1 (counters from
``offset + ceil(numel / 4)``). Output in ``x_1``'s dtype; non-contiguous inputs are copied.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _philox
from ._common import flat, row_coef, sample_tile, sample_tiling


@triton.jit
def _mixture_path_sample_kernel(
    x1_ptr, x0_ptr, kappa_ptr, rng_ptr, noise_ptr, out_ptr, B, D, n_win, stream1, vocab_size, mask_id,
    HAS_X0: tl.constexpr, HAS_NOISE: tl.constexpr, MASK_SOURCE: tl.constexpr,
    R: tl.constexpr, BLOCK: tl.constexpr,
):
    rows, idx, mask, w, ctr = sample_tile(tl.program_id(0), B, D, n_win, R, BLOCK)
    kappa = row_coef(kappa_ptr, rows, B, True)
    if HAS_NOISE:
        u = tl.load(noise_ptr + idx, mask=mask, other=1.0).to(tl.float32)
    else:
        seed = tl.load(rng_ptr)
        offset = tl.load(rng_ptr + 1)
        u = _philox.uint_to_uniform(_philox.words_block(seed, offset + ctr))
    x1 = tl.load(x1_ptr + idx, mask=mask, other=0).to(tl.int64)
    if HAS_X0:
        x0 = tl.load(x0_ptr + idx, mask=mask, other=0).to(tl.int64)
    elif MASK_SOURCE:
        x0 = tl.zeros(idx.shape, dtype=tl.int64) + mask_id
    else:
        if HAS_NOISE:  # the noise replaces stream 0 only; the uniform source still draws stream 1
            seed = tl.load(rng_ptr)
            offset = tl.load(rng_ptr + 1)
        wv = _philox.words_block(seed, offset + stream1 + ctr)
        x0 = tl.umulhi(wv, vocab_size).to(tl.int64)
    y = tl.where(u < kappa, x1, x0)
    tl.store(out_ptr + idx, y.to(out_ptr.dtype.element_ty), mask=mask)


def mixture_path_sample(x_1, x_0, kappa, rng, noise, vocab_size: int, mask_id: int | None):
    x1 = flat(x_1)
    B = x1.shape[0]
    D = x1.numel() // max(B, 1)  # (an empty batch: a grid of no programs)
    x0 = flat(x_0)
    out = torch.empty(x_1.shape, dtype=x_1.dtype, device=x_1.device)
    BLOCK, R, n_win, grid, num_warps = sample_tiling(B, D)
    kp = flat(kappa)
    _mixture_path_sample_kernel[grid](
        x1, x0 if x0 is not None else x1, kp, rng if rng is not None else kp,
        flat(noise) if noise is not None else kp, out, B, D, n_win, (x1.numel() + 3) // 4,
        int(vocab_size), int(mask_id) if mask_id is not None else 0,
        HAS_X0=x0 is not None, HAS_NOISE=noise is not None, MASK_SOURCE=mask_id is not None,
        R=R, BLOCK=BLOCK, num_warps=num_warps)
    return out
