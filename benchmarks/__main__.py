"""``python -m benchmarks``: every fastflow op x every available backend x peers, one table.

    python -m benchmarks              # full run on CUDA if available, else CPU
    python -m benchmarks --quick      # pinned shapes, few repetitions, no torch.compile (< 2 min on 2 CPU cores)
    python -m benchmarks --smoke      # tiny shapes, one call each (CI); saves only with --out
    python -m benchmarks --sweep      # also the size sweeps (PNG + JSON under benchmarks/results/)

The table and the goals block (benchmarks/goals.py) go to stdout, progress to stderr;
results are written as JSON and CSV under benchmarks/results/ (``<device-slug>-<date>`` and
``latest-cpu`` / ``latest-gpu``).
Set FASTFLOW_NVTX=1 for NVTX ranges around every timed call and solver step.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from pathlib import Path

import torch

from . import goals, harness
from .cases import GROUPS, all_cases
from .common import Ctx


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="pinned shapes, few repetitions, no torch.compile peers, no sweeps")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny shapes and one call per implementation (tests); no file unless --out")
    p.add_argument("--sweep", action="store_true", help="also run the size sweeps (not with --quick)")
    p.add_argument("--sweep-only", action="store_true", help="run only the sweeps")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--backends", default=None,
                   help="comma-separated fastflow backends to time (default: every available one)")
    p.add_argument("--groups", default=None, help=f"comma-separated row groups ({', '.join(GROUPS)})")
    p.add_argument("--rows", default=None, help="comma-separated substrings; keep matching rows")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile peers")
    p.add_argument("--out", default=None, help="results directory (default benchmarks/results)")
    p.add_argument("--no-save", action="store_true", help="do not write result files")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows and sweeps of latest-<cpu|gpu>.json (same device) that this run "
                        "does not measure (split a long run: --groups continuous,ode then --groups discrete --merge)")
    p.add_argument("--show-skipped", action="store_true", help="list skipped implementations in the table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    if args.quick and (args.sweep or args.sweep_only):
        p.error("--sweep is not part of --quick")
    return args


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: CUDA is not available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def merge_previous(result: dict, out_dir: Path, ctx: Ctx, log) -> None:
    """Add the rows (and sweeps) of the previous latest file that this run did not measure."""
    kind = "gpu" if result["meta"]["device_type"] == "cuda" else "cpu"
    path = Path(out_dir) / f"latest-{kind}.json"
    if not path.exists():
        log(f"--merge: no {path}, nothing to merge")
        return
    old = harness.load(path)
    if old["meta"].get("device") != result["meta"]["device"]:
        log(f"--merge: {path} is from {old['meta'].get('device')!r}, not merged")
        return
    if not result["rows"]:
        # a sweeps-only run: the table's % of copy was computed against the copy of the run the
        # rows come from, so that copy stays the table's; this run's goes with its sweeps
        result["meta"]["sweep_copy"] = result["copy"]
        result["copy"] = old["copy"]
        result["rng"] = old.get("rng")
    measured = {r["row"] for r in result["rows"]}
    kept = [dict(r, merged_from=old["meta"]["date"]) if "merged_from" not in r else r
            for r in old["rows"] if r["row"] not in measured]
    order = {name: i for i, name in enumerate(c.row for c in all_cases(ctx))}
    rows = kept + result["rows"]
    rows.sort(key=lambda r: order.get(r["row"], len(order)))  # stable: impl order kept
    result["rows"] = rows
    for name, sweep in (old.get("sweeps") or {}).items():
        result["sweeps"].setdefault(name, sweep)
    result["meta"]["merged_with"] = sorted(set(old["meta"].get("merged_with", []) + [old["meta"]["date"]]))
    log(f"--merge: kept {len(kept)} rows from {path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = pick_device(args.device)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    profile = harness.profile_for(mode, device)
    if args.no_compile:
        profile = dataclasses.replace(profile, compile=False)
    ctx = Ctx(device=device, profile=profile,
              backends=tuple(args.backends.split(",")) if args.backends else None)

    def log(msg):
        if not args.quiet:
            print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    timer = harness.Timer(device, tiny=profile.tiny)
    log(f"device {harness.device_name(device)}, mode {mode}; measuring copy bandwidth")
    copy = harness.copy_bandwidth(device, timer, tiny=profile.tiny)
    meta = harness.environment(device, profile)
    log(f"copy {copy['gbps']:.1f} GB/s; fastflow backends: {meta['backends']}")

    # torch.profiler (CPU peak memory) and torch.compile import dynamo anyway; import it now and
    # freeze everything allocated so far, so the gc.collect() between measurements stays cheap.
    import torch._dynamo  # noqa: F401

    gc.collect()
    gc.freeze()

    records = []
    if not args.sweep_only:
        groups = args.groups.split(",") if args.groups else None
        rows = args.rows.split(",") if args.rows else None
        for case in all_cases(ctx, groups, rows):
            records += harness.run_case(case, timer, profile, log=log)
        if not profile.tiny:
            copy = harness.copy_over_run(copy, harness.copy_bandwidth(device, timer))
            log(f"copy after the rows {copy['samples_gbps'][1]:.1f} GB/s")
    rng = harness.rng_rates(device, tiny=profile.tiny)
    if rng:
        log(f"generators: {rng['word_per_s'] / 1e9:.2f} G words/s, {rng['normal_per_s'] / 1e9:.2f} G Gaussians/s")
    harness.finalize(records, copy, meta.get("datasheet_gbps"), rng)
    result = {"meta": meta, "copy": copy, "rng": rng, "rows": records, "sweeps": {}}

    out_dir = Path(args.out) if args.out else harness.RESULTS_DIR
    save = not args.no_save and (not profile.tiny or args.out is not None)
    if args.sweep or args.sweep_only:
        from . import sweeps

        result["sweeps"] = sweeps.run(ctx, timer, copy, out_dir, log=log, plot=save)
    result["meta"]["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    if args.merge:
        merge_previous(result, out_dir, ctx, log)
    result["goals"] = goals.compute(result)

    print("\n".join(harness.header_lines(result)))
    print()
    print("\n".join(harness.table_lines(result, show_skipped=args.show_skipped)))
    print()
    print("\n".join(goals.lines(result["goals"])))
    if result["sweeps"]:
        print()
        for name, sw in result["sweeps"].items():
            print(f"sweep {name}: {sw.get('png') or '(no plot)'}")
    if save:
        paths = harness.save(result, out_dir)
        log("wrote " + ", ".join(str(p) for p in paths))
    log(f"done in {time.perf_counter() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        gc.unfreeze()  # let interpreter shutdown collect the frozen objects (no leak reports)
    sys.exit(code)
