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
"""
from __future__ import annotations

import ctypes
import os
import sys

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


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A contiguous ``torch.empty_like`` for an output the caller is about to write in full."""
    out = torch.empty_like(t, dtype=dtype, memory_format=torch.contiguous_format)
    return advise_huge_pages(out) if out.numel() * out.element_size() >= _MIN_BYTES else out
