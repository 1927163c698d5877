"""Repeated (user, item) pairs: one rule for a file, a DataFrame and a sparse matrix (``qrec.data.duplicates``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.data.datasets import load_dataset
from qrec.data.duplicates import first_repeat, merge
from qrec.data.frames import from_frame, from_matrix
from qrec.data.interactions import Interactions
from qrec.errors import DataFormatError

rows_strategy = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5), st.integers(1, 5), st.integers(0, 50)),
                         min_size=1, max_size=40)


def _interactions(rows) -> Interactions:
    users, items, ratings, times = (np.array(c, dtype=np.int64) for c in zip(*rows))
    return Interactions(users=users, items=items, n_users=5, n_items=6, user_ids=np.arange(5), item_ids=np.arange(6),
                        timestamps=times, ratings=ratings.astype(np.float32))


def _reference(rows, how: str) -> list[tuple]:
    """Brute force: one (user, item, rating, time) per pair, in the order of the pairs' first rows."""
    kept: dict[tuple, list] = {}
    for u, i, r, t in rows:
        if (u, i) not in kept:
            kept[(u, i)] = [u, i, float(r), t]
        elif how == "sum":
            kept[(u, i)][2] += r
            kept[(u, i)][3] = max(kept[(u, i)][3], t)
    return [tuple(v) for v in kept.values()]


def _rows(data: Interactions) -> list[tuple]:
    return list(zip(data.users.tolist(), data.items.tolist(), data.ratings.tolist(), data.timestamps.tolist()))


@settings(max_examples=200, deadline=None)
@given(rows_strategy, st.sampled_from(["sum", "drop"]))
def test_merge_equals_the_brute_force_rule(rows, how):
    assert _rows(merge(_interactions(rows), how)) == _reference(rows, how)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=30))
def test_first_repeat_is_the_earliest_second_occurrence(keys):
    seen, want = {}, None
    for row, key in enumerate(keys):
        if key in seen:
            want = (seen[key], row)
            break
        seen[key] = row
    assert first_repeat(np.array(keys, dtype=np.int64)) == want


def test_merge_without_ratings_counts_and_leaves_distinct_pairs_alone():
    data = _interactions([(0, 1, 1, 0), (0, 1, 1, 2), (1, 1, 1, 1)])
    counted = merge(data.__class__(**{**data.__dict__, "ratings": None}), "sum")
    assert counted.ratings.tolist() == [2.0, 1.0]
    distinct = _interactions([(0, 1, 1, 0), (1, 1, 1, 1)])
    assert merge(distinct, "sum") is distinct
    with pytest.raises(ValueError, match="sums or drops"):
        merge(data, "error")


CSV = "user,item,rating,timestamp\n1,x,1,5\n1,y,2,6\n2,x,3,7\n1,x,4,9\n"


def _three_inputs(tmp_path, how):
    """The same interactions, repeated pair (1, x) included, as a file, a DataFrame and a sparse matrix."""
    path = tmp_path / "dup.csv"
    path.write_text(CSV)
    frame = pd.read_csv(path)
    matrix = sp.coo_matrix((frame["rating"].to_numpy(np.float32),
                            (frame["user"].to_numpy() - 1, frame["item"].map({"x": 0, "y": 1}).to_numpy())), shape=(2, 2))
    return (load_dataset("table", path=path, duplicates=how), from_frame(frame, duplicates=how),
            from_matrix(matrix, duplicates=how))


@pytest.mark.parametrize("how, ratings", [("sum", [5.0, 2.0, 3.0]), ("drop", [1.0, 2.0, 3.0])])
def test_a_file_a_frame_and_a_matrix_merge_repeats_alike(tmp_path, how, ratings):
    file_data, frame_data, matrix_data = _three_inputs(tmp_path, how)
    raw = lambda d: [(d.user_ids[u].item(), d.item_ids[i].item()) for u, i in zip(d.users, d.items)]  # noqa: E731
    assert raw(file_data) == raw(frame_data) == [(1, "x"), (1, "y"), (2, "x")]
    assert raw(matrix_data) == [(0, 0), (0, 1), (1, 0)]  # the matrix's ids are its row and column indices
    for data in (file_data, frame_data, matrix_data):
        assert data.ratings.tolist() == ratings
    assert file_data.timestamps.tolist() == frame_data.timestamps.tolist() == ([9, 6, 7] if how == "sum" else [5, 6, 7])


def test_a_file_a_frame_and_a_matrix_refuse_repeats_alike(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text(CSV)
    with pytest.raises(DataFormatError, match=r"dup.csv, line 5: duplicate interaction \(user 1, item x\); first given "
                                              r"on line 2 \(duplicates='sum' or 'drop'"):
        load_dataset("table", path=path, duplicates="error")
    with pytest.raises(DataFormatError, match=r"duplicate interaction \(user 1, item x\) at row 3 \(first at row 0\)"):
        from_frame(pd.read_csv(path), duplicates="error")
    matrix = sp.coo_matrix((np.ones(3, np.float32), (np.array([0, 1, 0]), np.array([1, 0, 1]))), shape=(2, 2))
    with pytest.raises(DataFormatError, match=r"duplicate interaction \(user 0, item 1\) at row 2"):
        from_matrix(matrix, duplicates="error")
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load_dataset("table", path=path, duplicates="keep")
