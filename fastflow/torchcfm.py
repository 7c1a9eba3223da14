"""torchcfm's conditional flow matchers on fastflow's fused kernels (FORMULAS.md §2 table).

Each matcher reduces to per-sample coefficients of

    x_t = a x_1 + b x_0 + s eps,      u_t = c x_1 + d x_0 + e eps,      eps ~ N(0, I)

``sample_location_and_conditional_flow(x0, x1, t=None, return_noise=False)`` returns
torchcfm's tuple ``(t, xt, ut[, eps])``; ``sample(x0, x1, t)`` + ``loss(v, sample)`` is the
fused path (eps drawn in-kernel, ``ut`` never stored). Exact OT pairing uses scipy's
``linear_sum_assignment`` (optional dependency) on squared Euclidean costs and pairs the
batch one-to-one (torchcfm samples pairs from the plan with replacement).
SB-CFM's ``(1 - 2t) / (2 t (1 - t))`` uses torchcfm's ``+ 1e-8`` in the denominator.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import _checks, _transforms
from ._rng import new_rng
from .ops.affine_path import _affine_path_loss, _affine_path_sample


class CFMSample:
    """``x0, x1, t, xt`` and the lazy ``ut`` / ``eps`` of one conditional sample."""

    def __init__(self, x0, x1, t, xt, coef, rng, backend):
        self.x0, self.x1, self.t, self.xt = x0, x1, t, xt
        self.coef, self.rng, self.backend = coef, rng, backend

    @property
    def ut(self) -> Tensor:
        c = self.coef
        return _affine_path_sample(self.x1, self.x0, c["c"], c["d"], c["e"], rng=self.rng, backend=self.backend)

    @property
    def eps(self) -> Tensor:
        zero = torch.zeros_like(self.coef["a"])
        return _affine_path_sample(self.x1, self.x0, zero, zero, zero + 1, rng=self.rng, backend=self.backend)


class ConditionalFlowMatcher:
    """I-CFM: ``x_t = t x1 + (1 - t) x0 + sigma eps``, ``u_t = x1 - x0``."""

    def __init__(self, sigma: float = 0.0, backend: Optional[str] = None):
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < math.inf:
            raise ValueError(f"sigma: expected a finite float >= 0, got {sigma!r}")
        self.sigma, self.backend = float(sigma), backend

    def coefficients(self, t: Tensor) -> dict:
        one = torch.ones_like(t)
        return dict(a=t, b=1 - t, s=self.sigma * one, c=one, d=-one, e=0 * one)

    def _pair(self, x0, x1):
        return x0, x1

    def sample(self, x0: Tensor, x1: Tensor, t: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None) -> CFMSample:
        _checks.tensor("x1", x1, _checks.FLOAT_DTYPES, ndim_min=1)
        _checks.tensor("x0", x0, _checks.FLOAT_DTYPES)
        _checks.same_shape("x0", x0, x1, "x1")
        x0, x1 = self._pair(x0, x1)
        batch = x1.shape[0]
        if t is None:
            t = torch.rand(batch, generator=generator, device=generator.device if generator else x1.device)
            t = t.to(x1.device).type_as(x1)
        tf = _checks.time("t", t, batch, x1)
        coef = self.coefficients(tf)
        rng = new_rng(x1.device, generator)
        x_src = None if coef.get("ignore_x0") else x0
        xt = _affine_path_sample(x1, x_src, coef["a"], coef["b"], coef["s"], rng=rng, backend=self.backend)
        return CFMSample(x0, x1, t, xt, coef, rng, self.backend)

    def sample_location_and_conditional_flow(self, x0: Tensor, x1: Tensor, t: Optional[Tensor] = None,
                                              return_noise: bool = False):
        """torchcfm's tuple: ``(t, xt, ut)`` or ``(t, xt, ut, eps)``."""
        s = self.sample(x0, x1, t)
        return (s.t, s.xt, s.ut, s.eps) if return_noise else (s.t, s.xt, s.ut)

    def loss(self, v: Tensor, sample: CFMSample, reduction: str = "mean", weight=None,
             mask: Optional[Tensor] = None) -> Tensor:
        """Fused ``|| v - u_t ||^2`` (mean by default), autograd-aware, ``u_t`` never stored."""
        c = sample.coef
        x_src = None if c.get("ignore_x0") else sample.x0
        return _affine_path_loss(v, sample.x1, x_src, c["c"], c["d"], c["e"], rng=sample.rng, mask=mask,
                                 weight=weight, reduction=reduction, backend=self.backend)


