"""fastflow.torchcfm: torchcfm's matchers (tuple order, formulas) and the fused loss."""
import math

import numpy as np
import pytest
import torch

from fastflow import torchcfm as tc


def _closed_form(m, x0, x1, t, eps):
    tt = t[:, None]
    if isinstance(m, tc.TargetConditionalFlowMatcher):
        k = 1 - m.sigma
        return tt * x1 + (1 - k * tt) * eps, x1 - k * eps
    if isinstance(m, tc.VariancePreservingConditionalFlowMatcher):
        h = math.pi / 2
        xt = torch.sin(h * tt) * x1 + torch.cos(h * tt) * x0 + m.sigma * eps
        return xt, h * (torch.cos(h * tt) * x1 - torch.sin(h * tt) * x0)
    if isinstance(m, tc.SchrodingerBridgeConditionalFlowMatcher):
        s = m.sigma * torch.sqrt(tt * (1 - tt))
        xt = tt * x1 + (1 - tt) * x0 + s * eps
        return xt, (1 - 2 * tt) / (2 * tt * (1 - tt) + 1e-8) * (xt - (tt * x1 + (1 - tt) * x0)) + x1 - x0
    return tt * x1 + (1 - tt) * x0 + m.sigma * eps, x1 - x0


@pytest.mark.parametrize("matcher", [tc.ConditionalFlowMatcher(0.1), tc.TargetConditionalFlowMatcher(0.05),
                                     tc.VariancePreservingConditionalFlowMatcher(0.2),
                                     tc.SchrodingerBridgeConditionalFlowMatcher(0.5),
                                     tc.ExactOptimalTransportConditionalFlowMatcher(0.0)],
                         ids=lambda m: type(m).__name__)
def test_tuple_order_and_formulas(matcher):
    x0, x1 = torch.randn(6, 5), torch.randn(6, 5)
    t, xt, ut, eps = matcher.sample_location_and_conditional_flow(x0, x1, return_noise=True)
    assert t.shape == (6,) and xt.shape == ut.shape == eps.shape == x1.shape
    if isinstance(matcher, (tc.ExactOptimalTransportConditionalFlowMatcher, tc.SchrodingerBridgeConditionalFlowMatcher)):
        x1 = x1[tc._exact_ot_perm(x0, x1)]
    ref_xt, ref_ut = _closed_form(matcher, x0, x1, t, eps)
    torch.testing.assert_close(xt, ref_xt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ut, ref_ut, rtol=1e-4, atol=1e-4)
    assert len(matcher.sample_location_and_conditional_flow(x0, x1)) == 3


