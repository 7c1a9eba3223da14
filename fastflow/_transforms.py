"""What torch.func and forward-mode AD are doing to a call, for the code that must know.

The fused kernels read raw memory: under a ``grad`` / ``jvp`` / ``vmap`` transform (wrapped
tensors) or with a forward-mode tangent they would drop the tangents and batch dimensions, so
the ops run the reference math there (``fastflow.ops._registry``), the checks read what is
under the wrappers, and host-side code (NumPy, Python floats) steps aside or refuses.
``functionalize`` is not counted: it keeps values and carries no tangents, and graphs traced
through it keep fastflow's custom ops.
"""
from __future__ import annotations

import functools
import sys

import torch
import torch.autograd.forward_ad as _forward_ad
from torch._C import _functorch


def _active() -> tuple:
    """The names of the torch.func transforms on the stack (``Vmap``, ``Grad``, ``Jvp``), if any.
    (torch.compile calls it while it traces, and bakes the answer in: the stack is not traceable;
    a tuple, as Dynamo's constants cannot be sets.)"""
    if not torch._C._are_functorch_transforms_active():
        return ()
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    return tuple(n for n in (i.key().name for i in retrieve_all_functorch_interpreters()) if n != "Functionalize")


_active._dynamo_marked_constant = True  # see backends._constant_under_compile


def transformed(*tensors) -> bool:
    """A ``grad`` / ``jvp`` / ``vmap`` transform is at work, or one of ``tensors`` carries a
    forward-mode tangent."""
    if _active():
        return True
    return _forward_ad._current_level >= 0 and any(  # (-1 outside every dual_level)
        has_tangent(t) for t in tensors)


def has_tangent(t) -> bool:
    return t is not None and _forward_ad._current_level >= 0 and _forward_ad.unpack_dual(t).tangent is not None


def vmapped() -> bool:
    """Inside ``vmap``: a tensor's values cannot pick rows or branches (no ``nonzero``, ``bool``)."""
    return "Vmap" in _active()


def differentiated(t) -> bool:
    """``t`` itself is differentiated by a transform (a ``grad`` level tracks it, or ``vmap``
    batches it) or carries a tangent: code that reads it as Python numbers would lose its
    derivative. (A constant made inside the transformed function is wrapped too, untracked.)"""
    if t is None:
        return False
    if _active():  # (the wrappers first: a batched tensor under jvp refuses unpack_dual)
        x = t
        while wrapped(x):
            if x.requires_grad or _functorch.is_batchedtensor(x):
                return True
            x = _functorch.get_unwrapped(x)
    return has_tangent(t)


def wrapped(x: torch.Tensor) -> bool:
    return torch._C._are_functorch_transforms_active() and _functorch.is_functorch_wrapped_tensor(x)


def unwrapped(x: torch.Tensor) -> torch.Tensor:
    """The tensor under the transforms' wrappers (``vmap``'s holds every element's values: a check
    of it checks them all; a wrapped one refuses ``bool`` under ``vmap``)."""
    while wrapped(x):
        x = _functorch.get_unwrapped(x)
    return x


def eager_under_compile(fn):
    """``fn`` runs eagerly under torch.compile, between two graphs, as a C extension's call would:
    host code (NumPy, SciPy, iterative solvers whose loops Dynamo would unroll for minutes).

    ``torch.compiler.disable`` without importing torch._dynamo (1.2 s) with fastflow: torch.compile
    imports it before it traces a call, which is when the wrapper is made. Dynamo graph-breaks at
    a function marked ``_torchdynamo_disable`` (``fullgraph=True`` refuses the break) and calls it
    as Python; from then on it skips this wrapper's frames, and ``fn``'s run with its frame hook off.
    """
    @functools.wraps(fn)
    def call(*args, **kwargs):
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:  # nothing compiles
            return fn(*args, **kwargs)
        return _outside_dynamo(dynamo, fn)(*args, **kwargs)

    call._torchdynamo_disable = True
    call._torchdynamo_disable_msg = _WHY_EAGER
    return call


def _outside_dynamo(dynamo, fn):
    found = _OUTSIDE_DYNAMO.get(fn)
    if found is None:
        for code in (_WRAPPER_CODE, _outside_dynamo.__code__):  # (Dynamo traces them once, then skips)
            dynamo.eval_frame.skip_code(code)
        found = _OUTSIDE_DYNAMO[fn] = dynamo.disable(fn, reason=_WHY_EAGER)
    return found


_WHY_EAGER = "fastflow: host code (NumPy, SciPy or a solver's loop) runs between graphs"


_OUTSIDE_DYNAMO: dict = {}
_WRAPPER_CODE = eager_under_compile(len).__code__
