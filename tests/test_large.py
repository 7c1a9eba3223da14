"""Tensors of more than 2^31 elements index correctly on the compiled backends (CPU; CUDA and
Triton where a GPU is present, else the CUDA kernels through the tests' emulator).

The big tensors come from torch.empty and only the rows under test are written: untouched
memory reads as the kernel's shared zero page, so a 4 GiB bf16 tensor costs the pages of
those rows (the element-wise test writes its whole output: 4 GiB, a few seconds).
"""
import math
import os
import sys

import pytest
import torch

cb = pytest.importorskip("fastflow.csrc_backend")
if cb.unavailable("cpu") is not None:  # pragma: no cover - no compiled module
    pytest.skip("the CPU backend is not built", allow_module_level=True)

import fastflow.reference as R  # noqa: E402
from fastflow.reference import philox  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BIG = 2**31 + 4099  # elements: past int32, and not a multiple of any block


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


from fastflow import backends  # noqa: E402

CASES = [("cpu", "cpu")]  # (device, backend)
if torch.cuda.is_available():
    CASES += [("cuda", name) for name in ("cuda", "triton") if backends.why_not(name, "jump_step", "cuda") is None]
else:
    import cuda_emulator  # the CUDA kernels on CPU tensors (tests/cuda_emulator.py)
    EMULATED = cuda_emulator.load()
    if EMULATED is not None:
        CASES += [("cpu", "cuda-emulated")]


@pytest.fixture(params=CASES, ids=lambda c: c[1])
def case(request):
    dev, name = request.param
    if dev == "cpu" and _available_gib() < 10:
        pytest.skip("needs 10 GiB of free memory")
    if dev == "cuda" and torch.cuda.mem_get_info()[0] < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    if name == "cuda-emulated":
        return dev, lambda op: getattr(EMULATED, op)
    return dev, lambda op: backends.kernel(op, name)


def _big(shape, dtype, dev):
    """Untouched (zero-page) memory on the CPU; zeros on a GPU (its memory is not lazy)."""
    return torch.empty(shape, dtype=dtype) if dev == "cpu" else torch.zeros(shape, dtype=dtype, device=dev)


@pytest.mark.parametrize("V", [32768, 1024])  # long rows (lanes, blocks) and short ones (shared draws)
def test_jump_step_indexes_rows_past_2_31_elements(case, V):
    dev, K = case
    # the one row that may jump starts past element 2^31: its logits, its race counters
    # (e = i V + j) and its explicit noise row must all be the right ones
    N = BIG // V + 1
    z = _big((N, V), torch.bfloat16, dev)
    g = torch.Generator().manual_seed(0)
    z[-1] = (torch.randn(V, generator=g) * 2).bfloat16()
    xt = torch.zeros(N, dtype=torch.int64, device=dev)
    h = torch.zeros(N, device=dev)
    h[-1] = 1.0
    r1 = torch.full((N,), math.inf, device=dev)  # kappa = 1: a row with h > 0 jumps to its x_1
    zero = torch.zeros(N, device=dev)
    rng = torch.tensor([2024, 11], dtype=torch.int64, device=dev)
    args = (z, xt, h, r1, zero, None, 1, -1, 1.0, False, False)
    got = K("jump_step")(*args, rng, None, None, None)
    assert torch.equal(got[:-1], xt[:-1])  # rows with h = 0 never jump (and are never read)
    # the same race with its uniforms passed explicitly: counters offset + N + e / 4
    seed, off = int(rng[0]), int(rng[1])
    e0 = (N - 1) * V
    words = philox.uint32_stream(seed, off + N + e0 // 4, V)  # e0 is a multiple of 4
    noise_race = _big((N, V), torch.float32, dev)
    noise_race[-1] = philox.uint_to_open_uniform(words)
    w_tok = torch.stack(philox.philox4x32(seed, off + torch.arange(N - 1, N)), dim=-1)
    noise_tok = torch.zeros(N, 3, device=dev)
    noise_tok[-1, 0] = philox.uint_to_open_uniform(w_tok[:, 0])
    noise_tok[-1, 1] = philox.uint_to_uniform(w_tok[:, 1])
    explicit = K("jump_step")(*args, None, noise_tok, noise_race, None)
    assert int(got[-1]) == int(explicit[-1])
    ref = int((z[-1].float().cpu() - torch.log(-torch.log1p(-noise_race[-1].cpu()))).argmax())
    assert int(got[-1]) == ref


def test_cross_entropy_indexes_rows_past_2_31_elements(case):
    dev, K = case
    V = 65536 + 3  # odd: rows start at every alignment
    N = BIG // V + 2
    z = _big((N, V), torch.bfloat16, dev)
    z[:2] = 0
    g = torch.Generator().manual_seed(1)
    z[-1] = (torch.randn(V, generator=g) * 3).bfloat16()
    x1 = torch.full((N,), -100, dtype=torch.int64, device=dev)  # ignored rows, except the first and last
    x1[0], x1[-1] = 5, V - 2
    loss = K("cross_entropy")(z, x1, -100, None, None)
    assert loss[0].item() == pytest.approx(math.log(V), rel=1e-6)
    ref = R.cross_entropy(z[-1:], x1[-1:], -100, None, None)
    assert loss[-1].item() == pytest.approx(ref[0].item(), rel=1e-6)
    assert torch.all(loss[1:-1] == 0)


def test_step_combine_past_2_31_elements(case):
    dev, K = case
    shape = (65537, 32769)  # 2^31 + 98305 elements, per-sample coefficients over 65537 rows
    x = _big(shape, torch.bfloat16, dev)
    p = _big(shape, torch.bfloat16, dev)
    g = torch.Generator().manual_seed(2)
    x[-1] = torch.randn(shape[1], generator=g).bfloat16()
    p[-1] = torch.randn(shape[1], generator=g).bfloat16()
    x[0], p[0] = 1, 2
    A = torch.ones(shape[0], device=dev)
    B = torch.linspace(0.25, 0.5, shape[0], device=dev)
    ref = R.step_combine(x[-1:], p[-1:], None, A[-1:], B[-1:], None, None, None, None)
    K("step_combine")(x, p, None, A, B, None, None, None, None, out=x)
    assert torch.equal(x[-1:], ref)
    assert torch.all(x[0] == 1.5)
