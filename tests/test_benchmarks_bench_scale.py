"""``benchmarks/bench_scale.py`` end to end at a tiny shape, so the scale curve's script keeps up with the trainer."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # one subprocess importing torch: a few seconds idle
def test_scale_bench_trains_exports_and_evaluates_a_tiny_catalogue():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--items", "1e3", "--users", "200",
           "--interactions", "4e3", "--rounds", "1", "--batches", "3", "--specs", "mgqe16x32/8@0.2",
           "--optimizers", "adam", "--eval-users", "50", "--threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.stdout.splitlines() if line.startswith("| 1,000")]
    assert len(rows) == 1, out.stdout
    row = rows[0]
    assert "failed" not in row, out.stdout + out.stderr
    assert float(row[4].replace(",", "")) > 0 and row[6] and row[7]  # rows/s, artifact MiB, eval seconds
