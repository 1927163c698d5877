"""Evaluate a trained model on a split: full ranking over all items, seen items masked.

Validation masks the user's training items; test masks training and validation items (the MGQE/SASRec
leave-one-out protocol). ``mask`` names the other conventions met in papers, to compare against them. Ranking and metric formulas live in ``ranking.py`` / ``metrics.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from qrec.data import Split
from qrec.errors import QrecError
from qrec.eval.ranking import evaluate_full_ranking
from qrec.models.base import Recommender

DEFAULT_METRICS = ("hr", "ndcg", "recall", "precision")
MASKS = ("seen", "train", "none")  # every known item / the training items only / nothing


@torch.no_grad()
def evaluate_model(model: Recommender, split: Split, stage: str = "test", ks=(10,), recall_denominator: str = "test", batch_size: int = 1024, progress: bool = False, mask: str = "seen") -> dict:
    """Full-ranking metrics of ``model`` at ``stage``. ``mask``: which of the user's known items cannot be
    recommended: ``"seen"`` (training, and at test validation items: qrec's protocol), ``"train"`` (training
    items only: at test the validation item stays rankable) or ``"none"``."""
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    truth_part = split.valid if stage == "valid" else split.test
    exclude = [] if mask == "none" else [split.train.to_csr()]
    if mask == "seen" and stage == "test" and len(split.valid):
        exclude.append(split.valid.to_csr())
    truth = truth_part.to_csr()
    users = np.flatnonzero(np.diff(truth.indptr))
    if users.size == 0:  # metrics of nobody would be NaN: never write them as a result
        raise QrecError(f"{split.name}: no {stage} interactions to evaluate")
    was_training = model.training
    model.eval()
    if hasattr(model, "refresh"):
        model.refresh()
    if hasattr(model, "set_stage"):  # a sequential model reads the history this stage allows
        model.set_stage(stage)
    device = next(iter(model.parameters())).device
    try:
        return evaluate_full_ranking(
            model.score_all, users, truth, exclude, ks=tuple(ks), metrics=DEFAULT_METRICS,
            recall_denominator=recall_denominator, batch_size=batch_size, device=device, progress=progress,
        )
    finally:
        model.train(was_training)
        if hasattr(model, "set_stage"):
            model.set_stage("test")  # all known history: what serving reads
