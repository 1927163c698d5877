"""Inner products of queries with product-quantized rows, straight from the codes (DPQ / MGQE serving).

A served DPQ / MGQE table is ``codes (n, D)`` into a codebook ``C (D, K, s)`` (``d = D s``): row ``i`` stands for
``[c^(1)_{codes[i,1]}; ...; c^(D)_{codes[i,D]}]``. A server never needs that float row; two exact ways to
score a block of queries ``Q (B, d)`` against all ``n`` rows:

* ``"lut"`` (asymmetric distance computation, as FAISS's IndexPQ): one lookup table per query,
  ``T[b, j, k] = q_b^(j) . c^(j)_k`` (``B D K s`` multiply-adds, independent of ``n``), then each score is
  the sum of ``D`` table entries: ``D`` adds per (query, row) instead of ``d`` multiply-adds. A compiled loop
  on the CPU keeps the tables ``(D, K, b)`` so the adds run across a block of ``b`` queries (contiguous,
  vectorised); ``b`` is as large as keeps the block's tables within ``LUT_BYTES`` (``lut_queries``).
* ``"decode"``: decode ``DECODE_ROWS`` rows at a time to float32 and multiply (BLAS), so the float table is
  never held whole. ``d`` multiply-adds per pair, at GEMM speed.

Both equal the float64 reference up to float32 rounding (tests).

``"auto"`` picks ``lut`` when each code stands for ``s >= LUT_MIN_WIDTH`` dimensions on the CPU (it then does
``s`` times fewer operations than the GEMM) and ``decode`` otherwise (BLAS wins when codes are narrow:
``lut`` is 0.5x the float table at ``s = 1``); BENCHMARKS.md, "Serving DPQ / MGQE from codes".

``pq_topk`` never holds the ``(B, n)`` score matrix. On the CPU its ``"auto"`` is ``lut`` whatever the width:
one compiled pass over the codes scores 64 queries side by side from their tables and keeps a running top-k
per query (``kernels.scan_topk_pq``; rows in parallel parts, ``qrec.retrieval.fused``); most rows then cost a
table sum and one vector compare. It is 4-9x FAISS's IndexPQ on the same codes at D = 8 and 16
(BENCHMARKS.md, "Retrieval from codes against FAISS"). ``decode`` keeps a running top-k over GEMM blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from qrec.retrieval.topk import blocked_topk, masked_topk

__all__ = ["pq_scores", "pq_topk", "lookup_tables", "lut_queries", "DECODE_ROWS", "TOPK_ROWS", "LUT_BYTES", "LUT_MIN_WIDTH"]

DECODE_ROWS = 1 << 15  # rows decoded per GEMM: 8 MiB of float32 at d = 64
TOPK_ROWS = 1 << 15    # rows scored per block of pq_topk: 32 MiB of scores for 256 queries
LUT_BYTES = 1 << 22    # lookup tables per query block: 4 MiB (64 queries at D = 64, K = 256; 256 at D <= 16)
LUT_MIN_WIDTH = 8      # "auto": the table scan from 8 dimensions per code (BENCHMARKS.md)


def lookup_tables(queries: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``T[b, j, k] = q_b^(j) . c^(j)_k`` for ``queries (B, D s)`` and ``codebook (D, K, s)``: ``(B, D, K)``."""
    D, K, s = codebook.shape
    q = queries.reshape(queries.shape[0], D, s).transpose(0, 1)       # (D, B, s)
    return torch.bmm(q, codebook.transpose(1, 2)).transpose(0, 1)      # (B, D, K)


