"""float64 data runs the reference backend's math in float64 (every kernel computes in fp32).

Each op is compared with its formula written out in float64 to 1e-12, which an fp32
computation misses by ~1e-7; gradients are checked by finite differences (``gradcheck``);
drawn noise is the same stream any dtype draws; a fused backend asked for by name refuses
float64 with a TypeError naming the argument; and flow_matching's own script run with a
float64 default dtype gives the same numbers with fastflow's imports.
"""
import math

import flow_matching.solver  # noqa: F401  (imported under fp32, as fastflow: both default grids fp32)
import pytest
import torch
from torch.autograd import gradcheck

import fastflow as ff
from dropin_script import run

F64 = torch.float64
TOL = dict(rtol=1e-12, atol=1e-12)


def _bc(c, x):
    return c.view(-1, *([1] * (x.dim() - 1)))


def test_affine_path_sample_and_loss_in_float64():
    x_1, x_0, v = (torch.randn(3, 5, 7, dtype=F64) for _ in range(3))
    a, b, c, d = (torch.rand(3, dtype=F64) for _ in range(4))
    x_t = ff.affine_path_sample(x_1, x_0, a, b)
    assert x_t.dtype is F64
    torch.testing.assert_close(x_t, _bc(a, x_1) * x_1 + _bc(b, x_1) * x_0, **TOL)
    r = v - (_bc(c, v) * x_1 + _bc(d, v) * x_0)
    w = torch.rand(3, dtype=F64)
    for reduction, expect in (("mean", r.square().mean()), ("sum", r.square().sum()),
                              ("per_sample", r.square().flatten(1).mean(1)), ("none", r.square())):
        got = ff.affine_path_loss(v, x_1, x_0, c, d, reduction=reduction)
        assert got.dtype is F64
        torch.testing.assert_close(got, expect, **TOL)
    got = ff.affine_path_loss(v, x_1, x_0, c, d, weight=w, reduction="sum")
    torch.testing.assert_close(got, (_bc(w, v) * r.square()).sum(), **TOL)


@pytest.mark.parametrize("reduction", ["mean", "per_sample"])
def test_affine_path_loss_gradients_by_finite_differences(reduction):
    v, x_1, x_0 = (torch.randn(2, 3, 4, dtype=F64, requires_grad=True) for _ in range(3))
    c, d, e = (torch.rand(2, dtype=F64, requires_grad=True) for _ in range(3))
    rng = torch.tensor([7, 0])
    mask = torch.rand(2, 3, 4) > 0.3

    def loss(v, x_1, x_0, c, d, e):
        return ff.affine_path_loss(v, x_1, x_0, c, d, e, rng=rng, mask=mask, reduction=reduction)

    assert gradcheck(loss, (v, x_1, x_0, c, d, e))
    path = ff.AffineProbPath(ff.CosineScheduler())
    t = torch.rand(2, dtype=F64, requires_grad=True)
    assert gradcheck(lambda v, x_1, t: path.loss(v, path.sample(x_0=x_0.detach(), x_1=x_1, t=t),
                                                 reduction=reduction), (v, x_1, t))


def test_drawn_noise_is_the_stream_every_dtype_draws():
    x_1 = torch.randn(4, 9)
    a, b, s = torch.rand(4), torch.rand(4), torch.rand(4)
    rng = torch.tensor([123, 8])
    fp32 = ff.affine_path_sample(x_1, None, a, b, s, rng=rng)
    wide = ff.affine_path_sample(x_1.double(), None, a, b, s, rng=rng)
    assert wide.dtype is F64
    torch.testing.assert_close(wide.float(), fp32, rtol=1e-6, atol=1e-6)
    path = ff.CondOTProbPath()
    g = torch.Generator().manual_seed(3)
    drawn = path.sample(x_1=x_1.double(), t=torch.rand(4, dtype=F64), generator=g).x_0
    g.manual_seed(3)
    assert drawn.dtype is F64  # (the kernels' and torch's log / cos may round an ulp apart)
    torch.testing.assert_close(drawn.float(), path.sample(x_1=x_1, t=torch.rand(4), generator=g).x_0,
                               rtol=1e-6, atol=1e-6)


