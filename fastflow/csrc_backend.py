"""Backends ``cpu`` and ``cuda``: the compiled kernels of ``csrc/`` (``fastflow._C``).

Same functions, same signatures as ``fastflow.reference`` (the spec; see its ``__init__``
for the backend contract). This module holds the torch side of the torch-free kernels:
it allocates outputs, passes ``data_ptr()`` integers, sizes, dtype codes and, for CUDA
tensors, the current stream of the tensor's device, and raises ``RuntimeError`` when a
kernel returns a non-zero status. It validates nothing beyond what the kernels need.

Layout handled here (each a copy only when needed):

- data tensors are made contiguous (``.contiguous()``) unless said otherwise; logits and
  gradient buffers ``[N, V]`` only need a contiguous last dimension (any row stride);
- floating inputs of one op that do not share one dtype are all computed in fp32 (as the
  reference does) and the result cast to the output dtype, except the path loss's bf16 / fp16
  ``v`` on fp32 data (autocast's model output), which its kernels read as they are;
- token tensors of the losses are passed as int64; ``jump_step`` and ``mixture_path_sample``
  take int64 or int32 tokens as they are;
- a boolean ``mask`` expanded from a smaller tensor (e.g. a ``[B, L, 1]`` padding mask) is
  read through its broadcast, not materialised, when its layout allows;
- an ``out=`` tensor that is contiguous with the output dtype is written directly (it may
  alias an input: the kernels are element-wise there); otherwise the result is copied in.
"""
from __future__ import annotations

import os
import threading
import warnings

import torch

from . import _checks, _memory

try:
    from . import _C
    _IMPORT_ERROR = None
except Exception as exc:  # not built, or built for another Python
    _C = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    _failed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "BUILD_FAILED.txt")
    if os.path.exists(_failed):  # (pip hides the build's own warning unless -v)
        warnings.warn("fastflow: the compiled backends (cpu, cuda) failed to build when fastflow was "
                      f"installed (see {_failed}); 'reference' and 'triton' remain. Reinstall with "
                      "`pip install -v .` to see the build log.", RuntimeWarning, stacklevel=2)

_FLOAT_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_INDEX_CODES = {torch.int64: 0, torch.int32: 1}


def unavailable(device_type: str):
    """None when this backend runs on ``device_type`` tensors, else why not."""
    if _C is None:
        return (f"fastflow._C is not built ({_IMPORT_ERROR}); reinstall with a C++ compiler "
                "(pip install .) or run the CMake build")
    if device_type == "cpu":
        return None
    if device_type == "cuda":
        if not _C.has_cuda():
            return ("fastflow._C was built without CUDA (needs nvcc and a CUDA-enabled torch at build "
                    "time, or FASTFLOW_CUDA=1)")
        if not torch.cuda.is_available():
            return "torch reports no usable CUDA device"
        problem = _cuda_problem()
        if problem:
            return f"the CUDA runtime in fastflow._C cannot run here: {problem}"
        return None
    return f"runs on cpu and cuda tensors only, not {device_type}"


_CUDA_PROBLEM = None


def _cuda_problem() -> str:
    global _CUDA_PROBLEM
    if _CUDA_PROBLEM is None:
        _CUDA_PROBLEM = _C.cuda_problem()
    return _CUDA_PROBLEM


# ---------------------------------------------------------------- plumbing
def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


_THREADS = [0]


def _sync_threads() -> None:
    """The CPU kernels use as many threads as torch does."""
    n = torch.get_num_threads()
    if n != _THREADS[0]:
        _C.set_num_threads(n)
        _THREADS[0] = n


def _run(fn, like: torch.Tensor, **kwargs) -> None:
    """Call a kernel of ``_C`` on ``like``'s device: CUDA kernels on the device's current
    stream, CPU kernels with as many threads as torch uses. The arguments go by position
    (pybind11 matches keywords at ~0.1 us each, and a small op's kernel call takes ~1 us)."""
    args = _positional(fn, kwargs)
    if like.is_cuda:
        with torch.cuda.device(like.device):
            stream = torch.cuda.current_stream(like.device).cuda_stream
            code = fn(True, stream, *args) if args is not None else fn(cuda=True, stream=stream, **kwargs)
    else:
        _sync_threads()
        code = fn(False, 0, *args) if args is not None else fn(cuda=False, stream=0, **kwargs)
    _raise_status(fn.__name__, code)


