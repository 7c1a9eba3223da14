"""ODE solver, Euler / CFG steps and DDPM / DDIM steps against flow_matching, torchdiffeq and closed forms."""
import numpy as np
import pytest
import torch

import fastflow as ff
from flow_matching.path import AffineProbPath as FMAffine
from flow_matching.path import scheduler as fm
from flow_matching.solver import ODESolver as FMODE


class Field(torch.nn.Module):
    """A cheap time-dependent linear field u(x, t) = W x (1 + t) + b, with a class extra."""

    def __init__(self, d=6):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.randn(d, d, generator=g) * 0.3
        self.b = torch.randn(d, generator=g)

    def forward(self, x, t, label=0.0):
        return x @ self.W.T * (1 + t) + self.b + label


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("step_size,grid", [(0.1, [0.0, 1.0]), (0.07, [0.0, 0.5, 1.0]), (None, [0.0, 0.3, 0.65, 1.0]),
                                            (0.1, [1.0, 0.0])])
def test_matches_flow_matching(method, step_size, grid):
    f, x0 = Field(), torch.randn(5, 6)
    kw = dict(step_size=step_size, method=method, time_grid=torch.tensor(grid), return_intermediates=True)
    ours = ff.ODESolver(f).sample(x0, **kw)
    theirs = FMODE(f).sample(x0, **kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_gradients_through_the_sampler_match_flow_matching(backend, method):
    """enable_grad=True: d(sample)/d(parameters, x_init, guidance extras) as flow_matching's."""
    if backend not in ff.available_backends():
        pytest.skip(f"backend {backend} not built")
    grads = []
    for solver in (ff.ODESolver, FMODE):
        f = Field()
        f.W.requires_grad_()
        x0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(3)).requires_grad_()
        kw = dict(backend=backend) if solver is ff.ODESolver else {}
        x1 = solver(f, **kw).sample(x0, step_size=0.125, method=method, enable_grad=True,
                                   time_grid=torch.tensor([0.0, 0.5, 1.0]), return_intermediates=True)
        (x1[1:] ** 2).sum().backward()
        grads.append((f.W.grad, x0.grad))
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_step_combine_gradients():
    """Every differentiable input of the fused step, against autograd of the plain formula."""
    from fastflow.ops.step_combine import step_combine
    g = torch.Generator().manual_seed(4)
    t = [torch.randn(3, 2, 5, generator=g).requires_grad_() for _ in range(4)]
    c = [torch.rand(3, generator=g).requires_grad_() for _ in range(4)]
    out = step_combine(t[0], t[1], c[0], c[1], q=t[2], C=c[2], N=c[3], noise=t[3], backend="reference")
    w = torch.randn(out.shape, generator=g)
    got = torch.autograd.grad((out * w).sum(), t + c)
    ps = [k[:, None, None] for k in c]
    want = torch.autograd.grad(((ps[0] * t[0] + ps[1] * t[1] + ps[2] * t[2] + ps[3] * t[3]) * w).sum(), t + c)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_heun_matches_torchdiffeq_heun2():
    from torchdiffeq import odeint
    f, x0 = Field(), torch.randn(4, 6)
    ours = ff.ODESolver(f).sample(x0, step_size=0.1, method="heun")
    theirs = odeint(lambda t, x: f(x=x, t=t), x0, torch.tensor([0.0, 1.0]), method="heun2",
                    options={"step_size": 0.1})[-1]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_euler_is_exact_against_flow_matching():
    f, x0 = Field(), torch.randn(5, 6)
    ours = ff.ODESolver(f).sample(x0, step_size=0.05)
    theirs = FMODE(f).sample(x0, step_size=0.05)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_guidance_mixes_conditional_and_unconditional_calls():
    f, x0 = Field(), torch.randn(3, 6)
    w = 1.5
    ours = ff.ODESolver(f).sample(x0, step_size=0.25, guidance_scale=w, label=2.0, uncond_model_extras={"label": 0.0})

    def guided(x, t):
        return (1 + w) * f(x=x, t=t, label=2.0) - w * f(x=x, t=t, label=0.0)

    theirs = FMODE(lambda x, t: guided(x, t)).sample(x0, step_size=0.25)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["x1", "epsilon"])
