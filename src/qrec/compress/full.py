"""Full-precision float32 table: the baseline every compressor is measured against."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from qrec.compress.base import EmbeddingTable


class FullEmbedding(EmbeddingTable):
    """A plain ``n x d`` float32 table, initialised N(0, init_std^2) (MGQE/NCF use std 0.01)."""

    family = "full"

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.01, weight: torch.Tensor | None = None):
        """``weight``: a float32 ``(num_embeddings, dim)`` tensor the table holds as it is (no initialisation,
        no copy: a served table); else ``N(0, init_std^2)``."""
        super().__init__(num_embeddings, dim)
        if weight is not None:
            if weight.shape != (num_embeddings, dim) or weight.dtype != torch.float32:
                raise ValueError(f"weight must be float32 {num_embeddings} x {dim}, got {weight.dtype} {tuple(weight.shape)}")
            self.weight = nn.Parameter(weight, requires_grad=False)
            return
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim))
        nn.init.normal_(self.weight, std=init_std)

    @classmethod
    def from_float(cls, weight: torch.Tensor) -> "FullEmbedding":
        """A copy of a trained table."""
        table = cls.blank(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            table.weight.copy_(weight.detach())
        return table

    @property
    def spec(self) -> str:
        return "full"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.sparse_grad:
            return F.embedding(ids, self.weight, sparse=True)
        return self.weight[ids]

    def all(self) -> torch.Tensor:
        return self.weight

    def export(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.detach().to("cpu", torch.float32).contiguous()}

    @classmethod
    def decode_export(cls, tensors, num_embeddings, dim, spec):
        return tensors["weight"].float()
