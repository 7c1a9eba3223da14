"""Public ``step_combine``: ``x_next = A x + B p + C q + N z``, the kernel of every ODE/SDE step."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _checks, backends
from ._registry import direct, pick, run, transformed


@torch.library.custom_op("fastflow::step_combine", mutates_args=())
def _step(x: Tensor, p: Tensor, q: Optional[Tensor], A: Tensor, B: Tensor, C: Optional[Tensor],
          N: Optional[Tensor], rng: Optional[Tensor], noise: Optional[Tensor], backend: str) -> Tensor:
    return run("step_combine", backend, x, p, q, A, B, C, N, rng, noise, None)


@_step.register_fake
def _(x, p, q, A, B, C, N, rng, noise, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _step_setup(ctx, inputs, output):
    """Saves what the requested gradients read and nothing else (as the path loss: an input
    refilled before the backward would fail autograd's version check for nothing)."""
    x, p, q, A, B, C, N, rng, noise, _ = inputs
    need = ctx.needs_input_grad
    keep = lambda t, *which: t if any(need[i] for i in which) else None  # noqa: E731
    ctx.dtypes = tuple(None if t is None else t.dtype for t in (x, p, q, noise))
    ctx.save_for_backward(keep(x, 3), keep(p, 4), keep(q, 5), keep(A, 0), keep(B, 1), keep(C, 2), keep(N, 8),
                          keep(rng, 6), keep(noise, 6))


def scaled(g: Tensor, c: Tensor, dtype) -> Tensor:
    """``c_b * g`` (the gradient of ``c_b * t`` with respect to ``t``) in ``dtype``."""
    return (g * c.view(-1, *([1] * (g.dim() - 1)))).to(dtype)


def dot(g: Tensor, t: Tensor) -> Tensor:
    """Per-sample ``sum(g * t)`` (the gradient of ``c_b * t`` with respect to ``c``), fp32 ``[B]``."""
    return (g.float() * t.float()).reshape(g.shape[0], -1).sum(1)


def generated(rng: Tensor, stream: int, like: Tensor) -> Tensor:
    """Gaussian stream ``stream`` of ``rng`` as the kernels drew it, in ``like``'s shape (the
    output's gradient will do) on its device (for a backward only)."""
    from ..reference._common import gaussian_like
    return gaussian_like(rng, stream, like)


def _step_bwd(ctx, g):
    """d out / d (x, p, q) are per-sample scales of g; d out / d (A, B, C, N) per-sample dots."""
    x, p, q, A, B, C, N, rng, noise = ctx.saved_tensors
    need, (x_dtype, p_dtype, q_dtype, noise_dtype) = ctx.needs_input_grad, ctx.dtypes
    dN = dot(g, noise if noise is not None else generated(rng, 0, g)) if need[6] else None
    return (scaled(g, A, x_dtype) if need[0] else None, scaled(g, B, p_dtype) if need[1] else None,
            scaled(g, C, q_dtype) if need[2] else None, dot(g, x) if need[3] else None,
            dot(g, p) if need[4] else None, dot(g, q) if need[5] else None, dN, None,
            scaled(g, N, noise_dtype) if need[8] else None, None)


# gradients through a sampler (ODESolver.sample(enable_grad=True), as flow_matching allows)
_step.register_autograd(_step_bwd, setup_context=_step_setup)


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
                 out: Optional[Tensor] = None, backend: Optional[str] = None, _names=("x", "p", "q")) -> Tensor:
    """``A x + B p + C q + N z``; coefficients are floats or ``[B]`` tensors (per sample).

    ``z`` is ``noise`` when given, else drawn from ``rng``. ``out`` may be ``x`` (in place).
    (``_names``: what a public op that calls this one names ``x, p, q`` and, optionally, the
    coefficients ``A, B, C, N``, for its errors.)
    """
    if (C is not None) != (q is not None) or (noise is not None and N is None):
        raise ValueError("C, noise: C goes with q and noise with N (one without the other would be ignored)")
    if N is None and noise is None and _plain_floats(x, p, q, A, B, C, out):
        fast = backends.float_kernel("step_combine", pick("step_combine", x, backend))
        if fast is not None:
            return _floats_call(fast, x, p, A, B, q, C, out)
    n_x, n_p, n_q, *n_coef = _names
    n_coef = (*n_coef, *("A", "B", "C", "N")[len(n_coef):])
    _checks.tensor(n_x, x, _checks.REAL_DTYPES, ndim_min=1)
    batch = x.shape[0]
    _checks.tensor(n_p, p, _checks.REAL_DTYPES)
    _checks.same_shape(n_p, p, x, n_x)
    if q is not None:
        _checks.tensor(n_q, q, _checks.REAL_DTYPES)
        _checks.same_shape(n_q, q, x, n_x)
    if noise is not None:
        _checks.tensor("noise", noise, _checks.REAL_DTYPES)
        _checks.same_shape("noise", noise, x, n_x)
    wide = _checks.wide(**{n_x: x, n_p: p, n_q: q, "noise": noise})
    name = pick("step_combine", x, backend, wide=wide)
    if out is not None:
        _checks.tensor("out", out, (x.dtype,))
        _checks.same_shape("out", out, x, n_x)
        _checks.output("out", out, **{n_x: x, n_p: p, n_q: q, "noise": noise})
    like = _checks.widest(x, p, q, noise)  # (float64 coefficients for the float64 math)
    coef = [_checks.coefficient(n, v, batch, like, finite=True) if v is not None else None
            for n, v in zip(n_coef, (A, B, C, N))]  # (C given exactly with q: checked above)
    if out is not None and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, p, q, noise, out, *coef)):
        raise ValueError("out: the result cannot be written into out= while out or an input requires grad "
                         "(autograd does not differentiate through out=, as in torch)")
    if coef[3] is not None and noise is None and rng is None:
        raise ValueError("rng: required when N is given without noise")
    if rng is not None:
        rng = _checks.rng("rng", rng, x)
    if wide or transformed(x, p, q, *coef, noise, out):  # plain reference math
        return run("step_combine", pick("step_combine", x, backend, True, wide), x, p, q, *coef, rng, noise, out)
    if direct(x, p, q, *coef, rng, noise, out):
        result = run("step_combine", name, x, p, q, *coef, rng, noise, out)
        if out is not None:
            torch.autograd.graph.increment_version(out)
        return result
    if out is None:
        return _step(x, p, q, *coef, rng, noise, name)
    _step_out(x, p, q, *coef, rng, noise, out, name)
    return out


