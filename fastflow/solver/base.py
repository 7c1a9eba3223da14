"""The solvers' base class, as flow_matching's."""
from __future__ import annotations

import torch
from torch import Tensor


class Solver(torch.nn.Module):
    """Base of ``ODESolver`` and ``MixtureDiscreteEulerSolver``: an ``nn.Module`` (as in
    flow_matching), so a model a solver holds moves with ``solver.to(...)`` and appears in its
    ``state_dict``. Subclasses implement ``sample``."""

    def sample(self, x_init: Tensor, step_size, **kwargs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
