"""ODE sampling rows: a full Euler loop of 20 and 50 steps over a cheap velocity field.

The field is ``v(x, t) = -x`` (one read and one write of x, so the loop measures the solver,
not a network). Byte model per step: field 2 N s + Euler step 3 N s = 5 N s.

fastflow: ``ff.ODESolver(field, backend=name).sample(x, step_size=1/steps, method="euler")``
(the public solver: its time grid, per-step dispatch and checks are inside the timing).
Peers: flow_matching's ``ODESolver`` (torchdiffeq Euler) with the same arguments, and a
Python loop calling ``torch.compile`` of the reference ``step_combine``.
"""
from __future__ import annotations

import torch

import fastflow as ff
from fastflow import reference as R

from ._nvtx import nvtx_range
from .common import Ctx, dtype_tag, peer, shape_tag
from .continuous import shape_for
from .harness import Built, Case

STEPS = (20, 50)


class Field:
    """The cheap velocity model ``v = -x``, callable as flow_matching calls models."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x=None, t=None, **extras):
        self.calls += 1
        with nvtx_range("model"):
            return torch.neg(x)


def _count_fm_steps(steps: int) -> int:
    from flow_matching.solver import ODESolver

    field = Field()
    ODESolver(velocity_model=field).sample(x_init=torch.zeros(1), step_size=1.0 / steps,
                                           method="euler")
    return field.calls


def ode_loop(ctx: Ctx, shape, dtype, steps: int, row=None) -> Case:
    row = row or f"ode euler {steps} steps {dtype_tag(dtype)}"

    def build():
        g = ctx.gen(4)
        x0 = torch.randn(shape, generator=g, device=ctx.device, dtype=dtype)
        field = Field()
        h = 1.0 / steps

        def make(name):
            solver = ff.ODESolver(velocity_model=field, backend=name)
            return lambda: solver.sample(x_init=x0, step_size=h, method="euler")

        impls, skipped = ctx.fastflow_impls("step_combine", make, note="ff.ODESolver euler", label=row)

        def fm():
            from flow_matching.solver import ODESolver

            solver = ODESolver(velocity_model=field)
            return lambda: solver.sample(x_init=x0, step_size=h, method="euler")

        nfe = _count_fm_steps(steps)
        impls.append(peer("flow_matching", fm, label=row,
                          note="ODESolver euler" + ("" if nfe == steps else f"; torchdiffeq took {nfe} steps")))
        if ctx.profile.compile:
            def comp():
                f = ctx.compiled(R.step_combine)
                B = shape[0]
                A = torch.ones(B, device=ctx.device)
                Bh = torch.full((B,), h, device=ctx.device)

                def loop():
                    x = x0
                    for i in range(steps):
                        with nvtx_range(f"step {i}"):
                            v = field(x=x, t=None)
                            x = f(x, v, None, A, Bh, None, None, None, None)
                    return x
                return loop
            impls.append(peer("torch.compile", comp, compiled=True, note="loop over the compiled reference step",
                              label=row))
        n = x0.numel() * x0.element_size()
        return Built(bytes=steps * 5 * n, impls=impls, skipped=skipped,
                     extras={"steps": steps, "flow_matching_nfe": nfe})

    return Case(row, "ode", shape_tag(shape), build)


def cases(ctx: Ctx) -> list:
    shape = shape_for(ctx)
    return [ode_loop(ctx, shape, torch.float32, s) for s in STEPS]
