"""fastflow.torchcfm.optimal_transport: torchcfm's OTPlanSampler and wasserstein without POT.

The plans are checked against what defines them: the exact plan against every permutation of a
small batch, the sinkhorn plan against a plain (non-log) Sinkhorn-Knopp written here and against
its marginals, the unbalanced plan against the value POT documents for its solver; draws against
the plan they come from.
"""
import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from fastflow import torchcfm as tc
from fastflow.torchcfm.optimal_transport import OTPlanSampler, _cost, entropic_plan, wasserstein


def _plain_sinkhorn(M, reg, iters=5000):
    K = torch.exp(-M / reg)
    a = torch.full((M.shape[0],), 1 / M.shape[0], dtype=M.dtype)
    b = torch.full((M.shape[1],), 1 / M.shape[1], dtype=M.dtype)
    u, v = torch.ones_like(a), torch.ones_like(b)
    for _ in range(iters):
        v = b / (K.T @ u)
        u = a / (K @ v)
    return u[:, None] * K * v[None, :]


def test_exact_plan_is_the_cheapest_assignment():
    x0, x1 = torch.randn(6, 3), torch.randn(6, 3)
    M = _cost(x0, x1)
    best = min(sum(float(M[i, p[i]]) for i in range(6)) for p in itertools.permutations(range(6)))
    plan = OTPlanSampler("exact").get_map(x0, x1)
    assert np.allclose(plan.sum(0), 1 / 6) and np.allclose(plan.sum(1), 1 / 6) and set(np.unique(plan)) == {0, 1 / 6}
    assert math.isclose(float((torch.from_numpy(plan) * M).sum()) * 6, best, rel_tol=1e-12)
    assert math.isclose(wasserstein(x0, x1) ** 2, best / 6, rel_tol=1e-12)
    best1 = min(sum(float(M[i, p[i]].sqrt()) for i in range(6)) for p in itertools.permutations(range(6)))
    assert math.isclose(wasserstein(x0, x1, power=1), best1 / 6, rel_tol=1e-12)  # its own plan, not W2's


@pytest.mark.parametrize("shape", [(12, 12), (12, 7)])
def test_sinkhorn_plan_is_the_entropic_plan(shape):
    x0, x1 = torch.randn(shape[0], 2), torch.randn(shape[1], 2) + 0.5
    M = _cost(x0, x1)
    plan = torch.from_numpy(OTPlanSampler("sinkhorn", reg=0.5).get_map(x0, x1))
    torch.testing.assert_close(plan, _plain_sinkhorn(M, 0.5), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(plan.sum(0), torch.full((shape[1],), 1 / shape[1], dtype=plan.dtype), rtol=0, atol=1e-9)
    # partial transport of all the mass has the same plan
    torch.testing.assert_close(torch.from_numpy(OTPlanSampler("partial", reg=0.5).get_map(x0, x1)), plan)


def test_sinkhorn_holds_where_its_scalings_underflow():
    """torchcfm's default reg = 0.05 on costs of ~100: exp(-M / reg) is 0 in float64, where POT's
    scalings give up (torchcfm then pairs uniformly); the log domain still finds the plan, which
    tends to the exact one as reg shrinks."""
    x0, x1 = torch.randn(10, 2), torch.randn(10, 2) + 7
    M = _cost(x0, x1)
    assert float(torch.exp(-M / 0.05).max()) == 0.0
    exact = wasserstein(x0, x1) ** 2
    with np.errstate(all="raise"), pytest.warns(UserWarning, match="Sinkhorn did not converge"):
        plan = torch.from_numpy(OTPlanSampler("sinkhorn").get_map(x0, x1))
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(1), torch.full((10,), 0.1, dtype=plan.dtype), rtol=0, atol=1e-12)
    # (POT's 1000 iterations, slow at a small reg, leave the columns ~2e-4 off here, and warn)
    torch.testing.assert_close(plan.sum(0), torch.full((10,), 0.1, dtype=plan.dtype), rtol=0, atol=1e-3)
    assert abs(float((plan * M).sum()) - exact) <= 1e-3 * exact


