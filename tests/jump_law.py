"""The exact one-step law of the CTMC jump step for a small vocabulary, by enumeration
(FORMULAS.md §5): the oracle of every backend's statistical jump-step tests."""
import math

import torch


def next_token_law(logits, x_t, h, kappa, d_kappa, div_free, p0, temperature=1.0, final=False):
    """P(next = y) for one token: sum over x_1 ~ softmax(z / T) of the jump law given x_1."""
    p = torch.softmax(logits.double() / temperature, -1)
    V = p.numel()
    if final:
        return p
    lam = math.inf if kappa >= 1 else d_kappa / (1 - kappa)
    r1 = (1 + div_free) * lam
    r0 = 0.0 if div_free == 0 else (math.inf if kappa == 0 else div_free * d_kappa / kappa)
    p0 = p0.double()
    law = torch.zeros(V, dtype=torch.float64)
    for x1 in range(V):
        u = torch.zeros(V, dtype=torch.float64)
        if x1 != x_t:
            u[x1] += r1
        if r0 > 0:
            u += torch.where(p0 > 0, r0 * p0, torch.zeros_like(p0))
        u[x_t] = 0
        total = float(u.sum())
        if total == 0:
            law[x_t] += p[x1]
            continue
        if math.isinf(total):
            inf = torch.isinf(u)
            jump_to = inf.double() / inf.sum()
            p_jump = 1.0
        else:
            jump_to = u / total
            p_jump = 1 - math.exp(-h * total)
        law += p[x1] * p_jump * jump_to
        law[x_t] += p[x1] * (1 - p_jump)
    return law
