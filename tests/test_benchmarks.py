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
    assert any(n.startswith("train step sample+loss+bwd") for n in names)


def test_goals_block_is_printed(smoke_run):
    from benchmarks import goals

    proc, _ = smoke_run
    out = proc.stdout
    table_end = out.index("| discrete sampling")
    assert out.index("Goals (CPU, smoke run") > table_end  # after the table
    for goal in goals.CPU_GOALS:
        assert f"| {goal.label} |" in out, goal.label


def test_results_files(smoke_run):
    from benchmarks.cases import row_names

    _, out = smoke_run
    data = json.loads((out / "latest-cpu.json").read_text())
    meta = data["meta"]
    for key in ("device", "commit", "torch", "triton", "date", "mode"):
        assert key in meta
    assert meta["mode"] == "smoke" and data["copy"]["gbps"] > 0
    assert data["rng"]["normal_per_s"] > 0 and data["rng"]["word_per_s"] > 0
    drawn = [r for r in data["rows"] if r["row"].startswith("path sample") and r["impl"] == "fastflow/cpu"]
    assert drawn and all(r["bound_ms"] > 0 and r["draws"]["normal"] > 0 for r in drawn)
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
    saved = data["goals"]
    assert saved["device_type"] == "cpu" and saved["mode"] == "smoke"
    from benchmarks import goals

    assert [i["id"] for i in saved["items"]] == [g.id for g in goals.CPU_GOALS]
    by_id = {i["id"]: i for i in saved["items"]}
    # smoke runs no torch.compile peer; every other goal has its rows measured
    assert by_id["train_step_vs_compile"]["met"] is None
    for item in saved["items"]:
        if item["id"] != "train_step_vs_compile":
            assert item["value"] is not None and isinstance(item["met"], bool), item
            assert item["off_config"], item  # smoke shapes are not the goal configuration
    assert saved == goals.compute(data)  # computed from the saved rows, nothing typed
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
    assert "Goals (CPU, smoke run" in proc.stdout and "| goal | measured | target | status | rows |" in proc.stdout
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


def test_warm_loop_rows_time_each_call_of_a_loop():
    """A ``Built.loop`` row times that many back-to-back calls per repetition (no cache flush
    between them) and reports the mean call; its records say so."""
    from benchmarks.harness import Built, Case, Impl, Timer, profile_for, run_case

    calls = []
    impl = Impl("fastflow/cpu", lambda: (lambda: calls.append(1)), note="n")
    case = Case("toy", "g", "1", lambda: Built(bytes=1.0, impls=[impl], loop=7))
    dev = torch.device("cpu")
    timer, profile = Timer(dev, tiny=True), profile_for("quick", dev)
    flushes = []
    timer.flush = lambda: flushes.append(1)
    (rec,) = run_case(case, timer, profile)
    timed = profile.warmup + max(profile.min_reps, 1)  # (reps: at least min_reps for a fast call)
    assert rec["loop"] == 7 and rec["note"] == "n; warm loop: mean of 7 calls"
    assert (len(calls) - 1) % 7 == 0 and (len(calls) - 1) // 7 >= timed  # + the one memory call
    assert not flushes and rec["median_ms"] >= 0


def _rec(row, impl, config, median_ms, bytes_=1e9, kind=None, status="ok"):
    return {"row": row, "group": "g", "config": config, "impl": impl, "status": status,
            "kind": kind or ("fastflow" if impl.startswith("fastflow/") else "peer"),
            "median_ms": median_ms, "bytes": bytes_, "note": "", "extras": {}}


