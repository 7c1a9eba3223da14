"""Bad input raises ValueError / TypeError naming the argument; nothing is clamped or NaN."""
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
    raises(TypeError, "x_0", p.sample, x_0=torch.ones(4, 3, dtype=torch.float64), x_1=x, t=torch.rand(4))
    raises(TypeError, "generator", p.sample, x_1=x, t=torch.rand(4), generator=3)


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


def test_generalized_kl_jump_must_be_a_tensor():
    import fastflow as ff
    logits = torch.randn(2, 3, 5)
    x = torch.randint(0, 5, (2, 3))
    raises(TypeError, "jump", ff.generalized_kl, logits, x, x, 0.5)
