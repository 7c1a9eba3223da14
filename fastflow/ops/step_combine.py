"""Public ``step_combine``: ``x_next = A x + B p + C q + N z``, the kernel of every ODE/SDE step."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _checks
from ._registry import pick, run


@torch.library.custom_op("fastflow::step_combine", mutates_args=())
def _step(x: Tensor, p: Tensor, q: Optional[Tensor], A: Tensor, B: Tensor, C: Optional[Tensor],
          N: Optional[Tensor], rng: Optional[Tensor], noise: Optional[Tensor], backend: str) -> Tensor:
    return run("step_combine", backend, x, p, q, A, B, C, N, rng, noise, None)


@_step.register_fake
def _(x, p, q, A, B, C, N, rng, noise, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("fastflow::step_combine_out", mutates_args=("out",))
def _step_out(x: Tensor, p: Tensor, q: Optional[Tensor], A: Tensor, B: Tensor, C: Optional[Tensor],
              N: Optional[Tensor], rng: Optional[Tensor], noise: Optional[Tensor], out: Tensor,
              backend: str) -> None:
    run("step_combine", backend, x, p, q, A, B, C, N, rng, noise, out)


@_step_out.register_fake
def _(x, p, q, A, B, C, N, rng, noise, out, backend):
    return None


def step_combine(x: Tensor, p: Tensor, A, B, q: Optional[Tensor] = None, C=None, N=None,
                 rng: Optional[Tensor] = None, noise: Optional[Tensor] = None,
                 out: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """``A x + B p + C q + N z``; coefficients are floats or ``[B]`` tensors (per sample).

    ``z`` is ``noise`` when given, else drawn from ``rng``. ``out`` may be ``x`` (in place).
    """
    _checks.tensor("x", x, _checks.FLOAT_DTYPES, ndim_min=1)
    batch = x.shape[0]
    _checks.tensor("p", p, _checks.FLOAT_DTYPES)
    _checks.same_shape("p", p, x, "x")
    if q is not None:
        _checks.tensor("q", q, _checks.FLOAT_DTYPES)
        _checks.same_shape("q", q, x, "x")
        if C is None:
            raise ValueError("C: required when q is given")
    if noise is not None:
        _checks.tensor("noise", noise, _checks.FLOAT_DTYPES)
        _checks.same_shape("noise", noise, x, "x")
    coef = [_checks.coefficient(n, v, batch, x) if v is not None else None
            for n, v in (("A", A), ("B", B), ("C", C if q is not None else None), ("N", N))]
    if coef[3] is not None and noise is None and rng is None:
        raise ValueError("rng: required when N is given without noise")
    name = pick("step_combine", x, backend)
    if out is None:
        return _step(x, p, q, *coef, rng, noise, name)
    _checks.tensor("out", out, (x.dtype,))
    _checks.same_shape("out", out, x, "x")
    _step_out(x, p, q, *coef, rng, noise, out, name)
    return out
