"""The compiled CPU backend (fastflow._C via fastflow.csrc_backend) against the reference.

Tolerance rule for float outputs: |fused - ref_fp32| <= |ref_lowdtype - ref_fp32| + floor,
where ref_fp32 is the reference computed in fp32 on the same (upcast) inputs and
ref_lowdtype the reference's own result in the input dtype. Token outputs must match
exactly when the noise is explicit. The ``_check_*`` helpers take a device so that
tests/test_cuda_backend.py runs the same checks on CUDA tensors.
"""
import math
import numpy as np
import os
from types import SimpleNamespace

import pytest
import torch

cb = pytest.importorskip("fastflow.csrc_backend")
if cb._C is None:
    pytest.skip(f"fastflow._C is not built: {cb.unavailable('cpu')}", allow_module_level=True)

import fastflow.reference as R  # noqa: E402
from fastflow.reference import philox  # noqa: E402

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = ((3, 5, 7), (1, 1001), (4, 33, 3))
FLOOR = 2e-5


def _rng(device, seed=0x1234_5678_9ABC, offset=7):
    return torch.tensor([seed, offset], dtype=torch.int64, device=device)


def _noncontig(x):
    """The same values in a non-contiguous layout."""
    y = torch.empty((*x.shape, 2), dtype=x.dtype, device=x.device)
    y[..., 0] = x
    return y[..., 0]


def assert_rule(fused, ref_lp, ref32, floor=FLOOR, what=""):
    """``ref32``: the fp32 reference (or the float64 truth, compared in float64)."""
    wide = torch.float64 if ref32.dtype == torch.float64 else torch.float32
    fused, ref_lp, ref32 = fused.to(wide).cpu(), ref_lp.to(wide).cpu(), ref32.cpu()
    assert fused.shape == ref32.shape, what
    err = (fused - ref32).abs()
    allow = (ref_lp - ref32).abs() + floor * (1 + ref32.abs())
    bad = ~(err <= allow)
    assert not bool(bad.any()), (f"{what}: {int(bad.sum())} of {bad.numel()} outside the rule, worst "
                                 f"err {float((err - allow).max()):.3g}")


def _f32(*ts):
    return [None if t is None else t.float() for t in ts]


@pytest.fixture(autouse=True, params=cb._C.cpu_isas())
def isa(request):
    """Every test of this file runs on each compiled CPU variant the processor supports (the
    widest alone would leave the AVX2 and baseline code of an AVX-512 machine untested)."""
    before = cb._C.cpu_isa()
    cb._C.set_cpu_isa(request.param)
    yield request.param
    cb._C.set_cpu_isa(before)


def test_cpu_isa_can_be_narrowed_and_refuses_unknown_names(isa):
    assert cb._C.cpu_isa() == isa
    assert cb._C.cpu_isas()[0] == "baseline"
    with pytest.raises(ValueError, match="name"):
        cb._C.set_cpu_isa("sse9")
    assert cb._C.cpu_isa() == isa