def _fp32(c) -> bool:
    """A float that fp32 holds as a finite number (NaN, inf and overflow take the checked path)."""
    return _checks.fp32_float(c)


def _plain_floats(x, p, q, A, B, C, out) -> bool:
    """A call the float-coefficient kernel entry takes, one that passes ``step_combine``'s checks
    by construction: finite fp32 coefficients, plain contiguous CPU tensors of one float dtype
    (or p and q of one bf16 / fp16 dtype beside an fp32 x and out: autocast's model outputs)
    and shape, nothing to record or trace. (Fewer distinct torch calls than the checks: a
    first call after the caches are cold costs ~100 us less.)"""
    if not (type(x) is Tensor and type(p) is Tensor and x.is_cpu and p.is_cpu and _fp32(A) and _fp32(B)):
        return False
    dtype, shape, p_dtype = x.dtype, x.shape, p.dtype
    return (dtype in _checks.FLOAT_DTYPES and len(shape) > 0 and p.shape == shape
            and (p_dtype is dtype or _checks.read_as_is(p_dtype, dtype))
            and x.is_contiguous() and p.is_contiguous()
            and (q is None or (type(q) is Tensor and _fp32(C) and q.is_cpu and q.dtype is p_dtype
                               and q.shape == shape and q.is_contiguous()))
            and (out is None or (type(out) is Tensor and out.is_cpu and out.dtype is dtype and out.shape == shape
                                 and out.is_contiguous()))
            and direct(x, p, q, out)  # (eager: no compile, which cannot ask is_inference or is_neg)
            and not (x.is_neg() or p.is_neg() or (q is not None and q.is_neg()) or (out is not None and out.is_neg()))
            and (out is None or (not _checks.frozen(out) and _apart_or_same(out, x, p, q))))


def _apart_or_same(out: Tensor, *inputs) -> bool:
    """Contiguous ``out`` and inputs of one shape: each input is ``out`` (its memory, in its
    dtype) or shares no memory with it (else the checked path says what is wrong). A bf16 view
    of an fp32 out's memory starts where out does but is not out: writing out would overwrite
    elements of it not yet read."""
    lo, n = out.data_ptr(), out.numel() * out.element_size()
    for t in inputs:
        if t is not None and t is not out:
            at = t.data_ptr()
            same = at == lo and t.dtype is out.dtype
            if not same and at < lo + n and lo < at + t.numel() * t.element_size():
                return False
    return True


def _floats_call(fast, x, p, A, B, q, C, out):
    result = fast(x, p, A, B, q, C if q is not None else 0.0, out)
    if out is not None:  # written in place: autograd must see the new version
        torch.autograd.graph.increment_version(out)
    return result


def stepper(like: Tensor, backend: Optional[str] = None):
    """``step_combine`` for a loop of calls on states shaped like ``like`` (the ODE solver's):
    ``f(x, p, A, B, q=None, C=None, out=None)``, the backend resolved once.

    A plain call (``_plain_floats``, on tensors of ``like``'s shape) goes straight to the
    backend's float-coefficient entry, without ``step_combine``'s checks; any other call is an
    ordinary ``step_combine``.
    """
    name = pick("step_combine", like, backend)
    fast = backends.float_kernel("step_combine", name)  # taken for CPU tensors only (_plain_floats)
    shape = like.shape

    def combine(x, p, A, B, q=None, C=None, out=None):
        if fast is not None and type(x) is Tensor and x.shape == shape and _plain_floats(x, p, q, A, B, C, out):
            return _floats_call(fast, x, p, A, B, q, C, out)
        return step_combine(x, p, A, B, q=q, C=C, out=out, backend=backend)  # (as asked: see pick's composed)

    return combine