_ORDERS: dict = {}


def _positional(fn, kwargs: dict):
    """``kwargs``' values in the order of ``fn``'s parameters after (cuda, stream), read once
    per set of names from the signature pybind11 writes at the top of its docstring; None
    when that signature does not name exactly these parameters (then keywords are passed)."""
    key = (fn.__name__, *kwargs)
    order = _ORDERS.get(key, 0)
    if order == 0:
        head = (fn.__doc__ or "").split("\n", 1)[0]
        params = [p.split(":", 1)[0].strip() for p in head[head.find("(") + 1:head.rfind(")")].split(",")]
        names = list(kwargs)
        if params[:2] != ["cuda", "stream"] or sorted(params[2:]) != sorted(names):
            order = None
        else:
            order = True if params[2:] == names else tuple(names.index(p) for p in params[2:])
        _ORDERS[key] = order
    if order is True:
        return kwargs.values()
    if order is None:
        return None
    values = tuple(kwargs.values())
    return [values[i] for i in order]


def _raise_status(name: str, code: int) -> None:
    """RuntimeError for a nonzero status of ``_C.<name>`` (with CUDA's own words for a failed
    launch: only CUDA launches return ERR_CUDA)."""
    if code:
        why = _C.cuda_last_error() if code == _C.ERR_CUDA else ""
        raise RuntimeError(f"{_C.__name__}.{name}: {_C.status_message(code)} (status {code})"
                           + (f": {why}" if why else ""))


def _cuda_path(t: torch.Tensor) -> bool:
    """Whether an op on ``t`` runs the CUDA kernels, which need workspaces (tests/cuda_emulator.py
    answers True for CPU tensors, on which it runs them)."""
    return t.is_cuda


def _float_code(dtype) -> int:
    try:
        return _FLOAT_CODES[dtype]
    except KeyError:
        raise TypeError(f"the compiled backends take float32, bfloat16 or float16 tensors, got {dtype}") from None


def _common_dtype(*tensors):
    """The dtype shared by all given float tensors, or fp32 when they differ."""
    dtypes = {t.dtype for t in tensors if t is not None}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def _data(t, dtype):
    """``t`` as a contiguous tensor of ``dtype`` (None stays None), its negative bit resolved (a
    one-element ``conj().imag`` is contiguous, and its memory holds the value's negation)."""
    if t is None:
        return None
    t = t.resolve_neg()
    return t.to(dtype).contiguous() if t.dtype != dtype else t.contiguous()


def _coef(c, batch: int, device):
    """A per-sample / per-row coefficient as a contiguous fp32 ``[batch]`` tensor."""
    if c is None:
        return None
    if type(c) is torch.Tensor and c.is_neg():  # (see _data)
        c = c.resolve_neg()
    if (type(c) is torch.Tensor and c.dtype == torch.float32 and c.dim() == 1 and c.shape[0] == batch
            and c.is_contiguous() and c.device == device):  # as the ops layer passes them
        return c
    c = torch.as_tensor(c, dtype=torch.float32, device=device).reshape(-1)
    if c.numel() == 1 and batch != 1:
        c = c.expand(batch)
    return c.contiguous()


def _rng(rng, device):
    if rng is None:
        return None
    rng = torch.as_tensor(rng)
    if rng.device != device or rng.dtype != torch.int64:
        rng = rng.to(device=device, dtype=torch.int64)
    return rng.contiguous()


