"""The driver of the fused scan + top-k kernels (``kernels.scan_topk_sign`` / ``scan_topk_pq``): query blocks,
item parts, threads, and the merge of the parts' top-k lists.

Items are cut into contiguous parts scanned in parallel (numba threads), each keeping its own top-k per query,
merged at the end in item order (``kernels.merge_parts``): the result is exactly
``qrec.retrieval.topk.masked_topk`` of the full score matrix, whatever the number of parts or threads.
Queries are grouped in blocks of ``lanes_for(B)`` lanes, the last block padded (its padding lanes never enter
a top-k).
"""

from __future__ import annotations

import numpy as np
import torch

from qrec.retrieval.topk import sorted_csr

__all__ = ["CHUNK_BYTES", "PART_ROWS", "LANES", "fused_topk", "lanes_for", "pad_blocks"]

CHUNK_BYTES = 1 << 17  # codes of one chunk (read once for every query block): 128 KiB, within L2
PART_ROWS = 1 << 14    # at least this many items per parallel part (a part's start and merge cost ~k per query)
LANES = 64             # queries per block: four AVX-512 vectors of float32 scores per item


def lanes_for(n_queries: int) -> int:
    """Queries per block: ``LANES``, or fewer for a small batch, which would mostly pad (a multiple of 8, one
    AVX vector; below 8 queries, exactly one lane each: a lone query is scored without padding)."""
    if n_queries < 8:
        return max(1, n_queries)
    return int(min(LANES, -(-n_queries // 8) * 8))


def pad_blocks(x: np.ndarray, lanes: int) -> np.ndarray:
    """``x (B, ...)`` -> ``(ceil(B / lanes), ..., lanes)``: queries block-major, ``lanes`` contiguous per block,
    zero padding."""
    B = x.shape[0]
    nb = max(1, -(-B // lanes))
    padded = np.zeros((nb * lanes, *x.shape[1:]), dtype=x.dtype)
    padded[:B] = x
    order = (0, *range(2, x.ndim + 1), 1)
    return np.ascontiguousarray(padded.reshape(nb, lanes, *x.shape[1:]).transpose(order))


def fused_topk(kernel, args: tuple, n_queries: int, n_items: int, k: int, row_bytes: int, exclude=None,
               n_threads: int | None = None, parts: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``kernel(*args, k, nq, indptr, excluded, bounds, chunk, part_i, part_v, part_f)`` over item parts and
    merge: ``(indices int64 (B, k), values float32 (B, k))``. ``row_bytes``: the bytes of one item's codes
    (sets the chunk); ``parts``: item parts (default: 8 per thread, each at least ``PART_ROWS`` items; one on one
    thread)."""
    import numba

    from qrec.retrieval.kernels import merge_parts

    if not 1 <= k <= n_items:
        raise ValueError(f"k must be in [1, n_items={n_items}], got {k}")
    B = n_queries
    if exclude is None:
        indptr, excluded = np.zeros(B + 1, np.int64), np.zeros(0, np.int64)
    else:
        indptr, excluded = sorted_csr(exclude, B)
    threads = max(1, min(n_threads or torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if parts is None:  # one thread: one part (each part warms up its own thresholds, ~10% at 1M items)
        parts = 1 if threads == 1 else max(1, min(8 * threads, n_items // PART_ROWS))
    parts = min(parts, n_items)
    bounds = np.linspace(0, n_items, parts + 1).astype(np.int64)
    part_i = np.zeros((parts, B, k), np.int64)
    part_v = np.full((parts, B, k), -np.inf, np.float32)
    part_f = np.zeros((parts, B), np.int64)
    chunk = max(1, CHUNK_BYTES // max(1, row_bytes))
    top_i, top_v = np.zeros((B, k), np.int64), np.full((B, k), -np.inf, np.float32)
    if B == 0:
        return torch.from_numpy(top_i), torch.from_numpy(top_v)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    # parts handed out one at a time (dynamic scheduling): a thread the other jobs of a shared machine
    # hold back takes fewer parts instead of leaving the others to wait for its fixed share
    chunksize = numba.set_parallel_chunksize(1)
    try:
        kernel(*args, k, B, indptr, excluded, bounds, chunk, part_i, part_v, part_f)
    finally:
        numba.set_parallel_chunksize(chunksize)
        numba.set_num_threads(before)
    merge_parts(part_i, part_v, part_f, top_i, top_v)
    return torch.from_numpy(top_i), torch.from_numpy(top_v)