def test_exact_plan_between_batches_of_two_sizes():
    """The transport program's optimum: with 4 and 6 points it is the assignment between the
    points repeated 3 and 2 times (12 each), whose plan entries are multiples of 1/12 too."""
    x0, x1 = torch.randn(4, 2), torch.randn(6, 2)
    M = _cost(x0, x1)
    rep = _cost(x0.repeat_interleave(3, 0), x1.repeat_interleave(2, 0))
    best = float(torch.from_numpy(OTPlanSampler("exact").get_map(x0.repeat_interleave(3, 0),
                                                                 x1.repeat_interleave(2, 0))).mul(rep).sum())
    plan = torch.from_numpy(OTPlanSampler("exact").get_map(x0, x1))
    torch.testing.assert_close(plan.sum(1), torch.full((4,), 0.25, dtype=plan.dtype))
    torch.testing.assert_close(plan.sum(0), torch.full((6,), 1 / 6, dtype=plan.dtype))
    assert math.isclose(float((plan * M).sum()), best, rel_tol=1e-9)
    assert math.isclose(wasserstein(x0, x1) ** 2, best, rel_tol=1e-9)


def test_matchers_pair_batches_of_two_sizes():
    x0, x1 = torch.randn(4, 2), torch.randn(6, 2)
    for m in (tc.ExactOptimalTransportConditionalFlowMatcher(), tc.SchrodingerBridgeConditionalFlowMatcher(ot_method="sinkhorn")):
        t, xt, ut = m.sample_location_and_conditional_flow(x0, x1)
        assert xt.shape == ut.shape == (4, 2)  # x0's batch, as torchcfm
    with pytest.raises(ValueError, match="x0"):
        tc.ConditionalFlowMatcher().sample_location_and_conditional_flow(x0, x1)  # independent pairs: one size


def test_unbalanced_plan_matches_pot_s_documented_value():
    # POT's sinkhorn_knopp_unbalanced docstring: a = b = [.5, .5], M = [[0, 1], [1, 0]], reg = reg_m = 1
    pts = torch.tensor([[0.0], [1.0]])
    plan = OTPlanSampler("unbalanced", reg=1.0, reg_m=1.0).get_map(pts, pts)
    np.testing.assert_allclose(plan, [[0.3220536, 0.1184769], [0.1184769, 0.3220536]], atol=5e-8)
    # reg_m = inf on the rows holds them exactly (POT's semi-relaxed pair)
    x0, x1 = torch.randn(5, 2), torch.randn(7, 2)
    semi = OTPlanSampler("unbalanced", reg=0.5, reg_m=(math.inf, 1.0)).get_map(x0, x1)
    np.testing.assert_allclose(semi.sum(1), 0.2, atol=1e-6)


def test_a_plan_without_mass_falls_back_to_uniform_with_a_warning():
    x0, x1 = torch.zeros(4, 2), torch.full((4, 2), 1e3)
    with pytest.warns(UserWarning, match="uniform plan"):
        plan = OTPlanSampler("unbalanced", reg=0.01, reg_m=0.01).get_map(x0, x1)
    assert np.allclose(plan, 1 / 16)


