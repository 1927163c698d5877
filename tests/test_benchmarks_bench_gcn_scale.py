"""``benchmarks/bench_gcn_scale.py`` end to end at a tiny shape: one subprocess per case, the trainer's own path."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # three subprocesses importing torch: ~10 s idle
def test_gcn_scale_bench_runs_a_full_epoch_and_counted_steps():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_gcn_scale.py"), "--batch-size", "1024",
           "--cases", "tiny/lightgcn/none/epoch", "tiny/binary-gcn/rcm/3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2, out.stdout
    epoch, steps = ([c.strip() for c in r] for r in rows)
    assert epoch[9] == "10 / 10" and not epoch[10].startswith("~")  # 10,000 pairs / 1,024: a measured epoch
    assert steps[9] == "3 / 10" and steps[10].startswith("~") and steps[6] != "-"  # RCM timed
    first, last = (float(v) for v in epoch[11].split("->"))
    assert last < first  # BPR falls over an epoch of the planted structure
