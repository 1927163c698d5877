"""A model on a split: the protocol hooks around ``qrec.eval.evaluate_split``."""

from __future__ import annotations

import torch

from qrec.data import Split
from qrec.eval.evaluate import evaluate_split
from qrec.models.base import Recommender


@torch.no_grad()
def evaluate_model(model: Recommender, split: Split, stage: str = "test", ks=(10,), recall_denominator: str = "test",
                   batch_size: int = 1024, progress: bool = False, mask: str = "seen") -> dict:
    """Full-ranking metrics of ``model`` at ``stage`` (``mask``: see ``qrec.eval.evaluate.ranking_problem``).

    The model scores in eval mode from fresh caches, reading the history ``stage`` allows (a sequential model
    sees the validation item only at test); afterwards it is back in its training mode, at the test stage
    (all known history: what serving reads)."""
    was_training = model.training
    model.eval()
    model.refresh()
    model.set_stage(stage)
    try:
        return evaluate_split(model.score_all, split, stage, ks, recall_denominator, batch_size, progress, mask,
                              device=model.device)
    finally:
        model.train(was_training)
        model.set_stage("test")
