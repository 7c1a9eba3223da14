"""The Triton backend of fastflow (``fastflow.triton_kernels``): one file per op, kernel and
launcher together, the same functions and signatures as ``fastflow.reference`` (see its
``__init__`` for the backend contract).

Runs on CUDA tensors, and on CPU tensors only under ``TRITON_INTERPRET=1`` (how CI tests
it; the variable must be set before Triton kernels are defined, i.e. before this package is
imported). Random numbers come from the project's own Philox (``_philox.py``), bit-identical
to ``fastflow.reference.philox`` whatever the installed Triton version.
"""
from __future__ import annotations

import functools
import os

import torch


def _on_data_device(fn):
    """``fn`` launched on its first tensor's device. Triton launches on the current CUDA
    device and its stream, whatever device the tensors are on: without this, ``cuda:1``
    data with device 0 current (a DDP script that never calls set_device) would be read by
    a kernel on device 0."""
    @functools.wraps(fn)
    def op(data, *args, **kwargs):
        if data.is_cuda and data.device.index != torch.cuda.current_device():
            with torch.cuda.device(data.device):
                return fn(data, *args, **kwargs)
        return fn(data, *args, **kwargs)
    return op


OPS = ("affine_path_sample", "affine_path_loss", "step_combine",
       "mixture_path_sample", "cross_entropy", "generalized_kl", "jump_step", "scale_rows")

try:
    import triton  # noqa: F401

    from .affine_path_sample import affine_path_sample
    from .affine_path_loss import affine_path_loss
    from .step_combine import step_combine
    from .mixture_path_sample import mixture_path_sample
    from .cross_entropy import cross_entropy
    from .generalized_kl import generalized_kl
    from .jump_step import jump_step
    from .scale_rows import scale_rows

    _IMPORT_ERROR = None
    for _name in OPS:  # launched on their data's device
        globals()[_name] = _on_data_device(globals()[_name])
except Exception as exc:  # triton missing or too old: the backend says why instead of failing
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

    def _missing(name):
        def op(*args, **kwargs):
            raise RuntimeError(f"triton: {name} is unavailable ({_IMPORT_ERROR})")
        op.__name__ = name
        return op

    for _name in OPS:
        globals()[_name] = _missing(_name)


def unavailable(device_type: str):
    """None when the Triton kernels can run on ``device_type``, else a sentence saying why not."""
    if _IMPORT_ERROR is not None:
        return f"triton: cannot import the Triton kernels ({_IMPORT_ERROR})."
    if device_type == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "triton: no CUDA device is available."
        return None
    if device_type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1":
            return None
        return "triton: runs on CPU tensors only under TRITON_INTERPRET=1 (the Triton interpreter)."
    return f"triton: does not run on {device_type} tensors (CUDA, or CPU under TRITON_INTERPRET=1)."
