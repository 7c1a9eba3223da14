"""Triton backend vs the reference, op by op: every op x dtype (fp32, bf16, fp16) x odd shapes
x a non-contiguous input, called directly and through the public layer (backend="triton").

Runs under the Triton interpreter on CPU (TRITON_INTERPRET=1, set here before Triton is
imported); with FASTFLOW_TEST_GPU=1 it runs compiled kernels on CUDA tensors instead.
Tolerance: |fused - ref_fp32| <= |ref_lowdtype - ref_fp32| + floor, where ref_fp32 runs the
reference on the (rounded) inputs upcast to fp32 and ref_lowdtype on the inputs as they are.
"""
from triton_env import DEVICE, GPU, require_triton

require_triton()

import importlib  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")
import fastflow as ff  # noqa: E402
import fastflow.reference as ref  # noqa: E402
import fastflow.triton_kernels as tk  # noqa: E402
from fastflow.ops import affine_path as ops_affine  # noqa: E402
from fastflow.ops import discrete as ops_discrete  # noqa: E402
from fastflow.ops import step_combine as ops_step  # noqa: E402
from fastflow.ops.discrete import JumpNoise  # noqa: E402

# the package's attributes are the op functions: reach the modules through importlib
tk_common = importlib.import_module("fastflow.triton_kernels._common")
tk_ce = importlib.import_module("fastflow.triton_kernels.cross_entropy")
tk_gkl = importlib.import_module("fastflow.triton_kernels.generalized_kl")
tk_jump = importlib.import_module("fastflow.triton_kernels.jump_step")
tk_scale = importlib.import_module("fastflow.triton_kernels.scale_rows")

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # interpreter: masked lanes

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
FLOOR = 1e-4 if GPU else 2e-5


def rng_tensor(seed=-1234567, offset=2**33 + 5):
    return torch.tensor([seed, offset], dtype=torch.int64, device=DEVICE)


def randn(*shape, dtype=torch.float32, noncontig=False):
    if noncontig:  # a transposed view of the last two dims
        t = torch.randn(*shape[:-2], shape[-1], shape[-2], device=DEVICE).to(dtype).transpose(-1, -2)
        assert not t.is_contiguous()
        return t
    return torch.randn(*shape, device=DEVICE).to(dtype)


def coef(B, lo=0.0, hi=1.0):
    return (torch.rand(B, device=DEVICE) * (hi - lo) + lo).float()


def up(x):
    return None if x is None else (x.float() if x.is_floating_point() else x)


def assert_rule(fused, ref32, reflow, floor=FLOOR):
    """|fused - ref32| <= |reflow - ref32| + floor * (1 + |ref32|)."""
    fused, ref32, reflow = fused.float(), ref32.float(), reflow.float()
    bound = (reflow - ref32).abs() + floor * (1 + ref32.abs())
    err = (fused - ref32).abs()
    bad = ~(err <= bound)
    assert not bool(bad.any()), f"max excess {float((err - bound)[bad].max())} at {int(bad.sum())} elements"


SHAPES = [(3, 37), (2, 3, 5), (4, 1), (3, 2, 8)]  # the last: samples start at Philox counters


@pytest.fixture
def small_tiles(monkeypatch):
    """Force multi-window samples and multi-tile rows on small shapes."""
    monkeypatch.setattr(tk_common, "MAX_TILE", 128)
    monkeypatch.setattr(tk_ce, "MAX_BLOCK_V", 64)
    monkeypatch.setattr(tk_gkl, "MAX_BLOCK_V", 64)
    monkeypatch.setattr(tk_jump, "MAX_BLOCK_V", 64)


# ---------------------------------------------------------------- affine path sample
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_affine_path_sample(dtype, shape):
    B = shape[0]
    x1 = randn(*shape, dtype=dtype, noncontig=len(shape) >= 2 and shape[-1] > 1)
    x0 = randn(*shape, dtype=dtype)
    a, b, s = coef(B), coef(B), coef(B)
    rng = rng_tensor()
    for X0 in (x0, None):
        for S in (s, None):
            got = tk.affine_path_sample(x1, X0, a, b, S, rng)
            assert got.dtype == dtype and got.shape == x1.shape
            assert_rule(got, ref.affine_path_sample(up(x1), up(X0), a, b, S, rng),
                        ref.affine_path_sample(x1, X0, a, b, S, rng))
    pub = ops_affine.affine_path_sample(x1, None, a, b, s, rng, backend="triton")
    assert_rule(pub, ref.affine_path_sample(up(x1), None, a, b, s, rng),
                ops_affine.affine_path_sample(x1, None, a, b, s, rng, backend="reference"))


