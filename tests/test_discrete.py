"""Discrete path, losses and the jump step (reference backend) against flow_matching,
torch and the exact law by enumeration."""
import math

import pytest
import torch

import fastflow as ff
from fastflow.ops.discrete import JumpNoise
from flow_matching.loss import MixturePathGeneralizedKL as FMKL
from flow_matching.path import MixtureDiscreteProbPath as FMPath
from flow_matching.path import scheduler as fm

from conftest import chi2_pvalue
from jump_law import next_token_law


def test_mixture_sample_frequencies_and_sources():
    B, L, V = 4, 4000, 11
    x1 = torch.randint(0, V, (B, L))
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])
    path = ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(2))
    d = path.sample(x_1=x1, t=t, source="mask", mask_id=V)
    frac = (d.x_t == x1).float().mean(1)
    torch.testing.assert_close(frac, t**2, atol=0.03, rtol=0)
    assert bool(((d.x_t == x1) | (d.x_t == V)).all())
    u = path.sample(x_1=x1, t=t, source="uniform", vocab_size=V)
    counts = torch.bincount(u.x_0[0], minlength=V)
    assert chi2_pvalue(counts, torch.full((V,), 1.0 / V)) > 1e-3
    assert torch.equal(torch.where(u.x_t == x1, x1, u.x_t), u.x_t)
    x0 = torch.randint(0, V, (B, L))
    g = path.sample(x_0=x0, x_1=x1, t=t)
    assert bool(((g.x_t == x1) | (g.x_t == x0)).all())


def test_non_convex_scheduler_rejected():
    with pytest.raises(ValueError, match="scheduler"):
        ff.MixtureDiscreteProbPath(ff.CosineScheduler())


def test_generalized_kl_matches_flow_matching():
    B, L, V = 3, 5, 17
    logits = torch.randn(B, L, V, requires_grad=True)
    x1, xt = torch.randint(0, V, (B, L)), torch.randint(0, V, (B, L))
    xt[:, :2] = x1[:, :2]
    t = torch.tensor([0.1, 0.5, 0.9])
    for red in ("mean", "sum", "none"):
        ours = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(2)), reduction=red)
        theirs = FMKL(FMPath(fm.PolynomialConvexScheduler(2)), reduction=red)
        l2 = logits.detach().clone().requires_grad_()
        a, b = ours(logits, x1, xt, t), theirs(l2, x1, xt, t)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        g = torch.randn_like(b)
        logits.grad = None
        a.backward(g)
        b.backward(g)
        torch.testing.assert_close(logits.grad, l2.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_int32_tokens_lose_as_int64_ones(backend):
    """Token 0 counts in int32 tensors: torch compares an int32 tensor with a wider id wrapped, so
    the 'no ignore_index' id (and an ignore_index outside int32) must be one int32 can hold."""
    B, L, V = 2, 6, 5
    logits = torch.randn(B, L, V)
    x1, xt = torch.randint(0, V, (B, L)), torch.randint(0, V, (B, L))
    x1[:, 0] = xt[:, 1] = 0
    kl = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(2)),
                                     reduction="none", backend=backend)
    t = torch.tensor([0.3, 0.6])
    want = FMKL(FMPath(fm.PolynomialConvexScheduler(2)), reduction="none")(logits, x1, xt, t)
    torch.testing.assert_close(kl(logits, x1.int(), xt.int(), t), want)
    ce = ff.mixture_cross_entropy(logits, x1.int(), ignore_index=2**32, reduction="none", backend=backend)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits.transpose(1, 2), x1, reduction="none"))
    with pytest.raises(ValueError, match="x_1"):  # 2**32 - 1 is not -1 for int32 tokens
        ff.mixture_cross_entropy(logits, torch.full((B, L), -1, dtype=torch.int32), ignore_index=2**32 - 1)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:divide by zero encountered:RuntimeWarning")  # the Triton interpreter's NumPy