def test_prediction_types_equal_converted_velocity(prediction):
    sched = ff.CosineScheduler()
    path = ff.AffineProbPath(sched)
    fmpath = FMAffine(fm.CosineScheduler())
    f, x0 = Field(), torch.randn(4, 6)
    grid = torch.tensor([0.05, 0.95])
    ours = ff.ODESolver(f, path=path, prediction=prediction).sample(x0, step_size=0.1, method="midpoint", time_grid=grid)
    conv = fmpath.target_to_velocity if prediction == "x1" else fmpath.epsilon_to_velocity

    def vel(x, t):
        return conv(f(x=x, t=t), x, t)

    theirs = FMODE(vel).sample(x0, step_size=0.1, method="midpoint", time_grid=grid)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["x1", "epsilon"])
def test_a_learnable_scheduler_gets_its_gradient_through_the_conversion(prediction):
    """A scheduler with parameters: the solver's fused conversion passes their gradient on, as the
    conversion written in the model does (it read the coefficients as numbers: a silent zero)."""
    class Learned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

        def forward(self, t):
            k = self.k
            return ff.SchedulerOutput(alpha_t=t ** k, sigma_t=1 - t, d_alpha_t=k * t ** (k - 1),
                                      d_sigma_t=-torch.ones_like(t))

    path = ff.AffineProbPath(Learned())
    x0 = torch.randn(4, 3)
    W = torch.randn(3, 3) * 0.3
    model = lambda x, t: torch.tanh(x @ W) * 0.5  # noqa: E731
    def conv(pred, x, t):  # the conversion as plain math (dopri5's first-step probe may pass t = 1)
        s = path.scheduler(t.reshape(1))
        al, si, da, ds = s.alpha_t, s.sigma_t, s.d_alpha_t, s.d_sigma_t
        if prediction == "x1":
            return (ds / si) * x + ((da * si - ds * al) / si) * pred
        return (da / al) * x + ((ds * al - da * si) / al) * pred

    # dopri5: torchdiffeq's step times depend on the state and k; the conversion follows them
    # (it read them as numbers: d/dk 16% off, and d/dx_init 5% off with any scheduler)
    for kw in (dict(step_size=0.3, method="midpoint", time_grid=torch.tensor([0.05, 0.9])),
               dict(method="dopri5", time_grid=torch.tensor([0.05, 0.5, 0.9]))):
        fused = ff.ODESolver(model, path, prediction=prediction).sample(x0, enable_grad=True, **kw)
        plain = ff.ODESolver(lambda x, t: conv(model(x, t), x, t)).sample(x0, enable_grad=True, **kw)
        torch.testing.assert_close(fused, plain)
        (g_fused,), (g_plain,) = (torch.autograd.grad(o.sum(), path.scheduler.k) for o in (fused, plain))
        assert g_plain != 0
        torch.testing.assert_close(g_fused, g_plain, rtol=1e-4, atol=1e-6)
    # and under vmap(grad) over k, whose coefficients are then batched (a shortcut compared them)
    from torch.func import grad, vmap

    def sample_at(k):
        def sched(t):
            return ff.SchedulerOutput(alpha_t=t ** k, sigma_t=1 - t, d_alpha_t=k * t ** (k - 1),
                                      d_sigma_t=-torch.ones_like(t))
        return ff.ODESolver(model, ff.AffineProbPath(sched), prediction=prediction).sample(
            x0, step_size=0.3, method="midpoint", time_grid=torch.tensor([0.05, 0.9]), enable_grad=True).sum()

    ks = torch.tensor([1.3, 1.4], dtype=torch.float64)
    torch.testing.assert_close(vmap(grad(sample_at))(ks), torch.stack([grad(sample_at)(k) for k in ks]))


def test_x1_prediction_at_sigma_zero_raises_naming_t():
    path = ff.CondOTProbPath()
    with pytest.raises(ValueError, match="t"):
        ff.ODESolver(Field(), path=path, prediction="x1").sample(torch.randn(2, 6), step_size=0.5, method="heun")


