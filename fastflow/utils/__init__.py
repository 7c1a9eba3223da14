"""``fastflow.utils``: flow_matching's utilities (ModelWrapper and the tensor helpers), so that
``from flow_matching.utils import ...`` becomes ``from fastflow.utils import ...``."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class ModelWrapper(nn.Module):
    """Wraps a model so solvers call it as ``model(x=x, t=t, **extras)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        return self.model(x=x, t=t, **extras)


def unsqueeze_to_match(source: Tensor, target: Tensor, how: str = "suffix") -> Tensor:
    """``source`` with singleton dimensions added at the end (``suffix``) or the front
    (``prefix``) until it has as many as ``target``."""
    if how not in ("suffix", "prefix"):
        raise ValueError(f"how: expected 'suffix' or 'prefix', got {how!r}")
    extra = max(target.dim() - source.dim(), 0)  # (none: source as is, as flow_matching's)
    shape = (*source.shape, *([1] * extra)) if how == "suffix" else (*([1] * extra), *source.shape)
    return source.reshape(shape)


def expand_tensor_like(input_tensor: Tensor, expand_to: Tensor) -> Tensor:
    """A per-sample ``[B]`` vector broadcast to ``expand_to``'s shape ``[B, ...]`` (a view of a copy,
    as flow_matching's: writing to the input later does not show through)."""
    if input_tensor.dim() != 1 or input_tensor.shape[0] != expand_to.shape[0]:
        raise ValueError(f"input_tensor: expected shape ({expand_to.shape[0]},) (one value per sample of "
                         f"expand_to), got {tuple(input_tensor.shape)}")
    return unsqueeze_to_match(input_tensor.clone(), expand_to).expand_as(expand_to)


def gradient(output: Tensor, x: Tensor, grad_outputs: Optional[Tensor] = None,
             create_graph: bool = False) -> Tensor:
    """d <output, grad_outputs> / d x (``grad_outputs`` ones by default)."""
    if grad_outputs is None:
        grad_outputs = torch.ones_like(output)
    return torch.autograd.grad(output, x, grad_outputs=grad_outputs, create_graph=create_graph)[0]


def categorical(probs: Tensor) -> Tensor:
    """One draw per row of the weights in the last dimension of ``probs`` (torch.multinomial,
    so the same generator state gives flow_matching's draws); shape ``probs.shape[:-1]``."""
    return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, replacement=True).view(probs.shape[:-1])


# the manifolds live in fastflow.utils.manifolds (flow_matching's module path), also here
from . import manifolds  # noqa: E402
from .manifolds import Euclidean, FlatTorus, Manifold, Product, Sphere, geodesic  # noqa: E402

__all__ = ["ModelWrapper", "unsqueeze_to_match", "expand_tensor_like", "gradient", "categorical", "manifolds",
           "Manifold", "Euclidean", "Sphere", "FlatTorus", "Product", "geodesic"]
