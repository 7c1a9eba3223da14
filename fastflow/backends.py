"""The one dispatch point: which backend runs an op, and why not when it can't.

A backend is a module exposing the reference backend's functions (same names, same
signatures; see ``fastflow/reference/__init__.py``) plus ``unavailable(device_type)``,
which returns None when the backend can run on that device type and otherwise a sentence
saying why not. An op a backend does not define is unsupported there.

``auto`` picks, for CUDA tensors, ``cuda -> triton -> reference``, and for CPU tensors
``cpu -> reference``; Triton runs on CPU tensors only when asked for explicitly under
``TRITON_INTERPRET=1``. ``FASTFLOW_BACKEND`` (read at import) sets the default, ``set_backend`` /
``use_backend`` change it for the calling thread or asyncio task (a ``contextvars`` variable: a
new thread starts from ``FASTFLOW_BACKEND``), and every op takes ``backend=``.

Under torch.compile an op given no ``backend=`` reaches its custom op with the name ``DEFAULT``,
resolved when the graph runs (``fastflow.ops._registry.run``): a graph traced under one default then follows the
default of the thread that runs it, as eager calls do, without a recompile.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import os

import torch

NAMES = ("reference", "cpu", "triton", "cuda")
_MODULES = {
    "reference": "fastflow.reference",
    "cpu": "fastflow.csrc_backend",
    "triton": "fastflow.triton_kernels",
    "cuda": "fastflow.csrc_backend",
}
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
_choice: contextvars.ContextVar = contextvars.ContextVar("fastflow_backend", default=None)
DEFAULT = "default"  # (see the module doc; not a name users pass)
_traced_blocks: list = []  # the use_backend blocks open in the function being traced, innermost last
_loaded: dict[str, object] = {}
_import_errors: dict[str, str] = {}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or (name != "auto" and name not in NAMES):
        raise ValueError(f"backend: expected 'auto' or one of {NAMES}, got {name!r}")
    return name


_ENV_DEFAULT = os.environ.get("FASTFLOW_BACKEND") or None  # read once: os.environ costs a cold call ~15 us
if _ENV_DEFAULT is not None and _ENV_DEFAULT != "auto" and _ENV_DEFAULT not in NAMES:  # a typo: said now
    raise ValueError(f"FASTFLOW_BACKEND: expected 'auto' or one of {NAMES}, got {_ENV_DEFAULT!r}")
CPU_ISAS = ("baseline", "avx2", "avx512")  # the CPU kernels' variants (csrc/cpu/dispatch.cpp reads the variable)
if os.environ.get("FASTFLOW_CPU_ISA", "") not in ("",) + CPU_ISAS:  # (set but empty: unset)
    raise ValueError(f"FASTFLOW_CPU_ISA: expected one of {CPU_ISAS}, got {os.environ['FASTFLOW_CPU_ISA']!r}")


def _warn_missing_isa(asked: str) -> None:
    """A variant the processor cannot run is not an error (the widest runs), but is said."""
    try:
        from . import _C
    except Exception:  # (csrc_backend says why the compiled backends are missing)
        return
    if asked not in _C.cpu_isas():
        import warnings
        warnings.warn(f"fastflow: FASTFLOW_CPU_ISA={asked} asks for CPU kernels this processor cannot run; the "
                      f"CPU backend runs its widest variant, {_C.cpu_isa()}", RuntimeWarning, stacklevel=3)


if os.environ.get("FASTFLOW_CPU_ISA"):
    _warn_missing_isa(os.environ["FASTFLOW_CPU_ISA"])
_thread_choices = [False]  # whether any thread has chosen a default (else skip the thread-local)


def _default() -> str:
    name = _choice.get() if _thread_choices[0] else None
    if name is None:
        name = _check_name("auto" if _ENV_DEFAULT is None else _ENV_DEFAULT)
    return name


def set_backend(name: str) -> None:
    """Set the default backend ('auto', 'reference', 'cpu', 'triton', 'cuda') of this thread (or
    asyncio task: a task started later inherits it, a new thread does not)."""
    _choice.set(_check_name(name))
    _thread_choices[0] = True


@contextlib.contextmanager
def use_backend(name: str):
    """``with ff.use_backend("triton"): ...`` runs the block on that backend (in this thread or
    asyncio task: concurrent tasks each see their own). Inside a function torch.compile traces,
    the block's name is fixed in the graph (``traced_block``): Dynamo cannot trace a ContextVar."""
    if torch.compiler.is_compiling():
        _traced_blocks.append(_check_name(name))
        try:
            yield
        finally:
            _traced_blocks.pop()
        return
    token = _choice.set(_check_name(name))
    _thread_choices[0] = True
    try:
        yield
    finally:
        _choice.reset(token)