def test_adaptive_method_is_handed_to_torchdiffeq():
    f, x0 = Field(), torch.randn(2, 6)
    ours = ff.ODESolver(f).sample(x0, method="dopri5", atol=1e-7, rtol=1e-7)
    theirs = FMODE(f).sample(x0, step_size=None, method="dopri5", atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_adaptive_method_under_enable_grad_keeps_the_times_graph():
    """From a review of flow_matching's own tests: with enable_grad, dopri5's step times depend
    on the state, and the model got them as floats (torch's UserWarning every call, and the
    parameter's gradient missed the path through t: -1.1326 against flow_matching's -1.1160)."""
    def grad_of(solver_cls):
        a = torch.nn.Parameter(torch.tensor(1.5))
        x0 = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
        model = lambda x, t: torch.sin(a * x * (1 + 3 * t))  # noqa: E731
        x1 = solver_cls(model).sample(x_init=x0, step_size=None, method="dopri5", enable_grad=True,
                                      atol=1e-3, rtol=1e-3)
        x1.sum().backward()
        return a.grad
    torch.testing.assert_close(grad_of(ff.ODESolver), grad_of(FMODE), rtol=1e-6, atol=1e-7)


def test_euler_step_and_cfg():
    x, v, vu = torch.randn(3, 4, 5), torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    h = torch.tensor([0.1, 0.2, 0.3])
    torch.testing.assert_close(ff.euler_step(x, v, 0.1), x + 0.1 * v)
    torch.testing.assert_close(ff.euler_step(x, v, h, v_uncond=vu, guidance_scale=2.0),
                               x + h[:, None, None] * (3 * v - 2 * vu))
    y = x.clone()
    out = ff.euler_step(y, v, 0.1, out=y)
    assert out is y
    torch.testing.assert_close(y, x + 0.1 * v)


def test_ddpm_and_ddim_steps_closed_form():
    s = ff.DDPMScheduler(100)
    x, e, z = torch.randn(2, 7), torch.randn(2, 7), torch.randn(2, 7)
    k = 40
    a, b, ab = float(s.alpha[k]), float(s.beta[k]), float(s.alpha_bar[k])
    ref = (x - b / (1 - ab) ** 0.5 * e) / a**0.5 + b**0.5 * z
    torch.testing.assert_close(ff.ddpm_step(x, e, k, s, noise=z), ref)
    torch.testing.assert_close(ff.ddpm_step(x, e, 1, s, noise=z),
                               (x - float(s.beta[1]) / (1 - float(s.alpha_bar[1])) ** 0.5 * e) / float(s.alpha[1]) ** 0.5)
    j = 20
    abj = float(s.alpha_bar[j])
    x0_hat = (x - (1 - ab) ** 0.5 * e) / ab**0.5
    torch.testing.assert_close(ff.ddim_step(x, e, k, j, s), abj**0.5 * x0_hat + (1 - abj) ** 0.5 * e)
    draws = torch.stack([ff.ddpm_step(torch.zeros(1, 4000), torch.zeros(1, 4000), k, s) for _ in range(2)])
    assert abs(float(draws.std()) - b**0.5) < 0.05 * b**0.5


def test_discrete_solver_matches_flow_matching_in_distribution():
    from flow_matching.solver import MixtureDiscreteEulerSolver as FMSolver
    from flow_matching.path import MixtureDiscreteProbPath as FMPath
    V, n = 5, 6000
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0])

    def model(x, t):
        return torch.softmax(logits, -1).expand(*x.shape, V)

    x0 = torch.randint(0, V, (n, 1))
    ours = ff.MixtureDiscreteEulerSolver(model, ff.MixtureDiscreteProbPath(ff.CondOTScheduler()), V).sample(
        x0, step_size=0.25)
    theirs = FMSolver(model, FMPath(fm.CondOTScheduler()), V).sample(x0, step_size=0.25)
    a, b = torch.bincount(ours.view(-1), minlength=V).double(), torch.bincount(theirs.view(-1), minlength=V).double()
    from scipy.stats import chi2_contingency
    assert chi2_contingency(torch.stack([a, b]).numpy()).pvalue > 1e-3
    p = torch.softmax(logits.double(), -1)
    torch.testing.assert_close(a / n, p, atol=0.03, rtol=0)


def test_discrete_solver_intermediates_logits_and_div_free():
    V = 6
    path = ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(2))

    def model(x, t):
        return torch.zeros(*x.shape, V)

    solver = ff.MixtureDiscreteEulerSolver(model, path, V, source_distribution_p=torch.full((V,), 1 / V),
                                           model_output="logits")
    out = solver.sample(torch.randint(0, V, (8, 3)), step_size=0.1, div_free=0.5, return_intermediates=True,
                        time_grid=torch.tensor([0.0, 0.5, 1.0]))
    assert out.shape == (3, 8, 3)
    with pytest.raises(ValueError, match="source_distribution_p"):
        ff.MixtureDiscreteEulerSolver(model, path, V).sample(torch.zeros(2, 2, dtype=torch.long), 0.1, div_free=1.0)


