"""The benchmark suite runs end to end (tiny shapes, one call each); no timing asserts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FASTFLOW_BACKEND", None)
    return env


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--sweep", "--device", "cpu", "--out", str(out),
         "--quiet"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out


def _smoke_ctx():
    from benchmarks.common import Ctx
    from benchmarks.harness import profile_for

    dev = torch.device("cpu")
    return Ctx(device=dev, profile=profile_for("smoke", dev))


def test_every_row_is_printed(smoke_run):
    from benchmarks.cases import row_names

    proc, _ = smoke_run
    names = row_names(_smoke_ctx())
    assert len(names) >= 15
    for name in names:
        assert f"| {name} |" in proc.stdout, name
    for col in ("median ms", "p20 ms", "p80 ms", "GB/s", "% copy", "peak MB", "vs fm"):
        assert col in proc.stdout


def test_results_files(smoke_run):
    from benchmarks.cases import row_names

    _, out = smoke_run
    data = json.loads((out / "latest-cpu.json").read_text())
    meta = data["meta"]
    for key in ("device", "commit", "torch", "triton", "date", "mode"):
        assert key in meta
    assert meta["mode"] == "smoke" and data["copy"]["gbps"] > 0
    rows = data["rows"]
    assert {r["row"] for r in rows} == set(row_names(_smoke_ctx()))
    # the reference backend and flow_matching run every row; nothing they run may fail
    for r in rows:
        if r["impl"] in ("fastflow/reference", "flow_matching"):
            assert r["status"] == "ok", (r["row"], r["impl"], r.get("note"))
            assert r["median_ms"] > 0 and r["bytes"] > 0
    assert any(r["impl"] == "fastflow/reference" for r in rows)
    assert (out / "latest-cpu.csv").exists()
    stamped = [p for p in out.glob("cpu-*.json")]
    assert stamped, list(out.iterdir())
    jumps = [r for r in rows if r["row"].startswith("jump step")]
    assert jumps and all("rows_read_expected" in r["extras"] and "rows_read_counted" in r["extras"]
                         for r in jumps)


def test_sweeps_and_plots(smoke_run):
    _, out = smoke_run
    data = json.loads((out / "latest-cpu.json").read_text())
    assert set(data["sweeps"]) == {"vocab", "tokens", "continuous"}
    for name, sweep in data["sweeps"].items():
        assert sweep["series"], name
        assert Path(sweep["png"]).exists(), sweep.get("png")


def test_readme_table(smoke_run, tmp_path):
    _, out = smoke_run
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:cpu -->\nold table\n<!-- /bench:cpu -->\nend\n")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.readme_table", "--results", str(out), "--update-readme",
         str(readme)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| row | config | impl |" in proc.stdout
    text = readme.read_text()
    assert "old table" not in text and "| row | config | impl |" in text
    assert text.startswith("intro\n<!-- bench:cpu -->\n") and text.endswith("<!-- /bench:cpu -->\nend\n")


def test_nvtx_helper(monkeypatch):
    from benchmarks import _nvtx

    monkeypatch.delenv("FASTFLOW_NVTX", raising=False)
    f = lambda x: x + 1  # noqa: E731
    assert _nvtx.wrap("f", f) is f
    with _nvtx.nvtx_range("off"):
        pass
    monkeypatch.setenv("FASTFLOW_NVTX", "1")
    g = _nvtx.wrap("g", f)
    assert g(1) == 2  # a no-op on CPU-only machines, an NVTX range elsewhere


def test_percentiles():
    from benchmarks.harness import _percentile

    vals = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert _percentile(vals, 0.5) == 3.0
    assert _percentile(vals, 0.2) == pytest.approx(1.8)
    assert _percentile(vals, 0.8) == pytest.approx(4.2)
    assert _percentile([7.0], 0.2) == 7.0
