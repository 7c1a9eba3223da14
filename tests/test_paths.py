"""Continuous paths and the fused loss against flow_matching and closed forms (reference backend)."""
import pytest
import torch

import fastflow as ff
from flow_matching.path import AffineProbPath as FMAffine
from flow_matching.path import scheduler as fm

SCHEDS = [(ff.CondOTScheduler(), fm.CondOTScheduler()), (ff.CosineScheduler(), fm.CosineScheduler()),
          (ff.VPScheduler(), fm.VPScheduler())]


@pytest.mark.parametrize("ours,theirs", SCHEDS, ids=lambda s: type(s).__name__)
def test_sample_matches_flow_matching_exactly(ours, theirs):
    x0, x1, t = torch.randn(5, 3, 7), torch.randn(5, 3, 7), torch.rand(5)
    a, b = ff.AffineProbPath(ours).sample(x_0=x0, x_1=x1, t=t), FMAffine(theirs).sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(a.x_t, b.x_t, rtol=0, atol=0)
    torch.testing.assert_close(a.dx_t, b.dx_t, rtol=0, atol=0)
    assert a.x_0 is x0 and a.x_1 is x1 and a.t is t


def test_flow_matching_scheduler_object_accepted():
    x0, x1, t = torch.randn(4, 6), torch.randn(4, 6), torch.rand(4)
    a = ff.AffineProbPath(fm.PolynomialConvexScheduler(2)).sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(a.x_t, (1 - t[:, None] ** 2) * x0 + t[:, None] ** 2 * x1)


def test_in_kernel_noise_is_gaussian_and_regenerated_consistently():
    x1, t = torch.randn(64, 2, 50), torch.rand(64)
    path = ff.CondOTProbPath()
    s = path.sample(x_1=x1, t=t)
    x0 = s.x_0
    assert abs(float(x0.mean())) < 0.05 and abs(float(x0.std()) - 1) < 0.05
    torch.testing.assert_close(s.x_t, t[:, None, None] * x1 + (1 - t[:, None, None]) * x0)
    torch.testing.assert_close(s.dx_t, x1 - x0)
    s2 = path.sample(x_1=x1, t=t)
    assert not torch.equal(s2.x_0, x0), "two calls must not reuse noise"


def test_generator_reproduces():
    x1, t = torch.randn(8, 9), torch.rand(8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = ff.CondOTProbPath().sample(x_1=x1, t=t, generator=g1)
    b = ff.CondOTProbPath().sample(x_1=x1, t=t, generator=g2)
    assert torch.equal(a.x_t, b.x_t)
    torch.manual_seed(1)
    c = ff.CondOTProbPath().sample(x_1=x1, t=t)
    torch.manual_seed(1)
    d = ff.CondOTProbPath().sample(x_1=x1, t=t)
    assert torch.equal(c.x_t, d.x_t)


@pytest.mark.parametrize("target", ["velocity", "x1", "epsilon"])
@pytest.mark.parametrize("given_x0", [True, False])
def test_loss_and_gradient_match_plain_mse(target, given_x0):
    x1, t = torch.randn(6, 3, 5), torch.rand(6)
    x0 = torch.randn(6, 3, 5) if given_x0 else None
    path = ff.AffineProbPath(ff.CosineScheduler())
    s = path.sample(x_0=x0, x_1=x1, t=t)
    v = torch.randn(6, 3, 5, requires_grad=True)
    loss = path.loss(v, s, target=target)
    loss.backward()
    tgt = {"velocity": s.dx_t, "x1": x1, "epsilon": s.x_0}[target]
    v2 = v.detach().clone().requires_grad_()
    ref = torch.nn.functional.mse_loss(v2, tgt)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(v.grad, v2.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "per_sample", "none"])
