"""Bad input raises ValueError / TypeError naming the argument; nothing is clamped or NaN."""
import math

import numpy as np
import pytest
import torch

import fastflow as ff

S = ff.CondOTScheduler()


def raises(exc, name, fn, *a, **k):
    with pytest.raises(exc, match=name):
        fn(*a, **k)


def test_path_sample_errors():
    p = ff.CondOTProbPath()
    x = torch.randn(4, 3)
    raises(ValueError, "t", p.sample, x_1=x, t=torch.tensor([0.1, 0.2, 0.3, 1.5]))
    raises(ValueError, "t", p.sample, x_1=x, t=torch.rand(3))
    raises(ValueError, "x_0", p.sample, x_0=torch.randn(4, 2), x_1=x, t=torch.rand(4))
    raises(TypeError, "x_1", p.sample, x_1=torch.ones(4, 3, dtype=torch.long), t=torch.rand(4))
    # float64 runs the reference math; a fused backend asked for says it computes in fp32
    raises(TypeError, "x_0", p.sample, x_0=torch.ones(4, 3, dtype=torch.float64), x_1=x, t=torch.rand(4), backend="cpu")
    raises(TypeError, "generator", p.sample, x_1=x, t=torch.rand(4), generator=3)


def test_diverging_scheduler_coefficients_name_t():
    """From a fuzzing review: t^0.5's derivative at t = 0 (a VP schedule's at t = 1) made the loss
    and dx_t NaN. What does not use the derivative (x_t, an epsilon target) still runs."""
    # a batch of 300: the host check of more than 128 values (NumPy's, which once rounded its
    # bound F64_MAX to fp32's inf and let infinite values through)
    for batch, scheduler, edge in ((2, ff.PolynomialConvexScheduler(0.5), 0.0), (2, ff.VPScheduler(), 1.0),
                                   (300, ff.PolynomialConvexScheduler(0.5), 0.0)):
        x0, x1, v = torch.randn(batch, 3), torch.randn(batch, 3), torch.randn(batch, 3)
        p = ff.AffineProbPath(scheduler)
        s = p.sample(x_0=x0, x_1=x1, t=torch.linspace(0.5, edge, batch))
        raises(ValueError, "t: the scheduler's d_alpha_t", p.loss, v, s)
        raises(ValueError, "t: the scheduler's d_alpha_t", lambda: s.dx_t)
        assert torch.isfinite(p.loss(v, s, target="epsilon")) and torch.isfinite(s.x_t).all()
    x0, x1 = torch.randn(2, 3), torch.randn(2, 3)
    sphere = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    g = ff.GeodesicProbPath(ff.PolynomialConvexScheduler(0.5), ff.Sphere())
    raises(ValueError, "t: the scheduler's", g.sample, sphere(x0), sphere(x1), torch.tensor([0.0, 0.5]))

    class UnusedDerivative(ff.CondOTScheduler):  # the geodesic path differentiates alpha_t itself
        def __call__(self, t):
            out = super().__call__(t)
            return type(out)(alpha_t=out.alpha_t, sigma_t=out.sigma_t, d_alpha_t=out.d_alpha_t * math.nan,
                             d_sigma_t=out.d_sigma_t)

    s = ff.GeodesicProbPath(UnusedDerivative(), ff.Sphere()).sample(sphere(x0), sphere(x1), torch.tensor([0.2, 0.5]))
    assert torch.isfinite(s.dx_t).all()
    solver = ff.ODESolver(lambda x, t: x, ff.AffineProbPath(ff.PolynomialConvexScheduler(0.5)), prediction="x1")
    raises(ValueError, "t: the path's scheduler is not finite at t = 0.0", solver.sample, x0, step_size=0.5)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("n", [1, 128, 129, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_host_value_check_sees_every_value(n, dtype, compiled, monkeypatch):
    """The host check of coefficients and times (the compiled module's, or without it a Python
    list up to 128 values and NumPy past them): every bad value is seen wherever it sits, and
    the bounds are compared exactly (NumPy once rounded F64_MAX to fp32's inf)."""
    from fastflow import _checks
    if not compiled:
        monkeypatch.setattr(_checks, "_compiled_within", None)
    elif _checks._compiled_within is None:
        pytest.skip("fastflow._C is not built")
    top = _checks.F64_MAX
    x = torch.rand(n, dtype=dtype) * 0.5
    assert _checks._host_in_range(x, 0.0, 0.5) and _checks._host_in_range(x.flip(0), -top, top)
    for bad in (0.75, -0.25, math.inf, -math.inf, math.nan):
        for at in {0, n // 2, n - 1}:
            y = x.clone()
            y[at] = bad
            assert not _checks._host_in_range(y, 0.0, 0.5), (bad, at)
            assert _checks._host_in_range(y, -top, top) == math.isfinite(bad), (bad, at)
            assert _checks._host_in_range(y, -math.inf, math.inf) == (not math.isnan(bad)), (bad, at)
    assert _checks._host_in_range(x[::2], 0.0, 0.5) and not _checks._host_in_range(-x[::2] - 1, 0.0, 0.5)


def test_schedulers_of_nan_or_floats_name_the_scheduler():
    """From a fuzzing review: a NaN kappa ran the jump step; Python floats from a custom
    scheduler crashed with an AttributeError."""
    V, logits, x_t = 5, torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))

    class NaNs(ff.PolynomialConvexScheduler):
        def __call__(self, t):
            out = super().__call__(t)
            return type(out)(alpha_t=out.alpha_t * math.nan, sigma_t=out.sigma_t, d_alpha_t=out.d_alpha_t,
                             d_sigma_t=out.d_sigma_t)

    class Floats:
        def __call__(self, t):
            return ff.SchedulerOutput(alpha_t=0.5, sigma_t=0.5, d_alpha_t=1.0, d_sigma_t=-1.0)

    raises(ValueError, "scheduler", ff.jump_step, logits, x_t, 0.5, 0.1, NaNs(2.0))
    kl = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(NaNs(2.0)))
    raises(ValueError, "t: the scheduler's alpha_t / d_alpha_t", kl, logits, x_t, x_t, torch.rand(2))
    kl = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(0.5)))
    raises(ValueError, "t: the scheduler's", kl, logits, x_t, x_t, torch.tensor([0.0, 0.5]))  # (d_kappa: inf)
    raises(TypeError, "scheduler", ff.AffineProbPath(Floats()).sample, x_1=torch.randn(2, 3), t=torch.rand(2))


