"""Argument checks shared by every op: the error names the argument, nothing is clamped.

Shapes, dtypes and devices are always checked. Value checks (t in [0, 1], token ids < V)
run eagerly on CPU tensors; on other devices they use ``torch._assert_async`` (no host
sync) unless ``FASTFLOW_CHECKS=1`` asks for eager checks (DESIGN.md principle 7).
"""
from __future__ import annotations

import math
import os
from numbers import Real

import torch

from . import _transforms

try:  # the compiled module's host check, when it is built (else NumPy's, a few microseconds more)
    from ._C import all_within as _compiled_within
except Exception:  # (csrc_backend says why the compiled backends are missing)
    _compiled_within = None
_WITHIN_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, torch.float64: 3}

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the kernels take (fp32 arithmetic)
LOW_DTYPES = (torch.bfloat16, torch.float16)
REAL_DTYPES = FLOAT_DTYPES + (torch.float64,)  # what the public ops take: float64 runs the reference math
FP32_MAX = 3.4028234663852886e38
F64_MAX = 1.7976931348623157e308
INDEX_DTYPES = (torch.int64, torch.int32)


def choice(name: str, value, options):
    if value not in options:
        raise ValueError(f"{name}: expected one of {tuple(options)}, got {value!r}")
    return value


def tensor(name: str, x, dtypes=None, ndim_min: int = 0) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if x.dim() < ndim_min:
        raise ValueError(f"{name}: expected at least {ndim_min} dimensions, got shape {tuple(x.shape)}")
    return x


def coef_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype of the per-sample coefficients of data ``like``: float64 for float64 data (which
    the reference backend computes in float64), else fp32 (the kernels' arithmetic)."""
    return torch.float64 if like.dtype is torch.float64 else torch.float32


def widest(*tensors) -> torch.Tensor:
    """The first float64 tensor among ``tensors`` (else the first): the ``like`` of coefficients
    for a call that any float64 input sends to the float64 math."""
    for t in tensors:
        if t is not None and t.dtype is torch.float64:
            return t
    return tensors[0]


def wide(**named) -> str | None:
    """The name of the first float64 tensor among ``named`` (None if none): the call then runs
    the reference backend's PyTorch math in float64, as flow_matching would, since every kernel
    computes in fp32 (``fastflow.ops._registry.pick`` says so to a caller who asked for one)."""
    for name, t in named.items():
        if t is not None and t.dtype is torch.float64:
            return name
    return None


def same_device(name: str, x: torch.Tensor, ref: torch.Tensor):
    if x.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device}, got {x.device}")


def same_shape(name: str, x: torch.Tensor, ref: torch.Tensor, ref_name: str):
    if x.shape != ref.shape:
        raise ValueError(f"{name}: expected the shape of {ref_name} {tuple(ref.shape)}, got {tuple(x.shape)}")
    same_device(name, x, ref)


def _span(t: torch.Tensor) -> tuple[int, int]:
    """The bytes ``[first, last]`` an (non-empty) tensor's elements occupy."""
    first = t.data_ptr()
    return first, first + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride())) * t.element_size()


