"""Per-user chronological item sequences, and their last-``L`` windows, for sequential models (SASRec).

A user's sequence is their interactions ordered by ``timestamps`` (for sequence files the position in the
line), equal timestamps in file order. Windows are left-padded with ``PAD = -1``: the most recent item is
always in the last column, as SASRec's reference code lays them out.
"""

from __future__ import annotations

import numpy as np

from qrec.data.interactions import Interactions

__all__ = ["PAD", "user_sequences", "last_items", "history_windows"]

#: the id of an empty slot in a window (never a real item)
PAD = -1


def user_sequences(*parts: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, items)``: user ``u``'s items, oldest first, are ``items[indptr[u]:indptr[u + 1]]``.

    Several parts (train, then valid) are concatenated per user in the order given, each part in its own
    time order: a later part's items always come after an earlier part's, whatever their timestamps.
    """
    if not parts:
        raise ValueError("user_sequences needs at least one Interactions part")
    n_users = parts[0].n_users
    users = np.concatenate([p.users for p in parts]).astype(np.int64)
    items = np.concatenate([p.items for p in parts]).astype(np.int64)
    part = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    times = np.concatenate([p.timestamps if p.timestamps is not None else np.arange(len(p)) for p in parts])
    order = np.lexsort((np.arange(len(users)), times, part, users))  # last key first: user, part, time, file
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items[order]


def last_items(indptr: np.ndarray, items: np.ndarray, length: int, drop_last: int = 0) -> np.ndarray:
    """``(n_users, length)`` int64: each user's last ``length`` items (after dropping their last ``drop_last``),
    right-aligned, ``PAD`` before them."""
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    lengths = np.maximum(np.diff(indptr) - drop_last, 0)
    take = np.minimum(lengths, length)
    rows = np.repeat(np.arange(len(lengths)), take)
    offset = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)  # 0 .. take-1 within a user
    out = np.full((len(lengths), length), PAD, dtype=np.int64)
    out[rows, length - np.repeat(take, take) + offset] = items[np.repeat(indptr[:-1] + lengths - take, take) + offset]
    return out


def history_windows(train: Interactions, valid: Interactions, length: int) -> dict[str, np.ndarray]:
    """What a sequential model reads at each evaluation stage: ``"valid"``, the last ``length`` training items;
    ``"test"``, the same with the validation item appended (the leave-one-out protocol's inputs)."""
    return {"valid": last_items(*user_sequences(train), length),
            "test": last_items(*user_sequences(train, valid), length)}
