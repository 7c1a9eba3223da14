"""torchcfm's conditional flow matchers on fastflow's fused kernels (FORMULAS.md §2 table).

Each matcher reduces to per-sample coefficients of

    x_t = a x_1 + b x_0 + s eps,      u_t = c x_1 + d x_0 + e eps,      eps ~ N(0, I)

``sample_location_and_conditional_flow(x0, x1, t=None, return_noise=False)`` returns
torchcfm's tuple ``(t, xt, ut[, eps])``; ``sample(x0, x1, t)`` + ``loss(v, sample)`` is the
fused path (eps drawn in-kernel, ``ut`` never stored). torchcfm's building blocks
(``compute_mu_t``, ``compute_sigma_t``, ``sample_xt``, ``compute_conditional_flow``,
``sample_noise_like``, ``compute_lambda``, ``pad_t_like_x``) are plain PyTorch from the same
coefficients; a subclass that overrides one of them (torchcfm's way to define a matcher) is
sampled through them, unfused, so its definition holds. OT-CFM and SB-CFM pair the minibatch
through ``self.ot_sampler``: fastflow's own exact ``optimal_transport.OTPlanSampler`` (scipy's
``linear_sum_assignment``, an optional dependency) pairs a batch one-to-one (torchcfm samples
pairs from the plan with replacement); any other sampler (an entropic one, torchcfm's, one's own,
a subclass that redefines the plan or its draws) is called as torchcfm calls it.
SB-CFM's ``(1 - 2t) / (2 t (1 - t))`` uses torchcfm's ``+ 1e-8`` in the denominator.
"""
from __future__ import annotations

import math
import warnings
from numbers import Real
from typing import Optional

import torch
from torch import Tensor

from .. import _checks, _transforms
from .._rng import _check_generator, new_rng
from ..ops._registry import check_wide
from ..ops.affine_path import _affine_path_loss, _affine_path_sample
from .optimal_transport import METHODS, OTPlanSampler, _cost, assignment


class CFMSample:
    """``x0, x1, t, xt`` and the lazy ``ut`` / ``eps`` of one conditional sample (given ones when
    a subclass's own formulas made them)."""

    def __init__(self, x0, x1, t, xt, coef, rng, backend, ut=None, eps=None):
        self.x0, self.x1, self.t, self.xt = x0, x1, t, xt
        self.coef, self.rng, self.backend = coef, rng, backend
        self._ut, self._eps = ut, eps

    @property
    def ut(self) -> Tensor:
        if self._ut is None:
            c = self.coef
            self._ut = _affine_path_sample(*_operands(c, self.x0, self.x1), c["c"], c["d"], c["e"],
                                           rng=self.rng, backend=self.backend)
        return self._ut

    @property
    def eps(self) -> Tensor:
        if self._eps is None:  # the noise alone (torchcfm's randn_like(x0)): from zeros, so without
            zero = torch.zeros_like(self.coef["a"])  # a graph to x0, x1 or NaN where they are infinite
            z = torch.zeros_like(self.x0, dtype=torch.promote_types(self.x0.dtype, self.x1.dtype))
            self._eps = _affine_path_sample(z, z, zero, zero, zero + 1, rng=self.rng,
                                            backend=self.backend).to(self.x0.dtype)
        return self._eps


def _operands(coef: dict, x0: Tensor, x1: Tensor):
    """The kernels' ``x_1, x_0`` for ``coef``: without x0 where it is unused (no graph to it, as
    torchcfm's), x1 then in the dtype x0 and x1 promote to, as torchcfm's arithmetic."""
    if coef.get("ignore_x0"):
        return x1.to(torch.promote_types(x1.dtype, x0.dtype)), None
    return x1, x0


def pad_t_like_x(t, x: Tensor):
    """torchcfm's: ``t`` (a number, or one value per sample) shaped ``[B, 1, ...]`` against ``x``."""
    if isinstance(t, (int, float)):
        return t
    return t.reshape(-1, *([1] * (x.dim() - 1)))


_BLOCKS = ("compute_mu_t", "compute_sigma_t", "sample_xt", "compute_conditional_flow", "sample_noise_like")


