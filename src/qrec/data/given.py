"""Checks of datasets that ship their own train/test split (protocol ``given``).

Published splits are read as they are, so their flaws pass straight into the numbers: a test item never
seen in training widens the id space (LightGCN files: ids up to the largest in either file), a test user
without training rows is scored from untrained embeddings, a test pair also in training is masked as seen
and can never be hit. ``check_given`` finds these rows and, by ``mode``, refuses them (``"error"``), drops
them (``"drop"``) or keeps them as the reference code does (``"keep"``, e.g. LightGCN-PyTorch's LastFM);
the last two warn with counts (:class:`GivenSplitWarning`). Except with ``"keep"``, ids without training
rows leave the id space (raw ids are kept in ``user_ids`` / ``item_ids``), so no phantom row is scored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from qrec.data.interactions import Interactions, Split
from qrec.errors import DataFormatError

MODES = ("error", "drop", "keep")


class GivenSplitWarning(UserWarning):
    """Test rows of a pre-split dataset that its training part cannot score were dropped or kept."""


@dataclass(frozen=True)
class _Findings:
    new_user: np.ndarray  # per test row: its user has no training rows
    new_item: np.ndarray  # per test row: its item has no training rows
    in_train: np.ndarray  # per test row: the same (user, item) is a training row

    @property
    def bad(self) -> np.ndarray:
        return self.new_user | self.new_item | self.in_train

    def describe(self, test: Interactions) -> str:
        parts = []
        for what, rows, ids, raw in (("users", self.new_user, test.users, test.user_ids),
                                     ("items", self.new_item, test.items, test.item_ids)):
            if rows.any():
                first = raw[ids[np.flatnonzero(rows)[0]]]
                parts.append(f"{rows.sum()} rows of {len(np.unique(ids[rows]))} {what} without training rows "
                             f"(first: {what[:-1]} {first})")
        if self.in_train.any():
            k = np.flatnonzero(self.in_train)[0]
            parts.append(f"{self.in_train.sum()} (user, item) pairs also in training (first: user "
                         f"{test.user_ids[test.users[k]]}, item {test.item_ids[test.items[k]]})")
        return "; ".join(parts)


def check_given(split: Split, mode: str = "error") -> Split:
    """``split`` with the test rows its training part cannot score refused, dropped or kept (see module)."""
    if mode not in MODES:
        raise ValueError(f"given_test must be one of {MODES}, got {mode!r}")
    train, test = split.train, split.test
    where = (test.meta.get("files") or [split.name])[-1]
    found = _find(train, test)
    if found.bad.any():
        described = found.describe(test)
        if mode == "error":
            raise DataFormatError(where, f"test rows the training part cannot score: {described}. Set given_test "
                                         "= 'drop' (--given-test drop) to drop them, or 'keep' to keep them as "
                                         "the reference code does")
        verb = "dropped" if mode == "drop" else "kept"
        warnings.warn(f"{where}: {verb} {found.bad.sum()} test rows: {described}", GivenSplitWarning, stacklevel=2)
    if mode == "keep" or not found.bad.any() and _all_trained(split.train):
        return split
    return _training_id_space(replace(split, test=test.subset(~found.bad)), where)


def _find(train: Interactions, test: Interactions) -> _Findings:
    user_known = np.bincount(train.users, minlength=train.n_users) > 0
    item_known = np.bincount(train.items, minlength=train.n_items) > 0
    n = np.int64(train.n_items)
    in_train = np.isin(test.users * n + test.items, train.users * n + train.items)
    return _Findings(~user_known[test.users], ~item_known[test.items], in_train)


def _all_trained(train: Interactions) -> bool:
    return bool(np.all(train.user_counts()) and np.all(train.item_counts()))


def _training_id_space(split: Split, where: str) -> Split:
    """Every part renumbered over the users and items that have training rows (phantom ids leave)."""
    train = split.train
    if _all_trained(train):
        return split
    users, items = np.flatnonzero(train.user_counts()), np.flatnonzero(train.item_counts())
    warnings.warn(f"{where}: {train.n_users - len(users)} user ids and {train.n_items - len(items)} item ids "
                  "without training rows left out of the id space", GivenSplitWarning, stacklevel=3)
    new_user = np.full(train.n_users, -1, dtype=np.int64)
    new_user[users] = np.arange(len(users))
    new_item = np.full(train.n_items, -1, dtype=np.int64)
    new_item[items] = np.arange(len(items))

    def renumber(part: Interactions) -> Interactions:
        return replace(part, users=new_user[part.users], items=new_item[part.items], n_users=len(users),
                       n_items=len(items), user_ids=part.user_ids[users], item_ids=part.item_ids[items],
                       meta=dict(part.meta))

    return replace(split, train=renumber(train), valid=renumber(split.valid), test=renumber(split.test))
