"""The project's own Philox-4x32-10 for Triton (FORMULAS.md §6), independent of the installed
Triton's ``tl.randint4x`` (the GPU machines carry an older Triton than the CI machine).

Key ``(lo32(seed), hi32(seed))``, counter ``(lo32(c), hi32(c), 0, 0)``, ten rounds of::

    c0' = umulhi(0xCD9E8D57, c2) ^ c1 ^ k0      c1' = 0xCD9E8D57 * c2
    c2' = umulhi(0xD2511F53, c0) ^ c3 ^ k1      c3' = 0xD2511F53 * c0
    k0 += 0x9E3779B9                             k1 += 0xBB67AE85

Element ``i`` of an element-wise stream is word ``i % 4`` of ``philox(seed, offset + i // 4)``.
Kernels walk element ranges that start at a multiple of 4, run Philox once per counter
(``BLOCK / 4`` counters for ``BLOCK`` elements) and spread the four words over the elements
with ``interleave4`` so that tiling never changes the stream.

Derived values, fp32:

- ``uint_to_uniform``: ``tl.rand``'s map (bitcast to int32, ``~x`` where negative, times
  ``4.6566127342e-10``), in ``[0, 1)``;
- ``uint_to_open_uniform``: ``(w + 0.5) * 2^-32``, in ``(0, 1)``, the race noise;
- ``pair_uniform_to_normal``: Box-Muller exactly as ``tl.pair_uniform_to_normal``;
- ``randn4``: the four Gaussians of one counter, as ``tl.randn4x``.
"""
import triton
import triton.language as tl

try:  # accurate log1p on GPUs (the interpreter has no libdevice)
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - very old Triton
    libdevice = None

PHILOX_KEY_A = tl.constexpr(0x9E3779B9)
PHILOX_KEY_B = tl.constexpr(0xBB67AE85)
PHILOX_ROUND_A = tl.constexpr(0xD2511F53)
PHILOX_ROUND_B = tl.constexpr(0xCD9E8D57)
UNIFORM_SCALE = tl.constexpr(4.6566127342e-10)
TWO_POW_M32 = tl.constexpr(2.3283064365386963e-10)
BELOW_ONE = tl.constexpr(0.99999994039535522)  # the largest fp32 below 1


@triton.jit
def philox_rounds(c0, c1, c2, c3, k0, k1):
    """Ten Philox-4x32 rounds on uint32 state ``(c0..c3)`` and key ``(k0, k1)``."""
    for _ in tl.static_range(10):
        _c0 = c0
        _c2 = c2
        c0 = tl.umulhi(_c2, PHILOX_ROUND_B) ^ c1 ^ k0
        c2 = tl.umulhi(_c0, PHILOX_ROUND_A) ^ c3 ^ k1
        c1 = _c2 * PHILOX_ROUND_B
        c3 = _c0 * PHILOX_ROUND_A
        k0 = k0 + PHILOX_KEY_A
        k1 = k1 + PHILOX_KEY_B
    return c0, c1, c2, c3


@triton.jit
def philox4x32(seed, counter):
    """Four uint32 words for each int64 ``counter`` (any shape) under the int64 scalar ``seed``."""
    s = seed.to(tl.int64).to(tl.uint64, bitcast=True)
    k0 = (s & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((s >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c = counter.to(tl.int64).to(tl.uint64, bitcast=True)
    c0 = (c & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((c >> 32) & 0xFFFFFFFF).to(tl.uint32)
    zero = c0 * 0
    k0 = k0 + zero  # broadcast the key to the counters' shape
    k1 = k1 + zero
    return philox_rounds(c0, c1, zero, zero, k0, k1)


@triton.jit
def uint_to_uniform(w):
    """``tl.rand``'s uint32 -> [0, 1) map (fp32)."""
    x = w.to(tl.int32, bitcast=True)
    x = tl.where(x < 0, ~x, x)
    return x.to(tl.float32) * UNIFORM_SCALE


@triton.jit
def uint_to_open_uniform(w):
    """``(w + 0.5) * 2^-32`` in fp32: never 0, full precision near 0 (race noise)."""
    return (w.to(tl.float32) + 0.5) * TWO_POW_M32


@triton.jit
def pair_uniform_to_normal(u1, u2):
    """Box-Muller exactly as ``tl.pair_uniform_to_normal``."""
    u1 = tl.maximum(1.0e-7, u1)
    th = 6.283185307179586 * u2
    r = tl.sqrt(-2.0 * tl.log(u1))
    return r * tl.cos(th), r * tl.sin(th)


@triton.jit
def randn4(seed, counter):
    """The four Gaussians of ``tl.randn4x(seed, counter)``."""
    w0, w1, w2, w3 = philox4x32(seed, counter)
    n0, n1 = pair_uniform_to_normal(uint_to_uniform(w0), uint_to_uniform(w1))
    n2, n3 = pair_uniform_to_normal(uint_to_uniform(w2), uint_to_uniform(w3))
    return n0, n1, n2, n3


@triton.jit
def interleave4(a0, a1, a2, a3):
    """``[..., C]`` x 4 -> ``[..., 4 C]`` with element ``4 c + k`` = ``a_k[c]`` (stream order)."""
    return tl.interleave(tl.interleave(a0, a2), tl.interleave(a1, a3))


@triton.jit
def gaussian_block(seed, counter):
    """Gaussians of the elements ``4 c + k`` for the counters ``counter [..., C]`` -> ``[..., 4 C]``."""
    n0, n1, n2, n3 = randn4(seed, counter)
    return interleave4(n0, n1, n2, n3)


@triton.jit
def words_block(seed, counter):
    """uint32 words of the elements ``4 c + k`` for ``counter [..., C]`` -> ``[..., 4 C]``."""
    w0, w1, w2, w3 = philox4x32(seed, counter)
    return interleave4(w0, w1, w2, w3)


@triton.jit
def log1p_f32(x, USE_LIBDEVICE: tl.constexpr):
    """Accurate ``log1p`` in fp32: libdevice on GPUs; Goldberg's ``log(1 + x) * x / ((1 + x) - 1)``
    where there is none (the interpreter, whose ``log`` is numpy's correctly rounded one)."""
    if USE_LIBDEVICE:
        return libdevice.log1p(x)
    else:
        y = 1.0 + x
        d = y - 1.0
        return tl.where(d == 0.0, x, tl.log(y) * (x / tl.where(d == 0.0, 1.0, d)))


@triton.jit
def exp1_from_open_uniform(u, USE_LIBDEVICE: tl.constexpr):
    """``E = -log1p(-u)``, an Exp(1) draw from ``u`` in (0, 1)."""
    return -log1p_f32(-u, USE_LIBDEVICE)


@triton.jit
def race_exp1(u, USE_LIBDEVICE: tl.constexpr):
    """The race's Exp(1): ``u`` held below 1 (the top 128 words round to 1 in fp32, whose E is
    infinite and its key's score -inf: a one-token row would lose its token)."""
    return exp1_from_open_uniform(tl.minimum(u, BELOW_ONE), USE_LIBDEVICE)
