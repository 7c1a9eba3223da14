"""Public continuous-path ops: ``affine_path_sample`` and the fused ``affine_path_loss``.

    x_t  = a x_1 + b x_0 + s eps                         (x_0 = None: Gaussian drawn in-kernel)
    loss = reduce_b( w_b * sum_i mask (v - (c x_1 + d x_0 + e eps))^2 )

The loss kernel returns the per-sample sums and, when a gradient is needed, writes it in the
same pass (the target is never stored, the noise is regenerated once); weights and the
reduction's divisor are folded into its per-sample scale, so ``loss.backward()`` of a mean
costs no further pass (see ``_fused_grad``).
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .. import _checks, _memory
from . import _fused_grad
from ._registry import direct, eager_function, pick, run, transformed
from .step_combine import dot, generated, scaled

REDUCTIONS = ("mean", "sum", "per_sample", "none")


@torch.library.custom_op("fastflow::affine_path_sample", mutates_args=())
def _sample(x_1: Tensor, x_0: Optional[Tensor], a: Tensor, b: Tensor, s: Optional[Tensor],
            rng: Tensor, backend: str) -> Tensor:
    return run("affine_path_sample", backend, x_1, x_0, a, b, s, rng)


@_sample.register_fake
def _(x_1, x_0, a, b, s, rng, backend):
    return torch.empty_like(x_1, memory_format=torch.contiguous_format)


def _sample_setup(ctx, inputs, output):
    """Saves what the requested gradients read and nothing else (see ``_loss_setup``)."""
    x_1, x_0, a, b, s, rng, _ = inputs
    need = ctx.needs_input_grad
    ctx.dtypes = (x_1.dtype, None if x_0 is None else x_0.dtype)
    ctx.save_for_backward(x_1 if need[2] else None, x_0 if need[3] else None, a if need[0] else None,
                          b if need[1] else None, rng if need[3] or need[4] else None)


def _sample_bwd(ctx, g):
    """x_t is linear in (x_1, x_0) with per-sample (a, b), and in (a, b, s) with the data."""
    x_1, x_0, a, b, rng = ctx.saved_tensors
    need, (x1_dtype, x0_dtype) = ctx.needs_input_grad, ctx.dtypes
    db = dot(g, x_0 if x_0 is not None else generated(rng, 0, g)) if need[3] else None
    ds = dot(g, generated(rng, 1, g)) if need[4] else None
    return (scaled(g, a, x1_dtype) if need[0] else None, scaled(g, b, x0_dtype) if need[1] else None,
            dot(g, x_1) if need[2] else None, db, ds, None, None)


# flow_matching's sample is differentiable in x_1 (an encoder's output, say) and x_0
_sample.register_autograd(_sample_bwd, setup_context=_sample_setup)


def _loss_impl(v, x_1, x_0, c, d, e, rng, mask, grad_scale, need_grad, backend):
    """(sq_sum * grad_scale, the gradient buffer (empty unless need_grad), sq_sum)."""
    dv = _memory.empty_like(v) if need_grad else None
    sq_sum = run("affine_path_loss", backend, v, x_1, x_0, c, d, e, rng, mask,
                 grad_scale if need_grad else None, dv)
    return sq_sum * grad_scale, dv if dv is not None else v.new_empty(0), sq_sum


@torch.library.custom_op("fastflow::affine_path_loss", mutates_args=())
def _loss(v: Tensor, x_1: Tensor, x_0: Optional[Tensor], c: Tensor, d: Tensor, e: Optional[Tensor],
          rng: Tensor, mask: Optional[Tensor], grad_scale: Tensor, need_grad: bool,
          backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _loss_impl(v, x_1, x_0, c, d, e, rng, mask, grad_scale, need_grad, backend)


@_loss.register_fake
def _(v, x_1, x_0, c, d, e, rng, mask, grad_scale, need_grad, backend):
    dv = torch.empty_like(v, memory_format=torch.contiguous_format) if need_grad else v.new_empty(0)
    sums = v.new_empty((v.shape[0],), dtype=torch.float32)
    return sums, dv, torch.empty_like(sums)


def _loss_setup(ctx, inputs, output):
    """Saves what the backward reads for the inputs that need a gradient, and nothing else: data
    made under inference_mode (a frozen encoder's latents) cannot be saved, and a data buffer
    refilled before the backward would fail autograd's version check for nothing."""
    v, x_1, x_0, c, d, e, rng = inputs[:7]
    need = ctx.needs_input_grad
    keep = lambda t, *which: t if any(need[i] for i in which) else None  # noqa: E731
    _fused_grad.setup(ctx, output[1], inputs[-1], v.shape, len(inputs), keep(x_1, 1, 3, 4, 5), keep(x_0, 2, 4),
                      keep(c, 1), keep(d, 2), keep(rng, 4, 5), keep(output[2], 8))
    ctx.has_e = e is not None


def _loss_bwd(ctx, grad_weighted, _grad_of_buffer, _grad_of_sums):
    """target = c x_1 + d x_0 + e eps, so with dv = d loss / d v: d loss / d x_1 = -c dv,
    d loss / d c = -<dv, x_1> (per sample), likewise for x_0 / d and eps / e; and the weighted
    sums are linear in grad_scale (which carries a learnable weight, if any)."""
    grads = [None] * ctx.n_inputs
    if grad_weighted is None:
        return tuple(grads)
    need = ctx.needs_input_grad
    wrote = any(need[:6])  # then the forward wrote the gradient buffer
    if wrote:
        _fused_grad.claim(ctx)
    buffer, x_1, x_0, c, d, rng, sq_sum = ctx.saved_tensors
    if need[8]:
        grads[8] = grad_weighted * sq_sum
    if wrote:
        dv = _fused_grad.scaled_grad(ctx, grad_weighted, buffer)
        grads[0] = dv if need[0] else None
        grads[1] = scaled(dv, -c, x_1.dtype) if need[1] else None
        grads[2] = scaled(dv, -d, x_0.dtype) if x_0 is not None and need[2] else None
        grads[3] = -dot(dv, x_1) if need[3] else None
        grads[4] = -dot(dv, x_0 if x_0 is not None else generated(rng, 0, x_1)) if need[4] else None
        grads[5] = -dot(dv, generated(rng, 1, x_1)) if ctx.has_e and need[5] else None
    return tuple(grads)


_loss.register_autograd(_loss_bwd, setup_context=_loss_setup)
_loss_eager = eager_function(_loss_impl, _loss_setup, _loss_bwd)


@functools.lru_cache(maxsize=64)
def _reciprocal_fp32(n: int) -> float:
    """``1 / n`` rounded once to fp32, as an fp32 division by ``n`` gives it (a loop's sizes repeat)."""
    return float(np.float32(1) / np.float32(n))


def _check_pair(x_1, x_0, name_1="x_1", name_0="x_0"):
    _checks.tensor(name_1, x_1, _checks.REAL_DTYPES, ndim_min=1)
    if x_0 is not None:
        _checks.tensor(name_0, x_0, _checks.REAL_DTYPES)
        _checks.same_shape(name_0, x_0, x_1, name_1)
    if x_1.shape[0] == 0 or x_1.numel() == 0:
        raise ValueError(f"{name_1}: expected a non-empty batch, got shape {tuple(x_1.shape)}")


def coefficients(like: Tensor, rng: Optional[Tensor], **named) -> tuple:
    """The public ops' per-sample coefficients (floats or scalar / ``[B]`` tensors) as ``[B]``
    (fp32; float64 for float64 data) on ``like``'s device, NaN and infinities refused, and their
    ``rng`` checked. The path classes compute theirs from checked times and call the
    ``_``-prefixed entries."""
    batch = like.shape[0]
    out = tuple(None if v is None else _checks.coefficient(k, v, batch, like, finite=True) for k, v in named.items())
    return out + (None if rng is None else _checks.rng("rng", rng, like),)


def affine_path_sample(x_1: Tensor, x_0: Optional[Tensor], a, b, s=None, rng: Optional[Tensor] = None,
                       backend: Optional[str] = None) -> Tensor:
    """``x_t = a x_1 + b x_0 + s eps``; ``a, b, s`` floats or ``[B]`` tensors (per sample), ``rng``
    the (seed, offset) the noise is drawn from (see the reference op)."""
    _check_pair(x_1, x_0)
    a, b, s, rng = coefficients(_checks.widest(x_1, x_0), rng, a=a, b=b, s=s)
    return _affine_path_sample(x_1, x_0, a, b, s, rng, backend)


def _affine_path_sample(x_1: Tensor, x_0: Optional[Tensor], a: Tensor, b: Tensor, s: Optional[Tensor] = None,
                        rng: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """``affine_path_sample`` with ``[B]`` coefficients computed by the caller. ``x_t`` takes the
    dtype ``x_1`` and ``x_0`` promote to, as torch's arithmetic (flow_matching's) gives it: the
    kernels write ``x_1``'s, so a narrower ``x_1`` is widened first (one more pass, for mixed
    dtypes only)."""
    _check_pair(x_1, x_0)
    _checks.one_per_sample(x_1.shape[0], a=a, b=b, s=s)
    if (x_0 is None or s is not None) and rng is None:
        raise ValueError("rng: required when x_0 is None or s is given (noise is drawn)")
    composed, wide = transformed(x_1, x_0, a, b, s), _checks.wide(x_1=x_1, x_0=x_0)
    if x_0 is not None and torch.promote_types(x_1.dtype, x_0.dtype) != x_1.dtype:
        x_1 = x_1.to(torch.promote_types(x_1.dtype, x_0.dtype))
    if composed or wide:  # plain reference math
        return run("affine_path_sample", pick("affine_path_sample", x_1, backend, composed, wide), x_1, x_0, a, b, s, rng)
    name = pick("affine_path_sample", x_1, backend)
    if direct(x_1, x_0, a, b, s, rng):
        return run("affine_path_sample", name, x_1, x_0, a, b, s, rng)
    return _sample(x_1, x_0, a, b, s, rng, name)


def affine_path_loss(v: Tensor, x_1: Tensor, x_0: Optional[Tensor], c, d, e=None, rng: Optional[Tensor] = None,
                     mask: Optional[Tensor] = None, weight=None, reduction: str = "mean",
                     backend: Optional[str] = None) -> Tensor:
    """Fused ``w_b * mask * (v - (c x_1 + d x_0 + e eps))^2`` reduced as asked.

    ``c, d, e`` floats or ``[B]`` tensors (per sample). ``mean`` divides by the number of
    (unmasked) elements, ``sum`` adds, ``per_sample`` gives ``[B]`` per-sample means, ``none``
    the element-wise losses (the target is then materialised once). ``weight`` is per sample,
    a float or ``[B]``.
    """
    _check_pair(x_1, x_0)
    _checks.tensor("v", v, _checks.REAL_DTYPES)
    c, d, e, rng = coefficients(_checks.widest(x_1, x_0, v), rng, c=c, d=d, e=e)
    return _affine_path_loss(v, x_1, x_0, c, d, e, rng, mask, weight, reduction, backend)


def _affine_path_loss(v: Tensor, x_1: Tensor, x_0: Optional[Tensor], c: Tensor, d: Tensor,
                      e: Optional[Tensor] = None, rng: Optional[Tensor] = None,
                      mask: Optional[Tensor] = None, weight=None, reduction: str = "mean",
                      backend: Optional[str] = None) -> Tensor:
    """``affine_path_loss`` with ``[B]`` coefficients computed by the caller."""
    _checks.choice("reduction", reduction, REDUCTIONS)
    _check_pair(x_1, x_0)
    _checks.one_per_sample(x_1.shape[0], c=c, d=d, e=e)
    _checks.tensor("v", v, _checks.REAL_DTYPES)
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
    w = None if weight is None else _checks.coefficient("weight", weight, batch, _checks.widest(v, x_1, x_0),
                                                        finite=True)
    composed, wide = transformed(v, x_1, x_0, c, d, e, w), _checks.wide(v=v, x_1=x_1, x_0=x_0)
    backend = pick("affine_path_loss", v, backend, composed, wide)
    composed = composed or wide is not None  # plain reference math, no fused gradient
    dtype = torch.float64 if wide else torch.float32  # the arithmetic's, and the loss's
    if reduction == "none":
        # the target in the arithmetic's dtype, as the fused reductions compute it (a bf16 target
        # rounds away the residual of a model close to it)
        target = _affine_path_sample(x_1.to(dtype), x_0, c, d, e, rng, backend)
        loss = (v.to(dtype) - target.to(dtype)).square()
        if mask is not None:
            loss = loss * mask
        return loss if w is None else loss * w.view(-1, *([1] * (loss.dim() - 1)))
    if reduction == "mean":
        divisor = mask.sum().clamp_min(1) if mask is not None else v.numel()
    elif reduction == "per_sample":
        divisor = mask.reshape(batch, -1).sum(1).clamp_min(1) if mask is not None else v[0].numel()
    else:
        divisor = 1
    fold = _fused_grad.fold_divisor(v.dtype)
    if w is None and type(divisor) is int and not torch.compiler.is_compiling():
        # eager: one fill, 1 / divisor rounded once to fp32 as the division below gives it (a
        # traced graph divides instead: the element count may be a symbol of a dynamic batch)
        inverse = 1.0 / divisor if wide else _reciprocal_fp32(divisor)
        scale = torch.full((batch,), inverse if fold else 1.0, dtype=dtype, device=v.device)
    else:
        scale = torch.ones(batch, dtype=dtype, device=v.device) if w is None else w.to(dtype)
        if fold:
            scale = scale / divisor
    need_grad = not composed and torch.is_grad_enabled() and any(  # (composed: autograd differentiates)
        t is not None and t.requires_grad for t in (v, x_1, x_0, c, d, e))
    args = (v, x_1, x_0, c, d, e, rng, mask, scale, need_grad, backend)
    if composed:
        weighted, _, _ = _loss_impl(*args)
    elif direct(v, x_1, x_0, c, d, e, rng, mask, scale, autograd=True):
        if fold and reduction != "per_sample":  # the loss is the weighted sums' sum
            return _loss_eager(*args, total=True)
        weighted, _, _ = _loss_eager(*args)
    else:
        weighted, _, _ = _loss(*args)
    if not fold and reduction != "sum":
        weighted = weighted / divisor
    return weighted if reduction == "per_sample" else weighted.sum()
