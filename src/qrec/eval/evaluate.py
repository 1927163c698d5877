"""Evaluate scores on a split: full ranking over all items, seen items masked.

Validation masks the user's training items; test masks training and validation items (the MGQE/SASRec
leave-one-out protocol). ``mask`` names the other conventions met in papers, to compare against them.
This module sees a score function, never a model (``qrec.models.evaluate_model`` prepares a model and
calls it); ranking and metric formulas live in ``ranking.py`` / ``metrics.py``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from qrec.data import Split
from qrec.errors import QrecError
from qrec.eval.ranking import ScoreFn, evaluate_full_ranking

DEFAULT_METRICS = ("hr", "ndcg", "recall", "precision")
MASKS = ("seen", "train", "none")  # every known item / the training items only / nothing
STAGES = ("valid", "test")


def ranking_problem(split: Split, stage: str = "test", mask: str = "seen") -> tuple[np.ndarray, sp.csr_matrix, list]:
    """``(users, truth, exclude)`` of ``stage``: the users with held-out items, those items as a CSR matrix, and
    the matrices of items ``mask`` keeps out of the ranking: ``"seen"`` (training, and at test validation
    items: qrec's protocol), ``"train"`` (training items only: at test the validation item stays rankable)
    or ``"none"``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    truth = (split.valid if stage == "valid" else split.test).to_csr()
    exclude = [] if mask == "none" else [split.train.to_csr()]
    if mask == "seen" and stage == "test" and len(split.valid):
        exclude.append(split.valid.to_csr())
    return np.flatnonzero(np.diff(truth.indptr)), truth, exclude


def evaluate_split(score_fn: ScoreFn, split: Split, stage: str = "test", ks=(10,), recall_denominator: str = "test",
                   batch_size: int = 1024, progress: bool = False, mask: str = "seen",
                   device: torch.device | str | None = None, topk_fn=None) -> dict:
    """Full-ranking metrics of ``score_fn`` (user ids ``(B,)`` -> scores ``(B, n_items)``) at ``stage``; ranked
    by ``topk_fn`` when given (``evaluate_full_ranking``)."""
    users, truth, exclude = ranking_problem(split, stage, mask)
    if users.size == 0:  # metrics of nobody would be NaN: never write them as a result
        raise QrecError(f"{split.name}: no {stage} interactions to evaluate")
    return evaluate_full_ranking(
        score_fn, users, truth, exclude, ks=tuple(ks), metrics=DEFAULT_METRICS,
        recall_denominator=recall_denominator, batch_size=batch_size, device=device, progress=progress,
        topk_fn=topk_fn,
    )


def format_metrics(metrics: dict) -> str:
    """Metrics as a table of percentages (two decimals), a row per metric and a column per cut-off, e.g.
    ``{"hr@10": 0.4512, "ndcg@10": 0.2231}`` -> ``hr  45.12`` / ``ndcg  22.31`` under ``@10``."""
    names, ks = [], []
    for key in metrics:
        if "@" in key:
            name, k = key.split("@")
            names += [name] * (name not in names)
            ks += [int(k)] * (int(k) not in ks)
    width = max(map(len, names), default=0)
    lines = [" " * width + "".join(f"{f'@{k}':>9}" for k in ks)]
    for name in names:
        cells = [metrics.get(f"{name}@{k}") for k in ks]
        lines.append(f"{name:<{width}}" + "".join(f"{100 * v:>8.2f}%" if v is not None else " " * 9 for v in cells))
    return "\n".join(lines)