class ConditionalFlowMatcher:
    """I-CFM: ``x_t = t x1 + (1 - t) x0 + sigma eps``, ``u_t = x1 - x0``."""

    def __init__(self, sigma: float = 0.0, backend: Optional[str] = None):
        self.sigma, self.backend = _sigma(sigma), backend

    def coefficients(self, t: Tensor) -> dict:
        one = torch.ones_like(t)
        return dict(a=t, b=1 - t, s=self.sigma * one, c=one, d=-one, e=0 * one)

    _one_batch_size = True  # (the OT matchers pair batches of two sizes)

    def _pair(self, x0, x1):
        return x0, x1

    # -- torchcfm's building blocks, from the same coefficients (plain PyTorch)
    def _at(self, t, like: Optional[Tensor] = None) -> dict:
        """``coefficients`` at ``t``, a tensor or (as torchcfm's blocks take it too) a number."""
        if not isinstance(t, Tensor):
            t = torch.tensor(float(t), dtype=torch.float32 if like is None else _checks.coef_dtype(like),
                             device=None if like is None else like.device)
        return self.coefficients(t)

    def compute_mu_t(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        c = self._at(t, x1)
        return pad_t_like_x(c["a"], x1) * x1 + pad_t_like_x(c["b"], x0) * x0

    def compute_sigma_t(self, t):
        """torchcfm's: the constant ``sigma`` (a number, whatever ``t``), so that code written
        against it (``float(sigma_t)``, ``x0 + sigma_t * eps``) keeps working."""
        del t
        return self.sigma

    def _sigma_t_of(self, t):
        """``sigma_t`` from the coefficients: a tensor for a tensor ``t``, a number for a number."""
        s = self._at(t)["s"]
        return s if isinstance(t, Tensor) else float(s)

    def sample_xt(self, x0: Tensor, x1: Tensor, t: Tensor, epsilon: Tensor) -> Tensor:
        return self.compute_mu_t(x0, x1, t) + pad_t_like_x(self.compute_sigma_t(t), x0) * epsilon

    def compute_conditional_flow(self, x0: Tensor, x1: Tensor, t: Tensor, xt: Tensor) -> Tensor:
        """``c x1 + d x0 + e eps`` with ``eps = (xt - mu_t) / sigma_t`` (no noise term where e = 0)."""
        c = self._at(t, x1)
        e, s = c["e"], c["s"]
        noise = torch.where(e == 0, 0.0, e / torch.where(s == 0, 1.0, s))
        return (pad_t_like_x(c["c"], x1) * x1 + pad_t_like_x(c["d"], x0) * x0
                + pad_t_like_x(noise, xt) * (xt - self.compute_mu_t(x0, x1, t)))

    def sample_noise_like(self, x: Tensor) -> Tensor:
        return torch.randn_like(x)

    def compute_lambda(self, t: Tensor) -> Tensor:
        """torchcfm's score weight ``2 sigma_t / (sigma^2 + 1e-8)``."""
        return 2 * self.compute_sigma_t(t) / (self.sigma**2 + 1e-8)

    def _own_blocks(self) -> bool:
        """A subclass redefines the matcher through torchcfm's building blocks: one of them is not
        the nearest fastflow matcher's (whose coefficients the fused sample would use)."""
        base = next(c for c in type(self).__mro__ if c.__module__ == __name__)
        return any(getattr(type(self), n) is not getattr(base, n) for n in _BLOCKS)

    def _sample_by_blocks(self, x0, x1, t) -> CFMSample:
        eps = self.sample_noise_like(x0)
        xt = self.sample_xt(x0, x1, t, eps)
        return CFMSample(x0, x1, t, xt, None, None, self.backend, ut=self.compute_conditional_flow(x0, x1, t, xt),
                         eps=eps)

    def sample(self, x0: Tensor, x1: Tensor, t: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None) -> CFMSample:
        _check_points(x0, x1, self._one_batch_size, self.backend)
        x0, x1 = self._pair(x0, x1)
        return self._sample_pairs(x0, x1, t, generator)

    def _sample_pairs(self, x0: Tensor, x1: Tensor, t: Optional[Tensor], generator) -> CFMSample:
        batch = x1.shape[0]
        if t is None:  # torchcfm's: uniform times in x0's dtype
            _check_generator(generator, x0.device)
            t = torch.rand(batch, generator=generator, device=x0.device).type_as(x0)
        if self._own_blocks():
            return self._sample_by_blocks(x0, x1, t)
        tf = _checks.time("t", t, batch, _checks.widest(x1, x0))
        coef = self.coefficients(tf)
        rng = new_rng(x1.device, generator)
        # xt in the dtype x0 and x1 promote to, as torchcfm's arithmetic (its noise is x0's)
        xt = _affine_path_sample(*_operands(coef, x0, x1), coef["a"], coef["b"], coef["s"], rng=rng,
                                 backend=self.backend)
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
        if c is None:  # a subclass's own formulas: u_t is stored; the same loss against it (1 u_t + 0 u_t)
            one = torch.ones(v.shape[0], device=v.device)
            return _affine_path_loss(v, sample.ut, sample.ut, one, 0 * one, mask=mask, weight=weight,
                                     reduction=reduction, backend=self.backend)
        x_src = None if c.get("ignore_x0") else sample.x0
        return _affine_path_loss(v, sample.x1, x_src, c["c"], c["d"], c["e"], rng=sample.rng, mask=mask,
                                 weight=weight, reduction=reduction, backend=self.backend)


def _sigma(sigma) -> float:
    """``sigma`` as torchcfm takes it, a real number (Python's, NumPy's, a 0-d tensor), as a
    float; it must be finite and >= 0."""
    if getattr(sigma, "requires_grad", False):  # (torchcfm's arithmetic would carry its graph)
        raise TypeError("sigma: a tensor that requires grad; fastflow takes sigma as a number (the kernels get "
                        "coefficients, not a graph), so its gradient would be lost")
    value = sigma.item() if getattr(sigma, "ndim", None) == 0 and hasattr(sigma, "item") else sigma
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < math.inf:
        raise ValueError(f"sigma: expected a finite float >= 0, got {sigma!r}")
    return float(value)


def _check_points(x0: Tensor, x1: Tensor, one_batch_size: bool, backend: Optional[str]) -> None:
    _checks.tensor("x1", x1, _checks.REAL_DTYPES, ndim_min=1)
    _checks.tensor("x0", x0, _checks.REAL_DTYPES)
    check_wide(backend, x0=x0, x1=x1)
    if one_batch_size:
        _checks.same_shape("x0", x0, x1, "x1")
    elif x0.dim() == 0 or x0.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x0: expected points of x1's shape {tuple(x1.shape[1:])}, got {tuple(x0.shape)}")


@_transforms.eager_under_compile
def _exact_ot_perm(x0: Tensor, x1: Tensor) -> Tensor:
    """The permutation of x1 that pairs it with x0 at least total squared distance."""
    return torch.as_tensor(assignment(_cost(x0, x1)), device=x1.device)


_SAMPLER_METHODS = ("get_map", "sample_map", "sample_plan", "sample_plan_with_labels")


def _one_to_one(sampler) -> bool:
    """``sampler`` is fastflow's own exact ``OTPlanSampler``, its plan and draws as defined there
    (no subclass or instance redefines them): its plan between batches of one size is then a
    permutation, which pairs them one-to-one."""
    return (isinstance(sampler, OTPlanSampler) and sampler.method == "exact" and "_ot_fn" not in vars(sampler)
            and all(getattr(type(sampler), n) is getattr(OTPlanSampler, n) and n not in vars(sampler)
                    for n in _SAMPLER_METHODS))


class _OTPairs:
    """The minibatch pairing of OT-CFM and SB-CFM (``self.ot_sampler``), and torchcfm's labelled
    variant of it: ``x0.shape[0]`` pairs, the batches may differ in size. fastflow's exact sampler
    pairs batches of one size one-to-one (the plan is a permutation; torchcfm draws pairs from it
    with replacement, so some points twice and others not); any other sampler is called as
    torchcfm calls it (``sample_plan``, or ``sample_plan_with_labels`` given ``labels = (y0, y1)``)."""

    _one_batch_size = False

    def _pair(self, x0, x1, *labels):
        if _one_to_one(self.ot_sampler) and x0.shape[0] == x1.shape[0]:
            perm = _exact_ot_perm(x0, x1)
            if not labels:
                return x0, x1[perm]
            y0, y1 = labels
            return x0, x1[perm], y0, None if y1 is None else y1[perm]
        if labels:
            return self.ot_sampler.sample_plan_with_labels(x0, x1, *labels)
        return self.ot_sampler.sample_plan(x0, x1)

    def guided_sample_location_and_conditional_flow(self, x0: Tensor, x1: Tensor, y0=None, y1=None,
                                                    t: Optional[Tensor] = None, return_noise: bool = False):
        """torchcfm's ``(t, xt, ut, y0, y1[, eps])``: the labels follow their points' pairing."""
        _check_points(x0, x1, False, self.backend)
        x0, x1, y0, y1 = self._pair(x0, x1, y0, y1)
        s = self._sample_pairs(x0, x1, t, None)
        return (s.t, s.xt, s.ut, y0, y1, s.eps) if return_noise else (s.t, s.xt, s.ut, y0, y1)



class ExactOptimalTransportConditionalFlowMatcher(_OTPairs, ConditionalFlowMatcher):
    """OT-CFM: I-CFM on minibatch pairs matched by exact optimal transport."""

    def __init__(self, sigma: float = 0.0, backend: Optional[str] = None):
        super().__init__(sigma, backend)
        self.ot_sampler = OTPlanSampler(method="exact")


class TargetConditionalFlowMatcher(ConditionalFlowMatcher):
    """Lipman et al.: ``x_t = t x1 + (1 - (1 - sigma) t) eps``, ``u_t = x1 - (1 - sigma) eps`` (x0 unused)."""

    def coefficients(self, t):
        one, k = torch.ones_like(t), 1 - self.sigma
        return dict(a=t, b=0 * one, s=1 - k * t, c=one, d=0 * one, e=-k * one, ignore_x0=True)

    compute_sigma_t = ConditionalFlowMatcher._sigma_t_of  # (torchcfm's 1 - (1 - sigma) t)

    def compute_conditional_flow(self, x0: Tensor, x1: Tensor, t, xt: Tensor) -> Tensor:
        """torchcfm's ``(x1 - (1 - sigma) xt) / (1 - (1 - sigma) t)``, from ``xt`` itself: a subclass
        that redefines ``compute_mu_t`` keeps this flow, as torchcfm's does."""
        k = 1 - self.sigma
        return (x1 - k * xt) / pad_t_like_x(1 - k * self._at(t, x1)["a"], x1)


class SchrodingerBridgeConditionalFlowMatcher(_OTPairs, ConditionalFlowMatcher):
    """SB-CFM: pairs from the OT plan of ``ot_method`` (entropic ones with ``reg = 2 sigma^2``),
    ``x_t = t x1 + (1-t) x0 + sigma sqrt(t(1-t)) eps``,
    ``u_t = x1 - x0 + (1 - 2t) / (2 t (1 - t) + 1e-8) * sigma sqrt(t(1-t)) eps``."""

    def __init__(self, sigma: float = 1.0, ot_method: str = "exact", backend: Optional[str] = None):
        super().__init__(sigma, backend)
        if self.sigma <= 0:
            raise ValueError(f"sigma: SB-CFM needs sigma > 0, got {sigma}")
        if self.sigma < 1e-3:  # (torchcfm's warning)
            warnings.warn("Small sigma values may lead to numerical instability.")
        self.ot_method = _checks.choice("ot_method", ot_method, METHODS)
        self.ot_sampler = OTPlanSampler(method=ot_method, reg=2 * self.sigma**2)

    compute_sigma_t = ConditionalFlowMatcher._sigma_t_of  # (torchcfm's sigma sqrt(t (1 - t)))

    def coefficients(self, t):
        one = torch.ones_like(t)
        s = self.sigma * torch.sqrt(t * (1 - t))
        return dict(a=t, b=1 - t, s=s, c=one, d=-one, e=(1 - 2 * t) / (2 * t * (1 - t) + 1e-8) * s)


class VariancePreservingConditionalFlowMatcher(ConditionalFlowMatcher):
    """VP-CFM: ``x_t = sin(pi t/2) x1 + cos(pi t/2) x0 + sigma eps``,
    ``u_t = pi/2 (cos(pi t/2) x1 - sin(pi t/2) x0)``."""

    def coefficients(self, t):
        h = math.pi / 2
        return dict(a=torch.sin(h * t), b=torch.cos(h * t), s=self.sigma * torch.ones_like(t),
                    c=h * torch.cos(h * t), d=-h * torch.sin(h * t), e=torch.zeros_like(t))


__all__ = ["OTPlanSampler", "ConditionalFlowMatcher", "ExactOptimalTransportConditionalFlowMatcher",
           "TargetConditionalFlowMatcher", "SchrodingerBridgeConditionalFlowMatcher",
           "VariancePreservingConditionalFlowMatcher", "CFMSample", "pad_t_like_x"]