def same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` are the same elements (a bf16 view of an fp32 tensor's memory is not: its
    element i is half of the other's element i / 2)."""
    return (a.data_ptr() == b.data_ptr() and a.dtype == b.dtype and a.shape == b.shape
            and a.stride() == b.stride())


def output(name: str, out: torch.Tensor, **inputs) -> None:
    """``out`` may be one of ``inputs`` itself (an element is read before it is written), but
    neither share memory with them otherwise nor with itself: the kernels would read values they
    already overwrote."""
    if out.numel() == 0 or torch.compiler.is_compiling() or _transforms.transformed():
        return  # (a traced graph has no addresses to compare; torch.func's wrappers hide them)
    if frozen(out):
        raise ValueError(f"{name}: an inference tensor cannot be written outside inference_mode (as in torch)")
    if out.is_neg():
        raise ValueError(f"{name}: a view with the negative bit (a conj() view's imaginary part); the kernels "
                         "write memory as it is (pass a tensor of its own)")
    if torch._debug_has_internal_overlap(out) == 1:
        raise ValueError(f"{name}: its elements share memory (an expanded tensor?); it cannot be written")
    lo, hi = _span(out)
    for other_name, t in inputs.items():
        if t is None or t.numel() == 0 or t.device != out.device or same_view(t, out):
            continue
        if not (t.is_contiguous() and out.is_contiguous()):
            continue  # interleaved views may share a span without an element (torch lets them through too)
        t_lo, t_hi = _span(t)
        if t_lo <= hi and lo <= t_hi:
            raise ValueError(f"{name}: shares memory with {other_name} without being it (a shifted or "
                             "reshaped view): the result would read overwritten values")


def read_as_is(low: torch.dtype, wide: torch.dtype) -> bool:
    """Whether the compiled kernels read a ``low`` operand group beside a ``wide`` one as they are
    (csrc's dispatch_float_pair): bf16 / fp16 beside fp32, autocast's model output against fp32
    data or state. (The same dtype needs no asking.)"""
    return wide is torch.float32 and low in LOW_DTYPES


def frozen(out: torch.Tensor) -> bool:
    """An inference tensor outside inference_mode, which torch refuses to write (eager only:
    torch.compile cannot ask)."""
    return out.is_inference() and not torch.is_inference_mode_enabled()


def _eager(x: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():  # a traced graph asserts asynchronously, never branches
        return False
    return x.is_cpu or os.environ.get("FASTFLOW_CHECKS") == "1"  # (is_cpu: no device object built)


def _on_host(x: torch.Tensor) -> bool:
    """A plain CPU tensor checked eagerly, on the host: the compiled check or NumPy reads its
    memory (a fraction of the torch ops' time on the small tensors checks see)."""
    return (type(x) is torch.Tensor and x.is_cpu and not torch.compiler.is_compiling()  # (= _eager on CPU)
            and not torch._C._are_functorch_transforms_active())  # (which refuse .numpy(), wrapped or not)


def _host_in_range(x: torch.Tensor, lo: float, hi: float) -> bool:
    """Whether a CPU float vector lies in [lo, hi] (NaN fails every comparison): one call of the
    compiled module (~0.3 us hot; NumPy's reductions cost a call ~4, ~60 with cold caches). Without
    it, up to 128 values as a Python list (~30 us cold), else NumPy."""
    code = _WITHIN_CODES.get(x.dtype)
    if _compiled_within is not None and code is not None and x.is_cpu and x.is_contiguous() and not x.is_neg():
        return _compiled_within(x.data_ptr(), x.numel(), code, float(lo), float(hi))
    if x.numel() <= 128:
        return all(lo <= v <= hi for v in x.tolist())
    if x.dtype is torch.bfloat16:  # (which NumPy has no type for)
        x = x.float()
    x = x.resolve_neg()  # (a negative view's bit, which .numpy() refuses)
    a = x.detach().numpy()
    # the extremes compared as Python floats: NumPy would round the bounds to the array's dtype
    # (fp32's rounds +-F64_MAX to +-inf, with a warning, and infinite values then pass)
    return lo <= float(a.min()) and float(a.max()) <= hi


def values(name: str, ok: torch.Tensor, what: str):
    """Raise ValueError(name ...) unless ``ok`` is all True (asynchronously off CPU)."""
    ok = _transforms.unwrapped(ok)
    ok = ok if ok.dim() == 0 else ok.all()
    if _eager(ok):
        if not bool(ok):
            raise ValueError(f"{name}: {what}")
    else:
        torch._assert_async(ok, f"{name}: {what}")


def scheduled(coefficients: dict, *names: str, infinite: bool = False) -> None:
    """A scheduler's coefficients ``names`` are finite at the times asked (a derivative that
    diverges at t = 0 or 1, as t^n's for n < 1 or a VP schedule's, would make NaN of the data);
    ``infinite=True``: only not NaN (where the caller takes the limit)."""
    top = math.inf if infinite else F64_MAX
    cs = [coefficients[n] for n in names]
    if all(_on_host(c) and _host_in_range(c, -top, top) for c in cs):
        return  # (the common case: a few microseconds, where torch's ops take 15)
    what = f"the scheduler's {' / '.join(names)} are {'NaN' if infinite else 'not finite'} at these times"
    within("t", torch.stack(cs), what, -top, top)


def within(name: str, x: torch.Tensor, what: str, lo=-math.inf, hi=math.inf) -> None:
    """Raise ValueError(name: what) unless every element of ``x`` lies in [lo, hi] (NaN never
    does): on the host for a plain CPU tensor (a few microseconds where the torch ops take 15),
    else as ``values``."""
    if _on_host(x):
        if not _host_in_range(x.reshape(-1), lo, hi):
            raise ValueError(f"{name}: {what}")
        return
    values(name, (x >= lo) & (x <= hi), what)


def tokens(name: str, x: torch.Tensor, vocab_size: int, ignore_index: int | None = None):
    tensor(name, x, INDEX_DTYPES)
    if ignore_index is not None and not _representable(ignore_index, x.dtype):
        ignore_index = None  # (no token can be it; torch would compare with it wrapped)
    what = f"token ids must lie in [0, {vocab_size})"
    if _on_host(x):
        a = x.numpy()
        if a.size == 0 or (a.min() >= 0 and a.max() < vocab_size):
            return
        ok = (a >= 0) & (a < vocab_size)
        if ignore_index is not None:
            ok |= a == ignore_index
        if not ok.all():
            raise ValueError(f"{name}: {what}")
        return
    ok = (x >= 0) & (x < vocab_size)
    if ignore_index is not None:
        ok = ok | (x == ignore_index)
    values(name, ok, what)


def skipped_token(x: torch.Tensor, ignore_index: int | None) -> int:
    """The id the losses skip in token tensor ``x``, as ``x``'s dtype holds it: torch compares an
    int32 tensor with a wider number wrapped (2**32 + 5 as 5). Where no token can be
    ``ignore_index`` (None, or outside the dtype), a negative id that ``tokens`` refused."""
    if ignore_index is not None and _representable(ignore_index, x.dtype):
        return ignore_index
    return max(torch.iinfo(x.dtype).min, -(2**62))


def _representable(value: int, dtype: torch.dtype) -> bool:
    info = torch.iinfo(dtype)
    return info.min <= value <= info.max


def coefficient(name: str, value, batch: int, like: torch.Tensor, lo=None, hi=None,
                finite: bool = False) -> torch.Tensor:
    """A float or a ``[B]`` / scalar tensor -> ``[B]`` on ``like``'s device, fp32 (float64 for
    float64 ``like``, see ``coef_dtype``); NaN refused, and values outside [lo, hi], and
    infinities when ``finite``."""
    dtype = coef_dtype(like)
    if not isinstance(value, torch.Tensor):  # a number: checked as one, then filled in
        if type(value) is not float and (isinstance(value, bool) or not isinstance(value, Real)):
            raise TypeError(f"{name}: expected a float or a tensor, got {type(value).__name__}")
        return torch.full((batch,), scalar(name, value, lo, hi, finite, _top(dtype)), dtype=dtype, device=like.device)
    if finite:  # the coefficients' largest finite values as the bounds
        lo, hi = -_top(dtype) if lo is None else lo, _top(dtype) if hi is None else hi
    # a scalar, [B], or one per sample broadcast against the data ([B, 1, 1, 1], as flow_matching's
    # conversions take t)
    if value.dim() > 0 and (value.shape[0] not in (1, batch) or any(n != 1 for n in value.shape[1:])):
        raise ValueError(f"{name}: expected a scalar or shape [{batch}] (or [{batch}, 1, ...]), got {tuple(value.shape)}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name}: expected a real floating tensor, got {value.dtype}")
    if value.device != like.device and value.device.type == "meta":  # (a CPU or GPU one is moved)
        raise ValueError(f"{name}: expected values on {like.device}, got a meta tensor (it holds none)")
    out = value if value.dtype is dtype and value.device == like.device else \
        value.to(device=like.device, dtype=dtype)  # a no-op .to() is still a dispatcher call
    if not (out.dim() == 1 and out.shape[0] == batch and out.is_contiguous()):
        out = out.reshape(-1).expand(batch).contiguous()
    if _on_host(out):
        if not _host_in_range(out, -math.inf if lo is None else lo, math.inf if hi is None else hi):
            raise ValueError(f"{name}: values {_allowed(lo, hi)}")
    elif lo is None and hi is None:  # the common case: one reduction, no element-wise mask
        values(name, ~out.isnan().any(), "values must not be NaN")
    else:
        ok = out >= lo if lo is not None else ~out.isnan()  # NaN fails every comparison
        if hi is not None:
            ok &= out <= hi
        values(name, ok, f"values {_allowed(lo, hi)}")
    return out


def _allowed(lo, hi) -> str:
    if lo is None and hi is None:
        return "must not be NaN"
    if hi in (FP32_MAX, F64_MAX):
        return "must be finite" + ("" if lo == -hi else f" and >= {lo}")
    return f"must lie in [{lo}, {hi}] and not be NaN"


def per_sample(name: str, c: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A computed coefficient (a scheduler's output: one value, or one per sample in any shape,
    [B] or [B, 1, ...]) as a contiguous ``[batch]`` of data ``like``'s ``coef_dtype`` (already
    one: returned as is)."""
    dtype = coef_dtype(like)
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"{name}: expected its outputs as tensors (flow_matching's SchedulerOutput), "
                        f"got {type(c).__name__}")
    if c.dtype is dtype and c.shape == (batch,) and c.is_contiguous():  # (a negative bit: the backends resolve it)
        return c
    one_per_sample(batch, **{name: c})
    return c.resolve_neg().to(dtype).reshape(-1).expand(batch).contiguous()


def one_per_sample(batch: int, **named) -> None:
    """Computed coefficients (tensors or None) hold one value or one per sample: the kernels
    read ``batch`` of them (cheap; the public ops check values too, see ``coefficient``)."""
    for name, c in named.items():
        if c is not None and c.numel() not in (1, batch):
            raise ValueError(f"{name}: expected one value or one per sample ({batch}), got shape {tuple(c.shape)}")


def rng(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """A Philox ``(seed, offset)`` state: an int64 tensor of shape (2,) on ``like``'s device."""
    tensor(name, value, (torch.int64,))
    if value.shape != (2,):
        raise ValueError(f"{name}: expected a (seed, offset) tensor of shape (2,), got {tuple(value.shape)}")
    same_device(name, value, like)
    return value


def integer(name: str, value, lo: int, hi: int) -> int:
    """An int (anything with ``__index__`` but a bool) in [lo, hi]: token ids and counts reach
    the kernels as int64 and are compared with int32 / int64 tokens, so a wider one would wrap."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    value = value.__index__()
    if not lo <= value <= hi:
        raise ValueError(f"{name}: expected an int in [{lo}, {hi}], got {value}")
    return value


def uniforms(name: str, u: torch.Tensor) -> None:
    """Explicit uniforms (parity tests' noise): values in [0, 1], NaN refused."""
    values(name, ((u >= 0) & (u <= 1)).all(), "uniforms must lie in [0, 1]")


def vocab_size(value, tokens: torch.Tensor) -> int:
    """A vocabulary size in [1, 2^31 - 1] whose ids ``tokens``' dtype holds: every backend draws
    a uniform token as (w V) >> 32 from a 32-bit word w, which its arithmetic holds for V < 2^31."""
    return integer("vocab_size", value, 1, min(2**31 - 1, token_max(tokens.dtype) + 1))


def token_max(dtype: torch.dtype) -> int:
    """The largest token id tokens of ``dtype`` hold."""
    return torch.iinfo(dtype).max


def fp32_float(c) -> bool:
    """A Python float that fp32 holds as a finite number (NaN, inf and overflow: False)."""
    return type(c) is float and -FP32_MAX <= c <= FP32_MAX


def _top(dtype: torch.dtype) -> float:
    return F64_MAX if dtype is torch.float64 else FP32_MAX


def scalar(name: str, value, lo=None, hi=None, finite: bool = False, top: float = FP32_MAX) -> float:
    """A real number (not a bool), not NaN, within [lo, hi] (and within +-``top``, fp32's largest
    finite value unless float64 data raises it, when ``finite``), as a float."""
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, Real)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    if value != value:
        raise ValueError(f"{name}: must not be NaN")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if lo is not None and hi is not None else (
            f">= {lo}" if lo is not None else f"<= {hi}")
        raise ValueError(f"{name}: expected a value {bounds}, got {value}")
    if finite and not -top <= value <= top:
        raise ValueError(f"{name}: expected a finite value, got {value}")
    return float(value)


def scalar_or_coefficient(name: str, value, batch: int, like: torch.Tensor, lo=None, hi=None,
                          finite: bool = False):
    """A float stays a float (checked as ``scalar``), a tensor becomes ``coefficient``'s [B]:
    arithmetic on coefficients then costs no tensor op when they are plain numbers."""
    if type(value) is float or (isinstance(value, Real) and not isinstance(value, bool)):
        return scalar(name, value, lo, hi, finite, _top(coef_dtype(like)))
    return coefficient(name, value, batch, like, lo, hi, finite)


def time(name: str, t, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Times in [0, 1] as ``[B]`` (fp32, or float64 for float64 data)."""
    return coefficient(name, t, batch, like, lo=0.0, hi=1.0)
