"""Repeated (user, item) pairs, one rule for every input: a data file, a DataFrame, a sparse matrix.

``duplicates`` says what a pair given more than once becomes: ``"error"`` refuses it (the caller names the
line or row of the first repeat); ``"sum"`` keeps one interaction per pair with the ratings (or, without
ratings, how often the pair occurred) summed and the latest timestamp; ``"drop"`` keeps the pair's first row
as it is. Kept pairs stay in the order of their first rows, so a sequence file keeps its order.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from qrec.data.interactions import Interactions

DUPLICATES = ("error", "sum", "drop")


def check_option(duplicates: str) -> None:
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")


def first_repeat(keys: np.ndarray) -> tuple[int, int] | None:
    """``(first, second)``: the earliest row that repeats an earlier row's key, and that earlier row; None when
    every key is distinct."""
    sorted_keys = np.sort(keys)  # an unstable sort is enough to learn whether any key repeats
    if not np.any(sorted_keys[1:] == sorted_keys[:-1]):
        return None
    order = np.argsort(keys, kind="stable")  # stable: equal keys stay in row order
    sorted_keys = keys[order]
    second = int(order[1:][np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])].min())
    return int(order[np.searchsorted(sorted_keys, keys[second])]), second


def pair_keys(data: Interactions) -> np.ndarray:
    return data.users.astype(np.int64) * np.int64(data.n_items) + data.items


def merge(data: Interactions, duplicates: str) -> Interactions:
    """``data`` with each repeated pair made one interaction by ``duplicates`` (``"sum"`` or ``"drop"``)."""
    if duplicates not in ("sum", "drop"):
        raise ValueError(f"merge sums or drops repeated pairs, got duplicates={duplicates!r}")
    unique, first, inverse = np.unique(pair_keys(data), return_index=True, return_inverse=True)
    if len(unique) == len(data):
        return data
    order = np.argsort(first, kind="stable")  # pairs in the order of their first rows
    ratings, timestamps = data.ratings, data.timestamps
    if duplicates == "sum":
        weights = ratings if ratings is not None else np.ones(len(data), np.float32)
        ratings = np.bincount(inverse, weights=weights, minlength=len(unique)).astype(np.float32)[order]
        if timestamps is not None:
            latest = np.full(len(unique), np.iinfo(np.int64).min if timestamps.dtype.kind in "iu" else -np.inf)
            np.maximum.at(latest, inverse, timestamps)
            timestamps = latest.astype(timestamps.dtype)[order]
    else:
        ratings = None if ratings is None else ratings[first[order]]
        timestamps = None if timestamps is None else timestamps[first[order]]
    rows = first[order]
    return replace(data, users=data.users[rows], items=data.items[rows], ratings=ratings, timestamps=timestamps)