def test_fastflow_cpu_isa_environment_variable_narrows_the_variant(isa):
    import subprocess
    import sys
    env = dict(os.environ, FASTFLOW_CPU_ISA=isa)
    proc = subprocess.run([sys.executable, "-c", "from fastflow import _C; print(_C.cpu_isa())"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == isa, proc.stdout


def test_simd_philox_words_cross_the_32_bit_counter_carry(isa):
    # uniform-source tokens are (w * V) >> 32 of the SIMD stream's words: exact, across a carry
    # of the counter's low word and over a length that is no multiple of any SIMD group
    n, V = 4 * 997 + 3, 50_021
    for off in (2**32 - 37, 2**33 - 1000, 5):
        rng = torch.tensor([0x5DEECE66D, off], dtype=torch.int64)
        x1 = torch.zeros(1, n, dtype=torch.int64)
        kappa = torch.zeros(1)
        got = cb.mixture_path_sample(x1, None, kappa, rng, None, V, None)
        ref = R.mixture_path_sample(x1, None, kappa, rng, None, V, None)
        assert torch.equal(got, ref), (isa, off)
        assert got.unique().numel() > n // 2  # uniform tokens, not a constant


# ---------------------------------------------------------------- availability
def test_unavailable_reports():
    assert cb.unavailable("cpu") is None
    assert isinstance(cb.unavailable("mps"), str)
    reason = cb.unavailable("cuda")
    assert reason is None or isinstance(reason, str)
    assert cb._C.cpu_isa() in ("avx512", "avx2", "baseline")


# ---------------------------------------------------------------- philox
def _check_philox(device):
    for seed, off in ((1234, 0), (2**40 + 7, 2**33 + 5), (-5, 3), (-(2**63), 2**63 - 1), (99, 2**32 - 3)):
        n = 1003
        words = cb.philox_stream(seed, off, n, "uint32", device).cpu()
        assert torch.equal(words, philox.uint32_stream(seed, off, n)), (seed, off)
        u = cb.philox_stream(seed, off, n, "uniform", device).cpu()
        assert torch.equal(u, philox.uniform_stream(seed, off, n))
        ou = cb.philox_stream(seed, off, n, "open_uniform", device).cpu()
        assert torch.equal(ou, philox.uint_to_open_uniform(philox.uint32_stream(seed, off, n)))
        z = cb.philox_stream(seed, off, n, "normal", device).cpu()
        zr = philox.normal_stream(seed, off, n)
        assert bool(((z - zr).abs() <= 8 * 1.2e-7 * (1 + zr.abs())).all())


def test_philox_bit_identical():
    _check_philox("cpu")


def test_rng_throughput_draws_the_kernels_stream(isa):
    # the benchmarks' random-number bound times these generators: they must be the contract's
    # stream (kind 0: the words; kind 2: Gaussians, bit-identical to the kernels' in-kernel draw)
    n = 4 * 1500 + 2  # more than one sub-block, a ragged end
    words = philox.uint32_stream(0x5EED, 0, n).numpy().view("uint32")
    code, checksum = cb._C.rng_throughput(n, 0)
    assert code == 0 and checksum == int(np.bitwise_xor.reduce(words))
    x = torch.zeros(1, n)
    ones, zeros = torch.ones(1), torch.zeros(1)
    z = cb.affine_path_sample(x, None, zeros, ones, None, torch.tensor([0x5EED, 0]))
    code, checksum = cb._C.rng_throughput(n, 2)
    assert code == 0 and checksum == int(np.bitwise_xor.reduce(z.numpy().reshape(-1).view("uint32")))
    assert cb._C.rng_throughput(10, 1)[0] != 0 and cb._C.rng_throughput(-1, 0)[0] != 0  # refused


def test_float_entries_refuse_tensors_off_the_host():
    # their coefficients live in host memory and they run the CPU kernels: every tensor they
    # are handed must be a CPU one (a device pointer would be read by the CPU)
    x = torch.zeros(2, 3)
    meta = torch.empty(2, 3, device="meta")
    for args in ((meta, x), (x, meta)):
        with pytest.raises(ValueError, match="CPU tensors"):
            cb.step_combine_floats(*args, 1.0, 0.5)
    with pytest.raises(ValueError, match="CPU tensors"):
        cb.step_combine_floats(x, x, 1.0, 0.5, q=meta, C=1.0)
    with pytest.raises(ValueError, match="CPU tensors"):
        cb.jump_step_floats(torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64, device="meta"), 0.1, 1.0, 0.0,
                            None, 1, -1, 1.0, False, False, torch.tensor([1, 0]))
    assert cb._C.cuda_last_error() == ""  # no failed CUDA launch on this thread


def test_pinned_triton_words():
    # tl.randint4x values pinned in tests/test_philox.py (Triton 3.9's interpreter)
    assert cb.philox_stream(1234, 0, 4, "uint32").tolist() == [546353992, 3665621163, 1140953199, 3419031310]


def test_in_kernel_gaussian_matches_reference_stream():
    # x_0 = None draws stream 0 in the kernel; a = 0, b = 1 returns it
    x = torch.zeros(3, 1001)
    ones, zeros = torch.ones(3), torch.zeros(3)
    rng = _rng("cpu")
    got = cb.affine_path_sample(x, None, zeros, ones, None, rng)
    ref = philox.normal_stream(int(rng[0]), int(rng[1]), x.numel()).view_as(x)
    assert bool(((got - ref).abs() <= 8 * 1.2e-7 * (1 + ref.abs())).all())


# ---------------------------------------------------------------- continuous ops
def _check_affine_sample(device, dtype, shape, x0_mode, with_s, noncontig):
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    x0 = torch.randn(shape, generator=g).to(device=device, dtype=dtype) if x0_mode else None
    B = shape[0]
    a, b, s = (torch.rand(B, generator=g).to(device) for _ in range(3))
    s = s if with_s else None
    if noncontig:
        x1 = _noncontig(x1)
        x0 = _noncontig(x0) if x0 is not None else None
    rng = _rng(device)
    fused = cb.affine_path_sample(x1, x0, a, b, s, rng)
    assert fused.dtype == dtype and fused.shape == x1.shape
    ref_lp = R.affine_path_sample(x1, x0, a, b, s, rng)
    ref32 = R.affine_path_sample(*_f32(x1, x0), a, b, s, rng)
    assert_rule(fused, ref_lp, ref32, what="affine_path_sample")
    out = torch.empty_like(fused)
    assert cb.affine_path_sample(x1, x0, a, b, s, rng, out=out) is out
    assert torch.equal(out, fused)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x0_mode,with_s", [(True, False), (False, False), (True, True), (False, True)])
def test_affine_path_sample(dtype, shape, x0_mode, with_s):
    _check_affine_sample("cpu", dtype, shape, x0_mode, with_s, noncontig=shape == (3, 5, 7))


def _loss_inputs(device, dtype, shape, x0_mode, with_e, mask_mode, g):
    B = shape[0]
    v, x1, x0 = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    x0 = x0 if x0_mode else None
    c, d, e = (torch.randn(B, generator=g).to(device) for _ in range(3))
    e = e if with_e else None
    mask = None
    if mask_mode == "full":
        mask = (torch.rand(shape, generator=g) > 0.3).to(device)
    elif mask_mode == "broadcast":  # a [B, 1, ..., 1] per-sample mask expanded
        mask = (torch.rand((B,) + (1,) * (len(shape) - 1), generator=g) > 0.4).to(device).expand(shape)
    elif mask_mode == "inner":  # a [B, L, 1] padding mask expanded over the last dim
        mask = (torch.rand(shape[:-1] + (1,), generator=g) > 0.4).to(device).expand(shape)
    return v, x1, x0, c, d, e, mask


def _check_affine_loss(device, dtype, shape, x0_mode, with_e, mask_mode, noncontig, data_dtype=None):
    """``data_dtype``: x_1 / x_0 in that dtype (fp32 data under a bf16 / fp16 v, autocast's case,
    which the kernels read as it is: v and its gradient are neither widened nor copied)."""
    g = torch.Generator().manual_seed(2)
    v, x1, x0, c, d, e, mask = _loss_inputs(device, data_dtype or dtype, shape, x0_mode, with_e, mask_mode, g)
    v = v.to(dtype)
    if noncontig:
        v = _noncontig(v)
    if data_dtype is not None:
        operands = cb._loss_inputs(v, x1, x0, c, d, e, _rng(device), mask)
        assert operands["x1"] is x1 and operands["dtype"] == dtype  # the data as it is, v not widened
        assert operands["v"] is v or noncontig
    rng = _rng(device, seed=77)
    fused = cb.affine_path_loss(v, x1, x0, c, d, e, rng, mask)
    ref = R.affine_path_loss(v, x1, x0, c, d, e, rng, mask)  # fp32 sums of upcast inputs
    assert fused.dtype == torch.float32 and fused.shape == (shape[0],)
    torch.testing.assert_close(fused.cpu(), ref.cpu(), rtol=2e-5, atol=1e-5)
    # the gradient written in the same pass; the sums must not change when it is asked for
    gs = torch.rand(shape[0], generator=g).to(device)
    dv = torch.full(v.shape, float("nan"), dtype=dtype, device=device)
    with_grad = cb.affine_path_loss(v, x1, x0, c, d, e, rng, mask, gs, dv)
    assert torch.equal(with_grad, fused)
    ref_lp, ref32 = torch.empty_like(dv), torch.empty(v.shape, device=device)
    R.affine_path_loss(v, x1, x0, c, d, e, rng, mask, gs, ref_lp)
    R.affine_path_loss(*_f32(v, x1, x0), c, d, e, rng, mask, gs, ref32)
    assert_rule(dv, ref_lp, ref32, what="affine_path_loss grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x0_mode,with_e,mask_mode", [
    (True, False, None), (False, False, None), (False, True, "full"), (True, True, "broadcast"),
    (True, False, "inner"), (False, False, "inner")])
def test_affine_path_loss(dtype, shape, x0_mode, with_e, mask_mode):
    _check_affine_loss("cpu", dtype, shape, x0_mode, with_e, mask_mode, noncontig=shape == (4, 33, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x0_mode,with_e,mask_mode", [(True, False, None), (False, True, "full"),
                                                      (True, True, "broadcast")])
def test_affine_path_loss_low_precision_v_on_fp32_data(dtype, shape, x0_mode, with_e, mask_mode):
    """A bf16 / fp16 v (autocast's model output) against fp32 data, read in one pass as they are."""
    _check_affine_loss("cpu", dtype, shape, x0_mode, with_e, mask_mode, noncontig=shape == (4, 33, 3),
                       data_dtype=torch.float32)


def test_affine_path_loss_long_samples_deterministic():
    # samples spanning several chunks: the per-sample sums are the same every call
    g = torch.Generator().manual_seed(3)
    v, x1 = torch.randn(2, 100_003, generator=g), torch.randn(2, 100_003, generator=g)
    c, d = torch.ones(2), torch.ones(2)
    rng = _rng("cpu")
    a = cb.affine_path_loss(v, x1, None, c, d, None, rng, None)
    b = cb.affine_path_loss(v, x1, None, c, d, None, rng, None)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, R.affine_path_loss(v, x1, None, c, d, None, rng, None), rtol=1e-5, atol=0)


