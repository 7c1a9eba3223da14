"""Manifolds, GeodesicProbPath and RiemannianODESolver against flow_matching 1.0.10 (an import swap)."""
import math

import pytest
import torch

fm = pytest.importorskip("flow_matching")

import fastflow as ff  # noqa: E402
from fastflow.utils import manifolds as ffm  # noqa: E402
from flow_matching.path import GeodesicProbPath as FMGeodesic  # noqa: E402
from flow_matching.path import scheduler as fms  # noqa: E402
from flow_matching.solver import RiemannianODESolver as FMRiemannian  # noqa: E402
from flow_matching.utils import manifolds as fmm  # noqa: E402

BLOCKS = (3, 2, 2)  # the Product under test: sphere S^2 x torus T^2 x R^2


class FMProduct(fmm.Manifold):
    """The reference for fastflow's Product (flow_matching has none): flow_matching's own maps
    on the blocks of the last dimension."""

    def __init__(self):
        super().__init__()
        self.parts = [fmm.Sphere(), fmm.FlatTorus(), fmm.Euclidean()]

    def _each(self, op, *xs):
        blocks = zip(*(x.split(BLOCKS, -1) for x in xs))
        return torch.cat([getattr(m, op)(*b) for m, b in zip(self.parts, blocks)], -1)

    def expmap(self, x, u):
        return self._each("expmap", x, u)

    def logmap(self, x, y):
        return self._each("logmap", x, y)

    def projx(self, x):
        return self._each("projx", x)

    def proju(self, x, u):
        return self._each("proju", x, u)


def pair(name):
    """(fastflow manifold, flow_matching manifold, dimension)."""
    if name == "product":
        ours = ff.Product((ff.Sphere(), 3), (ff.FlatTorus(), 2), (ff.Euclidean(), 2))
        return ours, FMProduct(), sum(BLOCKS)
    return getattr(ff, name)(), getattr(fmm, name)(), 3


def points(theirs, n, d, g, dtype=torch.float32):
    """n points on the manifold (projx of Gaussians; the torus spread over several turns first)."""
    return theirs.projx(torch.randn(n, d, generator=g, dtype=dtype) * 4)


MANIFOLDS = ["Euclidean", "Sphere", "FlatTorus", "product"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", MANIFOLDS)
def test_maps_match_flow_matching(name, dtype):
    ours, theirs, d = pair(name)
    g = torch.Generator().manual_seed(1)
    x, y = points(theirs, 8, d, g, dtype), points(theirs, 8, d, g, dtype)
    y[0] = x[0]  # log of a point to itself, and of a nearby point: the small-distance branch
    y[1] = theirs.projx(x[1] + 1e-5)
    u = theirs.proju(x, torch.randn(8, d, generator=g, dtype=dtype) * 2)
    u[2] *= 1e-6  # a tiny tangent vector: exp falls back to the retraction
    raw = torch.randn(8, d, generator=g, dtype=dtype) * 5
    for a, b in ((ours.expmap(x, u), theirs.expmap(x, u)), (ours.logmap(x, y), theirs.logmap(x, y)),
                 (ours.projx(raw), theirs.projx(raw)), (ours.proju(x, raw), theirs.proju(x, raw))):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=dtype)
    torch.testing.assert_close(ff.geodesic(ours, x, y)(t), fmm.geodesic(theirs, x, y)(t))
    assert isinstance(ours, ff.Manifold) and isinstance(ours, torch.nn.Module)


def test_sphere_dist_and_dtype_and_product_checks():
    g = torch.Generator().manual_seed(2)
    x, y = points(fmm.Sphere(), 4, 3, g), points(fmm.Sphere(), 4, 3, g)
    torch.testing.assert_close(ff.Sphere().dist(x, y, keepdim=True), fmm.Sphere().dist(x, y, keepdim=True))
    with pytest.raises(TypeError, match="^x"):
        ff.Sphere().logmap(x.half(), y.half())
    prod = ff.Product((ff.Sphere(), 3), (ff.Euclidean(), 2))
    with pytest.raises(ValueError, match="^x"):
        prod.projx(torch.randn(4, 4))
    with pytest.raises(TypeError, match=r"^factors\[1\]"):
        ff.Product((ff.Sphere(), 3), (ff.Euclidean(), 0))
    with pytest.raises(TypeError):
        ff.Manifold()  # abstract, as flow_matching's


