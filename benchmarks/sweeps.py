"""Size sweeps (``python -m benchmarks --sweep``): GB/s and peak memory against size.

- ``vocab``: cross-entropy forward + backward over V = 1k .. 262k at a fixed token count;
- ``tokens``: cross-entropy forward + backward over 128 .. 64k tokens at a fixed V;
- ``continuous``: fused path loss forward + backward over 64k .. 256M elements (fp32).

Sizes are capped by the memory available (a point is skipped when its inputs times a
headroom factor, 3 for the logits + gradient of the fused loss, 12 for the continuous loss,
exceed 60% of free memory; a peer that still runs out of memory is recorded as OOM) and, on CPU, to sizes that finish in a few
minutes on a small machine. Each sweep writes one PNG (two panels: GB/s and peak memory
against size, fastflow backends and peers as lines, the device copy as a dashed line) to
``<results>/sweep-<name>-<cpu|gpu>.png``; the numbers go into the results JSON.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from . import continuous, discrete
from .common import Ctx, dtype_tag
from .harness import run_case


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def specs(ctx: Ctx) -> list:
    """(name, title, x label, sizes, make_case(size) -> Case, input bytes(size), headroom)."""
    gpu, tiny = ctx.gpu, ctx.tiny
    dtype = torch.bfloat16 if gpu else torch.float32
    s = torch.tensor([], dtype=dtype).element_size()
    if tiny:
        vocab, tokens_fixed = [256, 1024], 16
        tokens, v_fixed = [16, 64], 256
        elems = [4096, 16384]
    elif gpu:
        vocab, tokens_fixed = [1024, 4096, 16384, 32768, 65536, 131072, 262144], 8192
        tokens, v_fixed = [128, 512, 2048, 8192, 32768, 65536], 131072
        elems = [1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28]
    else:
        vocab, tokens_fixed = [1024, 4096, 16384, 32768, 65536, 131072, 262144], 256
        tokens, v_fixed = [128, 512, 2048, 8192], 8192
        elems = [1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24]

    def bl(n_tokens):
        L = min(n_tokens, 128)
        return n_tokens // L, L

    def ce_vocab(V):
        B, L = bl(tokens_fixed)
        return discrete.cross_entropy(ctx, B, L, V, dtype, row=f"sweep vocab V={V}")

    def ce_tokens(n):
        B, L = bl(n)
        return discrete.cross_entropy(ctx, B, L, v_fixed, dtype, row=f"sweep tokens N={n}")

    def loss(n):
        B = max(1, min(128, n // 512))
        return continuous.path_loss(ctx, (B, n // B), torch.float32, row=f"sweep continuous n={n}")

    tag = dtype_tag(dtype)
    return [
        ("vocab", f"cross-entropy fwd+bwd, {tokens_fixed} tokens, {tag}", "vocabulary size V",
         vocab, ce_vocab, lambda V: tokens_fixed * V * s, 3),
        ("tokens", f"cross-entropy fwd+bwd, V={v_fixed}, {tag}", "tokens (B x L)",
         tokens, ce_tokens, lambda n: n * v_fixed * s, 3),
        ("continuous", "fused path loss fwd+bwd, fp32", "elements",
         elems, loss, lambda n: n * 4, 12),
    ]


def run(ctx: Ctx, timer, copy: dict, out_dir: Path, log=None, plot: bool = True) -> dict:
    # Sweep points are measured lighter than the table: a few repetitions, and torch.compile
    # peers only on GPU (each size recompiles; minutes per point on a small CPU).
    prof = dataclasses.replace(ctx.profile, min_reps=min(ctx.profile.min_reps, 3),
                               max_reps=min(ctx.profile.max_reps, 10 if ctx.gpu else 5),
                               budget_s=min(ctx.profile.budget_s, 1.0),
                               slow_call_s=min(ctx.profile.slow_call_s, 5.0),
                               compile=ctx.profile.compile and ctx.gpu)
    sctx = dataclasses.replace(ctx, profile=prof)
    avail = _available_bytes(ctx.device)
    out = {}
    for name, title, xlabel, sizes, make, nbytes, headroom in specs(sctx):
        series: dict = {}
        kept, skipped = [], []
        for size in sizes:
            if nbytes(size) * headroom > 0.6 * avail:
                skipped.append(size)
                continue
            kept.append(size)
            case = make(size)
            if log:
                log(f"sweep {name}: {case.row}")
            for rec in run_case(case, timer, prof):
                if rec["status"] == "skipped":
                    continue
                ser = series.setdefault(rec["impl"], {"x": [], "gbps": [], "peak_mb": [],
                                                      "median_ms": [], "status": []})
                ok = rec["status"] == "ok" and rec.get("median_ms")
                ser["x"].append(size)
                ser["median_ms"].append(rec.get("median_ms") if ok else None)
                ser["gbps"].append(rec["bytes"] / (rec["median_ms"] / 1e3) / 1e9 if ok else None)
                ser["peak_mb"].append(rec.get("peak_mem_mb") if ok else None)
                ser["status"].append(rec["status"] if rec["status"] == "ok" else
                                     f"{rec['status']}: {rec.get('note', '')}")
        entry = {"title": title, "x_label": xlabel, "sizes": kept, "skipped_sizes": skipped,
                 "series": series, "copy_gbps": copy["gbps"]}
        if plot and series:
            entry["png"] = _plot(name, entry, ctx, Path(out_dir))
        out[name] = entry
    return out


def _plot(name: str, entry: dict, ctx: Ctx, out_dir: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # optional dependency
        return f"(no plot: {type(exc).__name__})"
    from .harness import datasheet_gbps, device_name

    out_dir.mkdir(parents=True, exist_ok=True)
    dev = device_name(ctx.device)
    fig, (ax_bw, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    for impl, ser in entry["series"].items():
        style = "-o" if impl.startswith("fastflow") else "--s"
        pts = [(x, y) for x, y in zip(ser["x"], ser["gbps"]) if y]
        if pts:
            ax_bw.plot(*zip(*pts), style, label=impl, markersize=4)
        pts = [(x, y) for x, y in zip(ser["x"], ser["peak_mb"]) if y]
        if pts:
            ax_mem.plot(*zip(*pts), style, label=impl, markersize=4)
    ax_bw.axhline(entry["copy_gbps"], color="grey", linestyle=":", label="device copy")
    peak = datasheet_gbps(dev) if ctx.gpu else None
    if peak:
        ax_bw.axhline(peak, color="black", linestyle=":", label="datasheet")
    for ax, ylabel in ((ax_bw, "effective GB/s (byte model / time)"), (ax_mem, "peak memory MB")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(entry["x_label"])
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_mem.set_yscale("log")
    ax_bw.legend(fontsize=8)
    fig.suptitle(f"{entry['title']} - {dev}")
    fig.tight_layout()
    path = out_dir / f"sweep-{name}-{'gpu' if ctx.gpu else 'cpu'}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
