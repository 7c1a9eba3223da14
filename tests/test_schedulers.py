import math

import pytest
import torch

import fastflow as ff
from flow_matching.path import scheduler as fm

T = torch.linspace(0.01, 0.99, 23)
PAIRS = [
    (ff.CondOTScheduler(), fm.CondOTScheduler()),
    (ff.PolynomialConvexScheduler(2.5), fm.PolynomialConvexScheduler(2.5)),
    (ff.VPScheduler(), fm.VPScheduler()),
    (ff.LinearVPScheduler(), fm.LinearVPScheduler()),
    (ff.CosineScheduler(), fm.CosineScheduler()),
]


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=lambda s: type(s).__name__)
def test_matches_flow_matching(ours, theirs):
    a, b = ours(T), theirs(T)
    for k in ("alpha_t", "sigma_t", "d_alpha_t", "d_sigma_t"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("s", [p[0] for p in PAIRS] + [ff.OTSigmaMinScheduler(0.01), ff.DDPMScheduler()],
                         ids=lambda s: type(s).__name__)
def test_derivatives_are_derivatives(s):
    t = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    eps = 1e-6 if not isinstance(s, ff.DDPMScheduler) else 1e-3
    out, hi, lo = s(t), s(t + eps), s(t - eps)
    tol = 1e-4 if not isinstance(s, ff.DDPMScheduler) else 2e-2
    for v, d in (("alpha_t", "d_alpha_t"), ("sigma_t", "d_sigma_t")):
        fd = (getattr(hi, v) - getattr(lo, v)) / (2 * eps)
        torch.testing.assert_close(getattr(out, d), fd, rtol=tol, atol=tol)


def test_closed_forms():
    t = torch.tensor([0.3])
    assert math.isclose(float(ff.CosineScheduler()(t).alpha_t), math.sin(math.pi * 0.15), rel_tol=1e-6)
    s = ff.OTSigmaMinScheduler(0.1)(t)
    assert math.isclose(float(s.sigma_t), 1 - 0.9 * 0.3, rel_tol=1e-6)
    K = 1000
    d = ff.DDPMScheduler(K)
    assert math.isclose(float(d.alpha_bar[K]), float(torch.prod(1 - torch.linspace(1e-4, 0.02, K, dtype=torch.float64))))


def test_bad_polynomial():
    with pytest.raises(ValueError, match="n"):
        ff.PolynomialConvexScheduler(-1)


def test_schedule_transformed_model_matches_flow_matching():
    # a model trained on one scheduler sampled on another: flow_matching's velocities at
    # scalar times, per-sample times (which flow_matching's does not take) row by row, and the
    # same samples through either solver
    from flow_matching.path import scheduler as fms
    from flow_matching.solver import ODESolver as FMODESolver

    from fastflow.path.scheduler import ScheduleTransformedModel

    from conftest import time_mlp

    g = torch.Generator().manual_seed(6)
    _, model = time_mlp(g)

    x = torch.randn(6, 2, generator=g)
    pairs = [(ff.CondOTScheduler(), ff.CosineScheduler(), fms.CondOTScheduler(), fms.CosineScheduler()),
             (ff.CosineScheduler(), ff.CondOTScheduler(), fms.CosineScheduler(), fms.CondOTScheduler()),
             (ff.CondOTScheduler(), ff.LinearVPScheduler(), fms.CondOTScheduler(), fms.LinearVPScheduler())]
    for orig, new, fm_orig, fm_new in pairs:
        ours, theirs = ScheduleTransformedModel(model, orig, new), fms.ScheduleTransformedModel(model, fm_orig, fm_new)
        for t in (0.1, 0.5, 0.9):
            t = torch.tensor(t)
            torch.testing.assert_close(ours(x, t), theirs(x, t), rtol=1e-5, atol=1e-6)
        ts = torch.tensor([0.2, 0.3, 0.5, 0.6, 0.7, 0.8])
        rows = torch.stack([ours(x[i:i + 1], ts[i])[0] for i in range(6)])
        torch.testing.assert_close(ours(x, ts), rows, rtol=1e-5, atol=1e-6)
    a = ff.ODESolver(ScheduleTransformedModel(model, *pairs[0][:2])).sample(x, step_size=0.05, method="midpoint",
                                                                            time_grid=torch.tensor([0.0, 0.95]))
    b = FMODESolver(fms.ScheduleTransformedModel(model, *pairs[0][2:])).sample(
        x, step_size=0.05, method="midpoint", time_grid=torch.tensor([0.0, 0.95]))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="^original_scheduler"):
        ScheduleTransformedModel(model, object(), ff.CondOTScheduler())


