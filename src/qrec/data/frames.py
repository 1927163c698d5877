"""Interactions from in-memory data: a pandas DataFrame or a SciPy sparse user x item matrix.

Repeated (user, item) pairs are handled as asked (``duplicates``: ``"sum"``, ``"drop"`` or ``"error"``), by the
rule the file readers follow too (``qrec.data.duplicates``); an error names the rows of the first repeat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from qrec.data.duplicates import check_option, first_repeat, merge, pair_keys
from qrec.data.interactions import Interactions
from qrec.errors import DataFormatError

_COLUMNS = {"user": ("user", "user_id", "userId", "uid"), "item": ("item", "item_id", "itemId", "movieId", "iid"),
            "timestamp": ("timestamp", "time", "ts"), "rating": ("rating", "score", "count")}


def from_frame(frame: pd.DataFrame, duplicates: str = "sum", name: str = "dataframe") -> Interactions:
    """Interactions from a frame with user and item columns (ids: integers or strings) and optional timestamp
    and rating columns, found by their usual names (``user`` / ``user_id`` / ``userId``, ``item`` / ...)."""
    check_option(duplicates)
    roles = {role: next((c for c in names if c in frame.columns), None) for role, names in _COLUMNS.items()}
    if roles["user"] is None or roles["item"] is None:
        raise DataFormatError(name, f"a DataFrame needs user and item columns (e.g. {_COLUMNS['user'][:3]} and "
                                    f"{_COLUMNS['item'][:3]}); it has {list(frame.columns)}")
    if frame.empty:
        raise DataFormatError(name, "the DataFrame has no rows")
    for role in ("user", "item"):
        if frame[roles[role]].isna().any():
            raise DataFormatError(name, f"column {roles[role]!r} has missing ids (row {int(np.argmax(frame[roles[role]].isna().to_numpy()))})")
    cols = {role: frame[c].to_numpy() for role, c in roles.items() if c is not None}
    for role in ("timestamp", "rating"):
        if role in cols and not np.issubdtype(cols[role].dtype, np.number):
            if role == "timestamp" and np.issubdtype(cols[role].dtype, np.datetime64):
                cols[role] = cols[role].astype("datetime64[s]").astype(np.int64)
            else:
                raise DataFormatError(name, f"column {roles[role]!r} ({role}) is not numeric")
    users, user_ids = _codes(cols["user"])
    items, item_ids = _codes(cols["item"])
    return _collapse(users, items, user_ids, item_ids, cols.get("timestamp"), cols.get("rating"), duplicates, name)


def from_matrix(matrix, duplicates: str = "sum", name: str = "matrix") -> Interactions:
    """Interactions from a sparse ``(n_users, n_items)`` matrix: its stored nonzero entries (values as
    ratings); row and column indices are the raw ids. SciPy already sums repeated COO entries when it
    converts to CSR, which is ``duplicates="sum"``."""
    check_option(duplicates)
    coo = sp.coo_matrix(matrix)
    keep = coo.data != 0
    if not keep.any():
        raise DataFormatError(name, "the matrix has no nonzero entries")
    users, items, values = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64), coo.data[keep]
    return _collapse(users, items, np.arange(coo.shape[0]), np.arange(coo.shape[1]), None,
                     values.astype(np.float32), duplicates, name)


def _codes(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based codes ordered by raw id (integers kept as int64, anything else as strings)."""
    if np.issubdtype(raw.dtype, np.integer):
        ids, codes = np.unique(raw.astype(np.int64), return_inverse=True)
    else:
        ids, codes = np.unique(raw.astype(str), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), ids


def _collapse(users, items, user_ids, item_ids, timestamps, ratings, duplicates: str, name: str) -> Interactions:
    data = Interactions(users=users, items=items, n_users=len(user_ids), n_items=len(item_ids), user_ids=user_ids,
                        item_ids=item_ids, timestamps=timestamps, ratings=ratings, name=name,
                        meta={"format": name, "files": []})
    if duplicates != "error":
        return merge(data, duplicates)
    repeat = first_repeat(pair_keys(data))
    if repeat is not None:
        first, second = repeat
        raise DataFormatError(name, f"duplicate interaction (user {user_ids[users[second]]}, item "
                                    f"{item_ids[items[second]]}) at row {second} (first at row {first}); pass "
                                    "duplicates='sum' or 'drop'")
    return data
