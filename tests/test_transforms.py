"""torch.func transforms (grad, vmap, jvp) and forward-mode AD through every public op.

The fused kernels read raw memory, so under a transform or with tangents a call runs the
reference backend's plain PyTorch math (``fastflow.ops._registry.transformed``). The expected
values here come from outside the transforms: the eager fused op's autograd gradient (a
loss's jvp along ``u`` is ``<grad, u>``; a linear op's is the op applied to ``u``) and a loop
of eager calls for ``vmap``.
"""
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jvp, vmap

import fastflow as ff

B, D, V = 3, 6, 11
SCHED = ff.PolynomialConvexScheduler(2.0)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(x_1=r(B, D), x_0=r(B, D), v=r(B, D), logits=r(B, D, V),
                tok=torch.randint(0, V, (B, D), generator=g), x_t=torch.randint(0, V, (B, D), generator=g),
                weight=torch.rand(B, generator=g) + 0.5, jump=torch.rand(B, generator=g) + 0.5,
                rng=torch.tensor([7, 0]))


d = _data()
# scalar losses of one tensor argument (the others fixed): name -> (f, argument)
LOSSES = {
    "affine_path_loss": (lambda v: ff.affine_path_loss(v, d["x_1"], d["x_0"], 1.0, -1.0), d["v"]),
    "affine_path_loss drawn x_0, weight, per_sample": (
        lambda v: ff.affine_path_loss(v, d["x_1"], None, 0.7, -0.4, e=0.2, rng=d["rng"], weight=d["weight"],
                                      reduction="per_sample").sum(), d["v"]),
    "affine_path_loss none, mask": (
        lambda v: ff.affine_path_loss(v, d["x_1"], d["x_0"], 1.0, -1.0, mask=d["x_1"] > 0, reduction="none").sum(),
        d["v"]),
    "mixture_cross_entropy": (lambda z: ff.mixture_cross_entropy(z, d["tok"]), d["logits"]),
    "mixture_cross_entropy ignore, sum": (
        lambda z: ff.mixture_cross_entropy(z, torch.where(d["tok"] > 3, d["tok"], -100), reduction="sum"), d["logits"]),
    "generalized_kl": (lambda z: ff.generalized_kl(z, d["tok"], d["x_t"], torch.tensor([0.5, 1.0, 2.0])), d["logits"]),
    "generalized_kl in jump": (lambda j: ff.generalized_kl(d["logits"], d["tok"], d["x_t"], j), d["jump"]),
}
# linear maps of one tensor argument
LINEAR = {
    "step_combine": (lambda p: ff.step_combine(d["x_0"], p, torch.tensor([1.0, 0.5, 2.0]), 0.1, q=d["x_1"], C=0.3),
                     d["v"]),
    "step_combine noise": (lambda p: ff.step_combine(d["x_0"], p, 1.0, 0.1, N=0.3, rng=d["rng"]), d["v"]),
    "affine_path_sample": (lambda x: ff.affine_path_sample(x, None, 0.3, 0.7, s=0.1, rng=d["rng"]), d["x_1"]),
    "euler_step": (lambda v: ff.euler_step(d["x_0"], v, 0.25), d["v"]),
}


def _eager_grad(f, a):
    a = a.detach().clone().requires_grad_()
    f(a).backward()
    return a.grad