def test_affine_path_sample_out_argument():
    x1 = randn(3, 37)
    a, b = coef(3), coef(3)
    rng = rng_tensor()
    out = torch.empty(37, 3, device=DEVICE).t()
    res = tk.affine_path_sample(x1, None, a, b, None, rng, out=out)
    assert res is out
    torch.testing.assert_close(out, ref.affine_path_sample(x1, None, a, b, None, rng), atol=FLOOR, rtol=FLOOR)


# ---------------------------------------------------------------- affine path loss
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 37), (5, 2)], ids=str)
def test_affine_path_loss_and_grad(dtype, shape):
    B = shape[0]
    v = randn(*shape, dtype=dtype, noncontig=True)
    x1, x0 = randn(*shape, dtype=dtype), randn(*shape, dtype=dtype)
    c, d, e, gs = coef(B, -1, 2), coef(B, -1, 2), coef(B), coef(B, 0.1, 2)
    mask = torch.rand(*shape, device=DEVICE) > 0.3
    rng = rng_tensor(seed=77)
    for X0 in (x0, None):
        for E in (e, None):
            for M in (mask, None):
                args = (v, x1, X0, c, d, E, rng, M)
                args32 = (up(v), up(x1), up(X0), c, d, E, rng, M)
                got = tk.affine_path_loss(*args)
                assert got.dtype == torch.float32 and got.shape == (B,)
                r = ref.affine_path_loss(*args32)
                torch.testing.assert_close(got, r, rtol=1e-5 if not GPU else 1e-4, atol=1e-5)
                dv = torch.full(v.shape, float("nan"), dtype=dtype, device=DEVICE)
                assert torch.equal(tk.affine_path_loss(*args, gs, dv), got)  # same sums with the gradient
                want32, want_lp = torch.empty(v.shape, device=DEVICE), torch.empty_like(dv)
                ref.affine_path_loss(*args32, gs, want32)
                ref.affine_path_loss(*args, gs, want_lp)
                assert_rule(dv, want32, want_lp)


