"""RiemannianODESolver: flow_matching's fixed-step ODE solver on a manifold.

A step is an explicit Runge-Kutta step in the ambient space, kept on the manifold by
projections: each velocity ``u_t(x)`` onto the tangent space at x (``proju``), each stage
point and the new state onto the manifold (``projx``), either switchable off. Methods:
``euler``, ``midpoint``, ``rk4`` (the 3/8 rule). States at ``time_grid`` points inside a step
are read off the geodesic between the step's ends. Plain PyTorch: the manifold maps are the
cost, so the fused step kernels of ``ODESolver`` have nothing to fuse here.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .. import _checks, _transforms
from ..utils.manifolds import geodesic
from .base import Solver, check_step_size, check_time_grid
from .discrete_solver import steps_between
from .ode_solver import _progress



def _euler(u: Callable, p: Callable, x: Tensor, t0: Tensor, dt: Tensor) -> Tensor:
    """x' = P(x + dt u(x, t0))."""
    return p(x + dt * u(x, t0))


def _midpoint(u: Callable, p: Callable, x: Tensor, t0: Tensor, dt: Tensor) -> Tensor:
    """x_mid = P(x + dt/2 u(x, t0)), x' = P(x + dt u(x_mid, t0 + dt/2))."""
    half = 0.5 * dt
    x_mid = p(x + half * u(x, t0))
    return p(x + dt * u(x_mid, t0 + half))


def _rk4(u: Callable, p: Callable, x: Tensor, t0: Tensor, dt: Tensor) -> Tensor:
    """The 3/8 rule: x' = P(x + dt (k1 + 3 k2 + 3 k3 + k4) / 8), each stage point projected."""
    k1 = u(x, t0)
    k2 = u(p(x + dt * k1 / 3), t0 + dt / 3)
    k3 = u(p(x + dt * (k2 - k1 / 3)), t0 + dt * 2 / 3)
    k4 = u(p(x + dt * (k1 - k2 + k3)), t0 + dt)
    return p(x + (k1 + 3 * (k2 + k3) + k4) * dt * 0.125)


STEPS = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}


class RiemannianODESolver(Solver):
    """``RiemannianODESolver(manifold, velocity_model).sample(x_init, step_size, ...)``: the
    model is called as ``velocity_model(x=x, t=t, **model_extras)`` and should return vectors
    tangent at x (``proju=True`` makes them so)."""

    def __init__(self, manifold, velocity_model: Callable):
        super().__init__()
        if not all(callable(getattr(manifold, m, None)) for m in ("expmap", "logmap", "projx", "proju")):
            raise TypeError(f"manifold: expected a Manifold (expmap, logmap, projx, proju), "
                            f"got {type(manifold).__name__}")
        if not callable(velocity_model):
            raise TypeError("velocity_model: expected a callable model(x=..., t=...)")
        self.manifold = manifold
        self.velocity_model = velocity_model

    @_transforms.eager_under_compile  # (see Solver)
    def sample(self, x_init: Tensor, step_size: Optional[float], projx: bool = True, proju: bool = True,
               method: str = "euler", time_grid: Tensor = torch.tensor([0.0, 1.0]),
               return_intermediates: bool = False, verbose: bool = False, enable_grad: bool = False,
               **model_extras) -> Tensor:
        """Integrate over ``[min(time_grid), max(time_grid)]`` (the grid is sorted, as in
        flow_matching) with steps of ``step_size``, or on ``time_grid`` itself when it is None.
        Returns the final state, or ``[len(time_grid), ...]`` states with ``return_intermediates``."""
        _checks.tensor("x_init", x_init, _checks.REAL_DTYPES, ndim_min=1)
        _checks.tensor("time_grid", time_grid)
        outs_h = sorted(check_time_grid(time_grid, order=None))  # any order: it is sorted
        step_size = check_step_size(step_size)
        step = STEPS[_checks.choice("method", method, tuple(STEPS))]
        time_grid = torch.sort(time_grid.to(device=x_init.device)).values
        grid = _discretize(time_grid, step_size, x_init.device)

        def u(x: Tensor, t: Tensor) -> Tensor:
            v = self.velocity_model(x=x, t=t, **model_extras)
            return self.manifold.proju(x, v) if proju else v

        def p(x: Tensor) -> Tensor:
            return self.manifold.projx(x) if projx else x

        # which output times fall in which step: decided on host copies (no sync per step)
        grid_h = grid.tolist()
        states, j = [], 0
        x, bar = x_init, _progress(verbose, len(grid_h) - 1)
        with torch.set_grad_enabled(enable_grad), bar:
            for i in range(len(grid_h) - 1):
                t0, t1 = grid[i], grid[i + 1]
                x_next = step(u, p, x, t0, t1 - t0)
                while return_intermediates and j < len(outs_h) and grid_h[i] <= outs_h[j] <= grid_h[i + 1]:
                    states.append(interp(self.manifold, x, x_next, t0, t1, time_grid[j]))
                    j += 1
                x = x_next
                bar.update(1)
        return torch.stack(states) if return_intermediates else x


def interp(manifold, xt: Tensor, xt_next: Tensor, t: Tensor, t_next: Tensor, t_ret: Tensor) -> Tensor:
    """The state at ``t_ret`` within the step from ``(t, xt)`` to ``(t_next, xt_next)``: along the
    geodesic between them, at the fraction of the step reached (flow_matching's name)."""
    return geodesic(manifold, xt, xt_next)((t_ret - t) / (t_next - t).reshape(1)).reshape_as(xt)


def _discretize(time_grid: Tensor, step_size: Optional[float], device) -> Tensor:
    """The step times: ``time_grid`` itself, or ``t_init + k step_size`` below ``t_final``
    followed by ``t_final`` (a shortened last step)."""
    if step_size is None:
        return time_grid
    t_init, t_final = float(time_grid[0]), float(time_grid[-1])
    if not t_final > t_init:
        raise ValueError(f"time_grid: spans no time ([{t_init}, {t_final}]), nothing to integrate with step_size")
    return torch.tensor(steps_between(t_init, t_final, step_size), device=device)


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from ..utils.model_wrapper import ModelWrapper  # noqa: E402,F401
from ..utils.manifolds.manifold import Manifold  # noqa: E402,F401
