"""Path samples. ``x_0`` and ``dx_t`` of a sample whose noise was drawn in-kernel are
regenerated on demand from the stored ``rng`` (never stored), so reading them costs a pass."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import torch
from torch import Tensor

from .. import _checks
from ..ops.affine_path import _affine_path_sample
from ..ops.discrete import _mixture_path_sample


def _dataclass_face(*names):
    """flow_matching's samples are dataclasses: give the class their fields (``dataclasses.fields``,
    ``asdict``, ``astuple``, ``replace``, ``is_dataclass``) while the lazy ones stay properties
    (``asdict`` / ``replace`` read them, computing them as any read does)."""
    def face(cls):
        shadow = dataclasses.make_dataclass(cls.__name__, names)
        cls.__dataclass_fields__, cls.__dataclass_params__ = shadow.__dataclass_fields__, shadow.__dataclass_params__
        return cls
    return face


@_dataclass_face("x_1", "x_0", "t", "x_t", "dx_t")
class PathSample:
    """``x_1, x_0, t, x_t, dx_t`` as flow_matching's PathSample, constructible as it is
    (``PathSample(x_1=..., x_0=..., t=..., x_t=..., dx_t=...)``, a custom path's return value).

    The affine paths' samples leave ``x_0`` (when drawn in-kernel) and ``dx_t`` to be computed on
    first read, from the stored coefficients: the fused loss never needs them. That read runs in
    the grad mode of the ``sample`` call, as an eager ``dx_t`` would have been computed, and raises
    if ``x_1`` or ``x_0`` was modified in place since (an eager ``dx_t`` would hold the old values).
    """

    def __init__(self, x_1: Tensor, x_0: Optional[Tensor], t: Tensor, x_t: Tensor, dx_t: Optional[Tensor] = None,
                 *, coefficients: Optional[dict] = None, rng: Optional[Tensor] = None, backend: Optional[str] = None):
        self.x_1, self.t, self.x_t = x_1, t, x_t
        self._x_0, self._dx_t = x_0, dx_t
        self.coefficients, self.rng, self.backend = coefficients or {}, rng, backend
        self._grad_mode = torch.is_grad_enabled()
        self._inputs = (x_1, x_0)  # what dx_t is computed from, and their versions now
        self._versions = _versions(x_1, x_0)

    def _derive(self, what: str, fn) -> Tensor:
        if not self.coefficients:
            raise AttributeError(f"{what}: this PathSample was built without it")
        if what == "dx_t":
            self._unchanged("dx_t: x_1 or x_0 was modified in place after sampling, and dx_t is computed from "
                            "them when first read", "read it before modifying them", stacklevel=4)
        with torch.set_grad_enabled(self._grad_mode):
            return fn()

    def _unchanged(self, why: str, fix: str, stacklevel: int = 3) -> None:
        """Raise RuntimeError(why; fix) if ``x_1`` or ``x_0`` was modified in place since this
        sample was made (what is computed from them now would differ from an eager result)."""
        now = _versions(*self._inputs)
        if None in (now, self._versions) or now == self._versions:
            return
        if any(t is not None and t._is_view() for t in self._inputs):
            # a view shares its base's counter: another part of the base may be what changed
            warnings.warn(f"{why} (or, as one is a view, another part of its base was): {fix}", RuntimeWarning,
                          stacklevel=stacklevel)
        else:
            raise RuntimeError(f"{why}; {fix}")

    @property
    def x_0(self) -> Tensor:
        if self._x_0 is None:
            self._x_0 = self._derive("x_0", self._noise)
        return self._x_0

    def _noise(self) -> Tensor:
        """The in-kernel noise regenerated: 0 * x + 1 * x_0, with zeros for x (0 * x_1 would be NaN
        where x_1 is infinite; the noise does not depend on the data)."""
        zero = torch.zeros_like(self.coefficients["alpha_t"])
        return _affine_path_sample(torch.zeros_like(self.x_1), None, zero, zero + 1, rng=self.rng,
                                   backend=self.backend)

    @x_0.setter
    def x_0(self, value: Tensor) -> None:
        self._x_0 = value

    def __getstate__(self) -> dict:
        """A copy (pickle, deepcopy, torch.save, a DataLoader worker's batch) holds new tensors,
        whose version counters start afresh: it keeps whether the originals had changed."""
        state = self.__dict__.copy()
        now = _versions(*self._inputs)  # (None under torch.compile, which cannot tell: as _derive)
        state["_versions"] = None in (now, self._versions) or now == self._versions
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        unchanged = self._versions
        self._versions = _versions(*self._inputs) if unchanged else ()  # (): never equal, dx_t raises

    @property
    def dx_t(self) -> Tensor:
        if self._dx_t is None:
            c = self.coefficients
            if c:
                _checks.scheduled(c, "d_alpha_t", "d_sigma_t")
            self._dx_t = self._derive("dx_t", lambda: _affine_path_sample(
                self.x_1, self._x_0, c["d_alpha_t"], c["d_sigma_t"], rng=self.rng, backend=self.backend))
        return self._dx_t

    @dx_t.setter
    def dx_t(self, value: Tensor) -> None:
        self._dx_t = value

    def __repr__(self) -> str:
        return _repr(self, [f.name for f in dataclasses.fields(self)])


@_dataclass_face("x_1", "x_0", "t", "x_t")
class DiscretePathSample:
    """``x_1, x_0, t, x_t`` as flow_matching's DiscretePathSample, constructible as it is; a drawn
    ``x_0`` is computed on first read."""

    def __init__(self, x_1: Tensor, x_0: Optional[Tensor], t: Tensor, x_t: Tensor, *, rng: Optional[Tensor] = None,
                 vocab_size: int = 0, mask_id: Optional[int] = None, backend: Optional[str] = None):
        self.x_1, self.t, self.x_t = x_1, t, x_t
        self._x_0, self.rng, self.vocab_size, self.mask_id, self.backend = x_0, rng, vocab_size, mask_id, backend

    @property
    def x_0(self) -> Tensor:
        if self._x_0 is None:  # kappa = 0 returns the source draw of the same stream
            kappa = torch.zeros(self.x_1.shape[0], device=self.x_1.device)
            self._x_0 = _mixture_path_sample(self.x_1, None, kappa, self.rng, self.vocab_size,
                                             self.mask_id, backend=self.backend)
        return self._x_0

    @x_0.setter
    def x_0(self, value: Tensor) -> None:
        self._x_0 = value

    def __repr__(self) -> str:
        return _repr(self, [f.name for f in dataclasses.fields(self)])


def _versions(*tensors) -> Optional[tuple]:
    """In-place modification counters (inference tensors keep none: never compared then); None
    while torch.compile traces (it cannot read them, and a graph replays no in-place history)."""
    if torch.compiler.is_compiling():
        return None
    return tuple(None if t is None or t.is_inference() else t._version for t in tensors)


def _repr(sample, fields) -> str:
    """The fields as a dataclass shows them, without computing a lazy one."""
    shown = []
    for f in fields:
        v = getattr(sample, "_" + f, None) if hasattr(sample, "_" + f) else getattr(sample, f)
        shown.append(f"{f}=" + ("<computed on first read>" if v is None else repr(v)))
    return f"{type(sample).__name__}({', '.join(shown)})"
