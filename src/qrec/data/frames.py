"""Interactions from in-memory data: a pandas DataFrame or a SciPy sparse user x item matrix.

Repeated (user, item) pairs are handled as asked (``duplicates``): ``"sum"`` keeps one interaction per pair
with the ratings (or, without ratings, the counts) summed and the latest timestamp; ``"drop"`` keeps the
pair's first row; ``"error"`` refuses them, naming the first repeat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from qrec.data.interactions import Interactions
from qrec.errors import DataFormatError

DUPLICATES = ("sum", "drop", "error")
_COLUMNS = {"user": ("user", "user_id", "userId", "uid"), "item": ("item", "item_id", "itemId", "movieId", "iid"),
            "timestamp": ("timestamp", "time", "ts"), "rating": ("rating", "score", "count")}


def from_frame(frame: pd.DataFrame, duplicates: str = "sum", name: str = "dataframe") -> Interactions:
    """Interactions from a frame with user and item columns (ids: integers or strings) and optional timestamp
    and rating columns, found by their usual names (``user`` / ``user_id`` / ``userId``, ``item`` / ...)."""
    _check_duplicates_option(duplicates)
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
    _check_duplicates_option(duplicates)
    coo = sp.coo_matrix(matrix)
    keep = coo.data != 0
    if not keep.any():
        raise DataFormatError(name, "the matrix has no nonzero entries")
    users, items, values = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64), coo.data[keep]
    return _collapse(users, items, np.arange(coo.shape[0]), np.arange(coo.shape[1]), None,
                     values.astype(np.float32), duplicates, name)


def _check_duplicates_option(duplicates: str) -> None:
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")


def _codes(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based codes ordered by raw id (integers kept as int64, anything else as strings)."""
    if np.issubdtype(raw.dtype, np.integer):
        ids, codes = np.unique(raw.astype(np.int64), return_inverse=True)
    else:
        ids, codes = np.unique(raw.astype(str), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), ids


def _collapse(users, items, user_ids, item_ids, timestamps, ratings, duplicates: str, name: str) -> Interactions:
    n_items = len(item_ids)
    keys = users * np.int64(n_items) + items
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if len(unique) < len(keys):
        if duplicates == "error":
            repeat = int(np.flatnonzero(np.bincount(inverse)[inverse] > 1)[1])
            raise DataFormatError(name, f"duplicate interaction (user {user_ids[users[repeat]]}, item "
                                        f"{item_ids[items[repeat]]}) at row {repeat}; pass duplicates='sum' or 'drop'")
        order = np.argsort(first, kind="stable")  # pairs in the order of their first row (a sequence's order)
        if duplicates == "sum":
            weights = ratings if ratings is not None else np.ones(len(keys), np.float32)
            ratings = np.bincount(inverse, weights=weights, minlength=len(unique)).astype(np.float32)[order]
            if timestamps is not None:
                latest = np.full(len(unique), np.iinfo(np.int64).min if timestamps.dtype.kind in "iu" else -np.inf)
                np.maximum.at(latest, inverse, timestamps)
                timestamps = latest.astype(timestamps.dtype)[order]
        else:  # drop: the first row of each pair
            ratings = None if ratings is None else ratings[first[order]]
            timestamps = None if timestamps is None else timestamps[first[order]]
        users, items = users[first[order]], items[first[order]]
    return Interactions(users=users, items=items, n_users=len(user_ids), n_items=n_items, user_ids=user_ids,
                        item_ids=item_ids, timestamps=timestamps, ratings=ratings, name=name,
                        meta={"format": name, "files": []})