def test_reductions_weights_and_mask(reduction):
    x0, x1, t = torch.randn(4, 2, 6), torch.randn(4, 2, 6), torch.rand(4)
    w = torch.rand(4)
    mask = torch.rand(4, 2, 6) > 0.3
    path = ff.CondOTProbPath()
    s = path.sample(x_0=x0, x_1=x1, t=t)
    v = torch.randn(4, 2, 6, requires_grad=True)
    got = path.loss(v, s, reduction=reduction, weight=w, mask=mask)
    v2 = v.detach().clone().requires_grad_()
    el = w[:, None, None] * mask * (v2 - (x1 - x0)) ** 2
    ref = {"mean": lambda: el.sum() / mask.sum(), "sum": el.sum,
           "per_sample": lambda: el.sum((1, 2)) / mask.sum((1, 2)), "none": lambda: el}[reduction]()
    torch.testing.assert_close(got, ref)
    g = torch.randn_like(ref)
    got.backward(g)
    ref.backward(g)
    torch.testing.assert_close(v.grad, v2.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_none_reduction_computes_the_target_in_fp32(dtype, backend):
    """reduction='none' computes its target in fp32 as the fused reductions do: it rounded the
    target to bf16 / fp16 first, and a residual below the data's ulp vanished (loss 0, dv 0)."""
    x1 = torch.ones(2, 4, dtype=dtype)
    v = torch.ones(2, 4, dtype=dtype, requires_grad=True)
    c, d = torch.full((2,), 1.0035), torch.zeros(2)
    none = ff.affine_path_loss(v, x1, torch.zeros_like(x1), c, d, reduction="none", backend=backend)
    (dv_none,) = torch.autograd.grad(none.sum(), v)
    total = ff.affine_path_loss(v, x1, torch.zeros_like(x1), c, d, reduction="sum", backend=backend)
    (dv_sum,) = torch.autograd.grad(total, v)
    torch.testing.assert_close(none, torch.full((2, 4), 0.0035 ** 2), rtol=1e-3, atol=0)
    torch.testing.assert_close(none.sum(), total)
    torch.testing.assert_close(dv_none, dv_sum)


def test_inputs_no_gradient_reads_may_change_before_the_backward():
    """affine_path_sample and step_combine save only what the requested gradients read (as the path
    loss does): refilling another input before the backward raised autograd's version error, where
    plain torch runs."""
    x, v = torch.randn(2, 3), torch.randn(2, 3, requires_grad=True)
    out = ff.euler_step(x, v, 0.1, backend="cpu")
    x.add_(1)
    out.sum().backward()
    torch.testing.assert_close(v.grad, torch.full_like(v, 0.1))
    x1, x0 = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3)
    a = torch.tensor([0.3, 0.4], requires_grad=True)
    xt = ff.affine_path_sample(x1, x0, a, 0.7, backend="cpu")
    x0.normal_()  # (a's gradient reads x_1, x_1's reads a: x_0 is not needed)
    (xt * 2).sum().backward()
    torch.testing.assert_close(x1.grad, 2 * a.detach()[:, None].expand(2, 3))
    torch.testing.assert_close(a.grad, 2 * x1.detach().sum(1))


def test_gradient_to_x1_and_x0():
    x0 = torch.randn(3, 4, requires_grad=True)
    x1 = torch.randn(3, 4, requires_grad=True)
    t = torch.rand(3)
    v = torch.randn(3, 4)
    path = ff.CondOTProbPath()
    path.loss(v, path.sample(x_0=x0, x_1=x1, t=t)).backward()
    a0, a1 = x0.grad.clone(), x1.grad.clone()
    x0.grad = x1.grad = None
    torch.nn.functional.mse_loss(v, x1 - x0).backward()
    torch.testing.assert_close(a0, x0.grad)
    torch.testing.assert_close(a1, x1.grad)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtypes", [(torch.float64, torch.float32), (torch.float32, torch.bfloat16),
                                    (torch.float16, torch.bfloat16), (torch.bfloat16, torch.float32)])
def test_mixed_source_and_data_dtypes_promote_as_flow_matching(dtypes, backend):
    """``x_t`` and ``dx_t`` take the dtype ``x_0`` and ``x_1`` promote to, as flow_matching's
    arithmetic gives it (an fp32 x_1 with a float64 x_0 used to come out fp32, silently rounded);
    each input's gradient keeps its own dtype."""
    if dtypes[0] == torch.float64:
        backend = "auto"  # float64 runs the reference math; a fused backend asked for refuses it
    x0 = torch.randn(5, 3, 7, dtype=dtypes[0], requires_grad=True)
    x1 = torch.randn(5, 3, 7, dtype=dtypes[1], requires_grad=True)
    t = torch.rand(5)
    want = torch.promote_types(*dtypes)
    s = ff.AffineProbPath(ff.CosineScheduler()).sample(x_0=x0, x_1=x1, t=t, backend=backend)
    theirs = FMAffine(fm.CosineScheduler()).sample(x_0=x0.detach().to(want), x_1=x1.detach().to(want), t=t.to(want))
    assert s.x_t.dtype == s.dx_t.dtype == theirs.x_t.dtype == want
    tol = dict(rtol=1e-6, atol=1e-6) if want != torch.float64 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.x_t.double(), theirs.x_t.double(), **tol)
    torch.testing.assert_close(s.dx_t.double(), theirs.dx_t.double(), **tol)
    s.x_t.sum().backward()
    assert x0.grad.dtype == dtypes[0] and x1.grad.dtype == dtypes[1]


