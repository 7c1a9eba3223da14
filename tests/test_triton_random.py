"""The Triton backend's random numbers: the project's Philox bit for bit against
``fastflow.reference.philox`` (FORMULAS.md §6), the streams each op draws, and the laws of the
in-kernel draws (Gaussian moments, mixture frequencies, jump-step chi-square).

Runs under the Triton interpreter on CPU (TRITON_INTERPRET=1, set before Triton is imported);
FASTFLOW_TEST_GPU=1 runs the compiled kernels on CUDA tensors instead.
"""
from triton_env import DEVICE, GPU, require_triton

require_triton()

import importlib  # noqa: E402
import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import fastflow as ff  # noqa: E402
import fastflow.reference as ref  # noqa: E402
import fastflow.triton_kernels as tk  # noqa: E402
from fastflow.ops import discrete as ops_discrete  # noqa: E402
from fastflow.reference import philox as rphilox  # noqa: E402

from conftest import chi2_pvalue  # noqa: E402
from jump_law import next_token_law  # noqa: E402

P = importlib.import_module("fastflow.triton_kernels._philox")
tk_jump = importlib.import_module("fastflow.triton_kernels.jump_step")

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@triton.jit
def _philox_probe(rng_ptr, words_ptr, unif_ptr, open_ptr, normal_ptr, BLOCK: tl.constexpr):
    """The element-wise stream of ``BLOCK`` elements from ``(seed, offset)`` and its three maps."""
    seed = tl.load(rng_ptr)
    offset = tl.load(rng_ptr + 1)
    ctr = offset + tl.arange(0, BLOCK // 4).to(tl.int64)
    w = P.words_block(seed, ctr)
    i = tl.arange(0, BLOCK)
    tl.store(words_ptr + i, w.to(tl.int64))
    tl.store(unif_ptr + i, P.uint_to_uniform(w))
    tl.store(open_ptr + i, P.uint_to_open_uniform(w))
    tl.store(normal_ptr + i, P.gaussian_block(seed, ctr))


SEEDS = [(0, 0), (1234, 0), (-5, 3), (2**40 + 7, 2**33 + 5), (-(2**63), 2**32 - 8), (2**63 - 1, 2**62),
         (-987654321, 2**35 + 123)]


@pytest.mark.parametrize("seed,offset", SEEDS, ids=str)
def test_philox_stream_bit_identical_to_reference(seed, offset):
    n = 256
    rng = torch.tensor([seed, offset], dtype=torch.int64, device=DEVICE)
    words = torch.empty(n, dtype=torch.int64, device=DEVICE)
    unif, opn, normal = (torch.empty(n, device=DEVICE) for _ in range(3))
    _philox_probe[(1,)](rng, words, unif, opn, normal, BLOCK=n)
    expect = rphilox.uint32_stream(rng[0].cpu(), rng[1].cpu(), n)
    assert torch.equal(words.cpu(), expect)
    assert torch.equal(unif.cpu(), rphilox.uint_to_uniform(expect))
    assert torch.equal(opn.cpu(), rphilox.uint_to_open_uniform(expect))
    assert bool((opn > 0).all() and (opn < 1).all())
    torch.testing.assert_close(normal.cpu(), rphilox.normal_stream(rng[0].cpu(), rng[1].cpu(), n),
                               atol=1e-4 if GPU else 1e-5, rtol=1e-4 if GPU else 1e-5)


def test_op_streams_follow_the_counter_layout():
    """x_0 is stream 0 at the offset, eps stream 1 at offset + ceil(numel / 4)."""
    B, D = 3, 37
    n = B * D
    rng = torch.tensor([-42, 2**33 + 1], dtype=torch.int64, device=DEVICE)
    zeros, ones = torch.zeros(B, device=DEVICE), torch.ones(B, device=DEVICE)
    x1 = torch.randn(B, D, device=DEVICE)
    tol = dict(atol=1e-4 if GPU else 1e-5, rtol=1e-4 if GPU else 1e-5)
    s0 = rphilox.normal_stream(-42, 2**33 + 1, n).view(B, D)
    s1 = rphilox.normal_stream(-42, 2**33 + 1 + (n + 3) // 4, n).view(B, D)
    torch.testing.assert_close(tk.affine_path_sample(x1, None, zeros, ones, None, rng).cpu(), s0, **tol)
    torch.testing.assert_close(tk.affine_path_sample(x1, torch.zeros_like(x1), zeros, zeros, ones, rng).cpu(), s1, **tol)
    z = tk.step_combine(x1, x1, None, zeros, zeros, None, ones, rng, None)
    torch.testing.assert_close(z.cpu(), s0, **tol)
    # the loss regenerates the same noise: target = x_0 + eps, v = that target -> zero loss
    v = (s0 + s1).to(DEVICE)
    loss = tk.affine_path_loss(v, x1, None, zeros, ones, ones, rng, None)
    assert float(loss.abs().max()) < (1e-6 if GPU else 1e-8)
    # mixture path: u is uniform stream 0, the uniform source token umulhi(w, V) of stream 1
    V = 1000
    t1 = torch.randint(0, V, (B, D), device=DEVICE)
    u = rphilox.uniform_stream(-42, 2**33 + 1, n).view(B, D)
    w = rphilox.uint32_stream(-42, 2**33 + 1 + (n + 3) // 4, n).view(B, D)
    kappa = torch.full((B,), 0.5, device=DEVICE)
    got = tk.mixture_path_sample(t1, None, kappa, rng, None, V, None).cpu()
    assert torch.equal(got, torch.where(u < 0.5, t1.cpu(), (w * V) >> 32))


def test_gaussian_moments_in_kernel():
    B, D = 4, 5000
    x1 = torch.zeros(B, D, device=DEVICE)
    rng = ff_rng(7)
    x = tk.affine_path_sample(x1, None, torch.zeros(B, device=DEVICE), torch.ones(B, device=DEVICE),
                              None, rng).double().cpu().reshape(-1)
    n = x.numel()
    assert abs(float(x.mean())) < 4 / math.sqrt(n)
    assert abs(float(x.var()) - 1) < 4 * math.sqrt(2 / n)
    # tails: P(|x| > 2) = 0.0455
    frac = float((x.abs() > 2).double().mean())
    assert abs(frac - 0.0455) < 4 * math.sqrt(0.0455 * 0.9545 / n)
    # different seeds differ, the same seed repeats
    y = tk.affine_path_sample(x1, None, torch.zeros(B, device=DEVICE), torch.ones(B, device=DEVICE), None, rng)
    assert torch.equal(y.double().cpu().reshape(-1), x)


def ff_rng(seed):
    from fastflow._rng import new_rng

    return new_rng(torch.device(DEVICE), torch.Generator(device=DEVICE).manual_seed(seed))


def test_mixture_sample_frequencies():
    B, D, V = 3, 4000, 11
    x1 = torch.randint(0, V, (B, D), device=DEVICE)
    kappa = torch.tensor([0.0, 0.3, 0.8], device=DEVICE)
    rng = ff_rng(5)
    x_t = tk.mixture_path_sample(x1, None, kappa, rng, None, V, None).cpu()
    # stream 1 gives the uniform source: for kappa = 0 every token is a source token
    assert chi2_pvalue(torch.bincount(x_t[0], minlength=V), torch.full((V,), 1.0 / V)) > 1e-3
    same = (x_t == x1.cpu()).double().mean(1)
    expect = kappa.double().cpu() + (1 - kappa.double().cpu()) / V
    assert bool(((same - expect).abs() < 0.03).all())
    m = tk.mixture_path_sample(x1, None, kappa, rng, None, V, V).cpu()
    assert bool(((m == x1.cpu()) | (m == V)).all())


@pytest.fixture
def big_row_tiles(monkeypatch):
    """Many rows per program: the interpreter runs a program at a time."""
    monkeypatch.setattr(tk_jump, "MAX_TILE", 1 << 14)


V7 = torch.tensor([2.0, -1.0, 0.5, 1.5, -math.inf, 0.0, 1.0])


def _law_pvalue(x_t, t, h, div_free, source, p0=None, mask_id=None, temperature=1.0, final=False, n=8000,
                probs=False, seed=11):
    V = V7.numel()
    logits = V7.to(DEVICE).expand(n, V).contiguous()
    xt = torch.full((n,), x_t, dtype=torch.long, device=DEVICE)
    inp = torch.softmax(logits, -1) if probs else logits
    sched = ff.PolynomialConvexScheduler(2)
    src = p0.to(DEVICE) if source == "general" else source
    new = ops_discrete.jump_step(inp, xt, t, h, sched, probs=probs, div_free=div_free, source=src,
                                 mask_id=mask_id, temperature=temperature, final=final,
                                 generator=torch.Generator(device=DEVICE).manual_seed(seed), backend="triton")
    s = sched(torch.tensor([t], dtype=torch.float64))
    p0_law = p0 if p0 is not None else (torch.full((V,), 1.0 / V) if source == "uniform"
                                         else torch.nn.functional.one_hot(torch.tensor(mask_id), V).double())
    law = next_token_law(V7, x_t, h, float(s.alpha_t), float(s.d_alpha_t), div_free, p0_law, temperature, final)
    return chi2_pvalue(torch.bincount(new.cpu(), minlength=V), law)


P0 = torch.tensor([0.1, 0.2, 0.0, 0.3, 0.15, 0.05, 0.2])

LAW_CASES = [
    dict(x_t=0, t=0.5, h=0.0, div_free=0.0, source="uniform", final=True),
    dict(x_t=0, t=0.5, h=0.0, div_free=0.0, source="uniform", final=True, temperature=0.6, probs=True),
    dict(x_t=3, t=0.3, h=0.5, div_free=1.5, source="uniform"),
    dict(x_t=6, t=0.6, h=0.3, div_free=0.7, source="mask", mask_id=6),
    dict(x_t=1, t=0.5, h=0.4, div_free=0.8, source="general", p0=P0),
    dict(x_t=2, t=0.0, h=0.1, div_free=0.5, source="uniform"),   # kappa = 0: infinite p0 rate
    dict(x_t=2, t=1.0, h=0.1, div_free=0.0, source="uniform"),   # kappa = 1: infinite rate to x_1
]


@pytest.mark.parametrize("case", LAW_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items() if k != "p0"))
def test_jump_step_law_chi_square(case, big_row_tiles):
    assert _law_pvalue(**case) > 1e-3


def test_jump_step_generator_draws_match_reference(big_row_tiles):
    """Same (seed, offset): the in-kernel stream is the reference's, so the draws agree."""
    N, V = 4000, 13
    logits = torch.randn(N, V, device=DEVICE) * 2
    xt = torch.randint(0, V, (N,), device=DEVICE)
    h = torch.full((N,), 0.4, device=DEVICE)
    r1 = torch.full((N,), 1.5, device=DEVICE)
    r0 = torch.full((N,), 0.7, device=DEVICE)
    p0 = torch.softmax(torch.randn(V, device=DEVICE), 0)
    rng = torch.tensor([-3, 2**32 - 5], dtype=torch.int64, device=DEVICE)
    for source in (1, 3):
        for final in (False, True):
            args = (logits, xt, h, r1, r0, p0, source, V - 1, 1.0, final, False, rng, None, None, None)
            got, expect = tk.jump_step(*args), ref.jump_step(*args)
            assert float((got != expect).double().mean()) <= 1e-3
