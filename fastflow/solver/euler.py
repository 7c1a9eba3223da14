"""``euler_step``: ``x + h ((1 + w) v - w v_uncond)`` in one kernel (FORMULAS.md §3)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .. import _checks
from ..ops.step_combine import step_combine


def euler_step(x: Tensor, v: Tensor, h, v_uncond: Optional[Tensor] = None, guidance_scale=0.0,
               out: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """One Euler step; ``h`` and ``guidance_scale`` are floats or per-sample ``[B]``.

    With ``v_uncond`` the velocity is classifier-free guided, ``(1 + w) v - w v_uncond``;
    ``out=x`` updates in place.
    """
    names = ("x", "v", "v_uncond")
    if v_uncond is None and _checks.fp32_float(h) and type(guidance_scale) in (int, float) and guidance_scale == 0:
        return step_combine(x, v, 1.0, h, out=out, backend=backend, _names=names)  # checks x and v itself
    _checks.tensor("x", x, _checks.REAL_DTYPES, ndim_min=1)
    batch = x.shape[0]
    h = _checks.scalar_or_coefficient("h", h, batch, x, finite=True)
    if v_uncond is None:
        if not (isinstance(guidance_scale, (int, float)) and guidance_scale == 0):
            raise ValueError("v_uncond: required when guidance_scale is not 0")
        return step_combine(x, v, 1.0, h, out=out, backend=backend, _names=names)
    w = _checks.scalar_or_coefficient("guidance_scale", guidance_scale, batch, x, finite=True)
    # (their products may overflow where neither does: named here, not as step_combine's B / C)
    B, C = (_checks.scalar_or_coefficient("h, guidance_scale", c, batch, x, finite=True) for c in (h * (1 + w), -h * w))
    return step_combine(x, v, 1.0, B, q=v_uncond, C=C, out=out, backend=backend, _names=names)
