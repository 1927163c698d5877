"""Item-to-item relevance from co-ratings: a public analogue of MGQE's App-to-App Relevance data (AAR).

AAR (private) holds human relevance scores in -100..100 for unique pairs of apps. The recipe here makes the
same kind of target from a rating log, for every pair of items ``(a, b)``, ``a != b``:

1. ``U_ab``: the users who rated both; ``n_ab = |U_ab|``. Pairs with ``n_ab < min_common`` are dropped.
2. ``r_ab``: the Pearson correlation of the two items' ratings over ``U_ab`` (means taken over ``U_ab``, not
   over each item's raters)::

       r_ab = (n S_xy - S_x S_y) / sqrt((n S_xx - S_x^2) (n S_yy - S_y^2))

   with ``S_x = sum_{u in U_ab} x_ua``, ``S_xx = sum x_ua^2``, ``S_xy = sum x_ua y_ub`` (``x`` = ratings of
   a, ``y`` = ratings of b). For integer ratings every sum and product is an integer below 2^53, so the
   numerator and both variance terms are exact in float64. Pairs where either item's co-ratings are all
   equal (a zero variance term) have no correlation and are dropped.
3. The score is ``100 r_ab`` (float32), in ``[-100, 100]`` like AAR's.
4. Each unordered pair is kept once (AAR: "each pair is unique"), as (first, second) = (a, b) or (b, a) by a
   fair coin from ``numpy.random.default_rng(orient_seed)`` over the pairs in ``(a, b)`` order, so each
   item's two embedding rows (first / second position) see about half its pairs each.

The result is an ``Interactions`` whose "users" are first items and "items" second items, over one id
space: every item in some kept pair, in the order of its raw id, with ``n_users == n_items``.
Vectorised: the five sums are sparse matrix products (``R^T B`` and friends over a block of columns at a
time), never a loop over pairs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from qrec.data.interactions import Interactions

__all__ = ["pearson_pairs"]

_BLOCK = 512  # item columns per block: (n_items x 512) float64 blocks, ~15 MB each on ML-1M


def pearson_pairs(data: Interactions, min_common: int = 20, orient_seed: int = 0, name: str | None = None) -> Interactions:
    """The relevance pairs of ``data``'s ratings by the recipe of this module's docstring."""
    if data.ratings is None:
        raise ValueError(f"{data.name}: item-item relevance needs ratings, and this data has none")
    if min_common < 2:
        raise ValueError(f"min_common must be >= 2 (a correlation needs two co-raters), got {min_common}")
    rated = sp.csr_matrix((data.ratings.astype(np.float64), (data.users, data.items)), shape=(data.n_users, data.n_items))
    if rated.nnz != len(data):
        raise ValueError(f"{data.name}: a user rates an item more than once; co-rating correlations need one rating per pair")
    first, second, scores = _correlations(rated, min_common)
    flip = np.random.default_rng(orient_seed).random(len(first)) < 0.5
    first, second = np.where(flip, second, first), np.where(flip, first, second)
    used = np.flatnonzero(np.bincount(np.r_[first, second], minlength=data.n_items))
    index = np.full(data.n_items, -1, dtype=np.int64)
    index[used] = np.arange(len(used))
    ids = data.item_ids[used]
    recipe = {"recipe": "pearson-co-ratings", "min_common": min_common, "orient_seed": orient_seed,
              "source_items": data.n_items, "source_ratings": len(data)}
    return Interactions(users=index[first], items=index[second], n_users=len(used), n_items=len(used),
                        user_ids=ids, item_ids=ids, ratings=scores, name=name or f"{data.name}-i2i",
                        meta={"relevance": recipe})


def _correlations(rated: sp.csr_matrix, min_common: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, 100 r_ab)`` for every pair ``a < b`` with ``n_ab >= min_common`` and a defined correlation,
    in ``(a, b)`` order."""
    rated = rated.tocsc()
    seen = rated.copy()
    seen.data[:] = 1.0
    squared = rated.multiply(rated).tocsc()
    seen_t, rated_t, squared_t = seen.T.tocsr(), rated.T.tocsr(), squared.T.tocsr()
    out = []
    for start in range(0, rated.shape[1], _BLOCK):
        cols = slice(start, start + _BLOCK)
        n = (seen_t @ seen[:, cols]).toarray()
        s_x, s_y = (rated_t @ seen[:, cols]).toarray(), (seen_t @ rated[:, cols]).toarray()
        s_xx, s_yy = (squared_t @ seen[:, cols]).toarray(), (seen_t @ squared[:, cols]).toarray()
        s_xy = (rated_t @ rated[:, cols]).toarray()
        var_x, var_y = n * s_xx - s_x * s_x, n * s_yy - s_y * s_y
        a, b = np.nonzero((n >= min_common) & (var_x > 0) & (var_y > 0))
        b_global = b + start
        keep = a < b_global
        a, b = a[keep], b[keep]
        r = (n[a, b] * s_xy[a, b] - s_x[a, b] * s_y[a, b]) / np.sqrt(var_x[a, b] * var_y[a, b])
        out.append((a, b + start, np.clip(100.0 * r, -100.0, 100.0)))
    first, second, scores = (np.concatenate(parts) for parts in zip(*out))
    order = np.lexsort((second, first))
    return first[order].astype(np.int64), second[order].astype(np.int64), scores[order].astype(np.float32)
