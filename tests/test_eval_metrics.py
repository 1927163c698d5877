"""Per-user metric formulas against straightforward float64 references and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.eval import metrics as M

# ---- references: one user at a time, formulas written out literally -------------------------


def ref_one(hit_row: np.ndarray, n_test: int) -> dict[str, float]:
    k = len(hit_row)
    n_hits = int(hit_row.sum())
    dcg = sum(1.0 / math.log2(r + 1) for r in range(1, k + 1) if hit_row[r - 1])
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(k, n_test) + 1))
    first = next((r for r in range(1, k + 1) if hit_row[r - 1]), None)
    return {
        "hr": float(n_hits > 0),
        "recall_test": n_hits / n_test,
        "recall_min": n_hits / min(k, n_test),
        "precision": n_hits / k,
        "ndcg": dcg / idcg,
        "mrr": 0.0 if first is None else 1.0 / first,
    }


def random_hits(rng: np.random.Generator, n_users: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A hit matrix and |T_u| consistent with it (a user cannot hit more items than it has)."""
    hits = rng.random((n_users, k)) < rng.uniform(0.0, 0.6, size=(n_users, 1))
    n_test = hits.sum(1) + rng.integers(0, 2 * k, size=n_users)
    n_test = np.maximum(n_test, 1)
    return hits, n_test


def compute(name: str, hits: np.ndarray, n_test: np.ndarray) -> np.ndarray:
    out = M.METRICS[name](torch.from_numpy(hits), torch.from_numpy(n_test))
    assert out.dtype == torch.float64 and out.shape == (len(hits),)
    return out.numpy()


@pytest.mark.parametrize("name", sorted(M.METRICS))
@pytest.mark.parametrize("k", [1, 2, 5, 20])
def test_every_metric_matches_reference(name, k):
    rng = np.random.default_rng(k)
    hits, n_test = random_hits(rng, 200, k)
    expected = [ref_one(h, t)[name] for h, t in zip(hits, n_test)]
    np.testing.assert_allclose(compute(name, hits, n_test), expected, rtol=1e-12, atol=0)


def test_hand_computed_values():
    # ranks 1..4; user 0 hits ranks 2 and 4 with |T| = 3; user 1 hits rank 1 with |T| = 6.
    hits = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)
    n_test = torch.tensor([3, 6])
    l2, l3, l4, l5 = (math.log2(x) for x in (2, 3, 4, 5))
    assert M.hit_rate(hits).tolist() == [1.0, 1.0]
    assert M.recall_test(hits, n_test).tolist() == [2 / 3, 1 / 6]
    assert M.recall_min(hits, n_test).tolist() == [2 / 3, 1 / 4]
    assert M.precision(hits).tolist() == [0.5, 0.25]
    assert M.mrr(hits).tolist() == [0.5, 1.0]
    idcg0 = 1 / l2 + 1 / l3 + 1 / l4
    idcg1 = 1 / l2 + 1 / l3 + 1 / l4 + 1 / l5
    expected = [(1 / l3 + 1 / l5) / idcg0, (1 / l2) / idcg1]
    np.testing.assert_allclose(M.ndcg(hits, n_test).numpy(), expected, rtol=1e-15)


def test_single_test_item_identities():
    """|T_u| = 1: HR == Recall (both denominators) and NDCG == 1 / log2(rank + 1)."""
    k = 10
    rank = torch.arange(1, 16)  # ranks beyond k are misses
    hits = torch.arange(1, k + 1).unsqueeze(0) == rank.unsqueeze(1)
    ones = torch.ones(len(rank), dtype=torch.long)
    hr = M.hit_rate(hits)
    assert torch.equal(hr, M.recall_test(hits, ones))
    assert torch.equal(hr, M.recall_min(hits, ones))
    expected = torch.where(rank <= k, 1.0 / torch.log2(rank.double() + 1), torch.zeros(()))
    torch.testing.assert_close(M.ndcg(hits, ones), expected, rtol=1e-15, atol=0)


def test_recall_dispatch_and_registry():
    hits = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    n_test = torch.tensor([5])
    assert M.recall(hits, n_test).item() == pytest.approx(2 / 5)
    assert M.recall(hits, n_test, "min").item() == pytest.approx(2 / 3)
    assert M.metric_fn("recall", "min") is M.recall_min
    assert M.metric_fn("recall") is M.recall_test
    with pytest.raises(ValueError, match="denominator"):
        M.recall(hits, n_test, "max")
    for name in ("recall", "ndcg"):
        with pytest.raises(ValueError, match="recall_denominator"):
            M.metric_fn(name, "max")
    with pytest.raises(ValueError, match="unknown metric"):
        M.metric_fn("auc")


def test_users_without_test_items_are_refused():
    hits = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least one test item"):
        M.ndcg(hits, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="shape"):
        M.recall_test(hits, torch.tensor([1, 1, 1]))


# ---- properties --------------------------------------------------------------------------------


@st.composite
def hit_problems(draw):
    """(hits (B, K) bool, n_test (B,)) with hits per row <= |T_u|."""
    b = draw(st.integers(1, 8))
    k = draw(st.integers(1, 12))
    rows = draw(st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=b, max_size=b))
    hits = np.array(rows, dtype=bool)
    extra = np.array(draw(st.lists(st.integers(0, 15), min_size=b, max_size=b)))
    n_test = np.maximum(hits.sum(1) + extra, 1)
    return torch.from_numpy(hits), torch.from_numpy(n_test)


@settings(max_examples=150, deadline=None)
@given(hit_problems())
def test_metrics_bounded_and_ordered(problem):
    hits, n_test = problem
    values = {name: fn(hits, n_test) for name, fn in M.METRICS.items()}
    for v in values.values():
        assert torch.all((v >= 0) & (v <= 1 + 1e-12))
    # HR >= Recall(min(K,|T|)) >= Recall(|T|) >= 0, and MRR <= HR.
    assert torch.all(values["hr"] >= values["recall_min"] - 1e-12)
    assert torch.all(values["recall_min"] >= values["recall_test"] - 1e-12)
    assert torch.all(values["mrr"] <= values["hr"])
    # precision is exactly hits / K
    k = hits.shape[1]
    torch.testing.assert_close(values["precision"] * k, hits.sum(1).double())


@settings(max_examples=150, deadline=None)
@given(hit_problems())
def test_monotone_in_k(problem):
    hits, n_test = problem
    for k in range(1, hits.shape[1]):
        short, long_ = hits[:, :k], hits[:, : k + 1]
        assert torch.all(M.hit_rate(short) <= M.hit_rate(long_))
        assert torch.all(M.recall_test(short, n_test) <= M.recall_test(long_, n_test))
        assert torch.all(M.mrr(short) <= M.mrr(long_))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.lists(st.integers(1, 30), min_size=1, max_size=8))
def test_ndcg_is_one_iff_test_items_ranked_first(k, sizes):
    n_test = torch.tensor(sizes)
    ranks = torch.arange(k).unsqueeze(0)
    ideal = ranks < n_test.clamp(max=k).unsqueeze(1)  # test items fill the first slots
    torch.testing.assert_close(M.ndcg(ideal, n_test), torch.ones(len(sizes), dtype=torch.float64))
    assert torch.all(M.recall_min(ideal, n_test) == 1.0)
    # Moving the last hit down by one slot (when there is room) strictly lowers NDCG.
    m = n_test.clamp(max=k)
    room = m < k
    if room.any():
        worse = ideal.clone()
        worse[room, m[room] - 1] = False
        worse[room, m[room]] = True
        assert torch.all(M.ndcg(worse, n_test)[room] < 1.0)
