"""The solvers' base class, as flow_matching's, and the checks their grids share."""
from __future__ import annotations

import math

import torch
from torch import Tensor

MAX_STEPS = 2**24  # a finer grid repeats times in fp32 (and a list of 10^12 times never ends)


class Solver(torch.nn.Module):
    """Base of ``ODESolver`` and ``MixtureDiscreteEulerSolver``: an ``nn.Module`` (as in
    flow_matching), so a model a solver holds moves with ``solver.to(...)`` and appears in its
    ``state_dict``. Subclasses implement ``sample``."""

    def sample(self, x_init: Tensor, step_size, **kwargs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def check_step_size(step_size) -> None:
    if step_size is not None and not (isinstance(step_size, (int, float)) and not isinstance(step_size, bool)
                                      and 0 < step_size < math.inf):
        raise ValueError(f"step_size: expected a positive finite float or None, got {step_size!r}")


def check_steps(n_steps: float, step_size) -> None:
    if n_steps > MAX_STEPS:
        raise ValueError(f"step_size: {step_size} makes {n_steps:.3g} steps, more than {MAX_STEPS} "
                         "(times that close repeat in fp32)")


def check_time_grid(time_grid: Tensor) -> None:
    """A 1-D grid of at least 2 finite times, strictly increasing or decreasing (as torchdiffeq asks)."""
    if time_grid.dim() != 1 or time_grid.numel() < 2:
        raise ValueError(f"time_grid: expected a 1-D tensor of at least 2 times, got shape {tuple(time_grid.shape)}")
    d = time_grid[1:] - time_grid[:-1]
    if not (bool(torch.isfinite(time_grid).all()) and (bool((d > 0).all()) or bool((d < 0).all()))):
        raise ValueError(f"time_grid: expected finite, strictly increasing or decreasing times, got {time_grid.tolist()}")
