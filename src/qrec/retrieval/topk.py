"""Deterministic top-k: the one ranking rule every scorer (float GEMM, popcount, PQ scan) follows.

Items are ordered by score descending and equal scores by item index ascending, exactly, on every device
and kernel: a model that scores many items equally gets the same placement everywhere, and a constant-score
model gets "item 0, item 1, ..." -- no lucky draws from an unstable sort. ``-inf`` marks a masked item.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

#: scores per block of ``blocked_topk`` by default: 64 MiB of float32
BLOCK_FLOATS = 1 << 24

__all__ = ["BLOCK_FLOATS", "blocked_topk", "masked_topk", "merged_topk", "topk_deterministic", "sorted_csr"]




def masked_topk(scores: Tensor, k: int, exclude: sp.spmatrix | None = None) -> tuple[Tensor, Tensor]:
    """``topk_deterministic`` of ``scores (B, n)`` with ``exclude``'s entries (a ``(B, n)`` scipy sparse matrix,
    e.g. the seen items) set to ``-inf`` first; ``scores`` is modified in place."""
    if exclude is not None:
        coo = exclude.tocoo()
        rows, cols = (torch.from_numpy(v).long().to(scores.device) for v in (coo.row, coo.col))
        scores[rows, cols] = -torch.inf
    return topk_deterministic(scores, k)


def merged_topk(scores: Tensor, k: int, exclude: sp.spmatrix | None = None) -> tuple[Tensor, Tensor]:
    """``masked_topk`` of float32 CPU ``scores (B, n)``, exactly (same items, order and values), by the compiled
    running top-k merge (``kernels.merge_topk``): no ``-inf`` written into ``scores`` and no sort of its rows,
    several times faster for the few rows of a server's query."""
    _check_scores(scores, k)
    return blocked_topk(lambda lo, hi: scores, scores.shape[1], scores.shape[0], k, exclude, rows=scores.shape[1])