def traced_block() -> str | None:
    """The backend of the innermost ``use_backend`` block open in a traced function, or None."""
    return _traced_blocks[-1] if _traced_blocks else None


def _module(name: str):
    if name not in _loaded and name not in _import_errors:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name])
        except Exception as exc:  # a missing optional dependency or build
            _import_errors[name] = f"{type(exc).__name__}: {exc}"
    return _loaded.get(name)


def why_not(name: str, op: str, device_type: str) -> str | None:
    """None when backend ``name`` can run ``op`` on ``device_type``, else the reason."""
    module = _module(name)
    if module is None:
        return f"{name}: cannot be imported ({_import_errors[name]})"
    reason = module.unavailable(device_type) if hasattr(module, "unavailable") else None
    if reason is None and not hasattr(module, op):
        reason = f"{name}: does not implement {op}"
    if reason is None and name == "cpu" and device_type != "cpu":
        reason = "cpu: runs on CPU tensors only"
    if reason is None and name == "cuda" and device_type != "cuda":
        reason = "cuda: runs on CUDA tensors only"
    return reason


def _constant_under_compile(fn):
    """torch.compile calls the dispatch eagerly and bakes its answer into the graph.

    This is what ``torch.compiler.assume_constant_result`` does, without importing
    torch._dynamo (2 s) when fastflow is imported; tests/test_library.py's fullgraph
    compile fails if a torch release stops honouring the marker.
    """
    fn._dynamo_marked_constant = True
    return fn


@_constant_under_compile
def get_backend() -> str:
    """The default backend of this thread or task (read when traced: Dynamo cannot trace a
    ``ContextVar``, and the ops that read it under compile only check an error with it)."""
    return _default()


@_constant_under_compile
def resolve_name(op: str, device_type: str, backend: str | None = None) -> str:
    """The backend that will run ``op`` on ``device_type``; raises with reasons if none can.
    ``DEFAULT`` (a traced op's, handed on to another op) is the default, as None is."""
    name = _check_name(backend) if backend is not None and backend != DEFAULT else _default()
    key = (op, device_type, name)
    found = _resolved.get(key)
    if found is not None:
        return found
    found = _resolve(op, device_type, name)
    # every answer is fixed once the modules are imported, except Triton on CPU tensors, which
    # depends on TRITON_INTERPRET at call time (a cold call pays ~60 us for the reasons)
    if not (device_type == "cpu" and found == "triton"):
        _resolved[key] = found
    return found


_resolved: dict = {}


def _resolve(op: str, device_type: str, name: str) -> str:
    if name != "auto":
        reason = why_not(name, op, device_type)
        if reason is not None:
            raise ValueError(f"backend={name!r} cannot run {op} on {device_type} tensors: {reason}")
        return name
    reasons = []
    for candidate in _AUTO_ORDER.get(device_type, ("reference",)):
        reason = why_not(candidate, op, device_type)
        if reason is None:
            return candidate
        reasons.append(reason)
    raise ValueError(f"no backend can run {op} on {device_type} tensors: " + "; ".join(reasons))


def kernel(op: str, backend: str):
    """The function implementing ``op`` in the (already resolved) ``backend``."""
    return getattr(_module(backend), op)


def float_kernel(op: str, backend: str):
    """A backend's entry for ``op`` with plain-float coefficients (``<op>_floats``), or None.
    The csrc entries keep the floats in host memory: callers use them for CPU tensors only."""
    key = (op, backend)
    if key not in _float_kernels:
        _float_kernels[key] = getattr(_module(backend), op + "_floats", None)
    return _float_kernels[key]


_float_kernels: dict = {}


def available_backends(device_type: str | None = None) -> list[str]:
    """Backends that can run on ``device_type`` (default: on any device of this machine)."""
    import torch

    types = [device_type] if device_type else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [n for n in NAMES if any(why_not(n, "step_combine", d) is None for d in types)]


def explain() -> dict[str, str]:
    """Each backend and, where it can't run on this machine, why not."""
    import torch

    types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = {}
    for n in NAMES:
        reasons = [why_not(n, "step_combine", d) for d in types]
        out[n] = "available" if None in reasons else "; ".join(r for r in reasons if r)
    return out
