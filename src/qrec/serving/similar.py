"""Item-to-item similarity from a served model's own item representations: cosine, scored from the codes.

The inner products come from the same code kernels that score users (product-quantization lookups for DPQ /
MGQE tables, popcount for sign codes, integer dot products for b-bit codes); only the norms are computed once
(for sign codes in closed form: a +-1 vector of d bits scaled by ``s`` has norm ``s sqrt(d)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from qrec.errors import QrecError
from qrec.retrieval.topk import masked_topk
from qrec.retrieval.hamming import BinaryCodes

_CHUNK = 65536  # rows decoded at a time for the norms: bounded memory on a million-item catalogue


@dataclass
class ItemSpace:
    """``dots(rows)``: inner products ``(len(rows), n)`` of those items with every item; ``norms``: ``(n,)``."""

    dots: Callable[[torch.Tensor], torch.Tensor]
    norms: torch.Tensor

    @classmethod
    def of(cls, scorer) -> "ItemSpace":
        from qrec.models.gmf import GMF
        from qrec.models.sasrec import SASRec
        from qrec.models.served import CodesServed, FloatServed

        if isinstance(scorer, (GMF, SASRec)):  # their one item table
            table = scorer.item_table
            return cls(lambda rows: table.scores(table(rows)), _norms(table, table.num_embeddings))
        if isinstance(scorer, FloatServed):  # a float LightGCN's final embeddings
            items = scorer.items
            return cls(lambda rows: items[rows] @ items.T, items.norm(dim=1))
        if isinstance(scorer, CodesServed):  # BinaryCodes / IntCodes of a quantized GCN
            items, backend = scorer.items, scorer.backend
            if isinstance(items, BinaryCodes):
                norms = items.scales.float().pow(2).sum(1).mul(items.dim).sqrt()
            else:
                norms = _norms(lambda rows: items[rows].decode(), len(items))
            return cls(lambda rows: items[rows].score(items, backend=backend), norms)
        raise QrecError(f"{type(scorer).__name__} has no item embeddings to compare (similar_items needs one item "
                        "table: GMF, SASRec or a graph model)")

    @torch.no_grad()
    def nearest(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``k`` most similar other items by cosine: ``(items, scores)``, ``(B, k)``."""
        index = torch.from_numpy(rows)
        scale = self.norms[index][:, None] * self.norms[None, :]
        cosine = self.dots(index).float() / scale.clamp_min(1e-30)
        itself = sp.csr_matrix((np.ones(len(rows), np.float32), (np.arange(len(rows)), rows)),
                               shape=(len(rows), len(self.norms)))
        top, scores = masked_topk(cosine.contiguous(), k, itself)
        return top.numpy(), scores.numpy()


def _norms(rows_of, n: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([rows_of(torch.arange(a, min(a + _CHUNK, n))).float().norm(dim=1) for a in range(0, n, _CHUNK)])
