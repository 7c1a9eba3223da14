"""NVTX ranges for profiling the benchmark under Nsight Systems.

Enabled with ``FASTFLOW_NVTX=1``; otherwise ``nvtx_range`` returns one shared no-op context
(no allocation, no call into NVTX). The ``nvtx`` package is an optional import; without it
the ranges go through ``torch.cuda.nvtx`` when CUDA is available, and are no-ops on CPU.

    FASTFLOW_NVTX=1 nsys profile -t cuda,nvtx python -m benchmarks --quick
"""
from __future__ import annotations

import contextlib
import os

_NULL = contextlib.nullcontext()

try:  # optional dependency
    import nvtx as _nvtx_pkg
except Exception:  # pragma: no cover - depends on the environment
    _nvtx_pkg = None


def enabled() -> bool:
    return os.environ.get("FASTFLOW_NVTX") == "1"


class _TorchRange:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        import torch

        torch.cuda.nvtx.range_push(self.name)
        return self

    def __exit__(self, *exc):
        import torch

        torch.cuda.nvtx.range_pop()
        return False


def nvtx_range(name: str):
    """A context manager marking ``name`` on the NVTX timeline (a no-op unless enabled)."""
    if not enabled():
        return _NULL
    if _nvtx_pkg is not None:
        return _nvtx_pkg.annotate(name, domain="fastflow")
    import torch

    if torch.cuda.is_available():
        return _TorchRange(name)
    return _NULL


def wrap(name: str, fn):
    """``fn`` with every call inside ``nvtx_range(name)``; ``fn`` itself when disabled."""
    if not enabled():
        return fn

    def ranged(*args, **kwargs):
        with nvtx_range(name):
            return fn(*args, **kwargs)

    return ranged