def make_sample_inputs(theirs, d, g, n=6):
    x_0, x_1 = points(theirs, n, d, g), points(theirs, n, d, g)
    t = torch.rand(n, generator=g)
    t[0], t[1] = 0.0, 1.0  # both ends: a zero tangent (retraction branch) at t = 0
    return x_0, x_1, t


@pytest.mark.parametrize("scheduler", ["CondOTScheduler", "PolynomialConvexScheduler"])
@pytest.mark.parametrize("name", ["Sphere", "FlatTorus", "product"])
def test_geodesic_path_sample_matches_flow_matching(name, scheduler):
    ours, theirs, d = pair(name)
    args = (2.0,) if scheduler == "PolynomialConvexScheduler" else ()
    g = torch.Generator().manual_seed(3)
    x_0, x_1, t = make_sample_inputs(theirs, d, g)
    a = ff.GeodesicProbPath(getattr(ff, scheduler)(*args), ours).sample(x_0=x_0, x_1=x_1, t=t)
    b = FMGeodesic(getattr(fms, scheduler)(*args), theirs).sample(x_0=x_0, x_1=x_1, t=t)
    assert isinstance(a, ff.PathSample)
    for k in ("x_t", "dx_t", "t", "x_0", "x_1"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), msg=k)


def test_geodesic_path_on_extra_dimensions_is_per_point():
    """[B, N, D] points (flow_matching takes [B, D] only): the same as the [B * N, D] batch."""
    ours, theirs, d = pair("Sphere")
    g = torch.Generator().manual_seed(4)
    x_0, x_1 = points(theirs, 12, d, g).view(4, 3, d), points(theirs, 12, d, g).view(4, 3, d)
    t = torch.rand(4, generator=g)
    a = ff.GeodesicProbPath(ff.CondOTScheduler(), ours).sample(x_0, x_1, t)
    b = FMGeodesic(fms.CondOTScheduler(), theirs).sample(x_0.view(12, d), x_1.view(12, d), t.repeat_interleave(3))
    torch.testing.assert_close(a.x_t, b.x_t.view(4, 3, d))
    torch.testing.assert_close(a.dx_t, b.dx_t.view(4, 3, d))


@pytest.mark.parametrize("name", ["Sphere", "FlatTorus"])
def test_geodesic_path_gradients_match_flow_matching(name):
    ours, theirs, d = pair(name)
    grads = []
    for path in (ff.GeodesicProbPath(ff.CondOTScheduler(), ours), FMGeodesic(fms.CondOTScheduler(), theirs)):
        g = torch.Generator().manual_seed(5)
        x_0, x_1, t = make_sample_inputs(theirs, d, g)
        x_0.requires_grad_(), x_1.requires_grad_()
        w1, w2 = torch.randn(6, d, generator=g), torch.randn(6, d, generator=g)
        s = path.sample(x_0=x_0, x_1=x_1, t=t)
        ((s.x_t * w1).sum() + (s.dx_t * w2).sum()).backward()
        grads.append((x_1.grad, x_0.grad))
    for a, b in zip(*grads):
        assert a.isfinite().all()
        ok = b.isfinite().all(1)  # flow_matching's sphere: NaN at t = 0 (see the test below)
        assert ok[1:].all() and bool(ok[0]) == (name == "FlatTorus")
        torch.testing.assert_close(a[ok], b[ok])


