"""torch.library plumbing shared by the ops: one custom op per backend op, dispatched at run time.

Each ``fastflow::<op>`` takes the resolved backend name as its last argument, so the op is
opaque to torch.compile (it traces the call, not the kernel) and the same graph runs on any
backend.

The custom-op layers (schema checks, autograd and ADInplaceOrView keys, redispatch) cost
tens of microseconds a call, more than a small ODE step's kernel. ``direct`` says when
calling the backend function itself is indistinguishable from calling the op, and the
public ops then skip those layers: no autograd to record, nothing tracing (torch.compile,
fake or functional tensors, dispatch or function modes, jit tracing) and no profiler to name
the op. A direct call that writes into an ``out=`` tensor bumps its version counter as the
mutating custom op would, so autograd still catches a saved tensor overwritten later.

``transformed`` says when a call runs under a ``torch.func`` transform (``grad``, ``vmap``,
``jvp``, ``jacrev``, ...) or carries forward-mode AD tangents: the kernels read raw memory, so
they would drop the tangents and batch dimensions, and torch's custom ops refuse the
transforms' autograd. Such a call runs the reference backend's plain PyTorch math (no fused
gradient buffer), which every transform composes with. Float64 data runs the same way
(``pick``'s ``wide``): every kernel computes in fp32, the reference's math keeps float64.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as _forward_ad

from .. import _checks, backends
from .._transforms import transformed  # noqa: F401  (the ops import it from here, with pick)


def run(op: str, backend: str, *args):
    if backend == backends.DEFAULT:  # a compiled graph's: this thread's default, for the data's device
        backend = backends.resolve_name(op, args[0].device.type)
    return backends.kernel(op, backend)(*args)


def pick(op: str, like: torch.Tensor, backend: str | None, composed: bool = False, wide: str | None = None) -> str:
    """The backend that runs ``op`` on ``like``'s device; ``composed`` (a ``transformed`` call)
    or ``wide`` (the name of a float64 argument, see ``_checks.wide``): the reference, unless
    another was asked for (then an error that says why)."""
    if composed or wide:
        _refuse_fused(op, backend, wide)
        backend = "reference"  # (resolved as any other: torch.compile evaluates resolve_name, imports included)
    elif (backend is None or backend == backends.DEFAULT) and torch.compiler.is_compiling():
        backend = backends.traced_block()  # a use_backend block inside the traced function: its name
        if backend is None:
            return backends.DEFAULT  # resolved when the graph runs, by the thread that runs it (see backends)
    return backends.resolve_name(op, "cpu" if like.is_cpu else like.device.type, backend)


def _refuse_fused(op: str, backend: str | None, wide: str | None) -> None:
    name = backend if backend is not None and backend != backends.DEFAULT else backends.get_backend()
    if name in ("auto", "reference"):
        return
    if wide:
        raise TypeError(f"{wide}: backend={name!r} takes float32, bfloat16 or float16 tensors (its kernels "
                        "compute in fp32), got torch.float64; 'auto' and 'reference' run float64 as the "
                        "reference backend's PyTorch math, in float64")
    raise ValueError(f"backend={name!r} cannot run {op} under a torch.func transform or forward-mode AD: "
                     "its kernels carry no tangents or batch dimensions (use 'auto' or 'reference', "
                     "which runs the plain PyTorch math there)")


def check_wide(backend: str | None, **named) -> None:
    """At a public entry point whose tensors reach the ops under other names: a float64 one among
    ``named`` with a fused backend asked for raises ``pick``'s TypeError, naming it as the caller
    knows it."""
    wide = _checks.wide(**named)
    if wide:
        _refuse_fused("", backend, wide)


def direct(*tensors, autograd: bool = False) -> bool:
    """Whether the op may run as a plain call to its backend function (see the module doc);
    ``autograd=True``: as an ``eager_function`` that records its own backward."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
            or torch._C._is_torch_function_mode_enabled() or torch.autograd._profiler_enabled()
            or torch._C._get_tracing_state() is not None  # torch.jit.trace / ONNX export
            or torch._C._are_functorch_transforms_active()):  # torch.func: wrapped tensors
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or (grad and t.requires_grad and not autograd)):
            return False
    return not (_forward_ad._current_level >= 0 and transformed(*tensors))


def eager_function(impl, setup_context, backward):
    """``impl`` with the autograd formulas registered on its custom op: the same backward,
    recorded by a ``torch.autograd.Function`` without the custom-op layers, and nothing
    recorded when no input requires grad (for callers that checked ``direct``).

    ``total=True`` (a loss op, for a ``mean`` or ``sum`` reduction): the call returns the sum
    of ``impl``'s first output instead of its outputs, and ``backward`` receives the scalar
    upstream gradient in place of the per-row one (it broadcasts alike): one autograd node
    instead of two for ``loss.backward()``, and one output for autograd to wrap."""
    def function(total: bool):
        class Fused(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *args):  # ctx-style: no setup_context, no per-call inspect.signature
                out = impl(*args)
                setup_context(ctx, args, out)
                if total:
                    return out[0].sum()
                # the gradient buffer and the row losses carry no gradient (overwritten logits' rows,
                # a view of an input, stay as they are: autograd must see them as such)
                ctx.mark_non_differentiable(*(o for o in out[1:] if not o._is_view()))
                return out

            @staticmethod
            def backward(ctx, *grads):
                return backward(ctx, grads[0], None, None) if total else backward(ctx, *grads)

        Fused.__name__ = f"{impl.__name__.strip('_')}_{'total' if total else 'eager'}"
        # Function.apply's Python layer only unwraps functorch tensors (``direct`` refuses
        # those); the C++ apply under it records the same node (~40 us less with cold caches)
        return super(torch.autograd.Function, Fused).apply

    record = (function(False), function(True))

    def call(*args, total: bool = False):
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return record[total](*args)
        out = impl(*args)
        return out[0].sum() if total else out

    return call