@pytest.mark.parametrize("matcher", [tc.ConditionalFlowMatcher(0.1), tc.TargetConditionalFlowMatcher(0.05),
                                     tc.VariancePreservingConditionalFlowMatcher(0.2)],
                         ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("dtypes", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_mixed_dtypes_promote_as_torchcfm(matcher, dtypes):
    """x0 and x1 of two dtypes: xt and ut in the dtype they promote to, eps in x0's (torchcfm's
    randn_like(x0)), and a float64 result computed in float64 (coefficients included)."""
    x0, x1 = torch.randn(6, 5, dtype=dtypes[0]), torch.randn(6, 5, dtype=dtypes[1])
    t = torch.rand(6, dtype=torch.float64)
    _, xt, ut, eps = matcher.sample_location_and_conditional_flow(x0, x1, t, return_noise=True)
    assert xt.dtype == ut.dtype == torch.float64 and eps.dtype == dtypes[0]
    ref_xt, ref_ut = _closed_form(matcher, x0.double(), x1.double(), t, eps.double())
    tol = dict(rtol=1e-12, atol=1e-12) if dtypes[0] == torch.float64 else dict(rtol=1e-6, atol=1e-6)  # eps rounded
    torch.testing.assert_close(xt, ref_xt, **tol)
    torch.testing.assert_close(ut, ref_ut, **tol)
    assert matcher.sample_location_and_conditional_flow(x0, x1)[0].dtype == dtypes[0]  # drawn t: x0's, as torchcfm's


def test_exact_ot_pairs_one_to_one_and_reduces_cost():
    x0, x1 = torch.randn(16, 3), torch.randn(16, 3) + 1
    a0, a1 = x0, x1[tc._exact_ot_perm(x0, x1)]
    assert sorted(map(tuple, a1.tolist())) == sorted(map(tuple, x1.tolist()))
    assert float(((a0 - a1) ** 2).sum()) <= float(((x0 - x1) ** 2).sum()) + 1e-6


def test_fused_loss_matches_materialised():
    m = tc.SchrodingerBridgeConditionalFlowMatcher(0.3)
    x0, x1 = torch.randn(8, 4), torch.randn(8, 4)
    s = m.sample(x0, x1, t=torch.rand(8) * 0.8 + 0.1)
    v = torch.randn(8, 4, requires_grad=True)
    loss = m.loss(v, s)
    loss.backward()
    v2 = v.detach().clone().requires_grad_()
    ref = ((v2 - s.ut) ** 2).mean()
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v.grad, v2.grad, rtol=1e-5, atol=1e-6)


def test_sigma_of_any_real_scalar_kind():
    """torchcfm takes sigma as any real scalar (a NumPy one, a 0-d tensor): kept as a Python float.
    A negative, non-finite or non-scalar one is refused, naming sigma."""
    for sigma in (np.float32(0.25), torch.tensor(0.25), np.array(0.25), 1):
        m = tc.SchrodingerBridgeConditionalFlowMatcher(sigma)
        assert type(m.sigma) is float and m.sigma == float(sigma) and m.ot_sampler.reg == 2 * float(sigma) ** 2
    for sigma in (-1.0, np.float64(-0.1), torch.tensor(math.inf), torch.tensor([0.1, 0.2]), True, "0.1", 1j):
        with pytest.raises(ValueError, match="sigma"):
            tc.ConditionalFlowMatcher(sigma)
    with pytest.raises(ValueError, match="sigma"):
        tc.SchrodingerBridgeConditionalFlowMatcher(torch.tensor(0.0))
    with pytest.raises(TypeError, match="sigma: a tensor that requires grad"):  # (its gradient was lost)
        tc.ConditionalFlowMatcher(torch.tensor(0.1, requires_grad=True))


def test_reachable_after_import_fastflow():
    """``fastflow.torchcfm`` and its matchers flat under ``fastflow``, from a fresh interpreter."""
    import subprocess
    import sys
    code = ("import fastflow as ff; assert ff.torchcfm.ConditionalFlowMatcher is ff.ConditionalFlowMatcher; "
            "assert ff.VariancePreservingConditionalFlowMatcher and ff.ExactOptimalTransportConditionalFlowMatcher")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_torchcfm_s_models_and_utils_are_torchcfm_s_own(tmp_path):
    """``fastflow.torchcfm.models`` / ``.utils`` (which fastflow does not reimplement) are torchcfm's
    modules themselves, submodules included, so that a script's swapped imports keep working (they
    raised ModuleNotFoundError); without torchcfm, the ImportError says what to install. A
    stand-in torchcfm on the path: CI does not install the real one (POT, torchdyn, matplotlib)."""
    import subprocess
    import sys
    import textwrap
    pkg = tmp_path / "torchcfm"
    (pkg / "models" / "unet").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "utils.py").write_text("def plot_trajectories(x):\n    return x\n")
    (pkg / "models" / "__init__.py").write_text("from .models import MLP\n")
    (pkg / "models" / "models.py").write_text("class MLP:\n    pass\n")
    (pkg / "models" / "unet" / "__init__.py").write_text("from .unet import UNetModelWrapper as UNetModel\n")
    (pkg / "models" / "unet" / "unet.py").write_text("class UNetModelWrapper:\n    pass\n")
    code = textwrap.dedent("""
        from fastflow.torchcfm.models.unet import UNetModel
        from fastflow.torchcfm.models import MLP
        from fastflow.torchcfm.utils import plot_trajectories
        import fastflow.torchcfm.models.unet.unet as unet
        import fastflow.torchcfm as tc
        import torchcfm.models.unet, torchcfm.utils
        assert UNetModel is torchcfm.models.unet.UNetModel and MLP is torchcfm.models.MLP
        assert unet is torchcfm.models.unet.unet and tc.models is torchcfm.models
        assert plot_trajectories is torchcfm.utils.plot_trajectories
    """)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    (pkg / "__init__.py").unlink()
    (pkg / "models" / "__init__.py").unlink()
    (pkg / "utils.py").unlink()
    run = subprocess.run([sys.executable, "-c", "import torchcfm.models"], env=env, capture_output=True, text=True)
    if run.returncode == 0:  # (a namespace package left by the stand-in: hide it)
        pkg.rename(tmp_path / "gone")
    run = subprocess.run([sys.executable, "-c", "import fastflow.torchcfm.models"], env=env, capture_output=True,
                         text=True)
    assert run.returncode != 0 and "pip install torchcfm" in run.stderr