def pq_scores(queries: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """``queries (B, d) @ decoded.T`` as ``(B, n)`` float32, without holding the decoded ``(n, d)`` table.

    ``codes``: ``(n, D)`` integers (uint8 / int16 / int32 / int64) into ``codebook (D, K, s)``."""
    D, K, s = codebook.shape
    if codes.dim() != 2 or codes.shape[1] != D or queries.shape[-1] != D * s:
        raise ValueError(f"codes {tuple(codes.shape)} and queries {tuple(queries.shape)} do not fit a "
                         f"{D} x {K} x {s} codebook")
    queries, codebook = queries.float(), codebook.float().to(queries.device)
    if method == "auto":
        method = "lut" if s >= LUT_MIN_WIDTH and queries.device.type == "cpu" else "decode"
    if method == "lut":
        return _scan_lut(queries, codes, codebook)
    if method == "decode":
        return _decode_gemm(queries, codes.to(queries.device), codebook)
    raise ValueError(f"unknown pq scoring method {method!r}; expected 'auto', 'lut' or 'decode'")


def pq_topk(queries: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor, k: int, exclude=None,
            method: str = "auto", offset: float = 0.0, n_threads: int | None = None,
            parts: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's ``k`` best rows by ``pq_scores + offset``, without the ``(B, n)`` score matrix (CPU).

    ``"lut"`` (``"auto"``'s choice on the CPU): one compiled pass over the codes scores blocks of queries side by
    side (SIMD) from their lookup tables and keeps a running top-``k`` per query (``kernels.scan_topk_pq``, rows
    in parallel parts, ``qrec.retrieval.fused``); each score is ``pq_scores(..., "lut")``'s float32 sum, bit for
    bit. ``"decode"``: rows decoded and multiplied ``TOPK_ROWS`` at a time, merged into the running top-k.
    ``exclude``: a ``(B, n)`` scipy sparse matrix of rows to mask (the seen items). Returns ``(indices int64
    (B, k), values float32 (B, k))`` ordered exactly as ``qrec.retrieval.topk.masked_topk`` orders the masked
    score matrix (score descending, then row index; masked rows fill a query's tail only when fewer than ``k``
    remain). Off the CPU: score, then ``masked_topk``. ``n_threads`` / ``parts``: the fused scan's threads and
    item parts (``qrec.retrieval.fused.fused_topk``; the result depends on neither)."""
    n, B = codes.shape[0], queries.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] rows, got {k}")
    if queries.device.type != "cpu":
        return masked_topk(pq_scores(queries, codes, codebook, method) + offset, k, exclude)
    D, K, s = codebook.shape
    if codes.dim() != 2 or codes.shape[1] != D or queries.shape[-1] != D * s:
        raise ValueError(f"codes {tuple(codes.shape)} and queries {tuple(queries.shape)} do not fit a "
                         f"{D} x {K} x {s} codebook")
    queries, codebook = queries.float(), codebook.float()
    if method == "auto":
        method = "lut"
    if method == "lut":
        return _fused_lut_topk(queries, codes, codebook, k, exclude, offset, n_threads, parts)
    if method != "decode":
        raise ValueError(f"unknown pq scoring method {method!r}; expected 'auto', 'lut' or 'decode'")

    def block(lo: int, hi: int) -> torch.Tensor:
        scores = _decode_gemm(queries, codes[lo:hi], codebook)
        return scores.add_(offset) if offset else scores  # in float32, as ``scores + bias`` is

    return blocked_topk(block, n, B, k, exclude, TOPK_ROWS)


def _fused_lut_topk(queries, codes, codebook, k, exclude, offset, n_threads, parts):
    from qrec.retrieval.fused import fused_topk, lanes_for, pad_blocks
    from qrec.retrieval.kernels import scan_topk_pq

    D, K = codebook.shape[:2]
    B = queries.shape[0]
    tables = np.empty((B, D * K), np.float32)
    step = lut_queries(D, K)
    for start in range(0, B, step):  # the very tables (same blocks) pq_scores' scan sums
        tables[start:start + step] = lookup_tables(queries[start:start + step], codebook).reshape(-1, D * K).numpy()
    codes_np = codes.contiguous().numpy()
    return fused_topk(scan_topk_pq, (pad_blocks(tables, lanes_for(B)), codes_np, float(offset)), B, codes.shape[0], k,
                      codes_np.itemsize * D, exclude, n_threads, parts)


def gather_centroids(centroids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``out[b] = [c^(1)_{codes[b,1]}; ...; c^(D)_{codes[b,D]}]``, ``(B, d)``; differentiable in ``centroids``.

    One ``index_select`` on the flattened ``(D K, s)`` codebook: its backward is an ``index_add`` (advanced
    indexing's is a sort-based ``index_put``, several times slower on the CPU)."""
    D, K, s = centroids.shape
    flat = (codes + K * torch.arange(D, device=codes.device)).reshape(-1)
    return select_rows(centroids.reshape(D * K, s), flat).reshape(codes.shape[0], D * s)  # 0 rows too


def select_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows[index]`` of a 2-D table. One-float rows (scalar subspaces, the paper's D = d) are selected from
    the 1-D view: torch's CPU ``index_select`` of 1-wide rows takes a slow path, 6-9x slower for the
    ~60K codes of a training step (same values, exactly)."""
    if rows.shape[1] == 1:
        return rows.reshape(-1).index_select(0, index).unsqueeze(1)
    return rows.index_select(0, index)


def _decode_gemm(queries: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    out = queries.new_empty(queries.shape[0], codes.shape[0])
    for start in range(0, codes.shape[0], DECODE_ROWS):
        block = codes[start:start + DECODE_ROWS].long()
        torch.mm(queries, gather_centroids(codebook, block).T, out=out[:, start:start + block.shape[0]])
    return out


def _scan_lut(queries: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The table scan: a compiled loop on the CPU (rows in parallel), a gather-and-sum elsewhere."""
    D, K = codebook.shape[:2]
    if queries.device.type != "cpu":  # gather-and-sum, in row blocks of at most 2^24 gathered entries
        tables = lookup_tables(queries, codebook).reshape(len(queries), D * K)
        offsets = K * torch.arange(D, device=queries.device)
        rows = max(1, (1 << 24) // (len(queries) * D))
        return torch.cat([tables[:, (block.to(queries.device).long() + offsets).reshape(-1)]
                          .reshape(len(queries), -1, D).sum(-1) for block in codes.split(rows)], dim=1)
    from qrec.retrieval.kernels import lut_scan

    codes_np = codes.contiguous().numpy()
    out = np.empty((queries.shape[0], codes.shape[0]), dtype=np.float32)
    step = lut_queries(D, K)
    for start in range(0, queries.shape[0], step):
        tables = lookup_tables(queries[start:start + step], codebook).permute(1, 2, 0).contiguous()  # (D, K, b)
        lut_scan(tables.numpy(), codes_np, out, start)
    return torch.from_numpy(out)


def lut_queries(D: int, K: int) -> int:
    """Queries per lookup-table block: as many as keep the block's ``D K b`` floats within ``LUT_BYTES`` (each
    code read then serves more queries), from 8 to 256 (measured: BENCHMARKS.md)."""
    return int(min(256, max(8, LUT_BYTES // (4 * D * K))))
