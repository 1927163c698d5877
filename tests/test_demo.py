"""``make demo`` (README's first command): every model of the demo trains on the embedded MovieLens-100K and
lands in the printed table with its served size. One epoch here; the command itself runs ten."""

import json

import pytest

from qrec.cli import main
from qrec.demo import DEMO_RUNS


def test_demo_trains_every_model_and_prints_the_table(tmp_path, capsys):
    try:
        from qrec.data.datasets import resolved_source

        resolved_source("ml-100k")
    except Exception as e:  # neither ../shared/data nor the recbole wheel: nothing to train on offline
        pytest.skip(f"MovieLens-100K not available: {e}")
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if "%" in line and not line.startswith("(")]
    assert len(rows) == len(DEMO_RUNS)
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/record.json"))]
    assert len(records) == len(DEMO_RUNS) and all(r["config"]["threads"] == 1 for r in records)
    sizes = {(r["model"], r["embedding"]["item"]): r["size"]["relative"] for r in records}
    assert sizes[("gmf", "full")] == 1.0 and sizes[("gmf", "mgqe64x256/64@0.1")] < 0.5
    assert all(0 < r["metrics"]["test"]["hr@10"] < 1 for r in records)
    assert out[-1].startswith("(ml-100k: 943 users, 1682 items")