def test_conversions_match_flow_matching():
    theirs, ours = FMAffine(fm.CosineScheduler()), ff.AffineProbPath(ff.CosineScheduler())
    x, p, t = torch.randn(5, 8), torch.randn(5, 8), torch.rand(5) * 0.8 + 0.1
    tt = t[:, None]
    for name in ("target_to_velocity", "epsilon_to_velocity", "velocity_to_target", "epsilon_to_target",
                 "velocity_to_epsilon", "target_to_epsilon"):
        a = getattr(ours, name)(p, x, t)
        b = getattr(theirs, name)(p, x, tt)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_conversions_take_one_time_per_element_as_flow_matching():
    """From flow_matching's own path tests: a t of shape [B, L, 1] (one time per token) broadcasts
    against x_t there; fastflow refused any t with more than one time per sample."""
    theirs, ours = FMAffine(fm.CosineScheduler()), ff.AffineProbPath(ff.CosineScheduler())
    x, p, t = torch.randn(4, 6, 8), torch.randn(4, 6, 8), torch.rand(4, 6, 1) * 0.8 + 0.1
    for name in ("target_to_velocity", "epsilon_to_velocity", "velocity_to_target", "epsilon_to_target",
                 "velocity_to_epsilon", "target_to_epsilon"):
        torch.testing.assert_close(getattr(ours, name)(p, x, t), getattr(theirs, name)(p, x, t),
                                   rtol=1e-5, atol=1e-5, msg=name)
    # a [L, 1] t with fewer dimensions than x_t aligns with its last ones (here B == L, where it
    # was read as one time per sample)
    x2, p2, t2 = torch.randn(6, 6, 8), torch.randn(6, 6, 8), torch.rand(6, 1) * 0.8 + 0.1
    torch.testing.assert_close(ours.target_to_velocity(p2, x2, t2), theirs.target_to_velocity(p2, x2, t2))
    cond_ot = ff.CondOTProbPath()
    with pytest.raises(ValueError, match="t: the conversion is singular"):
        cond_ot.target_to_velocity(x, x, torch.cat((t[:, :5], torch.ones(4, 1, 1)), 1))
    with pytest.raises(ValueError, match="t: values must be in"):
        cond_ot.target_to_velocity(x, x, t + 1)
    with pytest.raises(ValueError, match="t: expected a shape that broadcasts"):
        cond_ot.target_to_velocity(x, x, torch.rand(4, 5, 1))


def test_conversion_singular_time_raises():
    path = ff.CondOTProbPath()
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="t"):
        path.target_to_velocity(x, x, torch.tensor([0.5, 1.0]))


def test_ddpm_epsilon_loss_is_affine_path_over_the_table():
    sched = ff.DDPMScheduler()
    path = ff.AffineProbPath(sched)
    x1 = torch.randn(4, 10)
    k = torch.tensor([1, 10, 500, 1000])
    t = 1 - k.float() / 1000
    s = path.sample(x_1=x1, t=t)
    ab = sched.alpha_bar[k].float()[:, None]
    torch.testing.assert_close(s.x_t, ab.sqrt() * x1 + (1 - ab).sqrt() * s.x_0)
    eps_hat = torch.randn(4, 10)
    torch.testing.assert_close(path.loss(eps_hat, s, target="epsilon"), torch.nn.functional.mse_loss(eps_hat, s.x_0))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("drawn", [False, True])
