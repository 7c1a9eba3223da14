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


def _check_generator(generator, device=None) -> None:
    """A torch.Generator (or None) on ``device``, the data's: torch's ops draw on their
    generator's device and refuse another, and a seed drawn elsewhere would need a copy (a host
    sync, or a non-blocking copy the CPU kernels could read before it lands)."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if device is not None and generator.device != torch.device(device):
        raise ValueError(f"generator: it draws on {generator.device}, the data are on {device} (make it with "
                         f"torch.Generator(device=...) on the data's device)")


def rng_unless(noise, device: torch.device, generator: torch.Generator | None = None):
    """``new_rng(device, generator)``, or None where explicit ``noise`` replaces the draw (the
    generator is checked either way)."""
    if noise is None:
        return new_rng(device, generator)
    _check_generator(generator, device)
    return None


def new_rng(device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(seed, offset = 0)`` as int64 on ``device``, the seed drawn from ``generator``."""
    _check_generator(generator, device)
    seed = torch.randint(-(2**63), 2**63 - 1, (1,), generator=generator, device=device,
                         dtype=torch.int64)  # (Tensor.random_ would save an op, but dynamo refuses it)
    rank = _rank()
    if rank:  # ranks that seed alike still draw different noise
        seed = seed + ((rank * _GOLDEN) % 2**64 - 2**63)
    return torch.cat((seed, torch.zeros(1, dtype=torch.int64, device=device)))
