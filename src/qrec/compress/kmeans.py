"""Product k-means: the codebooks of DPQ / MGQE fitted to a *trained* float table (post-training PQ).

Lloyd's algorithm in every subspace at once: assign each sub-vector to its nearest centroid with the exact
kernels of ``qrec.compress.nearest`` (ties to the lowest index), move each centroid to the mean of its
members, repeat. Distortion never increases from one iteration to the next (both steps can only lower it),
which a test checks. A centroid left without members keeps its place. ``fixed``: the first ``K0`` centroids
of every subspace are given and never move (MGQE's shared codebook: the tail's ``K2`` centroids are fitted
first, on the tail rows, and the head's extra ``K1 - K2`` around them).
"""

from __future__ import annotations

import torch

from qrec.compress.nearest import nearest_codes
from qrec.quant.vector import check_vector_code, on_int8_grid, row_step

#: blocks of the rows that ``shared_codebook``'s k-means sees (a seeded sample: all of a million-node table is no better)
SHARED_FIT_SAMPLE = 400_000


def distortion(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum of squared distances (float64) of sub-vectors ``x (N, D, s)`` to their nearest centroid."""
    codes = nearest_codes(x, centroids)
    picked = centroids.double()[torch.arange(centroids.shape[0]), codes]  # (N, D, s)
    return float((x.double() - picked).square().sum())


def product_kmeans(x: torch.Tensor, K: int, iters: int = 25, seed: int = 0,
                   fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Centroids ``(D, K, s)`` for sub-vectors ``x (N, D, s)``; the first ``fixed.shape[1]`` are ``fixed``.

    Init: distinct random rows of ``x`` (seeded; the same rows in every subspace), so no centroid starts away
    from the data; with fewer rows than free centroids the extra centroids repeat rows (they tie, and ties go
    to the lowest index, so the repeats stay empty and harmless)."""
    N, D, s = x.shape
    x = x.detach().float()
    K0 = 0 if fixed is None else fixed.shape[1]
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(N, generator=gen)[: K - K0]
    if rows.numel() < K - K0:
        rows = rows.repeat(-(-(K - K0) // max(rows.numel(), 1)))[: K - K0]
    start = x[rows].transpose(0, 1)  # (D, K - K0, s)
    centroids = start if fixed is None else torch.cat([fixed.detach().float(), start], dim=1)
    centroids = centroids.contiguous()
    flat_x = x.transpose(0, 1).reshape(D * N, s)  # subspace-major
    offset = (torch.arange(D) * K).unsqueeze(1)
    for _ in range(iters):
        codes = nearest_codes(x, centroids)  # (N, D)
        slot = (codes.T + offset).reshape(-1)  # (D N): index into the flattened (D K) centroids
        sums = torch.zeros(D * K, s, dtype=torch.float64).index_add_(0, slot, flat_x.double())
        counts = torch.bincount(slot, minlength=D * K).unsqueeze(1)
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centroids.reshape(D * K, s).double())
        moved = moved.float().reshape(D, K, s)
        if K0:
            moved[:, :K0] = centroids[:, :K0]
        if torch.equal(moved, centroids):
            break
        centroids = moved
    return centroids


@torch.no_grad()
def shared_codebook(rows: torch.Tensor, bits: int, vector_dim: int, seed: int = 0, iters: int = 25) -> torch.Tensor:
    """One ``(2^(b s), s)`` codebook for every ``s``-block of ``rows`` (``qrec.quant.vector``): k-means of a seeded
    sample of the unit-RMS rows' blocks, the codewords then put on the int8 grid."""
    check_vector_code(bits, vector_dim, rows.shape[1])
    u = rows.float() / row_step(rows.float())
    blocks = u.reshape(-1, 1, vector_dim)
    pick = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))[:SHARED_FIT_SAMPLE]
    return on_int8_grid(product_kmeans(blocks[pick], 2 ** (bits * vector_dim), iters=iters, seed=seed)[0])