def test_sphere_gradients_at_zero_tangent_are_the_retractions():
    """At t = 0, x_t = exp_{x_0}(0) takes the retraction projx(x_0 + t v) branch; flow_matching's
    gradient is NaN there (the unused closed form's 0 * inf), fastflow's is the branch's own."""
    g = torch.Generator().manual_seed(8)
    sphere = fmm.Sphere()
    x_0, x_1 = points(sphere, 4, 3, g).requires_grad_(), points(sphere, 4, 3, g).requires_grad_()
    w1, w2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    s = ff.GeodesicProbPath(ff.CondOTScheduler(), ff.Sphere()).sample(x_0, x_1, torch.zeros(4))
    ours = torch.autograd.grad((s.x_t * w1).sum() + (s.dx_t * w2).sum(), (x_0, x_1))
    v = sphere.logmap(x_0, x_1)
    x_t, dx_t = torch.func.jvp(lambda k: sphere.projx(x_0 + k * v), (torch.zeros(4, 1),), (torch.ones(4, 1),))
    ref = torch.autograd.grad((x_t * w1).sum() + (dx_t * w2).sum(), (x_0, x_1))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_geodesic_path_checks_name_the_argument():
    path = ff.GeodesicProbPath(ff.CondOTScheduler(), ff.Sphere())
    x = ff.Sphere().projx(torch.randn(4, 3))
    t = torch.rand(4)
    cases = [((x, x, t.view(4, 1)), ValueError, "^t"), ((x, x, t[:3]), ValueError, "^t"),
             ((x[:3], x, t), ValueError, "^x_0"), ((x, x, t + 2), ValueError, "^t"),
             ((x, x.tolist(), t), TypeError, "^x_1"), ((x, x, torch.ones(4, dtype=torch.int64)), TypeError, "^t"),
             ((x, x[:, 0], t), ValueError, "^x_1")]
    for args, err, match in cases:
        with pytest.raises(err, match=match):
            path.sample(*args)
    with pytest.raises(TypeError, match="^manifold"):
        ff.GeodesicProbPath(ff.CondOTScheduler(), "sphere")
    with pytest.raises(TypeError, match="^scheduler"):
        ff.GeodesicProbPath(None, ff.Sphere())


class Field(torch.nn.Module):
    """A fixed random linear field u(x, t) = (1 + t) W x + scale * b (ambient: not tangent)."""

    def __init__(self, d, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(d, d, generator=g) * 0.5)
        self.b = torch.randn(d, generator=g)

    def forward(self, x, t, scale=1.0):
        return x @ self.W.T * (1 + t) + scale * self.b


@pytest.mark.parametrize("proj", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("name", ["Sphere", "FlatTorus", "product"])
def test_solver_matches_flow_matching(name, method, proj):
    ours, theirs, d = pair(name)
    f = Field(d)
    x_init = points(theirs, 5, d, torch.Generator().manual_seed(6))
    projx, proju = proj
    for kw in (dict(step_size=0.1, time_grid=torch.tensor([0.0, 0.25, 0.5, 1.0]), return_intermediates=True),
               dict(step_size=None, time_grid=torch.tensor([0.0, 0.6, 0.2, 1.0]), return_intermediates=True),
               dict(step_size=0.125)):
        kw.update(method=method, projx=projx, proju=proju, scale=0.5)
        a = ff.RiemannianODESolver(ours, f).sample(x_init, **kw)
        b = FMRiemannian(theirs, f).sample(x_init, **kw)
        assert a.grad_fn is None
        torch.testing.assert_close(a, b)


def solver_grads(solver, manifold, on, d, method, **kw):
    """d(loss)/d(W, x_init) of one enable_grad run from points drawn on ``on`` (a flow_matching
    manifold); the loss sums the cubes of the returned states."""
    f = Field(d, seed=1)
    x_init = points(on, 4, d, torch.Generator().manual_seed(7)).requires_grad_()
    xs = solver(manifold, f).sample(x_init, step_size=0.25, method=method, enable_grad=True, **kw)
    return torch.autograd.grad((xs ** 3).sum(), (f.W, x_init))


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_solver_gradients_match_flow_matching(method):
    # the final state: projections only, the same gradients
    for a, b in zip(solver_grads(ff.RiemannianODESolver, ff.Sphere(), fmm.Sphere(), 3, method),
                    solver_grads(FMRiemannian, fmm.Sphere(), fmm.Sphere(), 3, method)):
        torch.testing.assert_close(a, b)
    # intermediates, read off geodesics: flow_matching's sphere gives NaN through the t = 0 one
    # (exp at a zero tangent), so they are compared with the runs that stop at each time
    grid = torch.tensor([0.0, 0.5, 1.0])
    kw = dict(time_grid=grid, return_intermediates=True)
    ours = solver_grads(ff.RiemannianODESolver, ff.Sphere(), fmm.Sphere(), 3, method, **kw)
    theirs = solver_grads(FMRiemannian, fmm.Sphere(), fmm.Sphere(), 3, method, **kw)
    assert all(b.isnan().any() for b in theirs)
    ends = [solver_grads(FMRiemannian, fmm.Sphere(), fmm.Sphere(), 3, method, time_grid=grid[:k]) for k in (2, 3)]
    x_init = points(fmm.Sphere(), 4, 3, torch.Generator().manual_seed(7)).requires_grad_()
    (start,) = torch.autograd.grad((fmm.Sphere().projx(x_init) ** 3).sum(), x_init)  # t = 0: the retraction
    ref = (ends[0][0] + ends[1][0], ends[0][1] + ends[1][1] + start)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["FlatTorus", "product"])