@pytest.mark.parametrize("with_e,mask_mode", [(False, None), (True, "full")])
def test_affine_path_loss_short_samples_share_their_noise(with_e, mask_mode):
    # samples shorter than a noise piece draw it per group of samples (several groups, over
    # two threads): the same sums and gradient as the reference, and the same bits on 1 thread
    shape = (7001, 3)
    for dtype in (torch.float32, torch.float16):
        _check_affine_loss("cpu", dtype, shape, False, with_e, mask_mode, noncontig=False)
    g = torch.Generator().manual_seed(5)
    v, x1, _, c, d, e, mask = _loss_inputs("cpu", torch.float32, shape, False, with_e, mask_mode, g)
    rng = _rng("cpu", seed=78)
    gs = torch.rand(shape[0], generator=g)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (2, 1):
            torch.set_num_threads(n)
            dv = torch.empty_like(v)
            runs.append((cb.affine_path_loss(v, x1, None, c, d, e, rng, mask, gs, dv), dv))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def _check_step_combine(device, dtype, shape, with_q, noise_mode, noncontig, p_dtype=None):
    """``p_dtype``: p and q in that dtype beside an fp32 x (autocast's model outputs on an fp32
    state), which the kernels read as they are (no fp32 copies)."""
    g = torch.Generator().manual_seed(4)
    x, p, q, z = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(4))
    if p_dtype is not None:
        p, q = p.to(p_dtype), q.to(p_dtype)
    B = shape[0]
    A, Bc, C, N = (torch.randn(B, generator=g).to(device) for _ in range(4))
    q, C = (q, C) if with_q else (None, None)
    N = None if noise_mode is None else N
    z = z if noise_mode == "given" else None
    if noncontig:
        p = _noncontig(p)
    rng = _rng(device, seed=5)
    fused = cb.step_combine(x, p, q, A, Bc, C, N, rng, z)
    ref_lp = R.step_combine(x, p, q, A, Bc, C, N, rng, z)
    ref32 = R.step_combine(*_f32(x, p, q), A, Bc, C, N, rng, None if z is None else z.float())
    assert_rule(fused, ref_lp, ref32, what="step_combine")
    # in place: out = x
    x2 = x.clone()
    assert cb.step_combine(x2, p, q, A, Bc, C, N, rng, z, out=x2) is x2
    assert torch.equal(x2, fused)
    if p_dtype is not None:
        assert fused.dtype == dtype and cb._step_dtypes(x, p, q, z) == (dtype, p_dtype)
        if hasattr(cb, "step_combine_floats") and N is None and not noncontig:  # the solvers' float entry
            for b in range(shape[0]):  # (one A, B, C for every sample: a sample at a time)
                got = cb.step_combine_floats(x[b:b + 1], p[b:b + 1], float(A[b]), float(Bc[b]),
                                             q=None if q is None else q[b:b + 1], C=0.0 if C is None else float(C[b]))
                assert torch.equal(got, fused[b:b + 1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_q,noise_mode", [(False, None), (True, None), (False, "drawn"), (True, "given")])
def test_step_combine(dtype, shape, with_q, noise_mode):
    _check_step_combine("cpu", dtype, shape, with_q, noise_mode, noncontig=shape == (1, 1001))


@pytest.mark.parametrize("p_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_q,noise_mode", [(False, None), (True, None), (True, "given")])
def test_step_combine_low_precision_outputs_on_an_fp32_state(p_dtype, shape, with_q, noise_mode):
    _check_step_combine("cpu", torch.float32, shape, with_q, noise_mode, noncontig=shape == (1, 1001),
                        p_dtype=p_dtype)


def test_fp16_conversions_cover_the_whole_range():
    # every fp16 bit pattern through the block conversions (F16C on the AVX2 / AVX-512 builds):
    # loads exact, stores rounded to nearest even into subnormals, overflowing to inf, NaN kept
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16).view(2, -1)
    g = torch.Generator().manual_seed(6)
    p = (torch.randn(x.shape, generator=g) * 3e-5).to(torch.float16)
    A, Bc = torch.tensor([1.0, 0.999]), torch.tensor([0.37, 1e4])
    got = cb.step_combine(x, p, None, A, Bc, None, None, None, None)
    want = R.step_combine(x, p, None, A, Bc, None, None, None, None)
    assert torch.equal(got.isnan(), want.isnan())
    keep = ~want.isnan()
    assert torch.equal(got.view(torch.int16)[keep], want.view(torch.int16)[keep])
    assert bool(got.isinf().any()) and bool(((got != 0) & (got.abs() < 2**-14)).any())
    assert torch.equal(cb.step_combine(x, p, None, 1.0, 0.0, None, None, None, None).view(torch.int16)[keep],
                       x.view(torch.int16)[keep])


def _check_bit_identical(device, dtype):
    # no FP contraction in the kernels: a * x + b * y rounds like torch's separate ops
    g = torch.Generator().manual_seed(5)
    x1, x0, p, q = (torch.randn(4, 257, generator=g).to(device=device, dtype=dtype) for _ in range(4))
    a, b, c = (torch.randn(4, generator=g).to(device) for _ in range(3))
    rng = _rng(device)
    assert torch.equal(cb.affine_path_sample(x1, x0, a, b, None, rng), R.affine_path_sample(x1, x0, a, b, None, rng))
    assert torch.equal(cb.step_combine(x1, p, q, a, b, c, None, None, None),
                       R.step_combine(x1, p, q, a, b, c, None, None, None))
    got, want = torch.empty_like(p), torch.empty_like(p)
    cb.affine_path_loss(p, x1, x0, a, b, None, rng, None, c, got)
    R.affine_path_loss(p, x1, x0, a, b, None, rng, None, c, want)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_elementwise_ops_are_bit_identical(dtype):
    _check_bit_identical("cpu", dtype)


def test_mixed_dtypes_compute_in_fp32():
    g = torch.Generator().manual_seed(6)
    x1 = torch.randn(3, 17, generator=g).bfloat16()
    x0 = torch.randn(3, 17, generator=g)
    a, b = torch.rand(3, generator=g), torch.rand(3, generator=g)
    rng = _rng("cpu")
    fused = cb.affine_path_sample(x1, x0, a, b, None, rng)
    assert fused.dtype == torch.bfloat16
    assert torch.equal(fused, R.affine_path_sample(x1, x0, a, b, None, rng))


# ---------------------------------------------------------------- discrete ops
def _check_mixture(device, itype, x0_mode, noise_given):
    g = torch.Generator().manual_seed(7)
    V, shape = 37, (5, 13, 3)
    x1 = torch.randint(0, V, shape, generator=g).to(device=device, dtype=itype)
    x0 = torch.randint(0, V, shape, generator=g).to(device=device, dtype=itype) if x0_mode == "given" else None
    kappa = torch.rand(shape[0], generator=g).to(device)
    noise = torch.rand(shape, generator=g).to(device) if noise_given else None
    mask_id = 5 if x0_mode == "mask" else None
    rng = _rng(device, seed=9)
    got = cb.mixture_path_sample(x1, x0, kappa, rng, noise, V, mask_id)
    ref = R.mixture_path_sample(x1, x0, kappa, rng, noise, V, mask_id)
    assert got.dtype == itype and torch.equal(got.cpu(), ref.cpu())


@pytest.mark.parametrize("itype", (torch.int64, torch.int32))
@pytest.mark.parametrize("x0_mode", ("given", "uniform", "mask"))
@pytest.mark.parametrize("noise_given", (True, False))
def test_mixture_path_sample_exact(itype, x0_mode, noise_given):
    _check_mixture("cpu", itype, x0_mode, noise_given)


def _row_inputs(device, dtype, N, V, g, scale=3.0):
    z = (torch.randn(N, V, generator=g) * scale).to(device=device, dtype=dtype)
    x1 = torch.randint(0, V, (N,), generator=g).to(device)
    x1[N // 3] = -100
    xt = torch.where(torch.rand(N, generator=g).to(device) < 0.4, x1.clamp_min(0),
                     torch.randint(0, V, (N,), generator=g).to(device))
    gs = torch.rand(N, generator=g).to(device)
    jump = (torch.rand(N, generator=g) * 3).to(device)
    return z, x1, xt, gs, jump


def _at_odd_offset(x):
    """The same values, contiguous, one element past an aligned address (no 16-byte load fits)."""
    buf = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
    y = buf[1:].view(x.shape)
    y.copy_(x)
    return y


def _check_misaligned(device, dtype):
    # contiguous inputs and outputs that start off a 16-byte boundary: the kernels' vector paths
    # must notice (on a GPU a misaligned 16-byte load faults; the CUDA emulator aborts on it)
    g = torch.Generator().manual_seed(21)
    odd = [_at_odd_offset(torch.randn(3, 1001, generator=g).to(device, dtype)) for _ in range(4)]
    x, p, x1, v = odd
    A, B, C = (torch.rand(3, generator=g).to(device) for _ in range(3))
    assert torch.equal(cb.step_combine(x, p, x1, A, B, C, None, None, None),
                       R.step_combine(x, p, x1, A, B, C, None, None, None))
    out = _at_odd_offset(torch.empty_like(x))
    assert cb.step_combine(x, p, None, A, B, None, None, None, None, out=out) is out
    assert torch.equal(out, R.step_combine(x, p, None, A, B, None, None, None, None))
    rng = _rng(device)
    assert torch.equal(cb.affine_path_sample(x1, x, A, B, None, rng), R.affine_path_sample(x1, x, A, B, None, rng))
    dv, ref_dv = _at_odd_offset(torch.empty_like(v)), torch.empty_like(v)
    loss = cb.affine_path_loss(v, x1, x, A, B, None, rng, None, C, dv)
    torch.testing.assert_close(loss, R.affine_path_loss(v, x1, x, A, B, None, rng, None, C, ref_dv), rtol=1e-5, atol=0)
    torch.testing.assert_close(dv, ref_dv, rtol=1e-5 if dtype == torch.float32 else None,
                               atol=1e-6 if dtype == torch.float32 else None)
    for V in (1001, 5001):  # a warp a row, a block a row (odd V: every row starts misaligned too)
        z, t1, xt, gs, jump = _row_inputs(device, dtype, 5, V, g)
        z = _at_odd_offset(z)
        for op, extra in (("cross_entropy", (t1, -100)), ("generalized_kl", (t1, xt, jump, -100))):
            grad, ref_grad = _at_odd_offset(torch.empty_like(z)), torch.empty_like(z)
            loss = getattr(cb, op)(z, *extra, gs, grad)
            torch.testing.assert_close(loss, getattr(R, op)(z, *extra, gs, ref_grad), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=1e-4 if dtype == torch.float32 else 1.6e-2,
                                       atol=1e-6 if dtype == torch.float32 else 1e-3)
        scaled, ref_scaled = _at_odd_offset(z.clone()), z.clone()
        s = torch.rand(5, generator=g).to(device)
        cb.scale_rows(scaled, s)
        R.scale_rows(ref_scaled, s)
        assert torch.equal(scaled, ref_scaled)
        args = list(_jump_args(device, dtype, 5, V, JUMP_CASES[1], g, explicit=True))
        args[0], args[-2] = _at_odd_offset(args[0]), _at_odd_offset(args[-2])  # logits, race noise
        assert torch.equal(cb.jump_step(*args).cpu(), R.jump_step(*args).cpu())


def _check_row_loss(device, op, dtype, N, V, noncontig, with_grad):
    g = torch.Generator().manual_seed(8)
    z, x1, xt, gs, jump = _row_inputs(device, dtype, N, V, g)
    if noncontig:  # rows with a stride (a view of a wider buffer)
        wide = torch.zeros(N, V + 5, dtype=dtype, device=device)
        wide[:, :V] = z
        z = wide[:, :V]
    extra = (x1, -100) if op == "cross_entropy" else (x1, xt, jump, -100)
    fused_grad = torch.empty(N, V, dtype=dtype, device=device) if with_grad else None
    loss = getattr(cb, op)(z, *extra, gs if with_grad else None, fused_grad)
    ref_grad_lp = torch.empty(N, V, dtype=dtype, device=device) if with_grad else None
    ref_grad64 = torch.empty(N, V, dtype=torch.float64, device=device) if with_grad else None
    ref_lp = getattr(R, op)(z, *extra, gs if with_grad else None, ref_grad_lp)
    # the truth in float64: the fp32 reference's own rounding (up to ~1e-6 of a gradient, and
    # machine-dependent: torch's exp differs between AVX2 and AVX-512) is the fp32 allowance
    extra64 = (x1, -100) if op == "cross_entropy" else (x1, xt, jump.double(), -100)
    ref64 = getattr(R, op)(z.double(), *extra64, gs.double() if with_grad else None, ref_grad64)
    assert loss.dtype == torch.float32
    assert_rule(loss, ref_lp, ref64, floor=1e-5, what=f"{op} loss")
    if with_grad:
        assert_rule(fused_grad, ref_grad_lp, ref_grad64, floor=1e-6, what=f"{op} grad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_inputs_and_outputs(dtype):
    _check_misaligned("cpu", dtype)


@pytest.mark.parametrize("op", ("cross_entropy", "generalized_kl"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V", [(37, 1234), (5, 3), (3, 70_001), (20, 9001)])
def test_row_losses(op, dtype, N, V):
    _check_row_loss("cpu", op, dtype, N, V, noncontig=V == 1234, with_grad=True)


@pytest.mark.parametrize("op", ("cross_entropy", "generalized_kl"))
@pytest.mark.parametrize("V", [301, 9001])  # one chunk of the fp32 one-exp path, and three
def test_row_losses_no_grad_and_in_place(op, V):
    _check_row_loss("cpu", op, torch.float32, 9, V, noncontig=False, with_grad=False)
    g = torch.Generator().manual_seed(9)
    z, x1, xt, gs, jump = _row_inputs("cpu", torch.float32, 9, V, g)
    extra = (x1, -100) if op == "cross_entropy" else (x1, xt, jump, -100)
    ref_grad = torch.empty_like(z)
    ref = getattr(R, op)(z, *extra, gs, ref_grad)
    zz = z.clone()
    loss = getattr(cb, op)(zz, *extra, gs, zz)  # the gradient overwrites the logits
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(zz, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_rows(dtype):
    g = torch.Generator().manual_seed(10)
    grad = torch.randn(7, 301, generator=g).to(dtype)
    s = torch.tensor([1.0, 2.0, 0.5, 1.0, -3.0, 0.1, 1.0])
    ref = grad.clone()
    R.scale_rows(ref, s)
    got = grad.clone()
    cb.scale_rows(got, s)
    assert torch.equal(got, ref)


# ---------------------------------------------------------------- jump step
def _rates(kappa, d_kappa, c):
    lam = torch.where(kappa >= 1, math.inf, d_kappa / (1 - kappa).clamp_min(1e-30))
    r1 = (1 + c) * lam
    r0 = torch.where(c > 0, torch.where(kappa <= 0, math.inf, c * d_kappa / kappa.clamp_min(1e-30)), 0.0)
    return r1, r0


JUMP_CASES = [
    # (source, probs, temperature, final, kappa, div_free)
    ("uniform", False, 1.0, False, 0.3, 0.0),
    ("uniform", False, 0.7, False, 0.6, 0.5),
    ("mask", False, 1.0, False, 0.4, 0.8),
    ("general", False, 1.3, False, 0.5, 1.0),
    ("none", False, 1.0, False, 0.5, 0.0),
    ("uniform", True, 1.0, False, 0.2, 0.3),
    ("general", False, 1.0, True, 0.5, 0.5),
    ("uniform", True, 0.5, True, 0.9, 0.0),
    ("uniform", False, 1.0, False, 0.0, 0.7),  # kappa = 0 with div_free > 0: r0 = inf
    ("mask", False, 1.0, False, 0.0, 0.7),
    ("uniform", False, 1.0, False, 1.0, 0.0),  # kappa = 1: r1 = inf
    ("mask", False, 1.0, False, 1.0, 0.4),
]
SOURCES = {"none": 0, "uniform": 1, "mask": 2, "general": 3}


def _jump_args(device, dtype, N, V, case, g, explicit):
    source, probs, temp, final, kappa, c = case
    z = (torch.randn(N, V, generator=g) * 2).to(device)
    if probs:
        z = torch.softmax(z, -1)
    z = z.to(dtype)
    mask_id = 3 if source == "mask" else -1
    xt = torch.randint(0, V, (N,), generator=g).to(device)
    if source == "mask":
        xt[: N // 2] = mask_id
    h = (torch.rand(N, generator=g) * 0.6).to(device)
    k = torch.full((N,), kappa, device=device)
    r1, r0 = _rates(k, torch.full((N,), 1.3, device=device), torch.full((N,), c, device=device))
    p0 = None
    if source == "general":
        p0 = torch.rand(V, generator=g).to(device)
        p0[1] = 0.0
        p0 = p0 / p0.sum()
    noise = (None, None, None)
    if explicit:
        noise = (torch.rand(N, 3, generator=g).to(device), torch.rand(N, V, generator=g).to(device),
                 torch.rand(N, V, generator=g).to(device) if source == "general" else None)
    return (z, xt, h, r1, r0, p0, SOURCES[source], mask_id, temp, final, probs, _rng(device, seed=31)) + noise


def _check_jump(device, dtype, N, V, case, explicit, min_agree=1.0):
    g = torch.Generator().manual_seed(11)
    args = _jump_args(device, dtype, N, V, case, g, explicit)
    got = cb.jump_step(*args)
    ref = R.jump_step(*args)
    assert got.dtype == args[1].dtype and got.shape == args[1].shape
    agree = float((got.cpu() == ref.cpu()).float().mean())
    assert agree >= min_agree, f"{case}: {agree:.5f} of tokens agree"
    if explicit:
        assert torch.equal(got.cpu(), ref.cpu()), case


@pytest.mark.parametrize("case", JUMP_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_jump_step_exact_with_explicit_noise(case, dtype):
    _check_jump("cpu", dtype, 61, 53, case, explicit=True)


@pytest.mark.parametrize("case", JUMP_CASES[:4] + JUMP_CASES[6:8])
def test_jump_step_generated_noise_matches_reference_stream(case):
    # same (seed, offset) stream as the reference: tokens agree except for rare ulp ties
    _check_jump("cpu", torch.float32, 97, 301, case, explicit=False, min_agree=0.99)


@pytest.mark.parametrize("case", [JUMP_CASES[3], JUMP_CASES[6], JUMP_CASES[1]])
def test_jump_step_few_long_rows(case):
    # few rows over a long vocabulary: the race is split into chunks (same result)
    _check_jump("cpu", torch.bfloat16, 3, 70_001, case, explicit=True)
    _check_jump("cpu", torch.float32, 3, 70_001, case, explicit=False, min_agree=2 / 3)


def _check_jump_without_a_draw(device, N, V, dtype=torch.float32):
    """Rows that must draw x_1 but have nothing to draw it from (every logit -inf, a NaN late in
    the row; probabilities all 0 or one negative) get -1, which the ops layer refuses; the other
    rows are drawn as always. Equal to the reference with explicit and with generated noise, in
    the pruned race (where whole blocks of -inf are skipped) and in split rows."""
    g = torch.Generator().manual_seed(8)
    xt = torch.randint(0, V, (N,), generator=g).to(device)
    ones = torch.ones(N, device=device)
    for probs in (False, True):
        z = torch.softmax(torch.randn(N, V, generator=g), -1) if probs else torch.randn(N, V, generator=g)
        z[0] = 0.0 if probs else -math.inf
        z[1, V - 2] = -0.5 if probs else math.nan
        z[2, : V - 3] = 0.0 if probs else -math.inf  # three finite keys left: drawn
        z = z.to(device, dtype)
        noise = (torch.rand(N, 3, generator=g).to(device), torch.rand(N, V, generator=g).to(device), None)
        for final, rates in ((True, (ones, ones, ones * 0)), (False, (ones, ones * math.inf, ones * 0))):
            args = (z, xt, *rates, None, 1, -1, 1.0, final, probs)
            for rng, explicit in ((None, noise), (_rng(device, seed=5), (None, None, None))):
                got, want = cb.jump_step(*args, rng, *explicit).cpu(), R.jump_step(*args, rng, *explicit).cpu()
                assert got[:2].tolist() == want[:2].tolist() == [-1, -1], (probs, final)
                assert (got[2:] >= 0).all() and (want[2:] >= 0).all()
                assert float((got == want).float().mean()) >= (1.0 if rng is None else 0.9), (probs, final)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, V", [(5, 40), (6, 5003), (3, 70_001)])  # one draw; lanes; split rows
def test_jump_step_rows_without_a_draw(N, V, dtype):
    _check_jump_without_a_draw("cpu", N, V, dtype)


def _check_one_token_rows(device):
    """A row of one finite key (a point mass: top-1 logits, one-hot probabilities) whose race
    uniform is 1 in fp32 (the top 128 words round to it, 2^-25 a key) still draws its token:
    the race holds u below 1, so E stays finite (it was inf, the score -inf, and nothing drawn)."""
    ones = torch.ones(1, device=device)
    for probs in (False, True):
        z = torch.tensor([[0.0, 1.0, 0.0, 0.0]]) if probs else torch.tensor([[-math.inf, 0.0, -math.inf, -math.inf]])
        args = (z.to(device), torch.tensor([0], device=device), ones, ones, ones * 0, None, 1, -1, 1.0, True, probs)
        race = torch.tensor([[0.5, 1.0, 0.5, 0.5]], device=device)
        explicit = (torch.full((1, 3), 0.5, device=device), race, None)
        rng = torch.tensor([1234, 1965154], device=device)  # this row's word for token 1 is >= 2^32 - 128
        for impl in (cb, R):
            assert impl.jump_step(*args, None, *explicit).tolist() == [1], (impl, probs)
            assert impl.jump_step(*args, rng, None, None, None).tolist() == [1], (impl, probs)


def test_jump_step_one_token_rows_always_draw():
    _check_one_token_rows("cpu")


def _pruning_logits(kind, N, V, g):
    z = torch.randn(N, V, generator=g) * 3
    if kind == "peaked":  # an LM-like row: a few strong tokens far above a long tail
        z = z - 20 * (torch.rand(N, V, generator=g) < 0.99)
    elif kind == "flat":  # equal keys: only the noise decides
        z = torch.zeros(N, V)
    elif kind == "probs":  # probabilities (probs=True: the keys are their logarithms)
        z = torch.softmax(z, -1)
    elif kind in ("top-k", "sparse probs"):  # a few finite keys, all in a row's second half
        keep = V // 2 + torch.randint(0, V - V // 2, (N, 5), generator=g)
        z = torch.full((N, V), -math.inf).scatter(1, keep, z.gather(1, keep))
        z[0] = -math.inf  # a row of impossible tokens
        if kind == "sparse probs":  # probabilities, zero off the kept tokens
            z = torch.softmax(z[1:], -1).clamp_min(0)
            z = torch.cat((torch.zeros(1, V), z))
    elif kind == "edges":
        z[:, ::7] = -math.inf
        z[0] = -math.inf  # a row of impossible tokens: argmax of all -inf keys
        z[1, V // 2] = math.inf
        z[2, 3 * V // 4] = math.nan  # NaN wins torch.argmax
        z[-1] = z[-1] * 1e4  # keys far above any noise term
    elif kind == "huge":  # keys near fp32's largest: z / 0.6 overflows to inf in some columns
        z = z * 1e36  # (ties of inf keys go to the lowest column), and ulps dwarf any noise term
        z[:, 1::5] = 0.6 * 3.4028234e38 * (1 + 4e-7 * torch.randn(N, (V + 3) // 5, generator=g))
    return z


@pytest.mark.parametrize("kind", ["normal", "peaked", "flat", "edges", "huge", "top-k", "probs", "sparse probs"])
@pytest.mark.parametrize("N, V, temp", [(37, 5003, 1.0), (21, 1500, 0.6), (3, 70_001, 1.0),
                                        (301, 33, 1.0), (97, 1024, 0.6)])  # short rows: one draw, no lanes
def test_jump_step_pruned_race_equals_the_full_race(kind, N, V, temp):
    # with generated noise the race skips the pieces of a row that cannot win (their
    # logarithms are never taken); with the same uniforms passed explicitly it computes every
    # key: the winners must be identical, not merely close
    g = torch.Generator().manual_seed(5)
    z = _pruning_logits(kind, N, V, g)
    xt = torch.randint(0, V, (N,), generator=g)
    ones = torch.ones(N)
    rng = _rng("cpu", seed=77, offset=3)
    seed, off = int(rng[0]), int(rng[1])
    w_tok = torch.stack(philox.philox4x32(seed, off + torch.arange(N)), dim=-1)
    noise_tok = torch.stack((philox.uint_to_open_uniform(w_tok[:, 0]), philox.uint_to_uniform(w_tok[:, 1]),
                             torch.zeros(N)), dim=-1)
    noise_race = philox.uint_to_open_uniform(philox.uint32_stream(seed, off + N, N * V)).view(N, V)
    common = (z, xt, ones, ones, ones * 0, None, 1, -1, temp, True, kind.endswith("probs"))
    pruned = cb.jump_step(*common, rng, None, None, None)
    full = cb.jump_step(*common, None, noise_tok, noise_race, None)
    assert torch.equal(pruned, full)
    if kind == "normal" and V < 70_000:  # the p0 race of a general source prunes the same way
        p0 = torch.rand(V, generator=g)
        p0 = p0 / p0.sum()
        rates = (z, xt, ones * 0.9, ones * 0.0, ones * 50.0, p0, 3, -1, temp, False, False)
        n_p0 = (N * V + 3) // 4
        noise_p0 = philox.uint_to_open_uniform(philox.uint32_stream(seed, off + N + n_p0, N * V)).view(N, V)
        pruned = cb.jump_step(*rates, rng, None, None, None)
        full = cb.jump_step(*rates, None, noise_tok, noise_race, noise_p0)
        assert (pruned != xt).float().mean() > 0.5  # most tokens took the source race
        assert torch.equal(pruned, full)


@pytest.mark.parametrize("V", [2000, 300])  # lanes; a short row
def test_jump_step_temperature_bounds_where_keys_overflow(V):
    """At a temperature T != 1 the pruned race bounds the keys z / T by z * (1 / T). At this T,
    z / T overflows to inf where that product does not: the row's first inf key must still win
    its tie with a later one."""
    T, z_edge = 0.8033526539802551, 2.733667425686189e38  # fl(z / T) = inf, fl(z * fl(1 / T)) finite
    N = 4
    z = torch.randn(N, V, generator=torch.Generator().manual_seed(8))
    z[:, 5], z[:, V - 3] = z_edge, 3.0e38  # both keys inf; the later one's bound too
    rng = _rng("cpu", seed=5, offset=0)
    seed, off = int(rng[0]), int(rng[1])
    xt, ones = torch.zeros(N, dtype=torch.int64), torch.ones(N)
    w_tok = torch.stack(philox.philox4x32(seed, off + torch.arange(N)), dim=-1)
    noise_tok = torch.stack((philox.uint_to_open_uniform(w_tok[:, 0]), philox.uint_to_uniform(w_tok[:, 1]),
                             torch.zeros(N)), dim=-1)
    noise_race = philox.uint_to_open_uniform(philox.uint32_stream(seed, off + N, N * V)).view(N, V)
    common = (z, xt, ones, ones, ones * 0, None, 1, -1, T, True, False)
    full = cb.jump_step(*common, None, noise_tok, noise_race, None)
    assert bool((full == 5).all())
    assert torch.equal(cb.jump_step(*common, rng, None, None, None), full)
    # and the other side: z / T finite where z * fl(1 / T) overflows to -inf, the row's only finite key
    T, z = 0.9380161762237549, torch.full((N, V), -math.inf)
    z[:, 5] = -3.1919034437313783e38
    common = (z, xt, ones, ones, ones * 0, None, 1, -1, T, True, False)
    full = cb.jump_step(*common, None, noise_tok, noise_race, None)
    assert bool((full == 5).all())
    assert torch.equal(cb.jump_step(*common, rng, None, None, None), full)


def test_jump_step_int32_tokens_and_noncontiguous_rows():
    g = torch.Generator().manual_seed(12)
    args = list(_jump_args("cpu", torch.float32, 40, 29, JUMP_CASES[1], g, explicit=True))
    args[1] = args[1].int()
    wide = torch.zeros(40, 35)
    wide[:, :29] = args[0]
    args[0] = wide[:, :29]
    got = cb.jump_step(*args)
    assert got.dtype == torch.int32
    assert torch.equal(got, R.jump_step(*args))


def test_jump_step_final_draws_follow_softmax():
    # the in-kernel generator: x_1 ~ softmax(z / temperature)
    from conftest import chi2_pvalue

    V, N, temp = 12, 40_000, 0.7
    z = torch.linspace(-2, 2, V)
    z[4] = -math.inf  # probability 0: never drawn
    logits = z.expand(N, V).contiguous()
    xt = torch.zeros(N, dtype=torch.int64)
    ones = torch.ones(N)
    rng = _rng("cpu", seed=2024, offset=0)
    new = cb.jump_step(logits, xt, ones, ones, ones * 0, None, 1, -1, temp, True, False, rng, None, None, None)
    counts = torch.bincount(new, minlength=V)
    assert chi2_pvalue(counts, torch.softmax(z / temp, -1)) > 1e-4


def test_jump_step_jump_probability():
    # div_free = 0: a token jumps to x_1 != x_t with probability 1 - exp(-h lam)
    V, N, h, lam = 5, 60_000, 0.3, 2.0
    z = torch.zeros(N, V)
    xt = torch.zeros(N, dtype=torch.int64)
    rng = _rng("cpu", seed=4242, offset=0)
    new = cb.jump_step(z, xt, torch.full((N,), h), torch.full((N,), lam), torch.zeros(N), None, 1, -1, 1.0,
                       False, False, rng, None, None, None)
    p = (1 - 1 / V) * (1 - math.exp(-h * lam))
    frac = float((new != xt).float().mean())
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / N)
    from conftest import chi2_pvalue
    counts = torch.bincount(new[new != 0], minlength=V)
    assert chi2_pvalue(counts, torch.tensor([0.0] + [1.0] * (V - 1))) > 1e-4


# ---------------------------------------------------------------- the public ops, backend="cpu"
def _sched(t):
    return SimpleNamespace(alpha_t=t, sigma_t=1 - t, d_alpha_t=torch.ones_like(t), d_sigma_t=-torch.ones_like(t))


def test_public_ops_backend_cpu():
    from fastflow.ops import affine_path as ap, discrete as ds, step_combine as sc

    g = torch.Generator().manual_seed(13)
    B = 4
    x1, x0, v = (torch.randn(B, 3, 11, generator=g) for _ in range(3))
    a, b = torch.rand(B, generator=g), torch.rand(B, generator=g)
    rng = _rng("cpu")
    got = ap.affine_path_sample(x1, None, a, b, rng=rng, backend="cpu")
    ref = ap.affine_path_sample(x1, None, a, b, rng=rng, backend="reference")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)

    vv = v.clone().requires_grad_()
    vr = v.clone().requires_grad_()
    lg = ap.affine_path_loss(vv, x1, x0, a, b, reduction="mean", backend="cpu")
    lr = ap.affine_path_loss(vr, x1, x0, a, b, reduction="mean", backend="reference")
    torch.testing.assert_close(lg, lr, rtol=1e-5, atol=1e-6)
    (2 * lg).backward()
    (2 * lr).backward()
    torch.testing.assert_close(vv.grad, vr.grad, rtol=1e-5, atol=1e-6)

    got = sc.step_combine(x1, v, 1.0, 0.1, backend="cpu")
    torch.testing.assert_close(got, x1 + 0.1 * v, rtol=1e-6, atol=1e-6)

    V = 23
    logits = torch.randn(B, 5, V, generator=g)
    t1 = torch.randint(0, V, (B, 5), generator=g)
    tt = torch.randint(0, V, (B, 5), generator=g)
    zc, zr = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    lc = ds.mixture_cross_entropy(zc, t1, backend="cpu")
    lr = ds.mixture_cross_entropy(zr, t1, backend="reference")
    torch.testing.assert_close(lc, lr, rtol=1e-5, atol=1e-6)
    (3 * lc).backward()
    (3 * lr).backward()
    torch.testing.assert_close(zc.grad, zr.grad, rtol=1e-5, atol=1e-6)

    jump = torch.rand(B, generator=g)
    kc = ds.generalized_kl(logits, t1, tt, jump, reduction="sum", backend="cpu")
    kr = ds.generalized_kl(logits, t1, tt, jump, reduction="sum", backend="reference")
    torch.testing.assert_close(kc, kr, rtol=1e-5, atol=1e-5)

    xs = ds.mixture_path_sample(t1, None, torch.rand(B, generator=g), rng, vocab_size=V, backend="cpu")
    assert xs.shape == t1.shape

    noise = ds.JumpNoise(torch.rand(B, 5, 3, generator=g), torch.rand(B, 5, V, generator=g))
    t = torch.rand(B, generator=g) * 0.9
    jc = ds.jump_step(logits, tt, t, 0.2, _sched, noise=noise, backend="cpu")
    jr = ds.jump_step(logits, tt, t, 0.2, _sched, noise=noise, backend="reference")
    assert torch.equal(jc, jr)


# ---------------------------------------------------------------- torch.library.opcheck
def _opcheck_cases(device):
    g = torch.Generator().manual_seed(14)
    B, V = 3, 17
    x1, x0 = (torch.randn(B, 2, 5, generator=g).to(device) for _ in range(2))
    v = torch.randn(B, 2, 5, generator=g).to(device).requires_grad_()
    a, b = torch.rand(B, generator=g).to(device), torch.rand(B, generator=g).to(device)
    rng = _rng(device)
    logits = torch.randn(B * 2, V, generator=g).to(device)
    t1 = torch.randint(0, V, (B * 2,), generator=g).to(device)
    tt = torch.randint(0, V, (B * 2,), generator=g).to(device)
    ones = torch.ones(B * 2, device=device)
    ops = torch.ops.fastflow
    return [
        (ops.affine_path_sample, (x1, None, a, b, None, rng, device)),
        (ops.affine_path_sample, (x1, x0, a, b, a, rng, device)),
        (ops.affine_path_loss, (v, x1, None, a, b, None, rng, None, a, True, device)),
        (ops.affine_path_loss, (v.detach(), x1, x0, a, b, None, rng, None, a, False, device)),
        (ops.step_combine, (x1, x0, None, a, b, None, a, rng, None, device)),
        (ops.step_combine_out, (x1, x0, None, a, b, None, None, None, None, x1.clone(), device)),
        (ops.mixture_path_sample, (t1, None, ones * 0.5, rng, None, V, -1, device)),
        (ops.cross_entropy, (logits, t1, -100, ones / 6, False, device)),
        (ops.generalized_kl, (logits, t1, tt, ones, -100, ones, False, device)),
        (ops.scale_rows, (logits.clone(), ones * 2, device)),
        (ops.jump_step, (logits, tt, ones * 0.2, ones, ones * 0, None, 1, -1, 1.0, False, False, rng,
                         None, None, None, device)),
    ]


def _check_opcheck(device):
    import fastflow.ops.affine_path  # noqa: F401  (registers the custom ops)
    import fastflow.ops.discrete  # noqa: F401
    import fastflow.ops.step_combine  # noqa: F401

    for op, args in _opcheck_cases(device):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_opcheck_backend_cpu():
    _check_opcheck("cpu")


def test_errors_raise_runtime_error():
    with pytest.raises(RuntimeError, match="token id"):
        cb.cross_entropy(torch.randn(2, 5), torch.tensor([0, 7]), -100, None, None)
    with pytest.raises(TypeError):
        cb.step_combine(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64), None,
                        torch.ones(2), torch.ones(2), None, None, None, None)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "per_sample"])
def test_affine_path_loss_gradient_written_in_forward(backend, dtype, reduction):
    """The public loss's gradients (v, x_1, x_0), with a weight, a mask and an upstream gradient
    that is not 1, against autograd through the plain torch formula in fp32. fp16 keeps the
    reduction's divisor out of the forward-written gradient (see ops/_fused_grad.py)."""
    from fastflow.ops import affine_path as ap

    g = torch.Generator().manual_seed(21)
    B, shape = 3, (3, 4, 9)
    x1, x0, v = (torch.randn(shape, generator=g).to(dtype).requires_grad_() for _ in range(3))
    c, d, w = torch.rand(B, generator=g) + 0.5, -torch.rand(B, generator=g), torch.rand(B, generator=g) + 0.5
    mask = torch.rand(shape[0], shape[1], 1, generator=g) > 0.3
    loss = ap.affine_path_loss(v, x1, x0, c, d, mask=mask, weight=w, reduction=reduction, backend=backend)
    up = torch.rand(loss.shape, generator=g) + 0.5
    (loss * up).sum().backward()

    f = [t.detach().float().requires_grad_() for t in (v, x1, x0)]
    sq = (f[0] - (c[:, None, None] * f[1] + d[:, None, None] * f[2])).square() * mask
    per = sq.reshape(B, -1).sum(1) * w
    m = mask.expand(shape).reshape(B, -1)
    want = {"mean": per.sum() / m.sum(), "sum": per.sum(), "per_sample": per / m.sum(1)}[reduction]
    (want * up).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(loss.float(), want.detach(), **tol)
    for got, ref in zip((v, x1, x0), f):
        assert got.grad.dtype == dtype
        torch.testing.assert_close(got.grad.float(), ref.grad, **tol)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_affine_path_loss_gradients_of_weight_and_coefficients(backend, dtype):
    """A learnable per-sample weight and schedule coefficients (c, d, e) get their gradients,
    with or without v requiring one, as autograd through the plain formula gives them."""
    from fastflow.ops import affine_path as ap

    g = torch.Generator().manual_seed(31)
    B, shape = 3, (3, 2, 7)
    x1, v = (torch.randn(shape, generator=g).to(dtype) for _ in range(2))
    rng = _rng("cpu", seed=5)
    for v_grad in (True, False):
        vv = v.clone().requires_grad_(v_grad)
        c, d, e, w = (torch.rand(B, generator=g).add(0.5).requires_grad_() for _ in range(4))
        loss = ap.affine_path_loss(vv, x1, None, c, d, e, rng=rng, weight=w, backend=backend)
        got = torch.autograd.grad(3 * loss, [c, d, e, w] + ([vv] if v_grad else []))

        z0 = R._common.gaussian_like(rng, 0, v)
        eps = R._common.gaussian_like(rng, 1, v)
        f = [t.detach().clone().requires_grad_() for t in (c, d, e, w)]
        ps = [k[:, None, None] for k in f]
        vf = vv.detach().float().requires_grad_()
        r = vf - (ps[0] * x1.float() + ps[1] * z0 + ps[2] * eps)
        want_loss = (r.square().reshape(B, -1).sum(1) * f[3]).sum() / v.numel()
        want = torch.autograd.grad(3 * want_loss, f + ([vf] if v_grad else []))
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=1e-3)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.float(), b, **tol)


@pytest.mark.parametrize("op", ("cross_entropy", "generalized_kl"))
def test_row_losses_with_masked_chunks_and_negative_logits(op):
    """Whole 4096-wide chunks of -inf (a masked vocabulary) next to very negative logits, an
    all -inf row and a NaN: the one-exp fp32 path rescales chunk by chunk and must agree."""
    g = torch.Generator().manual_seed(12)
    N, V = 20, 9001
    z = torch.randn(N, V, generator=g) * 0.01 - 88.72  # exp(0 - max) overflows to inf
    z[:, 4096:8192] = float("-inf")
    z[3] = float("-inf")
    z[5, 7] = float("nan")
    x1 = torch.randint(0, 4096, (N,), generator=g)
    xt = torch.randint(0, 4096, (N,), generator=g)
    gs, jump = torch.rand(N, generator=g), torch.rand(N, generator=g)
    extra = (x1, -100) if op == "cross_entropy" else (x1, xt, jump, -100)
    got_g, ref_g = torch.empty_like(z), torch.empty_like(z)
    got = getattr(cb, op)(z, *extra, gs, got_g)
    ref = getattr(R, op)(z, *extra, gs, ref_g)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(got_g, ref_g, rtol=1e-5, atol=1e-6, equal_nan=True)


def check_infinite_logits(module, device):
    """A +inf logit: cross-entropy +inf as torch's logsumexp gives (NaN if the target is the
    +inf one), generalized KL NaN, the row's gradient all NaN (torch.softmax); a NaN elsewhere
    in the row still wins; an ignored row has loss and gradient 0 whatever its logits. Short
    rows and split ones (V = 70001), every dtype, in place too."""
    for V in (10, 5000, 70_001):
        for dtype in DTYPES:
            z = torch.randn(6, V, generator=torch.Generator().manual_seed(V))
            z[0, 3] = z[2, 3] = z[3, 5] = z[4, V - 1] = z[5, 0] = math.inf
            z[3, 7] = z[5, 1] = math.nan
            z = z.to(device=device, dtype=dtype)
            x1 = torch.tensor([1, 3, 3, 1, 0, -100], device=device)  # row 5 is ignored
            xt = torch.tensor([2, 3, 1, 1, 0, 0], device=device)
            jump, gs = torch.ones(6, device=device), torch.ones(6, device=device)
            for op, extra in (("cross_entropy", (x1, -100)), ("generalized_kl", (x1, xt, jump, -100))):
                want_g = torch.empty_like(z)
                want = getattr(R, op)(z, *extra, gs, want_g)
                for in_place in (False, True):
                    zz = z.clone()
                    got_g = zz if in_place else torch.empty_like(z)
                    got = getattr(module, op)(zz, *extra, gs, got_g)
                    what = (op, V, dtype, in_place)
                    assert torch.equal(torch.isnan(got), torch.isnan(want)), what
                    assert torch.equal(torch.isposinf(got), torch.isposinf(want)), what
                    torch.testing.assert_close(got[1], want[1], rtol=2e-2, atol=1e-3)
                    assert got_g[[0, 2, 3, 4]].isnan().all(), what
                    assert want_g[[0, 2, 3, 4]].isnan().all(), what  # the spec agrees
                    assert got[5] == 0 and (got_g[5] == 0).all() and (want_g[5] == 0).all(), what  # ignored
    # a -inf logit at x_1 with x_t = x_1 (delta = 1): that row's loss has no log p[x_1] term, finite
    z = torch.tensor([[-math.inf, 0.0, 1.0], [0.5, -math.inf, 1.0]], device=device)
    x1, xt, ones = torch.tensor([0, 0], device=device), torch.tensor([0, 2], device=device), torch.ones(2, device=device)
    got, want = module.generalized_kl(z, x1, xt, ones, -100, None, None), R.generalized_kl(z, x1, xt, ones, -100, None, None)
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want)


def test_row_losses_with_infinite_logits(isa):
    check_infinite_logits(cb, "cpu")


def _row_losses_float64(z, x1, xt, jump):
    """Cross-entropy, generalized KL and their gradients in float64, from log_softmax."""
    log_p = torch.log_softmax(z.double(), -1)
    p, rows = log_p.exp(), torch.arange(z.shape[0])
    ce = -log_p[rows, x1]
    ce_g = p.clone()
    ce_g[rows, x1] -= 1
    off = (x1 != xt).double()
    pt = p[rows, xt]
    gkl = -jump.double() * (pt - (1 - off) + off * log_p[rows, x1])
    g = -(pt + off)[:, None] * p
    g[rows, xt] += pt
    g[rows, x1] += off
    return ce, ce_g, gkl, -g * jump.double()[:, None]


def check_large_logits(module, device):
    """From a review: the losses and gradients are shift-invariant. Triton formed p as
    exp(z - lse) (8e-4 relative error at logits near 3e4, and p = 1 in every column of a row of
    equal 3e38 logits); every backend, the reference included, formed the cross-entropy as
    lse - z[x_1], which rounds log V away there (0 for that row). Short and split rows (V = 70001),
    logits shifted by 3e4 and rows of 3e38, against float64 math on the stored values."""
    for V in (40, 70_001):
        g = torch.Generator().manual_seed(V)
        z = torch.randn(4, V, generator=g)
        z[1] += 3e4
        z[2] = 3e38
        z[3] = -1e30
        z[3, :2] = 3e38  # two huge logits, the rest far below
        x1 = torch.tensor([3, 5, 1, 0])
        xt = torch.tensor([2, 5, 7, 1])
        jump, gs = torch.full((4,), 0.5), torch.ones(4)
        ce, ce_g, gkl, gkl_g = _row_losses_float64(z, x1, xt, jump)
        dev = lambda t: t.to(device)  # noqa: E731
        for op, extra, want, want_g in (("cross_entropy", (dev(x1), -100), ce, ce_g),
                                        ("generalized_kl", (dev(x1), dev(xt), dev(jump), -100), gkl, gkl_g)):
            got_g = torch.empty(z.shape, device=device)
            got = getattr(module, op)(dev(z), *extra, dev(gs), got_g)
            torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5, msg=lambda m: f"{op} V={V}: {m}")
            torch.testing.assert_close(got_g.cpu().double(), want_g, rtol=0, atol=1e-5,
                                       msg=lambda m: f"{op} grad V={V}: {m}")


def test_row_losses_with_large_logits(isa):
    check_large_logits(cb, "cpu")
    check_large_logits(R, "cpu")  # the spec too


def test_kernel_arguments_go_by_position_in_the_kernels_order():
    """csrc_backend passes keyword-named arguments to _C by position (pybind11's keyword
    matching costs more than a small kernel): in the signature's order whatever the order of
    the call site's names, and by keyword when the signature does not name them all."""
    from fastflow.ops.affine_path import affine_path_sample

    def kernel(*args, **kwargs):
        return args, kwargs
    kernel.__name__ = "fake_kernel_for_test"
    kernel.__doc__ = "fake_kernel_for_test(cuda: bool, stream: typing.SupportsInt, x: int, n: int, dtype: int) -> int\n"
    assert list(cb._positional(kernel, dict(x=1, n=2, dtype=3))) == [1, 2, 3]
    assert list(cb._positional(kernel, dict(dtype=3, x=1, n=2))) == [1, 2, 3]
    assert cb._positional(kernel, dict(x=1, n=2)) is None  # (one missing: pybind11's error, by keyword)
    assert cb._positional(kernel, dict(x=1, n=2, dtype=3, extra=4)) is None
    real = {k: v for k, v in cb._ORDERS.items() if not k[0].startswith("fake_")}
    assert all(v is True for v in real.values()), real  # every call site already names them in order
    x = torch.randn(5, 3)
    out = affine_path_sample(x, x, 0.25, 0.5, backend="cpu")  # (a real kernel, by position)
    torch.testing.assert_close(out, 0.75 * x)
    assert cb._ORDERS[("affine_path_sample", "x1", "x0", "a", "b", "s", "rng", "out", "batch", "per_sample",
                       "dtype")] is True