def test_ot_fn_is_torchcfm_s_solver_attribute():
    """torchcfm's sampler computes its plan with ``self.ot_fn(a, b, M)`` (POT's solvers): the default
    is fastflow's solver of the method, and one set in its place computes the plan (it was
    ignored) and the matchers' pairing, which then draws from it as torchcfm's."""
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    for method in ("exact", "sinkhorn"):
        sampler = OTPlanSampler(method, reg=0.5)
        M = _cost(x0, x1).numpy()
        np.testing.assert_allclose(sampler.ot_fn(np.full(6, 1 / 6), np.full(6, 1 / 6), M), sampler.get_map(x0, x1))
    with pytest.raises(ValueError, match="uniform"):
        sampler.ot_fn(np.array([0.5, 0.5, 0, 0, 0, 0]), np.full(6, 1 / 6), M)
    calls = []

    def reversed_pairs(a, b, M):  # pairs i with 5 - i, whatever the costs
        calls.append((a.sum(), b.sum(), M.shape))
        return np.fliplr(np.eye(len(a))) / len(a)

    m = tc.ExactOptimalTransportConditionalFlowMatcher(0.0)
    m.ot_sampler.ot_fn = reversed_pairs
    assert m.ot_sampler.ot_fn is reversed_pairs
    _, _, ut = m.sample_location_and_conditional_flow(x0, x1, torch.full((6,), 0.5))
    assert calls and np.allclose(calls[0][:2], 1.0) and calls[0][2] == (6, 6)
    paired = x1 - x0.flip(0)  # x1[j] - x0[5 - j]: the flows of the plan's pairs, drawn in any order
    assert all(torch.isclose(u, paired).all(1).any() for u in ut)
    with pytest.raises(TypeError, match="ot_fn"):
        m.ot_sampler.ot_fn = "emd"
    del m.ot_sampler.ot_fn  # back to fastflow's solver
    assert m.ot_sampler.ot_fn == m.ot_sampler._solve
    m.ot_sampler.ot_fn = lambda a, b, M: np.full(M.shape, np.nan)
    with pytest.raises(ValueError, match="ot_fn"):
        m.ot_sampler.get_map(x0, x1)


def test_draws_follow_the_plan_and_numpy_s_seed():
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    sampler = OTPlanSampler("sinkhorn", reg=1.0)
    pi = sampler.get_map(x0, x1)
    np.random.seed(0)
    i, j = sampler.sample_map(pi, 20000)
    counts = np.bincount(i * 5 + j, minlength=25)
    expect = pi.flatten() / pi.sum() * 20000
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 60  # 24 degrees of freedom: p ~ 1e-4
    np.random.seed(1)
    a0, a1 = sampler.sample_plan(x0, x1)
    np.random.seed(1)
    b0, b1, y0, y1 = sampler.sample_plan_with_labels(x0, x1, torch.arange(5), torch.arange(5) + 10)
    assert torch.equal(a0, b0) and torch.equal(a1, b1)
    assert torch.equal(x0[y0], b0) and torch.equal(x1[y1 - 10], b1)  # labels travel with their points
    X = torch.randn(6, 3, 2)
    assert sampler.sample_trajectory(X).shape == (6, 3, 2)


