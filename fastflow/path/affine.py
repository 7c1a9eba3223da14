"""Affine probability paths ``x_t = alpha_t x_1 + sigma_t x_0`` with a fused sample and loss.

Drop-in for flow_matching's AffineProbPath / CondOTProbPath: ``sample(x_0, x_1, t)`` gives
the same ``x_t`` and ``dx_t``; ``x_0=None`` draws the Gaussian source inside the kernel, and
``loss(v, sample)`` computes the regression loss and its gradient without ever storing the
target (FORMULAS.md §2).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _checks
from .._rng import rng_unless
from ..ops.affine_path import _affine_path_loss, _affine_path_sample
from ..ops.step_combine import step_combine
from .base import ProbPath
from .path_sample import PathSample
from .scheduler import CondOTScheduler

TARGETS = ("velocity", "x1", "epsilon")


class AffineProbPath(ProbPath):
    """The affine path of a scheduler (any object with the flow_matching scheduler interface)."""

    def __init__(self, scheduler):
        if not callable(scheduler):
            raise TypeError(f"scheduler: expected a callable t -> SchedulerOutput, got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def _coefficients(self, t: Tensor, batch: int, like: Tensor) -> dict:
        t = _checks.time("t", t, batch, like)
        out = self.scheduler(t)
        return {k: _checks.per_sample("scheduler", getattr(out, k), batch, like)
                for k in ("alpha_t", "sigma_t", "d_alpha_t", "d_sigma_t")}

    def sample(self, x_0: Optional[Tensor] = None, x_1: Optional[Tensor] = None, t: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None, backend: Optional[str] = None) -> PathSample:
        """``x_t = alpha_t x_1 + sigma_t x_0``; ``x_0=None`` draws ``N(0, I)`` in the kernel.

        ``x_1 [B, ...]``, ``t [B]`` in [0, 1]. ``dx_t`` (and a drawn ``x_0``) are computed
        when first read.
        """
        if x_1 is None or t is None:
            raise ValueError("x_1, t: both are required")
        _checks.tensor("x_1", x_1, _checks.REAL_DTYPES, ndim_min=1)
        _checks.tensor("t", t)
        if t.shape != (x_1.shape[0],):
            raise ValueError(f"t: expected shape ({x_1.shape[0]},) (one time per sample), got {tuple(t.shape)}")
        _checks.same_device("t", t, x_1)
        if x_0 is not None:
            _checks.tensor("x_0", x_0, _checks.REAL_DTYPES)
            if x_0.shape != x_1.shape and x_0.dim() == x_1.dim() and all(
                    n in (1, m) for n, m in zip(x_0.shape, x_1.shape)):  # broadcast, as flow_matching's
                x_0 = x_0.expand_as(x_1)  # (arithmetic does: a source [B, 1] against data [B, D])
        coef = self._coefficients(t, x_1.shape[0], _checks.widest(x_1, x_0))
        _checks.scheduled(coef, "alpha_t", "sigma_t")
        rng = rng_unless(x_0, x_1.device, generator)  # (the generator checked either way)
        x_t = _affine_path_sample(x_1, x_0, coef["alpha_t"], coef["sigma_t"], rng=rng, backend=backend)
        return PathSample(x_1, x_0, t, x_t, coefficients=coef, rng=rng, backend=backend)

    def loss(self, v: Tensor, sample: PathSample, target: str = "velocity", reduction: str = "mean",
             weight=None, mask: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
        """Fused ``weight * mask * (v - target)^2``, reduced; autograd-aware, target never stored.

        target: ``velocity`` (``d_alpha x_1 + d_sigma x_0``, flow_matching's ``dx_t``),
        ``x1`` or ``epsilon`` (the source noise ``x_0``). reduction: ``mean`` over
        (unmasked) elements, ``sum``, ``per_sample`` ``[B]`` means, ``none`` element-wise.
        """
        _checks.choice("target", target, TARGETS)
        if not isinstance(sample, PathSample):
            raise TypeError(f"sample: expected the PathSample of path.sample, got {type(sample).__name__}")
        sample._unchanged("sample: x_1 or x_0 was modified in place after sampling, and path.loss computes its "
                          "target from them (flow_matching's dx_t was computed when sampling)",
                          "call the loss before modifying them")
        coef = sample.coefficients
        if not coef:  # a PathSample built by hand (as flow_matching's): this path's coefficients at its t
            if sample._x_0 is None:
                raise ValueError("sample: a PathSample built without x_0 has no target to compare with")
            coef = self._coefficients(sample.t, sample.x_1.shape[0], _checks.widest(sample.x_1, sample._x_0))
        if target == "velocity":
            _checks.scheduled(coef, "d_alpha_t", "d_sigma_t")
            c, d = coef["d_alpha_t"], coef["d_sigma_t"]
        elif target == "x1":
            c, d = torch.ones_like(coef["alpha_t"]), torch.zeros_like(coef["alpha_t"])
        else:
            c, d = torch.zeros_like(coef["alpha_t"]), torch.ones_like(coef["alpha_t"])
        return _affine_path_loss(v, sample.x_1, sample._x_0, c, d, rng=sample.rng, mask=mask, weight=weight,
                                reduction=reduction, backend=backend or sample.backend)

    # -- conversions between prediction types: u = A x_t + B pred, one fused kernel each
    def _convert(self, name: str, pred: Tensor, x_t: Tensor, t: Tensor, a_fn, b_fn, singular: str) -> Tensor:
        _checks.tensor("x_t", x_t, _checks.REAL_DTYPES, ndim_min=1)
        batch = x_t.shape[0]
        # several times per sample, or a [L, 1]-like t with fewer dimensions than x_t, which
        # broadcasting aligns with x_t's last ones (flow_matching's conversions broadcast)
        if isinstance(t, Tensor) and t.dim() > 1 and (t.dim() < x_t.dim() or any(n != 1 for n in t.shape[1:])):
            return self._convert_per_element(name, pred, x_t, t, a_fn, b_fn, singular)
        s = self.scheduler(_checks.time("t", t, batch, x_t))  # a scalar or one time per sample, in [0, 1]
        a, b = (_checks.per_sample("scheduler", c, batch, x_t) for c in (a_fn(s), b_fn(s)))
        _checks.within("t", torch.stack((a, b)), f"the conversion is singular at this time ({singular})",
                       -_checks.F64_MAX, _checks.F64_MAX)
        return step_combine(x_t, pred, a, b, _names=("x_t", name, "q"))

    def _convert_per_element(self, name, pred, x_t, t, a_fn, b_fn, singular) -> Tensor:
        """A ``t`` with more than one time per sample (per token: ``[B, L, 1]`` for ``x [B, L, D]``),
        broadcast against ``x_t`` as flow_matching's conversions do: plain math, ``x_t``'s dtype."""
        _checks.tensor(name, pred, _checks.REAL_DTYPES)
        _checks.tensor("t", t, _checks.REAL_DTYPES)
        _checks.same_shape(name, pred, x_t, "x_t")
        try:
            fits = torch.broadcast_shapes(t.shape, x_t.shape) == x_t.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"t: expected a shape that broadcasts to x_t's {tuple(x_t.shape)}, got {tuple(t.shape)}")
        t = t.to(device=x_t.device, dtype=_checks.coef_dtype(x_t))
        _checks.within("t", t, "values must be in [0, 1]", 0.0, 1.0)
        s = self.scheduler(t)
        a, b = a_fn(s), b_fn(s)
        for c in (a, b):  # (as _convert checks its per-sample a, b)
            _checks.within("t", c, f"the conversion is singular at this time ({singular})", -_checks.F64_MAX,
                           _checks.F64_MAX)
        return (a * x_t + b * pred).to(x_t.dtype)

    def target_to_velocity(self, x_1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``u = (d_sigma / sigma) x_t + ((d_alpha sigma - d_sigma alpha) / sigma) x_1`` (singular at sigma_t = 0)."""
        return self._convert("x_1", x_1, x_t, t, lambda s: s.d_sigma_t / s.sigma_t,
                             lambda s: (s.d_alpha_t * s.sigma_t - s.d_sigma_t * s.alpha_t) / s.sigma_t, "sigma_t = 0")

    def epsilon_to_velocity(self, epsilon: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``u = (d_alpha / alpha) x_t + ((d_sigma alpha - d_alpha sigma) / alpha) eps`` (singular at alpha_t = 0)."""
        return self._convert("epsilon", epsilon, x_t, t, lambda s: s.d_alpha_t / s.alpha_t,
                             lambda s: (s.d_sigma_t * s.alpha_t - s.d_alpha_t * s.sigma_t) / s.alpha_t, "alpha_t = 0")

    def velocity_to_target(self, velocity: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_1 = (-d_sigma x_t + sigma u) / (d_alpha sigma - d_sigma alpha)``."""
        den = lambda s: s.d_alpha_t * s.sigma_t - s.d_sigma_t * s.alpha_t  # noqa: E731
        return self._convert("velocity", velocity, x_t, t, lambda s: -s.d_sigma_t / den(s),
                             lambda s: s.sigma_t / den(s), "d_alpha sigma - d_sigma alpha = 0")

    def epsilon_to_target(self, epsilon: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``x_1 = (x_t - sigma eps) / alpha`` (singular at alpha_t = 0)."""
        return self._convert("epsilon", epsilon, x_t, t, lambda s: 1 / s.alpha_t, lambda s: -s.sigma_t / s.alpha_t,
                             "alpha_t = 0")

    def velocity_to_epsilon(self, velocity: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``eps = (-d_alpha x_t + alpha u) / (d_sigma alpha - d_alpha sigma)``."""
        den = lambda s: s.d_sigma_t * s.alpha_t - s.d_alpha_t * s.sigma_t  # noqa: E731
        return self._convert("velocity", velocity, x_t, t, lambda s: -s.d_alpha_t / den(s),
                             lambda s: s.alpha_t / den(s), "d_sigma alpha - d_alpha sigma = 0")

    def target_to_epsilon(self, x_1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """``eps = (x_t - alpha x_1) / sigma`` (singular at sigma_t = 0)."""
        return self._convert("x_1", x_1, x_t, t, lambda s: 1 / s.sigma_t, lambda s: -s.alpha_t / s.sigma_t,
                             "sigma_t = 0")


class CondOTProbPath(AffineProbPath):
    """``AffineProbPath(CondOTScheduler())``."""

    def __init__(self):
        super().__init__(CondOTScheduler())


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from .scheduler.scheduler import Scheduler  # noqa: E402,F401
from ..utils.utils import expand_tensor_like  # noqa: E402,F401
