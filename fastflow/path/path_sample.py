"""Path samples. ``x_0`` and ``dx_t`` of a sample whose noise was drawn in-kernel are
regenerated on demand from the stored ``rng`` (never stored), so reading them costs a pass."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ops.affine_path import _affine_path_sample
from ..ops.discrete import _mixture_path_sample


class PathSample:
    """``x_1, x_0, t, x_t, dx_t`` as flow_matching's PathSample; ``x_0``/``dx_t`` are lazy."""

    def __init__(self, x_1: Tensor, x_0: Optional[Tensor], t: Tensor, x_t: Tensor,
                 coefficients: dict, rng: Optional[Tensor], backend: Optional[str]):
        self.x_1, self.t, self.x_t = x_1, t, x_t
        self._x_0, self.coefficients, self.rng, self.backend = x_0, coefficients, rng, backend
        self._dx_t: Optional[Tensor] = None

    @property
    def x_0(self) -> Tensor:
        if self._x_0 is None:  # regenerate the in-kernel noise: 0 * x_1 + 1 * x_0
            zero = torch.zeros_like(self.coefficients["alpha_t"])
            self._x_0 = _affine_path_sample(self.x_1, None, zero, zero + 1, rng=self.rng, backend=self.backend)
        return self._x_0

    @property
    def dx_t(self) -> Tensor:
        if self._dx_t is None:
            c = self.coefficients
            self._dx_t = _affine_path_sample(self.x_1, self._x_0, c["d_alpha_t"], c["d_sigma_t"],
                                             rng=self.rng, backend=self.backend)
        return self._dx_t


class DiscretePathSample:
    """``x_1, x_0, t, x_t`` as flow_matching's DiscretePathSample; a drawn ``x_0`` is lazy."""

    def __init__(self, x_1, x_0, t, x_t, rng, vocab_size, mask_id, backend):
        self.x_1, self.t, self.x_t = x_1, t, x_t
        self._x_0, self.rng, self.vocab_size, self.mask_id, self.backend = x_0, rng, vocab_size, mask_id, backend

    @property
    def x_0(self) -> Tensor:
        if self._x_0 is None:  # kappa = 0 returns the source draw of the same stream
            kappa = torch.zeros(self.x_1.shape[0], device=self.x_1.device)
            self._x_0 = _mixture_path_sample(self.x_1, None, kappa, self.rng, self.vocab_size,
                                             self.mask_id, backend=self.backend)
        return self._x_0
