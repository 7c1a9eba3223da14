"""CTMC jump step over a vocabulary, one Euler step of size h (FORMULAS.md §5), reading only
the logits rows that may jump and writing only the ``[N]`` new tokens.

Per row ``i`` (a token), with ``u(y) = r1 [y == x_1] + r0 p0(y)`` for ``y != x_t``:

    E      = -log1p(-(w0 + 0.5) 2^-32)                  the row's Exp(1) (jump test)
    rate0  = r0 (1 - p0(x_t))   (0 where p0(x_t) >= 1: 0 * inf = 0)
    tmax   = r1 + rate0                                 (the largest total over x_1)
    may    = final or E < h * tmax                      (h * inf = inf for h > 0, 0 for h = 0)
    x_1    = argmax_j (z_j / temperature - log E_j),   E_j = -log1p(-min(fl((w_j + 0.5) 2^-32), 1 - 2^-24))
             (probs=True: z_j -> log p_j; a key of -inf is never drawn)
    total  = r1 [x_1 != x_t] + rate0;  jump = E < h * total
    pick_x1 = ri1 == inf ? True : rate0 == inf ? False : u_choice * total < ri1
    new    = jump ? (pick_x1 ? x_1 : y0) : x_t;        final: new = x_1

``y0`` by source: 1 uniform, ``y = umulhi(w2, V - 1)`` then ``+1`` if ``y >= x_t`` (a uniform
draw over ``y != x_t``); 2 ``mask_id``; 3 a general ``p0``: a second race over ``log p0(y)``
with ``x_t`` excluded, run only for rows that jump to the source; 0 none.

Random numbers (for ``N`` rows, FORMULAS.md §6): row ``i`` uses the 4 words of
``philox(seed, offset + i)`` (``w0`` jump test, ``w1`` component choice as ``tl.rand``,
``w2`` uniform token); race element ``e = i V + j`` uses word ``e % 4`` of counter
``offset + N + e // 4``; the p0 race the same at ``offset + N + ceil(N V / 4) + e // 4``.
Explicit noise (``noise_token [N, 3]``, ``noise_race [N, V]``, ``noise_race_p0 [N, V]``,
uniforms in (0, 1)) replaces the generator for exact parity; the uniform token is then
``min(floor(u2 (V - 1)), V - 2)``.

Each program owns ``R`` rows and walks them in tiles of ``BLOCK_V`` elements aligned to the
race counters (a row's tiles start at ``4 floor(i V / 4)``); the jump test runs first and the
loads of rows that cannot jump are masked off (a program none of whose rows may jump reads
no logits at all). When ``V`` is large and ``N`` small, each row is split across ``S``
programs that write a partial ``(max key, argmax)`` per split (and per split of the p0 race),
and a small second launch reduces them (ties go to the lowest index, as ``torch.argmax``) and
makes the decision. fp32 arithmetic; logits with a non-unit last stride are copied.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _philox
from ._common import counter_pad, next_pow2, rows_per_tile, use_libdevice

SOURCE_NONE, SOURCE_UNIFORM, SOURCE_MASK, SOURCE_GENERAL = 0, 1, 2, 3
MAX_BLOCK_V = 4096        # V tile (tests lower it to get multi-tile rows on small V)
MAX_TILE = 4096           # R * BLOCK_V
TARGET_PROGRAMS = None    # split rows until this many programs run (None: 4 per SM on GPUs, 1 on CPU)


@triton.jit
def _jumps(e, h, rate):
    """The jump test ``E < h * rate`` (``h * inf = inf`` for h > 0, 0 for h = 0); an infinite
    ``h * rate`` jumps even where E is."""
    ht = tl.where(rate == float("inf"), tl.where(h > 0, float("inf"), 0.0), h * rate)
    return (e < ht) | (ht == float("inf"))


@triton.jit
def _token_state(rows, rmask, xt_ptr, h_ptr, r1_ptr, r0_ptr, p0_ptr, rng_ptr, nt_ptr, N, V,
                 mask_id, p0_uniform,
                 SOURCE: tl.constexpr, FINAL: tl.constexpr, NOISE: tl.constexpr,
                 USE_LIBDEVICE: tl.constexpr):
    xt = tl.load(xt_ptr + rows, mask=rmask, other=0).to(tl.int64)
    h = tl.load(h_ptr + rows, mask=rmask, other=0.0)
    r1 = tl.load(r1_ptr + rows, mask=rmask, other=0.0)
    r0 = tl.load(r0_ptr + rows, mask=rmask, other=0.0)
    if NOISE:
        u0 = tl.load(nt_ptr + rows * 3, mask=rmask, other=0.5)
        u_choice = tl.load(nt_ptr + rows * 3 + 1, mask=rmask, other=0.5)
        u2 = tl.load(nt_ptr + rows * 3 + 2, mask=rmask, other=0.5)
        y = tl.floor(u2 * (tl.zeros_like(u2) + (V - 1))).to(tl.int64)
        y_unif = tl.maximum(tl.minimum(y, V - 2), 0)
    else:
        seed = tl.load(rng_ptr)
        offset = tl.load(rng_ptr + 1)
        w0, w1, w2, w3 = _philox.philox4x32(seed, offset + rows)
        u0 = _philox.uint_to_open_uniform(w0)
        u_choice = _philox.uint_to_uniform(w1)
        y_unif = tl.umulhi(w2, w2 * 0 + (V - 1)).to(tl.int64)
    e_tok = _philox.exp1_from_open_uniform(u0, USE_LIBDEVICE)
    y_unif = y_unif + tl.where(y_unif >= xt, 1, 0)
    if SOURCE == 1:
        p0_xt = tl.zeros(h.shape, tl.float32) + p0_uniform
    elif SOURCE == 2:
        p0_xt = tl.where(xt == mask_id, 1.0, 0.0)
    elif SOURCE == 3:
        p0_xt = tl.load(p0_ptr + xt, mask=rmask, other=1.0)
    else:
        p0_xt = tl.zeros(h.shape, tl.float32) + 1.0
    rate0 = tl.where(p0_xt >= 1.0, 0.0, r0 * (1.0 - p0_xt))
    if FINAL:
        may = rmask
    else:
        may = rmask & _jumps(e_tok, h, r1 + rate0)
    return xt, h, r1, rate0, e_tok, u_choice, y_unif, may


@triton.jit
def _argmax_nan_first(val, BLOCK: tl.constexpr):
    """``(max, first index of it)`` along axis 1 of ``val [R, BLOCK]`` in torch.argmax's order:
    NaN is the largest value, ties go to the lowest index. (Compiled ``tl.max`` and
    ``tl.argmax`` do not order NaN, nor alike; the interpreter's NumPy has its own rule.)"""
    cols = tl.arange(0, BLOCK)[None, :] + tl.zeros(val.shape, tl.int32)
    nan = val != val
    first_nan = tl.min(tl.where(nan, cols, BLOCK), axis=1)
    clean = tl.where(nan, -float("inf"), val)
    has_nan = first_nan < BLOCK
    best = tl.where(has_nan, float("nan"), tl.max(clean, axis=1))
    return best, tl.where(has_nan, first_nan, tl.argmax(clean, axis=1, tie_break_left=True))


@triton.jit
def _race(rows, active, xt, k_lo, k_hi, z_ptr, stride_z, p0_ptr, noise_ptr, rng_ptr, N, V,
          stream_base, temperature,
          ON_P0: tl.constexpr, PROBS: tl.constexpr, HAS_TEMP: tl.constexpr, NOISE: tl.constexpr,
          USE_LIBDEVICE: tl.constexpr, R: tl.constexpr, BLOCK_V: tl.constexpr):
    """Best ``(key - log E, j)`` per row over the row's tiles ``[k_lo, k_hi)``; keys are the
    logits (``ON_P0`` False) or ``log p0`` with ``x_t`` excluded. Rows not ``active`` read nothing."""
    best_v = tl.full((R,), -float("inf"), tl.float32)
    best_j = tl.zeros((R,), tl.int64)
    if tl.max(active.to(tl.int32), axis=0) > 0:
        if not NOISE:
            seed = tl.load(rng_ptr)
            offset = tl.load(rng_ptr + 1) + stream_base
        e_row = rows * V
        a_row = (e_row // 4) * 4
        for k in range(k_lo, k_hi):
            base = a_row + k * BLOCK_V
            j = (base - e_row)[:, None] + tl.arange(0, BLOCK_V).to(tl.int64)[None, :]
            cm = active[:, None] & (j >= 0) & (j < V)
            if NOISE:
                u = tl.load(noise_ptr + rows[:, None] * V + j, mask=cm, other=0.5)
            else:
                ctr = offset + (base // 4)[:, None] + tl.arange(0, BLOCK_V // 4).to(tl.int64)[None, :]
                u = _philox.uint_to_open_uniform(_philox.words_block(seed, ctr))
            if ON_P0:
                key = tl.log(tl.load(p0_ptr + j, mask=cm, other=1.0))
                key = tl.where(j == xt[:, None], -float("inf"), key)
            else:
                key = tl.load(z_ptr + rows[:, None] * stride_z + j, mask=cm, other=0.0).to(tl.float32)
                if PROBS:
                    key = tl.log(key)
                if HAS_TEMP:
                    key = tl.math.div_rn(key, tl.zeros_like(key) + temperature)
            val = key - tl.log(_philox.race_exp1(u, USE_LIBDEVICE))
            val = tl.where(cm, val, -float("inf"))
            tile_v, tile_j = _argmax_nan_first(val, BLOCK_V)
            tile_j = tile_j.to(tl.int64) + (base - e_row)
            upd = (tile_v > best_v) | ((tile_v != tile_v) & (best_v == best_v))  # a first NaN wins
            best_v = tl.where(upd, tile_v, best_v)
            best_j = tl.where(upd, tile_j, best_j)
    return best_v, best_j


@triton.jit
def _decide(x1, xt, r1, rate0, h, e_tok, u_choice, may):
    """Whether the row jumps and whether to ``x_1`` (else to the source draw)."""
    ri1 = tl.where(x1 != xt, r1, 0.0)
    total = ri1 + rate0
    jump = may & _jumps(e_tok, h, total)
    pick = tl.where(ri1 == float("inf"), True,
                    tl.where(rate0 == float("inf"), False, u_choice * total < ri1))
    return jump, pick


@triton.jit
def _jump_step_kernel(
    z_ptr, stride_z, xt_ptr, h_ptr, r1_ptr, r0_ptr, p0_ptr, rng_ptr, nt_ptr, nr_ptr, nr0_ptr, out_ptr,
    N, V, mask_id, p0_uniform, temperature, n_tiles, p0_base,
    SOURCE: tl.constexpr, FINAL: tl.constexpr, PROBS: tl.constexpr, HAS_TEMP: tl.constexpr,
    NOISE: tl.constexpr, NOISE_RACE: tl.constexpr, NOISE_RACE0: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
    R: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * R + tl.arange(0, R).to(tl.int64)
    rmask = rows < N
    xt, h, r1, rate0, e_tok, u_choice, y_unif, may = _token_state(
        rows, rmask, xt_ptr, h_ptr, r1_ptr, r0_ptr, p0_ptr, rng_ptr, nt_ptr, N, V, mask_id,
        p0_uniform, SOURCE, FINAL, NOISE, USE_LIBDEVICE)
    x1_score, x1 = _race(rows, may, xt, 0, n_tiles, z_ptr, stride_z, p0_ptr, nr_ptr, rng_ptr, N, V, N,
                         temperature, False, PROBS, HAS_TEMP, NOISE_RACE, USE_LIBDEVICE, R, BLOCK_V)
    if FINAL:
        new = tl.where(may, x1, xt)
    else:
        jump, pick = _decide(x1, xt, r1, rate0, h, e_tok, u_choice, may)
        if SOURCE == 1:
            y0 = y_unif
        elif SOURCE == 2:
            y0 = tl.zeros_like(xt) + mask_id
        elif SOURCE == 3:
            _, y0 = _race(rows, tl.where(pick, False, jump), xt, 0, n_tiles, z_ptr, stride_z, p0_ptr, nr0_ptr,
                          rng_ptr, N, V, p0_base, temperature, True, PROBS, HAS_TEMP, NOISE_RACE0,
                          USE_LIBDEVICE, R, BLOCK_V)
        else:
            y0 = x1
        new = tl.where(jump, tl.where(pick, x1, y0), xt)
    new = tl.where(may & ~(x1_score > -float("inf")), -1, new)  # no finite winner: no draw (NaN too)
    tl.store(out_ptr + rows, new.to(out_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _jump_split_stage1(
    z_ptr, stride_z, xt_ptr, h_ptr, r1_ptr, r0_ptr, p0_ptr, rng_ptr, nt_ptr, nr_ptr, nr0_ptr,
    pv_ptr, pj_ptr, pv0_ptr, pj0_ptr,
    N, V, mask_id, p0_uniform, temperature, n_tiles, p0_base, S, tiles_per_split,
    SOURCE: tl.constexpr, FINAL: tl.constexpr, PROBS: tl.constexpr, HAS_TEMP: tl.constexpr,
    NOISE: tl.constexpr, NOISE_RACE: tl.constexpr, NOISE_RACE0: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
    R: tl.constexpr, BLOCK_V: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rb = pid // S
    s = pid - rb * S
    rows = rb * R + tl.arange(0, R).to(tl.int64)
    rmask = rows < N
    xt, h, r1, rate0, e_tok, u_choice, y_unif, may = _token_state(
        rows, rmask, xt_ptr, h_ptr, r1_ptr, r0_ptr, p0_ptr, rng_ptr, nt_ptr, N, V, mask_id,
        p0_uniform, SOURCE, FINAL, NOISE, USE_LIBDEVICE)
    k_lo = s * tiles_per_split
    k_hi = tl.minimum(k_lo + tiles_per_split, n_tiles)
    bv, bj = _race(rows, may, xt, k_lo, k_hi, z_ptr, stride_z, p0_ptr, nr_ptr, rng_ptr, N, V, N,
                   temperature, False, PROBS, HAS_TEMP, NOISE_RACE, USE_LIBDEVICE, R, BLOCK_V)
    tl.store(pv_ptr + rows * S + s, bv, mask=rmask)
    tl.store(pj_ptr + rows * S + s, bj, mask=rmask)
    if SOURCE == 3 and not FINAL:  # x_1 is not known yet: race p0 wherever a source jump can happen
        bv0, bj0 = _race(rows, may & (rate0 > 0), xt, k_lo, k_hi, z_ptr, stride_z, p0_ptr, nr0_ptr,
                         rng_ptr, N, V, p0_base, temperature, True, PROBS, HAS_TEMP, NOISE_RACE0,
                         USE_LIBDEVICE, R, BLOCK_V)
        tl.store(pv0_ptr + rows * S + s, bv0, mask=rmask)
        tl.store(pj0_ptr + rows * S + s, bj0, mask=rmask)


@triton.jit
def _reduce_splits(pv_ptr, pj_ptr, rows, active, S, BLOCK_S: tl.constexpr):
    """The largest partial over the splits and its first ``j`` (ties and NaN to the lowest split)."""
    sc = tl.arange(0, BLOCK_S).to(tl.int64)
    m = active[:, None] & (sc < S)[None, :]
    v = tl.load(pv_ptr + rows[:, None] * S + sc[None, :], mask=m, other=-float("inf"))
    score, best = _argmax_nan_first(v, BLOCK_S)
    best = best.to(tl.int64)
    return score, tl.load(pj_ptr + rows * S + best, mask=active, other=0)


@triton.jit
def _jump_split_stage2(
    xt_ptr, h_ptr, r1_ptr, r0_ptr, p0_ptr, rng_ptr, nt_ptr, pv_ptr, pj_ptr, pv0_ptr, pj0_ptr, out_ptr,
    N, V, mask_id, p0_uniform, S,
    SOURCE: tl.constexpr, FINAL: tl.constexpr, NOISE: tl.constexpr, USE_LIBDEVICE: tl.constexpr,
    R: tl.constexpr, BLOCK_S: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * R + tl.arange(0, R).to(tl.int64)
    rmask = rows < N
    xt, h, r1, rate0, e_tok, u_choice, y_unif, may = _token_state(
        rows, rmask, xt_ptr, h_ptr, r1_ptr, r0_ptr, p0_ptr, rng_ptr, nt_ptr, N, V, mask_id,
        p0_uniform, SOURCE, FINAL, NOISE, USE_LIBDEVICE)
    x1_score, x1 = _reduce_splits(pv_ptr, pj_ptr, rows, may, S, BLOCK_S)
    if FINAL:
        new = tl.where(may, x1, xt)
    else:
        jump, pick = _decide(x1, xt, r1, rate0, h, e_tok, u_choice, may)
        if SOURCE == 1:
            y0 = y_unif
        elif SOURCE == 2:
            y0 = tl.zeros_like(xt) + mask_id
        elif SOURCE == 3:
            _, y0 = _reduce_splits(pv0_ptr, pj0_ptr, rows, tl.where(pick, False, jump), S, BLOCK_S)
        else:
            y0 = x1
        new = tl.where(jump, tl.where(pick, x1, y0), xt)
    new = tl.where(may & ~(x1_score > -float("inf")), -1, new)  # no finite winner: no draw (NaN too)
    tl.store(out_ptr + rows, new.to(out_ptr.dtype.element_ty), mask=rmask)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _target_programs(device: torch.device) -> int:
    if TARGET_PROGRAMS is not None:
        return TARGET_PROGRAMS
    if device.type == "cuda":
        return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 1


def jump_step(logits, x_t, h, r1, r0, p0, source: int, mask_id: int, temperature: float,
              final: bool, probs: bool, rng, noise_token, noise_race, noise_race_p0):
    N, V = logits.shape
    z = logits if logits.stride(-1) == 1 else logits.contiguous()
    dev = logits.device
    out = torch.empty(x_t.shape, dtype=x_t.dtype, device=dev)
    noise = noise_token is not None
    xt = x_t.contiguous()
    hh, rr1, rr0 = h.contiguous(), r1.contiguous(), r0.contiguous()
    dummy = hh
    p0c = p0.contiguous() if (p0 is not None and source == SOURCE_GENERAL) else dummy
    nt = noise_token.contiguous() if noise else dummy
    nr = noise_race.contiguous() if noise_race is not None else dummy
    nr0 = noise_race_p0.contiguous() if noise_race_p0 is not None else dummy
    rngp = rng if rng is not None else dummy
    span = V + counter_pad(V)  # rows start at counter boundaries when V is a multiple of 4
    BLOCK_V = min(max(16, next_pow2(span)), MAX_BLOCK_V)
    R = rows_per_tile(N, BLOCK_V, MAX_TILE)
    n_tiles = triton.cdiv(span, BLOCK_V)
    n_rb = triton.cdiv(N, R)
    target = _target_programs(dev)
    S = 1
    if n_rb < target and n_tiles > 1:
        tps = triton.cdiv(n_tiles, min(n_tiles, triton.cdiv(target, n_rb)))
        S = triton.cdiv(n_tiles, tps)
    temperature = float(temperature)
    meta = dict(SOURCE=int(source), FINAL=bool(final), NOISE=noise, USE_LIBDEVICE=use_libdevice(logits))
    race_meta = dict(PROBS=bool(probs), HAS_TEMP=temperature != 1.0, NOISE_RACE=noise_race is not None,
                     NOISE_RACE0=noise_race_p0 is not None)
    num_warps = 8 if R * BLOCK_V >= 4096 else 4
    scalars = (N, V, int(mask_id) if mask_id is not None else -1, 1.0 / V, temperature)
    # the p0 race's first counter, after the token words (N) and the x_1 race's; summed here:
    # as kernel arguments N and the stream's length are int32 up to 2^31 and would wrap
    p0_base = N + (N * V + 3) // 4
    if S == 1:
        # probabilities (the solver's default model output) at 8 warps took 157-187 registers, one
        # block per SM; ptxas fits them in 128 without spilling (sm_90), two blocks
        cap = dict(maxnreg=128) if probs and num_warps == 8 and use_libdevice(logits) and not torch.version.hip else {}
        _jump_step_kernel[(n_rb,)](
            z, z.stride(0), xt, hh, rr1, rr0, p0c, rngp, nt, nr, nr0, out, *scalars, n_tiles, p0_base,
            **meta, **race_meta, R=R, BLOCK_V=BLOCK_V, num_warps=num_warps, **cap)
        return out
    pv = torch.empty((N, S), dtype=torch.float32, device=dev)
    pj = torch.empty((N, S), dtype=torch.int64, device=dev)
    general = source == SOURCE_GENERAL and not final
    pv0 = torch.empty((N, S), dtype=torch.float32, device=dev) if general else pv
    pj0 = torch.empty((N, S), dtype=torch.int64, device=dev) if general else pj
    _jump_split_stage1[(n_rb * S,)](
        z, z.stride(0), xt, hh, rr1, rr0, p0c, rngp, nt, nr, nr0, pv, pj, pv0, pj0, *scalars, n_tiles,
        p0_base, S, tps, **meta, **race_meta, R=R, BLOCK_V=BLOCK_V, num_warps=num_warps)
    R2 = max(1, min(128, next_pow2(N)))
    _jump_split_stage2[(triton.cdiv(N, R2),)](
        xt, hh, rr1, rr0, p0c, rngp, nt, pv, pj, pv0, pj0, out, N, V, scalars[2], scalars[3], S,
        **meta, R=R2, BLOCK_S=max(2, next_pow2(S)), num_warps=4)
    return out
