"""The compiled CUDA backend against the reference: the same checks as
tests/test_cpu_backend.py (tolerance rule, exact tokens with explicit noise, bit-identical
Philox), plus the launch shapes that only CUDA has (warp / block / split rows).

On a GPU they run on CUDA tensors. Without one they run the same kernels on CPU tensors
through the tests' CUDA emulator (tests/cuda_emulator.py, csrc/cuda/emulator), which checks
the launchers, the index arithmetic, every barrier, shuffle and reduction, but neither device
math nor speed; the tests that need torch's CUDA runtime (graphs, custom-op dispatch) are
skipped there. Skipped when neither a GPU with CUDA compiled into fastflow._C nor the
emulator module is there."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fastflow.csrc_backend as cpu_backend  # noqa: E402

EMULATED = not torch.cuda.is_available()
if EMULATED:
    import cuda_emulator  # noqa: E402
    cb = cuda_emulator.load()
    if cb is None:
        pytest.skip("no CUDA device, and the CUDA emulator (fastflow._C_cuda_emu) is not built",
                    allow_module_level=True)
    DEV = "cpu"
else:
    cb = cpu_backend
    if cb.unavailable("cuda") is not None:
        pytest.skip(f"cuda backend unavailable: {cb.unavailable('cuda')}", allow_module_level=True)
    DEV = "cuda"
    
import test_cpu_backend as base  # noqa: E402

import fastflow.reference as R  # noqa: E402

gpu_only = pytest.mark.skipif(EMULATED, reason="needs torch's CUDA runtime (not emulated)")


@pytest.fixture(autouse=True)
def _cuda_kernels(monkeypatch):
    """The shared checks of tests/test_cpu_backend.py call its ``cb``: the emulated one here."""
    monkeypatch.setattr(base, "cb", cb)


DTYPES = base.DTYPES
SHAPES = base.SHAPES + ((2, 3, 4099),)


def test_philox_bit_identical_cuda():
    base._check_philox(DEV)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x0_mode,with_s", [(True, False), (False, False), (False, True)])
def test_affine_path_sample_cuda(dtype, shape, x0_mode, with_s):
    base._check_affine_sample(DEV, dtype, shape, x0_mode, with_s, noncontig=shape == (3, 5, 7))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x0_mode,with_e,mask_mode", [
    (True, False, None), (False, True, "full"), (True, True, "broadcast"), (False, False, "inner")])
def test_affine_path_loss_cuda(dtype, shape, x0_mode, with_e, mask_mode):
    base._check_affine_loss(DEV, dtype, shape, x0_mode, with_e, mask_mode, noncontig=shape == (4, 33, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x0_mode,with_e,mask_mode", [(True, False, None), (False, True, "broadcast")])
def test_affine_path_loss_low_precision_v_on_fp32_data_cuda(dtype, shape, x0_mode, with_e, mask_mode):
    base._check_affine_loss(DEV, dtype, shape, x0_mode, with_e, mask_mode, noncontig=shape == (4, 33, 3),
                            data_dtype=torch.float32)


def test_affine_path_loss_long_samples_cuda():
    # samples of several chunks: partial sums per chunk, then a fixed-order finishing kernel
    g = torch.Generator().manual_seed(3)
    v, x1 = (torch.randn(3, 100_003, generator=g).to(DEV) for _ in range(2))
    c, d = torch.ones(3, device=DEV), torch.full((3,), 0.5, device=DEV)
    rng = base._rng(DEV)
    a = cb.affine_path_loss(v, x1, None, c, d, None, rng, None)
    b = cb.affine_path_loss(v, x1, None, c, d, None, rng, None)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, R.affine_path_loss(v, x1, None, c, d, None, rng, None), rtol=1e-5, atol=0)
    torch.testing.assert_close(a.cpu(), cpu_backend.affine_path_loss(v.cpu(), x1.cpu(), None, c.cpu(), d.cpu(), None,
                                                            rng.cpu(), None), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_q,noise_mode", [(False, None), (True, "drawn"), (True, "given")])
def test_step_combine_cuda(dtype, shape, with_q, noise_mode):
    base._check_step_combine(DEV, dtype, shape, with_q, noise_mode, noncontig=shape == (1, 1001))


@pytest.mark.parametrize("p_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_q,noise_mode", [(False, None), (True, "drawn"), (True, "given")])
def test_step_combine_low_precision_outputs_on_an_fp32_state_cuda(p_dtype, shape, with_q, noise_mode):
    base._check_step_combine(DEV, torch.float32, shape, with_q, noise_mode, noncontig=shape == (1, 1001),
                             p_dtype=p_dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_elementwise_ops_are_bit_identical_cuda(dtype):
    base._check_bit_identical(DEV, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_inputs_and_outputs_cuda(dtype):
    base._check_misaligned(DEV, dtype)


@pytest.mark.parametrize("itype", (torch.int64, torch.int32))
@pytest.mark.parametrize("x0_mode", ("given", "uniform", "mask"))
@pytest.mark.parametrize("noise_given", (True, False))
def test_mixture_path_sample_cuda(itype, x0_mode, noise_given):
    base._check_mixture(DEV, itype, x0_mode, noise_given)


@pytest.mark.parametrize("op", ("cross_entropy", "generalized_kl"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V", [(37, 1234), (5, 3), (9, 5000), (300, 20_000), (3, 70_001)])
def test_row_losses_cuda(op, dtype, N, V):
    base._check_row_loss(DEV, op, dtype, N, V, noncontig=V in (1234, 70_001), with_grad=True)


@pytest.mark.parametrize("op", ("cross_entropy", "generalized_kl"))
@pytest.mark.parametrize("N,V", [(9, 301), (9, 5000), (2, 70_001)])  # warp, block, split rows
def test_row_losses_in_place_cuda(op, N, V):
    g = torch.Generator().manual_seed(9)
    z, x1, xt, gs, jump = base._row_inputs(DEV, torch.float32, N, V, g)
    extra = (x1, -100) if op == "cross_entropy" else (x1, xt, jump, -100)
    ref_grad = torch.empty_like(z)
    ref = getattr(R, op)(z, *extra, gs, ref_grad)
    zz = z.clone()
    loss = getattr(cb, op)(zz, *extra, gs, zz)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(zz, ref_grad, rtol=1e-5, atol=1e-6)
    base._check_row_loss(DEV, op, torch.float32, N, V, noncontig=False, with_grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_rows_cuda(dtype):
    g = torch.Generator().manual_seed(10)
    grad = torch.randn(7, 9001, generator=g).to(device=DEV, dtype=dtype)
    s = torch.tensor([1.0, 2.0, 0.5, 1.0, -3.0, 0.1, 1.0], device=DEV)
    ref = grad.clone()
    R.scale_rows(ref, s)
    got = grad.clone()
    cb.scale_rows(got, s)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("case", base.JUMP_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,V", [(61, 53), (9, 5000), (300, 20_000)])
def test_jump_step_exact_with_explicit_noise_cuda(case, dtype, N, V):
    base._check_jump(DEV, dtype, N, V, case, explicit=True)


@pytest.mark.parametrize("case", base.JUMP_CASES[:4] + base.JUMP_CASES[6:8])
def test_jump_step_generated_noise_cuda(case):
    base._check_jump(DEV, torch.float32, 97, 301, case, explicit=False, min_agree=0.99)
    base._check_jump(DEV, torch.float32, 300, 20_000, case, explicit=False, min_agree=0.99)


@pytest.mark.parametrize("case", [base.JUMP_CASES[3], base.JUMP_CASES[6], base.JUMP_CASES[1]])
def test_jump_step_split_rows_cuda(case):
    base._check_jump(DEV, torch.bfloat16, 3, 70_001, case, explicit=True)
    base._check_jump(DEV, torch.float32, 3, 70_001, case, explicit=False, min_agree=2 / 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, V", [(5, 40), (6, 5003), (3, 70_001)])  # warp rows; block rows; split rows
def test_jump_step_rows_without_a_draw_cuda(N, V, dtype):
    base._check_jump_without_a_draw(DEV, N, V, dtype)


def test_jump_step_one_token_rows_always_draw_cuda():
    base._check_one_token_rows(DEV)


def test_jump_step_cpu_and_cuda_agree():
    g = torch.Generator().manual_seed(15)
    args = base._jump_args(DEV, torch.float32, 500, 257, base.JUMP_CASES[1], g, explicit=False)
    on_cuda = cb.jump_step(*args).cpu()
    on_cpu = cpu_backend.jump_step(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args])
    assert float((on_cuda == on_cpu).float().mean()) > 0.99


@gpu_only
def test_opcheck_backend_cuda():
    base._check_opcheck(DEV)


@gpu_only
def test_graph_capture_step_combine():
    # no host sync: the step (noise drawn from the device-side (seed, offset)) captures in a graph
    x = torch.randn(4, 1000, device=DEV)
    p = torch.randn(4, 1000, device=DEV)
    A, B, N = (torch.rand(4, device=DEV) for _ in range(3))
    rng = base._rng(DEV)
    ref = cb.step_combine(x, p, None, A, B, None, N, rng, None)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = cb.step_combine(x, p, None, A, B, None, N, rng, None)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, ref)


@gpu_only
@pytest.mark.parametrize("N,V", [(9, 5000), (2, 70_001)])  # a block a row; split rows
def test_graph_capture_row_ops(N, V):
    # the row kernels size their split from device queries on the host: they must capture too
    g = torch.Generator().manual_seed(10)
    z, x1, xt, gs, jump = base._row_inputs(DEV, torch.float32, N, V, g)
    h, r1, r0 = torch.full((N,), 0.1, device=DEV), torch.full((N,), 3.0, device=DEV), torch.zeros(N, device=DEV)
    rng = base._rng(DEV)

    def run():
        grad = torch.empty_like(z)
        loss = cb.cross_entropy(z, x1, -100, gs, grad)
        new = cb.jump_step(z, xt, h, r1, r0, None, 1, -1, 1.0, False, False, rng, None, None, None)
        return loss, grad, new

    ref = run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(out, ref):
        assert torch.equal(a, b)


@gpu_only
def test_overwrite_logits():
    from test_discrete import check_overwrite_logits
    check_overwrite_logits("cuda", "cuda")


def test_row_losses_with_infinite_logits_cuda():
    base.check_infinite_logits(cb, DEV)


def test_row_losses_with_large_logits_cuda():
    base.check_large_logits(cb, DEV)


@gpu_only
def test_solvers_loop_paths_on_cuda():
    # the solvers' loop entries keep their float rows in host memory: on CUDA tensors they must
    # take the ordinary ops (same samples as the per-step path, same states as the reference)
    import fastflow as ff
    V = 11
    path = ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(1.5))
    logits = torch.randn(5, 7, V, device=DEV)
    solver = ff.MixtureDiscreteEulerSolver(lambda x, t: logits, path, V, model_output="logits")
    x0 = torch.randint(0, V, (5, 7), device=DEV)
    loop = solver.sample(x0, step_size=0.1, generator=torch.Generator(DEV).manual_seed(3))
    per_step = solver.sample(x0, step_size=0.1, div_free=lambda t: 0.0, generator=torch.Generator(DEV).manual_seed(3))
    assert torch.equal(loop, per_step)
    x = torch.randn(4, 3, 8, device=DEV)
    ode = ff.ODESolver(lambda x, t: -x)
    got = ode.sample(x, step_size=0.1, method="midpoint")
    with ff.use_backend("reference"):
        want = ff.ODESolver(lambda x, t: -x).sample(x, step_size=0.1, method="midpoint")
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not EMULATED, reason="checks the emulator itself")
def test_emulator_reports_broken_kernels():
    # the emulated runs above are worth something only if the emulator refuses what CUDA does not allow
    run = cb._C.emulator_self_test
    assert run(0) == ""  # a correct warp + block reduction, with its sums checked
    assert "lanes wait at a shuffle or __syncwarp while the others have returned" in run(1)
    assert "32 threads returned while the others wait at __syncthreads()" in run(2)
    assert "threads 0 and 64 wait at different __syncthreads() calls (" in run(3)  # (file:line, file:line)
    assert "invalid launch configuration" in run(4)
    assert "threads 0 and 16 wait at different shuffles" in run(6)


@pytest.mark.skipif(not EMULATED, reason="checks the emulator itself")
def test_emulator_order_shows_both_sides_of_a_race(monkeypatch):
    # a read that no barrier orders after a write sees the old value in thread order and the new
    # one in reverse order (scripts/sanitize.sh runs this file in reverse)
    monkeypatch.setenv("FASTFLOW_CUDA_EMULATOR_ORDER", "forward")
    assert cb._C.emulator_self_test(5) == "read 0"
    monkeypatch.setenv("FASTFLOW_CUDA_EMULATOR_ORDER", "reverse")
    assert cb._C.emulator_self_test(5) == "read 1"
