"""``qrec plot`` and ``qrec report`` on any folder of records: ad hoc runs and ``qrec ptq`` rows get a
quality-vs-size figure (Pareto frontier) and training curves; an empty or missing folder is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.image import imread

from qrec.cli import main
from qrec.experiments.plots import pareto_front


@given(st.lists(st.tuples(st.floats(0.1, 100), st.floats(0, 1)), min_size=1, max_size=30))
def test_pareto_front_is_the_set_no_point_beats(points):
    def beaten(i):
        (s, q) = points[i]
        return any((s2 <= s and q2 > q) or (s2 < s and q2 >= q) for j, (s2, q2) in enumerate(points) if j != i)

    front = pareto_front(points)
    # brute force: every unbeaten point is on the front once (ties in both coordinates: one of them)
    assert {points[i] for i in front} == {p for i, p in enumerate(points) if not beaten(i)}
    assert len(front) == len({points[i] for i in front})
    assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


@pytest.mark.parametrize("command", ["report", "plot"])
def test_an_empty_or_missing_folder_is_refused(command, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no records here")
    assert main([command, "--results", str(tmp_path / "empty"), "--output", str(tmp_path / "out" / "x.md")]) == 2
    assert "no JSON records" in capsys.readouterr().err
    assert main([command, "--results", str(tmp_path / "missing"), "--output", str(tmp_path / "out" / "x.md")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written on refusal


@pytest.fixture(scope="module")
def records(seq_file, tmp_path_factory):
    """Ad hoc runs (two seeds of full, one of sq4 and of dpq) written with --record, and a ptq table's rows."""
    root = tmp_path_factory.mktemp("records")
    base = ["train", "--dataset", "sequences", "--path", str(seq_file), "--dim", "8", "--epochs", "2",
            "--batch-size", "32", "--threads", "1", "--quiet"]
    for spec, seed in (("full", 0), ("full", 1), ("sq4", 0), ("dpq2x4b", 0)):
        run = root / "runs" / f"{spec}-{seed}"
        assert main([*base, "--embedding", spec, "--seed", str(seed), "--out", str(run),
                     "--record", str(root / "results" / "adhoc" / f"{spec}-{seed}.json")]) == 0
    assert main(["ptq", str(root / "runs" / "full-0"), "--bits", "8", "2", "--specs", "lr2", "dpq8x4c",
                 "--records", str(root / "results" / "ptq"), "-q"]) == 0
    return root


def test_ptq_writes_a_record_per_row_that_no_grid_takes_for_a_run(records):
    rows = sorted((records / "results" / "ptq").glob("*.json"))
    assert len(rows) == 8  # float32, sq8-ptq, sq2-ptq, q8, q2, lr2, dpq8x4c, popularity
    rec = json.loads(rows[0].read_text())
    assert rec["kind"] == "ptq" and "config" not in rec and rec["ptq_of_config"]["embedding"] == "full"
    from qrec.experiments.runner import finished_runs

    assert all(r.get("kind") != "ptq" for r in finished_runs(records / "results").values())


def test_plot_draws_quality_vs_size_and_curves_for_any_runs(records, capsys):
    out = records / "figures" / "new"  # created
    assert main(["plot", "--results", str(records / "results"), "--output", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["adhoc-curves.png", "adhoc-size.png", "ptq-size.png"]  # ptq rows have no epochs
    for name in written:
        image = imread(out / name)
        assert image.shape[0] > 300 and image.shape[1] > 500 and np.ptp(image) > 0  # drawn, not blank
    assert capsys.readouterr().out.count("wrote ") == 3


def test_other_json_in_a_folder_of_records_is_named_and_skipped(records, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "run.json").write_text((records / "results" / "adhoc" / "full-0.json").read_text())
    (folder / "settings.json").write_text('{"theme": "dark"}')
    assert main(["report", "--results", str(folder), "--output", str(tmp_path / "R.md")]) == 0
    assert "settings.json: not a qrec record" in capsys.readouterr().err
    assert "from 1 records" in (tmp_path / "R.md").read_text()
    (folder / "list.json").write_text("[1, 2]")
    assert main(["plot", "--results", str(folder), "--output", str(tmp_path / "figs")]) == 2
    assert "list.json: not a record" in capsys.readouterr().err


def test_report_of_any_folder_into_a_new_folder(records):
    out = records / "reports" / "deep" / "REPORT.md"
    assert main(["report", "--results", str(records / "results"), "--output", str(out)]) == 0
    text = out.read_text()
    assert "## adhoc" in text and "## ptq" in text and "from 12 records" in text  # 4 runs, 8 ptq rows
    row = next(line for line in text.splitlines() if "| `full` |" in line)
    assert "| 2 |" in row and "±" in row  # two seeds: mean +/- std
    ptq_rows = text.split("## ptq")[1]
    assert "nan" not in ptq_rows and "sq8-ptq" in ptq_rows
