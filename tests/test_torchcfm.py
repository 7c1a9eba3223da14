"""fastflow.torchcfm: torchcfm's matchers (tuple order, formulas) and the fused loss."""
import math

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


def test_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        tc.ConditionalFlowMatcher(-1.0)


def test_reachable_after_import_fastflow():
    """``fastflow.torchcfm`` and its matchers flat under ``fastflow``, from a fresh interpreter."""
    import subprocess
    import sys
    code = ("import fastflow as ff; assert ff.torchcfm.ConditionalFlowMatcher is ff.ConditionalFlowMatcher; "
            "assert ff.VariancePreservingConditionalFlowMatcher and ff.ExactOptimalTransportConditionalFlowMatcher")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


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
    assert matcher.compute_lambda(t).shape == t.shape and tc.pad_t_like_x(t, torch.zeros(6, 2, 2)).shape == (6, 1, 1)


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
