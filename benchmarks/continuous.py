"""Continuous rows: path sample, fused path loss forward + backward, the training step that
composes them, Euler step (+ CFG).

Pinned configuration: x of shape 128 x 3 x 64 x 64 (1.57 M elements), fp32 and bf16, the
CondOT path (alpha = t, sigma = 1 - t, velocity target d_alpha x_1 + d_sigma x_0 = x_1 - x_0),
t ~ U(0, 1) per sample. fastflow is timed through its public API (``ff.CondOTProbPath()``'s
``sample`` / ``loss``, ``ff.euler_step``), each backend forced with ``backend=``, so
the dispatch, input checks and torch.library layers are inside the timing.
Byte model (DESIGN.md, N elements of s bytes):

    path sample        2 N s   read x_1, write x_t (x_0 drawn in-kernel)
    loss fwd + bwd     3 N s   the forward reads v, x_1 and writes dv in the same pass; the
                               backward of a mean has nothing left to do (autocast row: v and
                               dv of 2 bytes, x_1 of 4: (2 * 2 + 4) N)
    train step         5 N s   the two above: sample 2 N s + loss fwd + bwd 3 N s (x_0 is
                               regenerated from its seed, never stored or read)
    Euler step         3 N s   read x, v, write x
    Euler step + CFG   4 N s   read x, v_cond, v_uncond, write x

Peers: flow_matching's ``AffineProbPath.sample`` (with its ``torch.randn_like`` source, as a
training loop calls it); for the loss, flow_matching's ``dx_t = d_sigma x_0 + d_alpha x_1``
(x_0 given) built inside the timing, then ``((v - dx_t) ** 2).mean()`` and its gradient; for
the train step, the whole flow_matching step (``randn_like``, ``sample``, loss, ``backward``)
and ``torch.compile`` of that same function; the Euler update torchdiffeq performs inside
flow_matching's ``ODESolver`` (``dy = h * v; x + dy``; CFG mixed as ``(1 + w) v_c - w v_u``);
and ``torch.compile`` of fastflow's reference op (same math, same Philox stream) for the
single-op rows.
"""
from __future__ import annotations

import torch

import fastflow as ff
from fastflow import reference as R

from .common import Ctx, dtype_tag, peer, shape_tag
from .harness import Built, Case

H = 0.05  # Euler step size (20 steps over [0, 1])
TOY_SHAPE = (256, 2)  # the toy row: 256 points in 2-D
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
        path = ff.CondOTProbPath()
        impls, skipped = ctx.fastflow_impls(
            "affine_path_sample",
            lambda name: (lambda: path.sample(x_0=None, x_1=x1, t=t, backend=name)),
            note="path.sample(x_0=None)", label=row)
        fm_path = _fm_path()

        def fm():
            return lambda: fm_path.sample(x_0=torch.randn_like(x1), x_1=x1, t=t)

        impls.append(peer("flow_matching", fm, note="randn_like x_0 + sample", label=row))
        if ctx.profile.compile:
            def comp():
                f = ctx.compiled(R.affine_path_sample)
                return lambda: f(x1, None, a, b, None, rng)
            impls.append(peer("torch.compile", comp, compiled=True, note="reference op", label=row))
        return Built(bytes=2 * x1.numel() * x1.element_size(), impls=impls, skipped=skipped,
                     draws={"normal": x1.numel()})

    return Case(row, "continuous", shape_tag(shape), build)


# ------------------------------------------------------------------ fused loss
def _fm_dx_t(fm_path, x0, x1, t):
    """flow_matching's ``dx_t`` line of ``AffineProbPath.sample``, alone (no ``x_t``)."""
    from flow_matching.utils import expand_tensor_like

    out = fm_path.scheduler(t)
    d_alpha = expand_tensor_like(input_tensor=out.d_alpha_t, expand_to=x1)
    d_sigma = expand_tensor_like(input_tensor=out.d_sigma_t, expand_to=x1)
    return d_sigma * x0 + d_alpha * x1


