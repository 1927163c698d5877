"""Uniform negative sampling and the per-epoch batch iterators the trainer consumes.

A negative for user ``u`` is an item drawn uniformly from those ``u`` has *not* interacted with in
training. Sampling is rejection sampling, fully vectorised: draw uniformly from all items, look
each (user, item) up among the sorted int64 keys ``user * n_items + item`` of the training pairs
with ``np.searchsorted``, and redraw only the rejected entries. Accepted draws are uniform over a
user's non-interacted items, exactly.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from qrec.data.interactions import Interactions
from qrec.data.sequences import PAD, last_items, user_sequences

__all__ = ["NegativeSampler", "pointwise_epoch", "bpr_epoch", "sequence_epoch", "regression_epoch"]

# After this many rounds of redrawing, the few entries still rejected belong to users who have
# interacted with most items; for them, drawing from the explicit complement is cheaper.
_MAX_REJECTION_ROUNDS = 30


def _pairs(train: Interactions | sp.spmatrix) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(users, items, n_users, n_items) of training data given as Interactions or a sparse matrix."""
    if isinstance(train, Interactions):
        # copy=False: at 4 x 10^7 pairs each needless copy is 320 MB (callers only read these)
        users, items = (a.astype(np.int64, copy=False) for a in (train.users, train.items))
        return users, items, train.n_users, train.n_items
    if sp.issparse(train):
        rows, cols = train.nonzero()  # explicit zeros are not interactions
        return rows.astype(np.int64), cols.astype(np.int64), train.shape[0], train.shape[1]
    raise TypeError(f"train must be Interactions or a scipy sparse matrix, got {type(train).__name__}")


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values; sort + adjacent compare is ~10x faster than np.unique on numpy 2.4."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if keys.size else keys


