"""Continuous rows: path sample, fused path loss forward + backward, Euler step (+ CFG).

Pinned configuration: x of shape 128 x 3 x 64 x 64 (1.57 M elements), fp32 and bf16, the
CondOT path (alpha = t, sigma = 1 - t, velocity target d_alpha x_1 + d_sigma x_0 = x_1 - x_0),
t ~ U(0, 1) per sample. Byte model (DESIGN.md, N elements of s bytes):

    path sample        2 N s   read x_1, write x_t (x_0 drawn in-kernel)
    loss fwd + bwd     5 N s   forward reads v, x_1; backward reads v, x_1, writes dv
    Euler step         3 N s   read x, v, write x
    Euler step + CFG   4 N s   read x, v_cond, v_uncond, write x

Peers: flow_matching's ``AffineProbPath.sample`` (with its ``torch.randn_like`` source, as a
training loop calls it), ``F.mse_loss`` against its ``dx_t`` + backward (``dx_t`` computed
outside the timing), the Euler update torchdiffeq performs inside flow_matching's
``ODESolver`` (``dy = h * v; x + dy``; CFG mixed as ``(1 + w) v_c - w v_u``), and
``torch.compile`` of fastflow's reference op (same math, same Philox stream).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastflow import reference as R
from fastflow.ops.affine_path import affine_path_loss, affine_path_sample
from fastflow.ops.step_combine import step_combine

from .common import Ctx, dtype_tag, peer, shape_tag
from .harness import Built, Case

H = 0.05  # Euler step size (20 steps over [0, 1])
GUIDANCE = 2.0  # CFG scale w


def shape_for(ctx: Ctx):
    return (4, 3, 8, 8) if ctx.tiny else (128, 3, 64, 64)


def _fm_path():
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    return AffineProbPath(scheduler=CondOTScheduler())


# ------------------------------------------------------------------ path sample
def path_sample(ctx: Ctx, shape, dtype, row=None) -> Case:
    row = row or f"path sample {dtype_tag(dtype)}"

    def build():
        g = ctx.gen(1)
        x1 = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
        t = torch.rand(shape[0], generator=g, device=ctx.device)
        a, b = t, 1 - t
        rng = ctx.rng()
        impls, skipped = ctx.fastflow_impls(
            "affine_path_sample",
            lambda name: (lambda: affine_path_sample(x1, None, a, b, None, rng, backend=name)),
            label=row)
        fm_path = _fm_path()

        def fm():
            return lambda: fm_path.sample(x_0=torch.randn_like(x1), x_1=x1, t=t)

        impls.append(peer("flow_matching", fm, label=row))
        if ctx.profile.compile:
            def comp():
                f = ctx.compiled(R.affine_path_sample)
                return lambda: f(x1, None, a, b, None, rng)
            impls.append(peer("torch.compile", comp, compiled=True, label=row))
        return Built(bytes=2 * x1.numel() * x1.element_size(), impls=impls, skipped=skipped)

    return Case(row, "continuous", shape_tag(shape), build)


# ------------------------------------------------------------------ fused loss
def path_loss(ctx: Ctx, shape, dtype, row=None) -> Case:
    row = row or f"path loss fwd+bwd {dtype_tag(dtype)}"

    def build():
        g = ctx.gen(2)
        x1 = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
        v = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype).requires_grad_()
        t = torch.rand(shape[0], generator=g, device=ctx.device)
        B, n = shape[0], x1.numel()
        c = torch.ones(B, device=ctx.device)  # d_alpha_t (CondOT)
        d = -torch.ones(B, device=ctx.device)  # d_sigma_t
        rng = ctx.rng()

        def make(name):
            def fn():
                loss = affine_path_loss(v, x1, None, c, d, rng=rng, backend=name)
                return torch.autograd.grad(loss, v)
            return fn

        impls, skipped = ctx.fastflow_impls("affine_path_loss", make, label=row)

        def fm():
            x0 = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
            dx_t = _fm_path().sample(x_0=x0, x_1=x1, t=t).dx_t  # outside the timing
            return lambda: torch.autograd.grad(F.mse_loss(v, dx_t), v)

        impls.append(peer("flow_matching", fm, label=row))
        if ctx.profile.compile:
            def comp():
                fwd = ctx.compiled(R.affine_path_loss)
                bwd = ctx.compiled(R.affine_path_loss_backward)
                scale = torch.full((B,), 1.0 / n, device=ctx.device)
                vd = v.detach()

                def fn():
                    loss = fwd(vd, x1, None, c, d, None, rng, None).sum() / n
                    return loss, bwd(scale, vd, x1, None, c, d, None, rng, None)
                return fn
            impls.append(peer("torch.compile", comp, compiled=True, label=row))
        return Built(bytes=5 * n * x1.element_size(), impls=impls, skipped=skipped)

    return Case(row, "continuous", shape_tag(shape), build)


# ------------------------------------------------------------------ Euler step
def euler_step(ctx: Ctx, shape, dtype, cfg: bool, row=None) -> Case:
    row = row or f"euler step{' cfg' if cfg else ''} {dtype_tag(dtype)}"

    def build():
        g = ctx.gen(3)
        x = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
        v = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
        vu = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype) if cfg else None
        w, h = GUIDANCE, H

        def make(name):
            if cfg:
                return lambda: step_combine(x, v, 1.0, h * (1 + w), q=vu, C=-h * w, backend=name)
            return lambda: step_combine(x, v, 1.0, h, backend=name)

        impls, skipped = ctx.fastflow_impls("step_combine", make, label=row)

        def fm():
            if cfg:
                def fn():
                    vel = (1.0 + w) * v - w * vu
                    return x + h * vel
                return fn
            return lambda: x + h * v

        impls.append(peer("flow_matching", fm, label=row))
        if ctx.profile.compile:
            def comp():
                f = ctx.compiled(R.step_combine)
                B = shape[0]
                A = torch.ones(B, device=ctx.device)
                Bp = torch.full((B,), h * (1 + w) if cfg else h, device=ctx.device)
                C = torch.full((B,), -h * w, device=ctx.device) if cfg else None
                return lambda: f(x, v, vu, A, Bp, C, None, None, None)
            impls.append(peer("torch.compile", comp, compiled=True, label=row))
        return Built(bytes=(4 if cfg else 3) * x.numel() * x.element_size(), impls=impls,
                     skipped=skipped)

    return Case(row, "continuous", shape_tag(shape), build)


def cases(ctx: Ctx) -> list:
    shape = shape_for(ctx)
    dtypes = (torch.float32, torch.bfloat16)
    out = [path_sample(ctx, shape, dt) for dt in dtypes]
    out += [path_loss(ctx, shape, dt) for dt in dtypes]
    out += [euler_step(ctx, shape, dt, cfg=False) for dt in dtypes]
    out += [euler_step(ctx, shape, dt, cfg=True) for dt in dtypes]
    return out
