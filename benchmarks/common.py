"""What the row groups share: the run context and which fastflow backends to time."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from fastflow import backends

from ._nvtx import wrap
from .harness import Impl, Profile

# Ops whose reference implementation is too slow to time by default (the jump step's race
# draws its Philox uniforms with torch integer ops: about 3 s a call at t = 0 and 30 s for
# the final step at 4 x 128 x 32768 on two CPU cores; much more at the GPU configuration).
SLOW_REFERENCE_OPS = ("jump_step",)


@dataclass
class Ctx:
    device: torch.device
    profile: Profile
    backends: Optional[tuple] = None  # --backends filter (None: every available backend)
    seed: int = 0

    @property
    def tiny(self) -> bool:
        return self.profile.tiny

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    def gen(self, offset: int = 0) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed + offset)

    def rng(self, seed: int = 1234) -> torch.Tensor:
        """A fixed ``(seed, offset)`` counter-based stream key on the device."""
        return torch.tensor([seed, 0], dtype=torch.int64, device=self.device)

    # -------------------------------------------------------------- fastflow backends
    def fastflow_impls(self, op, make: Callable[[str], Callable], note: str = "",
                       label: str = "") -> tuple:
        """An ``Impl`` per fastflow backend that can run ``op`` here, and the skipped ones.

        ``op`` is a backend op name or a tuple of them (a composite row needs them all).
        ``make(backend)`` returns the timed closure, which must force that backend
        (``backend=`` where the public API takes it, else ``fastflow.use_backend``).
        Triton on CPU tensors runs only in its interpreter and is never timed. ``--quick``
        times the reference backend only where no compiled backend runs the op; the ops in
        ``SLOW_REFERENCE_OPS`` run on the reference backend only when ``--backends`` names it
        (or in ``--smoke``).
        """
        ops = (op,) if isinstance(op, str) else tuple(op)
        dev = self.device.type
        runnable, skipped = [], {}
        for name in backends.NAMES:
            key = f"fastflow/{name}"
            if self.backends is not None and name not in self.backends:
                continue
            if name == "triton" and dev == "cpu":
                skipped[key] = "Triton on CPU tensors runs only in the interpreter; not timed"
                continue
            reason = next((r for r in (backends.why_not(name, o, dev) for o in ops) if r), None)
            if reason is not None:
                skipped[key] = reason
                continue
            runnable.append(name)
        explicit = self.backends is not None and "reference" in self.backends
        if "reference" in runnable and not explicit and not self.tiny:
            if self.profile.name == "quick" and len(runnable) > 1:
                runnable.remove("reference")
                skipped["fastflow/reference"] = "--quick: reference timed only where no compiled backend runs the op"
            elif any(o in SLOW_REFERENCE_OPS for o in ops):
                runnable.remove("reference")
                skipped["fastflow/reference"] = ("reference jump step timed only with --backends reference "
                                                 "(3-30 s a call on 2 CPU cores)")
        impls = [Impl(f"fastflow/{name}", (lambda n=name: wrap(f"{label} fastflow/{n}", make(n))),
                      note=note) for name in runnable]
        return impls, skipped

    def compiled(self, fn):
        """``torch.compile(fn)`` with static shapes and room for the sweeps' recompiles."""
        import torch._dynamo as dynamo

        for knob in ("cache_size_limit", "recompile_limit"):
            if hasattr(dynamo.config, knob):
                setattr(dynamo.config, knob, max(64, getattr(dynamo.config, knob)))
        return torch.compile(fn, dynamic=False)


def peer(name: str, factory: Callable[[], Callable], note: str = "", compiled: bool = False,
         label: str = "") -> Impl:
    return Impl(name, lambda: wrap(f"{label} {name}", factory()), kind="peer", note=note,
                compiled=compiled)


def dtype_tag(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def shape_tag(shape) -> str:
    return "x".join(str(s) for s in shape)
