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
