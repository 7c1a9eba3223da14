"""fastflow._memory: big CPU outputs are advised to fault in as transparent huge pages."""
import gc
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


_BIG = (4, 1 << 21)  # 32 MiB of fp32


def _big():
    return _memory.empty_like(torch.empty(1).expand(*_BIG))


needs_cache = pytest.mark.skipif(not _memory._CACHE_ON, reason="FASTFLOW_CPU_CACHE=0")


@needs_cache
def test_recycled_memory_comes_back_only_when_torch_frees_the_storage():
    holders = {"tensor": lambda t: t, "view": lambda t: t[1:], "storage": lambda t: t.untyped_storage(),
               "numpy": lambda t: t.numpy(), "dtype view": lambda t: t.view(torch.int32),
               "set_": lambda t: torch.empty(0).set_(t.untyped_storage(), 0, (8,)),
               "list": lambda t: [t]}
    for name, hold in holders.items():
        _memory.empty_cache()
        b = _big()
        p = b.data_ptr()
        assert b.shape == _BIG and b.is_contiguous() and b._base is None and p % 64 == 0
        kept = hold(b)
        del b
        c = _big()  # the only block is still referred to: other memory
        assert c.data_ptr() != p, name
        del kept
        gc.collect()
        d = _big()  # p's block is free again (c's is held)
        assert d.data_ptr() == p, name
        del c, d


@needs_cache
def test_shared_memory_releases_the_block_without_moving_the_data():
    _memory.empty_cache()
    b = _big()
    p = b.data_ptr()
    b.fill_(2.5)
    b.share_memory_()  # the data moves to a shared segment; the block goes back to the free list
    assert b.data_ptr() != p and float(b[0, 0]) == 2.5
    c = _big()
    c.fill_(-1.0)
    assert float(b[3, -1]) == 2.5


@needs_cache
def test_a_gradient_kept_by_the_user_survives_the_next_steps():
    import fastflow as ff
    _memory.empty_cache()
    g = torch.Generator().manual_seed(0)
    N, V = 256, 32768  # a 32 MiB gradient
    leaf = torch.randn(N, V, generator=g, requires_grad=True)
    y = torch.randint(0, V, (N,), generator=g)
    ff.mixture_cross_entropy(leaf, y).backward()
    first = leaf.grad  # the user keeps it (AccumulateGrad may have taken the fused buffer itself)
    kept = first.clone()
    for _ in range(3):
        leaf.grad = None
        ff.mixture_cross_entropy(leaf, y, reduction="sum").backward()
        assert torch.equal(first, kept)
        assert not torch.equal(leaf.grad, kept)
    ref_leaf = leaf.detach().clone().requires_grad_()
    torch.nn.functional.cross_entropy(ref_leaf, y, reduction="sum").backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)


@needs_cache
def test_free_list_bounds():
    _memory.empty_cache()
    outs = [_big() for _ in range(_memory._CACHE_ENTRIES + 2)]
    assert len({o.data_ptr() for o in outs}) == len(outs)
    del outs
    gc.collect()
    assert len(_memory._free) == _memory._CACHE_ENTRIES
    _memory.empty_cache()
    assert not _memory._free


@needs_cache
def test_the_ode_solver_returns_an_ordinary_tensor():
    # states in between live on recycled (non-growable) memory; the one returned does not
    import fastflow as ff
    out = ff.ODESolver(lambda x=None, t=None, **kw: -x).sample(torch.ones(2, 1 << 18), step_size=0.25)
    out.resize_(out.numel() * 2)
