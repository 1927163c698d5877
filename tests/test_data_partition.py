"""Frequency partitions (qrec.data.partition): exact head sizes and head/tail ordering."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.data.partition import frequency_rank, group_ids, head_mask, head_size

counts_strategy = st.lists(st.integers(0, 20), min_size=0, max_size=60).map(np.array)
FAST = settings(max_examples=80, deadline=None)


@FAST
@given(counts_strategy, st.floats(0.0, 1.0))
def test_head_mask_by_fraction(counts, fraction):
    mask = head_mask(counts, fraction=fraction)
    assert mask.sum() == head_size(len(counts), fraction) == min(len(counts), np.ceil(round(fraction * len(counts), 9)))
    if mask.any() and (~mask).any():
        assert counts[mask].min() >= counts[~mask].max()  # every head row at least as frequent


@FAST
@given(counts_strategy, st.integers(0, 80))
def test_head_mask_by_count(counts, count):
    mask = head_mask(counts, count=count)
    assert mask.sum() == min(count, len(counts))
    if mask.any() and (~mask).any():
        assert counts[mask].min() >= counts[~mask].max()


def test_ties_go_to_the_lower_id():
    counts = np.array([3, 5, 3, 3, 1])
    assert frequency_rank(counts).tolist() == [1, 0, 2, 3, 4]
    assert head_mask(counts, count=2).tolist() == [True, True, False, False, False]


def test_head_size_avoids_float_noise():
    assert head_size(3416, 0.1) == 342  # ceil(341.6); must not become 343 or 341
    assert head_size(100, 0.07) == 7  # 0.07 * 100 = 7.000000000000001 in floating point


def test_head_size_rejects_bad_arguments():
    for kwargs in ({}, {"fraction": 0.1, "count": 3}):
        with pytest.raises(ValueError, match="exactly one"):
            head_size(10, **kwargs)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        head_size(10, fraction=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        head_size(10, count=-1)


@FAST
@given(counts_strategy, st.lists(st.integers(0, 30), min_size=1, max_size=4))
def test_group_ids_sizes_and_order(counts, sizes):
    groups = group_ids(counts, sizes)
    assert groups.shape == counts.shape and groups.dtype == np.int64
    n, start = len(counts), 0
    for g, size in enumerate(sizes[:-1]):
        assert (groups == g).sum() == min(size, max(0, n - start))
        start += size
    assert (groups == len(sizes) - 1).sum() == max(0, n - sum(sizes[:-1]))  # the last group takes the rest
    for g in range(len(sizes) - 1):  # earlier groups hold rows at least as frequent as later ones
        earlier, later = counts[groups == g], counts[groups > g]
        if earlier.size and later.size:
            assert earlier.min() >= later.max()


def test_group_ids_rejects_bad_sizes():
    with pytest.raises(ValueError):
        group_ids(np.array([1, 2]), [])
    with pytest.raises(ValueError):
        group_ids(np.array([1, 2]), [1, -1])
