"""LightGCN's pre-split files: ``train.txt`` / ``test.txt``, one line per user, ``user item item ...``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qrec.data.interactions import Interactions, Split
from qrec.data.formats.tokens import (
    check_unique_heads,
    default_name,
    empty_like,
    id_space,
    int_lines,
    read_bytes,
    unique_pairs,
)


# --------------------------------------------------------------------------------------------
# Per-user line formats: LightGCN splits and chronological sequences
# --------------------------------------------------------------------------------------------


def read_lightgcn_split(train_path, test_path, name: str | None = None, duplicates: str = "error") -> Split:
    """LightGCN/NGCF ``train.txt`` + ``test.txt``: lines ``user item item ...``, 0-based ids.

    Both files share one id space: ``n_users`` / ``n_items`` are the largest id in either file
    plus one, and raw ids equal internal ids. A user line may list no items. LF and CRLF both
    work. Returns a ``Split`` with protocol ``"given"`` and an empty ``valid``.
    """
    paths = [Path(train_path), Path(test_path)]
    parsed = []
    for p in paths:
        lines = int_lines(p, read_bytes(p))
        check_unique_heads(p, lines)
        parsed.append(lines.heads_and_tails() + (lines,))
    n_users = id_space(paths, [(lines.column(0), lines.line_no) for *_, lines in parsed], "user")
    n_items = id_space(paths, [(items, line_no) for _, items, line_no, _ in parsed], "item")
    ids_u, ids_i = np.arange(n_users), np.arange(n_items)
    name = name or default_name(paths[0])
    parts = []
    for p, (users, items, line_no, _) in zip(paths, parsed):
        parts.append(unique_pairs(p, Interactions(
            users=users, items=items, n_users=n_users, n_items=n_items, user_ids=ids_u,
            item_ids=ids_i, name=name, meta={"format": "lightgcn", "files": [str(p) for p in paths]},
        ), line_no, duplicates))
    return Split(train=parts[0], valid=empty_like(parts[0]), test=parts[1], protocol="given")