def test_steps_in_float64():
    x, p, q, z = (torch.randn(3, 6, dtype=F64) for _ in range(4))
    A, B, C, N = (torch.rand(3, dtype=F64) for _ in range(4))
    got = ff.step_combine(x, p, A, B, q=q, C=C, N=N, noise=z)
    assert got.dtype is F64
    torch.testing.assert_close(got, _bc(A, x) * x + _bc(B, x) * p + _bc(C, x) * q + _bc(N, x) * z, **TOL)
    out = x.clone()
    ff.step_combine(out, p, 0.5, 0.25, out=out)
    torch.testing.assert_close(out, 0.5 * x + 0.25 * p, **TOL)
    h, w = 0.1, 1.5
    torch.testing.assert_close(ff.euler_step(x, p, h, v_uncond=q, guidance_scale=w),
                               x + h * ((1 + w) * p - w * q), **TOL)
    sched = ff.DDPMScheduler(num_steps=50)
    k, j = 20, 10
    ab = sched.alpha_bar
    expect = (ab[j] / ab[k]).sqrt() * x + ((1 - ab[j]).sqrt() - (ab[j] * (1 - ab[k]) / ab[k]).sqrt()) * p
    torch.testing.assert_close(ff.ddim_step(x, p, torch.full((3,), k), torch.full((3,), j), sched), expect, **TOL)
    beta, alpha = sched.beta[k], sched.alpha[k]
    expect = x / alpha.sqrt() - beta / (alpha.sqrt() * (1 - ab[k]).sqrt()) * p + beta.sqrt() * z
    torch.testing.assert_close(ff.ddpm_step(x, p, torch.full((3,), k), sched, noise=z), expect, **TOL)


def test_prediction_conversions_in_float64():
    path = ff.AffineProbPath(ff.CosineScheduler())
    x_t, x_1 = torch.randn(3, 4, dtype=F64), torch.randn(3, 4, dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.7], dtype=F64)
    h = math.pi / 2
    al, si, da, ds = (_bc(c, x_t) for c in (torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t),
                                            -h * torch.sin(h * t)))
    got = path.target_to_velocity(x_1, x_t, t)
    assert got.dtype is F64
    torch.testing.assert_close(got, ds / si * x_t + (da * si - ds * al) / si * x_1, **TOL)


class _Decay(torch.nn.Module):
    def forward(self, x, t, **extras):
        return -t * x


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "rk4", "dopri5"])
def test_ode_solver_in_float64(method):
    x = torch.randn(5, 3, dtype=F64)
    solver = ff.ODESolver(velocity_model=_Decay())
    exact = x * math.exp(-0.5)  # dx/dt = -t x from 0 to 1
    step = None if method == "dopri5" else 1e-3
    grid = torch.tensor([0.0, 1.0], dtype=F64)  # (an fp32 grid rounds the stage times to fp32, as torchdiffeq)
    got = solver.sample(x_init=x, step_size=step, method=method, atol=1e-12, rtol=1e-12, time_grid=grid)
    assert got.dtype is F64
    # past fp32's resolution: the steps and the model run in float64
    bound = {"euler": 1e-3, "midpoint": 1e-7, "heun2": 1e-7, "rk4": 1e-13, "dopri5": 1e-10}[method]
    assert float((got - exact).abs().max()) < bound * float(x.abs().max())


def test_likelihood_in_float64():
    # dx/dt = -t x: x_0 = x_1 e^{1/2}, log p_1(x_1) = log p_0(x_0) + D / 2
    x_1 = torch.randn(4, 3, dtype=F64)
    log_p0 = lambda x: -0.5 * x.square().sum(1) - 1.5 * math.log(2 * math.pi)  # noqa: E731
    x_0, log_p = ff.ODESolver(velocity_model=_Decay()).compute_likelihood(
        x_1=x_1, log_p0=log_p0, step_size=None, method="dopri5", atol=1e-12, rtol=1e-12, exact_divergence=True)
    assert x_0.dtype is F64 and log_p.dtype is F64
    torch.testing.assert_close(log_p, log_p0(x_1 * math.exp(0.5)) + 1.5, rtol=1e-9, atol=1e-9)


def test_discrete_losses_in_float64():
    V = 13
    logits = torch.randn(3, 5, V, dtype=F64, requires_grad=True)
    x_1, x_t = torch.randint(0, V, (3, 5)), torch.randint(0, V, (3, 5))
    x_1[0, 0] = -100
    ce = ff.mixture_cross_entropy(logits, x_1)
    assert ce.dtype is F64
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits.reshape(-1, V), x_1.reshape(-1)), **TOL)
    assert gradcheck(lambda z: ff.mixture_cross_entropy(z, x_1, reduction="sum"), (logits,))
    jump = torch.rand(3, dtype=F64, requires_grad=True)
    kl = ff.generalized_kl(logits, x_1.clamp_min(0), x_t, jump, reduction="none")
    p = logits.softmax(-1)
    delta = (x_t == x_1.clamp_min(0)).to(F64)
    expect = -_bc(jump, delta) * (p.gather(-1, x_t[..., None])[..., 0] - delta
                                  + (1 - delta) * p.gather(-1, x_1.clamp_min(0)[..., None])[..., 0].log())
    assert kl.dtype is F64
    torch.testing.assert_close(kl, expect, **TOL)
    assert gradcheck(lambda z, j: ff.generalized_kl(z, x_1.clamp_min(0), x_t, j), (logits, jump))


