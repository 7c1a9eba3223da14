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

Those outputs are also recycled (``empty_like``; ``recycled_like`` for the ODE solver's states
from 2 MiB), as PyTorch's CUDA caching allocator does on the GPU: faulting in a fresh 64 MiB
gradient on every call still cost 4 of a 512 x 32768 cross-entropy's 10 ms with huge pages.
Each such output lives on a block of memory owned by
its storage (a NumPy array held by the storage's deleter); the block returns to a free list
only when torch frees the storage, that is when no tensor, view, storage object or C++ holder
is left, whatever the torch version, and a storage moved to shared memory releases its block
the same way. At most ``_CACHE_ENTRIES`` free blocks and ``_CACHE_BYTES`` are kept
(``empty_cache()`` releases them; ``FASTFLOW_CPU_CACHE=0`` turns recycling off).
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import weakref

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


def _advise(start: int, nbytes: int) -> None:
    """Ask for huge pages over the 2 MiB-aligned interior of [start, start + nbytes)."""
    if _MADVISE is None or nbytes < _MIN_BYTES:
        return
    lo = (start + _HUGE - 1) // _HUGE * _HUGE
    hi = (start + nbytes) // _HUGE * _HUGE
    if hi > lo:
        _MADVISE(lo, hi - lo, _MADV_HUGEPAGE)  # advice only: a failure changes nothing


def advise_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """Ask for huge pages over the 2 MiB-aligned interior of ``t``'s memory (CPU, large only)."""
    if t.device.type == "cpu":
        storage = t.untyped_storage()
        _advise(storage.data_ptr(), storage.nbytes())
    return t


_CACHE_MIN_BYTES = 2 << 20  # recycled_like: below this, glibc's heap recycles well enough
_CACHE_ENTRIES = 4
_CACHE_BYTES = 2 << 30
_CACHE_ON = os.environ.get("FASTFLOW_CPU_CACHE", "1").strip() != "0"
_ALIGN = 64
_free: list = []  # free NumPy blocks (uint8, nbytes + _ALIGN), most recently freed last
_free_lock = threading.RLock()  # reentrant: a release may run inside a locked section (GC)


class _Usage:  # bytes of handed-out blocks
    now = 0   # in use
    peak = 0  # the most in use since reset_peak()
    base = 0  # in use at reset_peak()


_usage = _Usage()


def reset_peak() -> None:
    """Start a new peak of ``peak_bytes`` (the benchmarks' memory column: torch's profiler does
    not see memory that NumPy allocated)."""
    with _free_lock:
        _usage.peak = _usage.base = _usage.now


def peak_bytes() -> int:
    """The most bytes of recycled blocks in use at once since ``reset_peak``, above what was in
    use then."""
    return _usage.peak - _usage.base


def _after_fork() -> None:  # a lock held by another thread at fork() would never be released
    global _free_lock
    _free_lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _release(block) -> None:
    """Finalizer of a handed-out block's view: torch freed the storage, the block is free."""
    with _free_lock:
        _usage.now -= block.nbytes
        _free.append(block)
        while len(_free) > _CACHE_ENTRIES or sum(b.nbytes for b in _free) > _CACHE_BYTES:
            _free.pop(0)


def _block(nbytes: int):
    with _free_lock:
        for i in range(len(_free) - 1, -1, -1):  # the most recently freed first: warmest in cache
            if _free[i].nbytes == nbytes + _ALIGN:
                return _free.pop(i)
    import numpy as np
    b = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    _advise(b.ctypes.data, b.nbytes)
    return b


def _recycled(nbytes: int, dtype: torch.dtype, shape) -> torch.Tensor:
    """A tensor of ``shape`` on a free block (or a new one) that returns to the free list when
    torch frees the tensor's storage."""
    block = _block(nbytes)
    with _free_lock:
        _usage.now += block.nbytes
        _usage.peak = max(_usage.peak, _usage.now)
    start = (-block.ctypes.data) % _ALIGN
    view = block[start:start + nbytes]  # owned by the storage from here on
    weakref.finalize(view, _release, block).atexit = False
    storage = torch.from_numpy(view).untyped_storage()
    del view
    return torch.empty(0, dtype=dtype, device="cpu").set_(storage, 0, shape)


def empty_cache() -> None:
    """Release the free CPU blocks kept for reuse (tensors handed out stay valid)."""
    with _free_lock:
        _free.clear()


def recycled_like(t: torch.Tensor) -> torch.Tensor | None:
    """A contiguous tensor like ``t`` on recycled memory (CPU, 2 MiB to ``_CACHE_BYTES``), else
    None. For loops that drop a buffer of the same size each turn (the ODE solver's states):
    glibc trims or unmaps those, and each new one faults in again. Like every recycled output,
    its storage cannot grow (``resize_`` to more elements raises), as NumPy-backed tensors."""
    nbytes = t.numel() * t.dtype.itemsize if t.is_cpu else 0
    if _CACHE_ON and _CACHE_MIN_BYTES <= nbytes <= _CACHE_BYTES:
        return _recycled(nbytes, t.dtype, t.shape)
    return None


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A contiguous ``torch.empty_like`` for an output the caller is about to write in full:
    from 32 MiB (what glibc maps afresh on every allocation) recycled, else advised."""
    dtype = t.dtype if dtype is None else dtype
    nbytes = t.numel() * dtype.itemsize if t.is_cpu else 0
    if nbytes < _MIN_BYTES:
        return torch.empty_like(t, dtype=dtype, memory_format=torch.contiguous_format)
    if _CACHE_ON and nbytes <= _CACHE_BYTES:
        return _recycled(nbytes, dtype, t.shape)
    return advise_huge_pages(torch.empty_like(t, dtype=dtype, memory_format=torch.contiguous_format))
