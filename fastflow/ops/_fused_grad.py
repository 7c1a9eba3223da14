"""Autograd of the fused losses that write their gradient in the forward pass.

A fused loss op returns ``(weighted, grad)``: per-row (or per-sample) losses already
multiplied by ``grad_scale``, and the gradient of ``weighted.sum()`` with respect to its
first input, computed in the same pass over memory. The backward then only scales the rows
of that buffer by the upstream gradient ``g``: in place in eager mode (rows with ``g == 1``,
the usual ``loss.backward()`` of a mean, are not touched at all), out of place while
tracing (a compiled graph may not mutate a saved forward output).

fp16 note: the callers fold the reduction's divisor into ``grad_scale`` only for fp32 / bf16
inputs. An fp16 gradient pre-divided by a large element count would fall into fp16's
subnormal range before a loss scaler could lift it, so for fp16 the divisor is a torch op
after the fused op and reaches the buffer through ``g`` (one scaling pass). The generalized
KL's jump coefficient (unbounded as t -> 1) goes the same way for fp16, so that buffer holds
values within [-2, 2]. The path loss's buffer holds ``2 (v - target)``: with fp16 ``v`` it
overflows where |v - target| > 32752 (fp16 math would too; torch's over fp32 data, an
autocast model's, would not), which only unnormalised data reach.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch._C import _functorch

from ._registry import direct, run


@torch.library.custom_op("fastflow::scale_rows", mutates_args=("grad",))
def _scale_rows(grad: Tensor, g: Tensor, backend: str) -> None:
    run("scale_rows", backend, grad, g)


@_scale_rows.register_fake
def _(grad, g, backend):
    return None


def fold_divisor(dtype: torch.dtype) -> bool:
    """Whether the reduction's divisor may be folded into the forward-written gradient."""
    return dtype != torch.float16


def setup(ctx, grad: Tensor, backend: str, shape, n_inputs: int, *extra) -> None:
    """``setup_context`` body: keep the gradient buffer (first saved tensor) and ``extra``."""
    ctx.save_for_backward(grad, *extra)
    ctx.backend = backend
    ctx.shape = shape
    ctx.n_inputs = n_inputs
    ctx.consumed = False
    # the gradient output never receives a gradient itself: without this, autograd would
    # hand the backward a zero-filled tensor of the buffer's size on every call
    ctx.set_materialize_grads(False)


def claim(ctx) -> None:
    """Marks the saved gradient as used; call before ``ctx.saved_tensors`` in a backward."""
    if ctx.consumed:
        raise RuntimeError("fastflow's fused losses write their gradient in the forward pass; "
                           "backward through them runs once (retain_graph is not supported)")
    ctx.consumed = True


def scaled_grad(ctx, grad_weighted: Tensor, grad: Tensor) -> Tensor:
    """The saved gradient buffer ``grad`` (rows first) with row ``i`` scaled by
    ``grad_weighted[i]`` (a scalar: every row alike), in ``ctx.shape`` (after ``claim``; unpack
    every saved tensor first: the scaling is in place)."""
    rows = grad.view(grad.shape[0], -1)
    if torch.compiler.is_compiling() or _tracing(grad) or _functorch.is_legacy_batchedtensor(grad_weighted):
        # (the last: autograd.grad(is_grads_batched=True), whose batched upstream gradient no kernel reads)
        g = grad_weighted.float().expand(rows.shape[0])
        rows = (rows.float() * g[:, None]).to(rows.dtype)  # fp32: 1 / divisor is subnormal in fp16
        return rows.view(ctx.shape)
    if torch.is_grad_enabled():  # create_graph=True: the stored gradient is not differentiable
        raise RuntimeError("fastflow's fused losses do not support double backward (create_graph=True): "
                           "the gradient is a buffer written in the forward pass")
    if not _all_one_on_cpu(grad_weighted):  # else loss.backward() of a mean or sum: nothing to do
        g = grad_weighted.float().expand(rows.shape[0]).contiguous()
        if direct(rows, g):
            run("scale_rows", ctx.backend, rows, g)
            torch.autograd.graph.increment_version(rows)
        else:
            _scale_rows(rows, g, ctx.backend)
    # a fresh view unless the buffer is already one of its own (the logits' rows, overwritten,
    # are a view made without grad mode, which autograd may not hand on); detached: overwritten
    # logits are a forward output, and a hook that keeps the gradient must not keep the graph
    out = grad if grad.shape == ctx.shape and not grad._is_view() else grad.view(ctx.shape)
    return out.detach() if out.requires_grad else out


def _all_one_on_cpu(g: Tensor) -> bool:
    """``g`` is one value (a scalar, or one broadcast: the gradient of ``.sum()``) on the CPU,
    equal to 1: read without a device sync, and the scaling call is skipped (the kernel would
    skip every row)."""
    if type(g) is not Tensor or not g.is_cpu:
        return False
    if g.dim() == 0:
        return g.item() == 1.0
    return g.dim() == 1 and g.stride(0) == 0 and g.numel() > 0 and g[0].item() == 1.0


def _tracing(t: Tensor) -> bool:
    if type(t) is Tensor and not torch._is_functional_tensor(t):
        return False  # a plain tensor is neither fake nor a wrapper subclass
    from torch._subclasses.fake_tensor import is_fake
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass
    return is_fake(t) or is_traceable_wrapper_subclass(t) or torch._is_functional_tensor(t)
