"""Summary statistics of a dataset or split, as printed by ``qrec data info``."""

from __future__ import annotations

import numpy as np

from qrec.data.interactions import Interactions, Split
from qrec.data.partition import head_size

__all__ = ["describe", "gini", "score_distribution"]


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 = all equal, -> 1 = all mass on one entry."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    rank = np.arange(1, n + 1)
    return float(2.0 * np.dot(rank, x) / (n * total) - (n + 1.0) / n)


def _spread(counts: np.ndarray) -> dict:
    """min / median / mean / max of per-user or per-item counts (over the whole id space)."""
    if counts.size == 0:
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0}
    return {
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "mean": float(counts.mean()),
        "max": int(counts.max()),
    }


def _top_share(item_counts: np.ndarray, fraction: float) -> float:
    """Share of all interactions held by the most popular ``fraction`` of items."""
    total = item_counts.sum()
    if total == 0:
        return 0.0
    k = head_size(len(item_counts), fraction)
    return float(np.sort(item_counts)[::-1][:k].sum() / total)


def score_distribution(scores: np.ndarray) -> dict:
    """Mean, std and quantiles of rating / relevance scores (float64); with at most 20 distinct values (star
    ratings) also the share of each value."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return {}
    q = np.percentile(x, [0, 5, 25, 50, 75, 95, 100])
    out = {"mean": float(x.mean()), "std": float(x.std()),
           **{name: float(v) for name, v in zip(("min", "p5", "p25", "median", "p75", "p95", "max"), q)}}
    values, counts = np.unique(x, return_counts=True)
    if len(values) <= 20:
        out["shares"] = {f"{v:g}": round(float(c) / x.size, 4) for v, c in zip(values, counts)}
    return out


def _describe_interactions(data: Interactions) -> dict:
    user_counts, item_counts = data.user_counts(), data.item_counts()
    summary = {
        "name": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "interactions": len(data),
        "users_with_interactions": int(np.count_nonzero(user_counts)),
        "items_with_interactions": int(np.count_nonzero(item_counts)),
        "density": data.density,
        "sparsity": 1.0 - data.density,
        "per_user": _spread(user_counts),
        "per_item": _spread(item_counts),
        "item_gini": gini(item_counts),
        "top10_item_share": _top_share(item_counts, 0.1),
        "top20_item_share": _top_share(item_counts, 0.2),
        "has_timestamps": data.timestamps is not None,
        "has_ratings": data.ratings is not None,
    }
    if data.ratings is not None:
        summary["scores"] = score_distribution(data.ratings)
    return summary


def _concat(split: Split) -> Interactions:
    """All three parts as one Interactions (same id space), for whole-dataset statistics."""
    parts = (split.train, split.valid, split.test)
    stack = lambda attr: (  # noqa: E731
        None if any(getattr(p, attr) is None for p in parts) else np.concatenate([getattr(p, attr) for p in parts])
    )
    return Interactions(
        users=np.concatenate([p.users for p in parts]),
        items=np.concatenate([p.items for p in parts]),
        n_users=split.n_users,
        n_items=split.n_items,
        user_ids=split.train.user_ids,
        item_ids=split.train.item_ids,
        timestamps=stack("timestamps"),
        ratings=stack("ratings"),
        name=split.name,
    )


def describe(data: Interactions | Split) -> dict:
    """Users, items, interactions, density/sparsity, interactions per user and per item
    (min/median/mean/max over the whole id space), popularity skew (Gini of item counts, share of
    interactions held by the top 10% / 20% of items). For a ``Split`` the figures are over all
    parts together, plus ``protocol`` and per-part counts under ``"parts"``."""
    if isinstance(data, Interactions):
        return _describe_interactions(data)
    summary = _describe_interactions(_concat(data))
    summary["protocol"] = data.protocol
    summary["parts"] = {
        name: {
            "interactions": len(part),
            "users": int(np.count_nonzero(part.user_counts())),
            "items": int(np.count_nonzero(part.item_counts())),
        }
        for name, part in (("train", data.train), ("valid", data.valid), ("test", data.test))
    }
    return summary