@pytest.mark.parametrize("keep", ["input", "view", "detached", "nothing"])
def test_solver_reuses_only_buffers_no_one_else_holds(keep):
    """The memory of the state left behind (2 MiB: recycled by fastflow's allocator) serves a
    later step only when nothing else reaches it: a model that keeps its input (or a view, or a
    detached alias) must see it unchanged."""
    kept, ptrs = [], []

    def model(x=None, t=None, **extras):
        ptrs.append(x.data_ptr())
        if keep == "input":
            kept.append(x)
        elif keep == "view":
            kept.append(x[0])
        elif keep == "detached":
            kept.append(x.detach())
        return -x

    x0 = torch.ones(2, 1 << 18)
    out = ff.ODESolver(model).sample(x0, step_size=0.125, method="euler")
    torch.testing.assert_close(out, torch.full((2, 1 << 18), 0.875 ** 8))
    if keep == "nothing":
        assert len(set(ptrs)) <= 3  # x_init, then two buffers in turn
    else:
        values = [float(k.reshape(-1)[0]) for k in kept]
        torch.testing.assert_close(torch.tensor(values), 0.875 ** torch.arange(8.0))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:divide by zero encountered:RuntimeWarning")  # the Triton interpreter's NumPy
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float_coefficient_paths_equal_step_combine_and_fall_back_with_its_checks(dtype):
    # float coefficients on plain CPU tensors skip the [B] coefficient tensors (step_combine, and
    # the ODE solver's stepper, which also skips the checks): same results, same errors
    from fastflow.ops.step_combine import stepper

    g = torch.Generator().manual_seed(3)
    x, p, q = (torch.randn(5, 3, 7, generator=g).to(dtype) for _ in range(3))
    for backend in ff.available_backends("cpu"):
        f = stepper(x, backend)
        # tensor coefficients: the generic path; floats: the backend's float entry where it has one
        ref = ff.step_combine(x, p, torch.tensor(0.5), torch.tensor(-1.25), q=q, C=torch.tensor(2.0), backend=backend)
        assert torch.equal(ff.step_combine(x, p, 0.5, -1.25, q=q, C=2.0, backend=backend), ref)
        assert torch.equal(f(x, p, 0.5, -1.25, q=q, C=2.0), ref)
        out = torch.empty_like(x)
        v = out._version
        assert f(x, p, 0.5, -1.25, q=q, C=2.0, out=out) is out and torch.equal(out, ref)
        assert out._version > v  # written in place: autograd sees it
        ints = ff.step_combine(x, p, 1.0, -1.25, q=q, C=2.0, backend=backend)
        assert torch.equal(f(x, p, 1, -1.25, q=q, C=2), ints)  # ints: the generic op
        wide = torch.zeros(5, 3, 9, dtype=dtype)
        wide[..., :7] = p
        assert torch.equal(f(x, wide[..., :7], 0.5, -1.25, q=q, C=2.0), ref)  # a strided p
        with pytest.raises(ValueError, match="^A"):
            f(x, p, float("nan"), 1.0)
        with pytest.raises(ValueError, match="^p"):  # another device: refused, never a raw pointer
            f(x, torch.empty(x.shape, dtype=dtype, device="meta"), 0.5, 1.0)
        with pytest.raises(ValueError, match="B"):  # inf: the checked path, which refuses it
            f(x.float(), p.float(), 1.0, float("inf"))
        with pytest.raises(ValueError, match="^B.*finite"):  # beyond fp32: inf in the kernel
            ff.step_combine(x, p, 1.0, 1e39, backend=backend)
        with pytest.raises(ValueError, match="^p"):
            f(x, p[:4], 0.5, 1.0)
        with pytest.raises(ValueError, match="^C"):
            f(x, p, 0.5, 1.0, q=q)
        w = torch.ones(5, requires_grad=True)  # autograd: the recorded op
        y = f(x.float(), p.float() * w[:, None, None], 1.0, 0.5)
        y.sum().backward()
        assert w.grad is not None


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:divide by zero encountered:RuntimeWarning")  # the Triton interpreter's NumPy
@pytest.mark.parametrize("source", ["uniform", "mask", "general"])
@pytest.mark.parametrize("model_output", ["logits", "probs"])
def test_discrete_solver_loop_path_equals_the_per_step_jump(source, model_output):
    # a constant div_free takes the solver's checked-once loop (float rates on the CPU); a
    # callable one runs jump_step per step: same seeds, same rates, the same samples
    V, n_steps = 11, 12
    path = ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(1.5))
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 7, V, generator=g) * 2
    if model_output == "probs":
        logits = torch.softmax(logits, -1)
    p = {"uniform": torch.full((V,), 1 / V), "mask": torch.eye(V)[3],
         "general": torch.softmax(torch.randn(V, generator=g), -1)}[source]
    solver = ff.MixtureDiscreteEulerSolver(lambda x, t: logits, path, V, source_distribution_p=p,
                                           model_output=model_output)
    x0 = torch.randint(0, V, (5, 7), generator=g)
    if source == "mask":
        x0[:, :4] = 3
    for backend in ff.available_backends("cpu"):
        solver.backend = backend
        kw = dict(step_size=1.0 / n_steps, return_intermediates=True, time_grid=torch.tensor([0.0, 0.5, 1.0]),
                  temperature=0.8)
        loop = solver.sample(x0, div_free=0.4, generator=torch.Generator().manual_seed(9), **kw)
        per_step = solver.sample(x0, div_free=lambda t: 0.4, generator=torch.Generator().manual_seed(9), **kw)
        assert torch.equal(loop, per_step), backend
        assert (loop[-1] != x0).any()
    with pytest.raises(ValueError, match="x_init"):
        solver.sample(torch.full((2, 2), V), step_size=0.5)