def test_solver_gradients_with_intermediates_match_flow_matching(name):
    ours, theirs, d = pair(name)
    if name == "product":  # the sphere factor NaNs in flow_matching (above): torus x R^2 x R^2 here
        ours = ff.Product((ff.FlatTorus(), 3), (ff.FlatTorus(), 2), (ff.Euclidean(), 2))
        theirs = FMProduct()
        theirs.parts[0] = fmm.FlatTorus()
    kw = dict(time_grid=torch.tensor([0.0, 0.3, 1.0]), return_intermediates=True)
    for a, b in zip(solver_grads(ff.RiemannianODESolver, ours, theirs, d, "midpoint", **kw),
                    solver_grads(FMRiemannian, theirs, theirs, d, "midpoint", **kw)):
        torch.testing.assert_close(a, b)


def test_solver_starts_at_time_grid_start():
    """With step_size, steps run from time_grid[0] (flow_matching 1.0.10 starts them at 0 whatever
    time_grid[0] is: a bug), the same as the explicit grid; a single step may span the interval."""
    seen = []

    def model(x, t):
        seen.append(float(t))
        return torch.ones_like(x)

    solver = ff.RiemannianODESolver(ff.Euclidean(), model)
    x = torch.zeros(2, 3)
    a = solver.sample(x, step_size=0.25, time_grid=torch.tensor([0.5, 1.0]))
    assert seen == [0.5, 0.75]
    torch.testing.assert_close(a, torch.full((2, 3), 0.5))
    b = solver.sample(x, step_size=None, time_grid=torch.tensor([0.5, 0.75, 1.0]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(solver.sample(x, step_size=1.0), torch.ones(2, 3))


def test_solver_checks_and_module_parity():
    solver = ff.RiemannianODESolver(ff.Sphere(), Field(3))
    x = ff.Sphere().projx(torch.randn(2, 3))
    with pytest.raises(ValueError, match="^method"):
        solver.sample(x, 0.1, method="dopri5")
    with pytest.raises(ValueError, match="^step_size"):
        solver.sample(x, -0.1)
    with pytest.raises(ValueError, match="^time_grid"):
        solver.sample(x, 0.1, time_grid=torch.tensor([[0.0, 1.0]]))
    with pytest.raises(TypeError, match="^x_init"):
        solver.sample(x.tolist(), 0.1)
    with pytest.raises(TypeError, match="^manifold"):
        ff.RiemannianODESolver(None, Field(3))
    theirs = FMRiemannian(fmm.Sphere(), Field(3))
    assert isinstance(solver, ff.Solver) and list(solver.state_dict()) == list(theirs.state_dict())


def test_public_names():
    import importlib
    for mod in ("utils.manifolds", "path", "solver"):
        theirs = importlib.import_module(f"flow_matching.{mod}")
        ours = importlib.import_module(f"fastflow.{mod}")
        assert {n for n in theirs.__all__ if not hasattr(ours, n)} == set(), mod
        assert all(hasattr(ff, n) for n in theirs.__all__), mod
    from fastflow.utils.manifolds import FlatTorus, Product, Sphere  # noqa: F401
    assert ff.utils.Sphere is ff.Sphere is ffm.Sphere and ff.path.GeodesicProbPath is ff.GeodesicProbPath
    assert math.isclose(float(ff.FlatTorus().projx(torch.tensor([-0.5]))), 2 * math.pi - 0.5, rel_tol=1e-6)