def test_messages_say_what_is_wrong():
    """From a fuzzing review: a NaN read 'expected a value in [None, None]'; a DDPM table whose
    alpha_bar underflows to 0 failed later as a NaN coefficient 'A'."""
    raises(ValueError, "h: must not be NaN", ff.euler_step, torch.randn(2, 2), torch.randn(2, 2), math.nan)
    raises(ValueError, r"h: expected a value >= 0.0", ff.jump_step, torch.randn(2, 3, 5),
           torch.zeros(2, 3, dtype=torch.long), 0.5, -0.1, S)
    raises(ValueError, "num_steps, beta_end: alpha_bar underflows", ff.DDPMScheduler, 20000, 1e-4, 0.9)
    raises(TypeError, "num_steps", ff.DDPMScheduler, True)
    raises(TypeError, "beta_start", ff.DDPMScheduler, 10, "a")
    assert ff.DDPMScheduler(np.int64(10)).num_steps == 10
    raises(TypeError, "u: Sphere", ff.Sphere().expmap, torch.randn(2, 3), torch.randn(2, 3).bfloat16())
    x = torch.randn(2, 3)  # a generator unused because of explicit noise is still checked
    raises(TypeError, "generator", ff.ddpm_step, x, x, 5, ff.DDPMScheduler(10), noise=x, generator="bad")
    raises(ValueError, "h, guidance_scale", ff.euler_step, x, x, 1e38, x, 10.0)  # h (1 + w) overflows fp32
    raises(ValueError, "h: expected values on cpu, got a meta", ff.euler_step, torch.randn(2, 2), torch.randn(2, 2),
           torch.ones(2, device="meta"))


def test_loss_errors():
    p = ff.CondOTProbPath()
    s = p.sample(x_1=torch.randn(4, 3), t=torch.rand(4))
    raises(ValueError, "reduction", p.loss, torch.randn(4, 3), s, reduction="avg")
    raises(ValueError, "target", p.loss, torch.randn(4, 3), s, target="score")
    raises(ValueError, "v", p.loss, torch.randn(4, 2), s)
    raises(ValueError, "mask", p.loss, torch.randn(4, 3), s, mask=torch.ones(5, 3, dtype=torch.bool))
    raises(TypeError, "mask", p.loss, torch.randn(4, 3), s, mask=torch.ones(4, 3))
    raises(ValueError, "weight", p.loss, torch.randn(4, 3), s, weight=torch.ones(3))


def test_discrete_errors():
    V = 5
    logits, xt = torch.randn(2, 3, V), torch.randint(0, V, (2, 3))
    raises(ValueError, "x_t", ff.jump_step, logits, xt + V, 0.5, 0.1, S)
    raises(ValueError, "x_t", ff.jump_step, logits, xt - V, 0.5, 0.1, S)
    raises(ValueError, "logits", ff.jump_step, torch.randn(2, 4, V), xt, 0.5, 0.1, S)
    raises(TypeError, "x_t", ff.jump_step, logits, xt.float(), 0.5, 0.1, S)
    raises(ValueError, "t", ff.jump_step, logits, xt, 1.5, 0.1, S)
    raises(ValueError, "h", ff.jump_step, logits, xt, 0.5, -0.1, S)
    raises(ValueError, "temperature", ff.jump_step, logits, xt, 0.5, 0.1, S, temperature=0.0)
    raises(ValueError, "source", ff.jump_step, logits, xt, 0.5, 0.1, S, source="gaussian")
    raises(ValueError, "mask_id", ff.jump_step, logits, xt, 0.5, 0.1, S, source="mask", mask_id=V)
    raises(ValueError, "source", ff.jump_step, logits, xt, 0.5, 0.1, S, div_free=1.0, source=torch.ones(V + 1) / (V + 1))
    raises(ValueError, "source", ff.jump_step, logits, xt, 0.5, 0.1, S, div_free=1.0, source=torch.ones(V))
    raises(ValueError, "div_free", ff.jump_step, logits, xt, 0.5, 0.1, S, div_free=-1.0)
    raises(ValueError, "x_1", ff.mixture_cross_entropy, logits, xt + V)
    raises(ValueError, "reduction", ff.mixture_cross_entropy, logits, xt, reduction="avg")
    raises(ValueError, "logits", ff.mixture_cross_entropy, torch.randn(2, 4, V), xt)
    path = ff.MixtureDiscreteProbPath(S)
    raises(ValueError, "vocab_size", path.sample, x_1=xt, t=torch.rand(2))
    raises(ValueError, "mask_id", path.sample, x_1=xt, t=torch.rand(2), source="mask")
    raises(ValueError, "source", path.sample, x_1=xt, t=torch.rand(2), source="normal")


