"""Deterministic top-k (``qrec.retrieval.topk``) against a brute-force ``np.lexsort`` ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.retrieval.topk import blocked_topk, masked_topk, merged_topk, sorted_csr, topk_deterministic

NEG_INF = float("-inf")


def ref_rank(row: np.ndarray) -> np.ndarray:
    """All items of one user in rank order: score descending, then index ascending."""
    return np.lexsort((np.arange(len(row)), -row))


# ---- topk_deterministic ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_topk_matches_lexsort_with_ties_and_masks(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scores = np.round(rng.normal(size=(17, n)), 1).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = NEG_INF
    scores[0] = 0.5  # constant row
    scores[1] = NEG_INF  # fully masked row
    for k in sorted({1, n // 2 + 1, n}):
        idx, val = topk_deterministic(torch.from_numpy(scores), k)
        expected = np.stack([ref_rank(r)[:k] for r in scores.astype(np.float64)])
        np.testing.assert_array_equal(idx.numpy(), expected)
        np.testing.assert_array_equal(val.numpy(), np.take_along_axis(scores, expected, 1))


@pytest.mark.parametrize("k", [1, 50, 300])
def test_topk_matches_lexsort_on_binary_code_scores(k):
    """1-bit codes give integer dot products in [-d, d]: ties straddle nearly every cut-off."""
    gen = torch.Generator().manual_seed(k)
    users = torch.randint(0, 2, (64, 16), generator=gen).float() * 2 - 1
    items = torch.randint(0, 2, (5000, 16), generator=gen).float() * 2 - 1
    scores = users @ items.T
    idx, _ = topk_deterministic(scores, k)
    expected = np.stack([ref_rank(r)[:k] for r in scores.double().numpy()])
    np.testing.assert_array_equal(idx.numpy(), expected)


def test_topk_constant_scores_rank_by_index():
    idx, _ = topk_deterministic(torch.full((3, 1000), 7.0), 25)
    assert torch.equal(idx, torch.arange(25).expand(3, 25))


def test_topk_masked_items_only_fill_the_tail():
    scores = torch.tensor([[NEG_INF, 3.0, NEG_INF, 1.0, NEG_INF]])
    idx, val = topk_deterministic(scores, 4)
    assert idx.tolist() == [[1, 3, 0, 2]]
    assert val.tolist() == [[3.0, 1.0, NEG_INF, NEG_INF]]


def test_topk_handles_infinities_and_half_precision():
    scores = torch.tensor([[1.0, float("inf"), 2.0, float("inf")]], dtype=torch.float16)
    idx, _ = topk_deterministic(scores, 3)
    assert idx.tolist() == [[1, 3, 2]]


@pytest.mark.parametrize(
    "scores, k, match",
    [
        (torch.tensor([[1.0, float("nan")]]), 1, "NaN"),
        (torch.ones(2, 3), 0, "k must be"),
        (torch.ones(2, 3), 4, "k must be"),
        (torch.ones(3), 1, "2-D"),
        (torch.ones(2, 3, dtype=torch.long), 1, "floating"),
    ],
)
def test_topk_refuses_bad_input(scores, k, match):
    with pytest.raises(ValueError, match=match):
        topk_deterministic(scores, k)


def test_topk_finds_a_nan_anywhere_in_a_row():
    """The NaN check looks at topk's first slot only: it relies on topk ranking NaN highest."""
    rng = np.random.default_rng(0)
    for dtype in (torch.float32, torch.float16, torch.float64):
        scores = torch.from_numpy(rng.normal(size=(1, 300))).to(dtype)
        scores[0, rng.random(300) < 0.3] = NEG_INF
        scores[0, rng.random(300) < 0.1] = float("inf")
        for pos in (0, 1, 150, 299):
            bad = scores.clone()
            bad[0, pos] = float("nan")
            with pytest.raises(ValueError, match="NaN"):
                topk_deterministic(bad, 5)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 10).flatmap(lambda n: st.tuples(
        st.lists(st.lists(st.sampled_from([NEG_INF, -1.0, 0.0, 0.5, 2.0, float("inf")]),
                          min_size=n, max_size=n), min_size=1, max_size=4),
        st.integers(1, n),
    ))
)
def test_property_topk_matches_lexsort(case):
    rows, k = case
    scores = np.array(rows, dtype=np.float32)
    idx, val = topk_deterministic(torch.from_numpy(scores), k)
    expected = np.stack([ref_rank(r)[:k] for r in scores.astype(np.float64)])
    np.testing.assert_array_equal(idx.numpy(), expected)
    np.testing.assert_array_equal(val.numpy(), np.take_along_axis(scores, expected, 1))


