"""Per-user chronological sequences (``user item item ...``, oldest first): read, and written from any log."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qrec.data.interactions import Interactions
from qrec.errors import DataFormatError
from qrec.data.formats.tokens import (
    check_unique_heads,
    default_name,
    factorize,
    int_lines,
    read_bytes,
    unique_pairs,
)


def read_sequences(path, name: str | None = None, duplicates: str = "error") -> Interactions:
    """Per-user chronological sequences, one line ``user item item ...`` oldest first.

    Used by SASRec-style data (``ml-1m-seq``, ``beauty``). There are no clock times, so
    ``timestamps`` holds each item's position in its sequence (0, 1, 2, ...): sorting by it
    restores the file's order. Raw ids are factorized in increasing order. An item repeated in a user's line
    is an error, or summed / dropped (``duplicates``, ``qrec.data.duplicates``: the latest position kept).
    """
    path = Path(path)
    lines = int_lines(path, read_bytes(path))
    check_unique_heads(path, lines)
    _, item_raw, line_no = lines.heads_and_tails()
    users, user_ids = factorize(lines.column(0))  # every line's user, even one with no items
    users = np.repeat(users, lines.lengths - 1)
    items, item_ids = factorize(item_raw)
    # position within the line: running index minus the index of the line's first item
    line_start = np.cumsum(lines.lengths - 1) - (lines.lengths - 1)
    positions = np.arange(len(items), dtype=np.int64) - np.repeat(line_start, lines.lengths - 1)
    return unique_pairs(path, Interactions(
        users=users, items=items, n_users=len(user_ids), n_items=len(item_ids),
        user_ids=user_ids, item_ids=item_ids, timestamps=positions,
        name=name or default_name(path), meta={"format": "sequences", "files": [str(path)]},
    ), line_no, duplicates)



def write_sequences(data: Interactions, target: Path) -> None:
    """``data`` as per-user chronological sequences, ``user item item ...`` with raw ids, oldest first:
    each user's interactions sorted by timestamp, ties kept in file order; users in raw-id order."""
    if data.timestamps is None:
        raise DataFormatError(target, f"{data.name} has no timestamps to order the sequences by")
    order = np.lexsort((np.arange(len(data)), data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    lines = {data.user_ids[users[a]]: items[a:b] for a, b in zip(starts, np.r_[starts[1:], len(users)])}
    with target.open("w") as f:
        for raw in sorted(lines, key=_raw_key):
            f.write(" ".join(map(str, [raw, *data.item_ids[lines[raw]]])) + "\n")


def _raw_key(raw):
    """Raw ids sort as numbers where they are numbers (MovieLens), else as text."""
    text = str(raw)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)
