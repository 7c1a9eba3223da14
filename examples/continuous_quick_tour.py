#!/usr/bin/env python
"""Continuous flow matching quick tour with fastflow: 2-D checkerboard, CondOT path, ODE sampling.

The Flow Matching Guide's quick tour (flow_matching's ``2d_flow_matching`` example), ported to
fastflow: an MLP velocity field ``u_theta(x_t, t)`` is regressed onto the conditional velocity
``x_1 - x_0`` of the conditional-OT path ``x_t = t x_1 + (1 - t) x_0`` with ``x_0 ~ N(0, I)``,
then samples are drawn by integrating ``dx/dt = u_theta(x, t)`` from t = 0 to 1 with ODESolver.

Migrating from flow_matching is an import swap; the fused fastflow entry points used here are

* ``path.sample(x_0=None, x_1=x_1, t=t)``: the Gaussian source is drawn inside the kernel
  (flow_matching: ``x_0 = torch.randn_like(x_1)`` and ``path.sample(x_0=x_0, ...)``), and
* ``path.loss(v, sample)``: the fused MSE to the velocity target, forward and backward, without
  materialising ``dx_t`` (flow_matching: ``torch.pow(v - sample.dx_t, 2).mean()``).

    python examples/continuous_quick_tour.py                  # ~1 min on a 2-core CPU
    python examples/continuous_quick_tour.py --iters 20 --out /tmp/x.png   # smoke run
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import Tensor, nn

try:
    import fastflow  # noqa: F401
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastflow.path import CondOTProbPath
from fastflow.solver import ODESolver
from fastflow.utils import ModelWrapper

HERE = os.path.dirname(os.path.abspath(__file__))


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """The quick tour's 4 x 4 checkerboard (8 filled squares) in about [-4.4, 4.4]^2, [n, 2]."""
    x1 = torch.rand(n, generator=generator) * 4 - 2
    x2 = torch.rand(n, generator=generator) - torch.randint(0, 2, (n,), generator=generator) * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1) / 0.45


class MLP(nn.Module):
    """Velocity field u(x, t): t is concatenated to x, SiLU (swish) hidden layers."""

    def __init__(self, dim: int = 2, hidden: int = 64, layers: int = 5):
        super().__init__()
        blocks: list[nn.Module] = [nn.Linear(dim + 1, hidden), nn.SiLU()]
        for _ in range(layers - 2):
            blocks += [nn.Linear(hidden, hidden), nn.SiLU()]
        blocks.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        # training passes t [B]; the ODE solver passes a scalar time tensor
        t = t.reshape(-1, 1).float().expand(x.shape[0], 1)
        return self.net(torch.cat([x, t], dim=1))


class WrappedModel(ModelWrapper):
    """ODESolver calls ``velocity_model(x=..., t=..., **extras)``."""

    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        return self.model(x, t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=4000, help="training iterations")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--samples", type=int, default=10000, help="number of samples to draw")
    ap.add_argument("--step-size", type=float, default=0.05, help="ODE solver step (midpoint)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; the model is small, so 1 is about as fast (and robust "
                         "on a busy machine); 0 keeps torch's default")
    ap.add_argument("--out", default=os.path.join(HERE, "continuous_quick_tour.png"), help="output PNG path")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    model = MLP(hidden=args.hidden)
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(args.iters, 1), eta_min=args.lr * 0.05)
    path = CondOTProbPath()  # == AffineProbPath(scheduler=CondOTScheduler())

    # ---- training
    t_start = time.perf_counter()
    ema = None
    for it in range(1, args.iters + 1):
        x_1 = checkerboard(args.batch_size, generator=gen)
        t = torch.rand(args.batch_size, generator=gen)
        sample = path.sample(x_0=None, x_1=x_1, t=t, generator=gen)  # x_0 ~ N(0, I) drawn in-kernel
        v = model(sample.x_t, sample.t)
        loss = path.loss(v, sample)  # fused mean((v - dx_t)^2), dx_t never materialised
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if it % max(1, args.iters // 10) == 0 or it == args.iters:
            print(f"iter {it:5d}/{args.iters}  loss {loss.item():.4f}  (ema {ema:.4f})  "
                  f"{time.perf_counter() - t_start:.1f}s", flush=True)
    train_s = time.perf_counter() - t_start

    # ---- sampling: integrate the learned velocity field from t = 0 to 1
    model.eval()
    solver = ODESolver(velocity_model=WrappedModel(model))
    time_grid = torch.linspace(0.0, 1.0, 5)  # the times returned with return_intermediates=True
    x_init = torch.randn(args.samples, 2, generator=gen)
    t_sample = time.perf_counter()
    sol = solver.sample(x_init=x_init, method="midpoint", step_size=args.step_size, time_grid=time_grid,
                        return_intermediates=True)  # [len(time_grid), N, 2]
    # a fine time grid for a few trajectories
    n_traj = 300
    fine_grid = torch.linspace(0.0, 1.0, 41)
    traj = solver.sample(x_init=x_init[:n_traj], method="midpoint", step_size=args.step_size,
                         time_grid=fine_grid, return_intermediates=True)  # [41, n_traj, 2]
    sample_s = time.perf_counter() - t_sample

    # ---- plot
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = checkerboard(args.samples, generator=gen)
    lim = 4.5
    n_panels = len(time_grid) + 2
    fig, axes = plt.subplots(1, n_panels, figsize=(2.8 * n_panels, 3.0), sharex=True, sharey=True)
    bins = 90
    rng = [[-lim, lim], [-lim, lim]]
    for k, t_k in enumerate(time_grid.tolist()):
        x = sol[k]
        axes[k].hist2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=bins, range=rng, cmap="viridis")
        axes[k].set_title(f"t = {t_k:.2f}", fontsize=9)
    ax = axes[len(time_grid)]
    ax.scatter(sol[-1, :, 0], sol[-1, :, 1], s=0.3, alpha=0.15, color="0.6")
    for i in range(n_traj):
        ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.4, alpha=0.6, color="tab:blue")
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=2, color="black", label="x_0")
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=2, color="tab:red", label="x_1")
    ax.set_title("trajectories", fontsize=9)
    ax.legend(loc="lower left", fontsize=6, markerscale=3)
    axes[-1].hist2d(data[:, 0].numpy(), data[:, 1].numpy(), bins=bins, range=rng, cmap="viridis")
    axes[-1].set_title("data", fontsize=9)
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    fig.suptitle(f"fastflow flow matching (CondOT path, midpoint ODE, step {args.step_size}), "
                 f"{args.iters} iters", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)

    print(f"training: {train_s:.1f}s, sampling ({args.samples} samples, midpoint, step {args.step_size}): "
          f"{sample_s:.1f}s")
    print(f"final loss: {loss.item():.4f} (ema {ema:.4f})")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