def test_masked_topk_equals_topk_of_the_masked_matrix():
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(5, 9)).astype(np.float32)
    exclude = sp.random(5, 9, density=0.3, random_state=3, format="csr")
    masked = scores.copy()
    masked[exclude.toarray() != 0] = NEG_INF
    idx, val = masked_topk(torch.from_numpy(scores.copy()), 4, exclude)
    expected = np.stack([ref_rank(r)[:4] for r in masked.astype(np.float64)])
    np.testing.assert_array_equal(idx.numpy(), expected)


def test_sorted_csr_sorts_rows_and_checks_their_count():
    import scipy.sparse as sp

    m = sp.csr_matrix((np.ones(3), np.array([5, 1, 3]), np.array([0, 3, 3])), shape=(2, 6))
    indptr, indices = sorted_csr(m, 2)
    assert indptr.tolist() == [0, 3, 3] and indices.tolist() == [1, 3, 5]
    assert m.indices.tolist() == [5, 1, 3]  # the caller's matrix is left as it is
    with pytest.raises(ValueError, match="3 users"):
        sorted_csr(m, 3)


def _masked_scores(max_items: int, max_masked: int, *extra):
    """Cases ``(scores (B, n) float32, k, exclude or None, *extra(n))``: tie-heavy scores with infinities, and
    masked cells (repeats allowed)."""
    def case(n):
        return st.tuples(
            st.lists(st.lists(st.sampled_from([NEG_INF, -1.0, 0.0, 0.5, 2.0, float("inf")]), min_size=n, max_size=n),
                     min_size=1, max_size=4),
            st.integers(1, n),
            st.lists(st.tuples(st.integers(0, 3), st.integers(0, n - 1)), max_size=max_masked),
            *(e(n) for e in extra))
    return st.integers(1, max_items).flatmap(case).map(_with_exclusions)


def _with_exclusions(case):
    import scipy.sparse as sp

    rows, k, masked, *rest = case
    scores = np.array(rows, dtype=np.float32)
    cells = sorted({(r, c) for r, c in masked if r < len(rows)})
    exclude = sp.csr_matrix((np.ones(len(cells), np.float32), ([r for r, _ in cells], [c for _, c in cells])),
                            shape=scores.shape) if cells else None
    return (scores, k, exclude, *rest)


@settings(max_examples=200, deadline=None)
@given(_masked_scores(12, 20))
def test_property_merged_topk_is_masked_topk_exactly(case):
    """The compiled merge a server ranks a small table's scores with: same items, order and values."""
    scores, k, exclude = case
    got = merged_topk(torch.from_numpy(scores), k, exclude)
    want = masked_topk(torch.from_numpy(scores.copy()), k, exclude)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@settings(max_examples=300, deadline=None)
@given(_masked_scores(40, 30, lambda n: st.integers(1, n + 2)))
def test_property_blocked_topk_is_masked_topk_exactly(case):
    """Scores merged block by block (any block size: masked items on block edges, runs of masked items, more
    masked than kept) rank exactly as the whole masked matrix."""
    scores, k, exclude, block = case
    calls = []

    def score_rows(lo, hi):
        calls.append((lo, hi))
        return torch.from_numpy(scores[:, lo:hi].copy())

    got = blocked_topk(score_rows, scores.shape[1], scores.shape[0], k, exclude, rows=block)
    want = masked_topk(torch.from_numpy(scores.copy()), k, exclude)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert [lo for lo, _ in calls] == list(range(0, scores.shape[1], block)) and calls[-1][1] == scores.shape[1]


def test_blocked_topk_refuses_k_outside_the_rows():
    with pytest.raises(ValueError, match="k must be in"):
        blocked_topk(lambda lo, hi: torch.zeros(1, hi - lo), 5, 1, 6)
