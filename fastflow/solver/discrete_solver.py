"""MixtureDiscreteEulerSolver: flow_matching's discrete sampler on the fused jump step.

Same constructor and ``sample`` arguments as flow_matching (``model_output="probs"`` by
default, its contract, so an import swap is correct; ``"logits"`` skips the softmax and is
the fast path), the same step-size / time-grid / last-step rules and intermediates. Each
step is one ``jump_step`` kernel: no ``[B, L, V]`` temporaries, rows that cannot jump are
not read, and no host sync happens per step unless ``verbose``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import _checks, _transforms
from ..ops.discrete import jump_stepper
from .base import Solver, check_step_size, check_steps, check_time_grid


def discretization(times: Sequence[float], step_size: Optional[float]) -> list[float]:
    """flow_matching's grid: ``t0 + k * step_size`` for ``k < ceil((t1 - t0) / step_size)``, then
    ``t1``; ``times`` itself without a step size (both checked by the caller)."""
    if step_size is None:
        return list(times)
    t_init, t_final = times[0], times[-1]
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
    """flow_matching's ``MixtureDiscreteEulerSolver``: Euler steps of the mixture path's CTMC, each
    one fused ``jump_step`` over the model's output (FORMULAS.md §5).

    ``model(x=x_t, t=t, **model_extras)`` returns ``[*x_t.shape, vocabulary_size]``: probabilities
    (``model_output="probs"``, flow_matching's contract, so an import swap is correct) or logits
    (``"logits"``: no softmax, the fast path). ``source_distribution_p`` is the source ``p0`` (a
    ``[V]`` tensor; None: uniform), or give ``mask_id`` for a mask source. ``backend``: the jump
    step's (default: the thread's, see ``fastflow.backends``).
    """

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
            if isinstance(p0, Tensor) and not (p0.is_floating_point() or p0.is_complex()):
                p0 = p0.float()  # (a one-hot made with integers: flow_matching reads it as floats)
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

    @_transforms.eager_under_compile  # (see Solver)
    def sample(self, x_init: Tensor, step_size: Optional[float], div_free: Union[float, Callable] = 0.0,
               dtype_categorical: torch.dtype = torch.float32, time_grid: Tensor = torch.tensor([0.0, 1.0]),
               return_intermediates: bool = False, verbose: bool = False, temperature: float = 1.0,
               generator: Optional[torch.Generator] = None, **model_extras) -> Tensor:
        """Sample from ``x_init [B, ...]``; ``dtype_categorical`` is accepted for compatibility
        (the race draws from the exact law in the model output's arithmetic: fp32, or float64)."""
        _checks.tensor("x_init", x_init, _checks.INDEX_DTYPES, ndim_min=1)
        _checks.tensor("time_grid", time_grid)
        # without a step size the grid's times are the steps': non-decreasing (a repeated time is
        # a step of length 0, as in flow_matching); with one, only its ends and nearest times count
        times = check_time_grid(time_grid, "increasing" if step_size is None else None)
        step_size = check_step_size(step_size)
        if (callable(div_free) or div_free != 0.0) and self.source_distribution_p is None \
                and self._mask_id is None:
            raise ValueError("source_distribution_p: required to add a divergence-free term (div_free != 0)")
        source = self._source.to(x_init.device) if isinstance(self._source, Tensor) else self._source
        grid = discretization(times, step_size)
        keep = []  # the grid index of the state returned for each time_grid point
        if return_intermediates:  # (with a step size, the nearest grid time: the first of two, as flow_matching)
            keep = (list(range(len(grid))) if step_size is None
                    else [min(range(len(grid)), key=lambda k: abs(grid[k] - v)) for v in times])
        kept = set(keep)
        n_steps, V = len(grid) - 1, self.vocabulary_size
        x_t = x_init.clone()
        states = {0: x_init.clone()} if return_intermediates else {}
        bar = None
        if verbose:
            from tqdm import tqdm
            bar = tqdm(total=n_steps, desc="NFE: 0")
        batch = x_t.shape[0]
        t_dev = torch.tensor(grid, dtype=torch.float32, device=x_init.device)
        step = jump_stepper(x_init, grid, self.path.scheduler, V, div_free, source, self._mask_id,
                            temperature, self.model_output == "probs", generator, self.backend)
        with torch.no_grad():
            for i in range(n_steps):
                out = self.model(x=x_t, t=t_dev[i:i + 1].repeat(batch), **model_extras)
                if (self.model_output == "probs" and isinstance(out, Tensor)
                        and not (out.is_floating_point() or out.is_complex())):
                    # integer probabilities (an oracle's F.one_hot): flow_matching casts them to
                    # dtype_categorical
                    out = out.to(dtype_categorical if dtype_categorical.is_floating_point else torch.float32)
                if isinstance(out, Tensor) and out.shape != (*x_t.shape, V):
                    raise ValueError(f"model: expected an output of shape {tuple(x_t.shape)} + (vocabulary_size,) "
                                     f"= {(*x_t.shape, V)}, got {tuple(out.shape)}")
                x_t = step(i, out, x_t, i == n_steps - 1)
                if i + 1 in kept:
                    states[i + 1] = x_t.clone()
                if bar is not None:
                    bar.update(1)
                    bar.set_description(f"NFE: {i + 1}")
        if bar is not None:
            bar.close()
        return torch.stack([states[k] for k in keep]) if return_intermediates else x_t


# flow_matching's module imports these names too: `from flow_matching.<this module> import ...` of them
# keeps working after an import swap
from ..path.mixture import MixtureDiscreteProbPath  # noqa: E402,F401
from ..utils.categorical_sampler import categorical  # noqa: E402,F401
from ..utils.model_wrapper import ModelWrapper  # noqa: E402,F401
from .utils import get_nearest_times  # noqa: E402,F401
