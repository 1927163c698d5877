"""Low-rank factorisation ``W = P Q`` (MGQE paper section 3.2, baseline LRF): ``lr<r>``.

Training and serving hold ``P`` (n x r) and ``Q`` (r x d) as float32: ``32 n r + 32 r d`` bits (Table 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qrec.compress.base import EmbeddingTable


def lowrank_bits(n: int, d: int, r: int) -> int:
    """Serving size of ``lr<r>``: ``32 (n r + r d)`` bits."""
    return 32 * (n * r + r * d)


class LowRankEmbedding(EmbeddingTable):
    """Row ``i`` is ``P[i] @ Q``; both factors train end to end.

    Init: ``P, Q ~ N(0, s^2)`` with ``s = sqrt(init_std / sqrt(r))``, so each entry of ``P Q`` is a sum of
    ``r`` products with variance ``r s^4 = init_std^2``: rows start with the same per-entry variance as a
    full table. Equal scales for both factors keep their gradients balanced (neither factor dominates).
    """

    family = "lr"

    def __init__(self, num_embeddings: int, dim: int, rank: int, init_std: float = 0.01):
        super().__init__(num_embeddings, dim)
        if rank <= 0:
            raise ValueError(f"rank must be positive, got {rank}")
        self.rank = int(rank)
        scale = math.sqrt(init_std / math.sqrt(rank))
        self.P = nn.Parameter(torch.randn(num_embeddings, rank) * scale)
        self.Q = nn.Parameter(torch.randn(rank, dim) * scale)

    @classmethod
    def from_float(cls, weight: torch.Tensor, rank: int) -> "LowRankEmbedding":
        """Post-training LRF: the best rank-``r`` approximation of a trained table (truncated SVD,
        Eckart-Young), split as ``P = U_r S_r^(1/2)``, ``Q = S_r^(1/2) V_r^T``."""
        weight = weight.detach().float()
        table = cls.blank(weight.shape[0], weight.shape[1], rank)
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        k = min(rank, s.numel())  # rank may exceed min(n, d): the extra factors stay zero
        root = s[:k].sqrt()
        p = torch.zeros(weight.shape[0], rank, device=weight.device)
        q = torch.zeros(rank, weight.shape[1], device=weight.device)
        p[:, :k], q[:k] = u[:, :k] * root, root[:, None] * vh[:k]
        with torch.no_grad():
            table.P.copy_(p)
            table.Q.copy_(q)
        return table.to(weight.device)

    @property
    def spec(self) -> str:
        return f"lr{self.rank}"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # one (B, r) @ (r, d) product whatever the shape of ids ((B, L) ids are flattened first)
        flat = self.P[ids.reshape(-1)] @ self.Q
        return flat.reshape(*ids.shape, self.dim)

    def all(self) -> torch.Tensor:
        return self.P @ self.Q

    def export(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in (("P", self.P), ("Q", self.Q))}

    @classmethod
    def decode_export(cls, tensors, num_embeddings, dim, spec):
        return tensors["P"].float() @ tensors["Q"].float()
