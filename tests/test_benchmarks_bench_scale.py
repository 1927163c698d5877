"""``benchmarks/bench_scale.py`` end to end at a tiny shape, so the scale curve's script keeps up with the trainer;
its JSON lines resume a curve without rerunning a measured row, and ``benchmarks/plot_scale.py`` draws them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]))


def _table_rows(stdout: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in stdout.splitlines() if line.startswith("| 1,000")]


@pytest.mark.slow  # three subprocesses importing torch: a few seconds each idle
def test_scale_bench_trains_exports_evaluates_and_resumes_from_its_json_lines(tmp_path):
    out_file = tmp_path / "scale.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--items", "1e3", "--users", "200",
           "--interactions", "4e3", "--rounds", "1", "--batches", "3", "--specs", "mgqe16x32/8@0.2",
           "--optimizers", "adam", "--eval-users", "50", "--requests", "20", "--threads", "1", "--out", str(out_file)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = _table_rows(out.stdout)
    assert len(rows) == 1, out.stdout
    row = rows[0]
    assert "failed" not in row, out.stdout + out.stderr
    assert float(row[4].replace(",", "")) > 0 and row[6] and row[7]  # rows/s, artifact MiB, eval seconds
    (written,) = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert written["items"] == 1000 and written["spec"] == "mgqe16x32/8@0.2" and written["rows_per_s"] > 0
    assert written["requests"] == written["requests_timed"] == 20 and 0 < written["p50_ms"] <= written["p99_ms"]  # served from the artifact
    assert 0 < written["serve_peak_mib"] and 0 < written["peak_mib"]  # the server's process and the trainer's

    with out_file.open("a") as f:
        f.write('{"items": 1000, "spec": "torn by a kill')  # an interrupted write: ignored, not fatal
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _table_rows(again.stdout) == rows  # the row comes from the file: not measured again
    assert len(out_file.read_text().splitlines()) == 2  # nothing appended


def test_scale_plot_draws_the_committed_shared_machine_curve(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import plot_scale
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = plot_scale.read_rows([ROOT / "benchmarks" / "curves" / "scale" / "shared-2026-12-07.jsonl"])
    lines = plot_scale.lines(rows)
    assert [r["items"] for r in lines["B", "full", "rowwise-adagrad"]] == [100_000, 10_000_000]  # runs never mixed
    assert [r["items"] for r in lines["A", "full", "rowwise-adagrad"]] == [100_000, 1_000_000]
    path = plot_scale.plot(rows, tmp_path / "scale.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scale_plot_names_the_line_that_is_not_json(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"items": 1}\nnot json\n')
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plot_scale.py"), str(bad)], capture_output=True,
                         text=True, timeout=120, env=ENV)
    assert out.returncode != 0 and f"{bad}:2: not a JSON line" in out.stderr
