"""Schedulers: ``t -> (alpha_t, sigma_t, d_alpha_t, d_sigma_t)`` (FORMULAS.md §1).

Names and behaviour as in flow_matching, so ``flow_matching.path.scheduler`` ->
``fastflow.path.scheduler`` is an import change; any object with that interface (a
flow_matching scheduler included) is accepted wherever fastflow takes a scheduler.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ...utils import ModelWrapper


@dataclass
class SchedulerOutput:
    alpha_t: Tensor
    sigma_t: Tensor
    d_alpha_t: Tensor
    d_sigma_t: Tensor


class Scheduler(ABC):
    """Base class: ``__call__(t) -> SchedulerOutput`` and ``snr_inverse`` (abstract, as
    flow_matching's: a subclass missing one fails when built, not when first used)."""

    @abstractmethod
    def __call__(self, t: Tensor) -> SchedulerOutput:
        ...

    @abstractmethod
    def snr_inverse(self, snr: Tensor) -> Tensor:
        ...


class ConvexScheduler(Scheduler):
    """``alpha_t + sigma_t = 1``: the schedulers a mixture (discrete) path accepts."""

    def _kappa_t(self, t: Tensor) -> Tensor:
        """``kappa_t = alpha_t`` alone (the mixture path's sample needs nothing else): the same
        values as ``self(t).alpha_t``, without computing the other three. (Private: a subclass
        may well keep a ``kappa`` attribute of its own.)"""
        return self(t).alpha_t

    @abstractmethod
    def kappa_inverse(self, kappa: Tensor) -> Tensor:
        ...

    def snr_inverse(self, snr: Tensor) -> Tensor:
        return self.kappa_inverse(snr / (1.0 + snr))


class CondOTScheduler(ConvexScheduler):
    """alpha_t = t, sigma_t = 1 - t (rectified flow)."""

    def __call__(self, t):
        return SchedulerOutput(t, 1 - t, torch.ones_like(t), torch.full_like(t, -1.0))

    def _kappa_t(self, t):
        if type(self).__call__ is not CondOTScheduler.__call__:  # a subclass with its own schedule
            return super()._kappa_t(t)
        return t

    def kappa_inverse(self, kappa):
        return kappa


class PolynomialConvexScheduler(ConvexScheduler):
    """alpha_t = t^n, sigma_t = 1 - t^n."""

    def __init__(self, n: float):
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 < n < math.inf:
            raise ValueError(f"n: expected a positive finite number, got {n!r}")
        self.n = n

    def __call__(self, t):
        n = self.n
        t_n, d = t**n, n * t ** (n - 1)  # each power once (the same values)
        return SchedulerOutput(t_n, 1 - t_n, d, -d)

    def _kappa_t(self, t):
        if type(self).__call__ is not PolynomialConvexScheduler.__call__:  # a subclass with its own schedule
            return super()._kappa_t(t)
        return t**self.n

    def kappa_inverse(self, kappa):
        return torch.pow(kappa, 1.0 / self.n)


class VPScheduler(Scheduler):
    """Variance preserving: alpha_t = exp(-T/2), sigma_t = sqrt(1 - exp(-T))."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        for name, v in (("beta_min", beta_min), ("beta_max", beta_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name}: expected a float, got {type(v).__name__}")
        # any finite rates >= 0, as flow_matching's (a constant or a decreasing beta is a VP path too)
        if not (0 <= beta_min < math.inf and 0 <= beta_max < math.inf and beta_min + beta_max > 0):
            raise ValueError(f"beta_min, beta_max: expected finite rates >= 0, not both 0, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    def __call__(self, t):
        b, B = self.beta_min, self.beta_max
        T = 0.5 * (1 - t) ** 2 * (B - b) + (1 - t) * b
        dT = -(1 - t) * (B - b) - b
        return SchedulerOutput(
            torch.exp(-0.5 * T), torch.sqrt(1 - torch.exp(-T)),
            -0.5 * dT * torch.exp(-0.5 * T), 0.5 * dT * torch.exp(-T) / torch.sqrt(1 - torch.exp(-T)))

    def snr_inverse(self, snr):
        T = -torch.log(snr**2 / (snr**2 + 1))
        b, B = self.beta_min, self.beta_max
        if B == b:  # T = (1 - t) b
            return 1 - T / b
        return 1 - ((-b + torch.sqrt(b**2 + 2 * (B - b) * T)) / (B - b))


class LinearVPScheduler(Scheduler):
    """alpha_t = t, sigma_t = sqrt(1 - t^2)."""

    def __call__(self, t):
        return SchedulerOutput(t, (1 - t**2) ** 0.5, torch.ones_like(t), -t / (1 - t**2) ** 0.5)

    def snr_inverse(self, snr):
        return torch.sqrt(snr**2 / (1 + snr**2))


class CosineScheduler(Scheduler):
    """alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2)."""

    def __call__(self, t):
        pi = math.pi
        return SchedulerOutput(torch.sin(pi / 2 * t), torch.cos(pi / 2 * t),
                               pi / 2 * torch.cos(pi / 2 * t), -pi / 2 * torch.sin(pi / 2 * t))

    def snr_inverse(self, snr):
        return 2.0 * torch.atan(snr) / math.pi


class OTSigmaMinScheduler(Scheduler):
    """Lipman et al. 2022: alpha_t = t, sigma_t = 1 - (1 - sigma_min) t."""

    def __init__(self, sigma_min: float = 1e-4):
        if not 0 <= sigma_min < 1:
            raise ValueError(f"sigma_min: expected a value in [0, 1), got {sigma_min}")
        self.sigma_min = sigma_min

    def __call__(self, t):
        k = 1 - self.sigma_min
        return SchedulerOutput(t, 1 - k * t, torch.ones_like(t), -k * torch.ones_like(t))

    def snr_inverse(self, snr):
        return snr / (1 + (1 - self.sigma_min) * snr)


def convex_by_type(scheduler) -> bool:
    """True for fastflow's or flow_matching's convex schedulers (no evaluation)."""
    if isinstance(scheduler, ConvexScheduler):
        return True
    try:
        from flow_matching.path.scheduler import ConvexScheduler as FMConvex
    except ImportError:
        return False
    return isinstance(scheduler, FMConvex)


def sums_to_one(out: SchedulerOutput) -> Tensor:
    """Where ``alpha_t + sigma_t = 1`` (as ``torch.allclose`` with atol 1e-5 would say), element-wise."""
    return ((out.alpha_t + out.sigma_t) - 1).abs() <= 2e-5


def is_convex(scheduler) -> bool:
    """True for fastflow's or flow_matching's convex schedulers, or numerically alpha + sigma = 1."""
    if convex_by_type(scheduler):
        return True
    return bool(sums_to_one(scheduler(torch.linspace(0.0, 1.0, 17))).all())


class ScheduleTransformedModel(ModelWrapper):
    """A velocity model trained on one scheduler, sampled on another (flow_matching's).

    Paths of two schedulers with the same source are the same up to a change of time and
    scale: ``x'_t = s_t x_r`` at the time ``r`` where the original signal-to-noise ratio
    ``alpha_r / sigma_r`` equals the new one, ``s_t = sigma'_t / sigma_r``. Differentiating,

        u'_t(x) = (ds/dt / s_t) x + s_t dr/dt u_r(x / s_t),
        dr/dt = sigma_r^2 (sigma'_t d_alpha'_t - alpha'_t d_sigma'_t)
                / (sigma'_t^2 (sigma_r d_alpha_r - alpha_r d_sigma_r)),
        ds/dt = (d_sigma'_t - s_t d_sigma_r dr/dt) / sigma_r.

    ``original_scheduler`` must have ``snr_inverse``.
    """

    def __init__(self, velocity_model, original_scheduler, new_scheduler):
        if not callable(velocity_model):
            raise TypeError("velocity_model: expected a callable model(x=..., t=...)")
        if not callable(getattr(original_scheduler, "snr_inverse", None)):
            raise TypeError("original_scheduler: expected a scheduler with snr_inverse")
        super().__init__(velocity_model)  # (a ModelWrapper, as flow_matching's: self.model)
        self.original_scheduler, self.new_scheduler = original_scheduler, new_scheduler

    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        new = self.new_scheduler(t)
        r = self.original_scheduler.snr_inverse(new.alpha_t / new.sigma_t)
        old = self.original_scheduler(r)
        s = new.sigma_t / old.sigma_t
        dr = (old.sigma_t ** 2 * (new.sigma_t * new.d_alpha_t - new.alpha_t * new.d_sigma_t)
              / (new.sigma_t ** 2 * (old.sigma_t * old.d_alpha_t - old.alpha_t * old.d_sigma_t)))
        ds = (new.d_sigma_t - s * old.d_sigma_t * dr) / old.sigma_t

        def per_sample(c):  # a scalar or [B] coefficient against x [B, ...]
            return c.reshape(*c.shape, *([1] * (x.dim() - c.dim()))) if c.dim() else c

        u_r = self.model(x=x / per_sample(s), t=r, **extras)
        return per_sample(ds / s) * x + per_sample(s * dr) * u_r


__all__ = ["SchedulerOutput", "Scheduler", "ConvexScheduler", "CondOTScheduler",
           "PolynomialConvexScheduler", "VPScheduler", "LinearVPScheduler", "CosineScheduler",
           "OTSigmaMinScheduler", "ScheduleTransformedModel", "is_convex"]
