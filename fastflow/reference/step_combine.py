"""Step combine: ``x_next = A * x + B * p + C * q + N * z`` (FORMULAS.md §3).

Every ODE / SDE step of fastflow (Euler, CFG, prediction conversion, midpoint, Heun, DDPM,
DDIM) is this op with per-sample fp32 ``[B]`` coefficients built in ``fastflow.solver``.
``q``/``C`` and ``N`` may be None. ``z`` is ``noise`` when given, else Gaussian stream 0 of
``rng`` (``ceil(numel / 4)`` counters). ``out`` may alias ``x`` (in-place step).
"""
from __future__ import annotations

from ._common import compute_dtype, gaussian_like, per_sample


def step_combine(x, p, q, A, B, C, N, rng, noise, out=None):
    dtype = compute_dtype(x, p, q, noise, A)
    xf = x.to(dtype)
    y = per_sample(A, xf) * xf + per_sample(B, xf) * p.to(dtype)
    if q is not None:
        y = y + per_sample(C, xf) * q.to(dtype)
    if N is not None:
        z = (noise if noise is not None else gaussian_like(rng, 0, x)).to(dtype)
        y = y + per_sample(N, xf) * z
    if out is None:
        return y.to(x.dtype).contiguous()  # (as the fused ops and the fake kernels)
    return out.copy_(y)
