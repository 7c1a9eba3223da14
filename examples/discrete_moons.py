#!/usr/bin/env python
"""Discrete flow matching on 2-D "moons" with fastflow.

The standalone DFM example of flow_matching / the DFM tutorial, ported to fastflow: the two
moons are discretised onto a grid of V tokens per coordinate (2 tokens per sample), a small
MLP predicts the posterior logits ``[B, 2, V]`` of ``x_1`` given ``x_t``, training uses the
mixture path's generalized-KL loss, and sampling uses the discrete Euler (CTMC jump) solver.

Migrating from flow_matching is an import swap: every ``fastflow.X`` used below exists as
``flow_matching.X`` with the same arguments. The fastflow-only conveniences used here are
``path.sample(x_0=None, source=..., vocab_size=...)`` (source tokens drawn in the kernel)
and ``model_output="logits"`` on the solver (see the comments where they appear).

    python examples/discrete_moons.py                 # ~1 min on a 2-core CPU
    python examples/discrete_moons.py --source mask   # masked source instead of uniform
    python examples/discrete_moons.py --iters 20 --out /tmp/x.png   # smoke run
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
from torch import Tensor, nn

try:
    import fastflow  # noqa: F401
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastflow.loss import MixturePathGeneralizedKL
from fastflow.path import MixtureDiscreteProbPath
from fastflow.path.scheduler import PolynomialConvexScheduler
from fastflow.solver import MixtureDiscreteEulerSolver
from fastflow.utils import ModelWrapper

HERE = os.path.dirname(os.path.abspath(__file__))


def make_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaving half circles (sklearn.datasets.make_moons without sklearn), [n, 2]."""
    n_outer = n // 2
    theta = torch.rand(n, generator=generator) * math.pi
    outer = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    inner = torch.stack([1.0 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    x = torch.where((torch.arange(n) < n_outer)[:, None], outer, inner)
    return x + noise * torch.randn(n, 2, generator=generator)


def discretise(x: Tensor, vocab_size: int) -> Tensor:
    """Moons live in about [-1, 2] x [-0.5, 1]; map them onto token ids 0..V-1 per coordinate
    (the tutorial's ``x * 35 + 50`` for V = 128, scaled for other V)."""
    scale = vocab_size / 128.0
    return torch.round(torch.clip(x * 35 * scale + 50 * scale, min=0.0, max=vocab_size - 1)).long()


class DiscreteFlow(nn.Module):
    """The tutorial's MLP: embed the 2 tokens, concatenate t, predict logits [B, 2, V_out]."""

    def __init__(self, vocab_in: int, vocab_out: int, dim: int = 2, h: int = 128):
        super().__init__()
        self.vocab_out = vocab_out
        self.embed = nn.Embedding(vocab_in, h)
        self.net = nn.Sequential(
            nn.Linear(dim * h + 1, h), nn.ELU(),
            nn.Linear(h, h), nn.ELU(),
            nn.Linear(h, h), nn.ELU(),
            nn.Linear(h, dim * vocab_out),
        )

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = t.reshape(-1).float().expand(x_t.shape[0])
        z = torch.cat((t[:, None], self.embed(x_t).flatten(1, 2)), dim=-1)
        return self.net(z).reshape(*x_t.shape, self.vocab_out)


class LogitsModel(ModelWrapper):
    """The solvers call ``model(x=..., t=...)``. With ``model_output="logits"`` fastflow's
    solver takes raw logits (the softmax happens inside the fused jump kernel); flow_matching's
    solver wants probabilities, i.e. ``torch.softmax(logits.float(), -1)`` here."""

    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        return self.model(x, t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=3000, help="training iterations")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--vocab-size", type=int, default=128, help="tokens per coordinate")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--source", choices=("uniform", "mask"), default="uniform",
                    help="source distribution: uniform tokens, or an extra [MASK] token")
    ap.add_argument("--samples", type=int, default=2000, help="number of samples to draw")
    ap.add_argument("--steps", type=int, default=100, help="solver steps from t=0 to 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; the model is tiny, so 1 is fastest (and robust on a busy "
                         "machine); 0 keeps torch's default")
    ap.add_argument("--out", default=os.path.join(HERE, "discrete_moons.png"), help="output PNG path")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    V = args.vocab_size
    if args.source == "mask":
        mask_id = V  # one extra token, never part of the data
        vocab_total = V + 1
    else:
        mask_id = None
        vocab_total = V

    model = DiscreteFlow(vocab_in=vocab_total, vocab_out=vocab_total, h=args.hidden)
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(args.iters, 1), eta_min=args.lr * 0.05)

    path = MixtureDiscreteProbPath(scheduler=PolynomialConvexScheduler(n=2.0))
    loss_fn = MixturePathGeneralizedKL(path=path)  # fused: logits -> loss and its gradient, one pass

    # ---- training
    t_start = time.perf_counter()
    ema = None
    for it in range(1, args.iters + 1):
        x_1 = discretise(make_moons(args.batch_size, generator=gen), V)
        t = torch.rand(args.batch_size, generator=gen) * (1.0 - 1e-3)  # kappa_t < 1: the loss is finite
        # x_0=None: the source tokens are drawn inside the kernel (flow_matching: pass x_0 yourself,
        # e.g. torch.randint(0, V, x_1.shape) or torch.full_like(x_1, mask_id)).
        if args.source == "uniform":
            sample = path.sample(x_0=None, x_1=x_1, t=t, source="uniform", vocab_size=V, generator=gen)
        else:
            sample = path.sample(x_0=None, x_1=x_1, t=t, source="mask", mask_id=mask_id, generator=gen)
        logits = model(sample.x_t, sample.t)
        loss = loss_fn(logits=logits, x_1=sample.x_1, x_t=sample.x_t, t=sample.t)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if it % max(1, args.iters // 10) == 0 or it == args.iters:
            print(f"iter {it:5d}/{args.iters}  loss {loss.item():.4f}  (ema {ema:.4f})  "
                  f"{time.perf_counter() - t_start:.1f}s", flush=True)
    train_s = time.perf_counter() - t_start

    # ---- sampling
    model.eval()
    if args.source == "uniform":
        x_init = torch.randint(0, V, (args.samples, 2), generator=gen)
        p0 = None  # uniform source: flow_matching's default too
    else:
        x_init = torch.full((args.samples, 2), mask_id, dtype=torch.long)
        p0 = torch.zeros(vocab_total)
        p0[mask_id] = 1.0  # a one-hot source distribution: the masked source
    # model_output="logits" is fastflow's fast path (no softmax, no [B, 2, V] probabilities);
    # the default "probs" is flow_matching's contract, so a plain import swap also works
    # with a wrapper that returns softmax probabilities.
    solver = MixtureDiscreteEulerSolver(model=LogitsModel(model), path=path, vocabulary_size=vocab_total,
                                        source_distribution_p=p0, model_output="logits")
    n_frames = 6
    time_grid = torch.linspace(0.0, 1.0, n_frames)
    t_sample = time.perf_counter()
    traj = solver.sample(x_init=x_init, step_size=1.0 / args.steps, time_grid=time_grid,
                         return_intermediates=True, generator=gen)  # [n_frames, N, 2]
    sample_s = time.perf_counter() - t_sample

    # ---- plot
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = discretise(make_moons(args.samples, generator=gen), V)
    fig, axes = plt.subplots(1, n_frames + 1, figsize=(2.6 * (n_frames + 1), 2.8), sharex=True, sharey=True)
    for k, ax in enumerate(axes[:-1]):
        x = traj[k]
        keep = (x != mask_id).all(dim=1) if mask_id is not None else torch.ones(len(x), dtype=torch.bool)
        ax.scatter(x[keep, 0], x[keep, 1], s=2, alpha=0.5)
        title = f"t = {float(time_grid[k]):.1f}"
        if mask_id is not None:
            title += f"  ({int(keep.sum())} unmasked)"
        ax.set_title(title, fontsize=9)
    axes[-1].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5, color="tab:orange")
    axes[-1].set_title("data", fontsize=9)
    for ax in axes:
        ax.set_xlim(-1, V)
        ax.set_ylim(-1, V)
        ax.set_aspect("equal")
    fig.suptitle(f"fastflow discrete flow matching, {args.source} source, V = {V}, {args.iters} iters", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)

    print(f"training: {train_s:.1f}s, sampling ({args.samples} samples, {args.steps} steps): {sample_s:.1f}s")
    print(f"final loss: {loss.item():.4f} (ema {ema:.4f})")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
