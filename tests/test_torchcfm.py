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
        x0, x1 = tc._exact_ot_pair(x0, x1)
    ref_xt, ref_ut = _closed_form(matcher, x0, x1, t, eps)
    torch.testing.assert_close(xt, ref_xt, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ut, ref_ut, rtol=1e-4, atol=1e-4)
    assert len(matcher.sample_location_and_conditional_flow(x0, x1)) == 3


def test_exact_ot_pairs_one_to_one_and_reduces_cost():
    x0, x1 = torch.randn(16, 3), torch.randn(16, 3) + 1
    a0, a1 = tc._exact_ot_pair(x0, x1)
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
