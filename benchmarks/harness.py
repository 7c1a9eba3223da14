"""Timing, peak memory, copy bandwidth, result records, the table and the result files.

Timing (see benchmarks/README.md):

- GPU: device time, by CUDA events around each call, a 256 MB buffer written between calls so
  no input is served from L2, then a ~1 ms spin kernel queued behind it, so that the call's
  Python (checks, dispatch, launches) runs while the GPU is busy and the events time the
  kernels, as triton.testing.do_bench's cache clearing does (a host sync inside the call still
  counts); ``torch.cuda.synchronize`` after each call;
- CPU: wall time, ``time.perf_counter`` around each call, a 256 MB buffer read between calls
  so the data and the Python of the call start cold;
- warm-up calls first (Triton JIT, torch.compile and lazy imports happen there), then one
  untimed call that measures peak memory, then the timed repetitions; the number of
  repetitions adapts to the cost of a call (``Profile.budget_s`` per implementation,
  between ``min_reps`` and ``max_reps``); median, p20 and p80 are reported.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ._nvtx import nvtx_range

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Datasheet HBM bandwidth in GB/s by device name (first match wins; None = unknown variant).
DATASHEET_GBPS = (
    ("GH200", None),
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5, HBM3
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
)

PEER_COLUMNS = (("flow_matching", "vs fm"), ("torch.compile", "vs compile"), ("liger", "vs liger"))


# ------------------------------------------------------------------ profiles
@dataclass(frozen=True)
class Profile:
    """How hard to measure. ``smoke``: tiny shapes, one call; ``quick``: pinned shapes,
    few repetitions, no torch.compile; ``full``: everything."""

    name: str
    warmup: int
    min_reps: int
    max_reps: int
    budget_s: float  # time spent on the timed repetitions of one implementation
    compile: bool
    slow_call_s: float  # a call slower than this is timed once (after its warm-up)

    @property
    def tiny(self) -> bool:
        return self.name == "smoke"


def profile_for(name: str, device: torch.device) -> Profile:
    gpu = device.type == "cuda"
    if name == "smoke":
        return Profile("smoke", warmup=0, min_reps=1, max_reps=1, budget_s=0.0, compile=False,
                       slow_call_s=0.0)
    if name == "quick":
        return Profile("quick", warmup=1 if gpu else 0, min_reps=3 if gpu else 2,
                       max_reps=20 if gpu else 30, budget_s=0.5 if gpu else 1.0, compile=False,
                       slow_call_s=3.0)
    if name == "full":
        return Profile("full", warmup=2 if gpu else 1, min_reps=5, max_reps=100 if gpu else 25,
                       budget_s=2.0 if gpu else 3.0, compile=True, slow_call_s=20.0)
    raise ValueError(f"profile: expected smoke, quick or full, got {name!r}")


# ------------------------------------------------------------------ cases
@dataclass
class Impl:
    """One implementation of a row. ``factory()`` builds the timed zero-argument closure
    (called right before this implementation is measured, dropped after), so a peer that
    needs its own copy of the inputs (Liger overwrites its logits) allocates it lazily."""

    name: str  # "fastflow/<backend>", "flow_matching", "torch.compile", "liger"
    factory: Callable[[], Callable[[], object]]
    kind: str = "fastflow"  # or "peer"
    note: str = ""
    compiled: bool = False  # more warm-up calls (compilation happens there)


@dataclass
class Built:
    bytes: float  # the row's byte model (DESIGN.md), the numerator of GB/s for every impl
    impls: list
    skipped: dict = field(default_factory=dict)  # impl name -> why it is not measured
    extras: dict = field(default_factory=dict)
    # random numbers fastflow's kernels draw for the row: {"normal": n, "word": n} (the CPU
    # random-number bound, ``rng_rates``)
    draws: dict = field(default_factory=dict)
    # > 0: each timed value is the mean of this many back-to-back calls with warm caches (a
    # small model's loop, where the data stays in cache and a call's Python is its cost;
    # on a GPU the wall time up to a sync after the last call)
    loop: int = 0


@dataclass
class Case:
    row: str  # unique, printed in the table
    group: str
    config: str
    build: Callable[[], Built]
    extras: dict = field(default_factory=dict)


# ------------------------------------------------------------------ timer
@contextlib.contextmanager
def _quiet_stderr():
    """Silence fd 2 (the profiler's C++ start/stop lines) for the duration of the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError))


def _spin_cycles(device: torch.device, ms: float = 1.0) -> int:
    """GPU clock cycles in ``ms`` for ``torch.cuda._sleep`` (0 where it is missing)."""
    if not hasattr(torch.cuda, "_sleep"):
        return 0
    khz = getattr(torch.cuda.get_device_properties(device), "clock_rate", 0) or 2_000_000
    return int(khz * ms)


class Timer:
    def __init__(self, device: torch.device, tiny: bool = False):
        self.device = device
        self.cuda = device.type == "cuda"
        # Larger than any last-level cache we run on: a VM's reported L3 can understate the
        # host's (a 64 MiB flush left 128x3x64x64 steps in cache on a 96 MiB V-cache EPYC, and
        # their "% of copy" above 100%). ~6 ms of untimed reading per timed call on CPU.
        flush_bytes = 0 if tiny and not self.cuda else 256 << 20
        self._flush = torch.ones(flush_bytes, dtype=torch.uint8, device=device) if flush_bytes else None
        self.flush_bytes = flush_bytes
        self._spin_cycles = _spin_cycles(device) if self.cuda else 0
        if not self.cuda:  # the profiler's first start is slow (lazy imports): do it now
            _cpu_peak_memory(lambda: torch.zeros(4))

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def flush(self):
        if self._flush is None:
            return
        if self.cuda:
            self._flush.fill_(1)
        else:  # read, not write: a CPU cache full of dirty lines would bill their write-back
            self._flush.view(torch.float32).sum()  # to the timed call (CE fwd+bwd: 11 -> 80 ms)

    def call(self, fn) -> float:
        """Seconds taken by one call of ``fn`` (caches flushed before it)."""
        self.flush()
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            self.sync()
            if self._spin_cycles:  # busy while fn's Python runs: the events time its kernels
                torch.cuda._sleep(self._spin_cycles)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            del out
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        del out
        return dt

    def loop(self, fn, n: int) -> float:
        """Seconds a call of ``fn`` takes in a loop of ``n`` back-to-back calls (no flush: the
        caches stay warm, as in a small model's training or sampling loop)."""
        self.sync()
        t0 = time.perf_counter()
        for _ in range(n):
            out = fn()
        self.sync()
        dt = time.perf_counter() - t0
        del out
        return dt / n

    def peak_memory(self, fn):
        """(peak bytes above what was allocated before the call, method, seconds)."""
        gc.collect()
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            t0 = time.perf_counter()
            out = fn()
            self.sync()
            dt = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated(self.device) - base
            del out
            return peak, "cuda.max_memory_allocated", dt
        from fastflow import _memory
        _memory.reset_peak()  # outputs on fastflow's recycled (NumPy) blocks: the profiler misses them
        peak, method, dt = _cpu_peak_memory(fn)
        if peak is not None and _memory.peak_bytes():
            peak, method = peak + _memory.peak_bytes(), method + " + fastflow's recycled blocks"
        return peak, method, dt


def _cpu_peak_memory(fn):
    """Peak live bytes allocated through torch's CPU allocator during one call of ``fn``.

    Read from the allocation events of ``torch.profiler(profile_memory=True)``: the running
    sum of allocation sizes (frees negative) in time order, maximised. Tensors allocated
    before the call are not counted; memory a compiled kernel mallocs itself is not seen.
    Returns (None, reason, seconds) when the profiler's event tree is unavailable.
    """
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    finally:
        with _quiet_stderr():
            prof.stop()
    del out
    try:
        from torch._C._profiler import _EventType

        events = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.tag == _EventType.Allocation:
                ef = node.extra_fields
                if str(ef.device).startswith("cpu"):
                    events.append((node.start_time_ns, int(ef.alloc_size)))
    except Exception as exc:  # private profiler API changed
        return None, f"unavailable ({type(exc).__name__})", dt
    events.sort()
    running = peak = 0
    for _, size in events:
        running += size
        peak = max(peak, running)
    return peak, "profiler allocations", dt


def _percentile(values, q: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def measure(fn, timer: Timer, profile: Profile, compiled: bool = False, label: str = "", loop: int = 0) -> dict:
    """Warm-up, one memory call, then timed repetitions of ``fn`` (each of ``loop`` calls in a
    row when ``loop`` > 0, see ``Built.loop``); a dict of statistics."""
    fn_ranged = fn
    time_one = (lambda f: timer.loop(f, loop)) if loop > 0 else timer.call
    calls = max(loop, 1)  # calls a timed value spans
    warm = profile.warmup + (2 if compiled else 0)
    est = None
    for _ in range(warm):
        with nvtx_range(f"warmup {label}"):
            est = time_one(fn_ranged)
        if est * calls > profile.budget_s and not compiled:
            break
    peak, method, dt_mem = timer.peak_memory(fn_ranged)
    if est is None:
        est = dt_mem
    if profile.tiny:
        reps = 1
    else:
        lo = profile.min_reps if est * calls * profile.min_reps <= profile.slow_call_s else 1
        reps = int(profile.budget_s / (est * calls)) if est > 0 else profile.max_reps
        reps = max(lo, min(profile.max_reps, reps))
    times = []
    for _ in range(reps):
        with nvtx_range(label):
            times.append(time_one(fn_ranged))
    return {
        "median_ms": _percentile(times, 0.5) * 1e3,
        "p20_ms": _percentile(times, 0.2) * 1e3,
        "p80_ms": _percentile(times, 0.8) * 1e3,
        "reps": reps,
        "peak_mem_mb": None if peak is None else peak / 2**20,
        "mem_method": method,
    }


# ------------------------------------------------------------------ copy bandwidth
def copy_bandwidth(device: torch.device, timer: Timer, tiny: bool = False) -> dict:
    """Bandwidth of a same-device copy of a large buffer (read + write bytes / median time)."""
    if tiny:
        nbytes = 16 << 20
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        nbytes = min(1 << 30, int(free // 4) >> 20 << 20)
    else:
        nbytes = 256 << 20
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    fn = lambda: dst.copy_(src)  # noqa: E731
    for _ in range(2):
        timer.call(fn)
    times = [timer.call(fn) for _ in range(3 if tiny else 10)]
    med = _percentile(times, 0.5)
    del src, dst
    return {"bytes": 2 * nbytes, "median_ms": med * 1e3, "gbps": 2 * nbytes / med / 1e9,
            "p20_gbps": 2 * nbytes / _percentile(times, 0.8) / 1e9,
            "p80_gbps": 2 * nbytes / _percentile(times, 0.2) / 1e9}


def rng_rates(device: torch.device, tiny: bool = False) -> Optional[dict]:
    """Values a second of the CPU kernels' generators alone (``_C.rng_throughput``: Philox
    words, and Gaussians by Box-Muller, kept in L1) on torch's thread count; None off the CPU
    or without the compiled backend. A row that draws ``n`` of them can take no less than
    ``n / rate``, whatever its memory traffic: its random-number bound."""
    if device.type != "cpu":
        return None
    try:
        from fastflow import _C
    except ImportError:
        return None
    _C.set_num_threads(torch.get_num_threads())
    rates = {"threads": torch.get_num_threads()}
    for kind, key, n in ((0, "word", 1 << 22), (2, "normal", 1 << 21)):
        n = n >> 6 if tiny else n
        times = []
        for _ in range(2 if tiny else 7):
            t0 = time.perf_counter()
            code, _ = _C.rng_throughput(n, kind)
            times.append(time.perf_counter() - t0)
            if code:
                return None
        rates[f"{key}_per_s"] = n / _percentile(times, 0.5)
    return rates


def copy_over_run(before: dict, after: dict) -> dict:
    """The copy bandwidth of a run: the mean of the measurements taken before and after its
    rows (a VM's memory bandwidth drifts by tens of percent over minutes), both kept."""
    out = dict(before)
    out["gbps"] = (before["gbps"] + after["gbps"]) / 2
    out["median_ms"] = before["bytes"] / out["gbps"] / 1e6
    out["p20_gbps"] = min(before["p20_gbps"], after["p20_gbps"])
    out["p80_gbps"] = max(before["p80_gbps"], after["p80_gbps"])
    out["samples_gbps"] = [before["gbps"], after["gbps"]]
    return out


# ------------------------------------------------------------------ running cases
def run_case(case: Case, timer: Timer, profile: Profile, log=None) -> list:
    """Measure every implementation of ``case``; one record (dict) per implementation."""
    base = {"row": case.row, "group": case.group, "config": case.config}
    try:
        built = case.build()
    except Exception as exc:
        status = "oom" if _is_oom(exc) else "error"
        _free(timer)
        return [dict(base, impl="(inputs)", kind="fastflow", status=status,
                     note=_short(exc), extras=dict(case.extras))]
    extras = dict(case.extras, **built.extras)
    records = []
    for impl in built.impls:
        rec = dict(base, impl=impl.name, kind=impl.kind, status="ok", note=impl.note,
                   bytes=built.bytes, extras=extras)
        if built.draws and impl.kind == "fastflow":
            rec["draws"] = dict(built.draws)
        if log:
            log(f"  {case.row} | {impl.name} ...")
        try:
            fn = impl.factory()
            stats = measure(fn, timer, profile, compiled=impl.compiled, label=f"{case.row} {impl.name}",
                            loop=built.loop)
            rec.update(stats)
            if built.loop:
                rec["loop"] = built.loop
                rec["note"] = "; ".join(x for x in (rec["note"], f"warm loop: mean of {built.loop} calls") if x)
            if stats["reps"] == 1 and not profile.tiny:
                rec["note"] = "; ".join(x for x in (rec["note"], "1 timed call") if x)
        except Exception as exc:
            rec["status"] = "oom" if _is_oom(exc) else "error"
            rec["note"] = "; ".join(x for x in (impl.note, _short(exc)) if x)
        fn = None
        _free(timer)
        records.append(rec)
    for name, why in built.skipped.items():
        records.append(dict(base, impl=name, kind="peer" if "/" not in name else "fastflow",
                            status="skipped", note=why, bytes=built.bytes, extras=extras))
    del built
    _free(timer)
    return records


def _short(exc: BaseException, n: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def _free(timer: Timer):
    gc.collect()
    if timer.cuda:
        torch.cuda.empty_cache()


def finalize(records: list, copy: dict, peak_gbps: Optional[float], rng: Optional[dict] = None) -> list:
    """Add GB/s, % of the copy, % of the datasheet peak and the speedups over peers; for a
    fastflow row that draws random numbers on the CPU, its bound: the copy's time for its bytes
    or the generators' time for its draws (``rng_rates``), whichever is longer, as ``bound_ms``,
    ``pct_bound`` (the share of it reached) and ``max_pct_copy`` (the % of copy it allows)."""
    by_row: dict = {}
    for r in records:
        by_row.setdefault(r["row"], []).append(r)
    for rows in by_row.values():
        peers = {r["impl"]: r["median_ms"] for r in rows
                 if r["kind"] == "peer" and r["status"] == "ok"}
        for r in rows:
            if r["status"] != "ok":
                continue
            gbps = r["bytes"] / (r["median_ms"] / 1e3) / 1e9 if r["median_ms"] > 0 else None
            r["gbps"] = gbps
            r["pct_copy"] = 100 * gbps / copy["gbps"] if gbps and copy.get("gbps") else None
            r["pct_peak"] = 100 * gbps / peak_gbps if gbps and peak_gbps else None
            if r["kind"] == "fastflow":
                r["speedup"] = {p: t / r["median_ms"] for p, t in peers.items() if r["median_ms"] > 0}
            if r.get("draws") and rng and copy.get("gbps") and r["median_ms"] > 0:
                copy_ms = r["bytes"] / copy["gbps"] / 1e6
                rng_ms = sum(n / rng[f"{k}_per_s"] for k, n in r["draws"].items()) * 1e3
                r["bound_ms"] = max(copy_ms, rng_ms)
                r["pct_bound"] = 100 * r["bound_ms"] / r["median_ms"]
                r["max_pct_copy"] = 100 * copy_ms / r["bound_ms"]
    return records


# ------------------------------------------------------------------ environment
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def datasheet_gbps(name: str) -> Optional[float]:
    for key, gbps in DATASHEET_GBPS:
        if key.lower() in name.lower():
            return gbps
    return None


def _git(*args) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(module: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def environment(device: torch.device, profile: Profile) -> dict:
    name = device_name(device)
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    commit = _git("rev-parse", "HEAD") or "unknown"
    # results written by an earlier run of the same commit (a --merge run) do not make it dirty
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    from fastflow import backends

    now = _dt.datetime.now(_dt.timezone.utc)
    return {
        "device": name,
        "device_type": device.type,
        "device_slug": slug(("gpu-" if device.type == "cuda" else "cpu-") + name),
        "datasheet_gbps": datasheet_gbps(name) if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "commit": commit,
        "dirty": bool(dirty) if dirty is not None else None,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "flow_matching": _version("flow-matching"),
        "liger_kernel": _version("liger-kernel"),
        "python": platform.python_version(),
        "date": now.isoformat(timespec="seconds"),
        "mode": profile.name,
        "backends": backends.available_backends(device.type),
        "backend_status": backends.explain(),
    }


# ------------------------------------------------------------------ table
def _fmt_ms(v) -> str:
    if v is None:
        return ""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _fmt(v, spec) -> str:
    return "" if v is None else format(v, spec)


def table_lines(result: dict, show_skipped: bool = False) -> list:
    """The results as one Markdown pipe table (lines)."""
    records = result["rows"]
    gpu = result["meta"]["device_type"] == "cuda"
    peers = [(p, col) for p, col in PEER_COLUMNS
             if any(r["impl"] == p and r["status"] == "ok" for r in records)]
    head = ["row", "config", "impl", "median ms", "p20 ms", "p80 ms", "GB/s", "% copy"]
    if gpu:
        head.append("% peak")
    head += ["peak MB"] + [col for _, col in peers] + ["note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in records:
        if r["status"] == "skipped" and not show_skipped:
            continue
        ok = r["status"] == "ok"
        cells = [r["row"], r["config"], r["impl"]]
        if ok:
            cells += [_fmt_ms(r["median_ms"]), _fmt_ms(r["p20_ms"]), _fmt_ms(r["p80_ms"]),
                      _fmt(r.get("gbps"), ".2f" if (r.get("gbps") or 0) < 10 else ".1f"),
                      _fmt(r.get("pct_copy"), ".0f")]
            if gpu:
                cells.append(_fmt(r.get("pct_peak"), ".0f"))
            cells.append(_fmt_ms(r.get("peak_mem_mb")))
            sp = r.get("speedup") or {}
            cells += [f"{sp[p]:.2f}x" if p in sp else "" for p, _ in peers]
            note = r.get("note") or ""
        else:
            cells += [r["status"].upper(), "", "", "", ""] + ([""] if gpu else [])
            cells += [""] + ["" for _ in peers]
            note = r.get("note") or ""
        cells.append(note.replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _copy_samples(c: dict) -> str:
    samples = c.get("samples_gbps")
    return f" (mean of {' and '.join(f'{g:.1f}' for g in samples)}, before and after)" if samples else ""


def header_lines(result: dict) -> list:
    m = result["meta"]
    c = result["copy"]
    peak = f", datasheet {m['datasheet_gbps']:.0f} GB/s" if m.get("datasheet_gbps") else ""
    commit = m["commit"][:12] + (" (dirty)" if m.get("dirty") else "")
    lines = [
        f"Device: {m['device']} ({m['device_type']}, {m['cpu_threads']} torch threads) | "
        f"mode: {m['mode']} | commit {commit} | {m['date']}",
        f"torch {m['torch']}, triton {m['triton']}, flow_matching {m['flow_matching']} | "
        f"fastflow backends: {', '.join(m['backends'])} | "
        f"same-device copy: {c['gbps']:.1f} GB/s{_copy_samples(c)}{peak}",
    ]
    kept = [r for r in result.get("rows", []) if "merged_from" in r]
    if kept:  # --merge: say which rows are this run's and where the others come from
        runs = ", ".join(sorted({r["merged_from"] for r in kept}))
        own = list(dict.fromkeys(r["row"] for r in result["rows"] if "merged_from" not in r))
        if not own:
            lines.append(f"This run measured the sweeps; the rows come from the run of {runs}.")
        else:
            lines.append(f"This run measured the rows \"{'; '.join(own)}\"; the others come from the run(s) "
                         f"of {runs} (each row's % copy is against its own run's copy).")
    return lines


# ------------------------------------------------------------------ files
CSV_FIELDS = ("row", "group", "config", "impl", "kind", "status", "median_ms", "p20_ms", "p80_ms",
              "reps", "bytes", "gbps", "pct_copy", "pct_peak", "peak_mem_mb", "mem_method", "note")


def save(result: dict, out_dir: Path) -> list:
    """``<device-slug>-<date>.json`` / ``.csv`` and ``latest-<cpu|gpu>.json`` / ``.csv``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = result["meta"]
    stamp = m["date"].replace(":", "").replace("-", "").replace("+0000", "Z")[:15]
    stem = f"{m['device_slug']}-{stamp}"
    kind = "gpu" if m["device_type"] == "cuda" else "cpu"
    paths = []
    for name in (stem, f"latest-{kind}"):
        p = out_dir / f"{name}.json"
        p.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
        paths.append(p)
        q = out_dir / f"{name}.csv"
        with q.open("w", newline="") as f:
            w = csv.writer(f)
            peers = [p_ for p_, _ in PEER_COLUMNS]
            w.writerow(list(CSV_FIELDS) + [f"speedup_vs_{p_}" for p_ in peers] + ["extras"])
            for r in result["rows"]:
                sp = r.get("speedup") or {}
                w.writerow([r.get(k) for k in CSV_FIELDS] + [sp.get(p_) for p_ in peers]
                           + [json.dumps(r.get("extras") or {}, default=_json_default)])
        paths.append(q)
    return paths


def _json_default(o):
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())
