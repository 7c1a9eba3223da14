"""torch.library plumbing shared by the ops: one custom op per backend op, dispatched at run time.

Each ``fastflow::<op>`` takes the resolved backend name as its last argument, so the op is
opaque to torch.compile (it traces the call, not the kernel) and the same graph runs on any
backend.
"""
from __future__ import annotations

import torch

from .. import backends


def run(op: str, backend: str, *args):
    return backends.kernel(op, backend)(*args)


def pick(op: str, like: torch.Tensor, backend: str | None) -> str:
    return backends.resolve_name(op, like.device.type, backend)
