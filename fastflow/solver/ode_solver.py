"""ODESolver: flow_matching's API, fixed-grid methods run on the fused step kernel.

Grids follow torchdiffeq exactly (flow_matching's ODESolver calls it): with ``step_size``
the grid is ``t0 + k * step_size`` for ``k < ceil((t1 - t0) / step_size + 1)`` with its last
point set to ``t1`` (a shortened last step); without it, ``time_grid`` itself. Outputs at
``time_grid`` points are linearly interpolated inside a step as torchdiffeq does. Methods:
``euler``, ``midpoint``, ``heun`` (``heun2``), ``rk4`` (torchdiffeq's 3/8 rule); adaptive
methods (``dopri5``, ...) are handed to torchdiffeq when installed.

Prediction types (FORMULAS.md §2): the model may predict ``velocity``, ``x1`` or
``epsilon``; with a path the conversion ``u = A_t x + B_t pred`` is fused into the step.
With ``guidance_scale = w > 0`` the model is called with ``model_extras`` and with
``uncond_model_extras`` alone (an extra both calls need, an attention mask say, goes in
both), and ``(1 + w) out_cond - w out_uncond`` is mixed in the kernel.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .. import _checks, _memory, _transforms
from ..ops._registry import check_wide
from ..ops.step_combine import step_combine, stepper
from .base import Solver, check_step_size, check_steps, check_time_grid

FIXED_METHODS = ("euler", "midpoint", "heun", "heun2", "rk4")
PREDICTIONS = ("velocity", "x1", "epsilon")


def fixed_grid(time_grid: Tensor, step_size: Optional[float]) -> list[float]:
    """The integration grid torchdiffeq builds (decreasing grids by its time reversal)."""
    if step_size is None:
        return [float(v) for v in time_grid]
    sign = -1.0 if float(time_grid[-1]) < float(time_grid[0]) else 1.0
    t = time_grid * sign
    niters = torch.ceil((t[-1] - t[0]) / step_size + 1).item()
    check_steps(niters - 1, step_size)
    # at least one step: in fp32, 1 / step_size + 1 rounds to 1 for a step_size past ~1e7, and
    # torchdiffeq's grid is then [t1] alone (no step at all)
    grid = torch.arange(0, max(niters, 2), dtype=t.dtype) * step_size + t[0]
    grid[-1] = t[-1]
    return [sign * float(v) for v in grid]


class ODESolver(Solver):
    """``ODESolver(velocity_model, path=None, prediction="velocity", backend=None).sample(x_init, ...)``:
    ``velocity_model(x=x, t=t, **model_extras)`` predicts the velocity, or ``x1`` / ``epsilon`` with
    ``path`` (an affine path, whose scheduler converts them, fused into the step); ``backend``: the
    steps' (default: the thread's, see ``fastflow.backends``)."""

    def __init__(self, velocity_model: Callable, path=None, prediction: str = "velocity",
                 backend: Optional[str] = None):
        super().__init__()
        if not callable(velocity_model):
            raise TypeError("velocity_model: expected a callable model(x=..., t=...)")
        _checks.choice("prediction", prediction, PREDICTIONS)
        if prediction != "velocity" and path is None:
            raise ValueError(f"path: required to convert {prediction!r} predictions to velocity")
        self.velocity_model, self.path, self.prediction, self.backend = velocity_model, path, prediction, backend

    # -- one velocity evaluation as coefficients on (x, pred_cond, pred_uncond)
    def _conversion(self, t: float, graph: Optional[Tensor] = None) -> tuple:
        """``u = a x + b pred`` at time t (a = 0, b = 1 for velocity predictions): numbers, or 0-d
        tensors where the coefficients carry a gradient (a learnable scheduler's, or ``graph``'s: an
        adaptive solver's time that carries one, evaluated as the model saw it), which the steps then
        pass on as flow_matching's conversions do."""
        if self.prediction == "velocity":
            return 0.0, 1.0
        s = self.path.scheduler(torch.tensor([t], dtype=torch.float64) if graph is None
                                else graph.reshape(1).to(torch.float64))
        coef = [getattr(s, k) for k in ("alpha_t", "sigma_t", "d_alpha_t", "d_sigma_t")]
        # the checks read the values under any torch.func wrapper (vmap's: every element's)
        al, si, da, ds = vals = [_transforms.unwrapped(c.detach()).double() if isinstance(c, Tensor)
                                 else torch.tensor(float(c), dtype=torch.float64) for c in coef]
        if not all(bool(torch.isfinite(v).all()) for v in vals):
            raise ValueError(f"t: the path's scheduler is not finite at t = {t} (alpha_t, sigma_t, d_alpha_t, "
                             f"d_sigma_t = {', '.join(map(str, map(_number, vals)))}); start the grid where it is")
        if self.prediction == "x1" and bool((si == 0).any()):
            raise ValueError(f"t: an x1-prediction is singular where sigma_t = 0 (t = {t}); "
                             "use a grid that does not evaluate the model there (euler, midpoint)")
        if self.prediction == "epsilon" and bool((al == 0).any()):
            raise ValueError(f"t: an epsilon-prediction is singular where alpha_t = 0 (t = {t}); "
                             "start the grid after it")
        if any(isinstance(c, Tensor) and (c.requires_grad or _transforms.differentiated(c)) for c in coef):
            al, si, da, ds = (c.reshape(()) for c in coef)
        else:
            al, si, da, ds = map(float, vals)
        if self.prediction == "x1":
            return ds / si, (da * si - ds * al) / si
        return da / al, (ds * al - da * si) / al

    @_transforms.eager_under_compile  # (see Solver)
    def sample(self, x_init: Tensor, step_size: Optional[float] = None, method: str = "euler",
               atol: float = 1e-5, rtol: float = 1e-5, time_grid: Tensor = torch.tensor([0.0, 1.0]),
               return_intermediates: bool = False, enable_grad: bool = False, guidance_scale: float = 0.0,
               uncond_model_extras: Optional[dict] = None, verbose: bool = False, **model_extras):
        """Integrate from ``time_grid[0]`` to ``time_grid[-1]``; returns the final state, or the
        states at every ``time_grid`` point when ``return_intermediates``."""
        _checks.tensor("x_init", x_init, _checks.REAL_DTYPES, ndim_min=1)
        check_wide(self.backend, x_init=x_init)
        _checks.tensor("time_grid", time_grid)
        outputs = check_time_grid(time_grid)
        step_size = check_step_size(step_size)
        if (isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
                or not 0 <= guidance_scale <= _checks.FP32_MAX):
            raise ValueError(f"guidance_scale: expected a float in [0, 3.4e38] (finite in fp32, as the step's "
                             f"coefficients are), got {guidance_scale!r}")
        if guidance_scale > 0 and uncond_model_extras is None:
            raise ValueError("uncond_model_extras: required when guidance_scale > 0 (the unconditional call)")
        _constant_grid(time_grid, enable_grad)
        run = _Integration(self, x_init, time_grid, float(guidance_scale), uncond_model_extras)
        if method not in FIXED_METHODS:
            return self._torchdiffeq(run, x_init, step_size, method, atol, rtol, time_grid,
                                     return_intermediates, enable_grad, model_extras)
        grid = fixed_grid(time_grid.cpu().to(run.t_dtype), step_size)
        forward = outputs[-1] >= outputs[0]
        # the states at the time_grid points, each copied in as it is reached (as torchdiffeq
        # does): a model that modifies its input in place leaves the states returned as they were
        sol = x_init.new_empty((len(outputs), *x_init.shape)) if return_intermediates else None
        j = 1
        bar = _progress(verbose, len(grid) - 1)
        y0 = x_init
        with torch.set_grad_enabled(enable_grad), bar:
            if sol is not None:
                sol[0] = x_init
            grid_t = torch.tensor(grid, dtype=run.t_dtype)
            for t0, t1, dt in zip(grid[:-1], grid[1:], (grid_t[1:] - grid_t[:-1]).tolist()):
                # each state on memory of fastflow's allocator, which takes it back once nothing
                # holds the state any more (a model may keep the x it was given): no page faults
                last = t1 == grid[-1]  # the state returned: an ordinary (resizable) tensor
                out = None if enable_grad or last else _memory.recycled_like(y0)
                y1 = run.step(method, y0, t0, t1, dt, model_extras, out=out)
                while sol is not None and j < len(outputs) and (t1 >= outputs[j] if forward else t1 <= outputs[j]):
                    sol[j] = _interp(t0, t1, y0, y1, outputs[j], run.t_dtype, self.backend)
                    j += 1
                y0 = y1
                if verbose:
                    bar.update(1)
        return sol if return_intermediates else y0

    def compute_likelihood(self, x_1: Tensor, log_p0: Callable[[Tensor], Tensor], step_size: Optional[float],
                           method: str = "euler", atol: float = 1e-5, rtol: float = 1e-5,
                           time_grid: Tensor = torch.tensor([1.0, 0.0]), return_intermediates: bool = False,
                           exact_divergence: bool = False, enable_grad: bool = False, **model_extras):
        """``(x_0, log p_1(x_1))`` as flow_matching's: the ODE from t = 1 back to t = 0 with the
        velocity's divergence integrated alongside, ``log p_1(x_1) = log p_0(x_0) +
        int_1^0 div u_t(x_t) dt``. ``exact_divergence``: one autograd pass per dimension, else
        Hutchinson's estimate with one Rademacher probe (drawn from torch's generator as
        flow_matching draws it). ``time_grid`` must run from 1.0 to 0.0; with
        ``return_intermediates`` the states at its points come first.

        Integrated by torchdiffeq (any of its methods, as flow_matching does): the state carries
        autograd through the model, which the fused step kernels have no use for."""
        _checks.tensor("x_1", x_1, _checks.REAL_DTYPES, ndim_min=1)
        check_wide(self.backend, x_1=x_1)
        if not callable(log_p0):
            raise TypeError(f"log_p0: expected a callable x -> log p_0(x), got {type(log_p0).__name__}")
        _checks.tensor("time_grid", time_grid)
        _constant_grid(time_grid, enable_grad)
        if (time_grid.dim() != 1 or time_grid.numel() < 2 or float(time_grid[0]) != 1.0
                or float(time_grid[-1]) != 0.0):
            raise ValueError("time_grid: expected a 1-D grid from 1.0 to 0.0 (the likelihood of x_1 at t = 1 "
                             f"is carried back to p_0 at t = 0), got {time_grid.tolist()}")
        step_size = check_step_size(step_size)
        odeint = _odeint("compute_likelihood integrates with torchdiffeq")
        # in at least the default dtype (fp32), as flow_matching: torchdiffeq joins x_1 with the
        # log-determinant's torch.zeros, so the model sees x in the dtype the two promote to
        x1 = x_1.to(torch.promote_types(x_1.dtype, torch.get_default_dtype()))
        run = _Integration(self, x1, time_grid)
        z = None if exact_divergence else (torch.randn_like(x_1) < 0) * 2.0 - 1.0

        def dynamics(t, state):
            x = state[0]
            with torch.set_grad_enabled(True):
                x = x if x.requires_grad else x.detach().requires_grad_()
                u = run.u(x, _time(t), model_extras)
                div = _divergence(u, x, z, create_graph=enable_grad)
            return (u, div) if enable_grad else (u.detach(), div.detach())

        opts = {"step_size": step_size} if step_size is not None else {}
        with torch.set_grad_enabled(enable_grad):
            xs, log_det = odeint(dynamics, (x1, x1.new_zeros(x1.shape[0])), time_grid.to(x1.device),
                                 method=method, options=opts, atol=atol, rtol=rtol)
            log_p = log_p0(xs[-1]) + log_det[-1]
        return (xs if return_intermediates else xs[-1]), log_p

    def _torchdiffeq(self, run, x_init, step_size, method, atol, rtol, time_grid, return_intermediates,
                     enable_grad, model_extras):
        odeint = _odeint(f"{method!r} is not a fixed-grid method {FIXED_METHODS}: adaptive methods need torchdiffeq")

        def func(t, x):
            return run.u(x, _time(t), model_extras)

        opts = {"step_size": step_size} if step_size is not None else {}
        with torch.set_grad_enabled(enable_grad):
            sol = odeint(func, x_init, time_grid.to(x_init.device), method=method, options=opts, atol=atol, rtol=rtol)
        return sol if return_intermediates else sol[-1]


def _time(t: Tensor):
    """torchdiffeq's time for the model: a float, unless it carries a graph (an adaptive solver's
    step times under enable_grad depend on the state), which the model's gradient goes through."""
    return t if t.requires_grad and torch.is_grad_enabled() else float(t)


class _Integration:
    """One integration's state, made per call (the solver itself keeps none between or during
    calls: it pickles, and threads may share it): guidance, the step kernel (the backend resolved
    once for the loop) and the dtype of the grid's arithmetic (the time grid's, as torchdiffeq's)."""

    def __init__(self, solver: ODESolver, like: Tensor, time_grid: Tensor, guidance_scale: float = 0.0,
                 uncond_extras: Optional[dict] = None):
        self.solver = solver
        self.w, self.uncond_extras = guidance_scale, uncond_extras or {}
        self.combine = stepper(like, solver.backend)
        self.t_dtype = time_grid.dtype if time_grid.is_floating_point() else torch.float32

    def evaluate(self, x: Tensor, t, extras: dict):
        # the model gets t in the state's dtype, as torchdiffeq hands it (a bf16 model, a float64 grid);
        # an adaptive solver's time that carries a graph (enable_grad) is handed on as it is
        graph = None
        if isinstance(t, Tensor):
            tt, t = t.to(x.dtype), float(t.detach())
            graph = tt if tt.requires_grad else None  # (the conversion's coefficients follow it too)
        else:
            tt = torch.full((), t, dtype=x.dtype, device=x.device)  # a fill, not a host copy
        cond = _output(self.solver.velocity_model(x=x, t=tt, **extras), x)
        uncond = None
        if self.w != 0:
            uncond = _output(self.solver.velocity_model(x=x, t=tt, **self.uncond_extras), x)
        if self.solver.prediction == "velocity":
            return cond, uncond, 0.0, 1.0
        seen = float(torch.tensor(t, dtype=x.dtype))  # convert at the t the model saw (rounded on the host)
        try:
            a, b = self.solver._conversion(seen, graph)
        except ValueError as e:
            if seen == t:
                raise
            raise ValueError(f"{e} (the grid's t = {t} rounds to {seen} in {x.dtype}, the dtype the model sees t "
                             "in: a coarser grid near the end, or an fp32 state, avoids it)") from None
        return cond, uncond, a, b

    def advance(self, y: Tensor, x: Tensor, t: float, scale: float, extras: dict, out=None) -> Tensor:
        """``y + scale * u(x, t)``: one fused kernel unless a conversion needs ``x != y``."""
        cond, uncond, a, b = self.evaluate(x, t, extras)
        if not _is(a, 0.0) and x is not y:
            return self.combine(y, self.velocity(x, cond, uncond, a, b), 1.0, scale, out=out)
        w = self.w
        C = -scale * b * w if uncond is not None else None
        return self.combine(y, cond, 1.0 + scale * a, scale * b * (1 + w), q=uncond, C=C, out=out)

    def velocity(self, x, cond, uncond, a, b):
        w = self.w
        if _is(a, 0.0) and uncond is None and _is(b, 1.0):
            return cond
        if uncond is None:
            return self.combine(x, cond, a, b)
        if _is(a, 0.0):
            return self.combine(cond, uncond, b * (1 + w), -b * w)
        guided = self.combine(cond, uncond, 1 + w, -w)
        return self.combine(x, guided, a, b)

    def u(self, x, t, extras):
        return self.velocity(x, *self.evaluate(x, t, extras))

    def step(self, method: str, y0: Tensor, t0: float, t1: float, dt: float, extras: dict, out=None) -> Tensor:
        """One step from t0 to t1 (``dt`` = t1 - t0 in the grid's dtype, as torchdiffeq has it);
        the new state goes into ``out`` when given (a buffer no one else can see)."""
        if method == "euler":
            return self.advance(y0, y0, t0, dt, extras, out)
        if method == "midpoint":
            y_mid = self.advance(y0, y0, t0, 0.5 * dt, extras)
            return self.advance(y0, y_mid, self.stage(t0, 0.5, dt), dt, extras, out)
        if method in ("heun", "heun2"):
            k1 = self.u(y0, t0, extras)
            k2 = self.u(self.combine(y0, k1, 1.0, dt), self.stage(t0, 1.0, dt), extras)
            return self.combine(y0, k1, 1.0, dt * 0.5, q=k2, C=dt * 0.5, out=out)
        # rk4: torchdiffeq's 3/8 rule (rk4_alt_step_func)
        third = 1.0 / 3.0
        k1 = self.u(y0, t0, extras)
        k2 = self.u(self.combine(y0, k1, 1.0, dt * third), self.stage(t0, third, dt), extras)
        k3 = self.u(self.combine(y0, k2, 1.0, dt, q=k1, C=-dt * third), self.stage(t0, 2.0 / 3.0, dt), extras)
        y4 = self.combine(y0, k1, 1.0, dt, q=k2, C=-dt)
        k4 = self.u(self.combine(y4, k3, 1.0, dt), t1, extras)
        s = self.combine(k1, k2, 0.125 * dt, 0.375 * dt, q=k3, C=0.375 * dt)
        return self.combine(y0, s, 1.0, 1.0, q=k4, C=0.125 * dt, out=out)

    def stage(self, t0: float, c: float, dt: float) -> float:
        """A stage's time ``t0 + dt c`` rounded as torchdiffeq computes it, in the grid's dtype
        (the model then sees torchdiffeq's time whatever the state's dtype, float64 included)."""
        T = _grid_scalar(self.t_dtype)
        return float(T(t0) + T(dt) * T(c))


def _is(coef, value: float) -> bool:
    """A conversion coefficient is that number (a tensor one, which carries a gradient, or under
    vmap values, never takes a shortcut)."""
    return isinstance(coef, float) and coef == value


def _number(v: Tensor):
    """A coefficient's value for a message: a float, or the list of a vmapped one's values."""
    return float(v) if v.numel() == 1 else v.tolist()


def _output(u, x: Tensor) -> Tensor:
    """The model's output, which the fused steps combine element by element with x."""
    if not isinstance(u, Tensor) or u.shape != x.shape:
        what = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"velocity_model: expected an output of x's shape {tuple(x.shape)}, got {what}")
    return u


