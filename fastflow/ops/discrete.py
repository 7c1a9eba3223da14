"""Public discrete ops: mixture path sample, cross-entropy and generalized-KL losses (fused,
gradient written in the forward pass), and the CTMC jump step (FORMULAS.md §4-5).

Logits ``[B, ..., V]`` are viewed as ``[N, V]`` rows (a copy only if they are not
row-contiguous); per-sample coefficients are expanded to per-row ``[N]`` fp32 vectors.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import _checks, _memory, backends
from ..reference.jump_step import SOURCE_GENERAL, SOURCE_MASK, SOURCE_NONE, SOURCE_UNIFORM
from . import _fused_grad
from ._registry import direct, eager_function, pick, run, transformed

LOSS_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------- mixture path sample
@torch.library.custom_op("fastflow::mixture_path_sample", mutates_args=())
def _mixture_sample(x_1: Tensor, x_0: Optional[Tensor], kappa: Tensor, rng: Optional[Tensor],
                    noise: Optional[Tensor], vocab_size: int, mask_id: int, backend: str) -> Tensor:
    return run("mixture_path_sample", backend, x_1, x_0, kappa, rng, noise, vocab_size,
               None if mask_id < 0 else mask_id)


@_mixture_sample.register_fake
def _(x_1, x_0, kappa, rng, noise, vocab_size, mask_id, backend):
    return torch.empty_like(x_1, memory_format=torch.contiguous_format)


def mixture_path_sample(x_1: Tensor, x_0: Optional[Tensor], kappa, rng: Optional[Tensor],
                        vocab_size: int = 0, mask_id: Optional[int] = None,
                        noise: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """``x_t = x_1`` with probability ``kappa`` (a float or per sample ``[B]``, in [0, 1]), else
    the source token (``x_0``, or drawn: uniform over ``vocab_size`` or ``mask_id``)."""
    _checks.tensor("x_1", x_1, _checks.INDEX_DTYPES, ndim_min=1)
    kappa = _checks.coefficient("kappa", kappa, x_1.shape[0], x_1, lo=0.0, hi=1.0)
    rng = None if rng is None else _checks.rng("rng", rng, x_1)
    if x_0 is None and mask_id is None:  # a uniform source is drawn (stream 1 of rng, even with noise)
        vocab_size = _checks.vocab_size(vocab_size, x_1)
        if rng is None:
            raise ValueError("rng: required to draw a uniform source (noise replaces only the keep-or-not draw)")
    return _mixture_path_sample(x_1, x_0, kappa, rng, vocab_size, mask_id, noise, backend)


def _mixture_path_sample(x_1: Tensor, x_0: Optional[Tensor], kappa: Tensor, rng: Optional[Tensor],
                         vocab_size: int = 0, mask_id: Optional[int] = None,
                         noise: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """``mixture_path_sample`` with an fp32 ``[B]`` kappa, and a source, computed by the caller."""
    _checks.tensor("x_1", x_1, _checks.INDEX_DTYPES, ndim_min=1)
    _checks.one_per_sample(x_1.shape[0], kappa=kappa)
    if x_0 is not None:
        _checks.tensor("x_0", x_0, _checks.INDEX_DTYPES)
        _checks.same_shape("x_0", x_0, x_1, "x_1")
        if x_0.dtype != x_1.dtype:  # the wider dtype holds both, as torch.where's promotion gives
            x_1, x_0 = x_1.long(), x_0.long()
    if noise is not None:
        _checks.tensor("noise", noise, _checks.REAL_DTYPES)
        _checks.same_shape("noise", noise, x_1, "x_1")
        _checks.uniforms("noise", noise)
        noise = noise.float() if noise.dtype is torch.float64 else noise  # (as the kernels compare them)
    if noise is None and rng is None:
        raise ValueError("rng: required when noise is not given")
    if mask_id is not None:
        mask_id = _checks.integer("mask_id", mask_id, 0, _checks.token_max(x_1.dtype))
    composed = transformed(x_1, x_0, kappa, noise)  # the reference's plain math
    name = pick("mixture_path_sample", x_1, backend, composed)
    if composed or direct(x_1, x_0, kappa, rng, noise):
        return run("mixture_path_sample", name, x_1, x_0, kappa, rng, noise, int(vocab_size), mask_id)
    return _mixture_sample(x_1, x_0, kappa, rng, noise, int(vocab_size), -1 if mask_id is None else mask_id,
                           name)


# ---------------------------------------------------------------- fused losses
def _rows(logits: Tensor, name="logits") -> Tensor:
    return logits.reshape(-1, logits.shape[-1])


def _loss_fwd(op, backend, logits, args, grad_scale, need_grad, overwrite):
    rows = _rows(logits)
    grad = None
    if need_grad:  # overwrite (eager only): the kernels read each logit before writing its gradient
        # (not into memory that several rows share, as an expanded tensor's; padded rows are fine)
        overwrite = overwrite and (rows.shape[0] <= 1 or rows.stride(0) >= rows.shape[1])
        grad = rows if overwrite else _memory.empty_like(rows)
    loss = run(op, backend, rows, *args, grad_scale if need_grad else None, grad)
    if grad is rows and rows.data_ptr() == logits.data_ptr():  # written over the logits themselves:
        torch.autograd.graph.increment_version(logits)  # a node that saved them now fails loudly
    # (the weighted row losses, the gradient buffer, the row losses: the gradient of the first
    # with respect to grad_scale)
    return loss * grad_scale, grad if grad is not None else rows.new_empty(0), loss


def _ce_impl(logits, x_1, ignore_index, grad_scale, need_grad, backend, overwrite=False):
    return _loss_fwd("cross_entropy", backend, logits, (x_1, ignore_index), grad_scale, need_grad, overwrite)


def _gkl_impl(logits, x_1, x_t, jump, ignore_index, grad_scale, need_grad, backend, overwrite=False):
    return _loss_fwd("generalized_kl", backend, logits, (x_1, x_t, jump, ignore_index), grad_scale, need_grad,
                     overwrite)


@torch.library.custom_op("fastflow::cross_entropy", mutates_args=())
def _ce(logits: Tensor, x_1: Tensor, ignore_index: int, grad_scale: Tensor, need_grad: bool,
        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _ce_impl(logits, x_1, ignore_index, grad_scale, need_grad, backend)


@torch.library.custom_op("fastflow::generalized_kl", mutates_args=())
def _gkl(logits: Tensor, x_1: Tensor, x_t: Tensor, jump: Tensor, ignore_index: int,
         grad_scale: Tensor, need_grad: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _gkl_impl(logits, x_1, x_t, jump, ignore_index, grad_scale, need_grad, backend)


def _fake(logits, grad_scale, need_grad):
    rows = _rows(logits)
    grad = torch.empty_like(rows, memory_format=torch.contiguous_format) if need_grad else rows.new_empty(0)
    return grad_scale.new_empty(grad_scale.shape), grad, grad_scale.new_empty(grad_scale.shape)


_ce.register_fake(lambda logits, x_1, ii, gs, ng, b: _fake(logits, gs, ng))
_gkl.register_fake(lambda logits, x_1, x_t, j, ii, gs, ng, b: _fake(logits, gs, ng))


def _backward(ctx, grad_loss, _grad_of_grad, _grad_of_rows):
    """The logits' gradient is the buffer the forward wrote, scaled; the row scale's (which
    carries the jump coefficient when that requires grad, see generalized_kl) is the upstream
    gradient times the row losses. Nothing else gets one (tokens, ignore index)."""
    grads = [None] * ctx.n_inputs
    if grad_loss is None:
        return tuple(grads)
    need = ctx.needs_input_grad
    if need[0]:
        _fused_grad.claim(ctx)
    grad, rows = ctx.saved_tensors
    if need[ctx.scale_index]:
        grads[ctx.scale_index] = grad_loss * rows
    if need[0]:
        grads[0] = _fused_grad.scaled_grad(ctx, grad_loss, grad)
    return tuple(grads)


def _ce_setup(ctx, inputs, output):  # the custom op's inputs, or those plus `overwrite` (eager)
    _fused_grad.setup(ctx, output[1], inputs[5], inputs[0].shape, len(inputs), output[2])
    ctx.scale_index = 3


def _gkl_setup(ctx, inputs, output):
    _fused_grad.setup(ctx, output[1], inputs[7], inputs[0].shape, len(inputs), output[2])
    ctx.scale_index = 5


_ce.register_autograd(_backward, setup_context=_ce_setup)
_ce_eager = eager_function(_ce_impl, _ce_setup, _backward)
_gkl.register_autograd(_backward, setup_context=_gkl_setup)
_gkl_eager = eager_function(_gkl_impl, _gkl_setup, _backward)


def _check_logits(logits, x_1, name_1="x_1"):
    _checks.tensor("logits", logits, _checks.REAL_DTYPES, ndim_min=2)
    _checks.tensor(name_1, x_1, _checks.INDEX_DTYPES)
    if logits.shape[:-1] != x_1.shape:
        raise ValueError(f"logits: expected shape {tuple(x_1.shape)} + (V,) to match {name_1}, "
                         f"got {tuple(logits.shape)}")
    _checks.same_device(name_1, x_1, logits)
    if x_1.numel() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits: expected at least one token and V >= 1, got {tuple(logits.shape)}")


def _grad_scale(x_1: Tensor, ignore_index: int, reduction: str, logits: Tensor):
    """(per-row scale of the fused op, divisor applied after it or None); see _fused_grad."""
    valid = (x_1 != ignore_index).reshape(-1).to(_checks.coef_dtype(logits))
    if reduction != "mean":
        return valid, None
    count = valid.sum().clamp_min(1.0)
    return (valid / count, None) if _fused_grad.fold_divisor(logits.dtype) else (valid, count)


def _reduce(weighted: Tensor, x_1: Tensor, reduction: str, divisor) -> Tensor:
    if reduction == "none":
        return weighted.view(x_1.shape)
    return weighted.sum() if divisor is None else weighted.sum() / divisor


def _overwrite(logits: Tensor, overwrite_logits: bool, need_grad: bool) -> bool:
    if not isinstance(overwrite_logits, bool):
        raise TypeError(f"overwrite_logits: expected a bool, got {type(overwrite_logits).__name__}")
    base = logits if logits._base is None else logits._base
    if overwrite_logits and need_grad and base.is_leaf:
        raise ValueError("overwrite_logits: the logits must come out of the model (a non-leaf tensor): "
                         "a leaf that requires grad, or a view of one, cannot be overwritten")
    return overwrite_logits and need_grad


def mixture_cross_entropy(logits: Tensor, x_1: Tensor, ignore_index: int = -100,
                          reduction: str = "mean", backend: Optional[str] = None,
                          overwrite_logits: bool = False) -> Tensor:
    """Fused cross-entropy ``logsumexp(z) - z[x_1]`` over the last dimension.

    ``mean`` averages over the tokens that are not ``ignore_index`` (torch's convention; with
    every token ignored it is 0, where torch's is NaN), ``sum`` adds, ``none`` returns
    ``x_1``'s shape (0 on ignored tokens). The gradient is
    written during the forward pass (one extra pass, no ``[N, V]`` fp32 temporaries); the
    backward scales it only when the upstream gradient is not 1.

    ``overwrite_logits=True`` writes that gradient into the logits' own memory instead of a new
    ``[N, V]`` buffer (as Liger-Kernel's cross-entropy does): the logits are lost after the call,
    and an autograd node that saved them raises at backward. Eager mode only (under
    torch.compile a buffer is allocated as usual).
    """
    _checks.choice("reduction", reduction, LOSS_REDUCTIONS)
    _check_logits(logits, x_1)
    ignore_index = _checks.integer("ignore_index", ignore_index, -(2**63), 2**63 - 1)
    _checks.tokens("x_1", x_1, logits.shape[-1], ignore_index)
    ignore_index = _checks.skipped_token(x_1, ignore_index)
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    overwrite = _overwrite(logits, overwrite_logits, need_grad)
    scale, divisor = _grad_scale(x_1, ignore_index, reduction, logits)
    composed, wide = transformed(logits, x_1), _checks.wide(logits=logits)
    if composed or wide:  # plain reference math, no fused gradient
        weighted, _, _ = _ce_impl(logits, x_1.reshape(-1), ignore_index, scale, False,
                                  pick("cross_entropy", logits, backend, composed, wide))
        return _reduce(weighted, x_1, reduction, divisor)
    args = (logits, x_1.reshape(-1), ignore_index, scale, need_grad, pick("cross_entropy", logits, backend))
    if direct(logits, x_1, scale, autograd=True):
        if reduction != "none" and divisor is None and not overwrite:  # the loss: the weighted rows' sum
            return _ce_eager(*args, overwrite, total=True)  # (overwritten rows unpack only as an output)
        weighted, _, _ = _ce_eager(*args, overwrite)
    else:
        weighted, _, _ = _ce(*args)
    return _reduce(weighted, x_1, reduction, divisor)


def generalized_kl(logits: Tensor, x_1: Tensor, x_t: Tensor, jump: Tensor,
                   ignore_index: Optional[int] = None, reduction: str = "mean",
                   backend: Optional[str] = None, overwrite_logits: bool = False) -> Tensor:
    """Fused generalized KL of the mixture path; ``jump`` = ``d_kappa / (1 - kappa)`` per sample ``[B]``.

    ``mean`` averages over all tokens as flow_matching does (over the non-ignored ones when
    ``ignore_index`` is given). ``overwrite_logits``: as in ``mixture_cross_entropy``.

    A ``jump`` that requires grad (a ``t`` or a scheduler that does) gets its gradient: the
    loss of a row is ``jump * L_row``, so the kernels run with a jump of 1 and the jump joins the
    row scale, whose gradient is the row losses ``L_row`` (no second pass over the logits).
    """
    _checks.choice("reduction", reduction, LOSS_REDUCTIONS)
    _check_logits(logits, x_1)
    _checks.tensor("x_t", x_t, _checks.INDEX_DTYPES)
    _checks.same_shape("x_t", x_t, x_1, "x_1")
    V = logits.shape[-1]
    if ignore_index is not None:
        ignore_index = _checks.integer("ignore_index", ignore_index, -(2**63), 2**63 - 1)
    _checks.tokens("x_1", x_1, V, ignore_index)
    ii = _checks.skipped_token(x_1, ignore_index)
    _checks.tokens("x_t", x_t, V)
    jump = _checks.coefficient("jump", jump, x_1.shape[0], logits, finite=True)
    per_row = jump.repeat_interleave(x_1.numel() // x_1.shape[0])
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    overwrite = _overwrite(logits, overwrite_logits, need_grad)
    scale, divisor = _grad_scale(x_1, ii, reduction, logits)
    composed, wide = transformed(logits, x_1, x_t, per_row), _checks.wide(logits=logits)
    if composed or wide:  # plain reference math, no fused gradient
        weighted, _, _ = _gkl_impl(logits, x_1.reshape(-1), x_t.reshape(-1), per_row, ii, scale, False,
                                   pick("generalized_kl", logits, backend, composed, wide))
        return _reduce(weighted, x_1, reduction, divisor)
    after = None
    if not _fused_grad.fold_divisor(logits.dtype):
        # fp16: the jump (1 / (1 - kappa) near t = 1) scales the rows after the fused op, as the
        # divisor does, so the stored gradient stays within [-2, 2] (times jump it passed 65504
        # from t ~ 0.99998) and the backward scales it in fp32
        after, per_row = per_row, torch.ones_like(per_row).detach()
    elif torch.is_grad_enabled() and per_row.requires_grad:  # d loss / d jump: the jump in the row scale
        scale, per_row = scale * per_row, torch.ones_like(per_row).detach()
    args = (logits, x_1.reshape(-1), x_t.reshape(-1), per_row, ii, scale, need_grad,
            pick("generalized_kl", logits, backend))
    if direct(logits, x_1, x_t, per_row, scale, autograd=True):
        if reduction != "none" and divisor is None and not overwrite and after is None:
            return _gkl_eager(*args, overwrite, total=True)
        weighted, _, _ = _gkl_eager(*args, overwrite)
    else:
        weighted, _, _ = _gkl(*args)
    return _reduce(weighted if after is None else weighted * after, x_1, reduction, divisor)


# ---------------------------------------------------------------- jump step
class JumpNoise(NamedTuple):
    """Explicit uniforms in (0, 1) for exact parity: ``token [..., 3]`` (jump test, component
    choice, uniform token), ``race [..., V]`` and, for a general p0, ``race_p0 [..., V]``."""
    token: Tensor
    race: Tensor
    race_p0: Optional[Tensor] = None


@torch.library.custom_op("fastflow::jump_step", mutates_args=())
def _jump(logits: Tensor, x_t: Tensor, h: Tensor, r1: Tensor, r0: Tensor, p0: Optional[Tensor],
          source: int, mask_id: int, temperature: float, final: bool, probs: bool,
          rng: Optional[Tensor], noise_token: Optional[Tensor], noise_race: Optional[Tensor],
          noise_race_p0: Optional[Tensor], backend: str) -> Tensor:
    return run("jump_step", backend, logits, x_t, h, r1, r0, p0, source, mask_id, temperature,
               final, probs, rng, noise_token, noise_race, noise_race_p0)


@_jump.register_fake
def _(logits, x_t, h, r1, r0, p0, source, mask_id, temperature, final, probs, rng, nt, nr, nr0, backend):
    return torch.empty_like(x_t, memory_format=torch.contiguous_format)


def jump_rates(kappa: Tensor, d_kappa: Tensor, div_free) -> tuple[Tensor, Tensor]:
    """Per-sample rates ``r1 = (1 + c) d_kappa / (1 - kappa)`` and ``r0 = c d_kappa / kappa``
    (FORMULAS.md §5), with their limits: ``r1 = inf`` at kappa = 1, ``r0 = inf`` at kappa = 0
    when c > 0, ``r0 = 0`` when c = 0. A NaN or infinite kappa or d_kappa (a scheduler's: t^n's
    derivative at t = 0 for n < 1) is refused: an infinite rate would jump every token at once."""
    _checks.scheduled({"alpha_t": kappa, "d_alpha_t": d_kappa}, "alpha_t", "d_alpha_t")
    lam = torch.where(kappa >= 1, math.inf, d_kappa / (1 - kappa).clamp_min(1e-30))
    if not isinstance(div_free, Tensor):  # a number, checked by the caller
        if div_free == 0.0:  # the default: (1 + 0) lam is lam and r0 is 0, bit for bit
            return lam, torch.zeros_like(lam)
        div_free = torch.full_like(lam, div_free)
    r1 = (1 + div_free) * lam
    r0 = torch.where(div_free > 0, torch.where(kappa <= 0, math.inf, div_free * d_kappa / kappa.clamp_min(1e-30)), 0.0)
    return r1, r0


def _rates_at(scheduler, times: list, div_free: float, device) -> tuple[list, list]:
    """``jump_rates`` at a list of scalar times, as Python floats (their fp32 values)."""
    t = torch.tensor(times, dtype=torch.float32, device=device)
    sched = scheduler(t)
    r1, r0 = jump_rates(sched.alpha_t.float().reshape(-1).expand(len(times)),
                        sched.d_alpha_t.float().reshape(-1).expand(len(times)), div_free)
    return r1.tolist(), r0.tolist()


def _source(source, mask_id, V, like):
    if isinstance(source, torch.Tensor):
        _checks.tensor("source", source, _checks.REAL_DTYPES)
        if source.shape != (V,):
            raise ValueError(f"source: expected a p0 of shape ({V},), got {tuple(source.shape)}")
        _checks.same_device("source", source, like)
        _checks.values("source", (source >= 0).all() & ((source.float().sum() - 1).abs() < 1e-3),
                       "p0 must be non-negative and sum to 1")
        return SOURCE_GENERAL, source.float().contiguous(), -1
    _checks.choice("source", source, ("uniform", "mask"))
    if source == "mask":
        if not isinstance(mask_id, int) or not 0 <= mask_id < V:
            raise ValueError(f"mask_id: expected an int in [0, {V}) with source='mask', got {mask_id!r}")
        return SOURCE_MASK, None, mask_id
    return SOURCE_UNIFORM, None, -1


def jump_step(logits: Tensor, x_t: Tensor, t, h, scheduler, probs: bool = False, div_free=0.0,
              source="uniform", mask_id: Optional[int] = None, temperature: float = 1.0,
              final: bool = False, generator: Optional[torch.Generator] = None,
              noise: Optional[JumpNoise] = None, out: Optional[Tensor] = None,
              backend: Optional[str] = None) -> Tensor:
    """One CTMC Euler step of the mixture path for every token (FORMULAS.md §5).

    ``logits [B, ..., V]`` (probabilities when ``probs=True``), ``x_t [B, ...]`` int64/int32,
    ``t``, ``h``, ``div_free`` floats or ``[B]``. ``x_1`` is drawn by an exponential race over
    the row (``softmax(z / temperature)``); the token jumps with probability
    ``1 - exp(-h * total rate)``. Rows that cannot jump are not read. ``final=True``
    returns the ``x_1`` draw for every token. At kappa = 1 the rate to ``x_1`` is infinite
    and the token jumps to ``x_1`` (when they differ); at kappa = 0 with ``div_free > 0`` the
    source term is infinite and the token jumps to a ``p0`` draw, unless ``p0`` holds no mass off
    ``x_t`` (a mask source's mask token: that term is 0 there) (never NaN).
    Returns new tokens of ``x_t``'s shape and dtype (written into ``out`` if given).
    """
    _check_logits(logits, x_t, "x_t")
    V = logits.shape[-1]
    if V - 1 > _checks.token_max(x_t.dtype):
        raise ValueError(f"x_t: {x_t.dtype} tokens cannot hold the ids of V = {V} (use int64)")
    _checks.tokens("x_t", x_t, V)
    if not callable(scheduler):
        raise TypeError(f"scheduler: expected a callable t -> SchedulerOutput, got {type(scheduler).__name__}")
    _check_temperature(temperature)
    if not isinstance(probs, bool) or not isinstance(final, bool):
        raise TypeError("probs, final: expected bools")
    if out is not None:  # checked before the step, as every op's out= is
        _checks.tensor("out", out, (x_t.dtype,))
        _checks.same_shape("out", out, x_t, "x_t")
        _checks.same_device("out", out, x_t)
        _checks.output("out", out, x_t=x_t)
    batch = x_t.shape[0]
    t_b = _checks.time("t", t, batch, logits)
    h_b = _checks.coefficient("h", h, batch, logits, lo=0.0, finite=True)
    c_b = (_checks.scalar("div_free", div_free, 0.0, finite=True) if type(div_free) is float
           else _checks.coefficient("div_free", div_free, batch, logits, lo=0.0, finite=True))
    kind, p0, mid = _source(source, mask_id, V, logits)
    sched = scheduler(t_b)
    from ..path.scheduler import convex_by_type, sums_to_one  # (the path package imports these ops)
    if not convex_by_type(scheduler):  # another scheduler: alpha_t + sigma_t = 1 at these times
        _checks.values("scheduler", sums_to_one(sched),
                       "the jump step of a mixture path needs a convex scheduler (alpha_t + sigma_t = 1)")
    r1, r0 = jump_rates(_checks.per_sample("scheduler", sched.alpha_t, batch, logits),
                        _checks.per_sample("scheduler", sched.d_alpha_t, batch, logits), c_b)
    per_row = x_t.numel() // batch
    expand = lambda v: v.repeat_interleave(per_row).contiguous()  # noqa: E731
    nt = nr = nr0 = None
    if noise is not None:
        if not isinstance(noise, tuple) or len(noise) not in (2, 3):
            raise TypeError("noise: expected a JumpNoise(token, race, race_p0)")
        nt, nr, nr0 = (tuple(noise) + (None,))[:3]
        nt = _noise_rows("noise.token", nt, x_t, 3)
        nr = _noise_rows("noise.race", nr, x_t, V)
        nr0 = _noise_rows("noise.race_p0", nr0, x_t, V) if nr0 is not None else None
        if kind == SOURCE_GENERAL and nr0 is None and not final:
            raise ValueError("noise.race_p0: required with a general p0 source")
    from .._rng import rng_unless
    rng = rng_unless(noise, logits.device, generator)
    args = (_rows(logits), x_t.reshape(-1), expand(h_b), expand(r1), expand(r0), p0, kind, mid,
            float(temperature), final, probs, rng, nt, nr, nr0)
    composed, wide = transformed(logits, x_t, h_b, r1, r0, p0, nt, nr, nr0), _checks.wide(logits=logits)
    name = pick("jump_step", logits, backend, composed, wide)
    if composed or wide or direct(logits, x_t, h_b, r1, r0, p0, rng, nt, nr, nr0):
        new = _drawn(run("jump_step", name, *args).view(x_t.shape), probs)
    else:
        new = _drawn(_jump(*args, name).view(x_t.shape), probs)
    return new if out is None else out.copy_(new)


def _drawn(new: Tensor, probs: bool) -> Tensor:
    """The kernels' tokens, refused where a row that may jump had no distribution to draw its x_1
    from (the kernels' -1: every logit -inf or probability 0, or a NaN, which a negative
    probability's log is), as torch.multinomial refuses; the logits are not read twice for it.
    With ``probs`` the likeliest cause is a model that returns logits, so the message says so."""
    what = ("a token that may jump has no distribution to draw from (probs=True: all its probabilities are "
            "0, or one is negative or NaN; a model that returns logits needs probs=False, "
            "model_output='logits' in MixtureDiscreteEulerSolver)" if probs else
            "a token that may jump has no finite logit to draw from (all -inf, or a NaN: the model's output?)")
    _checks.within("logits", new, what, lo=0)
    return new


def _check_temperature(temperature) -> None:
    """A float in [2^-100, 8.5e37]: its fp32 reciprocal is a normal number (the kernels divide by it,
    and the CPU race bounds keys by z * (1/T), which flush-to-zero would zero if 1/T were
    subnormal), and z / T stays finite for logits up to 2.6e8 (from a review: at T = 1e-37 logits
    of 40 and more all became +inf and the first of them won every race; below 2^-100 the draw
    is the argmax to fp32's precision anyway)."""
    if (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
            or not 8.5e37 >= temperature >= 2.0 ** -100):
        raise ValueError(f"temperature: expected a float in [7.9e-31, 8.5e37] (2^-100: z / temperature stays "
                         f"finite in fp32 for logits below 2.6e8), got {temperature!r}")


def _noise_rows(name, u, x_t, width):
    _checks.tensor(name, u, (torch.float32, torch.float64))
    if u.shape != (*x_t.shape, width):
        raise ValueError(f"{name}: expected shape {(*x_t.shape, width)}, got {tuple(u.shape)}")
    _checks.same_device(name, u, x_t)
    _checks.uniforms(name, u)
    return u.reshape(-1, width).float()  # (float64 ones, torch.rand's under a float64 default: as fp32)


def jump_stepper(x_init: Tensor, grid: list, scheduler, vocab_size: int, div_free, source, mask_id,
                 temperature: float, probs: bool, generator: Optional[torch.Generator] = None,
                 backend: Optional[str] = None):
    """``jump_step`` for a sampler's loop over ``grid``: ``f(i, logits, x_t, final)`` is the step
    from ``grid[i]`` to ``grid[i + 1]``, the same draw as ``jump_step`` (its own seed per step).
    ``div_free`` is a number, or a callable of the step's time (an fp32 ``[1]`` tensor).

    The arguments that do not change over the loop are checked once, and with a constant
    ``div_free`` the rates of every step come from one scheduler call over the grid; where the
    backend has a float entry (the CPU one) a step then costs its seed and the kernel. The
    tokens the kernel returns are in range by construction (or -1 where a token had nothing to
    draw from, refused by ``_drawn``): only ``x_init``'s are checked. Any other case runs
    ``jump_step`` per step, as is.
    """
    _checks.tensor("x_init", x_init, _checks.INDEX_DTYPES, ndim_min=1)
    _checks.tokens("x_init", x_init, vocab_size)
    name = pick("jump_step", x_init, backend)
    # float rows live in host memory: the CPU only (csrc_backend also serves CUDA tensors)
    fast = backends.float_kernel("jump_step", name) if x_init.device.type == "cpu" else None
    times = torch.tensor(grid, dtype=torch.float32, device=x_init.device) if callable(div_free) else None
    if isinstance(div_free, int) and not isinstance(div_free, bool):
        div_free = float(div_free)
    _check_temperature(temperature)
    generic = not (_checks.fp32_float(div_free) and div_free >= 0 and fast is not None)

    def slow(i, logits, x_t, final):
        c = div_free(times[i:i + 1]) if times is not None else div_free
        return jump_step(logits, x_t, grid[i], grid[i + 1] - grid[i], scheduler, probs=probs, div_free=c,
                         source=source, mask_id=mask_id, temperature=temperature, final=final,
                         generator=generator, backend=backend)

    if generic or not all(0.0 <= t <= 1.0 for t in grid[:-1]):
        return slow  # (times outside [0, 1]: jump_step raises, naming t)
    kind, p0, mid = _source(source, mask_id, vocab_size, x_init)
    steps = len(grid) - 1
    h = torch.tensor([grid[i + 1] - grid[i] for i in range(steps)], dtype=torch.float32).tolist()
    r1, r0 = _rates_at(scheduler, grid[:-1], div_free, x_init.device)  # (a NaN scheduler raises there)
    if any(v < 0 for v in h):
        return slow  # let jump_step say what is wrong
    from .._rng import new_rng

    def step(i, logits, x_t, final):
        if not (type(logits) is Tensor and type(x_t) is Tensor and logits.device.type == "cpu"
                and logits.dtype in _checks.FLOAT_DTYPES and x_t.device == logits.device and direct(logits, x_t)):
            return slow(i, logits, x_t, final)
        _check_logits(logits, x_t, "x_t")
        if logits.shape[-1] != vocab_size:
            raise ValueError(f"logits: expected V = {vocab_size} (the vocabulary size), got {logits.shape[-1]}")
        new = fast(_rows(logits), x_t.reshape(-1), h[i], r1[i], r0[i], p0, kind, mid, float(temperature),
                   final, probs, new_rng(logits.device, generator))
        return _drawn(new.view(x_t.shape), probs)

    return step
