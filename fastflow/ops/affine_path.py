"""Public continuous-path ops: ``affine_path_sample`` and the fused ``affine_path_loss``.

    x_t  = a x_1 + b x_0 + s eps                         (x_0 = None: Gaussian drawn in-kernel)
    loss = reduce_b( w_b * sum_i mask (v - (c x_1 + d x_0 + e eps))^2 )

The loss kernel returns the per-sample sums; weights and reductions are ``[B]`` torch ops,
and the backward recomputes the target in one pass (it is never stored).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _checks
from ._registry import pick, run

REDUCTIONS = ("mean", "sum", "per_sample", "none")


@torch.library.custom_op("fastflow::affine_path_sample", mutates_args=())
def _sample(x_1: Tensor, x_0: Optional[Tensor], a: Tensor, b: Tensor, s: Optional[Tensor],
            rng: Tensor, backend: str) -> Tensor:
    return run("affine_path_sample", backend, x_1, x_0, a, b, s, rng)


@_sample.register_fake
def _(x_1, x_0, a, b, s, rng, backend):
    return torch.empty_like(x_1, memory_format=torch.contiguous_format)


@torch.library.custom_op("fastflow::affine_path_loss", mutates_args=())
def _loss(v: Tensor, x_1: Tensor, x_0: Optional[Tensor], c: Tensor, d: Tensor, e: Optional[Tensor],
          rng: Tensor, mask: Optional[Tensor], backend: str) -> Tensor:
    return run("affine_path_loss", backend, v, x_1, x_0, c, d, e, rng, mask)


@_loss.register_fake
def _(v, x_1, x_0, c, d, e, rng, mask, backend):
    return v.new_empty((v.shape[0],), dtype=torch.float32)


@torch.library.custom_op("fastflow::affine_path_loss_backward", mutates_args=())
def _loss_backward(grad_scale: Tensor, v: Tensor, x_1: Tensor, x_0: Optional[Tensor], c: Tensor,
                   d: Tensor, e: Optional[Tensor], rng: Tensor, mask: Optional[Tensor],
                   backend: str) -> Tensor:
    return run("affine_path_loss_backward", backend, grad_scale, v, x_1, x_0, c, d, e, rng, mask)


@_loss_backward.register_fake
def _(grad_scale, v, x_1, x_0, c, d, e, rng, mask, backend):
    return torch.empty_like(v, memory_format=torch.contiguous_format)


def _loss_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:-1])
    ctx.backend = inputs[-1]


def _per_sample(coef, like):
    return coef.view(-1, *([1] * (like.dim() - 1)))


def _loss_bwd(ctx, grad):
    v, x_1, x_0, c, d, e, rng, mask = ctx.saved_tensors
    dv = _loss_backward(grad.float().contiguous(), v, x_1, x_0, c, d, e, rng, mask, ctx.backend)
    need = ctx.needs_input_grad
    dx_1 = (-_per_sample(c, dv) * dv).to(x_1.dtype) if need[1] else None
    dx_0 = (-_per_sample(d, dv) * dv).to(x_0.dtype) if x_0 is not None and need[2] else None
    return dv if need[0] else None, dx_1, dx_0, None, None, None, None, None, None


_loss.register_autograd(_loss_bwd, setup_context=_loss_setup)


def _check_pair(x_1, x_0, name_1="x_1", name_0="x_0"):
    _checks.tensor(name_1, x_1, _checks.FLOAT_DTYPES, ndim_min=1)
    if x_0 is not None:
        _checks.tensor(name_0, x_0, _checks.FLOAT_DTYPES)
        _checks.same_shape(name_0, x_0, x_1, name_1)
    if x_1.shape[0] == 0 or x_1.numel() == 0:
        raise ValueError(f"{name_1}: expected a non-empty batch, got shape {tuple(x_1.shape)}")


def affine_path_sample(x_1: Tensor, x_0: Optional[Tensor], a: Tensor, b: Tensor,
                       s: Optional[Tensor] = None, rng: Optional[Tensor] = None,
                       backend: Optional[str] = None) -> Tensor:
    """``x_t = a x_1 + b x_0 + s eps`` with fp32 ``[B]`` coefficients (see the reference op)."""
    _check_pair(x_1, x_0)
    if (x_0 is None or s is not None) and rng is None:
        raise ValueError("rng: required when x_0 is None or s is given (noise is drawn)")
    return _sample(x_1, x_0, a, b, s, rng, pick("affine_path_sample", x_1, backend))


def affine_path_loss(v: Tensor, x_1: Tensor, x_0: Optional[Tensor], c: Tensor, d: Tensor,
                     e: Optional[Tensor] = None, rng: Optional[Tensor] = None,
                     mask: Optional[Tensor] = None, weight=None, reduction: str = "mean",
                     backend: Optional[str] = None) -> Tensor:
    """Fused ``w_b * mask * (v - (c x_1 + d x_0 + e eps))^2`` reduced as asked.

    ``mean`` divides by the number of (unmasked) elements, ``sum`` adds, ``per_sample`` gives
    ``[B]`` per-sample means, ``none`` the element-wise losses (the target is then
    materialised once). ``weight`` is per sample, a float or ``[B]``.
    """
    _checks.choice("reduction", reduction, REDUCTIONS)
    _check_pair(x_1, x_0)
    _checks.tensor("v", v, _checks.FLOAT_DTYPES)
    _checks.same_shape("v", v, x_1, "x_1")
    if (x_0 is None or e is not None) and rng is None:
        raise ValueError("rng: required when x_0 is None or e is given (noise is regenerated)")
    batch = v.shape[0]
    if mask is not None:
        _checks.tensor("mask", mask, (torch.bool,))
        _checks.same_device("mask", mask, v)
        try:
            mask = mask.expand_as(v)
        except RuntimeError:
            raise ValueError(f"mask: shape {tuple(mask.shape)} does not broadcast to v's {tuple(v.shape)}") from None
    w = None if weight is None else _checks.coefficient("weight", weight, batch, v)
    backend = pick("affine_path_loss", v, backend)
    if reduction == "none":
        target = _sample(x_1, x_0, c, d, e, rng, backend)
        loss = (v.float() - target.float()).square()
        if mask is not None:
            loss = loss * mask
        return loss if w is None else loss * _per_sample(w, loss)
    sq_sum = _loss(v, x_1, x_0, c, d, e, rng, mask, backend)
    weighted = sq_sum if w is None else sq_sum * w
    per_elem = v[0].numel()
    if reduction == "sum":
        return weighted.sum()
    if reduction == "per_sample":
        count = mask.reshape(batch, -1).sum(1) if mask is not None else per_elem
        return weighted / (count.clamp_min(1) if mask is not None else count)
    count = mask.sum().clamp_min(1) if mask is not None else v.numel()
    return weighted.sum() / count