@pytest.mark.parametrize("logits_grad", [True, False])
def test_generalized_kl_gradient_in_t_matches_flow_matching(logits_grad):
    # flow_matching's loss is differentiable in t (through the jump coefficient of its
    # scheduler), as a learned schedule or time weighting needs: so is the fused one, on every
    # backend, with or without the logits' gradient (t = 0 with n = 2: a zero jump coefficient)
    B, L, V = 3, 5, 17
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(B, L, V, generator=g)
    x1, xt = torch.randint(0, V, (B, L), generator=g), torch.randint(0, V, (B, L), generator=g)
    xt[:, :2] = x1[:, :2]
    t0 = torch.tensor([0.0, 0.5, 0.9])
    up = torch.randn(B, L, generator=g)
    theirs = FMKL(FMPath(fm.PolynomialConvexScheduler(2)), reduction="none")
    zf, tf = logits.clone().requires_grad_(logits_grad), t0.clone().requires_grad_()
    (theirs(zf, x1, xt, tf) * up).sum().backward()
    for backend in ff.available_backends("cpu"):
        for red in ("none", "mean"):
            ours = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(2)),
                                               reduction=red, backend=backend)
            z, t = logits.clone().requires_grad_(logits_grad), t0.clone().requires_grad_()
            loss = ours(z, x1, xt, t)
            (loss * up).sum().backward() if red == "none" else loss.backward()
            if red == "none":
                torch.testing.assert_close(t.grad, tf.grad, rtol=1e-5, atol=1e-6)
                if logits_grad:
                    torch.testing.assert_close(z.grad, zf.grad, rtol=1e-5, atol=1e-6)
            else:
                t2 = t0.clone().requires_grad_()
                theirs_mean = FMKL(FMPath(fm.PolynomialConvexScheduler(2)), reduction="mean")
                theirs_mean(logits.clone(), x1, xt, t2).backward()
                torch.testing.assert_close(t.grad, t2.grad, rtol=1e-5, atol=1e-6)
            assert t.grad[0] != 0 and torch.isfinite(t.grad).all()


def test_generalized_kl_rejects_t_equal_one():
    loss = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(ff.CondOTScheduler()))
    with pytest.raises(ValueError, match="t"):
        loss(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long),
             torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch_with_ignore_index(reduction):
    logits = torch.randn(4, 6, 33, requires_grad=True)
    x1 = torch.randint(0, 33, (4, 6))
    x1[0, :3] = -100
    got = ff.mixture_cross_entropy(logits, x1, reduction=reduction)
    l2 = logits.detach().clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(l2.reshape(-1, 33), x1.reshape(-1), reduction=reduction)
    ref = ref.view(4, 6) if reduction == "none" else ref
    torch.testing.assert_close(got, ref)
    g = torch.rand_like(ref) + 0.5
    got.backward(g)
    ref.backward(g)
    torch.testing.assert_close(logits.grad, l2.grad)