def test_sample_is_differentiable_like_flow_matching(backend, drawn):
    """d x_t / d (x_1, x_0, t) through the path, as flow_matching's plain torch sample."""
    from flow_matching.path import AffineProbPath as FMPath
    from flow_matching.path.scheduler import CosineScheduler as FMCos

    if backend not in ff.available_backends():
        pytest.skip(f"backend {backend} not built")
    g = torch.Generator().manual_seed(8)
    x1 = torch.randn(3, 2, 4, generator=g).requires_grad_()
    x0 = None if drawn else torch.randn(3, 2, 4, generator=g).requires_grad_()
    t = torch.rand(3, generator=g).requires_grad_()
    s = ff.AffineProbPath(ff.CosineScheduler()).sample(x_0=x0, x_1=x1, t=t, backend=backend)
    w = torch.randn(s.x_t.shape, generator=g)
    got = torch.autograd.grad((s.x_t * w).sum(), [x1, t] + ([] if drawn else [x0]))
    noise = s.x_0.detach() if drawn else x0
    ref = FMPath(FMCos()).sample(x_0=noise, x_1=x1, t=t)
    want = torch.autograd.grad((ref.x_t * w).sum(), [x1, t] + ([] if drawn else [x0]))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_loss_refuses_double_backward_and_a_second_backward():
    """The gradient is a buffer written in the forward: no create_graph, one backward."""
    v = torch.randn(2, 3, requires_grad=True)
    path = ff.CondOTProbPath()
    s = path.sample(x_0=torch.randn(2, 3), x_1=torch.randn(2, 3), t=torch.rand(2))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(path.loss(v, s), v, create_graph=True)
    loss = path.loss(v, s)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_loss_of_a_reduction_is_one_autograd_node(reduction):
    """Eager: a mean or sum loss is one node straight onto v (its sum is taken inside the fused
    op), and an upstream gradient other than 1 scales the gradient written in the forward."""
    v = torch.randn(3, 5, requires_grad=True)
    path = ff.CondOTProbPath()
    x0, x1 = torch.randn(3, 5), torch.randn(3, 5)
    s = path.sample(x_0=x0, x_1=x1, t=torch.rand(3))
    loss = path.loss(v, s, reduction=reduction)
    assert loss.dim() == 0
    assert [f for f, _ in loss.grad_fn.next_functions if f is not None][0].variable is v
    (2.5 * loss).backward()
    want = 2.5 * 2 * (v.detach() - (x1 - x0)) / (v.numel() if reduction == "mean" else 1)
    torch.testing.assert_close(v.grad, want)
    with torch.no_grad():
        assert path.loss(v, s, reduction=reduction).grad_fn is None


def test_path_samples_are_built_and_read_as_flow_matching_s():
    """From the migration review: a custom path returns PathSample(x_1=..., dx_t=...) (a
    dataclass in flow_matching), and a lazily computed dx_t must equal the eager one: computed in
    the grad mode of the sample call, and refused once its inputs were modified in place."""
    import flow_matching.path as fmp
    x_1, x_0, t = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
    built = ff.PathSample(x_1=x_1, x_0=x_0, t=t, x_t=0.5 * x_1, dx_t=x_1 - x_0)
    assert built.dx_t is not None and "dx_t=" in repr(built)
    built.dx_t = x_1  # settable, as a dataclass field
    assert built.dx_t is x_1
    path, v = ff.CondOTProbPath(), torch.randn(4, 3)
    # a hand-built sample's loss uses this path's coefficients at its t
    torch.testing.assert_close(path.loss(v, ff.PathSample(x_1=x_1, x_0=x_0, t=t, x_t=x_1)),
                               ((v - (x_1 - x_0)) ** 2).mean())
    d = ff.DiscretePathSample(x_1=x_1.long(), x_0=None, t=t, x_t=x_1.long())
    assert d.x_t is not None and "x_0=<computed on first read>" in repr(d)
    fm = fmp.AffineProbPath(fmp.scheduler.CondOTScheduler())
    leaf = x_1.clone().requires_grad_()
    with torch.no_grad():
        ours = path.sample(x_0=x_0, x_1=leaf, t=t)
        theirs = fm.sample(x_0=x_0, x_1=leaf, t=t)
    assert ours.dx_t.grad_fn is None and theirs.dx_t.grad_fn is None  # read with grad on, made without
    ours = path.sample(x_0=x_0, x_1=leaf, t=t)
    with torch.no_grad():
        assert ours.dx_t.grad_fn is not None  # read without grad, made with it
    buffer = x_1.clone()
    s = path.sample(x_1=buffer, t=t)
    buffer.normal_()  # the next batch lands in the same memory
    with pytest.raises(RuntimeError, match="dx_t"):
        s.dx_t
    batch = torch.randn(4, 4)  # x_1 a view: its base's other columns changing may be all that happened
    s = path.sample(x_1=batch[:, :3], t=t)
    batch[:, 3] = 0
    with pytest.warns(RuntimeWarning, match="view"):
        s.dx_t


