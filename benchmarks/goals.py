"""The performance goals, judged on the rows of one run (nothing here is typed in by hand).

Each goal names a family of table rows (a regular expression on the row name), a metric
(the speedup of fastflow over a peer, or the % of the same-run copy bandwidth) and a target.
For every row of the family the best fastflow backend measured in the run is taken (named
in the detail); the goal's value is the worst of those rows, so a goal is met only when
every row of its family meets it. Goals are per device type:

CPU: train step (sample + loss + backward, 128x3x64x64 fp32 and bf16) >= 3x flow_matching
and > 1x torch.compile; 10-step discrete sampler (4x128 tokens, V = 32768) >= 50x
flow_matching; generalized-KL fwd+bwd >= 3x; 20-step Euler sampling >= 2x; every
single-pass op (path sample, path loss, Euler step (+ CFG), cross-entropy, generalized KL,
jump step) >= 50% of copy.

GPU: path sample and path loss >= 90% of copy; cross-entropy, generalized KL and jump step
rows >= 80%; the jump step (the regular steps; the final draw, where flow_matching only
draws a categorical from the probabilities it is given, is not part of it) >= 50x
flow_matching at V = 131072.

On the CPU a row that draws random numbers is also bounded by the generators' speed
(``harness.rng_rates``, measured in the run): where that bound allows less than 100% of copy,
the detail says how much ("its random numbers allow N%"); the goal is still judged on % copy.

A goal whose rows were not run (``--rows``, ``--groups``) or whose peer was not timed
(torch.compile under ``--quick`` / ``--no-compile``) is "not measured"; a row measured at
another configuration than the goal's (``--smoke``) is flagged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

CONTINUOUS = "128x3x64x64"
CPU_DISCRETE = "4x128 V=32768 fp32"
GPU_DISCRETE = "64x1024 V=131072 bf16"
_DISCRETE_KEYS = ("cross_entropy", "generalized_kl", "jump_step")


@dataclass(frozen=True)
class Goal:
    id: str
    label: str
    pattern: str  # full-match regular expression on row names
    metric: str  # "speedup" or "pct_copy"
    op: str  # ">=" or ">"
    target: float
    peer: Optional[str] = None  # for "speedup"
    config: Optional[str] = None  # the configuration the goal is defined at

    def met(self, value: float) -> bool:
        return value >= self.target if self.op == ">=" else value > self.target


_SINGLE_PASS = (
    ("path_sample", "path sample", r"path sample (fp32|bf16)"),
    ("path_loss", "path loss fwd+bwd", r"path loss fwd\+bwd (fp32|bf16)"),
    ("euler_step", "euler step", r"euler step (fp32|bf16)"),
    ("euler_step_cfg", "euler step cfg", r"euler step cfg (fp32|bf16)"),
    ("cross_entropy", "cross-entropy fwd+bwd", r"cross-entropy fwd\+bwd .*"),
    ("generalized_kl", "generalized KL fwd+bwd", r"generalized KL fwd\+bwd .*"),
    ("jump_step", "jump step (all rows)", r"jump step .*"),
)
_TRAIN = r"train step sample\+loss\+bwd (fp32|bf16)"

CPU_GOALS = (
    Goal("train_step_vs_fm", "train step vs flow_matching", _TRAIN, "speedup", ">=", 3.0,
         "flow_matching", CONTINUOUS),
    Goal("train_step_vs_compile", "train step vs torch.compile", _TRAIN, "speedup", ">", 1.0,
         "torch.compile", CONTINUOUS),
    Goal("discrete_sampler_vs_fm", "discrete sampler 10 steps vs flow_matching", r"discrete sampling 10 steps .*",
         "speedup", ">=", 50.0, "flow_matching", CPU_DISCRETE),
    Goal("generalized_kl_vs_fm", "generalized KL fwd+bwd vs flow_matching", r"generalized KL fwd\+bwd .*",
         "speedup", ">=", 3.0, "flow_matching", CPU_DISCRETE),
    Goal("euler_20_vs_fm", "ode euler 20 steps vs flow_matching", r"ode euler 20 steps .*", "speedup", ">=",
         2.0, "flow_matching", CONTINUOUS),
) + tuple(Goal(f"{key}_pct_copy", f"{label} % copy", pat, "pct_copy", ">=", 50.0,
               config=CPU_DISCRETE if key in _DISCRETE_KEYS else CONTINUOUS)
          for key, label, pat in _SINGLE_PASS)

GPU_GOALS = tuple(
    Goal(f"{key}_pct_copy", f"{label} % copy", pat, "pct_copy", ">=", 90.0, config=CONTINUOUS)
    for key, label, pat in _SINGLE_PASS if key in ("path_sample", "path_loss")
) + tuple(
    Goal(f"{key}_pct_copy", f"{label} % copy", pat, "pct_copy", ">=", 80.0, config=GPU_DISCRETE)
    for key, label, pat in _SINGLE_PASS if key in _DISCRETE_KEYS
) + (
    Goal("jump_step_vs_fm", "jump step (regular steps) vs flow_matching", r"jump step (?!.*final).*",
         "speedup", ">=", 50.0, "flow_matching", GPU_DISCRETE),
)


def goals_for(device_type: str) -> tuple:
    return GPU_GOALS if device_type == "cuda" else CPU_GOALS


def _row_value(records: list, goal: Goal):
    """(value, impl) of the best fastflow backend of one row, or (None, why)."""
    best = None
    for r in records:
        if r["kind"] != "fastflow" or r["status"] != "ok":
            continue
        if goal.metric == "speedup":
            v = (r.get("speedup") or {}).get(goal.peer)
        else:
            v = r.get("pct_copy")
        if v is not None and (best is None or v > best[0]):
            best = (v, r["impl"], r.get("max_pct_copy") if goal.metric == "pct_copy" else None)
    if best is not None:
        return best
    if goal.metric == "speedup" and not any(r["impl"] == goal.peer and r["status"] == "ok" for r in records):
        peer = next((r for r in records if r["impl"] == goal.peer), None)
        if peer is None:
            return None, f"{goal.peer} not timed" + (" (--quick / --no-compile)" if goal.peer == "torch.compile" else ""), None
        return None, f"{goal.peer} {peer['status']}", None
    return None, "no fastflow backend measured", None


def compute(result: dict) -> dict:
    """The goals block of ``result`` (its meta, copy and finalized rows)."""
    meta = result["meta"]
    by_row: dict = {}
    for r in result["rows"]:
        by_row.setdefault(r["row"], []).append(r)
    items = []
    for goal in goals_for(meta["device_type"]):
        rx = re.compile(goal.pattern)
        rows = [name for name in by_row if rx.fullmatch(name)]
        detail = []
        for name in rows:
            value, impl, ceiling = _row_value(by_row[name], goal)
            entry = {"row": name, "config": by_row[name][0]["config"], "value": value}
            entry["impl" if value is not None else "why"] = impl
            if ceiling is not None and ceiling < 99.5:
                entry["max_pct_copy"] = ceiling  # the random-number bound allows no more
            detail.append(entry)
        values = [d["value"] for d in detail if d["value"] is not None]
        value = min(values) if values else None
        off_config = sorted({d["config"] for d in detail if goal.config and d["config"] != goal.config})
        if not rows:
            why = "row not run"
        elif not values:
            why = "; ".join(sorted({d["why"] for d in detail}))
        elif len(values) < len(rows):
            why = f"{len(values)} of {len(rows)} rows measured"
        else:
            why = None
        items.append({
            "id": goal.id, "label": goal.label, "metric": goal.metric, "peer": goal.peer,
            "op": goal.op, "target": goal.target, "goal_config": goal.config,
            "value": value, "met": None if value is None else goal.met(value),
            "off_config": off_config, "note": why, "rows": detail,
        })
    return {"device_type": meta["device_type"], "mode": meta.get("mode"), "items": items}


def _fmt_value(metric: str, v) -> str:
    if v is None:
        return "-"
    if metric == "pct_copy":
        return f"{v:.0f}%" if v >= 10 else f"{v:.2g}%"
    return f"{v:.3g}x" if v < 100 else f"{v:.0f}x"


def _status(item: dict) -> str:
    if item["met"] is None:
        return "NOT MEASURED"
    return "met" if item["met"] else "NOT MET"


def _tags(names: list) -> list:
    """Each row name less the words all names of the family share at the front."""
    words = [n.split(" ") for n in names]
    k = 0
    while len(words) > 1 and all(len(w) > k + 1 for w in words) and len({w[k] for w in words}) == 1:
        k += 1
    return [" ".join(w[k:]) if len(words) > 1 else "" for w in words]


def _detail(item: dict) -> str:
    parts = []
    rows = item["rows"]
    for d, tag in zip(rows, _tags([d["row"] for d in rows])):
        if d["value"] is None:
            if item["note"] != d["why"]:
                parts.append(f"{tag}: {d['why']}" if tag else d["why"])
            continue
        impl = d["impl"].replace("fastflow/", "")
        if "max_pct_copy" in d:
            impl += f"; its random numbers allow {_fmt_value('pct_copy', d['max_pct_copy'])}"
        parts.append(f"{tag + ': ' if tag else ''}{_fmt_value(item['metric'], d['value'])} ({impl})")
    text = ", ".join(parts)
    if item["note"]:
        text = item["note"] + (f"; {text}" if text else "")
    if item["off_config"]:
        text += f" [at {', '.join(item['off_config'])}, not the goal config {item['goal_config']}]"
    return text


def lines(goals: dict) -> list:
    """The goals block as a heading and a Markdown table."""
    kind = "GPU" if goals["device_type"] == "cuda" else "CPU"
    items = goals["items"]
    n_met = sum(1 for i in items if i["met"])
    n_meas = sum(1 for i in items if i["met"] is not None)
    out = [f"Goals ({kind}, {goals.get('mode')} run; each row's best fastflow backend, worst row counts): "
           f"{n_met} of {n_meas} measured goals met",
           "",
           "| goal | measured | target | status | rows |",
           "|---|---|---|---|---|"]
    for i in items:
        target = f"{i['op']} {_fmt_value(i['metric'], i['target'])}"
        out.append(f"| {i['label']} | {_fmt_value(i['metric'], i['value'])} | {target} | {_status(i)} | "
                   f"{_detail(i).replace('|', '/')} |")
    return out
