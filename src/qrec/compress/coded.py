"""A DPQ / MGQE table as a server holds it: the codes and codebooks of the artifact, never the float rows.

``load_model`` serves DPQ and MGQE tables with ``CodedEmbedding``: lookups decode only the rows asked for,
and ``scores(queries)`` (what GMF's and SASRec's ``score_all`` call) computes the inner products with every
row from the codes (``qrec.retrieval.pqscan``). Codes are held one integer each: DPQ's 8-bit codes are the
artifact's packed bytes used in place; narrower codes (MGQE's 6-bit tail) are widened to a byte once at load.

A table is a list of ``CodedPart``s, one per codebook and row set: DPQ and shared-centroid MGQE are one part
over all rows (a tail row's codes index the first ``K_2`` centroids of the one codebook); the unshared MGQE
variants one part per frequency group (its rows, their codes and the group's own codebook). The source class
(``DPQEmbedding``, ``MGQEEmbedding``) says how its export splits into parts (``coded_parts``) and decodes
through the same parts, so the float table a trained model evaluates and the codes a server scores cannot
disagree.

A small table (decoded, at most ``DECODED_BYTES``) scored with ``method="auto"`` keeps its decoded rows once,
beside the codes: a query then costs one matrix-vector product instead of decoding every row again (ML-1M's
3,416-item MGQE table: 0.44 ms -> 0.05 ms a user, BENCHMARKS.md "Serving over HTTP"). The artifact and
``serving_bits`` are still the codes; a large catalogue is scored from its codes alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qrec.compress.base import EmbeddingTable
from qrec.quant.packing import unpack_bits
from qrec.retrieval.pqscan import gather_centroids, pq_scores, pq_topk
from qrec.retrieval.topk import masked_topk, merged_topk

__all__ = ["CodedEmbedding", "CodedPart", "decode_parts", "narrow_codes", "DECODED_BYTES"]

DECODED_BYTES = 8 << 20  # float32 rows a served table keeps decoded, at most (ML-1M's items: 0.9 MiB)


@dataclass
class CodedPart:
    """Rows ``rows`` (ascending; None: all rows in order) stand for ``codebook``'s centroids at ``codes``."""

    rows: torch.Tensor | None   # (m,) int64
    codes: torch.Tensor         # (m, D) uint8 / int16 / int32
    codebook: torch.Tensor      # (D, K, d / D) float32

    def decode(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Float rows of this part (all, or those at ``positions`` within it)."""
        codes = self.codes if positions is None else self.codes[positions]
        return gather_centroids(self.codebook, codes.long())


def narrow_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """``count`` codes of ``bits`` bits in the smallest integer type: the packed bytes themselves at 8 bits."""
    if bits == 8:
        return packed[:count]
    dtype = torch.uint8 if bits < 8 else torch.int16 if bits < 16 else torch.int32
    return unpack_bits(packed, bits, count, dtype)


def decode_parts(parts: list[CodedPart], num_embeddings: int, dim: int) -> torch.Tensor:
    """The ``(n, dim)`` float table the parts stand for."""
    if parts[0].rows is None:  # one part over all rows
        return parts[0].decode()
    table = torch.empty(num_embeddings, dim, dtype=torch.float32)
    for part in parts:
        table[part.rows] = part.decode()
    return table


class CodedEmbedding(EmbeddingTable):
    """A served, read-only DPQ / MGQE table over an artifact's tensors (see the module docstring)."""

    def __init__(self, source: type, tensors: dict[str, torch.Tensor], num_embeddings: int, dim: int, spec: str,
                 method: str = "auto"):
        super().__init__(num_embeddings, dim)
        self.source, self._spec, self.method = source, spec, method
        self.tensors = tensors  # as stored: export() returns them, so serving_bits() is the artifact's
        self.parts: list[CodedPart] = source.coded_parts(tensors, num_embeddings, dim, spec)
        if len(self.parts) > 1:  # row -> (part, position in it), for lookups of single rows
            self.part_of = torch.empty(num_embeddings, dtype=torch.int8)
            self.position = torch.empty(num_embeddings, dtype=torch.int32)
            for p, part in enumerate(self.parts):
                self.part_of[part.rows] = p
                self.position[part.rows] = torch.arange(len(part.rows), dtype=torch.int32)
        self._decoded = self.all() if 4 * num_embeddings * dim <= DECODED_BYTES else None

    @property
    def spec(self) -> str:
        return self._spec

    def decoded(self) -> torch.Tensor | None:
        """The decoded rows kept beside the codes (small tables, ``method="auto"``), else None."""
        return self._decoded if self.method == "auto" else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).cpu()
        if self.decoded() is not None:  # the very rows the codes decode to
            out = self._decoded.index_select(0, flat)
        elif len(self.parts) == 1:
            out = self.parts[0].decode(flat)
        else:
            out = torch.empty(flat.numel(), self.dim)
            which = self.part_of[flat]
            for p, part in enumerate(self.parts):
                hit = torch.nonzero(which == p).squeeze(1)
                out[hit] = part.decode(self.position[flat[hit]].long())
        return out.to(ids.device).reshape(*ids.shape, self.dim)

    def all(self) -> torch.Tensor:
        return decode_parts(self.parts, self.num_embeddings, self.dim)

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """``queries @ table.T`` from the codes, ``(B, n)``."""
        queries = queries.detach().float().cpu()
        if self.decoded() is not None:
            return queries @ self._decoded.T
        if self.parts[0].rows is None:
            return pq_scores(queries, self.parts[0].codes, self.parts[0].codebook, self.method)
        out = queries.new_empty(queries.shape[0], self.num_embeddings)
        for part in self.parts:
            out[:, part.rows] = pq_scores(queries, part.codes, part.codebook, self.method)
        return out

    def topk(self, queries: torch.Tensor, k: int, exclude=None, offset: float = 0.0):
        """One part over all rows (DPQ, shared-centroid MGQE): scored block by block into a running top-k
        (``pq_topk``), never the whole score matrix; several parts: score, then rank. A table kept decoded: one
        product, then the compiled top-k merge."""
        if self.decoded() is not None:
            return merged_topk(self.scores(queries) + offset, k, exclude)  # + offset in float32, as pq_topk adds it
        if self.parts[0].rows is not None:
            return masked_topk(self.scores(queries) + offset, k, exclude)
        part = self.parts[0]
        return pq_topk(queries.detach().float().cpu(), part.codes, part.codebook, k, exclude, self.method, offset)

    def export(self) -> dict[str, torch.Tensor]:
        return self.tensors

    @classmethod
    def decode_export(cls, tensors, num_embeddings, dim, spec):
        raise TypeError("a CodedEmbedding decodes through its source class (DPQEmbedding / MGQEEmbedding)")
