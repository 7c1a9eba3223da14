"""torch.library registration: opcheck on every fastflow:: op (reference backend; the Triton
and csrc tests repeat it for theirs) and torch.compile(fullgraph=True) of a training step
and a sampling step through the opaque custom ops."""
import pytest
import torch

import fastflow as ff
from fastflow._rng import new_rng

B = "reference"


def _cases():
    x1, x0, v = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5, requires_grad=True)
    coef = torch.rand(3)
    rng = new_rng(torch.device("cpu"))
    mask = torch.rand(3, 5) > 0.3
    logits = torch.randn(6, 7, requires_grad=True)
    tok = torch.randint(0, 7, (6,))
    ops = torch.ops.fastflow
    yield ops.affine_path_sample, (x1, None, coef, coef, coef, rng, B)
    yield ops.affine_path_sample, (x1, x0, coef, coef, None, rng, B)
    yield ops.affine_path_loss, (v, x1, None, coef, coef, coef, rng, mask, coef, True, B)
    yield ops.affine_path_loss, (v.detach(), x1, x0, coef, coef, None, rng, None, coef, False, B)
    yield ops.step_combine, (x1, x0, v.detach(), coef, coef, coef, coef, rng, None, B)
    yield ops.step_combine, (v, x0, None, coef.clone().requires_grad_(), coef, None, coef, None, x1, B)
    yield ops.step_combine_out, (x1, x0, None, coef, coef, None, None, None, None, torch.empty(3, 5), B)
    yield ops.mixture_path_sample, (tok.view(2, 3), None, torch.rand(2), rng, None, 7, -1, B)
    yield ops.cross_entropy, (logits, tok, -100, torch.full((6,), 1 / 6), True, B)
    yield ops.generalized_kl, (logits, tok, tok.roll(1), torch.rand(6), -100, torch.ones(6), True, B)
    # a row scale that requires grad (how a jump coefficient that does reaches the op)
    yield ops.generalized_kl, (logits, tok, tok.roll(1), torch.ones(6), -100, torch.rand(6, requires_grad=True),
                               True, B)
    yield ops.jump_step, (logits.detach(), tok, torch.full((6,), 0.1), torch.rand(6), torch.rand(6), None, 1, -1,
                          1.0, False, False, rng, None, None, None, B)
    yield ops.scale_rows, (torch.randn(6, 7), torch.rand(6), B)
    # inputs of other layouts: the outputs are contiguous, as the fake kernels say (from a review:
    # the reference returned channels_last / transposed ones, and torch.compile refused the graph)
    cl, cl0 = (torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last) for _ in range(2))
    yield ops.affine_path_sample, (cl, cl0, torch.rand(2), torch.rand(2), None, rng, B)
    yield ops.step_combine, (cl, cl0, None, torch.rand(2), torch.rand(2), None, None, None, None, B)
    yield ops.step_combine, (torch.randn(5, 3).t(), torch.randn(5, 3).t(), None, coef, coef, None, None, None, None, B)


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: str(c[0]) if callable(c) else "")
def test_opcheck(case):
    op, args = case
    torch.library.opcheck(op, args)


def test_compile_training_step_fullgraph():
    path = ff.CondOTProbPath()
    net = torch.nn.Linear(6, 6)

    def step(x1, t):
        s = path.sample(x_1=x1, t=t)
        return path.loss(net(s.x_t), s)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x1, t = torch.randn(4, 6), torch.rand(4)
    loss = compiled(x1, t)
    loss.backward()
    assert net.weight.grad is not None and torch.isfinite(loss)


def test_compile_sampling_step_fullgraph():
    def step(logits, x_t, x, v):
        new = ff.jump_step(logits, x_t, 0.3, 0.1, ff.CondOTScheduler())
        return new, ff.euler_step(x, v, 0.1)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    new, y = compiled(torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3)), torch.randn(2, 4), torch.randn(2, 4))
    assert new.shape == (2, 3) and y.shape == (2, 4)