def test_schrodinger_bridge_with_an_entropic_plan():
    m = tc.SchrodingerBridgeConditionalFlowMatcher(sigma=0.5, ot_method="sinkhorn")
    assert m.ot_sampler.method == "sinkhorn" and m.ot_sampler.reg == 0.5  # reg = 2 sigma^2, as torchcfm's
    x0, x1 = torch.randn(16, 2), torch.randn(16, 2) + 2
    np.random.seed(3)
    p0, p1 = m.ot_sampler.sample_plan(x0, x1)
    np.random.seed(3)
    t = torch.rand(16) * 0.8 + 0.1
    s = m.sample(x0, x1, t)
    assert torch.equal(s.x0, p0) and torch.equal(s.x1, p1)
    mu = t[:, None] * p1 + (1 - t[:, None]) * p0
    torch.testing.assert_close(s.xt, mu + 0.5 * torch.sqrt(t * (1 - t))[:, None] * s.eps, rtol=1e-5, atol=1e-5)
    np.random.seed(3)
    *_, g0, g1 = m.guided_sample_location_and_conditional_flow(x0, x1, torch.arange(16), torch.arange(16) + 50)
    assert torch.equal(x0[g0], p0) and torch.equal(x1[g1 - 50], p1)
    assert tc.ExactOptimalTransportConditionalFlowMatcher().ot_sampler.method == "exact"


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="method"):
        OTPlanSampler("emd")
    with pytest.raises(ValueError, match="reg"):
        OTPlanSampler("sinkhorn", reg=0.0)
    with pytest.raises(TypeError, match="reg"):
        OTPlanSampler("sinkhorn", reg=None)
    assert OTPlanSampler("exact", reg=None).get_map(torch.randn(3, 2), torch.randn(3, 2)).shape == (3, 3)  # as torchcfm
    with pytest.raises(ValueError, match="ot_method"):
        tc.SchrodingerBridgeConditionalFlowMatcher(1.0, ot_method="greedy")
    with pytest.raises(ValueError, match="reg"):
        wasserstein(torch.randn(4, 2), torch.randn(4, 2), method="sinkhorn", reg=0.0)
    with pytest.raises(ValueError, match="reg: .* too small"):
        OTPlanSampler("sinkhorn", reg=1e-310).get_map(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="reg_m"):
        OTPlanSampler("unbalanced", reg_m=(1.0, -1.0))
    with pytest.raises(ValueError, match="x0, x1"):
        OTPlanSampler("sinkhorn").get_map(torch.full((4, 2), math.nan), torch.randn(4, 2))
    with pytest.raises(ValueError, match="power"):
        wasserstein(torch.randn(4, 2), torch.randn(4, 2), power=3)
    assert entropic_plan(torch.zeros(2, 3, dtype=torch.float64), 1.0).shape == (2, 3)


def test_entropic_pairing_under_grad():
    """The plan is a constant of the loss: torch.func.grad through SB-CFM's sinkhorn pairing."""
    m = tc.SchrodingerBridgeConditionalFlowMatcher(sigma=0.5, ot_method="sinkhorn")
    x0, x1, t = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8) * 0.8 + 0.1

    def loss(x1):
        np.random.seed(0)  # the pairs
        torch.manual_seed(0)  # the noise
        return m.sample_location_and_conditional_flow(x0, x1, t)[1].square().sum()

    g = torch.func.grad(loss)(x1)
    x1r = x1.clone().requires_grad_()
    loss(x1r).backward()
    torch.testing.assert_close(g, x1r.grad)
    with pytest.raises(ValueError, match="vmap"):
        torch.func.vmap(lambda a: m.ot_sampler.get_map(a, x1).sum(), randomness="same")(x0[None].expand(2, 8, 2))


