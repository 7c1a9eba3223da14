"""``fastflow.utils.manifolds``: flow_matching's manifolds (same names, maps and results).

A manifold acts on the last dimension of its tensors (``[..., D]`` points and tangent
vectors); every other dimension is a batch dimension. ``Product`` is fastflow's own: the
last dimension split into blocks, one manifold per block.
"""
from __future__ import annotations

import abc
import math
from typing import Callable

import torch
from torch import Tensor, nn

TWO_PI = 2 * math.pi


class Manifold(nn.Module, metaclass=abc.ABCMeta):
    """A manifold: ``expmap``, ``logmap`` and the projections ``projx`` (onto the manifold) and
    ``proju`` (onto the tangent space at x). An ``nn.Module`` as in flow_matching."""

    @abc.abstractmethod
    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """exp_x(u): the point reached from x along the geodesic with initial velocity u."""

    @abc.abstractmethod
    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """log_x(y): the tangent vector at x with exp_x(log_x(y)) = y."""

    @abc.abstractmethod
    def projx(self, x: Tensor) -> Tensor:
        """The point of the manifold nearest x."""

    @abc.abstractmethod
    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """u projected onto the tangent space at x."""


class Euclidean(Manifold):
    """R^D: exp_x(u) = x + u, log_x(y) = y - x, both projections the identity."""

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def projx(self, x: Tensor) -> Tensor:
        return x

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u


class Sphere(Manifold):
    """The unit sphere S^{D-1} in R^D.

    exp_x(u) = cos(|u|) x + sin(|u|) u / |u|, log_x(y) = d(x, y) P_x(y - x) / |P_x(y - x)| with
    d(x, y) = arccos <x, y> and P_x(u) = u - <x, u> x. Below ``EPS[dtype]`` (|u| for exp, d for
    log) the closed forms lose precision, so the retraction projx(x + u) and P_x(y - x) are
    used instead, as flow_matching does. The closed forms are evaluated on safe inputs where
    they are not used, so their gradients there are 0, not NaN (0 * inf in flow_matching).
    """

    EPS = {torch.float32: 1e-4, torch.float64: 1e-7}

    def _eps(self, x: Tensor, name: str = "x") -> float:
        eps = self.EPS.get(x.dtype)
        if eps is None:
            raise TypeError(f"{name}: Sphere supports {[str(d) for d in self.EPS]}, got {x.dtype}")
        return eps

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        far = u.detach().norm(dim=-1, keepdim=True) > self._eps(u, "u")
        u_far = torch.where(far, u, torch.ones_like(u))  # a stand-in with |u| > 0 where unused
        norm_u = u_far.norm(dim=-1, keepdim=True)
        closed = x * torch.cos(norm_u) + u_far * torch.sin(norm_u) / norm_u
        return torch.where(far, closed, self.projx(x + u))

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        eps = self._eps(x)
        u = self.proju(x, y - x)
        # NaN when rounding puts <x, y> past +-1: fails the test, falls back to u
        far = self.dist(x.detach(), y.detach(), keepdim=True) > eps
        inner = torch.where(far, (x * y).sum(dim=-1, keepdim=True), 0.0)  # no arccos' at +-1
        norm_u = torch.where(far, u, torch.ones_like(u)).norm(dim=-1, keepdim=True)  # nor |.|' at 0
        return torch.where(far, u * torch.acos(inner) / norm_u.clamp_min(eps), u)

    def projx(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u - (x * u).sum(dim=-1, keepdim=True) * x

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """The great-circle distance arccos <x, y>."""
        return torch.acos((x * y).sum(dim=-1, keepdim=keepdim))


class FlatTorus(Manifold):
    """The flat torus [0, 2 pi)^D: coordinates taken mod 2 pi, log_x(y) the shortest signed
    angle atan2(sin(y - x), cos(y - x)); every vector is tangent."""

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return (x + u) % TWO_PI

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        diff = y - x
        return torch.atan2(torch.sin(diff), torch.cos(diff))

    def projx(self, x: Tensor) -> Tensor:
        return x % TWO_PI

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return u


class Product(Manifold):
    """M_1 x ... x M_k: ``Product((Sphere(), 3), (FlatTorus(), 2))`` acts on ``[..., 5]``
    tensors, the first 3 coordinates on the sphere, the last 2 on the torus. Each map is the
    factors' maps on their blocks, concatenated (fastflow's; flow_matching has no product)."""

    def __init__(self, *factors: tuple[Manifold, int]):
        super().__init__()
        if not factors:
            raise ValueError("factors: expected at least one (manifold, dim) pair")
        for i, f in enumerate(factors):
            if (not isinstance(f, (tuple, list)) or len(f) != 2 or not isinstance(f[0], Manifold)
                    or isinstance(f[1], bool) or not isinstance(f[1], int) or f[1] < 1):
                raise TypeError(f"factors[{i}]: expected a (Manifold, dim >= 1) pair, got {f!r}")
        self.manifolds = nn.ModuleList(m for m, _ in factors)  # submodules: move with .to()
        self.dims = tuple(d for _, d in factors)

    def _split(self, name: str, x: Tensor) -> tuple[Tensor, ...]:
        if x.dim() == 0 or x.shape[-1] != sum(self.dims):
            raise ValueError(f"{name}: expected a last dimension of {sum(self.dims)} (blocks {self.dims}), "
                             f"got shape {tuple(x.shape)}")
        return x.split(self.dims, dim=-1)

    def _each(self, op: str, **tensors: Tensor) -> Tensor:
        blocks = zip(*(self._split(k, v) for k, v in tensors.items()))
        return torch.cat([getattr(m, op)(*b) for m, b in zip(self.manifolds, blocks)], dim=-1)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._each("expmap", x=x, u=u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._each("logmap", x=x, y=y)

    def projx(self, x: Tensor) -> Tensor:
        return self._each("projx", x=x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._each("proju", x=x, u=u)


def geodesic(manifold: Manifold, start_point: Tensor, end_point: Tensor) -> Callable[[Tensor], Tensor]:
    """The geodesic gamma(t) = exp_{start_point}(t log_{start_point}(end_point)) as a function of
    a 1-D ``t [T]``; for points ``[..., D]`` it returns ``[..., T, D]`` (one point per time)."""
    shooting = manifold.logmap(start_point, end_point)  # computed once, shared by every call

    def path(t: Tensor) -> Tensor:
        # [..., 1, D] * [T, 1] -> [..., T, D]: t[i] * v[..., k]
        return manifold.expmap(start_point.unsqueeze(-2), shooting.unsqueeze(-2) * t.unsqueeze(-1))

    return path


__all__ = ["Manifold", "Euclidean", "Sphere", "FlatTorus", "Product", "geodesic"]
