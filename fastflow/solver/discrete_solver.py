"""MixtureDiscreteEulerSolver: flow_matching's discrete sampler on the fused jump step.

Same constructor and ``sample`` arguments as flow_matching (``model_output="probs"`` by
default, its contract, so an import swap is correct; ``"logits"`` skips the softmax and is
the fast path), the same step-size / time-grid / last-step rules and intermediates. Each
step is one ``jump_step`` kernel: no ``[B, L, V]`` temporaries, rows that cannot jump are
not read, and no host sync happens per step unless ``verbose``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .. import _checks
from ..ops.discrete import jump_stepper
from .base import Solver, check_step_size, check_steps


def discretization(time_grid: Tensor, step_size: Optional[float]) -> list[float]:
    """flow_matching's grid: ``t0 + k * step_size`` for ``k < ceil((t1 - t0) / step_size)``, then ``t1``."""
    if step_size is None:
        return [float(v) for v in time_grid]
    check_step_size(step_size)
    t_init, t_final = float(time_grid[0]), float(time_grid[-1])
    if not t_final - t_init > step_size:
        raise ValueError(f"step_size: must be smaller than the time interval [{t_init}, {t_final}], got {step_size}")
    return steps_between(t_init, t_final, step_size)


def steps_between(t_init: float, t_final: float, step_size: float) -> list[float]:
    """``t_init + k * step_size`` for ``k < ceil((t_final - t_init) / step_size)``, then ``t_final``
    (a shortened last step): flow_matching's fixed-step grids."""
    n_steps = math.ceil((t_final - t_init) / step_size)
    check_steps(n_steps, step_size)
    return [t_init + step_size * i for i in range(n_steps)] + [t_final]


class MixtureDiscreteEulerSolver(Solver):
    def __init__(self, model: Callable, path, vocabulary_size: int,
                 source_distribution_p: Optional[Tensor] = None, model_output: str = "probs",
                 mask_id: Optional[int] = None, backend: Optional[str] = None):
        super().__init__()
        if not callable(model):
            raise TypeError("model: expected a callable model(x=..., t=...)")
        if not isinstance(vocabulary_size, int) or vocabulary_size < 1:
            raise ValueError(f"vocabulary_size: expected a positive int, got {vocabulary_size!r}")
        _checks.choice("model_output", model_output, ("probs", "logits"))
        self.model, self.path, self.vocabulary_size = model, path, vocabulary_size
        self.model_output, self.backend = model_output, backend
        self.source_distribution_p = source_distribution_p
        self._source, self._mask_id = "uniform", mask_id
        if source_distribution_p is not None:
            p0 = source_distribution_p
            _checks.tensor("source_distribution_p", p0, _checks.REAL_DTYPES)
            if p0.shape != (vocabulary_size,):
                raise ValueError(f"source_distribution_p: expected shape ({vocabulary_size},), got {tuple(p0.shape)}")
            host = p0.detach().double().cpu()  # once, at construction: pick the closed form
            # (NaN fails too; each entry's rounding in p0's dtype moves the sum by up to eps / 2)
            if not (bool((host >= 0).all()) and abs(float(host.sum()) - 1) < max(1e-3, torch.finfo(p0.dtype).eps)):
                raise ValueError("source_distribution_p: expected non-negative probabilities that sum to 1")
            if torch.all(host == host[0]):
                self._source = "uniform"
            elif int((host > 0).sum()) == 1 and float(host.max()) == 1.0:
                self._source, self._mask_id = "mask", int(host.argmax())
            else:
                self._source = p0.float()
        if mask_id is not None:  # the source is the mask token (a one-hot p0 at mask_id)
            if isinstance(mask_id, bool) or not isinstance(mask_id, int) or not 0 <= mask_id < vocabulary_size:
                raise ValueError(f"mask_id: expected an int in [0, {vocabulary_size}), got {mask_id!r}")
            if source_distribution_p is not None and (self._source != "mask" or self._mask_id != mask_id):
                raise ValueError(f"mask_id: {mask_id} disagrees with source_distribution_p (not its one-hot token)")
            self._source, self._mask_id = "mask", mask_id

    def sample(self, x_init: Tensor, step_size: Optional[float], div_free: Union[float, Callable] = 0.0,
               dtype_categorical: torch.dtype = torch.float32, time_grid: Tensor = torch.tensor([0.0, 1.0]),
               return_intermediates: bool = False, verbose: bool = False, temperature: float = 1.0,
               generator: Optional[torch.Generator] = None, **model_extras) -> Tensor:
        """Sample from ``x_init [B, ...]``; ``dtype_categorical`` is accepted for compatibility
        (the race draws from the exact law in the model output's arithmetic: fp32, or float64)."""
        _checks.tensor("x_init", x_init, _checks.INDEX_DTYPES, ndim_min=1)
        if (callable(div_free) or div_free != 0.0) and self.source_distribution_p is None \
                and self._mask_id is None:
            raise ValueError("source_distribution_p: required to add a divergence-free term (div_free != 0)")
        if isinstance(self._source, torch.Tensor) and self._source.device != x_init.device:
            self._source = self._source.to(x_init.device)
        grid = discretization(time_grid, step_size)
        targets = [float(v) for v in time_grid]
        if return_intermediates and step_size is not None:
            targets = [min(grid, key=lambda g: abs(g - v)) for v in targets]  # nearest grid time
        n_steps = len(grid) - 1
        x_t = x_init.clone()
        res = [x_init.clone()] if return_intermediates else []
        saved = {grid[0]} if return_intermediates else set()
        bar = None
        if verbose:
            from tqdm import tqdm
            bar = tqdm(total=n_steps, desc="NFE: 0")
        batch = x_t.shape[0]
        t_dev = torch.tensor(grid, dtype=torch.float32, device=x_init.device)
        step = jump_stepper(x_init, grid, self.path.scheduler, self.vocabulary_size, div_free, self._source,
                            self._mask_id, temperature, self.model_output == "probs", generator, self.backend)
        with torch.no_grad():
            for i in range(n_steps):
                out = self.model(x=x_t, t=t_dev[i:i + 1].repeat(batch), **model_extras)
                x_t = step(i, out, x_t, i == n_steps - 1)
                if return_intermediates and grid[i + 1] in targets and grid[i + 1] not in saved:
                    res.append(x_t.clone())
                    saved.add(grid[i + 1])
                if bar is not None:
                    bar.update(1)
                    bar.set_description(f"NFE: {i + 1}")
        if bar is not None:
            bar.close()
        if not return_intermediates:
            return x_t
        stacked = torch.stack(res)
        if step_size is None:
            return stacked
        order = sorted(set(targets))
        return stacked[[order.index(v) for v in targets]]