def check_overwrite_logits(backend, device="cpu"):
    """overwrite_logits: same losses and gradients as a fresh buffer, the logits' memory holds
    the gradient, and a graph that saved the logits fails at backward instead of going wrong."""
    path = ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(2.0))
    g = torch.Generator().manual_seed(3)
    B, L, V = 3, 5, 4099  # V: more than one chunk of the row kernels
    x1 = torch.randint(0, V, (B, L), generator=g).to(device)
    xt = torch.randint(0, V, (B, L), generator=g).to(device)
    x1[0, :2] = -100
    t = torch.tensor([0.1, 0.5, 0.8], device=device)

    def loss_fn(kind, logits, reduction, over):
        if kind == "ce":
            return ff.mixture_cross_entropy(logits, x1, reduction=reduction, backend=backend,
                                            overwrite_logits=over)
        kl = ff.MixturePathGeneralizedKL(path, reduction=reduction, ignore_index=-100, backend=backend,
                                         overwrite_logits=over)
        return kl(logits, x1, xt, t)

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        base = torch.randn(B, L, V, generator=g).to(device=device, dtype=dtype)
        for kind in ("ce", "gkl"):
            for reduction in ("mean", "sum", "none"):
                outs = []
                for over in (False, True):
                    leaf = base.clone().requires_grad_()
                    logits = leaf * 1.0  # a non-leaf whose producer saved nothing
                    handed = []
                    logits.register_hook(handed.append)
                    loss = loss_fn(kind, logits, reduction, over)
                    up = torch.linspace(0.5, 1.5, loss.numel(), device=device).view(loss.shape)
                    loss.backward(up)
                    # the gradient handed on is plain data: a hook that keeps it keeps no graph
                    assert handed[0].grad_fn is None and not handed[0].requires_grad, (kind, reduction, over)
                    outs.append((loss.detach(), leaf.grad, logits.detach()))
                (l0, g0, z0), (l1, g1, z1) = outs
                what = (kind, reduction, dtype)
                assert torch.equal(l0, l1), what
                assert torch.equal(g0, g1), what
                assert torch.equal(z0, base), what  # a fresh buffer leaves the logits alone
                assert not torch.equal(z1, base), what  # overwritten: they now hold the gradient
    # a producer that saved its output (exp) sees the overwrite at backward
    leaf = torch.randn(B, L, V, generator=g).to(device).requires_grad_()
    loss = loss_fn("ce", leaf.exp(), "mean", True)
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()
    with pytest.raises(ValueError, match="overwrite_logits"):
        loss_fn("ce", leaf, "mean", True)
    with pytest.raises(ValueError, match="overwrite_logits"):
        loss_fn("ce", leaf.view(B, L, V), "mean", True)  # a view of a leaf parameter
    # expanded logits share memory between rows: a fresh buffer, the logits untouched
    row = (torch.randn(1, 1, V, generator=g).to(device) * 1.0).requires_grad_()
    wide = row * 1.0
    shared = wide.expand(B, L, V)
    before = wide.detach().clone()
    loss_fn("ce", shared, "sum", True).backward()
    ref = row.detach().clone().requires_grad_()
    loss_fn("ce", (ref * 1.0).expand(B, L, V), "sum", False).backward()
    assert torch.equal(wide.detach(), before) and torch.equal(row.grad, ref.grad)
    # padded-vocabulary logits (rows with a stride larger than V) are overwritten in place
    pad = (torch.randn(B, L, V + 3, generator=g).to(device) * 1.0).requires_grad_()
    padded = pad * 1.0
    logits = padded[..., :V]
    before = padded.detach().clone()
    loss_fn("ce", logits, "sum", True).backward()
    assert not torch.equal(padded.detach()[..., :V], before[..., :V])
    assert torch.equal(padded.detach()[..., V:], before[..., V:])
    with pytest.raises(TypeError, match="overwrite_logits"):
        loss_fn("ce", leaf * 1.0, "mean", 1)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_overwrite_logits(backend):
    if backend not in ff.available_backends("cpu"):
        pytest.skip(f"{backend} is not available here")
    check_overwrite_logits(backend)


