"""Filtering and train/validation/test splits. Every split keeps one id space across its parts.

All functions are vectorised: per-user order comes from stable sorts over (user, time), never
from a Python loop over users.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import numpy as np

from qrec.data.given import check_given
from qrec.data.interactions import Interactions, Split
from qrec.errors import DataFormatError

__all__ = ["kcore_filter", "reindex", "leave_one_out", "ratio_split", "holdout_split", "kfold_split", "make_split",
           "seeded_protocol", "everything"]

log = logging.getLogger(__name__)


def reindex(data: Interactions) -> Interactions:
    """Drop users and items without interactions and renumber the rest 0..n-1, keeping relative
    order, so ``user_ids`` / ``item_ids`` still map each new index to its raw id."""
    used_users = np.flatnonzero(data.user_counts())
    used_items = np.flatnonzero(data.item_counts())
    new_user = np.full(data.n_users, -1, dtype=np.int64)
    new_user[used_users] = np.arange(len(used_users))
    new_item = np.full(data.n_items, -1, dtype=np.int64)
    new_item[used_items] = np.arange(len(used_items))
    return replace(
        data,
        users=new_user[data.users],
        items=new_item[data.items],
        n_users=len(used_users),
        n_items=len(used_items),
        user_ids=data.user_ids[used_users],
        item_ids=data.item_ids[used_items],
        meta=dict(data.meta),  # replace() would share the dict with the input
    )


def kcore_filter(data: Interactions, min_user: int = 5, min_item: int = 5, iterative: bool = False) -> Interactions:
    """Keep interactions whose user has >= ``min_user`` and whose item has >= ``min_item`` of them.

    With ``iterative=False`` (SASRec's ml-1m preprocessing) both counts are taken once on the full
    data and both conditions applied together, so a survivor may end below the threshold; on
    ml-1m-seq this gives exactly 6040 users / 3416 items / 999,611 interactions. With
    ``iterative=True`` the filter repeats until every user and item meets it (a true k-core).
    Ids are re-indexed contiguously afterwards.
    """
    keep = np.ones(len(data), dtype=bool)
    while True:
        user_count = np.bincount(data.users[keep], minlength=data.n_users)
        item_count = np.bincount(data.items[keep], minlength=data.n_items)
        new_keep = keep & (user_count[data.users] >= min_user) & (item_count[data.items] >= min_item)
        done = not iterative or new_keep.sum() == keep.sum()
        keep = new_keep
        if done:
            break
    filtered = reindex(data.subset(keep))
    filtered.meta["kcore"] = {"min_user": min_user, "min_item": min_item, "iterative": iterative}
    return filtered


def _time_order(data: Interactions) -> np.ndarray:
    """Row order by (user, timestamp), equal timestamps in file order; without timestamps, file
    order. Two stable sorts (time, then user) are faster than a three-key lexsort."""
    by_time = np.argsort(data.timestamps, kind="stable") if data.timestamps is not None else np.arange(len(data))
    return by_time[np.argsort(data.users[by_time], kind="stable")]


def _rank_within_user(sorted_users: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Position of each row within its user's block of a user-sorted array (0 = first)."""
    block_start = np.cumsum(counts) - counts
    return np.arange(len(sorted_users)) - block_start[sorted_users]


def leave_one_out(data: Interactions) -> Split:
    """Per user, the latest interaction is test, the second latest validation, the rest train.

    "Latest" follows ``timestamps`` (for sequence files, the position: last in file = latest);
    equal timestamps keep file order, so the later line wins. Users with fewer than 3 interactions
    keep everything in train (SASRec's convention): they have too little history to hold two out.
    Parts hold rows in (user, time) order.
    """
    order = _time_order(data)
    sorted_users = data.users[order]
    counts = data.user_counts()
    from_end = counts[sorted_users] - 1 - _rank_within_user(sorted_users, counts)  # 0 = latest
    held_out = counts[sorted_users] >= 3
    return Split(
        train=data.subset(order[~held_out | (from_end >= 2)]),
        valid=data.subset(order[held_out & (from_end == 1)]),
        test=data.subset(order[held_out & (from_end == 0)]),
        protocol="leave-one-out",
    )


def ratio_split(data: Interactions, train: float = 0.8, valid: float = 0.1, seed: int = 0) -> Split:
    """Per-user random split: ``floor(valid * n)`` of a user's ``n`` interactions go to validation,
    ``floor(test * n)`` to test (``test = 1 - train - valid``), the rest to train, so users with
    little history keep it in train. Seeded (numpy ``default_rng(seed)``); parts keep file order.
    """
    test = 1.0 - train - valid
    if min(train, valid) < 0 or test < -1e-9:
        raise ValueError(f"ratios must be >= 0 and sum to at most 1, got train={train}, valid={valid}")
    test = max(test, 0.0)
    shuffled = np.random.default_rng(seed).permutation(len(data))
    order = shuffled[np.argsort(data.users[shuffled], kind="stable")]  # grouped by user, random within
    sorted_users = data.users[order]
    counts = data.user_counts()
    rank = _rank_within_user(sorted_users, counts)
    n = counts[sorted_users]
    # round() first so 0.1 * 30 = 3.0000000000000004 and 0.29 * 100 = 28.999999999999996 floor right
    n_valid = np.floor(np.round(valid * n, 9)).astype(np.int64)
    n_test = np.floor(np.round(test * n, 9)).astype(np.int64)
    n_train = n - n_valid - n_test
    part = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    rows = [np.sort(order[part == k]) for k in range(3)]
    return Split(
        train=data.subset(rows[0]),
        valid=data.subset(rows[1]),
        test=data.subset(rows[2]),
        protocol=f"ratio-{train:g}/{valid:g}/{test:g}-seed{seed}",
    )


def everything(data: Interactions) -> Split:
    """Every interaction in training, empty validation and test parts: a model fitted to serve, not to score."""
    none = data.subset(np.zeros(len(data), dtype=bool))
    return Split(train=data, valid=none, test=none, protocol="all")


def _parts(data: Interactions, order: np.ndarray, n_test: int, valid: float, protocol: str) -> Split:
    """``order`` (a permutation of the rows): its first ``n_test`` rows are test; of the rest, the first
    ``floor(valid * rest)`` are validation and the others train. Parts keep file order."""
    rest = order[n_test:]
    n_valid = int(np.floor(np.round(valid * len(rest), 9)))
    rows = (rest[n_valid:], rest[:n_valid], order[:n_test])
    train, valid_part, test = (data.subset(np.sort(r)) for r in rows)
    return Split(train=train, valid=valid_part, test=test, protocol=protocol)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def holdout_split(data: Interactions, test: float = 0.1, valid: float = 0.1, seed: int = 0) -> Split:
    """Random row-level split (MGQE's AAR protocol: 90% train, 10% test, over all pairs, not per user):
    ``round(test * n)`` random rows are test; ``floor(valid * rest)`` of the others are the validation slice
    that picks the epoch; the rest train. Seeded (numpy ``default_rng(seed)``)."""
    _check_fraction("test", test)
    _check_fraction("valid", valid)
    order = np.random.default_rng(seed).permutation(len(data))
    n_test = int(np.round(test * len(data)))
    return _parts(data, order, n_test, valid, f"holdout-{test:g}-valid{valid:g}-seed{seed}")


def kfold_split(data: Interactions, k: int = 5, fold: int = 0, valid: float = 0.1, seed: int = 0) -> Split:
    """Fold ``fold`` of a ``k``-fold cross-validation over rows (Surprise's ``KFold(shuffle=True)``): the rows
    are permuted once (``default_rng(seed)``) and cut into ``k`` contiguous folds whose sizes differ by at
    most one (the first ``n mod k`` folds hold one more); fold ``fold`` is test. ``floor(valid * rest)``
    rows of the other folds, drawn from a second generator seeded by ``(seed, fold)``, are the validation
    slice; the rest train."""
    if k < 2 or not 0 <= fold < k:
        raise ValueError(f"k-fold needs k >= 2 and 0 <= fold < k, got k={k}, fold={fold}")
    _check_fraction("valid", valid)
    folds = np.array_split(np.random.default_rng(seed).permutation(len(data)), k)
    rest = np.concatenate([f for j, f in enumerate(folds) if j != fold])
    rest = rest[np.random.default_rng([seed, fold]).permutation(len(rest))]
    order = np.concatenate([folds[fold], rest])
    return _parts(data, order, len(folds[fold]), valid, f"kfold-{k}-fold{fold}-valid{valid:g}-seed{seed}")


_HOLDOUT = re.compile(r"holdout(?:-([\d.]+))?")
_KFOLD = re.compile(r"kfold-(\d+)")


def seeded_protocol(protocol: str) -> bool:
    """Whether a run's seed draws its split (each seed its own random split). ``ratio-A/B/C`` keeps seed 0,
    as it always has (its records were made so)."""
    name = protocol.strip().lower()
    return name == "ratio" or name.startswith(("holdout", "kfold"))


def _random_split(data: Interactions, name: str, seed: int) -> Split | None:
    """``holdout`` / ``holdout-T`` (test fraction T, default 0.1) and ``kfold-K`` (fold ``seed mod K`` of the
    folds drawn with seed ``seed // K``, so seeds 0..K-1 are one complete cross-validation); None otherwise."""
    match = _HOLDOUT.fullmatch(name)
    if match is not None:
        return holdout_split(data, float(match.group(1) or 0.1), seed=seed)
    match = _KFOLD.fullmatch(name)
    if match is not None:
        k = int(match.group(1))
        return kfold_split(data, k, fold=seed % k, seed=seed // k)
    return None


_RATIO = re.compile(r"ratio(?:[-:]([\d.]+)/([\d.]+)(?:/([\d.]+))?)?")


def make_split(data_or_split: Interactions | Split, protocol: str = "loo", seed: int = 0,
               given_test: str = "error") -> Split:
    """Split by protocol name: ``"loo"`` / ``"leave-one-out"``, or ``"ratio"`` (0.8/0.1/0.1) /
    ``"ratio-0.7/0.1/0.2"`` (per user), or the row-level random splits of regression tasks, ``"holdout"`` /
    ``"holdout-0.1"`` and ``"kfold-5"`` (see ``_random_split``), or ``"all"`` (train on every interaction, to
    serve; nothing held out). A dataset that ships its own split (a ``Split``) is returned as is,
    protocol ``"given"``, whatever ``protocol`` asks: its published split is the benchmark, once its test
    rows pass :func:`~qrec.data.given.check_given` (``given_test``: "error", "drop" or "keep").
    A split without test interactions is an error: it would report metrics of nothing (NaN)."""
    split = _split(data_or_split, protocol, seed, given_test)
    if len(split.test) == 0 and split.protocol != "all":  # "all" holds nothing out, by design (serving)
        raise DataFormatError(split.name, f"the {split.protocol} split has no test interactions"
                              + ("" if isinstance(data_or_split, Split) else
                                 f" ({len(data_or_split)} interactions of {data_or_split.n_users} users; "
                                 "leave-one-out holds out only users with at least 3)"))
    return split


def _split(data_or_split: Interactions | Split, protocol: str, seed: int, given_test: str) -> Split:
    if isinstance(data_or_split, Split):
        if protocol != "given":
            log.debug("%s ships its own split; protocol %r not applied", data_or_split.name, protocol)
        return check_given(data_or_split, given_test) if data_or_split.protocol == "given" else data_or_split
    name = protocol.strip().lower()
    if name == "all":
        return everything(data_or_split)
    if name in ("loo", "leave-one-out"):
        return leave_one_out(data_or_split)
    random_split = _random_split(data_or_split, name, seed)
    if random_split is not None:
        return random_split
    match = _RATIO.fullmatch(name)
    if match is not None:
        if match.group(1) is None:
            return ratio_split(data_or_split, seed=seed)
        train, valid = float(match.group(1)), float(match.group(2))
        if match.group(3) is not None and abs(train + valid + float(match.group(3)) - 1) > 1e-9:
            raise ValueError(f"ratios in {protocol!r} must sum to 1")
        return ratio_split(data_or_split, train, valid, seed=seed)
    if name == "given":
        raise ValueError(f"protocol 'given' needs a dataset that ships its own split; {data_or_split.name} does not")
    raise ValueError(f"unknown split protocol {protocol!r}; use 'loo', 'leave-one-out', 'ratio', 'ratio-A/B/C', "
                     "'holdout', 'holdout-T' or 'kfold-K'")