def blocked_topk(score_rows, n: int, n_queries: int, k: int, exclude: sp.spmatrix | None = None,
                 rows: int | None = None) -> tuple[Tensor, Tensor]:
    """``masked_topk`` of a ``(B, n)`` score matrix that is never built: ``score_rows(lo, hi)`` returns the float32
    CPU scores of items ``lo:hi`` for every query, ``rows`` items at a time, and each block is merged into a running
    top-k (``kernels.merge_topk``; same items, order and values as ``masked_topk`` of the concatenated blocks).
    The memory is one block instead of ``B x n`` floats (a 10^7-item catalogue: 40 MB a query). ``rows``: items
    per block, by default as many as keep a block at ``BLOCK_FLOATS`` (few calls: each wakes the merge's threads)."""
    from qrec.retrieval.kernels import merge_topk

    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] rows, got {k}")
    B = n_queries
    rows = rows or max(1 << 15, BLOCK_FLOATS // max(1, B))
    indptr, excluded = (np.zeros(B + 1, np.int64), np.zeros(0, np.int64)) if exclude is None else sorted_csr(exclude, B)
    top_i, top_v = np.zeros((B, k), np.int64), np.full((B, k), -np.inf, np.float32)
    filled, cursor = np.zeros(B, np.int64), indptr[:-1].copy()
    for lo in range(0, n, rows):
        block = score_rows(lo, min(lo + rows, n))
        merge_topk(block.detach().float().contiguous().numpy(), lo, top_i, top_v, filled, indptr, excluded, cursor)
    return torch.from_numpy(top_i), torch.from_numpy(top_v)


def topk_deterministic(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best items of every row, ties broken by the lower item index.

    Order: score descending, then item index ascending -- exactly, on every device.

    Args:
        scores: ``(B, n)`` floating scores. ``-inf`` marks a masked item; ``NaN`` is refused.
        k: ``1 <= k <= n``.

    Returns:
        ``(indices, values)``, both ``(B, k)``, in rank order. A row with fewer than ``k`` finite
        scores has its finite items first and then, in its tail slots, ``-inf`` (masked) items in
        index order: their ``values`` are ``-inf``, and callers must not count them as hits.

    Raises:
        ValueError: on a non-2-D or non-floating ``scores``, ``k`` out of range, or any NaN.
    """
    _check_scores(scores, k)
    cols = _topk_set(scores, k)
    # Put each row's k items in index order, then a *stable* sort by score keeps that index
    # order among equal scores: (score desc, index asc) exactly.
    cols = cols.sort(dim=1).values
    values, order = scores.gather(1, cols).sort(dim=1, descending=True, stable=True)
    return cols.gather(1, order), values


def _check_scores(scores: Tensor, k: int) -> None:
    if scores.dim() != 2 or not scores.is_floating_point():
        got = f"{scores.dtype} {tuple(scores.shape)}"
        raise ValueError(f"scores must be a 2-D floating tensor, got {got}")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in [1, n_items={scores.shape[1]}], got {k}")


def _topk_set(scores: Tensor, k: int) -> Tensor:
    """``(B, k)`` item indices (any order): the top-k set under the tie rule.

    With ``v`` the k-th largest score of a row, every item scoring ``> v`` is in (fewer than k of
    them), and the remaining slots go to the lowest-index items scoring ``== v``. ``torch.topk``
    already returns that set unless ``v`` is shared beyond the k-th slot -- only then may it pick
    any of the tied items -- so only such rows (common with low-bit, integer-valued scores) are
    recomputed.
    """
    n = scores.shape[1]
    values, cols = scores.topk(min(k + 1, n), dim=1)
    # topk ranks NaN above everything, so a NaN anywhere in a row shows up in its first slot.
    if torch.isnan(values[:, 0]).any():
        raise ValueError("scores contain NaN; a NaN has no place in a ranking (diverged model?)")
    if k == n:
        return cols
    tied = (values[:, k] == values[:, k - 1]).nonzero().squeeze(1)
    cols = cols[:, :k]
    if tied.numel():
        rows = scores if tied.numel() == scores.shape[0] else scores[tied]
        cols = cols.index_put((tied,), _resolve_boundary_ties(rows, values[tied], cols[tied], k))
    return cols


def _resolve_boundary_ties(scores: Tensor, values: Tensor, cols: Tensor, k: int) -> Tensor:
    """Exact top-k set of rows whose k-th largest score is shared beyond the k-th slot.

    ``values`` / ``cols`` are the rows' ``torch.topk(k + 1)`` output: its leading entries scoring
    above the k-th value are right; the remaining slots are refilled with the lowest-index items
    scoring exactly the k-th value.
    """
    n = scores.shape[1]
    kth = values[:, k - 1 : k]
    n_above = (values[:, :k] > kth).sum(dim=1, keepdim=True)
    # Key n - index on the tied items and 0 elsewhere: its (sorted) topk lists the tied items by
    # ascending index, in one pass instead of a cumsum over the whole row.
    by_index = torch.arange(n, 0, -1, dtype=torch.int32, device=scores.device)
    first_tied = torch.where(scores == kth, by_index, 0).topk(k, dim=1).indices
    slot = torch.arange(k, device=scores.device).unsqueeze(0)
    from_ties = first_tied.gather(1, (slot - n_above).clamp(min=0))
    return torch.where(slot < n_above, cols, from_ties)


def sorted_csr(exclude, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)`` int64 of a scipy sparse matrix, each row's indices sorted (the matrix is left as it
    is; a CSR matrix already sorted is read without a copy)."""
    ready = isinstance(exclude, sp.csr_matrix) and exclude.has_sorted_indices
    m = exclude if ready else exclude.tocsr(copy=True)
    if m.shape[0] != n_rows:
        raise ValueError(f"exclude has {m.shape[0]} rows for {n_rows} users")
    m.sort_indices()
    return m.indptr.astype(np.int64, copy=False), m.indices.astype(np.int64)