def test_solver_errors():
    def model(x, t):
        return x

    solver = ff.ODESolver(model)
    x = torch.randn(2, 3)
    raises(ValueError, "method", solver.sample, x, step_size=0.1, method="nope") if not _has_torchdiffeq() else None
    raises(ValueError, "step_size", solver.sample, x, step_size=-0.1)
    raises(ValueError, "time_grid", solver.sample, x, step_size=0.1, time_grid=torch.tensor([0.0]))
    raises(ValueError, "uncond_model_extras", solver.sample, x, step_size=0.1, guidance_scale=1.0)
    raises(ValueError, "prediction", ff.ODESolver, model, prediction="score")
    raises(ValueError, "path", ff.ODESolver, model, prediction="x1")
    raises(ValueError, "vocabulary_size", ff.MixtureDiscreteEulerSolver, model, ff.MixtureDiscreteProbPath(S), 0)
    raises(ValueError, "model_output", ff.MixtureDiscreteEulerSolver, model, ff.MixtureDiscreteProbPath(S), 4,
           model_output="scores")
    raises(ValueError, "k", ff.ddpm_step, x, x, 0, ff.DDPMScheduler(10))
    raises(ValueError, "k_prev", ff.ddim_step, x, x, 3, 5, ff.DDPMScheduler(10))


def _has_torchdiffeq():
    try:
        import torchdiffeq  # noqa: F401
        return True
    except ImportError:
        return False


def test_step_errors():
    x = torch.randn(3, 4)
    raises(ValueError, "p", ff.step_combine, x, torch.randn(3, 5), 1.0, 0.1)
    raises(ValueError, "B", ff.step_combine, x, x, 1.0, torch.ones(4))
    raises(TypeError, "A", ff.step_combine, x, x, "one", 0.1)
    raises(ValueError, "v_uncond", ff.euler_step, x, x, 0.1, guidance_scale=1.0)
    raises(ValueError, "rng", ff.step_combine, x, x, 1.0, 0.1, N=1.0)
    # coefficients: float, tensor, bool and NaN, through the op and through euler_step's own checks
    raises(ValueError, "B", ff.step_combine, x, x, 1.0, float("nan"))
    raises(ValueError, "B", ff.step_combine, x, x, 1.0, torch.tensor([0.1, float("nan"), 0.2]))
    raises(ValueError, "h", ff.euler_step, x, x, float("nan"))
    raises(ValueError, "h", ff.euler_step, x, x, torch.full((3,), float("nan")))
    raises(TypeError, "h", ff.euler_step, x, x, True)
    raises(TypeError, "h", ff.euler_step, x, x, "0.1")
    raises(ValueError, "guidance_scale", ff.euler_step, x, x, 0.1, v_uncond=x, guidance_scale=float("nan"))


def test_unknown_backend():
    x = torch.randn(3, 4)
    raises(ValueError, "backend", ff.euler_step, x, x, 0.1, backend="metal")
    raises(ValueError, "backend", ff.set_backend, "fastest")


