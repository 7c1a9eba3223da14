"""The examples run end to end (a few iterations) and write their PNG."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script", ["discrete_moons.py", "continuous_quick_tour.py"])
def test_example_runs(script, tmp_path):
    out = tmp_path / "fig.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--iters", "20", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists() and out.stat().st_size > 10_000