def test_a_source_that_broadcasts_against_the_data():
    """flow_matching's arithmetic broadcasts x_0 [B, 1] against x_1 [B, D]: the same x_t, dx_t,
    loss and gradient (the sample's x_0 is the expanded view)."""
    from flow_matching.path import CondOTProbPath as FMCondOT
    x1, x0, t, v = torch.randn(4, 3), torch.randn(4, 1, requires_grad=True), torch.rand(4), torch.randn(4, 3)
    ours, theirs = ff.CondOTProbPath().sample(x_0=x0, x_1=x1, t=t), FMCondOT().sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(ours.x_t, theirs.x_t)
    torch.testing.assert_close(ours.dx_t, theirs.dx_t)
    g_ours = torch.autograd.grad(ff.CondOTProbPath().loss(v, ours), x0)[0]
    g_theirs = torch.autograd.grad((v - theirs.dx_t).square().mean(), x0)[0]
    torch.testing.assert_close(g_ours, g_theirs)
    with pytest.raises(ValueError, match="x_0"):
        ff.CondOTProbPath().sample(x_0=torch.randn(4, 2), x_1=x1, t=t)


def test_copied_samples_read_dx_t_and_x_0():
    """A sample pickled (a DataLoader worker's batch, torch.save) or deep-copied holds new tensors
    with fresh version counters: dx_t is still read, and still refused if the originals changed
    before the copy. The regenerated x_0 does not depend on the data (finite where x_1 is not)."""
    import copy
    import pickle
    p = ff.CondOTProbPath()
    x1, x0, t = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
    s = p.sample(x_0=x0, x_1=x1, t=t)
    for c in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        torch.testing.assert_close(c.dx_t, x1 - x0)
    drawn = p.sample(x_1=x1, t=t)
    c = pickle.loads(pickle.dumps(drawn))
    torch.testing.assert_close(c.x_0, drawn.x_0)
    torch.testing.assert_close(c.dx_t, drawn.dx_t)
    x1.add_(1)
    with pytest.raises(RuntimeError, match="modified in place"):
        pickle.loads(pickle.dumps(s)).dx_t
    x1[0, 0] = float("inf")
    assert torch.isfinite(p.sample(x_1=x1, t=t).x_0).all()
    # made under torch.compile (no version counters read there): a copy reads dx_t as the original
    compiled = torch.compile(lambda a, b, t: p.sample(x_0=b, x_1=a, t=t), backend="eager")(x1, x0, t)
    torch.testing.assert_close(copy.deepcopy(compiled).dx_t, compiled.dx_t)


def test_samples_are_dataclasses_as_flow_matching_s():
    """``dataclasses.fields / asdict / replace`` work on fastflow's samples as on flow_matching's,
    the lazy ``x_0`` / ``dx_t`` computed when read."""
    import dataclasses

    from flow_matching.path.path_sample import DiscretePathSample as FMDiscrete
    from flow_matching.path.path_sample import PathSample as FMSample

    s = ff.CondOTProbPath().sample(x_1=torch.randn(3, 2), t=torch.rand(3))
    assert dataclasses.is_dataclass(s)
    assert [f.name for f in dataclasses.fields(s)] == [f.name for f in dataclasses.fields(FMSample)]
    d = dataclasses.asdict(s)
    assert torch.equal(d["dx_t"], s.dx_t) and torch.equal(d["x_0"], s.x_0)
    r = dataclasses.replace(s, x_t=torch.zeros(3, 2))
    assert torch.equal(r.dx_t, s.dx_t) and torch.equal(r.x_t, torch.zeros(3, 2))
    ds = ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(1.0)).sample(
        x_1=torch.randint(0, 5, (3, 4)), t=torch.rand(3), vocab_size=5)
    assert [f.name for f in dataclasses.fields(ds)] == [f.name for f in dataclasses.fields(FMDiscrete)]
    assert torch.equal(dataclasses.replace(ds, t=ds.t * 0).x_0, ds.x_0)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "per_sample"])
