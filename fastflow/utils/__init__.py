"""``fastflow.utils``: ModelWrapper as in flow_matching."""
from torch import Tensor, nn


class ModelWrapper(nn.Module):
    """Wraps a model so solvers call it as ``model(x=x, t=t, **extras)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        return self.model(x=x, t=t, **extras)


__all__ = ["ModelWrapper"]
