"""Seeds for the counter-based stream (DESIGN.md principle 5, FORMULAS.md §6).

Each stochastic call draws a fresh 64-bit seed from the caller's ``torch.Generator`` (or
torch's default generator of the data's device, so ``torch.manual_seed`` works) as an int64
tensor ``(seed, offset)`` on the data's device: kernels read it, so there is no host sync
and CUDA-graph capture works. A fresh seed per call means two calls never share counters;
within a call, each op documents the counters it consumes from ``offset``.
"""
from __future__ import annotations

import torch

_GOLDEN = 0x9E3779B97F4A7C15


_DIST = torch.distributed if torch.distributed.is_available() else None


def _rank() -> int:
    return _DIST.get_rank() if _DIST is not None and _DIST.is_initialized() else 0


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")


def rng_unless(noise, device: torch.device, generator: torch.Generator | None = None):
    """``new_rng(device, generator)``, or None where explicit ``noise`` replaces the draw (the
    generator is checked either way)."""
    if noise is None:
        return new_rng(device, generator)
    _check_generator(generator)
    return None


def new_rng(device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(seed, offset = 0)`` as int64 on ``device``, the seed drawn from ``generator``."""
    _check_generator(generator)
    gen_device = generator.device if generator is not None else device
    seed = torch.randint(-(2**63), 2**63 - 1, (1,), generator=generator, device=gen_device,
                         dtype=torch.int64)  # (Tensor.random_ would save an op, but dynamo refuses it)
    rank = _rank()
    if rank:  # ranks that seed alike still draw different noise
        seed = seed + ((rank * _GOLDEN) % 2**64 - 2**63)
    rng = torch.cat((seed, torch.zeros(1, dtype=torch.int64, device=gen_device)))
    return rng if rng.device == torch.device(device) else rng.to(device, non_blocking=True)
