"""Step combine, the kernel of every ODE / SDE step, in one pass (FORMULAS.md §3):

    x_next = A_b * x + B_b * p + C_b * q + N_b * z

Per-sample fp32 ``[B]`` coefficients; ``q``/``C`` and ``N`` optional. ``z`` is ``noise`` when
given, else Gaussian stream 0 of ``rng`` (``ceil(numel / 4)`` counters from the offset), drawn
in registers. ``out`` may alias ``x`` (in place: every element is read and then written by
the same program). fp32 arithmetic, output in ``x``'s dtype. Non-contiguous inputs are
copied to contiguous memory by the launcher (and a non-contiguous ``out`` is written through a
contiguous temporary). Traffic: read ``x, p`` (``q``, ``noise``), write ``x_next``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _philox
from ._common import cast_out, flat, row_coef, sample_tile, sample_tiling


@triton.jit
def _step_combine_kernel(
    x_ptr, p_ptr, q_ptr, A_ptr, B_ptr, C_ptr, N_ptr, rng_ptr, noise_ptr, out_ptr, n_batch, D, n_win,
    HAS_A: tl.constexpr, HAS_B: tl.constexpr, HAS_Q: tl.constexpr, HAS_N: tl.constexpr,
    HAS_NOISE: tl.constexpr, R: tl.constexpr, BLOCK: tl.constexpr,
):
    rows, idx, mask, w, ctr = sample_tile(tl.program_id(0), n_batch, D, n_win, R, BLOCK)
    x = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    p = tl.load(p_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    y = row_coef(A_ptr, rows, n_batch, HAS_A) * x + row_coef(B_ptr, rows, n_batch, HAS_B) * p
    if HAS_Q:
        q = tl.load(q_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        y = y + row_coef(C_ptr, rows, n_batch, True) * q
    if HAS_N:
        if HAS_NOISE:
            z = tl.load(noise_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        else:
            z = _philox.gaussian_block(tl.load(rng_ptr), tl.load(rng_ptr + 1) + ctr)
        y = y + row_coef(N_ptr, rows, n_batch, True) * z
    tl.store(out_ptr + idx, cast_out(y, out_ptr), mask=mask)


def step_combine(x, p, q, A, B, C, N, rng, noise, out=None):
    xx = flat(x)
    n_batch = xx.shape[0]
    D = xx.numel() // max(n_batch, 1)  # (an empty batch: a grid of no programs)
    has_q = q is not None
    has_n = N is not None
    direct = out is not None and out.is_contiguous() and out.dtype == x.dtype and (
        out is x or out.data_ptr() == xx.data_ptr() or not _overlaps(out, xx))
    dst = out if direct else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    coef = next(c for c in (A, B, C, N) if c is not None) if any(
        c is not None for c in (A, B, C, N)) else xx
    BLOCK, R, n_win, grid, num_warps = sample_tiling(n_batch, D)
    _step_combine_kernel[grid](
        xx, flat(p), flat(q) if has_q else xx,
        flat(A) if A is not None else coef, flat(B) if B is not None else coef,
        flat(C) if (has_q and C is not None) else coef, flat(N) if has_n else coef,
        rng if (has_n and noise is None) else coef,
        flat(noise) if (has_n and noise is not None) else xx, dst, n_batch, D, n_win,
        HAS_A=A is not None, HAS_B=B is not None, HAS_Q=has_q and C is not None, HAS_N=has_n,
        HAS_NOISE=noise is not None, R=R, BLOCK=BLOCK, num_warps=num_warps)
    if out is None:
        return dst
    if not direct:
        out.copy_(dst)
    return out


def _overlaps(a, b) -> bool:
    """Whether two contiguous tensors share memory (a partial overlap forbids direct writes)."""
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    a0, a1 = a.data_ptr(), a.data_ptr() + a.numel() * a.element_size()
    b0, b1 = b.data_ptr(), b.data_ptr() + b.numel() * b.element_size()
    return a0 < b1 and b0 < a1