def test_generalized_kl_jump_is_a_checked_per_sample_coefficient():
    logits = torch.randn(2, 3, 5)
    x = torch.randint(0, 5, (2, 3))
    want = ff.generalized_kl(logits, x, x, torch.full((2,), 0.5), reduction="none")
    torch.testing.assert_close(ff.generalized_kl(logits, x, x, 0.5, reduction="none"), want)
    raises(TypeError, "jump", ff.generalized_kl, logits, x, x, "0.5")
    for bad in (torch.ones(6), torch.ones(3), torch.ones(1, 2)):  # not one per sample: never read past it
        raises(ValueError, "jump", ff.generalized_kl, logits, x, x, bad)
    for bad in (float("nan"), float("inf")):
        raises(ValueError, "jump", ff.generalized_kl, logits, x, x, torch.tensor([0.5, bad]))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_low_level_ops_check_their_coefficients_and_rng(backend):
    """The public ops read a coefficient per sample and (seed, offset): a tensor of another
    length is refused (the compiled kernels would read past it), and so are NaN / inf."""
    if backend not in ff.available_backends("cpu"):
        pytest.skip(f"{backend} is not available here")
    x1, x0, v = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    ones, rng = torch.ones(4), torch.tensor([5, 0])
    ok = ff.affine_path_sample(x1, x0, 0.5, ones, backend=backend)
    torch.testing.assert_close(ok, 0.5 * x1 + x0)
    for name, kw in (("a", dict(a=torch.ones(3))), ("b", dict(b=torch.ones(5))), ("a", dict(a=float("nan"))),
                     ("b", dict(b=torch.tensor([1.0, 1.0, float("inf"), 1.0]))), ("s", dict(s=torch.ones(2))),
                     ("rng", dict(rng=torch.tensor([5]))), ("rng", dict(rng=torch.tensor([5.0, 0.0])))):
        args = dict(a=ones, b=ones, s=None, rng=rng) | kw
        raises((ValueError, TypeError), name, ff.affine_path_sample, x1, None if "s" in kw else x0, args["a"],
               args["b"], s=args["s"], rng=args["rng"], backend=backend)
    for name, kw in (("c", dict(c=torch.ones(3))), ("d", dict(d=float("inf"))), ("e", dict(e=torch.ones(2)))):
        args = dict(c=ones, d=ones, e=None) | kw
        raises(ValueError, name, ff.affine_path_loss, v, x1, x0, args["c"], args["d"], args["e"], rng=rng,
               backend=backend)
    tok = torch.randint(0, 5, (4, 3))
    raises(ValueError, "kappa", ff.mixture_path_sample, tok, None, torch.ones(2), rng, vocab_size=5, backend=backend)
    raises(ValueError, "kappa", ff.mixture_path_sample, tok, None, 1.5, rng, vocab_size=5, backend=backend)
    raises(ValueError, "rng", ff.mixture_path_sample, tok, None, 0.5, rng[:1], vocab_size=5, backend=backend)


def test_step_sizes_must_be_finite():
    x = torch.randn(3, 4)
    for h in (float("inf"), torch.tensor([0.1, float("inf"), 0.1])):
        raises(ValueError, "h", ff.euler_step, x, x, h)
    raises(ValueError, "guidance_scale", ff.euler_step, x, x, 0.1, x, float("inf"))
    raises(ValueError, "h", ff.jump_step, torch.randn(3, 5), torch.zeros(3, dtype=torch.long), 0.5, float("inf"), S)
    raises(ValueError, "div_free", ff.jump_step, torch.randn(3, 5), torch.zeros(3, dtype=torch.long), 0.5, 0.1, S,
           div_free=float("inf"))


def test_mixture_path_sample_checks_token_ids():
    dp = ff.MixtureDiscreteProbPath(S)
    t = torch.rand(2)
    raises(ValueError, "x_1", dp.sample, x_1=torch.tensor([[0, 7], [1, 2]]), t=t, vocab_size=5)
    raises(ValueError, "x_1", dp.sample, x_1=torch.tensor([[0, -3], [1, 2]]), t=t, vocab_size=5)
    raises(ValueError, "x_0", dp.sample, x_0=torch.tensor([[0, 5], [1, 2]]), x_1=torch.zeros(2, 2, dtype=torch.long),
           t=t, vocab_size=5)
    raises(ValueError, "vocab_size", dp.sample, x_1=torch.zeros(2, 2, dtype=torch.long), t=t, vocab_size=2.5)
    # (a fuzzing review: past 2^31 the uniform draws wrapped to negative ids in the reference
    # and to [0, 2^32) in the cpu kernel; the path now refuses it as the public op does)
    for be in ("reference", "cpu"):
        raises(ValueError, r"vocab_size: expected an int in \[1, 2147483647\]", dp.sample,
               x_1=torch.zeros(2, 2, dtype=torch.long), t=t, vocab_size=2**33, backend=be)
    raises(ValueError, "vocab_size", dp.sample, x_1=torch.zeros(2, 2, dtype=torch.int32), t=t, vocab_size=2**31)


def test_jump_step_needs_a_convex_scheduler():
    raises(ValueError, "scheduler", ff.jump_step, torch.randn(3, 5), torch.zeros(3, dtype=torch.long), 0.5, 0.1,
           ff.VPScheduler())


def test_ddpm_times_and_steps_are_checked_not_clamped():
    s = ff.DDPMScheduler(10)
    raises(ValueError, "t", s, torch.tensor([2.0, 0.5]))
    raises(ValueError, "t", s, torch.tensor([-1.0, 0.5]))
    x = torch.randn(2, 3)
    raises(ValueError, "k", ff.ddpm_step, x, x, torch.tensor([3, 4, 5]), s)
    raises(ValueError, "k", ff.ddpm_step, x, x, torch.tensor([3, 11]), s)
    raises(TypeError, "k", ff.ddpm_step, x, x, torch.tensor([3.0, 4.0]), s)
    raises(ValueError, "k_prev", ff.ddim_step, x, x, 5, torch.tensor([1, 2, 3]), s)
    raises(ValueError, "k_prev", ff.ddim_step, x, x, torch.tensor([5, 4]), torch.tensor([1, 4]), s)
    # a per-sample tensor of steps gives each sample the step of its int
    z = torch.randn(2, 3)
    both = ff.ddpm_step(x, x, torch.tensor([3, 7]), s, noise=z)
    for i, k in enumerate((3, 7)):
        torch.testing.assert_close(both[i], ff.ddpm_step(x[i:i + 1], x[i:i + 1], k, s, noise=z[i:i + 1])[0])
    both = ff.ddim_step(x, x, torch.tensor([3, 7]), torch.tensor([0, 6]), s)
    for i, (k, j) in enumerate(((3, 0), (7, 6))):
        torch.testing.assert_close(both[i], ff.ddim_step(x[i:i + 1], x[i:i + 1], k, j, s)[0])