@pytest.mark.parametrize("name", LOSSES)
def test_grad_and_jvp_of_losses_match_autograd(name):
    f, a = LOSSES[name]
    expected = _eager_grad(f, a)  # the fused kernels' forward-written gradient
    torch.testing.assert_close(grad(f)(a), expected, rtol=1e-5, atol=1e-6)
    u = torch.randn_like(a)
    value, tangent = jvp(f, (a,), (u,))
    torch.testing.assert_close(value, f(a), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tangent, (expected * u).sum(), rtol=1e-4, atol=1e-5)
    with fwAD.dual_level():  # forward-mode AD without torch.func: the tangent is not dropped
        out = f(fwAD.make_dual(a, u))
        torch.testing.assert_close(fwAD.unpack_dual(out).tangent, (expected * u).sum(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_ops_under_every_transform(name):
    f, a = LINEAR[name]
    u = torch.randn_like(a)
    c = f(torch.zeros_like(a))  # the affine part
    _, tangent = jvp(f, (a,), (u,))
    torch.testing.assert_close(tangent, f(u) - c, rtol=1e-5, atol=1e-6)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(f(fwAD.make_dual(a, u))).tangent
    torch.testing.assert_close(tangent, f(u) - c, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(a)
    torch.testing.assert_close(grad(lambda a: (f(a) * w).sum())(a), _eager_grad(lambda a: (f(a) * w).sum(), a))
    stacked = torch.stack([a, 2 * a, -a])
    torch.testing.assert_close(vmap(f)(stacked), torch.stack([f(x) for x in stacked]))


@pytest.mark.parametrize("name", LOSSES)
def test_vmap_of_losses_matches_a_loop(name):
    f, a = LOSSES[name]
    stacked = torch.stack([a, 0.5 * a, a.flip(0)])
    torch.testing.assert_close(vmap(f)(stacked), torch.stack([f(x) for x in stacked]), rtol=1e-5, atol=1e-6)


def test_per_sample_gradients_with_vmap_of_grad():
    """Per-sample gradients (Opacus-style clipping): vmap(grad(loss)) over the batch."""
    def loss(v, x_1, x_0):
        return ff.affine_path_loss(v[None], x_1[None], x_0[None], 1.0, -1.0)

    per_sample = vmap(grad(loss))(d["v"], d["x_1"], d["x_0"])
    expected = torch.stack([_eager_grad(lambda v: loss(v, d["x_1"][i], d["x_0"][i]), d["v"][i]) for i in range(B)])
    torch.testing.assert_close(per_sample, expected)


def test_jvp_in_time_of_the_path_and_the_solver():
    """d x_t / d t along the path (as MeanFlow-style objectives take it) and a sampler's output
    differentiated in its initial state, through the fused ops' composable path."""
    path = ff.AffineProbPath(ff.CondOTScheduler())
    t = torch.tensor([0.2, 0.5, 0.9])
    x_t, dx = jvp(lambda t: path.sample(x_0=d["x_0"], x_1=d["x_1"], t=t).x_t, (t,), (torch.ones_like(t),))
    torch.testing.assert_close(dx, d["x_1"] - d["x_0"])  # CondOT: x_t = t x_1 + (1 - t) x_0
    torch.testing.assert_close(x_t, path.sample(x_0=d["x_0"], x_1=d["x_1"], t=t).x_t)

    W = torch.randn(D, D) / D

    def sample(x):
        solver = ff.ODESolver(lambda x, t: torch.tanh(x @ W))
        return solver.sample(x, step_size=0.25, method="midpoint", enable_grad=True).sum()

    torch.testing.assert_close(grad(sample)(d["x_0"]), _eager_grad(sample, d["x_0"]))


def test_stochastic_ops_follow_vmap_randomness():
    """A seed drawn inside vmap is one draw with randomness='same' and one per element with
    'different'; 'error' (torch's default) refuses the draw as torch's random ops do."""
    path = ff.AffineProbPath(ff.CondOTScheduler())
    t = torch.full((B,), 0.5)
    stacked = torch.stack([d["x_1"], d["x_1"]])
    draws = {}
    for how in ("same", "different"):
        draws[how] = vmap(lambda x: path.sample(x_0=None, x_1=x, t=t).x_t, randomness=how)(stacked)
        tokens = vmap(lambda z: ff.jump_step(z, d["x_t"], t, 0.5, SCHED, final=True), randomness=how)(
            torch.stack([d["logits"]] * 4))
        assert torch.equal(tokens[0], tokens[1]) == (how == "same")
        assert bool(((tokens >= 0) & (tokens < V)).all())
    assert torch.equal(draws["same"][0], draws["same"][1])
    assert not torch.equal(draws["different"][0], draws["different"][1])
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda x: path.sample(x_0=None, x_1=x, t=t).x_t)(stacked)


def test_jump_step_and_mixture_sample_under_vmap_match_explicit_rng():
    """With the same draw (an explicit rng / explicit noise), vmap gives each element the
    eager call's tokens: the reference's dense form of the row skipping is the same law."""
    t = torch.tensor([0.1, 0.6, 0.95])
    u = torch.rand(B, D, 3)
    race = torch.rand(B, D, V)
    noise = ff.JumpNoise(u, race)
    stacked = torch.stack([d["logits"], -d["logits"], 3 * d["logits"]])
    for backend in ("auto", "reference"):
        got = vmap(lambda z: ff.jump_step(z, d["x_t"], t, 0.4, SCHED, div_free=0.5, noise=noise, backend=backend))(
            stacked)
        expected = torch.stack([ff.jump_step(z, d["x_t"], t, 0.4, SCHED, div_free=0.5, noise=noise) for z in stacked])
        assert torch.equal(got, expected)
    kappa = torch.stack([torch.full((B,), 0.3), torch.full((B,), 0.8)])
    got = vmap(lambda k: ff.mixture_path_sample(d["tok"], None, k, d["rng"], vocab_size=V))(kappa)
    assert torch.equal(got, torch.stack([ff.mixture_path_sample(d["tok"], None, k, d["rng"], vocab_size=V)
                                         for k in kappa]))


def test_value_checks_see_every_vmapped_element():
    bad = d["tok"].clone()
    bad[1, 2] = V  # out of range in the second element only
    with pytest.raises(ValueError, match="x_1"):
        vmap(lambda x: ff.mixture_cross_entropy(d["logits"], x))(torch.stack([d["tok"], bad]))
    t = torch.stack([torch.full((B,), 0.5), torch.tensor([0.5, 1.5, 0.5])])
    with pytest.raises(ValueError, match="t"):
        vmap(lambda t: ff.jump_step(d["logits"], d["x_t"], t, 0.1, SCHED), randomness="same")(t)


def test_explicit_fused_backend_refuses_a_transform():
    f, a = LOSSES["mixture_cross_entropy"]
    with ff.use_backend("cpu"), pytest.raises(ValueError, match="torch.func transform"):
        grad(f)(a)
    with pytest.raises(ValueError, match="backend='cpu'.*forward-mode AD"), fwAD.dual_level():
        ff.euler_step(d["x_0"], fwAD.make_dual(d["v"], d["v"]), 0.1, backend="cpu")
    with warnings.catch_warnings():  # the plain call is unchanged: the fused kernel, no warning
        warnings.simplefilter("error")
        ff.euler_step(d["x_0"], d["v"], 0.1, backend="cpu")


def test_forward_ad_through_a_jump_that_requires_grad():
    """A dual jump coefficient that also requires grad (a learnable t, say) must not reach the
    fused op's autograd node, which has no forward-mode formula."""
    jump = d["jump"].clone().requires_grad_()
    u = torch.randn(B)
    f = LOSSES["generalized_kl in jump"][0]
    expected = (_eager_grad(f, d["jump"]) * u).sum()
    with fwAD.dual_level():
        out = f(fwAD.make_dual(jump, u))
        torch.testing.assert_close(fwAD.unpack_dual(out).tangent.detach(), expected, rtol=1e-5, atol=1e-6)


def test_functionalize_keeps_the_fused_custom_op():
    """functionalize carries no tangents or batch dimensions: traced graphs keep fastflow's op,
    and an explicit fused backend still runs there."""
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.func import functionalize
    for backend in (None, "cpu"):
        f = lambda x, v: ff.euler_step(x, v, 0.1, backend=backend)  # noqa: E731
        gm = make_fx(functionalize(f))(d["x_0"], d["v"])
        assert "fastflow.step_combine.default" in {str(n.target) for n in gm.graph.nodes}, backend
        torch.testing.assert_close(functionalize(f)(d["x_0"], d["v"]), d["x_0"] + 0.1 * d["v"])


def test_batched_upstream_gradients():
    """autograd.grad(is_grads_batched=True) (torch's own vmap over the backward: a Jacobian's
    rows in one call) through the fused losses' backward, which otherwise scales in a kernel."""
    cases = (
        (lambda a: ff.affine_path_loss(a, d["x_1"], d["x_0"], 1.0, -1.0, reduction="per_sample"), d["v"]),
        (lambda z: ff.mixture_cross_entropy(z, d["tok"], reduction="none").sum(-1), d["logits"]),
        (lambda z: ff.generalized_kl(z, d["tok"], d["x_t"], d["jump"], reduction="none").sum(-1), d["logits"]),
    )
    for f, a in cases:
        a = a.clone().requires_grad_()
        (jac,) = torch.autograd.grad(f(a), a, grad_outputs=torch.eye(B), is_grads_batched=True)
        torch.testing.assert_close(jac, torch.func.jacrev(f)(a.detach()))


def test_exact_ot_pairing_under_transforms():
    pytest.importorskip("scipy")
    m = ff.ExactOptimalTransportConditionalFlowMatcher(0.1)
    t = torch.rand(B)

    def loss(v):
        sample = m.sample(d["x_0"], d["x_1"], t, generator=torch.Generator().manual_seed(0))
        return m.loss(v, sample)

    torch.testing.assert_close(grad(loss)(d["v"]), _eager_grad(loss, d["v"]))
    with pytest.raises(ValueError, match="vmap"):
        vmap(lambda x: m.sample(d["x_0"], x, t, generator=torch.Generator()).xt)(torch.stack([d["x_1"]] * 2))


def test_differentiated_reads_the_wrappers_before_the_tangent():
    """Inside jvp(vmap(f)) a batched tensor refuses unpack_dual: the wrappers answer first."""
    from fastflow import _transforms
    seen = []

    def f(x):
        seen.append((_transforms.differentiated(x), _transforms.differentiated(torch.tensor([0.0, 1.0]))))
        return x * 2

    jvp(vmap(f), (torch.randn(2, 3),), (torch.ones(2, 3),))
    assert seen == [(True, False)]


def test_a_differentiated_time_grid_is_refused_not_zeroed():
    """The solvers read the times as numbers: a derivative in the grid would silently be 0."""
    solver = ff.ODESolver(lambda x, t: x + 1)
    grid = torch.tensor([0.0, 0.5, 1.0])
    sample = lambda g: solver.sample(d["x_0"], time_grid=g, enable_grad=True)  # noqa: E731
    with pytest.raises(ValueError, match="time_grid"):
        jvp(sample, (grid,), (torch.tensor([0.0, 0.0, 1.0]),))
    with pytest.raises(ValueError, match="time_grid"):
        sample(grid.clone().requires_grad_())
    torch.testing.assert_close(grad(lambda x: solver.sample(x, time_grid=grid, enable_grad=True).sum())(d["x_0"]),
                               torch.full_like(d["x_0"], 2.25))  # two Euler steps of 0.5: (1.5)^2
    # a grid made inside the transformed function is wrapped too, but constant: it runs (it was
    # refused, with advice to detach it that did not help); one made from the input is refused
    inside = lambda x: solver.sample(x, time_grid=torch.tensor([0.0, 0.5, 1.0]), enable_grad=True).sum()  # noqa: E731
    torch.testing.assert_close(grad(inside)(d["x_0"]), torch.full_like(d["x_0"], 2.25))
    with pytest.raises(ValueError, match="time_grid"):
        grad(lambda w: solver.sample(d["x_0"], time_grid=torch.stack([w * 0, w]), enable_grad=True).sum())(
            torch.tensor(1.0))
    with pytest.raises(ValueError, match="time_grid"):
        solver.compute_likelihood(d["x_0"], lambda x: -x.square().sum(1), step_size=None,
                                  time_grid=torch.tensor([1.0, 0.0], requires_grad=True), enable_grad=True)


def test_compiled_transform_in_a_fresh_process():
    """torch.compile(fullgraph=True) of a transformed op, before anything imported the reference
    backend (the dispatch must not import inside the traced region)."""
    import subprocess
    import sys
    code = ("import torch, fastflow as ff\n"
            "x1, x0, v = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)\n"
            "f = torch.compile(lambda v: torch.func.grad(lambda v: ff.affine_path_loss(v, x1, x0, 1.0, -1.0))(v),\n"
            "                  backend='eager', fullgraph=True)\n"
            "assert torch.allclose(f(v), 2 * (v - (x1 - x0)) / v.numel())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
