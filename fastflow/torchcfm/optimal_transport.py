"""torchcfm's minibatch optimal transport: ``OTPlanSampler`` and ``wasserstein``, without POT.

The plan between two minibatches (uniform marginals ``a = 1/n0``, ``b = 1/n1``) for the squared
Euclidean cost ``M_ij = |x0_i - x1_j|^2``:

    exact        argmin_P <P, M>,  P 1 = a, P^T 1 = b        (a permutation / n when n0 = n1)
    sinkhorn     argmin_P <P, M> - reg H(P)                   (the same marginals)
    unbalanced   argmin_P <P, M> + reg KL(P | a b^T) + reg_m (KL(P 1 | a) + KL(P^T 1 | b))
    partial      entropic partial transport of mass m = 1: with uniform marginals of mass 1 it
                 moves all of it, so its plan is the sinkhorn plan

The entropic plans are ``P_ij = u_i K_ij v_j`` with ``K = exp(-M / reg) c`` (``c = 1`` balanced,
``a b^T`` unbalanced), the scalings iterated in the log domain in float64 on the data's device:
``log u = fi (log a - logsumexp_j(log K_ij + log v_j))`` and likewise ``log v``, with ``fi = 1``
balanced and ``reg_m / (reg_m + reg)`` unbalanced, in POT's order (the column scaling first when
balanced, the row scaling first when unbalanced). POT iterates the scalings ``u = exp(f / reg)``
themselves, which underflow once ``M / reg`` passes ~745 (torchcfm's default reg of 0.05 on
unnormalised costs past ~37; POT then warns and torchcfm falls back to a uniform plan); the log
domain reaches the same fixed point without underflow. Where every row and column of ``K`` keeps
an entry above e^-600 the scalings themselves are iterated, as POT does, at POT's speed (the log
domain costs several times as much per iteration), falling back to the log domain if they
overflow. The
stopping rules are POT's: at most 1000 iterations, a marginal error below 1e-9 (checked every 10)
for sinkhorn, a relative change of the scalings below 1e-6 for unbalanced. So the sampler's sinkhorn
and unbalanced plans are POT's (to ~1e-14 where POT does not underflow). ``wasserstein`` allows
1e7 iterations, as torchcfm; where 1000 do not converge, Newton's method on the dual finishes
(~10-60 steps of a dense ``n0 + n1`` solve: under a second for a few hundred points, ~30-50 s
for 1024 + 1024 at ``reg`` 1e-3 to 1e-4) what Sinkhorn would take minutes to days to, at a
cost within POT's tolerance of POT's (~1e-9 relative). The partial plan is the
fixed point of POT's partial iteration, which its 1000 iterations often stop short of (at SB-CFM's
reg = 0.18 for sigma = 0.3, 4% of the mass away). ``exact`` solves the assignment with SciPy's
``linear_sum_assignment`` (POT's network simplex gives the same plan for a unique optimum), or
the transport linear program with SciPy's HiGHS when the batch sizes differ.

Pairs are drawn from the plan with NumPy's global generator, as torchcfm draws them
(``np.random.seed`` reproduces its pairs). ``num_threads`` is accepted and unused.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from .. import _checks, _transforms

METHODS = ("exact", "sinkhorn", "unbalanced", "partial")
_MAX_ITER = 1000
_NEWTON_MAX_SIZE = 4096  # n0 + n1: the largest dense Newton system solved (one solve: 0.7 s on 2 cores)
_NEWTON_MAX_STEPS = 100
_NEWTON_FIRST_STEPS = 30  # from Sinkhorn's point; it converges in ~10-25 where it does, else anneal


def _cost(x0: Tensor, x1: Tensor, normalize: bool = False) -> Tensor:
    """Squared Euclidean costs between the flattened points, float64 (no graph: the plan is a
    constant of the loss, as torchcfm detaches it)."""
    _checks.tensor("x0", x0, _checks.REAL_DTYPES, ndim_min=1)
    _checks.tensor("x1", x1, _checks.REAL_DTYPES, ndim_min=1)
    if x0.shape[1:] != x1.shape[1:] or x0.shape[0] == 0 or x1.shape[0] == 0:
        raise ValueError(f"x0, x1: expected non-empty batches of one point shape, got {tuple(x0.shape)} "
                         f"and {tuple(x1.shape)}")
    _checks.same_device("x1", x1, x0)
    if _transforms.vmapped() and (_transforms.wrapped(x0) or _transforms.wrapped(x1)):
        raise ValueError("x0, x1: an OT plan cannot be computed under vmap (each element would need its own "
                         "plan, solved on the host); pair outside vmap, or loop")
    a = x0.detach().reshape(x0.shape[0], -1).double()
    b = x1.detach().reshape(x1.shape[0], -1).double()
    M = torch.cdist(a, b) ** 2
    _checks.values("x0, x1", torch.isfinite(M).all(),
                   "the squared distances must be finite (a point is NaN or inf, or too large to square)")
    if normalize:
        M = M / M.max().clamp_min(torch.finfo(M.dtype).tiny)
    return M


def host(t: Tensor) -> np.ndarray:
    """``t`` as a NumPy array (under torch.func's grad / jvp, which refuse ``.numpy()`` on any
    tensor, through a list: the plan is a constant there)."""
    return np.asarray(t.cpu().tolist()) if _transforms.transformed() else t.cpu().numpy()


def _scipy(name: str):
    """scipy.optimize's ``name`` (and scipy.sparse imported): exact OT's one optional dependency."""
    try:
        import scipy.optimize
        import scipy.sparse  # noqa: F401  (the transport program's constraints)
    except ImportError:
        raise ImportError("exact OT needs scipy (pip install scipy)") from None
    return getattr(scipy.optimize, name)


def assignment(M: Tensor) -> np.ndarray:
    """``cols`` with row ``i`` matched to column ``cols[i]`` at least total cost (square ``M``)."""
    rows, cols = _scipy("linear_sum_assignment")(host(M))
    return cols[rows.argsort()]


def exact_plan(M: Tensor) -> Tensor:
    """The exact plan of costs ``M`` between uniform marginals: an assignment / n for batches of one
    size, else the transport linear program (SciPy's HiGHS; ~0.35 s for 256 x 300 on one core)."""
    n0, n1 = M.shape
    if n0 == n1:
        p = torch.zeros_like(M)
        p[torch.arange(n0), torch.as_tensor(assignment(M), device=M.device)] = 1.0 / n0
        return p
    linprog = _scipy("linprog")
    from scipy.sparse import coo_matrix
    rows = np.concatenate([np.repeat(np.arange(n0), n1), n0 + np.tile(np.arange(n1), n0)])
    marginals = coo_matrix((np.ones(2 * n0 * n1), (rows, np.tile(np.arange(n0 * n1), 2))), shape=(n0 + n1, n0 * n1))
    solved = linprog(host(M).ravel(), A_eq=marginals, b_eq=np.r_[np.full(n0, 1 / n0), np.full(n1, 1 / n1)],
                     bounds=(0, None), method="highs")
    if solved.status != 0:
        raise RuntimeError(f"exact OT: the transport linear program failed ({solved.message})")
    return torch.as_tensor(solved.x.clip(min=0).reshape(n0, n1), dtype=M.dtype, device=M.device)


def entropic_plan(M: Tensor, reg: float, reg_m=None, max_iter: int = _MAX_ITER) -> Tensor:
    """The entropic plan of costs ``M`` between uniform marginals, float64; ``reg_m`` (a number or a
    pair for the rows and columns): unbalanced.

    A balanced plan that POT's 1000 iterations leave unconverged, when ``max_iter`` allows more
    (``wasserstein``'s 1e7), is finished by Newton's method (``_newton``, then ``_annealed``
    if that fails): Sinkhorn's rate near the fixed point falls with ``reg`` until it stalls
    (128 points at ``reg = 0.1`` miss POT's tolerance after 1e6 iterations), where Newton needs
    ~20 steps. Sinkhorn goes on only if both fail.

    Where every row and column of ``K`` holds an entry above e^-600 (relative to the largest, when
    balanced: a constant factor of ``K`` moves into the scalings), the scalings themselves are
    iterated, as POT does (matrix-vector products, several times faster than the log domain's
    exponentials; entries below e^-700 are 0, not subnormal numbers, which cost the CPU ~100x);
    if they overflow, or elsewhere, their logarithms are."""
    n0, n1 = M.shape
    log_k = -M / reg
    _checks.values("reg", torch.isfinite(log_k).all(), f"{reg} is too small for these costs (M / reg overflows)")
    log_a = torch.full((n0,), -math.log(n0), dtype=M.dtype, device=M.device)
    log_b = torch.full((n1,), -math.log(n1), dtype=M.dtype, device=M.device)
    fi = (1.0, 1.0)
    if reg_m is not None:  # POT's reference measure a b^T (its reg_type="kl")
        log_k = log_k + log_a[:, None] + log_b[None, :]
        fi = [1.0 if math.isinf(r) else r / (r + reg) for r in (reg_m if isinstance(reg_m, tuple) else (reg_m,) * 2)]
    top = float(log_k.max()) if reg_m is None else 0.0
    finish = None
    if reg_m is None and max_iter > _MAX_ITER and n0 + n1 <= _NEWTON_MAX_SIZE:
        def finish(log_k, f):
            found = _newton(log_k, f, _NEWTON_FIRST_STEPS)
            return found[0] if found is not None else _annealed(M, reg)
    shifted = log_k - top
    if top < 600 and float(shifted.amax(1).min()) > -600 and float(shifted.amax(0).min()) > -600:
        K = _exp(shifted)
        plan = _iterate(_Scalings(K, log_a.exp(), log_b.exp(), fi), reg_m is None, max_iter, finish)
        if plan is not None:
            return plan
    return _iterate(_Logs(log_k, log_a, log_b, fi), reg_m is None, max_iter, finish)


def _newton(log_k: Tensor, f: Tensor, max_steps: int = _NEWTON_MAX_STEPS) -> Optional[tuple]:
    """The balanced entropic plan from the rows' log-scalings ``f`` (``P = exp(log_k + f_i + g_j)``,
    the columns' ``g`` computed from ``f`` by the first Sinkhorn sweep) by
    Newton's method on the dual ``D(f, g) = <f, a> + <g, b> - sum P`` (concave; gradient
    ``(a - P 1, b - P^T 1)``, Hessian ``-[[diag P 1, P], [P^T, diag P^T 1]]``).

    At a small ``reg`` the plan splits into blocks whose couplings are below float64's
    resolution, so the Hessian is singular in the directions that move mass between blocks (the
    directions Sinkhorn crawls along). The step is damped as Levenberg-Marquardt's,
    ``(H + lam |grad| I) d = grad`` (locally quadratic, as the damping vanishes with the
    gradient), with ``lam`` shrunk after a full step and grown after a shortened one, and
    backtracked until ``D`` rises enough; the rise is summed as ``s <d, (a, b)> - sum P_ij
    expm1(s (d_i + d_j))``, as ``D`` itself (potentials of ~``M / reg``) would cancel to noise.
    Each step starts from a Sinkhorn sweep, so the stopping rule is POT's (column marginals
    within 1e-9 after the row update). The plan and its log-scalings, or None if ``max_steps``
    do not reach it."""
    n0, n1 = log_k.shape
    log_a = torch.full_like(f, -math.log(n0))
    log_b = torch.full((n1,), -math.log(n1), dtype=f.dtype, device=f.device)
    sweep = _Logs(log_k, log_a, log_b, (1.0, 1.0))
    ab = torch.cat([log_a, log_b]).exp()
    eye = torch.eye(n0 + n1, dtype=log_k.dtype, device=log_k.device)
    lam = 1e-2
    for _ in range(max_steps):
        g = sweep.cols(f)
        f = sweep.rows(g)
        P = _exp(log_k + f[:, None] + g[None, :])
        sums = torch.cat([P.sum(1), P.sum(0)])
        grad = ab - sums
        if float(torch.linalg.vector_norm(grad[n0:])) < 1e-9:
            return P, f, g
        H = torch.diag(sums)
        H[:n0, n0:], H[n0:, :n0] = P, P.T
        d = torch.linalg.solve(H + lam * float(torch.linalg.vector_norm(grad)) * eye, grad)
        slope, step = float(grad @ d), 1.0
        while not _rise(P, d, ab, step) >= 1e-4 * step * slope:
            step /= 2
            if step < 1e-12:
                return None
        lam = max(lam / 4, 1e-6) if step == 1.0 else lam * 4
        f, g = f + step * d[:n0], g + step * d[n0:]
    return None


def _annealed(M: Tensor, reg: float) -> Optional[Tensor]:
    """The plan at ``reg`` by ``_newton`` at regs falling fourfold from ``max M / 4``, each started
    from the last one's potentials ``reg log u`` (epsilon scaling): at a ``reg`` far below the
    costs' gaps, damped Newton from a Sinkhorn start crawls too (128 points at ``reg = 1e-4``:
    the column error still 0.03 after 200 steps; annealed, 10 stages of ~5-20 steps)."""
    f, plan = M.new_zeros(M.shape[0]), None
    r_prev = r = max(float(M.max()), reg)
    while r > reg:
        r = max(r / 4, reg)
        found = _newton(-M / r, f * (r_prev / r))
        if found is None:
            return None
        plan, f, _ = found
        r_prev = r
    return plan


def _rise(P: Tensor, d: Tensor, ab: Tensor, step: float) -> float:
    """``D(f + step d_f, g + step d_g) - D(f, g)`` at the plan ``P`` of ``f, g``."""
    n0 = P.shape[0]
    return float(step * (d @ ab) - (P * torch.expm1(step * (d[:n0, None] + d[None, n0:]))).sum())


class _Scalings:
    """Sinkhorn's updates on the scalings ``u, v`` (``P = u K v``)."""

    may_overflow = True

    def __init__(self, K, a, b, fi):
        self.K, self.a, self.b, self.fi, self.shape = K, a, b, fi, K.shape

    def start(self, n):
        return torch.ones(n, dtype=self.K.dtype, device=self.K.device)

    def rows(self, v):
        return (self.a / (self.K @ v)) ** self.fi[0]

    def cols(self, u):
        return (self.b / (self.K.T @ u)) ** self.fi[1]

    def column_sums(self, u, v):
        return v * (self.K.T @ u)

    def plan(self, u, v):
        return u[:, None] * self.K * v[None, :]

    def logs(self, u):
        """``log K`` (of the shifted costs) and the rows' log-scalings, for ``_newton``."""
        return self.K.log(), u.log()  # (log 0 = -inf: the entries set to 0)

    def change(self, u, u_prev):
        """POT's: the largest change of a scaling relative to its size (or 1)."""
        return float((u - u_prev).abs().max() / torch.stack([u.abs().max(), u_prev.abs().max(), u.new_ones(())]).max())


class _Logs:
    """The same updates on ``log u, log v``."""

    may_overflow = False

    def __init__(self, log_k, log_a, log_b, fi):
        self.log_k, self.log_a, self.log_b, self.fi, self.shape = log_k, log_a, log_b, fi, log_k.shape

    def start(self, n):
        return torch.zeros(n, dtype=self.log_k.dtype, device=self.log_k.device)

    def rows(self, g):
        return self.fi[0] * (self.log_a - _logsumexp(self.log_k + g[None, :], dim=1))

    def cols(self, f):
        return self.fi[1] * (self.log_b - _logsumexp(self.log_k + f[:, None], dim=0))

    def column_sums(self, f, g):
        return (g + _logsumexp(self.log_k + f[:, None], dim=0)).exp()

    def plan(self, f, g):
        return (self.log_k + f[:, None] + g[None, :]).exp()

    def logs(self, f):
        return self.log_k, f

    def change(self, f, f_prev):
        """``_Scalings.change`` of ``exp(f)``, without forming it: divided through by its
        denominator ``e^top``, where a scaling past e^709 would overflow."""
        top = torch.maximum(f.max(), f_prev.max()).clamp_min(0.0)
        return float(((f - top).exp() - (f_prev - top).exp()).abs().max())


def _iterate(domain, balanced: bool, max_iter: int, finish=None) -> Optional[Tensor]:
    """POT's loop, stopping rules and warning on ``domain``'s updates; None if the scalings overflow.
    ``finish(log_k, log u)``, if given, is tried once POT's ``_MAX_ITER`` have not converged; its
    plan, if any, is returned."""
    n0, n1 = domain.shape
    u, v = domain.start(n0), domain.start(n1)
    b = torch.full_like(v, 1 / n1)
    converged = True
    for it in range(max_iter):  # (any start reaches the fixed point)
        if finish is not None and it == _MAX_ITER:
            plan = finish(*domain.logs(u))
            if plan is not None:
                return plan
        u_prev, v_prev = u, v
        if balanced:  # POT's order: v (columns) from u, then u (rows) from v
            v = domain.cols(u)
            u = domain.rows(v)
            if it % 10 == 0:  # POT: the column marginals' error, every 10 iterations
                err = float(torch.linalg.vector_norm(domain.column_sums(u, v) - b))
                if err != err and domain.may_overflow:  # NaN: the scalings overflowed
                    return None
                if err < 1e-9:
                    break
        else:  # POT: u first; the change of u, v relative to their size (or 1)
            u = domain.rows(v)
            v = domain.cols(u)
            change = max(domain.change(u, u_prev), domain.change(v, v_prev))
            if change != change and domain.may_overflow:
                return None
            if change < 1e-6:
                break
    else:
        converged = False
    plan = domain.plan(u, v)
    if domain.may_overflow and not bool(torch.isfinite(plan).all()):
        return None
    if balanced and not converged:  # POT's sinkhorn warns so (its unbalanced loop does not)
        warnings.warn("Sinkhorn did not converge. You might want to increase the number of iterations "
                      "`numItermax` or the regularization parameter `reg`.")
    return plan


def _exp(x: Tensor) -> Tensor:
    """``exp(x)`` with the results below e^-700 set to 0 rather than subnormal."""
    return torch.where(x < -700.0, 0.0, x.clamp_min(-700.0).exp())


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    """``logsumexp`` with the terms below e^-700 of the largest counted as e^-700 (a relative change
    under 1e-300): their exponentials would be subnormal numbers, which cost the CPU ~100x as much
    (a 256 x 256 plan at reg 0.05 took a minute)."""
    top = x.amax(dim=dim, keepdim=True)
    return top.squeeze(dim) + (x - top).clamp_min(-700.0).exp().sum(dim).log()


def _marginal_weights(reg_m):
    """``reg_m``: a number > 0 (inf: that marginal held exactly), or a pair (rows, columns), as POT's."""
    pair = tuple(reg_m) if isinstance(reg_m, (tuple, list)) else (reg_m, reg_m)
    if len(pair) != 2 or not all(_checks.scalar("reg_m", r) > 0 for r in pair):
        raise ValueError(f"reg_m: expected a value > 0 or a pair of them, got {reg_m!r}")
    return reg_m if not isinstance(reg_m, (tuple, list)) else tuple(float(r) for r in pair)


class OTPlanSampler:
    """torchcfm's ``OTPlanSampler``: the plan (``get_map``, a NumPy ``[n0, n1]`` array) and pairs
    drawn from it (``sample_plan``, ``sample_plan_with_labels``, ``sample_trajectory``).

    ``ot_fn`` is torchcfm's solver attribute, a POT-style ``(a, b, M) -> plan`` of NumPy arrays:
    by default fastflow's solver of ``method`` (which takes the uniform marginals the sampler
    passes); one set in its place (POT's ``ot.emd`` with more iterations, say) computes the plan
    from then on, with the marginals and the cost matrix as torchcfm passes them."""

    def __init__(self, method: str, reg: float = 0.05, reg_m: float = 1.0, normalize_cost: bool = False,
                 num_threads: Union[int, str] = 1, warn: bool = True) -> None:
        self.method = _checks.choice("method", method, METHODS)
        # (exact OT has no reg: torchcfm takes any value there, None included)
        self.reg = reg if method == "exact" and reg is None else _checks.scalar("reg", reg, finite=True)
        if method != "exact" and self.reg <= 0:
            raise ValueError(f"reg: expected a value > 0 for method={method!r}, got {reg}")
        self.reg_m = _marginal_weights(reg_m) if method == "unbalanced" else reg_m  # (unused otherwise)
        self.normalize_cost, self.num_threads, self.warn = bool(normalize_cost), num_threads, bool(warn)

    @property
    def ot_fn(self):
        return self.__dict__["_ot_fn"] if "_ot_fn" in self.__dict__ else self._solve

    @ot_fn.setter
    def ot_fn(self, fn) -> None:
        if not callable(fn):
            raise TypeError(f"ot_fn: expected a callable (a, b, M) -> plan, got {type(fn).__name__}")
        self._ot_fn = fn

    @ot_fn.deleter
    def ot_fn(self) -> None:  # back to fastflow's solver
        self.__dict__.pop("_ot_fn", None)

    def _solve(self, a: np.ndarray, b: np.ndarray, M: np.ndarray) -> np.ndarray:
        """The default ``ot_fn``: this sampler's method on costs ``M`` between uniform marginals."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        M = torch.as_tensor(np.asarray(M), dtype=torch.float64)
        if a.shape != (M.shape[0],) or b.shape != (M.shape[1],) or not (
                np.allclose(a, 1 / len(a), rtol=1e-9, atol=0) and np.allclose(b, 1 / len(b), rtol=1e-9, atol=0)):
            raise ValueError("a, b: fastflow's solvers take the uniform marginals of M's rows and columns "
                             "(the sampler's); set ot_fn to POT's solver for others")
        return host(self._solve_costs(M))

    def _solve_costs(self, M: Tensor) -> Tensor:
        if self.method == "exact":
            return exact_plan(M)
        return entropic_plan(M, self.reg, self.reg_m if self.method == "unbalanced" else None)

    def _plan(self, x0: Tensor, x1: Tensor) -> Tensor:
        return self._solve_costs(_cost(x0, x1, self.normalize_cost))

    @_transforms.eager_under_compile
    def get_map(self, x0: Tensor, x1: Tensor) -> np.ndarray:
        """The plan between the minibatches (torchcfm's NumPy array); a plan with no mass (an
        unbalanced plan of far-apart batches) becomes uniform, with a warning, as torchcfm's."""
        if "_ot_fn" in self.__dict__:  # one's own solver, called as torchcfm calls it
            M = host(_cost(x0, x1, self.normalize_cost))
            p = np.asarray(self._ot_fn(np.full(M.shape[0], 1 / M.shape[0]), np.full(M.shape[1], 1 / M.shape[1]), M))
            if p.shape != M.shape or not np.all(np.isfinite(p)):
                raise ValueError(f"ot_fn: expected a finite plan of shape {M.shape}, got "
                                 f"{'shape ' + str(p.shape) if p.shape != M.shape else 'NaN or infinite values'}")
        else:
            p = host(self._plan(x0, x1))
        if np.abs(p.sum()) < 1e-8:
            if self.warn:
                warnings.warn("Numerical errors in OT plan, reverting to uniform plan.")
            p = np.ones_like(p) / p.size
        return p

    @_transforms.eager_under_compile
    def sample_map(self, pi: np.ndarray, batch_size: int, replace: bool = True):
        """Index pairs ``(i, j)`` drawn from ``pi`` (NumPy's global generator, as torchcfm)."""
        p = pi.flatten()
        choices = np.random.choice(pi.shape[0] * pi.shape[1], p=p / p.sum(), size=batch_size, replace=replace)
        return np.divmod(choices, pi.shape[1])

    def sample_plan(self, x0: Tensor, x1: Tensor, replace: bool = True):
        i, j = self.sample_map(self.get_map(x0, x1), x0.shape[0], replace=replace)
        return x0[i], x1[j]

    def sample_plan_with_labels(self, x0: Tensor, x1: Tensor, y0=None, y1=None, replace: bool = True):
        i, j = self.sample_map(self.get_map(x0, x1), x0.shape[0], replace=replace)
        return x0[i], x1[j], None if y0 is None else y0[i], None if y1 is None else y1[j]

    @_transforms.eager_under_compile
    def sample_trajectory(self, X: Tensor) -> np.ndarray:
        """Trajectories through the populations ``X [bs, times, ...]``: each point steps to a
        point of the next time drawn from its row of the plan (a NumPy array, as torchcfm's)."""
        pis = [self.get_map(X[:, t], X[:, t + 1]) for t in range(X.shape[1] - 1)]
        indices = [np.arange(X.shape[0])]
        for pi in pis:
            indices.append(np.array([np.random.choice(pi.shape[1], p=pi[i] / pi[i].sum()) for i in indices[-1]]))
        return np.stack([X[:, t][indices[t]] for t in range(X.shape[1])], axis=1)


@_transforms.eager_under_compile
def wasserstein(x0: Tensor, x1: Tensor, method: Optional[str] = None, reg: float = 0.05, power: int = 2,
                **kwargs) -> float:
    """torchcfm's W1 / W2 between the minibatches (uniform weights): exact (``None``/``"exact"``)
    or entropic (``"sinkhorn"``: the cost of the sinkhorn plan)."""
    if power not in (1, 2):
        raise ValueError(f"power: expected 1 or 2, got {power!r}")
    method = _checks.choice("method", "exact" if method is None else method, ("exact", "sinkhorn"))
    if method == "sinkhorn" and not _checks.scalar("reg", reg, finite=True) > 0:
        raise ValueError(f"reg: expected a value > 0 for method='sinkhorn', got {reg}")
    M = _cost(x0, x1)
    if power == 1:
        M = M.sqrt()
    # (torchcfm lets POT's sinkhorn2 run up to 1e7 iterations here; it stops at 1e-9 long before)
    plan = exact_plan(M) if method == "exact" else entropic_plan(M, reg, max_iter=10**7)
    cost = float((plan * M).sum())
    return math.sqrt(cost) if power == 2 else cost


__all__ = ["OTPlanSampler", "wasserstein"]