def test_jump_step_in_float64_draws_as_fp32():
    V = 17
    logits = torch.randn(6, 4, V)  # exact in both dtypes: the same race
    x_t = torch.randint(0, V, (6, 4))
    sched = ff.PolynomialConvexScheduler(2.0)
    kw = dict(t=0.6, h=0.3, scheduler=sched, div_free=0.5)
    for final in (False, True):
        g = torch.Generator().manual_seed(5)
        fp32 = ff.jump_step(logits, x_t, **kw, final=final, generator=g)
        g.manual_seed(5)
        assert torch.equal(ff.jump_step(logits.double(), x_t, **kw, final=final, generator=g), fp32)
    solver = ff.MixtureDiscreteEulerSolver(model=lambda x, t: torch.full((*x.shape, V), 1.0 / V, dtype=F64),
                                           path=ff.MixtureDiscreteProbPath(sched), vocabulary_size=V)
    assert solver.sample(x_init=x_t, step_size=0.25).shape == x_t.shape


def test_torchcfm_matchers_in_float64():
    x0, x1 = torch.randn(8, 3, dtype=F64), torch.randn(8, 3, dtype=F64)
    t = torch.rand(8, dtype=F64)
    tt, xt, ut = ff.torchcfm.ConditionalFlowMatcher(sigma=0.0).sample_location_and_conditional_flow(x0, x1, t)
    assert xt.dtype is F64 and ut.dtype is F64
    torch.testing.assert_close(xt, t[:, None] * x1 + (1 - t[:, None]) * x0, **TOL)
    torch.testing.assert_close(ut, x1 - x0, **TOL)


def test_a_fused_backend_asked_for_refuses_float64():
    x = torch.randn(2, 3, dtype=F64)
    logits, tok = torch.randn(2, 3, 5, dtype=F64), torch.zeros(2, 3, dtype=torch.long)
    calls = [("x_1", lambda: ff.affine_path_sample(x, x, 0.5, 0.5, backend="cpu")),
             ("v", lambda: ff.affine_path_loss(x, x.float(), None, 1.0, 1.0, rng=torch.tensor([0, 0]), backend="cpu")),
             ("x", lambda: ff.step_combine(x, x, 1.0, 0.5, backend="cpu")),
             ("logits", lambda: ff.mixture_cross_entropy(logits, tok, backend="cpu")),
             ("logits", lambda: ff.generalized_kl(logits, tok, tok, torch.ones(2), backend="cpu")),
             ("logits", lambda: ff.jump_step(logits, tok, 0.5, 0.1, ff.PolynomialConvexScheduler(1.0), backend="cpu"))]
    for name, call in calls:
        with pytest.raises(TypeError, match=f"{name}: backend='cpu' .* fp32"):
            call()
    with ff.use_backend("cpu"):  # the default backend counts as asked for
        with pytest.raises(TypeError, match="x: backend='cpu'"):
            ff.euler_step(x, x, 0.1)


def test_fp32_under_a_float64_default_dtype_stays_fused():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        x = torch.randn(4, 6, dtype=torch.float32)
        assert ff.euler_step(x, x, 0.1, backend="cpu").dtype is torch.float32
        s = ff.CondOTProbPath().sample(x_1=x, t=torch.rand(4), backend="cpu")  # a float64 t: fine
        assert s.x_t.dtype is torch.float32
        assert ff.CondOTProbPath().loss(x, s, backend="cpu").dtype is torch.float32
    finally:
        torch.set_default_dtype(previous)


