"""Popularity: every user is recommended the items with the most training interactions, their own seen
items masked. Nothing is learned; it is the floor any model, compressed or not, has to clear."""

from __future__ import annotations

import numpy as np
import torch

from qrec.models.base import Recommender


class Popularity(Recommender):
    """Scores item ``i`` by its training count, for every user (ties: the lower item index first)."""

    loss_kind = "none"  # no batches: ``fit`` runs its epochs as no-ops and evaluates

    def __init__(self, n_users: int, item_counts):
        counts = torch.as_tensor(np.asarray(item_counts), dtype=torch.float32).reshape(-1)
        super().__init__(n_users, len(counts))
        self.register_buffer("counts", counts)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        users, items = torch.broadcast_tensors(users, items)
        return self.counts[items]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(users), -1)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise RuntimeError("the popularity model has nothing to train")

    # served form: the counts and the number of users, through the same path as the graph models
    def export(self) -> dict[str, torch.Tensor]:
        return {"item_counts": self.counts.detach().cpu().contiguous()}

    def serving_meta(self) -> dict:
        return {"n_users": self.n_users}

    def serving_bits(self) -> int:
        return 32 * self.n_items

    def full_bits(self) -> int:
        return 32 * self.n_items
