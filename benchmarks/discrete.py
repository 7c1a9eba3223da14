"""Discrete rows: cross-entropy and generalized-KL forward + backward, the CTMC jump step at a
few (t, h) points, and a full discrete sampling loop.

Pinned configurations: B x L tokens over V words, logits ~ 2 N(0, 1):
CPU 4 x 128 tokens at V = 32768 fp32; GPU 64 x 1024 tokens at V = 131072 bf16 (17 GB of
logits: peers that materialise [B, L, V] temporaries may run out of memory, reported as OOM).
The "small-vocab jump step" rows take V = 33 (a protein alphabet) over 32 x 256 tokens (GPU:
64 x 1024), where the per-row costs, not the bytes, decide; no goal is set on them.
The CondOT mixture path (kappa = t); sampling uses the time grid linspace(0, 0.999, 11)
(10 steps, the last one the final x_1 draw) and a model stub returning fixed logits
(fastflow, ``model_output="logits"``) or their softmax (flow_matching, computed once outside
its timing).

Byte model (N = B L tokens, s = logit bytes):

    CE / generalized-KL fwd + bwd   3 N V s            read the logits twice, write the grad
    jump step                       f N V s + 16 N     f = fraction of rows that may jump
    sampling loop                   sum over steps of the jump step's bytes (f = 1 at the end)

fastflow is timed through its public API, each backend forced with ``backend=``:
``ff.mixture_cross_entropy``, ``ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(
ff.CondOTScheduler()))``, ``ff.jump_step`` and ``ff.MixtureDiscreteEulerSolver``.

The jump step reads only the rows whose jump test ``E < h * tmax`` passes (E ~ Exp(1) per
token, FORMULAS.md section 5); with div_free = 0, ``tmax = d_kappa / (1 - kappa)``, so the
expected fraction is ``1 - exp(-h tmax)`` (the byte model uses it); the row also records the
fraction counted with the same test on explicit uniforms.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

import fastflow as ff
from fastflow import reference as R
from fastflow.ops.discrete import jump_rates  # the byte model's jump test (not timed)

from ._nvtx import nvtx_range
from .common import Ctx, dtype_tag, peer
from .harness import Built, Case

GRID = torch.linspace(0.0, 0.999, 11)  # the discrete sampling time grid
JUMP_STEPS = (0, 8, 9)  # grid steps timed alone: the first, the last regular, the final draw
SMALL_V = 33  # the small-vocabulary jump rows (20 amino acids plus special tokens)


def dims_for(ctx: Ctx):
    """(B, L, V, dtype) of the pinned discrete configuration."""
    if ctx.tiny:
        return 2, 8, 512, torch.float32
    if ctx.gpu:
        return 64, 1024, 131072, torch.bfloat16
    return 4, 128, 32768, torch.float32


def _config(B, L, V, dtype) -> str:
    return f"{B}x{L} V={V} {dtype_tag(dtype)}"


def _inputs(ctx: Ctx, B, L, V, dtype, requires_grad=False):
    g = ctx.gen(5)
    dev = ctx.device
    logits = torch.randn(B, L, V, generator=g, device=dev, dtype=dtype)
    logits.mul_(2.0)
    x1 = torch.randint(0, V, (B, L), generator=g, device=dev)
    t = torch.rand(B, generator=g, device=dev) * 0.99
    keep = torch.rand(B, L, generator=g, device=dev) < t[:, None]
    x_t = torch.where(keep, x1, torch.randint(0, V, (B, L), generator=g, device=dev))
    if requires_grad:
        logits.requires_grad_()
    return logits, x1, x_t, t


def _fm_mixture_path():
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    return MixtureDiscreteProbPath(scheduler=CondOTScheduler())


def _liger_cls():
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss
    except Exception:
        return None
    return LigerCrossEntropyLoss


# ------------------------------------------------------------------ losses
def cross_entropy(ctx: Ctx, B, L, V, dtype, row=None, overwrite=False, padded=False) -> Case:
    row = row or (f"cross-entropy fwd+bwd {dtype_tag(dtype)}" + (" overwrite_logits" if overwrite else "")
                  + (" half padding" if padded else ""))

    def build():
        logits, x1, _, _ = _inputs(ctx, B, L, V, dtype, requires_grad=True)
        N = B * L
        if padded:  # the second half of every sequence is padding (ignore_index -100)
            x1 = x1.clone()
            x1[:, L // 2:] = -100

        def make(name):
            if overwrite:  # logits as a model hands them over (not a leaf, not a view); every
                z = logits * 1.0  # call overwrites them (the kernels' time does not depend on values)
                return lambda: torch.autograd.grad(
                    ff.mixture_cross_entropy(z, x1, backend=name, overwrite_logits=True), z)
            return lambda: torch.autograd.grad(ff.mixture_cross_entropy(logits, x1, backend=name), logits)

        note = ("mixture_cross_entropy(overwrite_logits=True) + grad; peak MB is measured under the "
                "profiler, where the custom op runs without overwriting") if overwrite else \
            "mixture_cross_entropy + grad"
        impls, skipped = ctx.fastflow_impls("cross_entropy", make, note=note, label=row)
        if overwrite:  # the peers are those of the row above
            return Built(bytes=3 * N * V * logits.element_size(), impls=impls, skipped=skipped)

        def fm():
            z, y = logits.view(N, V), x1.view(N)
            return lambda: torch.autograd.grad(F.cross_entropy(z, y), logits)

        impls.append(peer("flow_matching", fm, note="torch F.cross_entropy + grad", label=row))
        # padded: an ignored row's gradient is written (zeros), its logits are not read
        valid = int((x1 != -100).sum())
        nbytes = (3 * valid + (N - valid)) * V * logits.element_size()
        if padded:
            skipped["torch.compile"] = "timed on the unpadded row only"
        if ctx.profile.compile and not padded:
            def comp():
                def ce_ref(rows, y, gs):
                    grad = torch.empty_like(rows)
                    loss = R.cross_entropy(rows, y, -100, gs, grad)
                    return (loss * gs).sum(), grad
                f = ctx.compiled(ce_ref)
                rows, y = logits.detach().view(N, V), x1.view(N)
                gs = torch.full((N,), 1.0 / N, device=ctx.device)
                return lambda: f(rows, y, gs)
            impls.append(peer("torch.compile", comp, compiled=True, label=row))
        if ctx.gpu:
            cls = _liger_cls()
            if cls is None:
                skipped["liger"] = "liger-kernel not installed"
            else:
                def lig():
                    # Liger writes the gradient into its input: give it its own copy.
                    z = logits.detach().clone().requires_grad_()
                    loss_fn = cls()
                    y = x1.view(N)
                    return lambda: torch.autograd.grad(loss_fn(z.view(N, V), y), z)
                impls.append(peer("liger", lig, label=row))
        return Built(bytes=nbytes, impls=impls, skipped=skipped)

    return Case(row, "discrete", _config(B, L, V, dtype), build)


def generalized_kl_case(ctx: Ctx, B, L, V, dtype, row=None) -> Case:
    row = row or f"generalized KL fwd+bwd {dtype_tag(dtype)}"

    def build():
        logits, x1, x_t, t = _inputs(ctx, B, L, V, dtype, requires_grad=True)
        N = B * L
        jump = 1.0 / (1.0 - t)  # d_kappa / (1 - kappa), CondOT (the compiled peer's input)

        def make(name):
            loss_fn = ff.MixturePathGeneralizedKL(ff.MixtureDiscreteProbPath(ff.CondOTScheduler()),
                                                  backend=name)
            return lambda: torch.autograd.grad(loss_fn(logits, x1, x_t, t), logits)

        impls, skipped = ctx.fastflow_impls("generalized_kl", make, note="MixturePathGeneralizedKL + grad",
                                            label=row)

        def fm():
            from flow_matching.loss import MixturePathGeneralizedKL

            loss_fn = MixturePathGeneralizedKL(_fm_mixture_path())
            return lambda: torch.autograd.grad(loss_fn(logits, x1, x_t, t), logits)

        impls.append(peer("flow_matching", fm, note="MixturePathGeneralizedKL + grad", label=row))
        if ctx.profile.compile:
            def comp():
                def gkl_ref(rows, y1, yt, j, gs):
                    grad = torch.empty_like(rows)
                    loss = R.generalized_kl(rows, y1, yt, j, -(2**62), gs, grad)
                    return (loss * gs).sum(), grad
                f = ctx.compiled(gkl_ref)
                rows = logits.detach().view(N, V)
                gs = torch.full((N,), 1.0 / N, device=ctx.device)
                j = jump.repeat_interleave(L)
                return lambda: f(rows, x1.view(N), x_t.view(N), j, gs)
            impls.append(peer("torch.compile", comp, compiled=True, label=row))
        return Built(bytes=3 * N * V * logits.element_size(), impls=impls, skipped=skipped)

    return Case(row, "discrete", _config(B, L, V, dtype), build)


# ------------------------------------------------------------------ jump step
def _grid_step(i: int):
    ts = GRID.tolist()
    return ts[i], ts[i + 1] - ts[i], i == len(ts) - 2


def expected_fraction(t: float, h: float, final: bool) -> float:
    """Expected fraction of rows read: P(E < h tmax) = 1 - exp(-h tmax), tmax = r1 (div_free 0)."""
    if final:
        return 1.0
    sched = ff.CondOTScheduler()(torch.tensor([t]))
    r1, _ = jump_rates(sched.alpha_t.float(), sched.d_alpha_t.float(), torch.zeros(1))
    return float(1.0 - torch.exp(-h * r1)[0])


def counted_fraction(t: float, h: float, final: bool, n_rows: int, seed: int = 7) -> float:
    """The jump test ``E < h tmax`` of the reference, counted on explicit uniforms."""
    if final:
        return 1.0
    u = torch.rand(n_rows, generator=torch.Generator().manual_seed(seed))
    e = -torch.log1p(-u)
    sched = ff.CondOTScheduler()(torch.tensor([t]))
    r1, _ = jump_rates(sched.alpha_t.float(), sched.d_alpha_t.float(), torch.zeros(1))
    return float((e < h * r1).float().mean())


def _fm_step(p_1t, x_t, t, h, final, path, V):
    """One step of flow_matching 1.0.10's MixtureDiscreteEulerSolver (div_free = 0), as its
    ``sample`` loop body runs it: categorical x_1, one-hot rates, jump test, categorical jump."""
    from flow_matching.utils import categorical

    x_1 = categorical(p_1t.to(dtype=torch.float32))
    if final:
        return x_1
    x_t = x_t.clone()
    out = path.scheduler(t=t)
    k_t, d_k_t = out.alpha_t, out.d_alpha_t
    u = d_k_t / (1 - k_t) * F.one_hot(x_1, num_classes=V).to(k_t.dtype)
    u = torch.where(F.one_hot(x_t, num_classes=V).to(torch.bool), torch.zeros_like(u), u)
    intensity = u.sum(dim=-1)
    mask_jump = torch.rand(size=x_t.shape, device=x_t.device) < 1 - torch.exp(-h * intensity)
    if mask_jump.sum() > 0:
        x_t[mask_jump] = categorical(u[mask_jump].to(dtype=torch.float32))
    return x_t


def _softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """softmax in fp32, stored in the logits dtype, one batch row at a time (bounded memory)."""
    p = torch.empty_like(logits)
    for b in range(logits.shape[0]):
        p[b] = torch.softmax(logits[b].float(), dim=-1).to(logits.dtype)
    return p


def jump_step_case(ctx: Ctx, B, L, V, dtype, step: int, name: str = "jump step") -> Case:
    t, h, final = _grid_step(step)
    N = B * L
    frac = expected_fraction(t, h, final)
    row = (f"{name} t={t:.4f} final reads 100%" if final
           else f"{name} t={t:.4f} h={h:.4f} reads {100 * frac:.1f}%")
    extras = {"t": t, "h": h, "final": final, "rows_read_expected": frac,
              "rows_read_counted": counted_fraction(t, h, final, N)}

    def build():
        logits, _, x_t, _ = _inputs(ctx, B, L, V, dtype)
        sched = ff.CondOTScheduler()
        g = ctx.gen(6)

        def make(name):
            return lambda: ff.jump_step(logits, x_t, t, h, sched, final=final, generator=g, backend=name)

        impls, skipped = ctx.fastflow_impls("jump_step", make, note="jump_step(logits)", label=row)

        def fm():
            p = _softmax_rows(logits)  # outside the timing
            path = _fm_mixture_path()
            tt = torch.tensor([t], device=ctx.device)
            hh = torch.tensor([h], device=ctx.device)
            return lambda: _fm_step(p, x_t, tt, hh, final, path, V)

        impls.append(peer("flow_matching", fm, note="solver step body, probs given", label=row))
        nbytes = frac * N * V * logits.element_size() + 16 * N
        # a Philox word per logit of a row read (the race; it skips the words of a block that
        # cannot win whatever its noise, which never happens with these Gaussian logits) and a
        # few per token (the jump test)
        return Built(bytes=nbytes, impls=impls, skipped=skipped, draws={"word": frac * N * V + 4 * N})

    return Case(row, "discrete", _config(B, L, V, dtype), build, extras=extras)


# ------------------------------------------------------------------ sampling loop
class _Stub:
    """A model returning fixed outputs, called as flow_matching's solvers call models."""

    def __init__(self, out):
        self.out = out

    def __call__(self, x=None, t=None, **extras):
        with nvtx_range("model"):
            return self.out


