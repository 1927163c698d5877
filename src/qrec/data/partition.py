"""Frequency ranking and head/tail partitions (MGQE gives head rows more centroids than tail rows)."""

from __future__ import annotations

import math

import numpy as np


def frequency_rank(counts: np.ndarray) -> np.ndarray:
    """Row ids ordered from most to least frequent; equal counts keep ascending id order (stable)."""
    counts = np.asarray(counts)
    return np.argsort(-counts, kind="stable")


def head_size(n: int, fraction: float | None = None, count: int | None = None) -> int:
    """Number of head rows: ``ceil(fraction * n)`` or an explicit ``count``, clipped to ``[0, n]``."""
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction or count")
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"head fraction must be in [0, 1], got {fraction}")
        # round() first so that 0.1 * 3416 = 341.6000000000000005 does not become 342 by float noise
        return min(n, math.ceil(round(fraction * n, 9)))
    if count < 0:
        raise ValueError(f"head count must be >= 0, got {count}")
    return min(n, int(count))


def head_mask(counts: np.ndarray, fraction: float | None = None, count: int | None = None) -> np.ndarray:
    """Boolean mask of the head: the ``head_size`` most frequent rows (ties broken by lower id)."""
    counts = np.asarray(counts)
    k = head_size(len(counts), fraction, count)
    mask = np.zeros(len(counts), dtype=bool)
    mask[frequency_rank(counts)[:k]] = True
    return mask


def group_ids(counts: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Group index per row for a multi-tier partition: the first ``sizes[0]`` most frequent rows are
    group 0, the next ``sizes[1]`` group 1, ...; rows beyond ``sum(sizes)`` go to the last group."""
    counts = np.asarray(counts)
    if any(s < 0 for s in sizes) or not sizes:
        raise ValueError(f"group sizes must be non-negative and non-empty, got {sizes}")
    groups = np.full(len(counts), len(sizes) - 1, dtype=np.int64)
    order = frequency_rank(counts)
    start = 0
    for g, s in enumerate(sizes):
        groups[order[start : start + s]] = g
        start += s
    return groups