class NegativeSampler:
    """Draws items each user has not interacted with in ``train`` (uniformly, with replacement).

    ``seed`` seeds the sampler's own generator; :meth:`sample` also accepts a caller's generator,
    which the epoch iterators pass so that one seed fixes a whole epoch.
    """

    def __init__(self, train: Interactions | sp.spmatrix, seed: int = 0):
        users, items, self.n_users, self.n_items = _pairs(train)
        if self.n_items == 0:
            raise ValueError("cannot sample negatives: there are no items")
        self._keys = _sorted_unique(users * np.int64(self.n_items) + items)
        self._n_positive = np.bincount(self._keys // self.n_items, minlength=self.n_users)
        self._rng = np.random.default_rng(seed)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) is a training interaction."""
        query = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if self._keys.size == 0:
            return np.zeros(query.shape, dtype=bool)
        at = np.minimum(np.searchsorted(self._keys, query), self._keys.size - 1)
        return self._keys[at] == query

    def sample(self, users: np.ndarray, n_neg: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """An ``(len(users), n_neg)`` int64 array of negatives, row ``k`` for ``users[k]``."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        self._check(users, n_neg)
        rng = self._rng if rng is None else rng
        negatives = rng.integers(0, self.n_items, size=len(users) * n_neg, dtype=np.int64)
        owner = np.repeat(users, n_neg)
        redo = np.flatnonzero(self.is_positive(owner, negatives))
        for _ in range(_MAX_REJECTION_ROUNDS):
            if redo.size == 0:
                break
            negatives[redo] = rng.integers(0, self.n_items, size=redo.size, dtype=np.int64)
            redo = redo[self.is_positive(owner[redo], negatives[redo])]
        if redo.size:
            negatives[redo] = self._from_complement(owner[redo], rng)
        return negatives.reshape(len(users), n_neg)

    def _check(self, users: np.ndarray, n_neg: int) -> None:
        if n_neg < 0:
            raise ValueError(f"n_neg must be >= 0, got {n_neg}")
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"user ids must be in [0, {self.n_users}), got range [{users.min()}, {users.max()}]")
        full = np.unique(users[self._n_positive[users] >= self.n_items])
        if full.size and n_neg > 0:
            raise ValueError(
                f"{full.size} user(s) interacted with every one of the {self.n_items} items, so no negative "
                f"exists for them (first: {full[:5].tolist()}); drop them or sample with replacement of positives"
            )

    def _from_complement(self, owners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Exact uniform draws from each owner's non-interacted items; a loop over the few users
        left after rejection (those who interacted with most items), not over entries."""
        out = np.empty(len(owners), dtype=np.int64)
        for user in np.unique(owners):
            lo, hi = np.searchsorted(self._keys, [user * self.n_items, (user + 1) * self.n_items])
            allowed = np.setdiff1d(np.arange(self.n_items), self._keys[lo:hi] - user * self.n_items)
            slots = np.flatnonzero(owners == user)
            out[slots] = rng.choice(allowed, size=slots.size)
        return out


class Batches:
    """Slices of ``arrays`` in ``order``, ``batch_size`` rows at a time, as torch tensors. Sized, so a
    progress bar knows the epoch's total; the epoch's sampling is already done when it is built."""

    def __init__(self, arrays: dict[str, np.ndarray], order: np.ndarray, batch_size: int):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.arrays, self.order, self.batch_size = arrays, order, batch_size

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.order), self.batch_size):
            rows = self.order[start : start + self.batch_size]
            yield {key: torch.from_numpy(values[rows]) for key, values in self.arrays.items()}


def pointwise_epoch(
    train: Interactions | sp.spmatrix, sampler: NegativeSampler, n_neg: int, batch_size: int,
    rng: np.random.Generator,
) -> Batches:
    """One epoch of (user, item, label) rows for pointwise losses (NCF style): every training
    pair as a positive (label 1) plus ``n_neg`` fresh negatives for it (label 0), all rows
    shuffled. Yields ``{"users": int64, "items": int64, "labels": float32}`` tensors. All the
    epoch's negatives are drawn in one vectorised call; ``rng`` fixes negatives and order."""
    users, items, _, _ = _pairs(train)
    negatives = sampler.sample(users, n_neg, rng)
    arrays = {
        "users": np.repeat(users, 1 + n_neg),
        "items": np.column_stack([items, negatives]).reshape(-1),  # each positive, then its negatives
        "labels": np.tile(np.r_[np.float32(1), np.zeros(n_neg, dtype=np.float32)], len(users)),
    }
    return Batches(arrays, rng.permutation(len(arrays["users"])), batch_size)


def regression_epoch(train: Interactions, batch_size: int, rng: np.random.Generator) -> Batches:
    """One epoch of (row, column, score) triples for a squared loss: every training pair once, shuffled by
    ``rng``. Yields ``{"users": int64, "items": int64, "targets": float32}`` (for an item-to-item dataset,
    "users" are the first items of the pairs). Nothing is sampled: the scores are the data."""
    if train.ratings is None:
        raise ValueError(f"{train.name}: a regression epoch needs scores (ratings), and this data has none")
    arrays = {"users": train.users.astype(np.int64), "items": train.items.astype(np.int64),
              "targets": train.ratings.astype(np.float32)}
    return Batches(arrays, rng.permutation(len(train)), batch_size)


def bpr_epoch(
    train: Interactions | sp.spmatrix, sampler: NegativeSampler, batch_size: int, rng: np.random.Generator,
) -> Batches:
    """One epoch of BPR triples, LightGCN style: one pass over all training pairs in shuffled
    order, each with one fresh negative. Yields ``{"users", "pos", "neg"}`` int64 tensors."""
    users, items, _, _ = _pairs(train)
    order = rng.permutation(len(users))
    arrays = {"users": users[order], "pos": items[order]}
    arrays["neg"] = sampler.sample(arrays["users"], 1, rng)[:, 0]
    return Batches(arrays, np.arange(len(order)), batch_size)


def sequence_epoch(
    train: Interactions, sampler: NegativeSampler, length: int, batch_size: int, rng: np.random.Generator,
) -> Batches:
    """One epoch of next-item windows, SASRec style: every user with at least two training items once, in
    shuffled order. ``seq`` holds the user's last ``length`` items before their last one, ``pos`` the item
    that follows each of them (``seq`` shifted by one), ``neg`` one fresh negative per slot; all ``(B,
    length)`` int64, right-aligned, ``PAD`` (-1) in the empty slots of all three. Yields ``{"users", "seq",
    "pos", "neg"}``. SASRec's reference code draws users with replacement; one permutation per epoch covers
    each user once."""
    indptr, items = user_sequences(train)
    users = np.flatnonzero(np.diff(indptr) >= 2)
    seq = last_items(indptr, items, length, drop_last=1)[users]
    filled = seq != PAD
    pos = np.where(filled, last_items(indptr, items, length)[users], PAD)
    neg = np.full_like(seq, PAD)
    neg[filled] = sampler.sample(np.broadcast_to(users[:, None], seq.shape)[filled], 1, rng)[:, 0]
    arrays = {"users": users, "seq": seq, "pos": pos, "neg": neg}
    return Batches(arrays, rng.permutation(len(users)), batch_size)
