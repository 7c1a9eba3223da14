"""Render the latest benchmark results as Markdown (for the README).

    python -m benchmarks.readme_table                    # Markdown to stdout
    python -m benchmarks.readme_table --update-readme    # also rewrite README.md's blocks

Reads ``benchmarks/results/latest-cpu.json`` and, when it exists, ``latest-gpu.json``. With
``--update-readme`` the text between ``<!-- bench:cpu -->`` and ``<!-- /bench:cpu -->``
(and the ``bench:gpu`` pair) in README.md is replaced by the rendered table; a pair of
markers that is missing is reported and left alone. Each block ends with the run's goals
block (benchmarks/goals.py), as saved in the result file. Nothing here measures anything: the
numbers are exactly those of the result files.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import goals
from .harness import REPO_ROOT, RESULTS_DIR, header_lines, load, table_lines

KINDS = ("cpu", "gpu")


def render(result: dict, show_skipped: bool = False) -> str:
    m = result["meta"]
    kind = "GPU" if m["device_type"] == "cuda" else "CPU"
    lines = [f"**{kind}: {m['device']}** (`python -m benchmarks"
             + {"quick": " --quick", "smoke": " --smoke"}.get(m["mode"], "") + "`)", ""]
    lines += [h + "  " for h in header_lines(result)]
    lines.append("")
    lines += table_lines(result, show_skipped=show_skipped)
    lines.append("")
    # the goals block saved with the run (computed from its rows when the file predates it)
    lines += goals.lines(result.get("goals") or goals.compute(result))
    sweeps = result.get("sweeps") or {}
    pngs = [(n, s.get("png")) for n, s in sweeps.items() if s.get("png") and not s["png"].startswith("(")]
    if pngs:
        lines.append("")
        for name, png in pngs:
            try:
                rel = Path(png).resolve().relative_to(REPO_ROOT)
            except ValueError:
                rel = Path(png)
            lines.append(f"![{name} sweep]({rel.as_posix()})")
    return "\n".join(lines)


def latest(results_dir: Path) -> dict:
    out = {}
    for kind in KINDS:
        p = Path(results_dir) / f"latest-{kind}.json"
        if p.exists():
            out[kind] = load(p)
    return out


def update_readme(readme: Path, blocks: dict) -> list:
    """Replace each ``<!-- bench:KIND -->`` block; returns the kinds whose markers are missing."""
    text = readme.read_text()
    missing = []
    for kind, body in blocks.items():
        pattern = re.compile(rf"(<!-- bench:{kind} -->)(.*?)(<!-- /bench:{kind} -->)", re.S)
        if not pattern.search(text):
            missing.append(kind)
            continue
        text = pattern.sub(lambda mt: f"{mt.group(1)}\n{body}\n{mt.group(3)}", text, count=1)
    readme.write_text(text)
    return missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(RESULTS_DIR), help="directory holding latest-*.json")
    p.add_argument("--update-readme", nargs="?", const=str(REPO_ROOT / "README.md"), default=None,
                   metavar="README", help="rewrite the bench blocks of README (default README.md)")
    p.add_argument("--show-skipped", action="store_true")
    args = p.parse_args(argv)
    results = latest(Path(args.results))
    if not results:
        print(f"no latest-cpu.json / latest-gpu.json under {args.results}; run python -m benchmarks first",
              file=sys.stderr)
        return 1
    blocks = {kind: render(r, args.show_skipped) for kind, r in results.items()}
    print("\n\n".join(blocks[k] for k in KINDS if k in blocks))
    if args.update_readme:
        readme = Path(args.update_readme)
        if not readme.exists():
            print(f"{readme}: not found", file=sys.stderr)
            return 1
        missing = update_readme(readme, blocks)
        for kind in missing:
            print(f"{readme}: no <!-- bench:{kind} --> ... <!-- /bench:{kind} --> markers; block not written",
                  file=sys.stderr)
        return 1 if len(missing) == len(blocks) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
