"""DDPM / DDIM (seeds 002/003, FORMULAS.md §1 and §3) on the fused step kernel.

``DDPMScheduler`` holds the tables (``beta_k`` linear in ``[beta_start, beta_end]``,
``alpha_k = 1 - beta_k``, ``abar_k = prod_{s<=k} alpha_s``, k = 1..K, ``abar_0 = 1``).
It is also an affine scheduler in flow-matching time ``t = 1 - k / K`` (t = 1 is data):
``alpha_t = sqrt(abar_k)``, ``sigma_t = sqrt(1 - abar_k)`` with k = round((1 - t) K), so the
epsilon-prediction training loss is ``AffineProbPath(DDPMScheduler()).loss(..., target="epsilon")``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import _checks
from ._rng import rng_unless
from .ops.step_combine import step_combine
from .path.scheduler import SchedulerOutput


class DDPMScheduler:
    """The DDPM tables of a linear ``beta`` schedule (FORMULAS.md §1): ``beta_k`` from ``beta_start``
    to ``beta_end`` over ``k = 1..num_steps``, ``alpha_k = 1 - beta_k``, ``alpha_bar_k = prod_{i<=k}
    alpha_i`` (float64, index 0 holds ``beta = 0``, ``alpha_bar = 1``). ``ddpm_step`` / ``ddim_step``
    read them at a step ``k``; as a path, ``alpha = sqrt(alpha_bar)`` on the data and ``sigma =
    sqrt(1 - alpha_bar)`` on the noise."""

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
            raise TypeError(f"num_steps: expected an int, got {type(num_steps).__name__}")
        num_steps = int(num_steps)
        if num_steps < 1:
            raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
        beta_start, beta_end = (_checks.scalar(n, v) for n, v in (("beta_start", beta_start), ("beta_end", beta_end)))
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"beta_start, beta_end: expected 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.num_steps = num_steps
        beta = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.beta = torch.cat((torch.zeros(1, dtype=torch.float64), beta))  # index k = 1..K
        self.alpha = 1 - self.beta
        self.alpha_bar = torch.cumprod(self.alpha, 0)  # alpha_bar[0] = 1
        if not self.alpha_bar[-1] > 0:  # (sqrt(alpha_bar) divides the DDIM step and the conversions)
            raise ValueError(f"num_steps, beta_end: alpha_bar underflows to 0 by step {num_steps} "
                             f"(a schedule of {num_steps} steps up to beta_end = {beta_end} destroys all signal)")
        self._on = {}  # device -> (beta, alpha, alpha_bar): the tables where the data is

    def tables(self, device) -> tuple[Tensor, Tensor, Tensor]:
        """``(beta, alpha, alpha_bar)`` (fp64, index k = 0..K) on ``device``, copied there once:
        steps and times index them where the data is, with no host sync."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.beta, self.alpha, self.alpha_bar
        if device not in self._on:
            self._on[device] = tuple(v.to(device) for v in (self.beta, self.alpha, self.alpha_bar))
        return self._on[device]

    def _k(self, k, batch: int, like: Tensor, name="k", lo=1):
        """An int step stays an int (checked here); a tensor becomes an int64 ``[B]`` on
        ``like``'s device, checked there (asynchronously off the CPU, see ``_checks.values``)."""
        if isinstance(k, bool) or not isinstance(k, (int, Tensor)):
            raise TypeError(f"{name}: expected an int or an integer tensor, got {type(k).__name__}")
        if isinstance(k, int):
            if not lo <= k <= self.num_steps:
                raise ValueError(f"{name}: expected a step in [{lo}, {self.num_steps}], got {k}")
            return k
        if k.dtype.is_floating_point or k.is_complex() or k.dtype == torch.bool:
            raise TypeError(f"{name}: expected an int or an integer tensor [B], got {k.dtype}")
        if k.dim() > 1 or k.numel() not in (1, batch):
            raise ValueError(f"{name}: expected an int or shape [{batch}], got {tuple(k.shape)}")
        k = k.to(like.device, torch.int64).reshape(-1).expand(batch)
        _checks.values(name, (k >= lo) & (k <= self.num_steps), f"expected steps in [{lo}, {self.num_steps}]")
        return k.clamp(lo, self.num_steps)  # (in range once checked; off the CPU the check is asynchronous)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        """The table as an affine scheduler in flow-matching time (derivatives by central
        differences over the neighbouring table steps, one-sided at k = 0 and K; d/dt = -K d/dk).
        ``t`` in [0, 1]."""
        _checks.tensor("t", t, _checks.REAL_DTYPES)
        _checks.values("t", (t >= 0) & (t <= 1), "times must lie in [0, 1]")
        K = self.num_steps
        k = torch.round((1 - t.double()) * K).long().clamp(0, K)  # (in range once checked)
        ab = self.tables(t.device)[2]
        alpha, sigma = ab[k].sqrt(), (1 - ab[k]).sqrt()
        kn, kp = (k + 1).clamp(max=K), (k - 1).clamp(min=0)
        span = (kn - kp).clamp(min=1).double() / K
        d_alpha = (ab[kp].sqrt() - ab[kn].sqrt()) / span
        d_sigma = ((1 - ab[kp]).sqrt() - (1 - ab[kn]).sqrt()) / span
        return SchedulerOutput(*(v.to(t.dtype) for v in (alpha, sigma, d_alpha, d_sigma)))


def _coef(v, x: Tensor) -> float | Tensor:
    """A step's coefficient for ``step_combine``: a float for an int step, else ``[B]`` (fp32;
    float64 for float64 ``x``)."""
    if v.dim() == 0 and not torch.compiler.is_compiling():
        return float(v)  # (a traced float of a tensor is data-dependent: fullgraph refused it)
    return v.to(device=x.device, dtype=_checks.coef_dtype(x)).reshape(-1)


def _check_scheduler(scheduler) -> None:
    if not isinstance(scheduler, DDPMScheduler):
        raise TypeError(f"scheduler: expected a DDPMScheduler, got {type(scheduler).__name__}")


def ddpm_step(x: Tensor, eps_hat: Tensor, k, scheduler: DDPMScheduler,
              generator: Optional[torch.Generator] = None, noise: Optional[Tensor] = None,
              out: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """Ancestral step k -> k-1: ``x/sqrt(a_k) - beta_k/(sqrt(a_k) sqrt(1-abar_k)) eps_hat + sqrt(beta_k) z``
    (no noise at k = 1). ``k``: int or ``[B]`` integer tensor in [1, K]."""
    _checks.tensor("x", x, _checks.REAL_DTYPES, ndim_min=1)
    _check_scheduler(scheduler)
    k = scheduler._k(k, x.shape[0], x)
    beta, alpha, alpha_bar = scheduler.tables(x.device if isinstance(k, Tensor) else "cpu")
    A = 1 / alpha[k].sqrt()
    B = -beta[k] / (alpha[k].sqrt() * (1 - alpha_bar[k]).sqrt())
    N = torch.where(torch.as_tensor(k, device=beta.device) > 1, beta[k].sqrt(), 0.0)
    rng = rng_unless(noise, x.device, generator)
    return step_combine(x, eps_hat, _coef(A, x), _coef(B, x), N=_coef(N, x), rng=rng, noise=noise, out=out,
                        backend=backend, _names=("x", "eps_hat", "q"))


def ddim_step(x: Tensor, eps_hat: Tensor, k, k_prev, scheduler: DDPMScheduler,
              out: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """Deterministic DDIM (eta = 0) step k -> j = k_prev < k:
    ``sqrt(abar_j / abar_k) x + (sqrt(1 - abar_j) - sqrt(abar_j (1 - abar_k) / abar_k)) eps_hat``;
    ``k_prev = 0`` lands on the data (abar_0 = 1)."""
    _checks.tensor("x", x, _checks.REAL_DTYPES, ndim_min=1)
    _check_scheduler(scheduler)
    k = scheduler._k(k, x.shape[0], x)
    j = scheduler._k(k_prev, x.shape[0], x, name="k_prev", lo=0)
    if isinstance(k, int) and isinstance(j, int):
        if j >= k:
            raise ValueError(f"k_prev: expected k_prev < k, got {j} >= {k}")
    else:
        _checks.values("k_prev", torch.as_tensor(j, device=x.device) < torch.as_tensor(k, device=x.device),
                       "expected k_prev < k")
    alpha_bar = scheduler.tables(x.device if isinstance(k, Tensor) or isinstance(j, Tensor) else "cpu")[2]
    ab_k, ab_j = alpha_bar[k], alpha_bar[j]
    A = (ab_j / ab_k).sqrt()
    B = (1 - ab_j).sqrt() - (ab_j * (1 - ab_k) / ab_k).sqrt()
    coef = "scheduler (the DDIM coefficient of {} at k, k_prev, from its alpha_bar)"  # (a table that underflows)
    return step_combine(x, eps_hat, _coef(A, x), _coef(B, x), out=out, backend=backend,
                        _names=("x", "eps_hat", "q", coef.format("x"), coef.format("eps_hat")))