@pytest.mark.parametrize("given_x0", [True, False])
def test_loss_of_inference_mode_data_and_data_refilled_before_backward(given_x0, reduction, backend):
    """From an autograd review: data made under inference_mode (a frozen encoder's latents) could
    not be trained on (the loss saved x_1 for a backward that never reads it), and a data buffer
    refilled between the loss and its backward failed autograd's version check."""
    net = torch.nn.Linear(5, 5)
    with torch.inference_mode():
        x1 = torch.randn(4, 5)
    x0 = torch.randn(4, 5) if given_x0 else None
    p, t = ff.CondOTProbPath(), torch.rand(4)
    s = p.sample(x_0=x0, x_1=x1, t=t, backend=backend)
    loss = p.loss(net(s.x_t), s, reduction=reduction, backend=backend)
    (loss if reduction != "per_sample" else loss.sum()).backward()
    got = net.weight.grad.clone()
    net.weight.grad = None
    x1c = x1.clone()
    s2 = p.sample(x_0=x0, x_1=x1c, t=t, backend=backend)
    if not given_x0:
        s2 = p.sample(x_0=s.x_0, x_1=x1c, t=t, backend=backend)
    loss2 = p.loss(net(s2.x_t), s2, reduction=reduction, backend=backend)
    x1c.add_(1.0)  # refilled before the backward: the gradient is the one of the loss's time
    (loss2 if reduction != "per_sample" else loss2.sum()).backward()
    torch.testing.assert_close(net.weight.grad, got)


def test_loss_after_the_data_changed_in_place_raises():
    """From an autograd review: path.loss computes its target from x_1 and x_0 when called, so
    data modified after sampling gave a loss against a target x_t was not made from
    (flow_matching's dx_t is computed when sampling); it now raises as reading dx_t does."""
    p, x1, x0 = ff.CondOTProbPath(), torch.randn(4, 5), torch.randn(4, 5)
    s = p.sample(x_0=x0, x_1=x1, t=torch.rand(4))
    v = torch.randn(4, 5)
    before = p.loss(v, s)
    x1.add_(10.0)
    with pytest.raises(RuntimeError, match="sample: x_1 or x_0 was modified in place after sampling"):
        p.loss(v, s)
    base = torch.randn(8, 5)
    s = p.sample(x_0=x0, x_1=base[:4], t=torch.rand(4))
    base[4:].add_(1.0)  # another part of the view's base: a warning, the loss as before
    with pytest.warns(RuntimeWarning, match="another part of its base"):
        p.loss(v, s)
    assert torch.isfinite(before)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fp16_mean_loss_gradient_is_unbiased(backend):
    """From an autocast review: an fp16 loss's mean divides its gradient in the backward (scale_rows
    with g = 1 / numel), and g was rounded to fp16 first, a subnormal there: every gradient
    was 0.4% short at 16 x 3 x 64 x 64 (1.6% at 4x that, 0 from 2^25 elements)."""
    p = ff.CondOTProbPath()
    x0, x1, t = torch.randn(16, 3, 64, 64), torch.randn(16, 3, 64, 64), torch.rand(16)
    v = torch.randn(16, 3, 64, 64).half().requires_grad_()
    p.loss(v, p.sample(x_0=x0.half(), x_1=x1.half(), t=t, backend=backend), backend=backend).backward()
    s = FMAffine(fm.CondOTScheduler()).sample(x_0=x0.half().float(), x_1=x1.half().float(), t=t)
    expect = 2 * (v.detach().float() - s.dx_t) / v.numel()
    ratio = (v.grad.float() / expect)[expect.abs() > 1e-6]  # (fp16 holds ~1e-7 only as a subnormal)
    assert abs(ratio.median().item() - 1) < 1e-3, ratio.median()


def test_loss_compiles_once_for_a_dynamic_batch():
    """From a torch.compile review: the default mean loss computed 1 / numel as a Python float,
    which specialised a dynamic batch (one graph per batch size; mark_dynamic and strict
    export of a dynamic batch failed). A traced graph now divides by the symbolic count."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    p, net, counter = ff.CondOTProbPath(), torch.nn.Linear(6, 6), CompileCounter()

    def loss(x1, x0, t):
        s = p.sample(x_0=x0, x_1=x1, t=t)
        return p.loss(net(s.x_t), s)

    compiled = torch.compile(loss, backend=counter, dynamic=True, fullgraph=True)
    for batch in (3, 17, 64, 5, 9, 33):
        x1, x0, t = torch.randn(batch, 6), torch.randn(batch, 6), torch.rand(batch)
        net.zero_grad()
        eager = loss(x1, x0, t)
        eager.backward()
        g = net.weight.grad.clone()
        net.zero_grad()
        got = compiled(x1, x0, t)
        got.backward()
        torch.testing.assert_close(got, eager)
        torch.testing.assert_close(net.weight.grad, g)
    assert counter.frame_count == 1
