"""Pre-split data (protocol given): test rows the training part cannot score are refused, dropped or kept."""

from __future__ import annotations

import re

import numpy as np
import pytest

from qrec.data.given import GivenSplitWarning, check_given
from qrec.data.loaders import read_lightgcn_split
from qrec.data.splits import make_split
from qrec.errors import DataFormatError

TRAIN = "0 0 1 2\n1 1 2 3\n2 0 3\n"  # users 0-2 over items 0-3


def _split(tmp_path, test: str, train: str = TRAIN):
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "test.txt").write_text(test)
    return read_lightgcn_split(tmp_path / "train.txt", tmp_path / "test.txt")


def test_a_clean_split_passes_unchanged(tmp_path):
    split = _split(tmp_path, "0 3\n1 0\n2 1\n")
    assert make_split(split, "given") is split


@pytest.mark.parametrize("test, what", [
    ("0 3\n1 999\n", "1 rows of 1 items without training rows (first: item 999)"),
    ("0 3\n7 1\n", "1 rows of 1 users without training rows (first: user 7)"),
    ("0 3\n1 1\n", "1 (user, item) pairs also in training (first: user 1, item 1)"),
])
def test_rows_the_training_part_cannot_score_are_an_error_by_default(tmp_path, test, what):
    """They used to add phantom rows (n_items 4 -> 1000), score untrained users, or give all-zero metrics."""
    split = _split(tmp_path, test)
    with pytest.raises(DataFormatError, match="test.txt: test rows the training part cannot score: .*" + re.escape(what)):
        make_split(split, "given")


def test_drop_removes_them_with_a_counted_warning_and_no_phantom_ids(tmp_path):
    split = _split(tmp_path, "0 3 998\n1 999 1\n2 1\n9 0\n")
    assert split.n_items == 1000 and split.n_users == 10  # the raw reader's id space: ids up to the largest
    with pytest.warns(GivenSplitWarning, match="left out of the id space"), \
            pytest.warns(GivenSplitWarning, match="dropped 4 test rows: 1 rows of 1 users .*; 2 rows of 2 items .*; 1 "
                                                  r"\(user, item\) pairs"):
        clean = make_split(split, "given", given_test="drop")
    assert (clean.n_users, clean.n_items) == (3, 4)  # only ids with training rows
    pairs = set(zip(clean.test.user_ids[clean.test.users].tolist(), clean.test.item_ids[clean.test.items].tolist()))
    assert pairs == {(0, 3), (2, 1)}
    assert np.array_equal(clean.train.to_csr().toarray(), split.train.to_csr()[:3, :4].toarray())


def test_keep_keeps_the_reference_convention_and_warns(tmp_path):
    split = _split(tmp_path, "0 3\n1 999\n")
    with pytest.warns(GivenSplitWarning, match="kept 1 test rows"):
        assert make_split(split, "given", given_test="keep") is split


def test_ids_in_neither_file_leave_the_id_space(tmp_path):
    split = _split(tmp_path, "0 3\n5 1\n", train=TRAIN + "5 2\n")  # users 3 and 4 appear nowhere
    with pytest.warns(GivenSplitWarning, match="2 user ids and 0 item ids without training rows left out"):
        clean = make_split(split, "given")
    assert clean.n_users == 4 and clean.train.user_ids.tolist() == [0, 1, 2, 5]


def test_an_empty_test_set_is_an_error_in_every_mode(tmp_path):
    """It used to exit 0 and write NaN records."""
    with pytest.raises(DataFormatError, match="the given split has no test interactions"):
        make_split(_split(tmp_path, "0\n1\n"), "given")  # users listed without test items
    with pytest.raises(DataFormatError, match="the given split has no test interactions"), \
            pytest.warns(GivenSplitWarning, match="dropped 1 test rows"):
        make_split(_split(tmp_path, "0 1\n"), "given", given_test="drop")  # nothing left once dropped


def test_sequences_of_length_one_leave_no_test_set():
    from qrec.data.interactions import Interactions

    ids = np.arange(5)
    data = Interactions(users=ids, items=ids, n_users=5, n_items=5, user_ids=ids, item_ids=ids, name="short")
    with pytest.raises(DataFormatError, match="short: the leave-one-out split has no test interactions"):
        make_split(data, "loo")


def test_check_given_refuses_an_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="given_test must be one of"):
        check_given(_split(tmp_path, "0 3\n"), "ignore")


def test_cli_train_refuses_phantom_items_and_runs_with_drop(graph_dir, tmp_path, capsys):
    import json

    from qrec.cli import main

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text((graph_dir / "train.txt").read_text())
    (folder / "test.txt").write_text((graph_dir / "test.txt").read_text() + "30 999\n")  # a test-only user and item
    args = ["train", "--dataset", "lightgcn", "--path", str(folder), "--protocol", "given", "--model", "lightgcn",
            "--epochs", "1", "--dim", "8", "--ks", "5", "--threads", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "test rows the training part cannot score" in capsys.readouterr().err
    with pytest.warns(GivenSplitWarning):
        assert main([*args, "--given-test", "drop", "--out", str(tmp_path / "b")]) == 0
    record = json.loads((tmp_path / "b" / "record.json").read_text())
    assert record["config"]["given_test"] == "drop"
    assert all(np.isfinite(v) for v in record["metrics"]["test"].values() if isinstance(v, float))


def test_cli_train_on_sequences_of_length_one_writes_no_record(tmp_path, capsys):
    from qrec.cli import main

    data = tmp_path / "sequences.txt"
    data.write_text("".join(f"{u} {u + 100}\n" for u in range(20)))
    assert main(["train", "--dataset", "sequences", "--path", str(data), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    assert "no test interactions" in capsys.readouterr().err and not (tmp_path / "run" / "record.json").exists()