def test_compiled_steps_run_the_plan_between_graphs():
    """torch.compile of an OT-CFM / SB-CFM step and of wasserstein: the plan's host code runs as
    Python between graphs (as POT's C code would), not traced, so the pairs, the step and W2 are
    the eager ones and no graph holds the cost matrix (Dynamo would unroll Sinkhorn's loop)."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    x0, x1 = torch.randn(16, 2), torch.randn(16, 2) + 2
    for m in (tc.ExactOptimalTransportConditionalFlowMatcher(sigma=0.1),
              tc.SchrodingerBridgeConditionalFlowMatcher(sigma=0.5, ot_method="sinkhorn")):
        def step(x0, x1):
            t, xt, ut = m.sample_location_and_conditional_flow(x0, x1)
            return (xt - ut).square().mean()

        torch.manual_seed(0), np.random.seed(0)
        got = torch.compile(step, backend=record)(x0, x1)
        torch.manual_seed(0), np.random.seed(0)
        assert torch.equal(got, step(x0, x1))
    w2 = torch.compile(lambda a, b: wasserstein(a, b, "sinkhorn", reg=0.5) * a.sum(), backend=record)(x0, x1)
    assert torch.equal(w2, wasserstein(x0, x1, "sinkhorn", reg=0.5) * x0.sum())
    assert graphs and not any("cdist" in g for g in graphs)


def test_module_names_follow_torchcfm():
    from fastflow.torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher
    from fastflow.torchcfm.optimal_transport import OTPlanSampler as Sampler
    namespace = {}
    exec("from fastflow.torchcfm.conditional_flow_matching import *", namespace)  # torchcfm's star import
    assert namespace["OTPlanSampler"] is Sampler and "pad_t_like_x" in namespace
    assert ExactOptimalTransportConditionalFlowMatcher is tc.ExactOptimalTransportConditionalFlowMatcher
    assert Sampler is tc.OTPlanSampler


@pytest.mark.parametrize("reg_m", [None, 0.7])
def test_scaling_and_log_domains_reach_one_plan(reg_m):
    """The scalings (POT's arithmetic, taken where nothing underflows) and their logarithms (taken
    elsewhere, or when the scalings overflow) iterate to the same plan."""
    from fastflow.torchcfm.optimal_transport import _iterate, _Logs, _Scalings
    M = _cost(torch.randn(9, 2), torch.randn(11, 2))
    reg = 0.3
    log_a, log_b = torch.full((9,), -math.log(9), dtype=M.dtype), torch.full((11,), -math.log(11), dtype=M.dtype)
    log_k = -M / reg
    fi = (1.0, 1.0)
    if reg_m is not None:
        log_k, fi = log_k + log_a[:, None] + log_b[None, :], (reg_m / (reg_m + reg),) * 2
    scaled = _iterate(_Scalings(log_k.exp(), log_a.exp(), log_b.exp(), fi), reg_m is None, 1000)
    logs = _iterate(_Logs(log_k, log_a, log_b, fi), reg_m is None, 1000)
    torch.testing.assert_close(scaled, logs, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(entropic_plan(M, reg, reg_m), scaled)


def _column_error(plan):
    return float(torch.linalg.vector_norm(plan.sum(0) - 1 / plan.shape[1]))


def test_wasserstein_sinkhorn_finishes_where_sinkhorn_crawls():
    """Where POT's 1000 iterations leave the marginals off, ``wasserstein``'s 1e7 would run for
    minutes: Newton's method finishes, at the plan a plain Sinkhorn reaches in 20000 iterations."""
    g = torch.Generator().manual_seed(5)
    M = _cost(torch.randn(24, 3, generator=g), torch.randn(17, 3, generator=g))
    with pytest.warns(UserWarning, match="Sinkhorn did not converge"):  # POT's 1000 are not enough here,
        assert _column_error(entropic_plan(M, 0.1)) > 1e-7               # and POT says so
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no warning
        plan = entropic_plan(M, 0.1, max_iter=10**7)
    assert _column_error(plan) < 1e-9
    torch.testing.assert_close(plan.sum(1), torch.full((24,), 1 / 24, dtype=plan.dtype), rtol=0, atol=1e-12)
    torch.testing.assert_close(plan, _plain_sinkhorn(M, 0.1, iters=20000), rtol=1e-7, atol=1e-14)


def test_wasserstein_sinkhorn_at_a_reg_far_below_the_costs():
    """torchcfm's own call, ``reg=0.01`` on 128 8-D points (costs up to ~70), took 194 s of
    Sinkhorn; at ``reg=1e-4`` even Newton from Sinkhorn's point crawls, and Newton through falling
    regs (epsilon scaling) finishes. The entropic cost lies just above the exact one, and tends to it."""
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(128, 8, generator=g), torch.randn(128, 8, generator=g)
    M = _cost(x0, x1)
    exact = wasserstein(x0, x1) ** 2
    costs = []
    for reg in (0.01, 1e-4):
        plan = entropic_plan(M, reg, max_iter=10**7)
        assert _column_error(plan) < 1e-9
        costs.append(float((plan * M).sum()))
        assert math.isclose(wasserstein(x0, x1, "sinkhorn", reg=reg) ** 2, costs[-1], rel_tol=1e-12)
    # (a plan within 1e-9 of the marginals may cost ~1e-9 less than the exact one)
    assert exact + 1e-5 < costs[0] < exact * 1.001 and abs(costs[1] - exact) < 1e-8