def test_prediction_conversions_check_t():
    p = ff.CondOTProbPath()
    x = torch.randn(2, 3)
    raises(ValueError, "t", p.target_to_velocity, x, x, torch.tensor([5.0, 0.5]))
    raises(ValueError, "t", p.target_to_velocity, x, x, torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(p.target_to_velocity(x, x, torch.tensor(0.5)),
                               p.target_to_velocity(x, x, torch.tensor([0.5, 0.5])))


class _ColumnCondOT:
    """A convex scheduler that is not a ConvexScheduler and answers in [B, 1] columns."""

    def __call__(self, t):
        t = t.reshape(-1, 1)
        return ff.SchedulerOutput(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))


def test_schedulers_answering_in_columns_work_like_condot():
    """Any scheduler object with one value per sample (here [B, 1]) drives the mixture path, its
    loss and the jump step as CondOT does; the jump step's convexity is read off its outputs."""
    t = torch.tensor([0.2, 0.7])
    x1 = torch.randint(0, 6, (2, 5))
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    mine, ref = ff.MixtureDiscreteProbPath(_ColumnCondOT()), ff.MixtureDiscreteProbPath(ff.CondOTScheduler())
    a = mine.sample(x_1=x1, t=t, vocab_size=6, generator=g())
    b = ref.sample(x_1=x1, t=t, vocab_size=6, generator=g())
    assert torch.equal(a.x_t, b.x_t)
    logits = torch.randn(2, 5, 6)
    torch.testing.assert_close(ff.MixturePathGeneralizedKL(mine)(logits, x1, a.x_t, t),
                               ff.MixturePathGeneralizedKL(ref)(logits, x1, a.x_t, t))
    steps = [ff.jump_step(logits, a.x_t, t, 0.2, s, generator=g()) for s in (_ColumnCondOT(), ff.CondOTScheduler())]
    assert torch.equal(steps[0], steps[1])


def test_empty_environment_variables_are_unset():
    import os
    import subprocess
    import sys
    env = {**os.environ, "FASTFLOW_BACKEND": "", "FASTFLOW_CPU_ISA": ""}
    assert subprocess.run([sys.executable, "-c", "import fastflow as ff; assert ff.get_backend() == 'auto'"],
                          env=env).returncode == 0


def test_internal_entries_check_coefficient_lengths():
    """A torchcfm matcher whose coefficients are not one per sample is refused before a kernel
    reads them (they are computed, not user-given: no value checks)."""
    class Bad(ff.ConditionalFlowMatcher):
        def coefficients(self, t):
            c = super().coefficients(t)
            return dict(c, b=torch.ones(3))
    x = torch.randn(4, 2)
    raises(ValueError, "b", Bad().sample_location_and_conditional_flow, x, x)


def test_mixture_path_sample_needs_a_vocabulary_and_rng_for_a_uniform_source():
    x1 = torch.randint(0, 8, (2, 6))
    raises(ValueError, "vocab_size", ff.mixture_path_sample, x1, None, 0.3, torch.tensor([1, 0]))
    raises(ValueError, "rng", ff.mixture_path_sample, x1, None, 0.5, None, vocab_size=8, noise=torch.rand(2, 6))
    out = ff.mixture_path_sample(x1, None, 0.5, None, mask_id=8, noise=torch.rand(2, 6))  # no draw: no rng
    assert ((out == x1) | (out == 8)).all()
    import numpy as np
    out = ff.mixture_path_sample(x1, None, 0.5, torch.tensor([1, 0]), vocab_size=np.int64(8))  # an integer type
    assert ((out >= 0) & (out < 8)).all()


def test_step_combine_rng_and_out_errors():
    """From fuzzing reviews: an unchecked rng was read past its end; an out= that overlaps an
    input without being it gave wrong numbers; out= silently dropped a gradient, wrote over a
    parameter, or wrote an inference tensor outside inference_mode."""
    x, p = torch.randn(3, 5), torch.randn(3, 5)
    raises(ValueError, "rng", ff.step_combine, x, p, 1.0, 0.1, N=1.0, rng=torch.tensor([5]))
    raises(TypeError, "rng", ff.step_combine, x, p, 1.0, 0.1, N=1.0, rng=torch.tensor([1.5, 2.5]))
    buf = torch.randn(4, 5)
    for out in (buf[1:], buf.view(-1)[2:17].view(3, 5)):  # shifted by a row; by two elements
        raises(ValueError, "out", ff.step_combine, buf[:3], p, 2.0, 1.0, out=out)
    raises(ValueError, "out", ff.euler_step, buf[:3], p, 0.1, out=buf[1:])  # the float fast path too
    raises(ValueError, "out", ff.step_combine, x, buf[:3], 2.0, 1.0, out=buf[1:])
    raises(ValueError, "out", ff.step_combine, x, p, 2.0, 1.0, out=torch.zeros(1, 5).expand(3, 5))
    y = x.clone()
    torch.testing.assert_close(ff.step_combine(y, p, 2.0, 1.0, out=y), 2 * x + p)  # in place: allowed
    pair = torch.randn(5, 2)  # interleaved columns share a span but no element: allowed, as torch does
    ff.step_combine(pair[:, 0], pair[:, 0], 1.0, 1.0, out=pair[:, 1])
    raises(ValueError, "out", ff.step_combine, x.clone().requires_grad_(), p, 1.0, 0.1, out=torch.empty(3, 5))
    # an out that requires grad: a parameter overwritten, or a graph's value replaced behind it
    w = torch.zeros(3, 5, requires_grad=True)
    raises(ValueError, "out", ff.euler_step, x, p, 0.1, out=w)
    raises(ValueError, "out", ff.step_combine, x, p, 0.5, 0.5, out=w * 2)
    with torch.inference_mode():
        frozen = torch.zeros(3, 5)
    for op in (lambda: ff.euler_step(x, p, 0.1, out=frozen), lambda: ff.step_combine(x, p, 0.5, 0.5, out=frozen)):
        raises(ValueError, "inference", op)
        assert (frozen == 0).all()
    with torch.inference_mode():
        torch.testing.assert_close(ff.euler_step(x, p, 0.1, out=frozen), x + 0.1 * p)