# ---------------------------------------------------------------- compute_likelihood
def _likelihood_setup():
    import math

    from conftest import time_mlp
    g = torch.Generator().manual_seed(5)
    net, model = time_mlp(g)

    def log_p0(x):
        return -0.5 * (x ** 2).sum(1) - math.log(2 * math.pi)

    return net, model, log_p0, torch.randn(12, 2, generator=g)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_compute_likelihood_matches_flow_matching(exact, method):
    # flow_matching's method, drop-in: the same source points and log-likelihoods (the
    # Hutchinson probe is drawn from torch's generator as flow_matching draws it)
    from flow_matching.solver import ODESolver as FMODESolver
    net, model, log_p0, x1 = _likelihood_setup()
    kw = dict(method=method, exact_divergence=exact, scale=0.7)
    torch.manual_seed(3)
    x0, log_p = ff.ODESolver(model).compute_likelihood(x1, log_p0, 0.125, **kw)
    torch.manual_seed(3)
    x0_fm, log_p_fm = FMODESolver(model).compute_likelihood(x1, log_p0, 0.125, **kw)
    torch.testing.assert_close(x0, x0_fm, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_p, log_p_fm, rtol=1e-6, atol=1e-6)
    assert log_p.shape == (12,) and not log_p.requires_grad
    grid = torch.tensor([1.0, 0.5, 0.0])
    xs, log_p2 = ff.ODESolver(model).compute_likelihood(x1, log_p0, None, method=method, exact_divergence=True,
                                                          time_grid=grid, return_intermediates=True, scale=0.7)
    assert xs.shape == (3, 12, 2) and torch.equal(xs[0], x1) and log_p2.shape == (12,)


def test_compute_likelihood_gradients_and_checks():
    # enable_grad: the log-likelihood is differentiable in the model's parameters (training by
    # maximum likelihood); checked against central differences
    net, model, log_p0, x1 = _likelihood_setup()
    solver = ff.ODESolver(model)

    def mean_log_p(grad):
        return solver.compute_likelihood(x1, log_p0, 0.25, exact_divergence=True, enable_grad=grad)[1].mean()

    mean_log_p(True).backward()
    w = net[0].weight
    eps = 1e-2
    for idx in ((0, 0), (3, 1), (7, 2)):
        with torch.no_grad():
            w[idx] += eps
            up = mean_log_p(False)
            w[idx] -= 2 * eps
            down = mean_log_p(False)
            w[idx] += eps
        fd = (up - down) / (2 * eps)
        assert abs(float(w.grad[idx]) - float(fd)) <= 2e-2 * abs(float(fd)) + 1e-4, (idx, w.grad[idx], fd)
    assert not x1.requires_grad  # the caller's x_1 is left as it was
    with pytest.raises(ValueError, match="^time_grid"):
        ff.ODESolver(model).compute_likelihood(x1, log_p0, 0.25, time_grid=torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="^log_p0"):
        ff.ODESolver(model).compute_likelihood(x1, None, 0.25)
    with pytest.raises(TypeError, match="^x_1"):
        ff.ODESolver(model).compute_likelihood(x1.long(), log_p0, 0.25)


