"""Philox-4x32-10 in PyTorch integer ops: the one random stream of every backend.

FORMULAS.md §6. Key ``(lo32(seed), hi32(seed))``, counter ``(lo32(c), hi32(c), 0, 0)``,
ten rounds of::

    c0' = umulhi(0xCD9E8D57, c2) ^ c1 ^ k0      c1' = 0xCD9E8D57 * c2
    c2' = umulhi(0xD2511F53, c0) ^ c3 ^ k1      c3' = 0xD2511F53 * c0
    k0 += 0x9E3779B9                             k1 += 0xBB67AE85

exactly as Triton's ``tl.randint4x``. uint32 values live in int64 tensors (torch has no
full uint32 arithmetic); products are split into 16-bit limbs so nothing overflows.

Layout shared by every op: element ``i`` of an element-wise stream uses word ``i % 4`` of
``philox(seed, offset + i // 4)``, so tiling never changes the stream.
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
ROUND_A = 0xD2511F53
ROUND_B = 0xCD9E8D57
KEY_A = 0x9E3779B9
KEY_B = 0xBB67AE85
UNIFORM_SCALE = 4.6566127342e-10  # tl.rand's int32 -> [0, 1) scale
TWO_POW_M32 = 2.3283064365386963e-10  # 2^-32, race noise (w + 0.5) * 2^-32


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi32, lo32) of the 64-bit product of the constant ``a`` and uint32 tensor ``b``."""
    p1 = (a >> 16) * b  # < 2^48
    p0 = (a & 0xFFFF) * b  # < 2^48
    hi = (p1 + (p0 >> 16)) >> 16
    lo = (((p1 & 0xFFFF) << 16) + p0) & MASK32
    return hi, lo


def philox4x32(seed: int | torch.Tensor, counter: torch.Tensor, n_rounds: int = 10):
    """Four uint32 words (as int64 tensors) for each 64-bit ``counter`` under ``seed``."""
    counter = counter.to(torch.int64)
    seed = torch.as_tensor(seed, dtype=torch.int64, device=counter.device)
    k0 = seed & MASK32
    k1 = (seed >> 32) & MASK32
    c0 = counter & MASK32
    c1 = (counter >> 32) & MASK32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(n_rounds):
        hi_b, lo_b = _mul_hi_lo(ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + KEY_A) & MASK32
        k1 = (k1 + KEY_B) & MASK32
    return c0, c1, c2, c3


def uint32_stream(seed, offset, n: int, device=None) -> torch.Tensor:
    """The element-wise stream: word ``i % 4`` of ``philox(seed, offset + i // 4)``, i < n."""
    device = device if device is not None else torch.as_tensor(seed).device
    n_ctr = (n + 3) // 4
    ctr = torch.as_tensor(offset, dtype=torch.int64, device=device) + torch.arange(
        n_ctr, dtype=torch.int64, device=device)
    words = torch.stack(philox4x32(seed, ctr), dim=-1).reshape(-1)
    return words[:n]


def uint_to_uniform(w: torch.Tensor) -> torch.Tensor:
    """tl.rand's map: bitcast to int32, ``~x`` where negative, times 4.6566127342e-10 (fp32)."""
    x = torch.where(w >= 2**31, w - 2**32, w)
    x = torch.where(x < 0, -x - 1, x)
    return x.to(torch.float32) * torch.tensor(UNIFORM_SCALE, dtype=torch.float32)


def uint_to_open_uniform(w: torch.Tensor) -> torch.Tensor:
    """``(w + 0.5) * 2^-32`` in fp32: never 0, full precision near 0 (race noise)."""
    return (w.to(torch.float32) + 0.5) * torch.tensor(TWO_POW_M32, dtype=torch.float32)


def uniform_to_normal_pair(u1: torch.Tensor, u2: torch.Tensor):
    """Box-Muller exactly as Triton's ``pair_uniform_to_normal`` (fp32)."""
    u1 = torch.clamp_min(u1, 1.0e-7)
    th = 6.283185307179586 * u2
    r = torch.sqrt(-2.0 * torch.log(u1))
    return r * torch.cos(th), r * torch.sin(th)


def normal_stream(seed, offset, n: int, device=None) -> torch.Tensor:
    """Gaussian element ``i`` = ``tl.randn4x(seed, offset + i // 4)[i % 4]`` (fp32)."""
    device = device if device is not None else torch.as_tensor(seed).device
    n_ctr = (n + 3) // 4
    ctr = torch.as_tensor(offset, dtype=torch.int64, device=device) + torch.arange(
        n_ctr, dtype=torch.int64, device=device)
    w0, w1, w2, w3 = (uint_to_uniform(w) for w in philox4x32(seed, ctr))
    n0, n1 = uniform_to_normal_pair(w0, w1)
    n2, n3 = uniform_to_normal_pair(w2, w3)
    return torch.stack((n0, n1, n2, n3), dim=-1).reshape(-1)[:n]


def uniform_stream(seed, offset, n: int, device=None) -> torch.Tensor:
    """Uniform element ``i`` = ``tl.rand4x(seed, offset + i // 4)[i % 4]`` (fp32, [0, 1))."""
    return uint_to_uniform(uint32_stream(seed, offset, n, device))