def test_solver_grids_are_checked():
    """From a fuzzing review: a tiny step_size hung building 10^12 times, a huge or infinite one
    returned x_init untouched, a negative one did nothing, 0 divided by zero, and a time grid
    that goes back and forth was integrated as something else."""
    x = torch.randn(4, 2)
    ode = ff.ODESolver(lambda x, t: -x)
    disc = ff.MixtureDiscreteEulerSolver(lambda x, t: torch.full((*x.shape, 5), 0.2),
                                         ff.MixtureDiscreteProbPath(ff.PolynomialConvexScheduler(2.0)), 5)
    rie = ff.RiemannianODESolver(ff.Euclidean(), lambda x, t: -x)
    tokens = torch.zeros(4, 3, dtype=torch.long)
    for bad in (0.0, -0.1, float("inf"), float("nan"), True, 1e-12):
        raises(ValueError, "step_size", ode.sample, x, step_size=bad)
        raises(ValueError, "step_size", disc.sample, tokens, step_size=bad)
        raises(ValueError, "step_size", rie.sample, x, step_size=bad)
    raises(ValueError, "time_grid", ode.sample, x, time_grid=torch.tensor([0.0, 1.0, 0.5]))
    raises(ValueError, "time_grid", ode.sample, x, time_grid=torch.tensor([0.0, float("inf")]))
    # a step larger than the interval is one step (fp32 rounded 1 / 1e8 + 1 to 1: no step at all)
    torch.testing.assert_close(ode.sample(x, step_size=1e8), 0 * x)
    torch.testing.assert_close(ode.sample(x, step_size=2.0), 0 * x)


def test_ode_model_gets_time_in_the_state_dtype():
    """As torchdiffeq hands it to flow_matching's models: a bf16 model with a bf16 state, a
    float64 grid with an fp32 state (both failed in the model's first matmul)."""
    seen = []

    def model(x, t):
        seen.append(t.dtype)
        return -x

    solver = ff.ODESolver(model)
    for dtype, grid in ((torch.bfloat16, torch.tensor([0.0, 1.0])), (torch.float32, torch.tensor([0.0, 1.0]).double())):
        seen.clear()
        solver.sample(torch.randn(4, 2, dtype=dtype), step_size=0.25, method="midpoint", time_grid=grid)
        assert set(seen) == {dtype}
    # a prediction is converted at the t the model saw: x1_hat = x + (1 - t) is velocity 1 exactly
    # (converted at the grid's t, bf16's 0.98828125 for 0.99 gave 17% more)
    x1_model = ff.ODESolver(lambda x, t: x + (1 - t), path=ff.CondOTProbPath(), prediction="x1")
    y = x1_model.sample(torch.zeros(4, 2, dtype=torch.bfloat16), time_grid=torch.tensor([0.99, 0.995]))
    assert float(y[0, 0]) == float(torch.tensor(0.005, dtype=torch.bfloat16))


def test_times_broadcast_against_the_data_are_one_per_sample():
    """flow_matching's conversions take t of shape [B, 1, 1, 1] (broadcast against images)."""
    from flow_matching.path import AffineProbPath as FMPath
    from flow_matching.path.scheduler import CondOTScheduler as FMCondOT
    x, pred = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = torch.tensor([0.1, 0.4, 0.6, 0.8]).view(4, 1, 1, 1)
    ours, theirs = ff.AffineProbPath(ff.CondOTScheduler()), FMPath(FMCondOT())
    for name in ("target_to_velocity", "epsilon_to_velocity", "velocity_to_target"):
        torch.testing.assert_close(getattr(ours, name)(pred, x, t), getattr(theirs, name)(pred, x, t))
    t_c = torch.rand(4, 3, 1, 1) * 0.8 + 0.1  # one time per channel: broadcast, as flow_matching does
    torch.testing.assert_close(ours.target_to_velocity(pred, x, t_c), theirs.target_to_velocity(pred, x, t_c))
    raises(ValueError, "t", ours.target_to_velocity, pred, x, torch.rand(4, 2, 1, 1))