def sampling_loop(ctx: Ctx, B, L, V, dtype) -> Case:
    steps = len(GRID) - 1
    N = B * L
    fracs = [expected_fraction(*_grid_step(i)) for i in range(steps)]
    total = sum(fracs) / steps
    row = f"discrete sampling {steps} steps reads {100 * total:.0f}%"
    extras = {"steps": steps, "grid": GRID.tolist(), "rows_read_expected_per_step": fracs,
              "rows_read_expected": total}

    def build():
        logits, x1, _, _ = _inputs(ctx, B, L, V, dtype)
        x_init = torch.randint(0, V, (B, L), generator=ctx.gen(8), device=ctx.device)
        g = ctx.gen(9)
        grid = GRID.to(ctx.device)
        path = ff.MixtureDiscreteProbPath(ff.CondOTScheduler())

        def make(name):
            solver = ff.MixtureDiscreteEulerSolver(model=_Stub(logits), path=path, vocabulary_size=V,
                                                   model_output="logits", backend=name)
            return lambda: solver.sample(x_init=x_init, step_size=None, time_grid=grid, generator=g)

        impls, skipped = ctx.fastflow_impls("jump_step", make, note='MixtureDiscreteEulerSolver(model_output="logits")',
                                            label=row)

        def fm():
            from flow_matching.solver import MixtureDiscreteEulerSolver

            p = _softmax_rows(logits)  # outside the timing
            solver = MixtureDiscreteEulerSolver(model=_Stub(p), path=_fm_mixture_path(),
                                                vocabulary_size=V)
            return lambda: solver.sample(x_init=x_init, step_size=None, time_grid=grid)

        impls.append(peer("flow_matching", fm, note="probs given", label=row))
        nbytes = sum(f * N * V * logits.element_size() + 16 * N for f in fracs)
        return Built(bytes=nbytes, impls=impls, skipped=skipped)

    return Case(row, "discrete", _config(B, L, V, dtype), build, extras=extras)


def cases(ctx: Ctx) -> list:
    B, L, V, dtype = dims_for(ctx)
    out = [cross_entropy(ctx, B, L, V, dtype), cross_entropy(ctx, B, L, V, dtype, overwrite=True),
           cross_entropy(ctx, B, L, V, dtype, padded=True),
           generalized_kl_case(ctx, B, L, V, dtype)]
    out += [jump_step_case(ctx, B, L, V, dtype, i) for i in JUMP_STEPS]
    out.append(sampling_loop(ctx, B, L, V, dtype))
    if not ctx.tiny:  # a protein-sized vocabulary: many short rows, where per-row costs show
        Bs, Ls = (64, 1024) if ctx.gpu else (32, 256)
        out += [jump_step_case(ctx, Bs, Ls, SMALL_V, torch.float32, i, name="small-vocab jump step")
                for i in JUMP_STEPS[1:]]
    return out