def test_import_swap_agrees_in_float64():
    """flow_matching's script with ``torch.set_default_dtype(torch.float64)``, as float64 users
    write it: fastflow's imports give its numbers (continuous training to float64 rounding)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        fm_losses, fm_samples, fm_tokens, _ = run("flow_matching", iters=10)
        ff_losses, ff_samples, ff_tokens, _ = run("fastflow", iters=10)
    finally:
        torch.set_default_dtype(previous)
    assert ff_samples.dtype is F64 and fm_samples.dtype is F64
    torch.testing.assert_close(torch.tensor(ff_losses), torch.tensor(fm_losses), rtol=1e-12, atol=0)
    # 20 midpoint steps through a network, the stage times rounded to the fp32 grid as torchdiffeq does
    torch.testing.assert_close(ff_samples, fm_samples, **TOL)
    assert ff_tokens.shape == fm_tokens.shape


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "rk4"])
def test_ode_times_are_torchdiffeq_s(method):
    """The model sees torchdiffeq's stage times (computed in the grid's dtype) and outputs inside a
    step are interpolated with its slope: a float64 state on an fp32 grid gives flow_matching's."""
    for grid, step in (([0.9, 0.2, 0.05], 0.3), ([0.0, 0.33, 1.0], 1 / 7)):
        x = torch.randn(2, 3, dtype=F64)
        seen = {"fm": [], "ff": []}

        def model(key):
            return lambda x, t: (seen[key].append(float(t)), torch.cos(x) + t)[1]

        g = torch.tensor(grid)
        a = flow_matching.solver.ODESolver(model("fm")).sample(x_init=x, step_size=step, method=method, time_grid=g,
                                                               return_intermediates=True)
        b = ff.ODESolver(model("ff")).sample(x_init=x, step_size=step, method=method, time_grid=g,
                                             return_intermediates=True)
        assert seen["ff"] == seen["fm"]
        torch.testing.assert_close(b, a, rtol=1e-14, atol=1e-14)


def test_mixed_float64_inputs_keep_float64_precision():
    v, x_0 = torch.randn(2, 3, dtype=F64), torch.randn(2, 3, dtype=F64)
    x_1 = torch.randn(2, 3)  # fp32 data, float64 everything else: the float64 math, float64 coefficients
    third = torch.full((2,), 1 / 3, dtype=F64)
    exact = (v - (third[:, None] * x_1.double() + 0.5 * x_0)).square()
    torch.testing.assert_close(ff.affine_path_loss(v, x_1, x_0, third, 0.5, reduction="none"), exact, **TOL)
    torch.testing.assert_close(ff.affine_path_loss(v, x_1, x_0, third, 0.5, reduction="sum"), exact.sum(), **TOL)
    x = torch.randn(2, 3, dtype=F64)  # coefficients past fp32's range are finite in float64
    torch.testing.assert_close(ff.step_combine(x, x, 1e39, 0.5), 1e39 * x + 0.5 * x, **TOL)


def test_errors_name_the_caller_s_argument():
    x32, x64 = torch.randn(2, 3), torch.randn(2, 3, dtype=F64)
    with pytest.raises(TypeError, match="x_init: backend='cpu'"):
        ff.ODESolver(velocity_model=_Decay(), backend="cpu").sample(x_init=x64, step_size=0.5)
    with pytest.raises(TypeError, match="x0: backend='cpu'"):
        ff.torchcfm.ConditionalFlowMatcher(backend="cpu").sample(x64, x64)
    with pytest.raises(TypeError, match="v: backend='cpu'"):
        ff.euler_step(x32, x64, 0.1, backend="cpu")
    with pytest.raises(TypeError, match="v_uncond: expected dtype"):
        ff.euler_step(x32, x32, 0.1, v_uncond=x32.long(), guidance_scale=1.0)
    with pytest.raises(TypeError, match="eps_hat: backend='cpu'"):
        ff.ddim_step(x32, x64, 5, 2, ff.DDPMScheduler(10), backend="cpu")
    with ff.use_backend("cpu"), pytest.raises(TypeError, match="epsilon: backend='cpu'"):
        ff.CondOTProbPath().epsilon_to_velocity(x64, x32, torch.full((2,), 0.5))


def test_float64_uniforms_are_taken():
    V = 7
    x_1 = torch.randint(0, V, (3, 4))
    u = torch.rand(3, 4, dtype=F64)
    assert torch.equal(ff.mixture_path_sample(x_1, None, 0.5, None, mask_id=0, noise=u),
                       ff.mixture_path_sample(x_1, None, 0.5, None, mask_id=0, noise=u.float()))
    noise = ff.JumpNoise(torch.rand(3, 4, 3, dtype=F64), torch.rand(3, 4, V, dtype=F64))
    logits = torch.randn(3, 4, V)
    kw = dict(t=0.5, h=0.2, scheduler=ff.PolynomialConvexScheduler(1.0))
    assert torch.equal(ff.jump_step(logits, x_1, **kw, noise=noise),
                       ff.jump_step(logits, x_1, **kw, noise=ff.JumpNoise(*(u.float() for u in noise[:2]))))
