"""Regression metrics: how far predicted scores are from the true ones (MGQE's Task 3, rating prediction).

For ``n`` pairs with true scores ``y_j`` and predictions ``p_j`` (errors ``e_j = p_j - y_j``):

- ``RMSE = sqrt( (1/n) sum_j e_j^2 )``: MGQE's Table 5 metric and Surprise's benchmark metric;
- ``MAE = (1/n) sum_j |e_j|``.

Both are accumulated in float64 over batches, so the result does not depend on the batch size beyond the
float32 predictions themselves. Lower is better for both (``LOWER_IS_BETTER``): best-epoch selection reads it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

REGRESSION_METRICS = ("rmse", "mae")
LOWER_IS_BETTER = frozenset(REGRESSION_METRICS)


def rmse(predictions, targets) -> float:
    """Root mean squared error, float64; ``nan`` for no pairs."""
    e = _errors(predictions, targets)
    return float(np.sqrt(np.mean(e * e))) if e.size else float("nan")


def mae(predictions, targets) -> float:
    """Mean absolute error, float64; ``nan`` for no pairs."""
    e = _errors(predictions, targets)
    return float(np.mean(np.abs(e))) if e.size else float("nan")


def _errors(predictions, targets) -> np.ndarray:
    p = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(targets, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} targets")
    return p - y


@torch.no_grad()
def evaluate_regression(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rows: np.ndarray,
                        cols: np.ndarray, targets: np.ndarray, batch_size: int = 65536,
                        device: torch.device | str = "cpu") -> dict:
    """RMSE and MAE of ``predict(rows, cols)`` (a batch of pairs -> predicted scores) against ``targets``.

    ``predict`` is called on batches of ``batch_size`` pairs; the squared and absolute errors are summed in
    float64, so the result equals ``rmse`` / ``mae`` over the concatenated predictions."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    y = np.asarray(targets, dtype=np.float64)
    if not (len(rows) == len(cols) == len(y)):
        raise ValueError(f"pairs and targets differ in length: {len(rows)}, {len(cols)}, {len(y)}")
    if len(y) == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "pairs": 0}
    squared = absolute = 0.0
    for start in range(0, len(y), batch_size):
        part = slice(start, start + batch_size)
        p = predict(torch.as_tensor(rows[part], device=device), torch.as_tensor(cols[part], device=device))
        e = p.detach().to("cpu", torch.float64).numpy() - y[part]
        squared += float(np.dot(e, e))
        absolute += float(np.abs(e).sum())
    return {"rmse": float(np.sqrt(squared / len(y))), "mae": absolute / len(y), "pairs": int(len(y))}


def improved(metrics: dict, best: dict, key: str) -> bool:
    """Whether ``metrics[key]`` beats ``best[key]`` (lower for RMSE / MAE, higher for ranking metrics);
    anything beats an empty ``best``."""
    if not best:
        return True
    if key in LOWER_IS_BETTER:
        return metrics.get(key, np.inf) < best.get(key, np.inf)
    return metrics.get(key, -np.inf) > best.get(key, -np.inf)