def _sizes(x: torch.Tensor):
    batch = x.shape[0] if x.dim() > 0 else 1
    return batch, (x.numel() // batch if batch else 0)


def _finish(result: torch.Tensor, out, dtype):
    """The kernel's result as ``dtype``, or copied into ``out`` when given."""
    if out is not None:
        return out.copy_(result)
    return result if result.dtype == dtype else result.to(dtype)


def _target(out, like: torch.Tensor, dtype):
    """Where the kernel writes: ``out`` itself when it is usable as is, else a new buffer."""
    if (out is not None and out.dtype == dtype and out.device == like.device and out.shape == like.shape
            and out.is_contiguous()):
        return out, True
    return _memory.empty_like(like, dtype), False


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A ``[N, V]`` tensor with a unit stride along V (a copy only if it has none)."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _row_stride(t: torch.Tensor) -> int:
    return t.stride(0) if t.shape[0] > 1 else t.shape[-1]


def _row_workspace(rows: int, vocab: int, like: torch.Tensor):
    if not _cuda_path(like):
        return None
    split = _C.row_split(rows, vocab, like.device.index if like.device.index is not None else 0)
    if split <= 1:
        return None
    return torch.empty(4 * rows * split, dtype=torch.float32, device=like.device)


def _loss_workspace(batch: int, per_sample: int, like: torch.Tensor):
    """The per-(sample, chunk) partials of the CUDA ``affine_path_loss`` (None when not needed)."""
    if not _cuda_path(like):
        return None
    n = _C.affine_path_loss_workspace(batch, per_sample)
    return torch.empty(n, dtype=torch.float32, device=like.device) if n else None


def _mask_layout(mask: torch.Tensor, shape):
    """(tensor, inner, period) with element i of the broadcast mask = flat[(i // inner) % period]."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: the compiled backends take a bool mask, got {mask.dtype}")
    m = mask.expand(shape) if tuple(mask.shape) != tuple(shape) else mask
    dims = [(n, s) for n, s in zip(m.shape, m.stride()) if n != 1]
    inner = 1
    while dims and dims[-1][1] == 0:
        inner *= dims.pop()[0]
    while dims and dims[0][1] == 0:
        dims.pop(0)
    expect = 1
    for n, s in reversed(dims):
        if s != expect:
            flat = m.contiguous()
            return flat, 1, max(flat.numel(), 1)
        expect *= n
    return m, inner, expect


# ---------------------------------------------------------------- continuous ops
def affine_path_sample(x_1, x_0, a, b, s, rng, out=None):
    """``x_t = a x_1 + b x_0 + s eps`` (see ``fastflow.reference.affine_path_sample``)."""
    dtype = _common_dtype(x_1, x_0)
    x1, x0 = _data(x_1, dtype), _data(x_0, dtype)
    batch, per = _sizes(x1)
    dev = x1.device
    a, b, s = (_coef(c, batch, dev) for c in (a, b, s))
    rng = _rng(rng, dev)
    res, direct = _target(out, x1, dtype)
    if x1.numel():
        _run(_C.affine_path_sample, x1, x1=_ptr(x1), x0=_ptr(x0), a=_ptr(a), b=_ptr(b), s=_ptr(s),
             rng=_ptr(rng), out=_ptr(res), batch=batch, per_sample=per, dtype=_float_code(dtype))
    if direct:
        return out
    return _finish(res, out, x_1.dtype)


def _loss_inputs(v, x_1, x_0, c, d, e, rng, mask):
    """The loss kernel's operands: v (and the gradient) in v's dtype and the data in theirs when
    the kernel reads the pair (the same dtype, or fp32 data under a bf16 / fp16 v: autocast's
    model output), else all in fp32."""
    dtype = x_dtype = _common_dtype(v, x_1, x_0)
    if _checks.read_as_is(v.dtype, _common_dtype(x_1, x_0)):
        dtype = v.dtype
    v_, x1, x0 = _data(v, dtype), _data(x_1, x_dtype), _data(x_0, x_dtype)
    batch, per = _sizes(v_)
    dev = v_.device
    c, d, e = (_coef(k, batch, dev) for k in (c, d, e))
    m, inner, period = (None, 1, 1) if mask is None else _mask_layout(mask, v.shape)
    return dict(v=v_, x1=x1, x0=x0, c=c, d=d, e=e, rng=_rng(rng, dev), mask=m, inner=inner,
                period=period, batch=batch, per=per, dtype=dtype, x_dtype=x_dtype)


def _loss_kwargs(k, **outputs):
    """``_C.affine_path_loss``'s arguments in its order, ``outputs`` (pointers) after the mask."""
    return dict(v=_ptr(k["v"]), x1=_ptr(k["x1"]), x0=_ptr(k["x0"]), c=_ptr(k["c"]), d=_ptr(k["d"]),
                e=_ptr(k["e"]), rng=_ptr(k["rng"]), mask=_ptr(k["mask"]), mask_inner=k["inner"],
                mask_period=k["period"], **outputs, batch=k["batch"], per_sample=k["per"],
                dtype=_float_code(k["dtype"]), x_dtype=_float_code(k["x_dtype"]))


def affine_path_loss(v, x_1, x_0, c, d, e, rng, mask, grad_scale=None, grad=None):
    """Per-sample sums ``sum mask (v - (c x_1 + d x_0 + e eps))^2``, fp32 ``[B]``; with ``grad``,
    ``2 grad_scale mask (v - target)`` is written into it in the same pass."""
    k = _loss_inputs(v, x_1, x_0, c, d, e, rng, mask)
    dev = k["v"].device
    loss = torch.zeros(k["batch"], dtype=torch.float32, device=dev)
    gs = _coef(grad_scale, k["batch"], dev) if grad is not None else None
    dv = None
    if grad is not None:  # written directly when it is a contiguous buffer of the compute dtype
        dv = grad if grad.dtype == k["dtype"] and grad.is_contiguous() else _memory.empty_like(k["v"], k["dtype"])
    if k["v"].numel():
        ws = _loss_workspace(k["batch"], k["per"], k["v"])
        _run(_C.affine_path_loss, k["v"],
             **_loss_kwargs(k, grad_scale=_ptr(gs), dv=_ptr(dv), loss=_ptr(loss), workspace=_ptr(ws)))
    if dv is not None and dv is not grad:
        grad.copy_(dv)
    return loss


def _step_dtypes(x, p, q, noise):
    """(x's / noise's / out's compute dtype, p's / q's): p and q (a model's outputs) as they are
    when they share a bf16 / fp16 dtype beside an fp32 state (autocast's case), else one dtype."""
    if (_checks.read_as_is(p.dtype, x.dtype) and (q is None or q.dtype == p.dtype)
            and (noise is None or noise.dtype == x.dtype)):
        return torch.float32, p.dtype
    dtype = _common_dtype(x, p, q, noise)
    return dtype, dtype


def step_combine(x, p, q, A, B, C, N, rng, noise, out=None):
    """``A x + B p + C q + N z`` (``z``: ``noise`` or Gaussian stream 0); ``out`` may be ``x``."""
    use_noise = noise if N is not None else None
    dtype, p_dtype = _step_dtypes(x, p, q, use_noise)
    x_, z_ = _data(x, dtype), _data(use_noise, dtype)
    p_, q_ = _data(p, p_dtype), _data(q, p_dtype)
    batch, per = _sizes(x_)
    dev = x_.device
    A, B, C, N = (_coef(k, batch, dev) for k in (A, B, C, N))
    rng = _rng(rng, dev) if N is not None and noise is None else None
    res, direct = _target(out, x_, dtype)
    _step_kernel(x_, p_, q_, _ptr(A), _ptr(B), _ptr(C), _ptr(N), rng, z_, res, batch, per)
    if direct:
        return out
    return _finish(res, out, x.dtype)


def _step_kernel(x, p, q, A: int, B: int, C: int, N: int, rng, z, out, batch: int, per: int) -> None:
    """``_C.step_combine`` on contiguous tensors (x, z and out of one dtype, p and q of theirs: see
    ``_step_dtypes``); coefficients by address (0: none)."""
    if x.numel():
        _run(_C.step_combine, x, x=_ptr(x), p=_ptr(p), q=_ptr(q), A=A, B=B, C=C, N=N, rng=_ptr(rng),
             noise=_ptr(z), out=_ptr(out), batch=batch, per_sample=per, dtype=_float_code(x.dtype),
             p_dtype=_float_code(p.dtype))


_scratch = threading.local()


def _host_only(*tensors) -> None:
    for t in tensors:
        if t is not None and not t.is_cpu:
            raise ValueError(f"the float-coefficient entries take CPU tensors (their floats live in host memory), "
                             f"got a tensor on {t.device}")


def _float_rows(batch: int, *values: float) -> int:
    """Address of fp32 rows holding ``batch`` copies of each value, in one buffer per thread
    that every call reuses (the CPU kernels are synchronous): no tensor is built per call."""
    need = len(values) * batch
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < need:
        _scratch.buf = buf = torch.empty(max(need, 1024), dtype=torch.float32)
        _scratch.array = buf.numpy()
    a = _scratch.array
    for k, v in enumerate(values):
        a[k * batch:(k + 1) * batch] = v
    return buf.data_ptr()


def step_combine_floats(x, p, A: float, B: float, q=None, C: float = 0.0, out=None):
    """``A x + B p (+ C q)`` with float coefficients, for contiguous CPU tensors of one dtype (or
    p and q of one bf16 / fp16 dtype beside an fp32 x, see ``_step_dtypes``) that the caller has checked (``fastflow.ops.step_combine`` takes this path when it can):
    the coefficients go to the kernel as floats, not as three ``[B]`` tensors."""
    _host_only(x, p, q, out)
    res = out if out is not None else _memory.empty_like(x)
    n = x.numel()
    if n:
        _sync_threads()
        batch = x.shape[0]
        code = _C.step_combine_floats(x.data_ptr(), p.data_ptr(), 0 if q is None else q.data_ptr(), A, B, C,
                                      res.data_ptr(), batch, n // batch, _FLOAT_CODES[x.dtype],
                                      _FLOAT_CODES[p.dtype])
        _raise_status("step_combine_floats", code)
    return res


# ---------------------------------------------------------------- discrete ops
def mixture_path_sample(x_1, x_0, kappa, rng, noise, vocab_size: int, mask_id):
    """``x_1`` with probability ``kappa`` per sample, else the source token (int tokens)."""
    itype = x_1.dtype if x_1.dtype in _INDEX_CODES else torch.int64
    x1 = _data(x_1, itype)
    x0 = _data(x_0, itype)
    batch, per = _sizes(x1)
    dev = x1.device
    kappa = _coef(kappa, batch, dev)
    u = _data(noise, torch.float32)
    rng = _rng(rng, dev)
    out = torch.empty(x1.shape, dtype=itype, device=dev)
    if x1.numel():
        _run(_C.mixture_path_sample, x1, x1=_ptr(x1), x0=_ptr(x0), kappa=_ptr(kappa), rng=_ptr(rng),
             noise=_ptr(u), out=_ptr(out), batch=batch, per_sample=per, vocab=int(vocab_size),
             mask_id=-1 if mask_id is None else int(mask_id), itype=_INDEX_CODES[itype])
    return out.to(x_1.dtype)


def _grad_buffer(grad, z):
    """The buffer the kernel writes the gradient into (``grad`` itself when usable)."""
    if grad is None:
        return None, True
    if grad.dtype == z.dtype and grad.shape == z.shape and (grad.stride(-1) == 1 or grad.shape[-1] == 1):
        return grad, True
    return _memory.empty_like(z), False


def cross_entropy(logits, x_1, ignore_index: int, grad_scale, grad):
    """Row losses ``logsumexp(z) - z[x_1]`` (fp32 ``[N]``); writes ``grad`` when given."""
    z = _rows(logits)
    N, V = z.shape
    x1 = _data(x_1, torch.int64)
    gs = _coef(grad_scale, N, z.device) if grad is not None else None
    g, direct = _grad_buffer(grad, z)
    loss = torch.empty(N, dtype=torch.float32, device=z.device)
    if N:
        ws = _row_workspace(N, V, z)  # named: freed after the launch (stream-ordered), not before
        _run(_C.cross_entropy, z, logits=_ptr(z), row_stride=_row_stride(z), x1=_ptr(x1),
             ignore_index=int(ignore_index), grad_scale=_ptr(gs), grad=_ptr(g),
             grad_stride=_row_stride(g) if g is not None else 0, loss=_ptr(loss),
             workspace=_ptr(ws), rows=N, vocab=V, dtype=_float_code(z.dtype))
    if not direct:
        grad.copy_(g)
    return loss


def generalized_kl(logits, x_1, x_t, jump, ignore_index: int, grad_scale, grad):
    """Generalized KL row losses (fp32 ``[N]``); writes ``grad`` when given."""
    z = _rows(logits)
    N, V = z.shape
    x1, xt = _data(x_1, torch.int64), _data(x_t, torch.int64)
    j = _coef(jump, N, z.device)
    gs = _coef(grad_scale, N, z.device) if grad is not None else None
    g, direct = _grad_buffer(grad, z)
    loss = torch.empty(N, dtype=torch.float32, device=z.device)
    if N:
        ws = _row_workspace(N, V, z)
        _run(_C.generalized_kl, z, logits=_ptr(z), row_stride=_row_stride(z), x1=_ptr(x1), xt=_ptr(xt),
             jump=_ptr(j), ignore_index=int(ignore_index), grad_scale=_ptr(gs), grad=_ptr(g),
             grad_stride=_row_stride(g) if g is not None else 0, loss=_ptr(loss),
             workspace=_ptr(ws), rows=N, vocab=V, dtype=_float_code(z.dtype))
    if not direct:
        grad.copy_(g)
    return loss


def jump_step(logits, x_t, h, r1, r0, p0, source: int, mask_id: int, temperature: float,
              final: bool, probs: bool, rng, noise_token, noise_race, noise_race_p0):
    """One CTMC jump step per row (see ``fastflow.reference.jump_step``); rows that cannot
    jump are never read."""
    z = _rows(logits)
    N, dev = z.shape[0], z.device
    h, r1, r0 = (_coef(k, N, dev) for k in (h, r1, r0))
    return _jump(z, x_t, _ptr(h), _ptr(r1), _ptr(r0), p0, source, mask_id, temperature, final, probs, rng,
                 noise_token, noise_race, noise_race_p0)


def jump_step_floats(logits, x_t, h: float, r1: float, r0: float, p0, source: int, mask_id: int,
                     temperature: float, final: bool, probs: bool, rng):
    """``jump_step`` with one time step and rates for every row (the discrete solver's step on
    the CPU): the three per-row arrays come from the reused float rows, not three tensors."""
    _host_only(logits, x_t, p0)
    z = _rows(logits)
    N = z.shape[0]
    ptr = _float_rows(N, h, r1, r0)
    return _jump(z, x_t, ptr, ptr + 4 * N, ptr + 8 * N, p0, source, mask_id, temperature, final, probs, rng,
                 None, None, None)


def _jump(z, x_t, h, r1, r0, p0, source, mask_id, temperature, final, probs, rng, noise_token, noise_race,
          noise_race_p0):
    N, V = z.shape
    itype = x_t.dtype if x_t.dtype in _INDEX_CODES else torch.int64
    xt = _data(x_t, itype)
    dev = z.device
    p0f = _data(p0, torch.float32) if p0 is not None else None
    logp0 = torch.log(p0f) if p0f is not None else None
    nt, nr, nr0 = (_data(u, torch.float32) for u in (noise_token, noise_race, noise_race_p0))
    rng = _rng(rng, dev)
    out = torch.empty(xt.shape, dtype=itype, device=dev)
    if N:
        ws = _row_workspace(N, V, z)
        _run(_C.jump_step, z, logits=_ptr(z), row_stride=_row_stride(z), xt=_ptr(xt),
             itype=_INDEX_CODES[itype], h=h, r1=r1, r0=r0, p0=_ptr(p0f),
             logp0=_ptr(logp0), source=int(source), mask_id=-1 if mask_id is None else int(mask_id),
             temperature=float(temperature), final_step=bool(final), probs=bool(probs), rng=_ptr(rng),
             noise_token=_ptr(nt), noise_race=_ptr(nr), noise_race_p0=_ptr(nr0), out=_ptr(out),
             workspace=_ptr(ws), rows=N, vocab=V, dtype=_float_code(z.dtype))
    return out.to(x_t.dtype)


def scale_rows(grad, g):
    """``grad[i, :] *= g[i]`` in place, rows with ``g == 1`` untouched (no host sync)."""
    N = grad.shape[0]
    gf = _coef(g, N, grad.device)
    if grad.dim() != 2 or (grad.stride(-1) != 1 and grad.shape[-1] > 1) or grad.dtype not in _FLOAT_CODES:
        grad.copy_(grad.float() * gf.view(-1, *([1] * (grad.dim() - 1))))  # (fp32 product, as the kernels)
        return
    if grad.numel():
        _run(_C.scale_rows, grad, grad=_ptr(grad), row_stride=_row_stride(grad), g=_ptr(gf), rows=N,
             cols=grad.shape[1], dtype=_float_code(grad.dtype))


# ---------------------------------------------------------------- test helpers
def philox_stream(seed: int, offset: int, n: int, kind: str = "uint32", device="cpu") -> torch.Tensor:
    """The element-wise stream computed by the compiled Philox (tests compare it with
    ``fastflow.reference.philox``): kind ``uint32`` (as int64), ``uniform``, ``normal`` or
    ``open_uniform``."""
    kinds = {"uint32": 0, "uniform": 1, "normal": 2, "open_uniform": 3}
    code = kinds[kind]
    device = torch.device(device)
    out = torch.empty(n, dtype=torch.int32 if code == 0 else torch.float32, device=device)
    rng = torch.tensor([seed, offset], dtype=torch.int64, device=device)
    if n:
        _run(_C.philox_stream, out, rng=_ptr(rng), seed=int(seed), offset=int(offset), n=n, kind=code,
             out=_ptr(out))
    if code == 0:
        return out.to(torch.int64) & 0xFFFFFFFF
    return out
