"""Helpers the Triton kernels share: the per-sample tiling of the continuous ops, the online
softmax of the discrete losses, and small launcher utilities (no host syncs anywhere).

Per-sample tiling (continuous ops and the mixture path sample). Sample ``b`` owns the
flattened elements ``[b D, (b + 1) D)``. A program handles ``R`` samples by a window of
``BLOCK`` elements each; the window of sample ``b`` starts at ``4 floor(b D / 4) + w BLOCK``
(``w`` the window index) so that its Philox counters are whole (element ``i`` uses word
``i % 4`` of counter ``i // 4``), and elements outside ``[b D, (b + 1) D)`` are masked (they
belong to the neighbouring sample, whose own program handles them). Large ``D``: ``R = 1``,
``BLOCK = 4096`` and ``ceil((D + pad) / 4096)`` windows per sample; small ``D``: one window of
``next_pow2(D + pad)`` elements and many samples per program (``pad``: the 3 elements a window
may start before its sample, none when ``D`` is a multiple of 4 and every sample starts a counter). Per-sample coefficients are then
one load per row, and per-sample sums are plain row reductions (no atomics).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MAX_TILE = 4096
# Tiles of several rows on a GPU (ptxas for sm_90): each row keeps its own state, so at 4096
# elements of samples the noise-drawing kernels took 150-253 registers (one 8-warp block per SM),
# at 2048 59-80; vocabulary rows of fewer than 128 at 64-128 rows a tile took 204-255 and
# spilled, at 8 rows 64-95 and none. The interpreter keeps the wide tiles: it runs a program at a
# time, and fewer programs keep the tests fast.
MULTI_ROW_TILE = 2048
SHORT_ROWS = 8


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def use_libdevice(t: torch.Tensor) -> bool:
    """Whether the kernels may call libdevice (compiled GPU code; not the interpreter)."""
    return t.device.type == "cuda" and not interpreting()


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def flat(t: torch.Tensor | None) -> torch.Tensor | None:
    """A contiguous view (a copy only when ``t`` is not contiguous, or is a view with the negative
    bit: a one-element ``conj().imag`` is contiguous, and its memory holds the value's negation)."""
    return None if t is None else t.resolve_neg().contiguous()


def counter_pad(D: int) -> int:
    """Elements a window aligned down to a Philox counter may start before row ``b``'s first,
    ``b D``: up to 3, none when ``D`` is a multiple of 4 (a D = 4096 sample would otherwise take
    a second, all-masked window that still draws its noise)."""
    return 0 if D % 4 == 0 else 3


def rows_per_tile(n_rows: int, BLOCK_V: int, max_tile: int) -> int:
    """R of a tile of vocabulary rows of ``BLOCK_V``: up to ``max_tile`` elements, and on a GPU at
    most ``SHORT_ROWS`` rows of fewer than 128 (see ``MULTI_ROW_TILE``)."""
    cap = max_tile // BLOCK_V if BLOCK_V >= 128 or interpreting() else SHORT_ROWS
    return max(1, min(cap, next_pow2(n_rows)))


def sample_tiling(B: int, D: int):
    """``(BLOCK, R, n_win, grid, num_warps)`` of the per-sample tiling (module docstring)."""
    span = D + counter_pad(D)
    if span <= MAX_TILE:
        BLOCK = max(16, next_pow2(span))
        R = max(1, min((MAX_TILE if interpreting() else min(MULTI_ROW_TILE, MAX_TILE)) // BLOCK, next_pow2(B)))
        n_win = 1
    else:
        BLOCK, R = MAX_TILE, 1
        n_win = triton.cdiv(span, BLOCK)
    grid = (triton.cdiv(B, R) * n_win,)
    num_warps = 8 if R * BLOCK >= 4096 or (R > 1 and R * BLOCK >= MULTI_ROW_TILE) else 4
    return BLOCK, R, n_win, grid, num_warps


INTERPRETING = tl.constexpr(interpreting())  # fixed when the kernels are defined, as Triton's own switch


@triton.jit
def _interpreter_cast(y, ptr):
    if ptr.dtype.element_ty == tl.bfloat16:  # round to nearest even on the bits
        bits = y.to(tl.uint32, bitcast=True)
        r = bits + 0x7FFF + ((bits >> 16) & 1)
        r = tl.where(y != y, bits | 0x400000, r)
        return (r >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return y.to(ptr.dtype.element_ty)


@triton.jit
def cast_out(y, ptr):
    """fp32 ``y`` in ``ptr``'s element type, rounded to nearest even (compiled code: the
    hardware conversion; the interpreter's own fp32 -> bf16 cast truncates, so there the
    rounding is done on the bits)."""
    if INTERPRETING:
        return _interpreter_cast(y, ptr)
    else:
        return y.to(ptr.dtype.element_ty)


@triton.jit
def sample_tile(pid, B, D, n_win, R: tl.constexpr, BLOCK: tl.constexpr):
    """Rows ``[R]`` (sample ids), element indices ``[R, BLOCK]``, their mask, the window index
    and the counters ``[R, BLOCK // 4]`` (relative to a stream's first counter) of program ``pid``."""
    pid = pid.to(tl.int64)
    rb = pid // n_win
    w = pid - rb * n_win
    rows = rb * R + tl.arange(0, R).to(tl.int64)
    lo = rows * D
    base = (lo // 4) * 4 + w * BLOCK
    idx = base[:, None] + tl.arange(0, BLOCK).to(tl.int64)[None, :]
    mask = (rows[:, None] < B) & (idx >= lo[:, None]) & (idx < (lo + D)[:, None])
    ctr = (base // 4)[:, None] + tl.arange(0, BLOCK // 4).to(tl.int64)[None, :]
    return rows, idx, mask, w, ctr


@triton.jit
def row_coef(ptr, rows, B, HAS: tl.constexpr):
    """``ptr[rows]`` as fp32 ``[R, 1]`` (0 when the coefficient is absent)."""
    if HAS:
        c = tl.load(ptr + rows, mask=rows < B, other=0.0).to(tl.float32)
    else:
        c = tl.zeros(rows.shape, dtype=tl.float32)
    return c[:, None]


@triton.jit
def online_lse_update(m, s, z):
    """One tile of the online logsumexp: ``(m, s)`` running max and sum of ``exp(z - m)`` per
    row (``[R]``), ``z [R, BLOCK]`` fp32 with -inf where masked. -inf rows stay (-inf, 0); a row
    with a +inf logit is (+inf, 1), so its logsumexp is +inf as torch's, unless it holds a NaN
    (then s is NaN, as for any row with a NaN)."""
    m_new = tl.maximum(m, tl.max(z, axis=1))
    inf = float("inf")
    m_use = tl.where((m_new == -inf) | (m_new == inf), 0.0, m_new)
    s_new = s * tl.exp(m - m_use) + tl.sum(tl.exp(z - m_use[:, None]), axis=1)
    nan = (s != s) | (tl.sum(tl.where(z != z, 1.0, 0.0), axis=1) > 0)
    s_new = tl.where(m_new == inf, tl.where(nan, float("nan"), 1.0), s_new)
    return m_new, s_new


@triton.jit
def softmax_terms(z, m, inv_s):
    """``exp(z - m) * inv_s`` of ``z [R, BLOCK]`` with the row statistics of ``_row_stats``: NaN
    across a row with a +inf logit (its ``inv_s``), as ``torch.softmax`` gives."""
    shift = tl.where(m == -float("inf"), 0.0, m)
    return tl.exp(z - shift[:, None]) * inv_s[:, None]
