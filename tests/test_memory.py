"""fastflow._memory: big CPU outputs are advised to fault in as transparent huge pages."""
import sys

import pytest
import torch

from fastflow import _memory


def _vm_flags(addr: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds ``addr``."""
    flags, inside = [], False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "VmFlags:":
                flags = line.split()[1:]
    return flags


@pytest.mark.skipif(not sys.platform.startswith("linux") or _memory._MADVISE is None,
                    reason="madvise is Linux-only (or FASTFLOW_HUGEPAGES=0)")
def test_big_buffer_is_advised_and_usable():
    t = _memory.empty_like(torch.empty(1).expand(5, 1 << 21))  # 40 MiB, fresh
    p = t.data_ptr()
    probe = (p + (4 << 20)) // (2 << 20) * (2 << 20)  # an address inside the advised interior
    assert "hg" in _vm_flags(probe)
    t.fill_(1.5)
    assert float(t.sum()) == 1.5 * t.numel()


def test_small_and_strided_buffers_are_left_alone():
    small = torch.empty(100)
    assert _memory.advise_huge_pages(small) is small
    big = torch.zeros(1 << 24)[::2]  # a strided view of 64 MiB: the storage is advised, values kept
    assert _memory.advise_huge_pages(big) is big and float(big.abs().sum()) == 0.0
    like = _memory.empty_like(torch.ones(4, 5).t(), dtype=torch.bfloat16)
    assert like.is_contiguous() and like.dtype == torch.bfloat16 and like.shape == (5, 4)