def test_direct_calls_only_where_the_custom_op_would_change_nothing():
    from fastflow.ops._registry import direct

    x = torch.randn(3)
    assert direct(x, None, x)
    assert not direct(x, torch.randn(3, requires_grad=True))  # autograd must record the op
    with torch.no_grad():
        assert direct(torch.randn(3, requires_grad=True))
    with torch.device("cpu"):  # a TorchFunctionMode sees the op
        assert not direct(x)
    with torch.profiler.profile():  # the profiler names the op
        assert not direct(x)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        assert not direct(mode.from_tensor(x))


def test_step_combine_in_a_profile_and_a_compiled_graph_is_the_custom_op():
    x, v = torch.randn(2, 5), torch.randn(2, 5)
    with torch.profiler.profile() as prof:
        out = ff.euler_step(x, v, 0.1, backend=B)
    assert any("fastflow::step_combine" in e.name for e in prof.events())
    compiled = torch.compile(lambda a, b: ff.euler_step(a, b, 0.1, backend=B), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, v), out)

    def into(a, b):  # out= too: its overlap checks read addresses, which a traced graph has none of
        buffer = torch.empty_like(a)
        ff.euler_step(a, b, 0.1, out=buffer, backend=B)
        return buffer

    torch.testing.assert_close(torch.compile(into, backend="aot_eager", fullgraph=True)(x, v), out)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_direct_out_bumps_the_version_and_jit_trace_sees_the_op():
    from fastflow.ops.step_combine import step_combine

    w = torch.randn(4, requires_grad=True)
    h = torch.randn(4)
    y = (w * h).sum()  # saves h for the backward
    with torch.no_grad():
        step_combine(h, h, 1.0, 0.5, out=h, backend=B)  # overwrites the saved h
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()

    traced = torch.jit.trace(lambda a, b: ff.euler_step(a, b, 0.1, backend=B), (torch.randn(2, 3), torch.randn(2, 3)))
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(traced(a, b), a + 0.1 * b)  # not a constant baked in at trace time


def test_mixture_path_sample_rejects_a_negative_mask_id():
    from fastflow.ops.discrete import mixture_path_sample
    x1 = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="mask_id"):
        mixture_path_sample(x1, None, torch.rand(2), new_rng(torch.device("cpu")), 5, -1, backend=B)


def test_fused_losses_eager_function_and_custom_op_agree():
    """Eager training steps run the losses as autograd Functions; under a profiler they run the
    registered custom ops. Both must give the same loss and gradients."""
    g = torch.Generator().manual_seed(2)
    v0 = torch.randn(3, 4, 5, generator=g)
    x1 = torch.randn(3, 4, 5, generator=g)
    w = torch.rand(3, generator=g) + 0.5
    logits0 = torch.randn(6, 7, generator=g)
    tok = torch.randint(0, 7, (6,), generator=g)
    path = ff.CondOTProbPath()
    s = path.sample(x_0=torch.randn(3, 4, 5, generator=g), x_1=x1, t=torch.rand(3, generator=g))
    results = []
    for profiled in (False, True):
        v, logits = v0.clone().requires_grad_(), logits0.clone().requires_grad_()
        ctx = torch.profiler.profile() if profiled else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
        with ctx as prof:
            loss = 2 * path.loss(v, s, weight=w, backend=B) + 3 * ff.mixture_cross_entropy(logits, tok, backend=B)
            loss.backward()
        if profiled:
            names = {e.name for e in prof.events()}
            assert "fastflow::affine_path_loss" in names and "fastflow::cross_entropy" in names
        results.append((loss.detach(), v.grad, logits.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_compile_diffusion_steps_fullgraph():
    """From a review: ddpm_step / ddim_step at an int step took their table entries as floats,
    which a traced graph cannot (a data-dependent guard): fullgraph refused them."""
    sched = ff.DDPMScheduler()
    x, eps = torch.randn(2, 4), torch.randn(2, 4)
    for fn in (lambda x, e: ff.ddpm_step(x, e, 10, sched, noise=e), lambda x, e: ff.ddim_step(x, e, 10, 3, sched)):
        torch.testing.assert_close(torch.compile(fn, backend="aot_eager", fullgraph=True)(x, eps), fn(x, eps))
