"""Every row of the benchmark table, in print order (one module per row group)."""
from __future__ import annotations

from typing import Iterable, Optional

from . import continuous, discrete, ode
from .common import Ctx

GROUPS = {
    "continuous": continuous.cases,
    "ode": ode.cases,
    "discrete": discrete.cases,
}


def all_cases(ctx: Ctx, groups: Optional[Iterable[str]] = None,
              rows: Optional[Iterable[str]] = None) -> list:
    """The cases of ``groups`` (default all), kept when a ``rows`` substring matches the row."""
    groups = list(groups) if groups else list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"groups: unknown {unknown}, expected some of {list(GROUPS)}")
    out = []
    for g in groups:
        out += GROUPS[g](ctx)
    if rows:
        rows = [r.lower() for r in rows]
        out = [c for c in out if any(r in c.row.lower() for r in rows)]
    names = [c.row for c in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise AssertionError(f"duplicate row names: {sorted(dup)}")
    return out


def row_names(ctx: Ctx, groups=None) -> list:
    return [c.row for c in all_cases(ctx, groups)]