def path_loss(ctx: Ctx, shape, dtype, row=None, v_dtype=None) -> Case:
    """``v_dtype``: the model output's dtype when it is not the data's (autocast: bf16 v, fp32 x_1)."""
    row = row or f"path loss fwd+bwd {dtype_tag(dtype)}"
    v_dtype = v_dtype or dtype

    def build():
        g = ctx.gen(2)
        x1 = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
        v = torch.randn(shape, generator=g, device=ctx.device, dtype=v_dtype).requires_grad_()
        t = torch.rand(shape[0], generator=g, device=ctx.device)
        B, n = shape[0], x1.numel()
        c = torch.ones(B, device=ctx.device)  # d_alpha_t (CondOT)
        d = -torch.ones(B, device=ctx.device)  # d_sigma_t
        rng = ctx.rng()
        path = ff.CondOTProbPath()

        def make(name):
            s = path.sample(x_0=None, x_1=x1, t=t, backend=name)  # outside the timing

            def fn():
                return torch.autograd.grad(path.loss(v, s, backend=name), v)
            return fn

        impls, skipped = ctx.fastflow_impls(
            "affine_path_loss", make, label=row,
            note="path.loss(v, s) + grad; x_0 regenerated in-kernel (s = path.sample(x_0=None), untimed)")

        def fm():
            fm_path = _fm_path()
            x0 = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)  # the drawn source

            def fn():
                dx_t = _fm_dx_t(fm_path, x0, x1, t)
                return torch.autograd.grad(((v - dx_t) ** 2).mean(), v)
            return fn

        impls.append(peer("flow_matching", fm, label=row,
                          note="dx_t = d_sigma x_0 + d_alpha x_1 (x_0 given) + ((v - dx_t)**2).mean() + grad"))
        if ctx.profile.compile:
            def comp():
                fused = ctx.compiled(R.affine_path_loss)
                scale = torch.full((B,), 1.0 / n, device=ctx.device)
                vd = v.detach()
                dv = torch.empty_like(vd)

                def fn():
                    loss = fused(vd, x1, None, c, d, None, rng, None, scale, dv).sum() / n
                    return loss, dv
                return fn
            impls.append(peer("torch.compile", comp, compiled=True, label=row,
                              note="reference loss with its gradient (x_0 regenerated from Philox)"))
        # read v and x_1, write the gradient (v's dtype)
        return Built(bytes=n * (2 * v.element_size() + x1.element_size()), impls=impls, skipped=skipped,
                     draws={"normal": n})

    return Case(row, "continuous", shape_tag(shape), build)


# ------------------------------------------------------------------ train step
def _fm_train_loss(fm_path, v, x1, t):
    """flow_matching's training step up to the loss: draw x_0, sample, regress on dx_t."""
    x0 = torch.randn_like(x1)
    s = fm_path.sample(x_0=x0, x_1=x1, t=t)
    return s.x_t, ((v - s.dx_t) ** 2).mean()