def test_discrete_arguments_that_used_to_wrap_or_be_ignored():
    """From the fuzzing review: explicit uniforms outside [0, 1] gave negative token ids, a uint8
    out= wrapped them, mask_id / vocab_size past the tokens' dtype wrapped, a temperature that is
    0 in fp32 reached the kernel, an invalid constant p0 was taken for a uniform one, and NaN /
    inf settings went through."""
    V, logits, x_t = 7, torch.randn(2, 3, 7), torch.randint(0, 7, (2, 3))
    S2 = ff.PolynomialConvexScheduler(2.0)
    bad_token = torch.rand(2, 3, 3)
    bad_token[0, 0, 2] = -5.0
    raises(ValueError, "noise.token", ff.jump_step, logits, x_t, 0.5, 0.1, S2,
           noise=ff.JumpNoise(bad_token, torch.rand(2, 3, V)))
    raises(ValueError, "noise.race", ff.jump_step, logits, x_t, 0.5, 0.1, S2,
           noise=ff.JumpNoise(torch.rand(2, 3, 3), torch.full((2, 3, V), float("nan"))))
    raises(TypeError, "out", ff.jump_step, logits, x_t, 0.5, 0.1, S2, out=torch.empty(2, 3, dtype=torch.uint8))
    for temperature in (1e-50, 1e-37, 1e38, float("inf"), float("nan"), 0.0, True):  # (1e38: 1 / T subnormal;
        # 1e-37: z / T overflowed for logits from 40, and the first +inf won every race)
        raises(ValueError, "temperature", ff.jump_step, logits, x_t, 0.5, 0.1, S2, temperature=temperature)
    x_1, rng = torch.randint(0, V, (2, 3), dtype=torch.int32), torch.tensor([1, 0])
    raises(ValueError, "mask_id", ff.mixture_path_sample, x_1, None, 0.5, rng, mask_id=2**32 + 7)
    raises(ValueError, "vocab_size", ff.mixture_path_sample, x_1, None, 0.5, rng, vocab_size=2**33)
    raises(ValueError, "vocab_size", ff.mixture_path_sample, x_1.long(), None, 0.5, rng, vocab_size=2**40)
    # ((w V) >> 32 overflowed the reference's int64 and Triton's umulhi past 2^31)
    raises(ValueError, "vocab_size", ff.mixture_path_sample, x_1.long(), None, 0.5, rng, vocab_size=2**31)
    wide = ff.mixture_path_sample(x_1, torch.full((2, 3), 2**32 + 5), 0.0, rng)  # int32 x_1, int64 x_0
    assert wide.dtype == torch.int64 and (wide == 2**32 + 5).all()  # (was truncated to 5)
    raises(ValueError, "noise", ff.mixture_path_sample, x_1, None, 0.5, rng, vocab_size=V,
           noise=torch.full((2, 3), 1.5))
    raises(TypeError, "ignore_index", ff.mixture_cross_entropy, logits, x_t, ignore_index=None)
    raises(ValueError, "ignore_index", ff.mixture_cross_entropy, logits, x_t, ignore_index=2**63)
    path = ff.MixtureDiscreteProbPath(S2)
    for p0 in (torch.zeros(V), torch.full((V,), 5.0), torch.full((V,), -1.0)):
        raises(ValueError, "source_distribution_p", ff.MixtureDiscreteEulerSolver, lambda x, t: logits, path, V,
               source_distribution_p=p0)
    # a bf16 p0 is as close to summing to 1 as bf16 rounding allows (1/3 each: 1.00195)
    ff.MixtureDiscreteEulerSolver(lambda x, t: logits, path, 3, source_distribution_p=torch.full((3,), 1 / 3).bfloat16())
    for sigma in (float("nan"), float("inf")):
        raises(ValueError, "sigma", ff.ConditionalFlowMatcher, sigma)
    raises(ValueError, "guidance_scale", ff.ODESolver(lambda x, t: x).sample, torch.randn(2, 2), step_size=0.5,
           guidance_scale=float("nan"), uncond_model_extras={})
    raises(TypeError, "scheduler", ff.ddim_step, torch.randn(2, 2), torch.randn(2, 2), 5, 3, S)
    x = torch.randn(2, 2)
    raises(ValueError, "C", ff.step_combine, x, x, 1.0, 1.0, C=0.5)  # no q: C would be ignored
    raises(ValueError, "noise", ff.step_combine, x, x, 1.0, 1.0, noise=x)  # no N


def test_a_model_output_of_another_shape_is_named():
    raises(ValueError, "velocity_model", ff.ODESolver(lambda x, t: torch.ones(1, 2)).sample, torch.randn(4, 2),
           step_size=0.5)