def test_cross_entropy_backward_runs_once():
    logits = torch.randn(3, 7, requires_grad=True)
    loss = ff.mixture_cross_entropy(logits, torch.randint(0, 7, (3,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def _law_test(logits_row, x_t, t, h, sched, div_free, source, p0, mask_id=None, temperature=1.0, final=False,
              n=20000, probs=False):
    V = logits_row.numel()
    logits = logits_row.expand(n, V).contiguous()
    xt = torch.full((n,), x_t, dtype=torch.long)
    inp = torch.softmax(logits, -1) if probs else logits
    new = ff.jump_step(inp, xt, t, h, sched, probs=probs, div_free=div_free, source=source, mask_id=mask_id,
                       temperature=temperature, final=final, generator=torch.Generator().manual_seed(11))
    s = sched(torch.tensor([t], dtype=torch.float64))
    law = next_token_law(logits_row, x_t, h, float(s.alpha_t), float(s.d_alpha_t), div_free, p0, temperature, final)
    return chi2_pvalue(torch.bincount(new, minlength=V), law)


V7 = torch.tensor([2.0, -1.0, 0.5, 1.5, -3.0, 0.0, 1.0])


@pytest.mark.parametrize("case", [
    dict(t=0.3, h=0.2, div_free=0.0, source="uniform"),
    dict(t=0.3, h=0.5, div_free=1.5, source="uniform"),
    dict(t=0.6, h=0.3, div_free=0.7, source="mask", mask_id=6),
    dict(t=0.6, h=0.3, div_free=0.7, source="mask", mask_id=6, x_t=6),
    dict(t=0.5, h=0.4, div_free=0.8, source="general"),
    dict(t=0.0, h=0.1, div_free=0.5, source="uniform"),        # kappa = 0: infinite p0 rate
    dict(t=1.0, h=0.1, div_free=0.0, source="uniform"),        # kappa = 1: infinite rate to x_1
    dict(t=0.4, h=0.3, div_free=0.0, source="uniform", temperature=0.5),
    dict(t=0.4, h=0.3, div_free=0.0, source="uniform", probs=True),
    dict(t=0.2, h=0.0, div_free=0.0, source="uniform", final=True, temperature=2.0),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_jump_step_one_step_law_by_enumeration(case):
    case = dict(case)
    x_t = case.pop("x_t", 2)
    src = case.pop("source")
    V = V7.numel()
    if src == "uniform":
        p0, source = torch.full((V,), 1.0 / V), "uniform"
    elif src == "mask":
        p0, source = torch.nn.functional.one_hot(torch.tensor(case["mask_id"]), V).double(), "mask"
    else:
        p0 = torch.tensor([0.1, 0.3, 0.05, 0.25, 0.0, 0.2, 0.1])
        source = p0
    sched = ff.PolynomialConvexScheduler(2) if case["t"] not in (0.0,) else ff.CondOTScheduler()
    assert _law_test(V7, x_t, case.pop("t"), case.pop("h"), sched, case.pop("div_free"), source, p0, **case) > 1e-3


def test_jump_step_minus_inf_never_drawn_and_tail_token_drawn_at_its_rate():
    V = 256
    z = torch.full((V,), -math.inf)
    z[0] = 0.0
    z[1] = math.log(1e-3)  # a tail token
    n = 16000
    new = ff.jump_step(z.expand(n, V), torch.zeros(n, dtype=torch.long), 0.5, 0.0, ff.CondOTScheduler(),
                       final=True, generator=torch.Generator().manual_seed(5))
    assert bool((new <= 1).all())
    frac = float((new == 1).float().mean())
    assert abs(frac - 1e-3 / (1 + 1e-3)) < 5 * math.sqrt(1e-3 / n)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_a_token_with_nothing_to_draw_raises(backend):
    """flow_matching's torch.multinomial refuses NaN, all -inf logits and negative probabilities;
    the race found no winner there and gave token 0. A row that does not jump is not read."""
    S, V = ff.PolynomialConvexScheduler(2.0), 6
    xt = torch.randint(0, V, (2, 4))
    for probs, bad in ((False, -math.inf), (False, math.nan), (True, -0.2), (True, 0.0)):
        z = torch.softmax(torch.randn(2, 4, V), -1) if probs else torch.randn(2, 4, V)
        z[1, 2] = bad
        what = "distribution" if probs else "finite logit"
        with pytest.raises(ValueError, match=f"logits: a token that may jump has no {what}"):
            ff.jump_step(z, xt, 0.5, 0.1, S, probs=probs, final=True, backend=backend)
        assert torch.equal(ff.jump_step(z, xt, 0.5, 0.0, S, probs=probs, backend=backend), xt)  # h = 0
    model = lambda x, t: torch.full((*x.shape, V), math.nan)  # noqa: E731 (a diverged model)
    solver = ff.MixtureDiscreteEulerSolver(model, ff.MixtureDiscreteProbPath(S), V, backend=backend)
    with pytest.raises(ValueError, match="logits"):
        solver.sample(xt, step_size=0.25)
    logits_model = lambda x, t: torch.randn(*x.shape, V)  # noqa: E731 (logits under the default "probs")
    solver = ff.MixtureDiscreteEulerSolver(logits_model, ff.MixtureDiscreteProbPath(S), V, backend=backend)
    with pytest.raises(ValueError, match="model_output='logits'"):
        solver.sample(xt, step_size=0.25)


def test_jump_step_explicit_noise_is_deterministic_and_skips_rows():
    B, L, V = 2, 8, 9
    logits = torch.randn(B, L, V)
    xt = torch.randint(0, V, (B, L))
    noise = JumpNoise(torch.rand(B, L, 3), torch.rand(B, L, V))
    a = ff.jump_step(logits, xt, 0.3, 0.05, ff.CondOTScheduler(), noise=noise)
    b = ff.jump_step(logits, xt, 0.3, 0.05, ff.CondOTScheduler(), noise=noise)
    assert torch.equal(a, b) and a.dtype == xt.dtype
    # a row whose jump test fails is never read: NaN logits there change nothing
    e = -torch.log1p(-noise.token[..., 0])
    lam = 1 / (1 - 0.3)
    stays = e >= 0.05 * lam
    assert bool(stays.any())
    poisoned = logits.clone()
    poisoned[stays] = float("nan")
    c = ff.jump_step(poisoned, xt, 0.3, 0.05, ff.CondOTScheduler(), noise=noise)
    assert torch.equal(a, c)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:divide by zero encountered:RuntimeWarning")  # the Triton interpreter's NumPy
def test_jump_step_infinite_rate_jumps_even_with_an_infinite_e():
    # at kappa = 1 the rate to x_1 is infinite: every token whose x_1 differs jumps, also where
    # its Exp(1) variable is infinite (a 32-bit uniform that rounds to 1, probability 2^-25)
    B, L, V = 2, 6, 9
    g = torch.Generator().manual_seed(12)
    logits, xt = torch.randn(B, L, V, generator=g), torch.randint(0, V, (B, L), generator=g)
    token = torch.rand(B, L, 3, generator=g)
    token[..., 0] = 1.0
    noise = JumpNoise(token, torch.rand(B, L, V, generator=g))
    for backend in ff.available_backends("cpu"):
        kw = dict(noise=noise, backend=backend)
        x1 = ff.jump_step(logits, xt, 1.0, 0.1, ff.CondOTScheduler(), final=True, **kw)
        assert bool((x1 != xt).any())
        assert torch.equal(ff.jump_step(logits, xt, 1.0, 0.1, ff.CondOTScheduler(), **kw), x1), backend


def test_jump_step_int32_tokens_and_per_sample_times():
    B, L, V = 3, 5, 6
    xt = torch.randint(0, V, (B, L), dtype=torch.int32)
    new = ff.jump_step(torch.randn(B, L, V), xt, torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.1, 0.1, 0.05]),
                       ff.CondOTScheduler())
    assert new.dtype == torch.int32 and new.shape == xt.shape
    assert bool(((new >= 0) & (new < V)).all())


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_generalized_kl_of_a_kept_token_with_a_masked_x1_logit_is_finite(backend):
    """Where x_t = x_1 (delta = 1) the (1 - delta) log p[x_1] term is absent: a masked (-inf)
    logit at x_1 leaves the loss finite (flow_matching's 0 * log 0 is NaN there)."""
    if backend not in ff.available_backends("cpu"):
        pytest.skip(f"{backend} is not available here")
    z = torch.tensor([[float("-inf"), 0.0, 1.0], [0.5, float("-inf"), 1.0]], requires_grad=True)
    x1 = torch.tensor([0, 0])
    xt = torch.tensor([0, 2])  # row 0 kept (delta = 1), row 1 moved (delta = 0), neither masked at x_t
    loss = ff.generalized_kl(z, x1, xt, torch.tensor([2.0, 2.0]), reduction="none", backend=backend)
    p0 = torch.softmax(z.detach()[0], -1)
    torch.testing.assert_close(loss[0], -2.0 * (p0[0] - 1.0))
    p1 = torch.softmax(z.detach()[1], -1)
    torch.testing.assert_close(loss[1], -2.0 * (p1[2] + p1[0].log()))
    loss.sum().backward()
    assert torch.isfinite(z.grad[z.detach().isfinite()]).all()


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_fused_loss_gradients_are_plain_tensors(reduction):
    """The gradient handed back is the buffer written in the forward: not differentiable, with no
    graph of its own (torch.autograd.grad returns it as a constant)."""
    z = torch.randn(6, 5, requires_grad=True)
    loss = ff.mixture_cross_entropy(z, torch.randint(0, 5, (6,)), reduction=reduction)
    (g,) = torch.autograd.grad(loss.sum(), z)
    assert g.grad_fn is None and not g.requires_grad
    v = torch.randn(3, 4, requires_grad=True)
    per = ff.affine_path_loss(v, torch.randn(3, 4), torch.randn(3, 4), 1.0, -1.0, reduction="per_sample")
    (gv,) = torch.autograd.grad(per.sum(), v)
    assert gv.grad_fn is None and not gv.requires_grad


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fp16_generalized_kl_gradient_near_t_1_stays_finite(backend):
    """From a review: with fp16 logits the forward-written gradient held the jump coefficient
    d_kappa / (1 - kappa) (1e5 at t = 0.99999) before the mean's divisor, and overflowed to inf
    where the mean's gradient is ~10 (flow_matching's fp16 gradient is finite). The jump now
    scales the rows after the fused op, as the divisor does."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 8, 4, generator=g)
    x1, xt = torch.randint(0, 4, (2, 8), generator=g), torch.randint(0, 4, (2, 8), generator=g)
    t = torch.tensor([0.3, 0.99999])
    loss_fn = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(ff.CondOTScheduler()))
    z64 = z.double().requires_grad_()
    loss_fn(z64, x1, xt, t.double()).backward()
    lg = z.half().requires_grad_()
    with ff.use_backend(backend):
        loss = loss_fn(lg, x1, xt, t)
    loss.backward()
    assert torch.isfinite(lg.grad).all()
    torch.testing.assert_close(lg.grad.double(), z64.grad, rtol=2e-3, atol=2e-3 * float(z64.grad.abs().max()))


def test_integer_probabilities_are_read_as_floats():
    """From flow_matching's own solver tests: an oracle returning F.one_hot (int64) under
    model_output="probs", and an integer one-hot source_distribution_p; flow_matching casts them
    to floats, fastflow refused them with a TypeError."""
    V = 3
    oracle = lambda x, t: torch.nn.functional.one_hot(torch.full_like(x, 2), num_classes=V)  # noqa: E731
    path = ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(1.0))
    x0 = torch.tensor([[0, 1], [1, 0]])
    assert ff.MixtureDiscreteEulerSolver(oracle, path, V).sample(x0, step_size=0.1).tolist() == [[2, 2], [2, 2]]
    p0 = torch.tensor([1, 0, 0])
    solver = ff.MixtureDiscreteEulerSolver(oracle, path, V, source_distribution_p=p0)
    assert solver._source == "mask" and solver._mask_id == 0
    assert solver.sample(torch.zeros(2, 2, dtype=torch.long), step_size=0.1, div_free=0.5).eq(2).all()
