"""CTMC jump step over a vocabulary, one Euler step of size h (FORMULAS.md §5).

Per row ``i`` (a token; its sample's coefficients expanded to rows by ``fastflow.ops``):

    u(y) = r1 * [y == x_1] + r0 * p0(y)   for y != x_t,   u(x_t) = 0
    r1 = (1 + c) * d_kappa / (1 - kappa),  r0 = c * d_kappa / kappa   (c: div-free weight)
    x_1 = argmax_j (z_j / temperature - log E_j),  E_j = -log1p(-min(fl((w_j + 0.5) 2^-32), 1 - 2^-24))

The token jumps iff ``E < h * total`` or ``h * total = inf`` (E ~ Exp(1) of the row, ``total
= sum_y u(y)``; E is infinite where its 32-bit uniform rounds to 1, with probability 2^-25), so
with probability ``1 - exp(-h total)``, to ``x_1`` with probability ``r1 [x_1 != x_t] /
total`` and otherwise to a draw from ``p0`` restricted to ``y != x_t``. Rows with
``E >= h * tmax``, ``tmax = r1 + r0 (1 - p0(x_t))`` the largest total over ``x_1``, cannot
jump and their logits are never read. ``final`` returns ``x_1`` for every row.

Limits (no NaN): ``r1 = inf`` (kappa = 1) jumps to ``x_1`` when ``x_1 != x_t``;
``r0 = inf`` (kappa = 0, c > 0) jumps to the ``p0`` draw unless ``p0(y) = 0`` for every
``y != x_t`` (mask source, x_t = mask), where that term is 0; ``h * inf = inf`` for h > 0.

A row that may jump but whose race has no finite winner (every key -inf: all logits -inf or
all probabilities 0; or a NaN key) has no distribution to draw ``x_1`` from: its token is
``NO_DRAW`` (-1), which ``fastflow.ops`` turns into a ValueError, as torch.multinomial refuses.

Sources: ``source`` 0 none (r0 unused), 1 uniform over V, 2 the token ``mask_id``,
3 a general ``p0 [V]`` (a race over ``log p0`` excluding x_t).

Random numbers, for ``N`` rows: row ``i`` uses the four words of ``philox(seed, offset + i)``
(jump test, component choice, uniform token); race element ``e = i * V + j`` uses word
``e % 4`` of counter ``offset + N + e // 4``; the p0 race the same at
``offset + N + ceil(N V / 4) + e // 4``. ``noise = (token [N, 3], race [N, V], race_p0
[N, V] or None)`` of uniforms in (0, 1) replaces them for exact parity tests.
"""
from __future__ import annotations

import math

import torch

from .._transforms import vmapped
from . import philox
from ._common import compute_dtype

SOURCE_NONE, SOURCE_UNIFORM, SOURCE_MASK, SOURCE_GENERAL = 0, 1, 2, 3
BELOW_ONE = 0.99999994039535522  # the largest fp32 below 1
NO_DRAW = -1  # the token of a row that may jump but whose race has no finite winner
_CHUNK_ELEMENTS = 1 << 22  # rows are processed in chunks to bound the reference's memory


def _exp1(u):
    return -torch.log1p(-u)


def _times(h, rate):
    """``h * rate`` with ``h * inf = inf`` for h > 0 and 0 for h = 0."""
    return torch.where(torch.isinf(rate), torch.where(h > 0, math.inf, 0.0), h * rate)


def _jumps(e, h, rate):
    """The jump test ``E < h * rate``; an infinite ``h * rate`` jumps even where E is."""
    ht = _times(h, rate)
    return (e < ht) | torch.isinf(ht)


def _race(keys, race_u):
    """argmax_j (keys_j - log E_j); keys of -inf are never drawn."""
    return _race_scored(keys, race_u)[1]


def _race_scored(keys, race_u):
    """The race's winning score and its index (the score is -inf or NaN where nothing can be drawn).
    The uniforms are held below 1 (the top 128 words round to 1 in fp32, whose E is infinite: a
    finite key keeps a finite score)."""
    scores = keys - torch.log(_exp1(race_u.clamp_max(BELOW_ONE)))
    j = scores.argmax(dim=-1)
    return scores.gather(-1, j[:, None]).squeeze(-1), j


def _race_uniforms(rng, stream_base, rows, V):
    e = rows[:, None] * V + torch.arange(V, device=rows.device)
    ctr = rng[1] + stream_base + torch.div(e, 4, rounding_mode="floor")
    words = torch.stack(philox.philox4x32(rng[0], ctr), dim=-1)
    w = words.gather(-1, (e % 4)[..., None]).squeeze(-1)
    return philox.uint_to_open_uniform(w)


