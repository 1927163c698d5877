"""Honest evaluation: full ranking over the whole catalogue with a deterministic tie rule."""

from qrec.eval.metrics import (
    METRICS,
    RECALL_DENOMINATORS,
    hit_rate,
    metric_fn,
    mrr,
    ndcg,
    precision,
    recall,
    recall_min,
    recall_test,
)
from qrec.eval.ranking import DEFAULT_METRICS, evaluate_full_ranking, topk_deterministic

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "RECALL_DENOMINATORS",
    "evaluate_full_ranking",
    "hit_rate",
    "metric_fn",
    "mrr",
    "ndcg",
    "precision",
    "recall",
    "recall_min",
    "recall_test",
    "topk_deterministic",
]
