"""Fresh CPU output buffers that fault in as transparent huge pages.

On Linux a large new tensor is a fresh anonymous mapping (or fresh heap), and the first write
to each 4 KiB page costs a page fault that zeroes it: on the 2-core CPU of the benchmarks,
writing a new 64 MiB gradient took 20 ms, of which 16 were faults, against 4 ms with 2 MiB
pages. ``madvise(MADV_HUGEPAGE)`` on the buffer before the kernel writes it asks for huge
pages where the system's THP mode is ``madvise`` or ``always`` (it changes nothing
otherwise); PyTorch offers the same for every allocation behind ``THP_MEM_ALLOC_ENABLE=1``.
fastflow applies it only to the big outputs it allocates itself (gradients written in the
forward, sampled states) of at least 32 MiB: glibc's malloc maps blocks that large afresh on
every allocation (its largest mmap threshold), while smaller ones come back from its heap
already faulted in, where the advice would only cost a system call. ``FASTFLOW_HUGEPAGES=0``
turns it off.

Buffers that large are also kept for reuse (``empty_like``), as PyTorch's CUDA caching allocator
does on the GPU: faulting in a fresh 64 MiB gradient on every call still cost 4 of a 512 x 32768
cross-entropy's 10 ms with huge pages. A kept buffer is handed out again only when no tensor,
view or storage object outside the cache refers to its memory; at most ``_CACHE_ENTRIES``
buffers and ``_CACHE_BYTES`` are kept (``empty_cache()`` releases them, ``FASTFLOW_CPU_CACHE=0``
turns the cache off).
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading

import torch

_MIN_BYTES = 32 << 20  # glibc serves smaller blocks from its heap, reused without faults
_HUGE = 2 << 20
_MADV_HUGEPAGE = 14


def _madvise():
    if not sys.platform.startswith("linux") or os.environ.get("FASTFLOW_HUGEPAGES", "1").strip() == "0":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()


def advise_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Ask for huge pages over the 2 MiB-aligned interior of ``t``'s memory (CPU, large only)."""
    if _MADVISE is None or t.device.type != "cpu":
        return t
    storage = t.untyped_storage()
    nbytes = storage.nbytes()
    if nbytes < _MIN_BYTES:
        return t
    start = storage.data_ptr()
    lo = (start + _HUGE - 1) // _HUGE * _HUGE
    hi = (start + nbytes) // _HUGE * _HUGE
    if hi > lo:
        _MADVISE(lo, hi - lo, _MADV_HUGEPAGE)  # advice only: a failure changes nothing
    return t


_STORAGE_USES = getattr(torch._C, "_storage_Use_Count", None)


def sole_holder(t: torch.Tensor) -> bool:
    """Whether ``t`` is the only tensor on its storage and no storage object or C++ holder
    refers to it (False where this torch cannot tell)."""
    if _STORAGE_USES is None:
        return False
    return _STORAGE_USES(t.untyped_storage()._cdata) == 2  # + 1: the storage object asked


_CACHE_ENTRIES = 4
_CACHE_BYTES = 2 << 30
_CACHE_ON = os.environ.get("FASTFLOW_CPU_CACHE", "1").strip() != "0" and _STORAGE_USES is not None
_cache: list[torch.Tensor] = []  # flat uint8 buffers, most recently used last; never handed out
_cache_lock = threading.Lock()


def _cached(nbytes: int, dtype: torch.dtype, shape) -> torch.Tensor | None:
    """A new tensor of ``shape`` on the memory of a free cached buffer of ``nbytes``, else None."""
    with _cache_lock:  # one check-and-take at a time: two threads must not get the same memory
        for i, buf in enumerate(_cache):
            if buf.numel() == nbytes and sole_holder(buf):
                _cache.append(_cache.pop(i))
                return torch.empty(0, dtype=dtype).set_(buf.untyped_storage(), 0, shape)
    return None


def _keep(buf: torch.Tensor) -> None:
    with _cache_lock:
        _cache.append(buf)
        while len(_cache) > _CACHE_ENTRIES or sum(b.numel() for b in _cache) > _CACHE_BYTES:
            _cache.pop(0)


def empty_cache() -> None:
    """Release the CPU buffers kept for reuse (tensors handed out stay valid)."""
    with _cache_lock:
        _cache.clear()


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A contiguous ``torch.empty_like`` for an output the caller is about to write in full."""
    dtype = t.dtype if dtype is None else dtype
    nbytes = t.numel() * dtype.itemsize if t.device.type == "cpu" else 0
    if nbytes < _MIN_BYTES:
        return torch.empty_like(t, dtype=dtype, memory_format=torch.contiguous_format)
    shape = t.shape
    if _CACHE_ON and nbytes <= _CACHE_BYTES:
        out = _cached(nbytes, dtype, shape)
        if out is not None:
            return out
        buf = advise_huge_pages(torch.empty(nbytes, dtype=torch.uint8))
        _keep(buf)
        return torch.empty(0, dtype=dtype).set_(buf.untyped_storage(), 0, shape)
    return advise_huge_pages(torch.empty_like(t, dtype=dtype, memory_format=torch.contiguous_format))