def test_out_overlapping_an_input_of_another_dtype_is_refused():
    """From a review: the float-coefficient fast path took an input that starts where out does as
    out itself; a bf16 view of an fp32 out's memory is not, and writing out overwrote elements of
    it not yet read (silently wrong). It now takes the checked path, which refuses it."""
    from fastflow.ops.step_combine import step_combine

    out, x = torch.randn(1, 8), torch.randn(1, 8)
    p = out.view(torch.bfloat16)[:, :8]
    assert p.data_ptr() == out.data_ptr() and p.is_contiguous()
    for backend in ("cpu", "reference"):
        raises(ValueError, "out: shares memory with p", step_combine, x, p, 1.0, 1.0, out=out, backend=backend)
    # a bf16 view with out's pointer, shape and strides, per-sample coefficients (the checked path,
    # which took it for out itself: the kernels read elements of p already overwritten)
    B, D = 4, 64
    out, x = torch.randn(B, D), torch.randn(B, D)
    p = out.view(torch.bfloat16).reshape(-1)[:B * D].view(B, D)
    assert p.data_ptr() == out.data_ptr() and p.stride() == out.stride()
    for backend in ("cpu", "reference"):
        raises(ValueError, "out: shares memory with p", step_combine, x, p, torch.rand(B), torch.rand(B),
               out=out, backend=backend)


def test_generators_are_checked_wherever_they_are_taken():
    """From a random-number review: path.sample with x_0 given took any value as a generator, and
    torchcfm's sample read generator.device before checking it (AttributeError). A generator of
    another device than the data's is refused, as torch's ops refuse it (the seed would need a
    copy: a host sync, or a non-blocking one the CPU kernels could read before it lands)."""
    x, t = torch.randn(4, 3), torch.rand(4)
    raises(TypeError, "generator: expected a torch.Generator", ff.CondOTProbPath().sample, x_0=x, x_1=x, t=t,
           generator="bad")
    raises(TypeError, "generator: expected a torch.Generator", ff.ConditionalFlowMatcher(0.1).sample, x, x,
           generator="bad")
    from fastflow import _rng  # (a CPU-only torch makes no generator of another device: data on meta)

    for draw in (_rng.new_rng, lambda device, g: _rng.rng_unless(torch.zeros(1), device, g)):
        raises(ValueError, "generator: it draws on cpu, the data are on meta", draw, torch.device("meta"),
               torch.Generator())


def test_jump_step_refuses_an_infinite_rate():
    """From a discrete review: t^0.5's d_kappa is infinite at t = 0, and the jump step took the
    infinite rate as 'jump': every token jumped in the first step of a grid from 0 (flow_matching's
    NaN rate jumps none; the exact path jumps sqrt(h) of them). It now raises naming t."""
    sched = ff.PolynomialConvexScheduler(0.5)
    logits, x_t = torch.randn(3, 5), torch.zeros(3, dtype=torch.long)
    for backend in ("reference", "cpu"):
        raises(ValueError, "t: the scheduler's", ff.jump_step, logits, x_t, 0.0, 0.02, sched, backend=backend)
    solver = ff.MixtureDiscreteEulerSolver(lambda x, t: torch.softmax(torch.zeros(*x.shape, 5), -1),
                                           ff.MixtureDiscreteProbPath(sched), 5)
    raises(ValueError, "t: the scheduler's", solver.sample, torch.zeros(2, 3, dtype=torch.long), step_size=0.25)
    assert solver.sample(torch.zeros(2, 3, dtype=torch.long), step_size=0.25,
                         time_grid=torch.tensor([0.01, 1.0])).shape == (2, 3)  # (a grid after 0 runs)


def test_jump_step_out_is_checked_as_every_out():
    """From a layout review: jump_step checked out='s dtype and shape only, after the step: an
    expanded or inference-mode out raised torch's RuntimeError from copy_, and one that overlaps
    x_t shifted by an element passed. Now the ValueErrors of every other out=, before the step."""
    S = ff.PolynomialConvexScheduler(2.0)
    z, xt = torch.randn(2, 3, 5), torch.randint(0, 5, (2, 3))
    raises(ValueError, "out: its elements share memory", ff.jump_step, z, xt, 0.5, 0.1, S,
           out=torch.zeros(3, dtype=torch.long).expand(2, 3))
    with torch.inference_mode():
        frozen = torch.zeros(2, 3, dtype=torch.long)
    raises(ValueError, "out: an inference tensor", ff.jump_step, z, xt, 0.5, 0.1, S, out=frozen)
    buf = torch.randint(0, 5, (7,))
    raises(ValueError, "out: shares memory with x_t", ff.jump_step, z, buf[:6].view(2, 3), 0.5, 0.1, S,
           out=buf[1:].view(2, 3))
    new = ff.jump_step(z, xt, 0.5, 0.1, S, out=xt, generator=torch.Generator().manual_seed(1))  # in place
    assert new is xt


def test_coefficients_that_overflow_are_named_as_the_caller_knows_them():
    """From a values review: guidance_scale = 1e39 passed its check and failed as "B: expected a
    finite value", and a DDIM step over a table whose alpha_bar underflows as "A: ..." (names
    internal to step_combine)."""
    model = lambda x, t, **kw: torch.ones_like(x)  # noqa: E731
    raises(ValueError, "guidance_scale: expected a float in", ff.ODESolver(model).sample, torch.zeros(2, 3),
           step_size=0.5, guidance_scale=1e39, uncond_model_extras={})
    sched = ff.DDPMScheduler(num_steps=50000)
    x = torch.randn(2, 3)
    raises(ValueError, r"scheduler \(the DDIM coefficient of x", ff.ddim_step, x, x, 50000, 1, sched)