MATCHERS = [tc.ConditionalFlowMatcher(0.1), tc.TargetConditionalFlowMatcher(0.05),
            tc.VariancePreservingConditionalFlowMatcher(0.2), tc.SchrodingerBridgeConditionalFlowMatcher(0.5),
            tc.ExactOptimalTransportConditionalFlowMatcher(0.0)]


@pytest.mark.parametrize("matcher", MATCHERS, ids=lambda m: type(m).__name__)
def test_building_blocks_agree_with_the_fused_sample(matcher):
    """torchcfm's compute_mu_t / sample_xt / compute_conditional_flow, from the same coefficients,
    give the fused sample's xt and ut from its eps (and the closed forms above)."""
    x0, x1, t = torch.randn(6, 3), torch.randn(6, 3), torch.rand(6) * 0.9 + 0.05
    s = matcher.sample(x0, x1, t)
    xt = matcher.sample_xt(s.x0, s.x1, t, s.eps)
    torch.testing.assert_close(xt, s.xt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(matcher.compute_conditional_flow(s.x0, s.x1, t, xt), s.ut, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(matcher.sample_xt(x0, x1, t[:, None], s.eps), _closed_form(matcher, x0, x1, t, s.eps)[0],
                               rtol=1e-5, atol=1e-5)  # t as [B, 1], padded as torchcfm pads it
    assert tc.pad_t_like_x(t, torch.zeros(6, 2, 2)).shape == (6, 1, 1)
    if isinstance(matcher, (tc.TargetConditionalFlowMatcher, tc.SchrodingerBridgeConditionalFlowMatcher)):
        assert matcher.compute_lambda(t).shape == t.shape
    else:  # torchcfm's constant sigma, a number whatever t (code does float(sigma_t), sigma_t * eps)
        assert matcher.compute_sigma_t(t) == matcher.sigma and isinstance(matcher.compute_lambda(t), float)


def test_a_subclass_s_own_formulas_define_the_matcher():
    """torchcfm's way to define a matcher: override its building blocks. The fused sample would
    ignore them, so such a subclass is sampled through them (and its loss is against that u_t)."""
    class Quadratic(tc.ConditionalFlowMatcher):
        def compute_mu_t(self, x0, x1, t):
            return tc.pad_t_like_x(t, x1) ** 2 * x1 + (1 - tc.pad_t_like_x(t, x0) ** 2) * x0

        def compute_conditional_flow(self, x0, x1, t, xt):
            return 2 * tc.pad_t_like_x(t, x1) * (x1 - x0)

    x0, x1, t = torch.randn(6, 3), torch.randn(6, 3), torch.rand(6)
    m = Quadratic(0.0)
    rt, xt, ut = m.sample_location_and_conditional_flow(x0, x1, t)
    torch.testing.assert_close(xt, t[:, None] ** 2 * x1 + (1 - t[:, None] ** 2) * x0)
    torch.testing.assert_close(ut, 2 * t[:, None] * (x1 - x0))
    v = torch.randn(6, 3)
    torch.testing.assert_close(m.loss(v, m.sample(x0, x1, t)), ((v - ut) ** 2).mean())


def test_a_block_reused_from_another_matcher_is_the_subclass_s_own():
    """A subclass that takes a block from another fastflow matcher redefines itself as much as one
    that writes it: sampled through its blocks (a global set of fastflow's blocks took it for
    the fused sample's, whose coefficients are its parent's)."""
    class ConstSigmaTarget(tc.TargetConditionalFlowMatcher):
        compute_sigma_t = tc.ConditionalFlowMatcher.compute_sigma_t

    class Subclass(tc.TargetConditionalFlowMatcher):
        pass

    assert ConstSigmaTarget(0.1)._own_blocks() and not Subclass(0.1)._own_blocks()
    assert not any(m._own_blocks() for m in MATCHERS)
    x0, x1, t = torch.randn(4, 3), torch.randn(4, 3), torch.full((4,), 0.5)
    _, xt, _, eps = ConstSigmaTarget(0.1).sample_location_and_conditional_flow(x0, x1, t, return_noise=True)
    torch.testing.assert_close((xt - 0.5 * x1) / eps, torch.full_like(xt, 0.1))  # torchcfm's sigma_t


def test_target_cfm_flow_is_computed_from_xt_as_torchcfm():
    """torchcfm's TargetCFM flow is (x1 - (1 - sigma) xt) / (1 - (1 - sigma) t) whatever mu_t is:
    a subclass that shifts the mean keeps that flow (it went through the shifted mean)."""
    class Shifted(tc.TargetConditionalFlowMatcher):
        def compute_mu_t(self, x0, x1, t):
            return super().compute_mu_t(x0, x1, t) + 0.5

    x0, x1, t = torch.randn(6, 3), torch.randn(6, 3), torch.rand(6) * 0.9
    m = Shifted(0.1)
    _, xt, ut = m.sample_location_and_conditional_flow(x0, x1, t)
    torch.testing.assert_close(ut, (x1 - 0.9 * xt) / (1 - 0.9 * t[:, None]))


def test_guided_sample_pairs_labels_with_their_points():
    x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
    y0, y1 = torch.arange(8), torch.arange(8) + 100
    m = tc.ExactOptimalTransportConditionalFlowMatcher(0.0)
    t, xt, ut, g0, g1 = m.guided_sample_location_and_conditional_flow(x0, x1, y0, y1)
    assert torch.equal(g0, y0)
    torch.testing.assert_close(ut, x1[g1 - 100] - x0)  # each x1 travels with its own label


def test_building_blocks_take_t_as_a_number():
    """torchcfm's blocks take ``t`` as a number too (its pad_t_like_x passes one through)."""
    x0, x1, eps = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    for m in MATCHERS:
        by_number = m.sample_xt(x0, x1, 0.3, eps)
        torch.testing.assert_close(by_number, m.sample_xt(x0, x1, torch.full((4,), 0.3), eps))
        torch.testing.assert_close(m.compute_conditional_flow(x0, x1, 0.3, by_number),
                                   m.compute_conditional_flow(x0, x1, torch.full((4,), 0.3), by_number))
        assert isinstance(m.compute_sigma_t(0.3), float) and isinstance(m.compute_lambda(1), float)
    with pytest.warns(UserWarning, match="Small sigma"):
        tc.SchrodingerBridgeConditionalFlowMatcher(5e-4)


@pytest.mark.parametrize("matcher", MATCHERS, ids=lambda m: type(m).__name__)
def test_noise_is_returned_without_a_graph(matcher):
    """eps does not depend on the inputs: returned as torchcfm's randn, with no graph, while xt and
    ut keep their gradients in x0, x1 and t (the closed forms' at that eps); TargetCFM leaves x0
    out of the graph (its grad stays None, as torchcfm's)."""
    x0, x1, t = torch.randn(6, 3), torch.randn(6, 3), torch.rand(6) * 0.9 + 0.05
    if isinstance(matcher, (tc.ExactOptimalTransportConditionalFlowMatcher, tc.SchrodingerBridgeConditionalFlowMatcher)):
        x1 = x1[tc._exact_ot_perm(x0, x1)]  # (already paired: the pairing keeps them so)
    leaves = [a.clone().requires_grad_() for a in (x0, x1, t)]
    _, xt, ut, eps = matcher.sample_location_and_conditional_flow(*leaves, return_noise=True)
    assert not eps.requires_grad and eps.grad_fn is None
    grads = torch.autograd.grad((xt * ut).sum(), leaves, allow_unused=True)
    refs = [a.clone().requires_grad_() for a in (x0, x1, t)]
    ref_xt, ref_ut = _closed_form(matcher, *refs, eps)
    ref_grads = torch.autograd.grad((ref_xt * ref_ut).sum(), refs, allow_unused=True)
    for name, g, r in zip(("x0", "x1", "t"), grads, ref_grads):
        assert (g is None) == (r is None), name
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4, msg=name)
    assert (grads[0] is None) == isinstance(matcher, tc.TargetConditionalFlowMatcher)


class _Reversing:
    """A sampler of one's own, duck-typed as torchcfm calls it: pairs x0[i] with x1[-1 - i]."""

    def sample_plan(self, x0, x1, replace=True):
        return x0, x1.flip(0)

    def sample_plan_with_labels(self, x0, x1, y0=None, y1=None, replace=True):
        return x0, x1.flip(0), y0, y1.flip(0)


@pytest.mark.parametrize("cls", [tc.ExactOptimalTransportConditionalFlowMatcher,
                                 tc.SchrodingerBridgeConditionalFlowMatcher], ids=lambda c: c.__name__)
def test_ot_matchers_call_their_sampler_as_torchcfm(cls):
    """Any ``ot_sampler`` is called as torchcfm calls it (sample_plan; sample_plan_with_labels in the
    guided variant): a duck-typed one (no ``method``), and a subclass of OTPlanSampler("exact")
    whose sample_plan or get_map is its own (not bypassed by the one-to-one exact pairing)."""
    x0, x1, t = torch.randn(6, 2), torch.randn(6, 2), torch.rand(6) * 0.9 + 0.05
    m = cls(0.5)
    m.ot_sampler = _Reversing()
    _, xt, ut, eps = m.sample_location_and_conditional_flow(x0, x1, t, return_noise=True)
    ref_xt, ref_ut = _closed_form(m, x0, x1.flip(0), t, eps)
    torch.testing.assert_close(xt, ref_xt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ut, ref_ut, rtol=1e-4, atol=1e-4)
    *_, g0, g1 = m.guided_sample_location_and_conditional_flow(x0, x1, torch.arange(6), torch.arange(6))
    assert torch.equal(g0, torch.arange(6)) and torch.equal(g1, torch.arange(6).flip(0))

    calls = []

    class Recording(tc.OTPlanSampler):
        def sample_plan(self, x0, x1, replace=True):
            calls.append("sample_plan")
            return x0, x1.flip(0)

    class OwnMap(tc.OTPlanSampler):
        def get_map(self, x0, x1):
            calls.append("get_map")
            return np.eye(x0.shape[0])[::-1] / x0.shape[0]  # the reversal, as a plan

    for sampler in (Recording("exact"), OwnMap("exact")):  # (OwnMap's pairs are drawn: x0 reordered)
        m.ot_sampler = sampler
        s = m.sample(x0, x1, t)
        i = torch.cdist(s.x0, x0).argmin(1)
        assert torch.equal(s.x0, x0[i]) and torch.equal(s.x1, x1[5 - i])
    assert calls == ["sample_plan", "get_map"]
