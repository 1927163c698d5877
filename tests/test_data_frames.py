"""Interactions from a DataFrame or a sparse matrix: ids of any type, repeated pairs summed / dropped / refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from qrec.data.frames import from_frame, from_matrix
from qrec.errors import DataFormatError


def _pairs(data):
    return [(data.user_ids[u], data.item_ids[i]) for u, i in zip(data.users, data.items)]


def test_string_and_integer_ids_keep_their_raw_values_and_row_order():
    df = pd.DataFrame({"user_id": ["b", "a", "b", "c"], "item": [30, 10, 20, 10]})
    data = from_frame(df)
    assert list(data.user_ids) == ["a", "b", "c"] and list(data.item_ids) == [10, 20, 30]
    assert _pairs(data) == [("b", 30), ("a", 10), ("b", 20), ("c", 10)]  # row order is time order
    assert data.timestamps is None and data.ratings is None


def test_duplicates_summed_dropped_or_refused():
    df = pd.DataFrame({"user": [1, 1, 2, 1], "item": ["x", "y", "x", "x"], "rating": [1.0, 2.0, 3.0, 4.0],
                       "timestamp": [5, 6, 7, 9]})
    summed = from_frame(df, duplicates="sum")
    assert _pairs(summed) == [(1, "x"), (1, "y"), (2, "x")]
    assert summed.ratings.tolist() == [5.0, 2.0, 3.0] and summed.timestamps.tolist() == [9, 6, 7]
    dropped = from_frame(df, duplicates="drop")
    assert _pairs(dropped) == [(1, "x"), (1, "y"), (2, "x")]
    assert dropped.ratings.tolist() == [1.0, 2.0, 3.0] and dropped.timestamps.tolist() == [5, 6, 7]
    counted = from_frame(df[["user", "item"]], duplicates="sum")
    assert counted.ratings.tolist() == [2.0, 1.0, 1.0]  # without ratings: how often the pair occurred
    with pytest.raises(DataFormatError, match=r"duplicate interaction \(user 1, item x\) at row 3"):
        from_frame(df, duplicates="error")
    with pytest.raises(ValueError, match="duplicates must be one of"):
        from_frame(df, duplicates="keep")


def test_datetime_timestamps_and_bad_columns():
    df = pd.DataFrame({"user": [1, 2], "item": [3, 4], "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02"])})
    assert np.diff(from_frame(df).timestamps).tolist() == [86400]
    with pytest.raises(DataFormatError, match="needs user and item columns"):
        from_frame(pd.DataFrame({"u": [1], "i": [2]}))
    with pytest.raises(DataFormatError, match="missing ids"):
        from_frame(pd.DataFrame({"user": [1, None], "item": [2, 3]}))
    with pytest.raises(DataFormatError, match="not numeric"):
        from_frame(pd.DataFrame({"user": [1], "item": [2], "rating": ["good"]}))
    with pytest.raises(DataFormatError, match="no rows"):
        from_frame(pd.DataFrame({"user": [], "item": []}))


def test_a_sparse_matrix_gives_its_nonzero_entries_with_indices_as_ids():
    m = sp.coo_matrix((np.array([1.0, 2.0, 0.0, 3.0]), (np.array([0, 2, 1, 2]), np.array([1, 0, 2, 3]))), shape=(3, 4))
    data = from_matrix(m)
    assert (data.n_users, data.n_items) == (3, 4) and list(data.user_ids) == [0, 1, 2]
    assert sorted(_pairs(data)) == [(0, 1), (2, 0), (2, 3)] and sorted(data.ratings.tolist()) == [1.0, 2.0, 3.0]
    with pytest.raises(DataFormatError, match="no nonzero"):
        from_matrix(sp.csr_matrix((2, 2)))