def test_goals_compute_gpu():
    """Worst row of a family, best backend of a row, the final jump draw left out of the
    jump-step speedup goal, missing peers and rows reported as not measured."""
    from benchmarks import goals, harness

    cont, disc = goals.CONTINUOUS, goals.GPU_DISCRETE
    rows = [
        # copy: 2 GB in 1 ms = 2000 GB/s; 1e9 bytes in 0.5 ms = 2000 GB/s = 100 %
        _rec("path sample fp32", "fastflow/triton", cont, 0.6),   # 83 %
        _rec("path sample fp32", "fastflow/cuda", cont, 0.52),    # 96 %: the best backend counts
        _rec("path sample bf16", "fastflow/cuda", cont, 0.54),    # 93 %
        _rec("path loss fwd+bwd fp32", "fastflow/cuda", cont, 0.5),
        _rec("path loss fwd+bwd bf16", "fastflow/cuda", cont, 1.0),  # 50 %: worst row, not met
        _rec("jump step t=0.0000 h=0.0999 reads 9.5%", "fastflow/cuda", disc, 0.6),
        _rec("jump step t=0.0000 h=0.0999 reads 9.5%", "flow_matching", disc, 60.0),  # 100x
        _rec("jump step t=0.7992 h=0.0999 reads 39.2%", "fastflow/cuda", disc, 0.6),
        _rec("jump step t=0.7992 h=0.0999 reads 39.2%", "flow_matching", disc, 36.0),  # 60x
        _rec("jump step t=0.8991 final reads 100%", "fastflow/cuda", disc, 0.6),
        _rec("jump step t=0.8991 final reads 100%", "flow_matching", disc, 3.0),  # 5x, not a regular step
        _rec("cross-entropy fwd+bwd bf16", "fastflow/cuda", disc, 0.55, status="error"),
    ]
    copy = {"gbps": 2000.0}
    harness.finalize(rows, copy, None)
    result = {"meta": {"device_type": "cuda", "mode": "full"}, "copy": copy, "rows": rows}
    out = {i["id"]: i for i in goals.compute(result)["items"]}
    assert [g.id for g in goals.GPU_GOALS] == list(out)
    ps = out["path_sample_pct_copy"]
    assert ps["met"] is True and ps["value"] == pytest.approx(100 * 0.5 / 0.54)
    assert [d["impl"] for d in ps["rows"]] == ["fastflow/cuda", "fastflow/cuda"]
    pl = out["path_loss_pct_copy"]
    assert pl["met"] is False and pl["value"] == pytest.approx(50.0)
    js = out["jump_step_vs_fm"]
    assert js["met"] is True and js["value"] == pytest.approx(60.0)
    assert len(js["rows"]) == 2 and not any("final" in d["row"] for d in js["rows"])
    assert out["jump_step_pct_copy"]["met"] is True and len(out["jump_step_pct_copy"]["rows"]) == 3
    assert out["cross_entropy_pct_copy"]["met"] is None
    assert out["cross_entropy_pct_copy"]["note"] == "no fastflow backend measured"
    assert out["generalized_kl_pct_copy"]["met"] is None
    assert out["generalized_kl_pct_copy"]["note"] == "row not run"
    assert not any(i["off_config"] for i in out.values())
    text = "\n".join(goals.lines(goals.compute(result)))
    assert "Goals (GPU, full run" in text and "| jump step (regular steps) vs flow_matching | 60x | >= 50x | met |" in text
    assert "| path loss fwd+bwd % copy | 50% | >= 90% | NOT MET |" in text


def test_random_number_bound():
    """A row's bound is the longer of its copy time and its generators' time; the goal detail
    says how much of copy the generators allow, and the goal is still judged on % copy."""
    from benchmarks import goals, harness

    cont = goals.CONTINUOUS
    rows = [_rec("path sample fp32", "fastflow/cpu", cont, 4.0),   # 1e9 bytes at 1000 GB/s: 1 ms
            _rec("path sample bf16", "fastflow/cpu", cont, 2.0)]
    rows[0]["draws"] = {"normal": 2e9}                # 2 ms at 1e12 a second: the bound
    rows[1]["draws"] = {"word": 5e8, "normal": 2.5e8}  # 0.25 + 0.25 ms: the copy bounds it
    copy, rng = {"gbps": 1000.0}, {"normal_per_s": 1e12, "word_per_s": 2e12, "threads": 2}
    harness.finalize(rows, copy, None, rng)
    assert rows[0]["bound_ms"] == pytest.approx(2.0) and rows[0]["pct_bound"] == pytest.approx(50.0)
    assert rows[0]["max_pct_copy"] == pytest.approx(50.0) and rows[0]["pct_copy"] == pytest.approx(25.0)
    assert rows[1]["bound_ms"] == pytest.approx(1.0) and rows[1]["max_pct_copy"] == pytest.approx(100.0)
    result = {"meta": {"device_type": "cpu", "mode": "full"}, "copy": copy, "rows": rows}
    item = {i["id"]: i for i in goals.compute(result)["items"]}["path_sample_pct_copy"]
    assert item["met"] is False and item["value"] == pytest.approx(25.0)
    assert [d.get("max_pct_copy") for d in item["rows"]] == [pytest.approx(50.0), None]
    assert "fp32: 25% (cpu; its random numbers allow 50%), bf16: 50% (cpu)" in "\n".join(goals.lines(
        goals.compute(result)))


def test_goal_configs_are_the_pinned_ones():
    from benchmarks import continuous, discrete, goals
    from benchmarks.common import Ctx, shape_tag
    from benchmarks.harness import profile_for

    for dev, disc in (("cpu", goals.CPU_DISCRETE), ("cuda", goals.GPU_DISCRETE)):
        ctx = Ctx(device=torch.device(dev), profile=profile_for("quick", torch.device(dev)))
        assert shape_tag(continuous.shape_for(ctx)) == goals.CONTINUOUS
        assert discrete._config(*discrete.dims_for(ctx)) == disc
