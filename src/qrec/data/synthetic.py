"""SYNTHETIC data with known answers, for tests and sanity checks. Never benchmark results.

Every generator names its output ``synthetic-*`` and sets ``meta["synthetic"] = True`` so that a
report can refuse to present it as a real dataset. All are deterministic given ``seed``.
"""

from __future__ import annotations

import numpy as np

from qrec.data.interactions import Interactions, Split

__all__ = ["checkerboard", "planted_communities", "random_interactions"]

# The generators below draw a dense users x items Bernoulli matrix; they are for small fixtures.
_MAX_CELLS = 50_000_000


def _from_pairs(users, items, n_users, n_items, name, rng=None, **meta) -> Interactions:
    """Interactions over raw ids 0..n-1, with random distinct-ish timestamps when ``rng`` given."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    timestamps = None if rng is None else rng.integers(0, 10 * max(1, len(users)), size=len(users), dtype=np.int64)
    return Interactions(
        users=users, items=items, n_users=n_users, n_items=n_items,
        user_ids=np.arange(n_users), item_ids=np.arange(n_items), timestamps=timestamps,
        name=f"synthetic-{name}", meta={"synthetic": True, **meta},
    )


def _check_size(n_users: int, n_items: int) -> None:
    if n_users * n_items > _MAX_CELLS:
        raise ValueError(f"{n_users} x {n_items} is too large for a dense synthetic fixture")


def checkerboard(n_users: int, n_items: int, n_blocks: int = 2, density: float = 1.0, seed: int = 0) -> Interactions:
    """Users and items cut into ``n_blocks`` contiguous blocks each; user block ``a`` interacts
    with item block ``b`` iff ``a + b`` is even (each such pair kept with probability ``density``).

    Known answer: with ``density=1`` the matrix is ``(1 + s_u s_i) / 2`` with ``s = (-1)^block``,
    rank 2, so a dot-product model with dimension >= 2 can fit it exactly; an item is relevant to
    a user iff their block parities agree (``meta["user_block"]`` / ``meta["item_block"]``).
    Timestamps are random.
    """
    _check_size(n_users, n_items)
    rng = np.random.default_rng(seed)
    user_block = np.arange(n_users) * n_blocks // max(1, n_users)
    item_block = np.arange(n_items) * n_blocks // max(1, n_items)
    wanted = (user_block[:, None] + item_block[None, :]) % 2 == 0
    kept = wanted & (rng.random(wanted.shape) < density)
    users, items = np.nonzero(kept)
    return _from_pairs(users, items, n_users, n_items, "checkerboard", rng,
                       user_block=user_block, item_block=item_block)


def planted_communities(
    n_communities: int, users_per: int, items_per: int, p_in: float, p_out: float,
    seed: int = 0, holdout: float = 0.2,
) -> Split:
    """A planted-partition bipartite graph: ``n_communities`` groups of ``users_per`` users and
    ``items_per`` items; a user-item edge exists with probability ``p_in`` inside a group and
    ``p_out`` across groups. A ``holdout`` fraction of the in-group edges (each independently) is
    moved to ``test``; ``valid`` is empty.

    Known answer: every held-out item lies in its user's community, so a model that has learnt
    the communities (e.g. a GCN) ranks them far above chance; ``train.meta`` holds
    ``user_community`` and ``item_community``. Returns a ``Split`` (protocol
    ``"planted-holdout<h>-seed<s>"``) so it drops straight into the trainer and evaluator.
    """
    n_users, n_items = n_communities * users_per, n_communities * items_per
    _check_size(n_users, n_items)
    rng = np.random.default_rng(seed)
    user_community = np.arange(n_users) // users_per
    item_community = np.arange(n_items) // items_per
    same = user_community[:, None] == item_community[None, :]
    edges = rng.random(same.shape) < np.where(same, p_in, p_out)
    held = edges & same & (rng.random(same.shape) < holdout)
    meta = {"user_community": user_community, "item_community": item_community}
    train = _from_pairs(*np.nonzero(edges & ~held), n_users, n_items, "planted-communities", **meta)
    test = _from_pairs(*np.nonzero(held), n_users, n_items, "planted-communities", **meta)
    return Split(train=train, valid=train.subset(np.zeros(0, dtype=np.int64)), test=test,
                 protocol=f"planted-holdout{holdout:g}-seed{seed}")


def random_interactions(
    n_users: int, n_items: int, n: int, seed: int = 0, with_timestamps: bool = True
) -> Interactions:
    """``n`` distinct (user, item) pairs drawn uniformly, with random integer timestamps (ties
    possible, which exercises tie-breaking) unless ``with_timestamps=False``."""
    if n > n_users * n_items:
        raise ValueError(f"cannot draw {n} distinct pairs from {n_users} x {n_items}")
    rng = np.random.default_rng(seed)
    cells = rng.choice(n_users * n_items, size=n, replace=False)
    return _from_pairs(cells // n_items, cells % n_items, n_users, n_items, "random",
                       rng if with_timestamps else None)
