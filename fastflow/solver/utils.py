"""flow_matching's module `flow_matching.solver.utils`, for imports that name it."""
from __future__ import annotations

import torch
from torch import Tensor


def get_nearest_times(time_grid: Tensor, t_discretization: Tensor) -> Tensor:
    """For each time of ``time_grid``, the nearest time of ``t_discretization`` (the first of two
    at equal distance)."""
    distance = (time_grid.reshape(-1, 1) - t_discretization.reshape(1, -1)).abs()
    return t_discretization.reshape(-1)[distance.argmin(dim=1)]


__all__ = ["get_nearest_times"]