def jump_step(logits, x_t, h, r1, r0, p0, source: int, mask_id: int, temperature: float,
              final: bool, probs: bool, rng, noise_token, noise_race, noise_race_p0):
    N, V = logits.shape
    dev = logits.device
    rows = torch.arange(N, device=dev)
    xt = x_t.long()
    if noise_token is not None:
        u_tok = noise_token.float()
        e_tok, u_choice, u_unif = _exp1(u_tok[:, 0]), u_tok[:, 1], u_tok[:, 2]
        y_unif = torch.clamp((u_unif * (V - 1)).floor().long(), max=V - 2) if V > 1 else rows * 0
    else:
        w = torch.stack(philox.philox4x32(rng[0], rng[1] + rows), dim=-1)
        e_tok = _exp1(philox.uint_to_open_uniform(w[:, 0]))
        u_choice = philox.uint_to_uniform(w[:, 1])
        y_unif = (w[:, 2] * (V - 1)) >> 32
    y_unif = y_unif + (y_unif >= xt).long()  # uniform over y != x_t

    if source == SOURCE_UNIFORM:
        p0_xt = torch.full((N,), 1.0 / V, device=dev)
    elif source == SOURCE_MASK:
        p0_xt = (xt == mask_id).float()
    elif source == SOURCE_GENERAL:
        p0_xt = p0.float()[xt]
    else:
        p0_xt = torch.ones(N, device=dev)
    # r0 * (1 - p0(x_t)) with 0 * inf = 0: no p0 mass off x_t means no p0 rate
    rate0 = torch.where(p0_xt >= 1.0, 0.0, r0 * (1.0 - p0_xt))
    tmax = r1 + rate0
    may_jump = torch.ones(N, dtype=torch.bool, device=dev) if final else _jumps(e_tok, h, tmax)

    def step_rows(idx):
        """The new tokens of rows ``idx`` (all of which may jump)."""
        z = logits[idx].to(compute_dtype(logits))
        # a device tensor, not a Python number: CUDA turns division by a CPU scalar into a
        # multiplication by its reciprocal (one bit off), the kernels divide
        keys = (torch.log(z) if probs else z) / torch.tensor(temperature, dtype=z.dtype, device=dev)
        ru = noise_race[idx].float() if noise_race is not None else _race_uniforms(rng, N, idx, V)
        score, x1 = _race_scored(keys, ru)
        drawn = score > -math.inf  # (False for NaN): no distribution to draw x_1 from, no token
        if final:
            return torch.where(drawn, x1, NO_DRAW)
        ri1 = torch.where(x1 != xt[idx], r1[idx], 0.0)
        total = ri1 + rate0[idx]
        jump = _jumps(e_tok[idx], h[idx], total)
        pick_x1 = torch.where(torch.isinf(ri1), True,
                              torch.where(torch.isinf(rate0[idx]), False, u_choice[idx] * total < ri1))
        if source == SOURCE_UNIFORM:
            y0 = y_unif[idx]
        elif source == SOURCE_MASK:
            y0 = torch.full_like(x1, mask_id)
        elif source == SOURCE_GENERAL:
            ru0 = (noise_race_p0[idx].float() if noise_race_p0 is not None
                   else _race_uniforms(rng, N + (N * V + 3) // 4, idx, V))
            keys0 = torch.where(torch.arange(V, device=dev) == xt[idx][:, None], -math.inf,
                                torch.log(p0.float()))
            y0 = _race(keys0, ru0)
        else:
            y0 = x1
        return torch.where(drawn, torch.where(jump, torch.where(pick_x1, x1, y0), xt[idx]), NO_DRAW)

    chunk = max(1, _CHUNK_ELEMENTS // max(V, 1))
    if vmapped():  # no rows picked by their values: every row, the same tokens where it may jump
        return torch.cat([torch.where(may_jump[s:s + chunk], step_rows(rows[s:s + chunk]), xt[s:s + chunk])
                          for s in range(0, N, chunk)]).to(x_t.dtype)
    new = xt.clone()
    cand = may_jump.nonzero().squeeze(-1)
    for start in range(0, cand.numel(), chunk):
        idx = cand[start:start + chunk]
        new[idx] = step_rows(idx)
    return new.to(x_t.dtype)