def test_affine_path_loss_public_autograd():
    B, D = 3, 37
    v = randn(B, D).requires_grad_()
    v2 = v.detach().clone().requires_grad_()
    x1 = randn(B, D)
    t = torch.tensor([0.1, 0.5, 0.9], device=DEVICE)
    rng = rng_tensor()
    mask = torch.rand(B, D, device=DEVICE) > 0.5
    for red in ("mean", "sum", "per_sample"):
        for M in (None, mask):
            a = ops_affine.affine_path_loss(v, x1, None, torch.ones(B, device=DEVICE), -torch.ones(B, device=DEVICE),
                                            t, rng, M, weight=t + 1, reduction=red, backend="triton")
            b = ops_affine.affine_path_loss(v2, x1, None, torch.ones(B, device=DEVICE), -torch.ones(B, device=DEVICE),
                                            t, rng, M, weight=t + 1, reduction=red, backend="reference")
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            g = torch.rand_like(a) + 0.5
            v.grad = v2.grad = None
            (a * g).sum().backward()
            (b * g).sum().backward()
            torch.testing.assert_close(v.grad, v2.grad, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- step combine
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_step_combine(dtype, shape):
    B = shape[0]
    x = randn(*shape, dtype=dtype, noncontig=shape[-1] > 1)
    p, q, z = randn(*shape, dtype=dtype), randn(*shape, dtype=dtype), randn(*shape, dtype=dtype)
    A, Bc, C, N = coef(B, 0.5, 1.5), coef(B, -1, 1), coef(B, -1, 1), coef(B)
    rng = rng_tensor(seed=5, offset=3)
    variants = [(None, None, None, None), (q, C, None, None), (q, C, N, None), (None, None, N, z)]
    for Q, CC, NN, Z in variants:
        args = (x, p, Q, A, Bc, CC, NN, rng, Z)
        got = tk.step_combine(*args)
        assert got.dtype == dtype
        r32 = ref.step_combine(up(x), up(p), up(Q), A, Bc, CC, NN, rng, up(Z))
        assert_rule(got, r32, ref.step_combine(*args))
        # in place (out aliases x) on a contiguous copy
        xi = x.contiguous().clone()
        res = tk.step_combine(xi, p, Q, A, Bc, CC, NN, rng, Z, out=xi)
        assert res is xi
        assert_rule(xi, r32, ref.step_combine(*args))
    # a non-contiguous x stepped in place
    xn = x.clone() if x.is_contiguous() else x
    expect = ref.step_combine(up(xn), up(p), up(q), A, Bc, C, N, rng, None)
    tk.step_combine(xn, p, q, A, Bc, C, N, rng, None, out=xn)
    assert_rule(xn, expect, expect.to(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_step_combine_public(dtype):
    x, p, q = randn(3, 37, dtype=dtype), randn(3, 37, dtype=dtype), randn(3, 37, dtype=dtype)
    rng = rng_tensor()
    h = torch.tensor([0.1, 0.2, 0.3], device=DEVICE)
    got = ops_step.step_combine(x, p, 1.0, h, q=q, C=-h, N=0.5, rng=rng, backend="triton")
    exp = ops_step.step_combine(x, p, 1.0, h, q=q, C=-h, N=0.5, rng=rng, backend="reference")
    exp32 = ops_step.step_combine(up(x), up(p), 1.0, h, q=up(q), C=-h, N=0.5, rng=rng, backend="reference")
    assert_rule(got, exp32, exp)
    xi = x.clone()
    ops_step.step_combine(xi, p, 1.0, h, out=xi, backend="triton")
    assert_rule(xi, ops_step.step_combine(up(x), up(p), 1.0, h, backend="reference"),
                ops_step.step_combine(x, p, 1.0, h, backend="reference"))


@pytest.mark.parametrize("D", [301, 256])
def test_continuous_ops_multi_window_samples(D, small_tiles):
    """128-element windows: D = 301 takes 3 windows per sample, the first not at a sample start;
    D = 256 (samples start at Philox counters) exactly 2."""
    B = 2
    if D % 4 == 0:
        assert tk_common.sample_tiling(B, D)[2] == 2
    x1, x0, v = randn(B, D), randn(B, D), randn(B, D)
    a, b, s, gs = coef(B), coef(B), coef(B), coef(B, 0.5, 2)
    mask = torch.rand(B, D, device=DEVICE) > 0.3
    rng = rng_tensor(seed=3, offset=2**32 - 1)
    tol = dict(atol=FLOOR, rtol=FLOOR)
    torch.testing.assert_close(tk.affine_path_sample(x1, None, a, b, s, rng),
                               ref.affine_path_sample(x1, None, a, b, s, rng), **tol)
    args = (v, x1, None, a, b, s, rng, mask)
    torch.testing.assert_close(tk.affine_path_loss(*args), ref.affine_path_loss(*args), **tol)
    got, want = torch.empty_like(v), torch.empty_like(v)
    tk.affine_path_loss(*args, gs, got)
    ref.affine_path_loss(*args, gs, want)
    torch.testing.assert_close(got, want, **tol)
    args = (x1, v, x0, a, b, s, gs, rng, None)
    torch.testing.assert_close(tk.step_combine(*args), ref.step_combine(*args), **tol)
    t1 = torch.randint(0, 1000, (B, D), device=DEVICE)
    margs = (t1, None, a, rng, None, 1000, None)
    assert torch.equal(tk.mixture_path_sample(*margs), ref.mixture_path_sample(*margs))


# ---------------------------------------------------------------- mixture path sample
@pytest.mark.parametrize("itype", [torch.int64, torch.int32], ids=str)
@pytest.mark.parametrize("shape", [(3, 37), (2, 3, 5)], ids=str)
def test_mixture_path_sample_exact(itype, shape):
    V = 50
    B = shape[0]
    x1 = torch.randint(0, V, shape, device=DEVICE).to(itype)
    x0 = torch.randint(0, V, shape, device=DEVICE).to(itype)
    if len(shape) == 2:
        x1 = x1.t().contiguous().t() if shape[0] != shape[1] else x1
    kappa = coef(B)
    u = torch.rand(shape, device=DEVICE)
    rng = rng_tensor(seed=-9, offset=2**32 + 1)
    for X0, noise, mask_id in [(x0, None, None), (None, None, None), (None, None, 7), (x0, u, None),
                               (None, u, None), (None, u, 3)]:
        args = (x1, X0, kappa, rng, noise, V, mask_id)
        got = tk.mixture_path_sample(*args)
        assert got.dtype == itype
        assert torch.equal(got, ref.mixture_path_sample(*args))
    pub = ops_discrete.mixture_path_sample(x1, None, kappa, rng, vocab_size=V, backend="triton")
    assert torch.equal(pub, ops_discrete.mixture_path_sample(x1, None, kappa, rng, vocab_size=V, backend="reference"))


# ---------------------------------------------------------------- cross-entropy / generalized KL
def _logits(N, V, dtype, noncontig=False):
    z = torch.randn(N, V, device=DEVICE) * 3
    z[0, : min(3, V - 1)] = -math.inf  # masked vocabulary entries
    if noncontig:  # rows with a stride larger than V
        z = torch.cat([z, torch.randn(N, 5, device=DEVICE)], dim=1)[:, :V]
    return z.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("NV", [(7, 13), (5, 1000), (3, 5000)], ids=str)
def test_cross_entropy(dtype, NV):
    N, V = NV
    z = _logits(N, V, dtype, noncontig=N == 5)
    x1 = torch.randint(0, V, (N,), device=DEVICE)
    x1[0] = V - 1
    x1[1] = -100
    gs = coef(N, 0.5, 2)
    loss = tk.cross_entropy(z, x1, -100, None, None)
    torch.testing.assert_close(loss, ref.cross_entropy(up(z), x1, -100, None, None), rtol=1e-5, atol=1e-5)
    g = torch.empty(N, V, dtype=dtype, device=DEVICE)
    loss = tk.cross_entropy(z, x1, -100, gs, g)
    g32, glow = torch.empty(N, V, device=DEVICE), torch.empty(N, V, dtype=dtype, device=DEVICE)
    torch.testing.assert_close(loss, ref.cross_entropy(up(z), x1, -100, gs, g32), rtol=1e-5, atol=1e-5)
    ref.cross_entropy(z, x1, -100, gs, glow)
    assert_rule(g, g32, glow)
    assert bool((g[1] == 0).all())  # ignored row: zero gradient


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("NV", [(7, 13), (5, 1000), (3, 5000)], ids=str)
def test_generalized_kl(dtype, NV):
    N, V = NV
    z = _logits(N, V, dtype, noncontig=N == 5)
    x1 = torch.randint(0, V, (N,), device=DEVICE)
    xt = torch.randint(0, V, (N,), device=DEVICE)
    xt[2] = x1[2]
    x1[1] = -7
    jump = coef(N, 0.1, 3)
    gs = coef(N, 0.5, 2)
    loss = tk.generalized_kl(z, x1, xt, jump, -7, None, None)
    torch.testing.assert_close(loss, ref.generalized_kl(up(z), x1, xt, jump, -7, None, None), rtol=1e-5, atol=1e-5)
    g = torch.empty(N, V, dtype=dtype, device=DEVICE)
    loss = tk.generalized_kl(z, x1, xt, jump, -7, gs, g)
    g32, glow = torch.empty(N, V, device=DEVICE), torch.empty(N, V, dtype=dtype, device=DEVICE)
    torch.testing.assert_close(loss, ref.generalized_kl(up(z), x1, xt, jump, -7, gs, g32), rtol=1e-5, atol=1e-5)
    ref.generalized_kl(z, x1, xt, jump, -7, gs, glow)
    assert_rule(g, g32, glow)
    assert bool((g[1] == 0).all())


def _row_loss_case(N, V, ignored):
    """fp32 logits, x_1 (row ``ignored`` set to ignore_index -100), x_t, jump and grad_scale."""
    z = _logits(N, V, torch.float32)
    x1 = torch.randint(0, V, (N,), device=DEVICE)
    x1[ignored] = -100
    xt = torch.randint(0, V, (N,), device=DEVICE)
    return z, x1, xt, coef(N, 0.1, 2), coef(N, 0.5, 2)


@pytest.mark.parametrize("op", ["ce", "gkl"])
def test_losses_multi_tile_rows_and_grad_in_place(op, small_tiles):
    N, V = 6, 1000
    z, x1, xt, jump, gs = _row_loss_case(N, V, ignored=3)
    g_ref = torch.empty(N, V, device=DEVICE)
    if op == "ce":
        expect = ref.cross_entropy(z, x1, -100, gs, g_ref)
        zz = z.clone()
        got = tk.cross_entropy(zz, x1, -100, gs, zz)  # the gradient overwrites the logits
    else:
        expect = ref.generalized_kl(z, x1, xt, jump, -100, gs, g_ref)
        zz = z.clone()
        got = tk.generalized_kl(zz, x1, xt, jump, -100, gs, zz)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zz, g_ref, rtol=1e-5, atol=1e-6)


def test_losses_public_layer_with_autograd():
    B, L, V = 2, 3, 29
    logits = torch.randn(B, L, V, device=DEVICE, requires_grad=True)
    l2 = logits.detach().clone().requires_grad_()
    x1 = torch.randint(0, V, (B, L), device=DEVICE)
    x1[0, 0] = -100
    xt = torch.randint(0, V, (B, L), device=DEVICE)
    jump = torch.tensor([0.5, 2.0], device=DEVICE)
    for red in ("mean", "sum", "none"):
        a = ff.mixture_cross_entropy(logits, x1, reduction=red, backend="triton")
        b = ff.mixture_cross_entropy(l2, x1, reduction=red, backend="reference")
        torch.testing.assert_close(a, b)
        g = torch.rand_like(a) + 0.5
        logits.grad = l2.grad = None
        a.backward(g)
        b.backward(g)
        torch.testing.assert_close(logits.grad, l2.grad)
        a = ops_discrete.generalized_kl(logits, x1.clamp_min(0), xt, jump, reduction=red, backend="triton")
        b = ops_discrete.generalized_kl(l2, x1.clamp_min(0), xt, jump, reduction=red, backend="reference")
        torch.testing.assert_close(a, b)
        logits.grad = l2.grad = None
        (a.sum() * 3).backward()  # upstream gradient != 1: scale_rows runs
        (b.sum() * 3).backward()
        torch.testing.assert_close(logits.grad, l2.grad)


# ---------------------------------------------------------------- scale_rows
SNAN_BITS = {torch.float32: (torch.int32, 0x7F800001), torch.bfloat16: (torch.int16, 0x7F81),
             torch.float16: (torch.int16, 0x7C01)}


@pytest.mark.parametrize("block", [None, 64])  # 64: five column tiles a row
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scale_rows_skips_rows_with_g_equal_one(dtype, block, monkeypatch):
    if block:
        monkeypatch.setattr(tk_scale, "MAX_BLOCK_V", block)
    N, V = 9, 300
    grad = torch.randn(N, V, device=DEVICE).to(dtype)
    g = torch.rand(N, device=DEVICE) + 0.5
    g[::3] = 1.0
    keep = g != 1.0
    expect32 = grad.float() * g[:, None]
    expect_low = grad.clone()
    ref.scale_rows(expect_low, g)
    # rows with g == 1 hold signalling NaNs: any arithmetic on them (a read, scale and write)
    # would quiet them, so their bits prove they were left alone
    work = grad.clone()
    itype, bits = SNAN_BITS[dtype]
    work.view(itype)[~keep] = bits
    tk.scale_rows(work, g)
    assert bool((work.view(itype)[~keep] == bits).all())
    assert_rule(work[keep], expect32[keep], expect_low[keep])
    # all ones: nothing changes
    w2 = grad.clone()
    tk.scale_rows(w2, torch.ones(N, device=DEVICE))
    assert torch.equal(w2, grad)
    # a strided view
    big = torch.randn(N, V + 7, device=DEVICE).to(dtype)
    view = big[:, :V]
    before = view.clone()
    tk.scale_rows(view, g)
    assert_rule(view, before.float() * g[:, None], before * g.to(dtype)[:, None])
    assert torch.equal(big[:, V:], big[:, V:].clone())


# ---------------------------------------------------------------- jump step, exact with explicit noise
def _jump_inputs(N, V, source, dtype=torch.float32, kappa=None, c=0.7, probs=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(N, V, generator=gen) * 2
    z[:, 1] = -math.inf  # never drawn
    if probs:
        z = torch.softmax(z, -1)
    z = z.to(dtype).to(DEVICE)
    xt = torch.randint(0, V, (N,), generator=gen).to(DEVICE)
    mask_id = V - 1
    if source == 2:
        xt[::2] = mask_id
    h = (torch.rand(N, generator=gen) * 0.8 + 0.2).to(DEVICE)
    r1 = (torch.rand(N, generator=gen) * 3).to(DEVICE)
    r0 = (torch.rand(N, generator=gen) * c).to(DEVICE)
    if kappa == 1:
        r1[:] = math.inf
    if kappa == 0:
        r0[:] = math.inf if c > 0 else 0.0
    p0 = None
    if source == 3:
        p0 = torch.softmax(torch.randn(V, generator=gen), 0)
        p0[2] = 0.0
        p0 = (p0 / p0.sum()).to(DEVICE)
    nt = torch.rand(N, 3, generator=gen).to(DEVICE)
    nr = torch.rand(N, V, generator=gen).to(DEVICE)
    nr0 = torch.rand(N, V, generator=gen).to(DEVICE) if source == 3 else None
    return z, xt, h, r1, r0, p0, mask_id, (nt, nr, nr0)


JUMP_CASES = [
    dict(source=0), dict(source=1), dict(source=2), dict(source=3),
    dict(source=1, final=True), dict(source=1, probs=True), dict(source=3, temperature=0.7),
    dict(source=1, temperature=1.9, final=True), dict(source=1, kappa=0, c=0.0), dict(source=1, kappa=0),
    dict(source=2, kappa=0), dict(source=3, kappa=0), dict(source=1, kappa=1), dict(source=3, kappa=1),
]


def _assert_tokens(got, expect):
    if GPU:  # approximate transcendentals may break a near-tie
        assert float((got != expect).float().mean()) <= 0.01
    else:
        assert torch.equal(got, expect)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", JUMP_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_jump_step_exact_with_explicit_noise(case, dtype):
    case = dict(case)
    source = case.pop("source")
    final, probs, temp = case.pop("final", False), case.pop("probs", False), case.pop("temperature", 1.0)
    N, V = 64, 13
    z, xt, h, r1, r0, p0, mask_id, noise = _jump_inputs(N, V, source, dtype, probs=probs, **case)
    args = (z, xt, h, r1, r0, p0, source, mask_id, temp, final, probs, None, *noise)
    got = tk.jump_step(*args)
    assert got.dtype == xt.dtype and got.shape == xt.shape
    _assert_tokens(got, ref.jump_step(*args))
    if final:
        assert not bool((got == 1).any())  # the -inf logit is never drawn


def test_gpu_tilings(monkeypatch):
    """The tiles a GPU launch picks where the interpreter's own choice is wider (for speed): at most
    8 vocabulary rows of fewer than 128 a tile, and 2048 elements of several samples (ptxas's
    registers, see triton_kernels/_common.py), here run by the interpreter."""
    monkeypatch.setattr(tk_common, "interpreting", lambda: False)
    assert tk_common.rows_per_tile(64, 16, 4096) == 8 and tk_common.sample_tiling(40, 37)[:2] == (64, 32)
    test_cross_entropy(torch.float32, (40, 13))
    test_generalized_kl(torch.bfloat16, (40, 13))
    test_affine_path_loss_and_grad(torch.float16, (40, 37))
    test_step_combine(torch.float32, (40, 37))
    for case in (dict(source=3), dict(source=1, probs=True)):  # (N = 64 rows of V = 13)
        test_jump_step_exact_with_explicit_noise(case, torch.float32)


@pytest.mark.parametrize("split", [None, 12])
@pytest.mark.parametrize("source", [1, 2, 3])
def test_jump_step_large_vocab_split_rows(source, split, small_tiles, monkeypatch):
    monkeypatch.setattr(tk_jump, "TARGET_PROGRAMS", split)
    N, V = 5, 1000
    for final in (False, True):
        z, xt, h, r1, r0, p0, mask_id, noise = _jump_inputs(N, V, source, torch.bfloat16, seed=source)
        args = (z, xt, h, r1, r0, p0, source, mask_id, 1.0, final, False)
        _assert_tokens(tk.jump_step(*args, None, *noise), ref.jump_step(*args, None, *noise))
        rng = rng_tensor(seed=source, offset=17)
        got, expect = tk.jump_step(*args, rng, None, None, None), ref.jump_step(*args, rng, None, None, None)
        _assert_tokens(got, expect)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NumPy
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("split", [None, 12])
def test_jump_step_nan_logits_draw_nothing(split, dtype, small_tiles, monkeypatch):
    # a row with a NaN key has no distribution to draw from: -1 (refused by the ops layer, as
    # the reference's and the CPU's), in whichever tile or split the NaN lies
    monkeypatch.setattr(tk_jump, "TARGET_PROGRAMS", split)
    N, V = 7, 1000
    z, xt, h, r1, r0, p0, mask_id, noise = _jump_inputs(N, V, 1, dtype, seed=4)
    for row, cols in enumerate(([3], [999], [70, 640], [200, 900], [], [0, 1])):
        z[row, cols] = float("nan")
    z[4, 500] = float("inf")
    z[6] = -float("inf")  # every token impossible: nothing to draw either
    args = (z, xt, h, r1, r0, p0, 1, mask_id, 1.0, True, False)
    expect = ref.jump_step(*args, None, *noise)
    assert expect.tolist() == [-1, -1, -1, -1, 500, -1, -1]
    assert torch.equal(tk.jump_step(*args, None, *noise), expect)
    rng = rng_tensor(seed=4, offset=3)
    assert torch.equal(tk.jump_step(*args, rng, None, None, None), ref.jump_step(*args, rng, None, None, None))


def test_jump_step_one_token_row_with_a_race_uniform_of_one():
    """u = 1 in fp32 (the top 128 words round to it): the race holds it below 1, so a row's only
    finite key keeps a finite score and is drawn."""
    z = torch.tensor([[-math.inf, 0.0, -math.inf, -math.inf]])
    ones = torch.ones(1)
    args = (z, torch.tensor([0]), ones, ones, ones * 0, None, 1, -1, 1.0, True, False)
    noise = (torch.full((1, 3), 0.5), torch.tensor([[0.5, 1.0, 0.5, 0.5]]), None)
    assert tk.jump_step(*args, None, *noise).tolist() == ref.jump_step(*args, None, *noise).tolist() == [1]
    rng = torch.tensor([1234, 1965154])
    assert tk.jump_step(*args, rng, None, None, None).tolist() == [1]


def test_jump_step_int32_tokens_and_strided_logits():
    N, V = 10, 13
    z, xt, h, r1, r0, p0, mask_id, noise = _jump_inputs(N, V, 1)
    zs = torch.cat([z, z], dim=1)[:, :V]
    args = (zs, xt.int(), h, r1, r0, p0, 1, mask_id, 1.0, False, False, None, *noise)
    got = tk.jump_step(*args)
    assert got.dtype == torch.int32
    assert torch.equal(got, ref.jump_step(*args))


@pytest.mark.parametrize("source", ["uniform", "mask", "general"])
def test_jump_step_public_layer(source):
    B, L, V = 2, 6, 11
    logits = torch.randn(B, L, V, device=DEVICE)
    x_t = torch.randint(0, V, (B, L), device=DEVICE)
    src = torch.softmax(torch.randn(V, device=DEVICE), 0) if source == "general" else source
    mask_id = V - 1 if source == "mask" else None
    noise = JumpNoise(torch.rand(B, L, 3, device=DEVICE), torch.rand(B, L, V, device=DEVICE),
                      torch.rand(B, L, V, device=DEVICE) if source == "general" else None)
    kw = dict(div_free=0.5, source=src, mask_id=mask_id, noise=noise)
    t = torch.tensor([0.2, 0.7], device=DEVICE)
    a = ff.jump_step(logits, x_t, t, 0.3, ff.CondOTScheduler(), backend="triton", **kw)
    b = ff.jump_step(logits, x_t, t, 0.3, ff.CondOTScheduler(), backend="reference", **kw)
    _assert_tokens(a, b)
    g1, g2 = torch.Generator(device=DEVICE).manual_seed(3), torch.Generator(device=DEVICE).manual_seed(3)
    a = ff.jump_step(logits, x_t, t, 0.3, ff.CondOTScheduler(), div_free=0.5, source=src, mask_id=mask_id,
                     generator=g1, backend="triton")
    b = ff.jump_step(logits, x_t, t, 0.3, ff.CondOTScheduler(), div_free=0.5, source=src, mask_id=mask_id,
                     generator=g2, backend="reference")
    _assert_tokens(a, b)


def test_jump_step_partial_explicit_noise():
    """Each noise tensor replaces only its own stream; the others come from rng."""
    N, V = 32, 13
    z, xt, h, r1, r0, p0, mask_id, (nt, nr, nr0) = _jump_inputs(N, V, 3)
    rng = rng_tensor(seed=21, offset=5)
    for noise in [(nt, None, None), (None, nr, None), (nt, nr, None), (None, None, nr0)]:
        args = (z, xt, h, r1, r0, p0, 3, mask_id, 1.0, False, False, rng, *noise)
        _assert_tokens(tk.jump_step(*args), ref.jump_step(*args))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:divide by zero encountered:RuntimeWarning")  # the Triton interpreter's NumPy
def test_row_losses_with_infinite_logits():
    import test_cpu_backend as base  # its check, on this module's device
    base.check_infinite_logits(tk, DEVICE)


def test_row_losses_with_large_logits():
    import test_cpu_backend as base
    base.check_large_logits(tk, DEVICE)


@pytest.mark.parametrize("op", ["ce", "gkl"])
def test_losses_padded_and_ignored_rows_compute_no_nan(op):
    """From a fuzzing review: rows past N (a tile's padding) and ignored rows had a logsumexp of
    -inf, so their discarded terms computed log(0) and -inf - -inf, which the interpreter
    reports as NumPy warnings (errors under -W error). Now 0 there; results unchanged."""
    import warnings

    N, V = 3, 8
    z, x1, xt, jump, gs = _row_loss_case(N, V, ignored=1)
    g, g_ref = torch.empty(N, V, device=DEVICE), torch.empty(N, V, device=DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if op == "ce":
            got, expect = tk.cross_entropy(z, x1, -100, gs, g), ref.cross_entropy(z, x1, -100, gs, g_ref)
        else:
            got = tk.generalized_kl(z, x1, xt, jump, -100, gs, g)
            expect = ref.generalized_kl(z, x1, xt, jump, -100, gs, g_ref)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    assert bool((g[1] == 0).all())


def test_empty_batches_give_empty_outputs():
    """From a layout review: the launchers divided the element count by the batch, so an empty
    batch raised ZeroDivisionError where the other backends return an empty result."""
    x = torch.randn(0, 4, device=DEVICE)
    assert ff.euler_step(x, x, 0.1, backend="triton").shape == (0, 4)
    assert ff.step_combine(x, x, 1.0, 1.0, backend="triton").shape == (0, 4)
    assert ff.ddim_step(x, x, 5, 2, ff.DDPMScheduler(10), backend="triton").shape == (0, 4)
    tokens = torch.zeros(0, 4, dtype=torch.long, device=DEVICE)
    out = ff.mixture_path_sample(tokens, None, 0.5, torch.tensor([1, 2], device=DEVICE), vocab_size=3,
                                 backend="triton")
    assert out.shape == (0, 4)
