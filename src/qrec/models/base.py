"""What every backbone provides: scores for pairs, scores for all items, and its serving size."""

from __future__ import annotations

import torch
from torch import nn

from qrec.compress.base import EmbeddingTable


class Recommender(nn.Module):
    """A model over ``n_users`` x ``n_items`` whose embeddings live in ``EmbeddingTable``s.

    Subclasses implement ``score`` (pairs -> logits, used in training) and ``score_all``
    (users -> logits over every item, used by full-ranking evaluation and serving).
    """

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.n_users = int(n_users)
        self.n_items = int(n_items)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def topk(self, users: torch.Tensor, k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(items, scores)``, ``(B, k)``: each user's ``k`` best items, ``exclude`` (a ``(B, n_items)`` scipy
        sparse matrix, e.g. the seen items) masked, ordered by score then item index. Code scorers override
        this with a fused kernel that never holds the score matrix."""
        from qrec.eval.ranking import masked_topk

        return masked_topk(self.score_all(users).clone(), k, exclude)

    def embedding_tables(self) -> dict[str, EmbeddingTable]:
        return {name: m for name, m in self.named_modules() if isinstance(m, EmbeddingTable)}

    def aux_loss(self) -> torch.Tensor:
        """Sum of the tables' auxiliary losses (e.g. DPQ centroid loss) from the last forward pass."""
        losses = [t.aux_loss() for t in self.embedding_tables().values()]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def dense_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters outside the embedding tables (MLP weights, output layer): kept float32 at serving."""
        inside = {id(p) for t in self.embedding_tables().values() for p in t.parameters()}
        return {n: p for n, p in self.named_parameters() if id(p) not in inside}

    def dense_bits(self) -> int:
        return sum(p.numel() * 32 for p in self.dense_parameters().values())

    def serving_bits(self) -> int:
        """Bits to store the whole served model: every table's serving form plus float32 dense weights."""
        return sum(t.serving_bits() for t in self.embedding_tables().values()) + self.dense_bits()

    def full_bits(self) -> int:
        """Bits of the same model with full float32 embedding tables (the 100% of MGQE's Table 3)."""
        return sum(t.full_bits() for t in self.embedding_tables().values()) + self.dense_bits()


class RowBiases(nn.Module):
    """One learned float32 bias per user row and per item row (biased MF's ``b_u + b_i``), zero-initialised.

    Used by the regression task: an absolute score needs per-row offsets that a ranking of one user's items
    ignores. They are dense parameters (served as float32, 32 bits per row, counted in the model size)."""

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.user = nn.Parameter(torch.zeros(n_users))
        self.item = nn.Parameter(torch.zeros(n_items))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b_u + b_i, b_u^2 + b_i^2)`` of each pair: the offset and its squared L2 norm."""
        bu, bi = self.user[users], self.item[items]
        return bu + bi, bu * bu + bi * bi

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        """``(B, n_items)`` offsets of every item for each user."""
        return self.user[users][:, None] + self.item[None, :]


def squared_norms(*rows: torch.Tensor) -> torch.Tensor:
    """Sum over the given ``(B, d)`` tensors of each pair's squared L2 norm, ``(B,)``."""
    return sum((r * r).sum(-1) for r in rows)