def test_discrete_solver_mask_id_is_the_mask_source():
    """``mask_id`` alone (fastflow's shorthand) samples as the one-hot p0 at that token, draw for
    draw; a p0 that says otherwise, or an id outside the vocabulary, is refused."""
    V, M = 5, 4
    path = ff.MixtureDiscreteProbPath(ff.CondOTScheduler())
    logits = torch.randn(64, 3, V, generator=torch.Generator().manual_seed(2))
    x0 = torch.full((64, 3), M)
    onehot = torch.zeros(V)
    onehot[M] = 1.0
    runs = []
    for kw in (dict(mask_id=M), dict(source_distribution_p=onehot), dict(source_distribution_p=onehot, mask_id=M)):
        solver = ff.MixtureDiscreteEulerSolver(lambda x, t: logits, path, V, model_output="logits", **kw)
        runs.append(solver.sample(x0, 0.1, div_free=1.0, time_grid=torch.tensor([0.0, 0.3]),
                                  generator=torch.Generator().manual_seed(9)))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2]) and (runs[0] != M).any()
    with pytest.raises(ValueError, match="mask_id"):
        ff.MixtureDiscreteEulerSolver(lambda x, t: logits, path, V, source_distribution_p=onehot, mask_id=1)
    with pytest.raises(ValueError, match="mask_id"):
        ff.MixtureDiscreteEulerSolver(lambda x, t: logits, path, V, mask_id=V)


def test_guidance_calls_the_unconditional_branch_with_its_extras_alone():
    """uncond_model_extras replaces model_extras for the unconditional call (an empty dict: a
    call with no extras), so leaving a conditioning key out makes that call unconditional."""
    calls = []

    def model(x, t, label=None, scale=1.0):
        calls.append((label, scale))
        return scale * x + (0.0 if label is None else label)

    x0 = torch.randn(3, 4)
    ff.ODESolver(model).sample(x0, step_size=0.5, guidance_scale=1.0, label=2.0, scale=0.5,
                               uncond_model_extras={"scale": 0.5})
    assert set(calls) == {(2.0, 0.5), (None, 0.5)}
    calls.clear()
    ff.ODESolver(model).sample(x0, step_size=0.5, guidance_scale=1.0, label=2.0, uncond_model_extras={})
    assert set(calls) == {(2.0, 1.0), (None, 1.0)}

def test_solver_keeps_no_per_call_state_and_pickles_after_sampling():
    """flow_matching's solver is stateless between calls: after a guided rk4 ``sample`` and a
    ``compute_likelihood`` the solver's attributes are those it was built with, and it pickles
    (torch.save of a module holding it) and samples the same after a round trip."""
    import io
    import pickle

    solver = ff.ODESolver(Field())
    before = set(vars(solver))
    x0 = torch.randn(3, 6)
    kw = dict(step_size=0.25, method="rk4", guidance_scale=1.0, label=1.0, uncond_model_extras={})
    out = solver.sample(x0, **kw)
    solver.compute_likelihood(x0, lambda x: -x.square().sum(1), 0.5)
    assert set(vars(solver)) == before
    torch.testing.assert_close(pickle.loads(pickle.dumps(solver)).sample(x0, **kw), out, rtol=0, atol=0)
    holder = torch.nn.Module()
    holder.solver = solver
    torch.save(holder, io.BytesIO())