def _exact_ot_pair(x0: Tensor, x1: Tensor):
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise ImportError("exact OT pairing needs scipy (pip install scipy)") from None
    if _transforms.vmapped() and (_transforms.wrapped(x0) or _transforms.wrapped(x1)):
        raise ValueError("x0, x1: exact OT pairing cannot run under vmap (each element would need its own "
                         "assignment on the host); pair outside vmap, or loop")
    cost = torch.cdist(x0.detach().reshape(x0.shape[0], -1).double().cpu(),
                       x1.detach().reshape(x1.shape[0], -1).double().cpu()) ** 2
    # (torch.func's grad / jvp refuse .numpy() on any tensor; the pairing is constant there)
    rows, cols = linear_sum_assignment(np.asarray(cost.tolist()) if _transforms.transformed() else cost.numpy())
    perm = torch.as_tensor(cols[rows.argsort()], device=x1.device)
    return x0, x1[perm]


class ExactOptimalTransportConditionalFlowMatcher(ConditionalFlowMatcher):
    """OT-CFM: I-CFM on minibatch pairs matched by exact optimal transport."""

    def _pair(self, x0, x1):
        return _exact_ot_pair(x0, x1)


class TargetConditionalFlowMatcher(ConditionalFlowMatcher):
    """Lipman et al.: ``x_t = t x1 + (1 - (1 - sigma) t) eps``, ``u_t = x1 - (1 - sigma) eps`` (x0 unused)."""

    def coefficients(self, t):
        one, k = torch.ones_like(t), 1 - self.sigma
        return dict(a=t, b=0 * one, s=1 - k * t, c=one, d=0 * one, e=-k * one, ignore_x0=True)


class SchrodingerBridgeConditionalFlowMatcher(ConditionalFlowMatcher):
    """SB-CFM: OT pairs, ``x_t = t x1 + (1-t) x0 + sigma sqrt(t(1-t)) eps``,
    ``u_t = x1 - x0 + (1 - 2t) / (2 t (1 - t) + 1e-8) * sigma sqrt(t(1-t)) eps``."""

    def __init__(self, sigma: float = 1.0, ot_method: str = "exact", backend: Optional[str] = None):
        super().__init__(sigma, backend)
        if sigma <= 0:
            raise ValueError(f"sigma: SB-CFM needs sigma > 0, got {sigma}")
        self.ot_method = _checks.choice("ot_method", ot_method, ("exact",))

    def coefficients(self, t):
        one = torch.ones_like(t)
        s = self.sigma * torch.sqrt(t * (1 - t))
        return dict(a=t, b=1 - t, s=s, c=one, d=-one, e=(1 - 2 * t) / (2 * t * (1 - t) + 1e-8) * s)

    def _pair(self, x0, x1):
        return _exact_ot_pair(x0, x1)


class VariancePreservingConditionalFlowMatcher(ConditionalFlowMatcher):
    """VP-CFM: ``x_t = sin(pi t/2) x1 + cos(pi t/2) x0 + sigma eps``,
    ``u_t = pi/2 (cos(pi t/2) x1 - sin(pi t/2) x0)``."""

    def coefficients(self, t):
        h = math.pi / 2
        return dict(a=torch.sin(h * t), b=torch.cos(h * t), s=self.sigma * torch.ones_like(t),
                    c=h * torch.cos(h * t), d=-h * torch.sin(h * t), e=torch.zeros_like(t))


__all__ = ["ConditionalFlowMatcher", "ExactOptimalTransportConditionalFlowMatcher",
           "TargetConditionalFlowMatcher", "SchrodingerBridgeConditionalFlowMatcher",
           "VariancePreservingConditionalFlowMatcher", "CFMSample"]
