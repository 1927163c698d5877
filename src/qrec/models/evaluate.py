"""A model on a split: the protocol hooks around ``qrec.eval.evaluate_split``."""

from __future__ import annotations

import torch

from qrec.data import Split
from qrec.eval.evaluate import evaluate_split
from qrec.models.base import Recommender


# Users scored per batch: 1024, fewer when the (batch x items) float32 score matrix would pass 512 MiB (10^6 items:
# 128 users). Below 131,072 items (every published dataset) the batch is 1024, as it always was.
_SCORE_BUDGET = 2**27


def eval_batch_size(n_items: int, largest: int = 1024, bounded: bool = True) -> int:
    """Users per evaluation batch; ``bounded=False`` for a model that ranks without the score matrix."""
    return max(1, min(largest, _SCORE_BUDGET // max(1, n_items))) if bounded else largest


@torch.no_grad()
def evaluate_model(model: Recommender, split: Split, stage: str = "test", ks=(10,), recall_denominator: str = "test",
                   batch_size: int | None = None, progress: bool = False, mask: str = "seen") -> dict:
    """Full-ranking metrics of ``model`` at ``stage`` (``mask``: see ``qrec.eval.evaluate.ranking_problem``).

    The model scores in eval mode from fresh caches, reading the history ``stage`` allows (a sequential model
    sees the validation item only at test); afterwards it is back in its training mode, at the test stage
    (all known history: what serving reads). Items are ranked by ``model.topk``, the path ``qrec recommend`` and
    serving take (fused with the scoring for codes; for every other model the ranking of ``score_all``)."""
    was_training = model.training
    model.eval()
    model.refresh()
    model.set_stage(stage)
    try:
        batch_size = batch_size or eval_batch_size(split.n_items, bounded=not model.ranks_in_blocks())
        return evaluate_split(model.score_all, split, stage, ks, recall_denominator, batch_size, progress, mask,
                              device=model.device, topk_fn=model.topk)
    finally:
        model.train(was_training)
        model.set_stage("test")
