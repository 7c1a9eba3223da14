"""DDPM / DDIM (seeds 002/003, FORMULAS.md §1 and §3) on the fused step kernel.

``DDPMScheduler`` holds the tables (``beta_k`` linear in ``[beta_start, beta_end]``,
``alpha_k = 1 - beta_k``, ``abar_k = prod_{s<=k} alpha_s``, k = 1..K, ``abar_0 = 1``).
It is also an affine scheduler in flow-matching time ``t = 1 - k / K`` (t = 1 is data):
``alpha_t = sqrt(abar_k)``, ``sigma_t = sqrt(1 - abar_k)`` with k = round((1 - t) K), so the
epsilon-prediction training loss is ``AffineProbPath(DDPMScheduler()).loss(..., target="epsilon")``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks
from ._rng import new_rng
from .ops.step_combine import step_combine
from .path.scheduler import SchedulerOutput


class DDPMScheduler:
    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"beta_start, beta_end: expected 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        self.num_steps = num_steps
        beta = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.beta = torch.cat((torch.zeros(1, dtype=torch.float64), beta))  # index k = 1..K
        self.alpha = 1 - self.beta
        self.alpha_bar = torch.cumprod(self.alpha, 0)  # alpha_bar[0] = 1

    def _k(self, k, batch: int, like: Tensor, name="k", lo=1) -> Tensor:
        if isinstance(k, Tensor):
            if k.dtype.is_floating_point or k.dim() > 1:
                raise TypeError(f"{name}: expected an int or an integer tensor [B], got {k.dtype} {tuple(k.shape)}")
            k = k.reshape(-1).cpu().expand(batch)
        elif isinstance(k, int) and not isinstance(k, bool):
            k = torch.full((batch,), k)
        else:
            raise TypeError(f"{name}: expected an int or an integer tensor, got {type(k).__name__}")
        if bool(((k < lo) | (k > self.num_steps)).any()):
            raise ValueError(f"{name}: expected steps in [{lo}, {self.num_steps}]")
        return k.long()

    def __call__(self, t: Tensor) -> SchedulerOutput:
        """The table as an affine scheduler in flow-matching time (derivatives by finite
        difference over one table step, d/dt = -K d/dk)."""
        k = torch.round((1 - t.double().cpu()) * self.num_steps).long().clamp(0, self.num_steps)
        ab = self.alpha_bar
        alpha, sigma = ab[k].sqrt(), (1 - ab[k]).sqrt()
        kn = (k + 1).clamp(max=self.num_steps)
        kp = (k - 1).clamp(min=0)
        span = (kn - kp).clamp(min=1).double() / self.num_steps
        d_alpha = (ab[kp].sqrt() - ab[kn].sqrt()) / span
        d_sigma = ((1 - ab[kp]).sqrt() - (1 - ab[kn]).sqrt()) / span
        to = lambda v: v.to(device=t.device, dtype=t.dtype)  # noqa: E731
        return SchedulerOutput(to(alpha), to(sigma), to(d_alpha), to(d_sigma))


def ddpm_step(x: Tensor, eps_hat: Tensor, k, scheduler: DDPMScheduler,
              generator: Optional[torch.Generator] = None, noise: Optional[Tensor] = None,
              out: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """Ancestral step k -> k-1: ``x/sqrt(a_k) - beta_k/(sqrt(a_k) sqrt(1-abar_k)) eps_hat + sqrt(beta_k) z``
    (no noise at k = 1). ``k``: int or ``[B]`` integer tensor in [1, K]."""
    _checks.tensor("x", x, _checks.FLOAT_DTYPES, ndim_min=1)
    k = scheduler._k(k, x.shape[0], x)
    s = scheduler
    A = 1 / s.alpha[k].sqrt()
    B = -s.beta[k] / (s.alpha[k].sqrt() * (1 - s.alpha_bar[k]).sqrt())
    N = torch.where(k > 1, s.beta[k].sqrt(), 0.0)
    dev = lambda v: v.float().to(x.device)  # noqa: E731
    rng = new_rng(x.device, generator) if noise is None else None
    return step_combine(x, eps_hat, dev(A), dev(B), N=dev(N), rng=rng, noise=noise, out=out, backend=backend)


def ddim_step(x: Tensor, eps_hat: Tensor, k, k_prev, scheduler: DDPMScheduler,
              out: Optional[Tensor] = None, backend: Optional[str] = None) -> Tensor:
    """Deterministic DDIM (eta = 0) step k -> j = k_prev < k:
    ``sqrt(abar_j / abar_k) x + (sqrt(1 - abar_j) - sqrt(abar_j (1 - abar_k) / abar_k)) eps_hat``;
    ``k_prev = 0`` lands on the data (abar_0 = 1)."""
    _checks.tensor("x", x, _checks.FLOAT_DTYPES, ndim_min=1)
    k = scheduler._k(k, x.shape[0], x)
    j = scheduler._k(k_prev, x.shape[0], x, name="k_prev", lo=0)
    if bool((j >= k).any()):
        raise ValueError("k_prev: expected k_prev < k")
    ab_k, ab_j = scheduler.alpha_bar[k], scheduler.alpha_bar[j]
    A = (ab_j / ab_k).sqrt()
    B = (1 - ab_j).sqrt() - (ab_j * (1 - ab_k) / ab_k).sqrt()
    return step_combine(x, eps_hat, A.float().to(x.device), B.float().to(x.device), out=out, backend=backend)
