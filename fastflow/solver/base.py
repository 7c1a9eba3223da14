"""The solvers' base class, as flow_matching's, and the checks their grids share."""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional

import torch
from torch import Tensor

MAX_STEPS = 2**24  # a finer grid repeats times in fp32 (and a list of 10^12 times never ends)


class Solver(torch.nn.Module):
    """Base of ``ODESolver`` and ``MixtureDiscreteEulerSolver``: an ``nn.Module`` (as in
    flow_matching), so a model a solver holds moves with ``solver.to(...)`` and appears in its
    ``state_dict``. Subclasses implement ``sample``.

    Under ``torch.compile`` a ``sample`` call runs eagerly, between graphs: its loop is host
    code around fused steps whose times are Python floats, which Dynamo would specialise (a
    recompile a time value, then the limit: a compiled 20-step sampler ran at half the eager
    speed after 6 s of compiling). A model compiled on its own (``torch.compile(model)``) runs
    compiled inside it."""

    def sample(self, x_init: Tensor, step_size, **kwargs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def check_step_size(step_size) -> Optional[float]:
    """``step_size`` as a float (None stays None): a positive finite real number, a NumPy scalar
    or a 0-d tensor among them (as flow_matching takes them), not a bool."""
    if step_size is None:
        return None
    real = (isinstance(step_size, Real) and not isinstance(step_size, bool)) or (
        isinstance(step_size, Tensor) and step_size.dim() == 0 and step_size.dtype is not torch.bool
        and not step_size.is_complex())
    value = float(step_size) if real else math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"step_size: expected a positive finite float or None, got {step_size!r}")
    return value


def check_steps(n_steps: float, step_size) -> None:
    if n_steps > MAX_STEPS:
        raise ValueError(f"step_size: {step_size} makes {n_steps:.3g} steps, more than {MAX_STEPS} "
                         "(times that close repeat in fp32)")


def check_time_grid(time_grid: Tensor, order: Optional[str] = "strict") -> list[float]:
    """The times of a 1-D grid of at least 2 finite times, read to the host once. ``order``:
    ``"strict"``, strictly increasing or decreasing (as torchdiffeq asks); ``"increasing"``,
    non-decreasing (a repeated time is a step of length 0); None, any order."""
    if time_grid.dim() != 1 or time_grid.numel() < 2:
        raise ValueError(f"time_grid: expected a 1-D tensor of at least 2 times, got shape {tuple(time_grid.shape)}")
    times = [float(v) for v in time_grid.tolist()]
    d = [b - a for a, b in zip(times, times[1:])]
    if order == "strict":
        ordered, what = all(v > 0 for v in d) or all(v < 0 for v in d), "finite, strictly increasing or decreasing"
    elif order == "increasing":
        ordered, what = all(v >= 0 for v in d), "finite, non-decreasing"
    else:
        ordered, what = True, "finite"
    if not (ordered and all(math.isfinite(v) for v in times)):
        raise ValueError(f"time_grid: expected {what} times, got {times}")
    return times
