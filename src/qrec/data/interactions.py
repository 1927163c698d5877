"""The one interaction type every loader returns, and the train/valid/test split built from it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Interactions:
    """Implicit-feedback (user, item) pairs with contiguous 0-based ids.

    ``users[k], items[k]`` is one interaction. ``timestamps`` orders a user's interactions (for
    sequence files without clock times it holds the position in the sequence, so "oldest first"
    still holds). ``user_ids[u]`` / ``item_ids[i]`` map an internal index back to the raw id in the
    source file. ``n_users`` / ``n_items`` may exceed the largest index seen (ids known from a
    companion file, e.g. a test split).
    """

    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray | None = None
    ratings: np.ndarray | None = None
    name: str = "interactions"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.users.shape != self.items.shape or self.users.ndim != 1:
            raise ValueError("users and items must be 1-D arrays of equal length")
        for extra in (self.timestamps, self.ratings):
            if extra is not None and extra.shape != self.users.shape:
                raise ValueError("timestamps/ratings must have one entry per interaction")
        if len(self.user_ids) != self.n_users or len(self.item_ids) != self.n_items:
            raise ValueError("user_ids/item_ids must map every internal index to a raw id")

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def density(self) -> float:
        return len(self) / max(1, self.n_users * self.n_items)

    def subset(self, mask_or_index: np.ndarray) -> "Interactions":
        """Rows selected by a boolean mask or an index array; ids and maps are kept."""
        pick = lambda a: None if a is None else a[mask_or_index]  # noqa: E731
        return replace(
            self,
            users=self.users[mask_or_index],
            items=self.items[mask_or_index],
            timestamps=pick(self.timestamps),
            ratings=pick(self.ratings),
        )

    def to_csr(self, dtype=np.float32) -> sp.csr_matrix:
        """User x item 0/1 matrix (duplicates collapse to 1)."""
        m = sp.csr_matrix(
            (np.ones(len(self), dtype=dtype), (self.users, self.items)),
            shape=(self.n_users, self.n_items),
        )
        m.sum_duplicates()
        m.data[:] = 1
        return m

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)


@dataclass(frozen=True)
class Split:
    """Train / validation / test interactions over one id space.

    ``protocol`` names how it was made (e.g. ``"leave-one-out"``, ``"ratio-0.8/0.1/0.1-seed0"``,
    ``"given"``), and is written into every experiment record. ``valid`` may be empty (e.g. the
    LightGCN files ship only train and test).
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    protocol: str

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    @property
    def name(self) -> str:
        return self.train.name