def train_step(ctx: Ctx, shape, dtype, row=None, loop: int = 0) -> Case:
    """sample + loss + backward, the configuration the performance goal is defined on.

    ``v`` stands for the model output: a leaf whose gradient is reset (``v.grad = None``, as
    ``optimizer.zero_grad()`` does) at the start of each timed call, so each call's backward
    writes a fresh gradient. Every implementation returns ``x_t`` (the model input).
    ``loop``: timed as that many calls in a row with warm caches (``Built.loop``), for the
    toy-sized row, whose cost is the calls' Python."""
    row = row or f"train step sample+loss+bwd {dtype_tag(dtype)}"

    def build():
        g = ctx.gen(10)
        x1 = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
        v = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype).requires_grad_()
        t = torch.rand(shape[0], generator=g, device=ctx.device)
        path = ff.CondOTProbPath()

        def make(name):
            def fn():
                v.grad = None
                s = path.sample(x_0=None, x_1=x1, t=t, backend=name)
                loss = path.loss(v, s, backend=name)
                loss.backward()
                return s.x_t, loss
            return fn

        impls, skipped = ctx.fastflow_impls(
            ("affine_path_sample", "affine_path_loss"), make, label=row,
            note="path.sample(x_0=None) + path.loss + backward")

        def fm():
            fm_path = _fm_path()

            def fn():
                v.grad = None
                x_t, loss = _fm_train_loss(fm_path, v, x1, t)
                loss.backward()
                return x_t, loss
            return fn

        impls.append(peer("flow_matching", fm, label=row,
                          note="randn_like x_0 + sample + ((v - dx_t)**2).mean() + backward"))
        if ctx.profile.compile:
            def comp():
                fm_path = _fm_path()
                f = ctx.compiled(lambda v_, x1_, t_: _fm_train_loss(fm_path, v_, x1_, t_))

                def fn():
                    v.grad = None
                    x_t, loss = f(v, x1, t)
                    loss.backward()
                    return x_t, loss
                return fn
            impls.append(peer("torch.compile", comp, compiled=True, label=row,
                              note="the flow_matching step compiled (+ backward)"))
        return Built(bytes=5 * x1.numel() * x1.element_size(), impls=impls, skipped=skipped,
                     draws={"normal": 2 * x1.numel()},  # drawn by the sample, regenerated by the loss
                     loop=loop)

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
                return lambda: ff.euler_step(x, v, h, v_uncond=vu, guidance_scale=w, backend=name)
            return lambda: ff.euler_step(x, v, h, backend=name)

        impls, skipped = ctx.fastflow_impls(
            "step_combine", make, label=row,
            note="euler_step(x, v, h, v_uncond, guidance_scale)" if cfg else "euler_step(x, v, h)")

        def fm():
            if cfg:
                def fn():
                    vel = (1.0 + w) * v - w * vu
                    return x + h * vel
                return fn
            return lambda: x + h * v

        impls.append(peer("flow_matching", fm, note="torchdiffeq's Euler update", label=row))
        if ctx.profile.compile:
            def comp():
                f = ctx.compiled(R.step_combine)
                B = shape[0]
                A = torch.ones(B, device=ctx.device)
                Bp = torch.full((B,), h * (1 + w) if cfg else h, device=ctx.device)
                C = torch.full((B,), -h * w, device=ctx.device) if cfg else None
                return lambda: f(x, v, vu, A, Bp, C, None, None, None)
            impls.append(peer("torch.compile", comp, compiled=True, note="reference op", label=row))
        return Built(bytes=(4 if cfg else 3) * x.numel() * x.element_size(), impls=impls,
                     skipped=skipped)

    return Case(row, "continuous", shape_tag(shape), build)


def cases(ctx: Ctx) -> list:
    shape = shape_for(ctx)
    dtypes = (torch.float32, torch.bfloat16)
    out = [path_sample(ctx, shape, dt) for dt in dtypes]
    out += [path_loss(ctx, shape, dt) for dt in dtypes]
    out.append(path_loss(ctx, shape, torch.float32, row="path loss fwd+bwd autocast (bf16 v, fp32 data)",
                         v_dtype=torch.bfloat16))
    out += [train_step(ctx, shape, dt) for dt in dtypes]
    # a 2-D toy problem's batch (the moons / 8-gaussians tutorials): no memory traffic to speak
    # of, so the row measures what the calls' Python and dispatch cost, in a warm loop
    out.append(train_step(ctx, TOY_SHAPE, torch.float32, row="train step 2-D toy fp32",
                          loop=3 if ctx.tiny else 200))
    out += [euler_step(ctx, shape, dt, cfg=False) for dt in dtypes]
    out += [euler_step(ctx, shape, dt, cfg=True) for dt in dtypes]
    return out