def _constant_grid(time_grid: Tensor, enable_grad: bool) -> None:
    """The solvers read the times as numbers (the model gets them as constants): a grid that is
    differentiated would get a zero derivative, so it is refused."""
    if (enable_grad and torch.is_grad_enabled() and time_grid.requires_grad) or _transforms.differentiated(time_grid):
        raise ValueError("time_grid: fastflow's solvers take the times as constants, so no derivative "
                         "with respect to them is computed (detach the grid)")


def _odeint(why: str):
    """torchdiffeq's odeint, or a ValueError naming ``method`` that says ``why`` it is needed."""
    try:
        from torchdiffeq import odeint
    except ImportError:
        raise ValueError(f"method: {why}, and torchdiffeq is not installed (pip install torchdiffeq)") from None
    return odeint


def _divergence(u: Tensor, x: Tensor, z: Optional[Tensor], create_graph: bool) -> Tensor:
    """Per-sample ``div_x u`` (``[B]``): exact, one autograd pass per dimension, or Hutchinson's
    ``z . d(u . z)/dx`` with the probe ``z``. Samples must not interact in the model (the
    gradients of batch sums are per-sample ones), as flow_matching assumes too."""
    if z is not None:
        uz = (u.flatten(1) * z.flatten(1)).sum()
        (g,) = torch.autograd.grad(uz, x, create_graph=create_graph)
        return (g.flatten(1) * z.flatten(1)).sum(1)
    u_flat = u.flatten(1)
    div = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    for i in range(u_flat.shape[1]):
        (g,) = torch.autograd.grad(u_flat[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
        div = div + g.flatten(1)[:, i]
    return div


def _grid_scalar(dtype: torch.dtype):
    """A number in the time grid's dtype, for torchdiffeq's arithmetic on the times (NumPy's fp32
    scalars cost a fraction of a torch op)."""
    if dtype is torch.float64:
        return float
    if dtype is torch.float32:
        return np.float32
    return lambda v: torch.tensor(v, dtype=dtype)


def _interp(t0, t1, y0, y1, t, t_dtype, backend):
    """torchdiffeq's linear interpolation at an output time inside a step, its slope computed in
    the grid's dtype."""
    if t == t0:
        return y0
    if t == t1:
        return y1
    T = _grid_scalar(t_dtype)
    slope = float((T(t) - T(t0)) / (T(t1) - T(t0)))
    return step_combine(y0, y1, 1.0 - slope, slope, backend=backend)


class _NullBar(nullcontext):
    def update(self, n):
        pass


def _progress(verbose: bool, total: int):
    if not verbose:
        return _NullBar()
    from tqdm import tqdm
    return tqdm(total=total, desc="ODE steps")


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from ..utils.utils import gradient  # noqa: E402,F401
from ..utils.model_wrapper import ModelWrapper  # noqa: E402,F401