def test_intermediates_are_copied_before_the_model_can_modify_them():
    """A model that modifies its input in place: the states returned are those reached, as
    torchdiffeq copies each one (flow_matching's out[0] is the original x_init)."""
    def model(x, t):
        x.clamp_(-0.5, 0.5)
        return 2 * x + t

    x0 = torch.tensor([[2.0, -3.0], [0.25, 1.0]])
    kw = dict(step_size=0.5, return_intermediates=True, time_grid=torch.linspace(0, 1, 3))
    ours = ff.ODESolver(velocity_model=model).sample(x_init=x0.clone(), **kw)
    theirs = FMODE(velocity_model=model).sample(x_init=x0.clone(), **kw)
    assert torch.equal(ours[0], x0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("step_size", [np.float32(0.25), np.float64(0.25), torch.tensor(0.25),
                                       torch.tensor(0.25, dtype=torch.float64)])
def test_step_size_may_be_a_numpy_scalar_or_a_0d_tensor(step_size):
    """As flow_matching: a NumPy scalar or a 0-d tensor is the float it holds, in each solver;
    a non-positive, non-finite, bool or 1-d one is refused naming step_size."""
    f, x0 = Field(), torch.randn(3, 6)
    torch.testing.assert_close(ff.ODESolver(f).sample(x0, step_size=step_size),
                               FMODE(f).sample(x0, step_size=step_size), rtol=0, atol=0)
    torch.testing.assert_close(ff.ODESolver(f).sample(x0, step_size=step_size),
                               ff.ODESolver(f).sample(x0, step_size=0.25), rtol=0, atol=0)
    rie = ff.RiemannianODESolver(ff.Euclidean(), f)
    torch.testing.assert_close(rie.sample(x0, step_size), rie.sample(x0, 0.25), rtol=0, atol=0)
    V = 4
    disc = ff.MixtureDiscreteEulerSolver(lambda x, t: torch.zeros(*x.shape, V), ff.MixtureDiscreteProbPath(
        ff.CondOTScheduler()), V, model_output="logits")
    x_tok = torch.randint(0, V, (3, 5))
    runs = [disc.sample(x_tok, s, return_intermediates=True, generator=torch.Generator().manual_seed(1))
            for s in (step_size, 0.25)]
    assert torch.equal(*runs) and runs[0].shape == (2, 3, 5)
    for bad in (np.float32(-0.25), torch.tensor(float("nan")), torch.tensor(True), torch.tensor([0.25]), "0.25"):
        for sample in (ff.ODESolver(f).sample, rie.sample):
            with pytest.raises(ValueError, match="^step_size"):
                sample(x0, step_size=bad)
        with pytest.raises(ValueError, match="^step_size"):
            disc.sample(x_tok, step_size=bad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_compute_likelihood_of_half_precision_x1_integrates_in_fp32(dtype):
    """torchdiffeq joins x_1 with flow_matching's fp32 log-determinant state: the model sees fp32
    x, and x_0 and log p come back fp32, equal to flow_matching's."""
    from flow_matching.solver import ODESolver as FMODESolver
    net, model, log_p0, x1 = _likelihood_setup()
    seen = set()

    def spy(x, t, **extras):
        seen.add((x.dtype, t.dtype))
        return model(x, t, **extras)

    results = []
    for solver in (ff.ODESolver, FMODESolver):
        torch.manual_seed(3)
        results.append(solver(spy).compute_likelihood(x1.to(dtype), log_p0, 0.25, method="midpoint"))
    assert seen == {(torch.float32, torch.float32)}
    (x0, log_p), (x0_fm, log_p_fm) = results
    assert x0.dtype == log_p.dtype == torch.float32
    torch.testing.assert_close(x0, x0_fm, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_p, log_p_fm, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["reference", "default", "callable div_free", "float64", "probs"])
def test_discrete_solver_refuses_a_model_output_of_another_vocabulary_size(case):
    """A model with 10 outputs per token for V = 7 (ids up to 9 came back on every path but the
    CPU fast one): refused on every path, naming the model and vocabulary_size."""
    V = 7
    dtype = torch.float64 if case == "float64" else torch.float32
    kw = dict(backend="reference") if case == "reference" else {}

    def model(x, t):
        return torch.softmax(torch.randn(*x.shape, 10, dtype=dtype), -1)

    solver = ff.MixtureDiscreteEulerSolver(model, ff.MixtureDiscreteProbPath(ff.CondOTScheduler()), V,
                                           source_distribution_p=torch.full((V,), 1 / V),
                                           model_output="probs" if case == "probs" else "logits", **kw)
    div_free = (lambda t: 0.5) if case == "callable div_free" else 0.0
    with pytest.raises(ValueError, match="^model.*vocabulary_size"):
        solver.sample(torch.randint(0, V, (2, 50)), step_size=0.1, div_free=div_free)


@pytest.mark.parametrize("grid", [[0.0], [1.0, 0.0], [0.0, 0.7, 0.3, 1.0], [0.0, float("nan"), 1.0]])
def test_discrete_solver_checks_its_time_grid_before_calling_the_model(grid):
    """Without a step size the grid is the steps: a single time, a decreasing, non-monotonic or
    NaN grid is refused naming time_grid, before the first model call."""
    V, calls = 5, []

    def model(x, t):
        calls.append(t)
        return torch.zeros(*x.shape, V)

    solver = ff.MixtureDiscreteEulerSolver(model, ff.MixtureDiscreteProbPath(ff.CondOTScheduler()), V,
                                           model_output="logits")
    with pytest.raises(ValueError, match="^time_grid"):
        solver.sample(torch.zeros(2, 3, dtype=torch.long), None, time_grid=torch.tensor(grid))
    assert not calls


def test_discrete_solver_returns_a_state_per_time_grid_point_with_a_repeated_time():
    """step_size=None and a repeated time (a step of length 0, as flow_matching takes it): one
    state per time_grid point, as flow_matching; the zero-length step leaves the tokens as
    they were, and the last step draws x_1 (a one-hot model: token 3)."""
    from flow_matching.path import MixtureDiscreteProbPath as FMPath
    from flow_matching.solver import MixtureDiscreteEulerSolver as FMSolver
    V = 5

    def model(x, t):
        return torch.eye(V)[3].expand(*x.shape, V)

    x0 = torch.randint(0, V, (4, 6))
    kw = dict(step_size=None, time_grid=torch.tensor([0.2, 0.5, 0.5, 1.0]), return_intermediates=True)
    ours = ff.MixtureDiscreteEulerSolver(model, ff.MixtureDiscreteProbPath(ff.CondOTScheduler()), V).sample(x0, **kw)
    theirs = FMSolver(model, FMPath(fm.CondOTScheduler()), V).sample(x0, **kw)
    assert ours.shape == theirs.shape == (4, 4, 6)
    assert torch.equal(ours[0], x0) and torch.equal(ours[1], ours[2]) and (ours[3] == 3).all()


def test_riemannian_solver_refuses_a_non_finite_time_grid():
    """A NaN time (2 states came back for 3 times) or an infinite one: refused naming time_grid."""
    solver = ff.RiemannianODESolver(ff.Euclidean(), lambda x, t: -x)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="^time_grid"):
            solver.sample(torch.ones(2, 3), None, time_grid=torch.tensor([0.0, bad, 1.0]), return_intermediates=True)


def test_samplers_run_eagerly_inside_a_compiled_function():
    """From a torch.compile review: a compiled function that samples traced the solvers' loops,
    whose times are Python floats: a recompile a time value until Dynamo's limit (with its
    warnings), 6 s of compiling, then half the eager speed. The loops now run eagerly between
    graphs (a model compiled on its own still runs compiled); results equal eager ones."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    net = torch.nn.Linear(2, 2)
    ode = ff.ODESolver(lambda x, t: net(x) * (1 + t))
    V = 5
    discrete = ff.MixtureDiscreteEulerSolver(lambda x, t: torch.softmax(net.weight.sum() + torch.zeros(*x.shape, V), -1),
                                             ff.MixtureDiscreteProbPath(ff.CondOTScheduler()), V)
    x0, tokens = torch.randn(8, 2), torch.randint(0, V, (8, 3))
    counter = CompileCounter()

    def run(x, tok, seed):
        g = torch.Generator().manual_seed(seed)
        return (ode.sample(x, step_size=0.05, method="midpoint") * 2,
                discrete.sample(tok, step_size=0.1, generator=g))

    compiled = torch.compile(run, backend=counter)
    with torch.no_grad():
        for seed in range(3):
            got, want = compiled(x0, tokens, seed), run(x0, tokens, seed)
            torch.testing.assert_close(got[0], want[0])
            assert torch.equal(got[1], want[1])
    assert counter.frame_count <= 2  # (the graphs around the calls, compiled once)


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_model_outputs_on_an_fp32_state(out_dtype, monkeypatch):
    """A model under autocast returns bf16 / fp16 velocities for an fp32 state: each step reads
    them as they are, through the solvers' float-coefficient entry (no fp32 copy of the output,
    no checked path), and keeps the state in fp32. (The checked path's kernels read them as they
    are too: tests/test_cpu_backend.py.)"""
    from fastflow import csrc_backend as cb

    net = torch.nn.Linear(3, 3)
    model = lambda x, t: (net(x) * (1 + t)).to(out_dtype)  # noqa: E731
    x0 = torch.randn(6, 3)
    checked = []
    monkeypatch.setattr(cb, "step_combine", lambda *a, **k: checked.append(1))
    with torch.no_grad():
        got = ff.ODESolver(model, backend="cpu").sample(x0, step_size=0.25, method="midpoint")
        x = x0.clone()
        for k in range(4):
            t = 0.25 * k
            mid = x + 0.125 * model(x, torch.tensor(t)).float()
            x = x + 0.25 * model(mid, torch.tensor(t + 0.125)).float()
    assert got.dtype == torch.float32 and not checked
    torch.testing.assert_close(got, x, rtol=1e-6, atol=1e-6)


def test_a_grid_time_that_rounds_to_a_singular_one_says_so():
    """From a values review: with a bf16 state the model sees t = 0.999 as 1.0, where an
    x1-prediction is singular; the refusal said to use euler, the method already in use."""
    path = ff.AffineProbPath(ff.CondOTScheduler())
    solver = ff.ODESolver(lambda x, t: torch.zeros_like(x), path=path, prediction="x1")
    with pytest.raises(ValueError, match=r"rounds to 1.0 in torch.bfloat16"):
        solver.sample(torch.randn(2, 3).bfloat16(), step_size=0.001, method="euler")
    solver.sample(torch.randn(2, 3), step_size=0.001, method="euler")  # fp32: t = 0.999 is not 1
