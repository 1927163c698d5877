"""What a run optimises and measures: the trainer's loop is shared, a task supplies batches, loss and metrics.

* ``ranking`` (default): the backbone's own sampled loss (BCE, BPR, next-item), full-ranking HR / NDCG.
* ``regression`` (MGQE Task 3, rating prediction): a squared loss on each pair's score, RMSE / MAE.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from qrec.data import Split
from qrec.data.sampling import NegativeSampler, bpr_epoch, pointwise_epoch, regression_epoch, sequence_epoch
from qrec.errors import QrecError
from qrec.eval.regression import REGRESSION_METRICS, evaluate_regression
from qrec.models.evaluate import evaluate_model
from qrec.train.config import TASKS, RunConfig


class RankingTask:
    """Top-k recommendation: sampled negatives, the backbone's ``training_loss``, full-ranking metrics."""

    def __init__(self, cfg: RunConfig, split: Split):
        self.cfg, self.split = cfg, split
        self.sampler = NegativeSampler(split.train, seed=cfg.seed)
        self.select_metric = cfg.select_metric

    def batches(self, model, rng: np.random.Generator):
        if model.loss_kind == "none":  # nothing to train (pop): no batches
            return iter(())
        if model.loss_kind == "bpr":
            return bpr_epoch(self.split.train, self.sampler, self.cfg.batch_size, rng)
        if model.loss_kind == "sequence":
            return sequence_epoch(self.split.train, self.sampler, model.maxlen, self.cfg.batch_size, rng)
        return pointwise_epoch(self.split.train, self.sampler, self.cfg.n_neg, self.cfg.batch_size, rng)

    def loss(self, model, batch: dict) -> torch.Tensor:
        return model.training_loss(batch)

    def evaluate(self, model, stage: str) -> dict:
        return evaluate_model(model, self.split, stage, self.cfg.ks, self.cfg.recall_denominator)


class RegressionTask:
    """Squared loss between a pair's score and its true score (a rating, a relevance), as MGQE adapts GMF.

    The model learns the standardised target ``z = (y - mean) / std`` (mean and std of the training scores),
    so one learning rate fits 1-5 stars and -100..100 relevances alike; its prediction is ``mean + std *
    score``, clipped to the training scores' range (as Surprise clips to the rating scale). The loss is
    ``mean_j (score_j - z_j)^2 + l2 * mean_j ||rows looked up for pair j||^2`` (+ the tables' auxiliary
    losses), the per-pair L2 of biased MF: a row is regularised as often as it is trained."""

    def __init__(self, cfg: RunConfig, split: Split):
        if split.train.ratings is None or len(split.train) == 0:
            raise QrecError(f"dataset {cfg.dataset!r} has no scores (ratings) to regress on; the regression task "
                            "needs rated pairs, e.g. ml-100k, ml-100k-i2i")
        self.cfg, self.split = cfg, split
        y = split.train.ratings.astype(np.float64)
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        self.low, self.high = float(y.min()), float(y.max())
        self.select_metric = cfg.select_metric if cfg.select_metric in REGRESSION_METRICS else "rmse"

    def batches(self, model, rng: np.random.Generator):
        return regression_epoch(self.split.train, self.cfg.batch_size, rng)

    def loss(self, model, batch: dict) -> torch.Tensor:
        scores, norms = model.score_and_norm(batch["users"], batch["items"])
        z = (batch["targets"] - self.mean) / self.std
        return F.mse_loss(scores, z) + self.cfg.l2 * norms.mean() + model.aux_loss()

    def predict(self, model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted scores on the data's scale (eval mode: quantized tables as served)."""
        return (self.mean + self.std * model.score(users, items).double()).clamp(self.low, self.high)

    @torch.no_grad()
    def evaluate(self, model, stage: str) -> dict:
        if stage not in ("valid", "test"):
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        part = self.split.valid if stage == "valid" else self.split.test
        was_training = model.training
        model.eval()
        model.refresh()
        try:
            return evaluate_regression(lambda u, i: self.predict(model, u, i), part.users.astype(np.int64),
                                       part.items.astype(np.int64), part.ratings, device=model.device)
        finally:
            model.train(was_training)


def make_task(cfg: RunConfig, split: Split) -> RankingTask | RegressionTask:
    if cfg.task not in TASKS:
        raise QrecError(f"unknown task {cfg.task!r}; choose one of {', '.join(TASKS)}")
    return RegressionTask(cfg, split) if cfg.task == "regression" else RankingTask(cfg, split)
