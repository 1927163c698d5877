"""Top-K ranking metrics, computed per user from a boolean hit matrix.

Every function takes ``hits``, a ``(B, K)`` boolean tensor where ``hits[u, r - 1]`` says whether
the item at rank ``r`` of user ``u``'s ranked list is one of the user's test items ``T_u``, and
(where the formula needs it) ``n_test``, a ``(B,)`` integer tensor holding ``|T_u|``. ``K`` is
always ``hits.shape[1]`` (``K >= 1``): to evaluate at a cut-off longer than the catalogue, pad
``hits`` with ``False`` columns. Each returns a ``(B,)`` float64 tensor of per-user values in
``[0, 1]``; the reported metric is its mean over the evaluated users (users with ``|T_u| = 0``
must be left out by the caller -- the formulas with ``|T_u|`` in a denominator refuse them).

With exactly one test item per user, ``HR@K == Recall@K`` (either denominator) and
``NDCG@K == 1 / log2(rank + 1)`` when the item is ranked at ``rank <= K`` (0 otherwise), because
the ideal DCG is then ``1 / log2(2) = 1``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

RECALL_DENOMINATORS = ("test", "min")


def _n_hits(hits: Tensor) -> Tensor:
    return hits.sum(dim=1, dtype=torch.float64)


def _check_n_test(hits: Tensor, n_test: Tensor) -> Tensor:
    """``n_test`` as float64, after checking it has one positive entry per row of ``hits``."""
    if n_test.shape != hits.shape[:1]:
        raise ValueError(f"n_test has shape {tuple(n_test.shape)}, expected ({hits.shape[0]},)")
    if n_test.numel() and int(n_test.min()) < 1:
        raise ValueError("every user needs at least one test item (|T_u| >= 1); drop the others")
    return n_test.to(device=hits.device, dtype=torch.float64)


def _discounts(k: int, device: torch.device) -> Tensor:
    """``1 / log2(r + 1)`` for ranks ``r = 1..k``, float64."""
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    return 1.0 / torch.log2(ranks + 1.0)


def hit_rate(hits: Tensor) -> Tensor:
    """HR@K = 1[at least one test item in the top K]."""
    return hits.any(dim=1).to(torch.float64)


def recall_test(hits: Tensor, n_test: Tensor) -> Tensor:
    """Recall@K = hits@K / |T_u|  -- the denominator of LightGCN's reference code (our default).

    Its ceiling is ``K / |T_u|`` < 1 for users with more than K test items.
    """
    return _n_hits(hits) / _check_n_test(hits, n_test)


def recall_min(hits: Tensor, n_test: Tensor) -> Tensor:
    """Recall@K = hits@K / min(K, |T_u|)  -- the "capped" variant, which reaches 1 for every user."""
    k = hits.shape[1]
    return _n_hits(hits) / _check_n_test(hits, n_test).clamp(max=k)


def recall(hits: Tensor, n_test: Tensor, denominator: str = "test") -> Tensor:
    """Recall@K with the named denominator: ``"test"`` -> ``|T_u|``, ``"min"`` -> ``min(K, |T_u|)``."""
    if denominator == "test":
        return recall_test(hits, n_test)
    if denominator == "min":
        return recall_min(hits, n_test)
    raise ValueError(f"recall denominator must be one of {RECALL_DENOMINATORS}, got {denominator!r}")


def precision(hits: Tensor) -> Tensor:
    """Precision@K = hits@K / K  (K is the cut-off, not the number of items actually ranked)."""
    return _n_hits(hits) / hits.shape[1]


def ndcg(hits: Tensor, n_test: Tensor) -> Tensor:
    """NDCG@K = DCG / IDCG with binary relevance.

    DCG  = sum_{r=1}^{K} hit_r / log2(r + 1)
    IDCG = sum_{r=1}^{min(K, |T_u|)} 1 / log2(r + 1)   (all test items ranked first)
    """
    k = hits.shape[1]
    n_test = _check_n_test(hits, n_test)
    disc = _discounts(k, hits.device)
    dcg = hits.to(torch.float64) @ disc
    # IDCG only depends on min(K, |T_u|): look it up in the running sum of the discounts.
    ideal_len = n_test.clamp(max=k).long()
    idcg = torch.cumsum(disc, dim=0)[ideal_len - 1]
    return dcg / idcg


def mrr(hits: Tensor) -> Tensor:
    """MRR@K = 1 / (rank of the first test item in the top K), 0 when none is there."""
    k = hits.shape[1]
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=hits.device)
    # The first hit has the largest 1/rank among hit positions; rows without hits give 0.
    return (hits.to(torch.float64) / ranks).amax(dim=1)


MetricFn = Callable[[Tensor, Tensor], Tensor]

#: Metric name -> ``fn(hits, n_test)``. ``"recall"`` is resolved by ``metric_fn`` (it needs a
#: denominator), ``"recall_test"`` / ``"recall_min"`` name the two variants explicitly.
METRICS: dict[str, MetricFn] = {
    "hr": lambda hits, n_test: hit_rate(hits),
    "recall_test": recall_test,
    "recall_min": recall_min,
    "precision": lambda hits, n_test: precision(hits),
    "ndcg": ndcg,
    "mrr": lambda hits, n_test: mrr(hits),
}


def metric_fn(name: str, recall_denominator: str = "test") -> MetricFn:
    """The per-user function for ``name`` (one of ``METRICS`` or ``"recall"``).

    ``recall_denominator`` is checked even when ``name`` is not ``"recall"``, so a typo in a
    config fails the first time rather than the first time recall is asked for.
    """
    if recall_denominator not in RECALL_DENOMINATORS:
        raise ValueError(
            f"recall_denominator must be one of {RECALL_DENOMINATORS}, got {recall_denominator!r}"
        )
    if name == "recall":
        return METRICS[f"recall_{recall_denominator}"]
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(["recall", *METRICS])
        raise ValueError(f"unknown metric {name!r}; known: {known}") from None
