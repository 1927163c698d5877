"""GMF (He et al., WWW 2017): score = h . (p_u * q_i) + b, with a learned output weight h (+ b_u + b_i with
per-row biases, for the regression task)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from qrec.compress.base import EmbeddingTable
from qrec.models.base import Recommender, RowBiases, squared_norms


class GMF(Recommender):
    """Generalised matrix factorisation over any user/item ``EmbeddingTable`` pair.

    Trained pointwise with binary cross-entropy (each positive plus sampled negatives), as in NCF.
    The output layer is NCF's ``Dense(1)`` on the element-wise product (lecun-uniform weight, zero bias).
    ``row_bias`` adds a float bias per user and per item (``RowBiases``), as biased MF has for ratings.
    """

    loss_kind = "pointwise"

    def __init__(self, user_table: EmbeddingTable, item_table: EmbeddingTable, row_bias: bool = False):
        super().__init__(user_table.num_embeddings, item_table.num_embeddings)
        if user_table.dim != item_table.dim:
            raise ValueError(f"user and item tables must share d, got {user_table.dim} and {item_table.dim}")
        self.user_table = user_table
        self.item_table = item_table
        self.output = nn.Linear(user_table.dim, 1)
        _lecun_uniform_(self.output)
        self.biases = RowBiases(self.n_users, self.n_items) if row_bias else None

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_and_norm(users, items)[0]

    def score_and_norm(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the pairs and the squared L2 norm of what each looked up (embedding rows, row biases):
        the regression task's per-pair L2 penalty, computed from the same lookups as the score."""
        p, q = self.user_table(users), self.item_table(items)
        scores, norms = self.output(p * q).squeeze(-1), squared_norms(p, q)
        if self.biases is not None:
            offset, bias_norm = self.biases(users, items)
            scores, norms = scores + offset, norms + bias_norm
        return scores, norms

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        scores = self.item_table.scores(self._queries(users)) + self.output.bias
        return scores if self.biases is None else scores + self.biases.all_items(users)

    @torch.no_grad()
    def topk(self, users: torch.Tensor, k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ranked by the item table itself: a served DPQ / MGQE table keeps a running top-k over its codes
        (with per-item biases, the generic ranking of ``score_all``)."""
        if self.biases is not None:
            return super().topk(users, k, exclude)
        return self.item_table.topk(self._queries(users), k, exclude, offset=float(self.output.bias))

    def ranks_in_blocks(self) -> bool:
        return self.biases is None and self.device.type == "cpu"  # the item table's blocked or fused top-k

    def _queries(self, users: torch.Tensor) -> torch.Tensor:
        # h . (p_u * q_i) = (p_u * h) . q_i: one (B x d) @ (d x n) product scores every item.
        return self.user_table(users) * self.output.weight[0]

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return pointwise_bce(self, batch)


def pointwise_bce(model: Recommender, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean binary cross-entropy of the pairs' logits plus the tables' auxiliary losses."""
    logits = model.score(batch["users"], batch["items"])
    return F.binary_cross_entropy_with_logits(logits, batch["labels"]) + model.aux_loss()


def _lecun_uniform_(layer: nn.Linear) -> None:
    """Keras' lecun_uniform (NCF's choice): U(-sqrt(3/fan_in), sqrt(3/fan_in)), zero bias."""
    bound = (3.0 / layer.in_features) ** 0.5
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