def test_convex_kappa_alone_equals_alpha_t():
    t = torch.rand(33, dtype=torch.float64).float()
    for s in (ff.CondOTScheduler(), ff.PolynomialConvexScheduler(2.0), ff.PolynomialConvexScheduler(0.7)):
        assert torch.equal(s._kappa_t(t), s(t).alpha_t)

    class Mine(ff.ConvexScheduler):  # a subclass without its own kappa: read off __call__
        def __call__(self, t):
            return ff.SchedulerOutput(t.sqrt(), 1 - t.sqrt(), 0.5 / t.sqrt(), -0.5 / t.sqrt())

        def kappa_inverse(self, kappa):
            return kappa**2
    assert torch.equal(Mine()._kappa_t(t), t.sqrt())


def test_kappa_of_a_subclass_that_changes_the_schedule_follows_its_call():
    class Cubed(ff.CondOTScheduler):
        def __call__(self, t):
            return ff.SchedulerOutput(t**3, 1 - t**3, 3 * t**2, -3 * t**2)

    class Cos(ff.PolynomialConvexScheduler):
        def __call__(self, t):
            a = 1 - torch.cos(t * torch.pi / 2)
            return ff.SchedulerOutput(a, 1 - a, torch.sin(t * torch.pi / 2) * torch.pi / 2, -torch.sin(t) * 0)
    t = torch.rand(9)
    for s in (Cubed(), Cos(2.0)):
        assert torch.equal(s._kappa_t(t), s(t).alpha_t)
    x1 = torch.zeros(4, 20000, dtype=torch.long)
    kept = ff.MixtureDiscreteProbPath(Cubed()).sample(x_1=x1, t=torch.full((4,), 0.5), source="mask", mask_id=1).x_t
    assert abs(float((kept == 0).float().mean()) - 0.125) < 0.01


def test_a_user_scheduler_may_keep_a_kappa_attribute():
    """The mixture path's kappa-only shortcut is private: a ConvexScheduler subclass that keeps
    its own ``self.kappa`` (as a migrated one may) still samples (from the migration review)."""
    class Mine(ff.ConvexScheduler):
        def __init__(self):
            self.kappa = 3.0

        def __call__(self, t):
            return ff.SchedulerOutput(t**self.kappa, 1 - t**self.kappa, 3 * t**2, -3 * t**2)

        def kappa_inverse(self, kappa):
            return kappa ** (1 / self.kappa)

    x1 = torch.zeros(2, 5, dtype=torch.long)
    ff.MixtureDiscreteProbPath(Mine()).sample(x_1=x1, t=torch.full((2,), 0.5), source="mask", mask_id=1)


@pytest.mark.parametrize("make", [lambda: ff.PolynomialConvexScheduler(float("inf")),
                                  lambda: ff.PolynomialConvexScheduler(float("nan")),
                                  lambda: ff.VPScheduler(beta_max=float("inf"))])
def test_schedulers_refuse_non_finite_parameters(make):
    with pytest.raises(ValueError, match="n|beta"):
        make()


def test_base_classes_are_abstract_and_vp_takes_any_rates_as_flow_matching():
    """From a review: a subclass missing kappa_inverse built and failed later with a bare
    NotImplementedError; VPScheduler refused constant and decreasing betas flow_matching takes."""
    import fastflow.path.scheduler as ffs

    class Half(ffs.ConvexScheduler):
        def __call__(self, t):
            return ffs.SchedulerOutput(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))

    for cls in (ffs.Scheduler, ffs.ConvexScheduler, Half):
        with pytest.raises(TypeError, match="abstract"):
            cls()
    t = torch.linspace(0, 1, 11)
    for b, B in ((1.0, 1.0), (20.0, 0.1)):
        ours, theirs = ff.VPScheduler(b, B), fm.VPScheduler(b, B)
        for k in ("alpha_t", "sigma_t", "d_alpha_t", "d_sigma_t"):
            torch.testing.assert_close(getattr(ours(t), k), getattr(theirs(t), k), equal_nan=True)
        mid = ours(t[2:9])
        torch.testing.assert_close(ours.snr_inverse(mid.alpha_t / mid.sigma_t), t[2:9])
    with pytest.raises(ValueError, match="beta_min, beta_max"):
        ff.VPScheduler(0.0, 0.0)
