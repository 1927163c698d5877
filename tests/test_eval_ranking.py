"""Deterministic top-k and full-ranking evaluation against a brute-force float64 NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qrec.eval import evaluate_full_ranking
from qrec.retrieval.topk import topk_deterministic

NEG_INF = float("-inf")
ALL_METRICS = ("hr", "ndcg", "recall", "precision", "mrr")

# ---- brute-force reference: Python loops over users, np.lexsort ranking, literal formulas -------


def ref_rank(row: np.ndarray) -> np.ndarray:
    """All items of one user in rank order: score descending, then index ascending."""
    return np.lexsort((np.arange(len(row)), -row))


def ref_evaluate(scores, truth, excludes, ks, denominator="test", users=None):
    """Per-user metric lists keyed like ``evaluate_full_ranking`` plus the evaluated user ids."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = truth.tolil()
    excludes = [e.tolil() for e in excludes]
    users = range(scores.shape[0]) if users is None else users
    out: dict[str, list[float]] = {"user": []}
    for u in users:
        test = set(truth.rows[u])
        if not test:
            continue
        row = scores[u].copy()
        for e in excludes:
            row[e.rows[u]] = -np.inf
        ranked = ref_rank(row)
        out["user"].append(u)
        for k in ks:
            hit = [i < len(ranked) and ranked[i] in test and row[ranked[i]] > -np.inf for i in range(k)]
            n_hits = sum(hit)
            dcg = sum(1 / math.log2(r + 2) for r in range(k) if hit[r])
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(test))))
            denom = len(test) if denominator == "test" else min(k, len(test))
            first = next((r + 1 for r in range(k) if hit[r]), None)
            values = {
                "hr": float(n_hits > 0),
                "recall": n_hits / denom,
                "precision": n_hits / k,
                "ndcg": dcg / idcg,
                "mrr": 0.0 if first is None else 1 / first,
            }
            for name, v in values.items():
                out.setdefault(f"{name}@{k}", []).append(v)
    return out


def random_problem(seed, n_users=60, n_items=40, density=0.15, levels=4):
    """Rounded float32 scores (many ties), multi-item test sets, users without test items,
    training and validation exclusions, and a few users with almost every item excluded."""
    rng = np.random.default_rng(seed)
    scores = (np.round(rng.random((n_users, n_items)) * levels) / levels).astype(np.float32)
    train = rng.random((n_users, n_items)) < density
    train[:3, : n_items - 2] = True  # only two unmasked items left for users 0..2
    valid = (rng.random((n_users, n_items)) < 0.03) & ~train
    test = (rng.random((n_users, n_items)) < rng.uniform(0, 0.2, (n_users, 1))) & ~train & ~valid
    test[5:8] = False  # users without test items
    test[0, -1] = True
    test[1, 0] = True  # a test item that is also excluded: it may fill a tail slot, never a hit
    as_csr = lambda m: sp.csr_matrix(m.astype(np.float32))  # noqa: E731
    return torch.from_numpy(scores), as_csr(test), [as_csr(train), as_csr(valid)]


def assert_matches_reference(result, per_user, reference, keys):
    np.testing.assert_array_equal(per_user["user"], reference["user"])
    assert result["users"] == len(reference["user"])
    for key in keys:
        np.testing.assert_allclose(per_user[key], reference[key], rtol=1e-12, atol=1e-15, err_msg=key)
        assert result[key] == pytest.approx(np.mean(reference[key]), rel=1e-12)


# ---- evaluate_full_ranking vs the reference ------------------------------------------------------


@pytest.mark.parametrize("denominator", ["test", "min"])
@pytest.mark.parametrize("seed", range(3))
def test_evaluate_matches_reference(seed, denominator):
    scores, truth, excludes = random_problem(seed)
    ks = (1, 5, 10, 39, 50)  # 39 > unmasked items of users 0..2; 50 > n_items
    result, per_user = evaluate_full_ranking(
        lambda u: scores[u], np.arange(scores.shape[0]), truth, excludes, ks=ks,
        metrics=ALL_METRICS, recall_denominator=denominator, batch_size=7, return_per_user=True,
    )
    reference = ref_evaluate(scores.numpy(), truth, excludes, ks, denominator)
    keys = [f"{m}@{k}" for k in ks for m in ALL_METRICS]
    assert list(result) == ["users", *keys]
    assert_matches_reference(result, per_user, reference, keys)
    np.testing.assert_array_equal(per_user["n_test"], np.diff(truth.indptr)[per_user["user"]])


def test_evaluate_subset_of_users_and_tensor_input():
    scores, truth, excludes = random_problem(11)
    a, b, c = np.flatnonzero(np.diff(truth.indptr))[[0, 3, -1]]
    users = np.array([b, a, 5, c, a])  # unordered, a duplicate, and user 5 with no test item
    result, per_user = evaluate_full_ranking(
        lambda u: scores[u], torch.from_numpy(users), truth, excludes, ks=(10,),
        metrics=ALL_METRICS, batch_size=2, return_per_user=True,
    )
    reference = ref_evaluate(scores.numpy(), truth, excludes, (10,), users=users)
    assert per_user["user"].tolist() == [b, a, c, a]
    assert_matches_reference(result, per_user, reference, [f"{m}@10" for m in ALL_METRICS])


def test_unsorted_duplicate_and_zero_entries_are_canonicalised():
    scores, truth, excludes = random_problem(5)
    expected = evaluate_full_ranking(lambda u: scores[u], np.arange(60), truth, excludes)
    # The same truth with each row's columns reversed, every entry stored twice, plus explicit
    # zeros -- and the exclusions as COO matrices.
    rev = [truth.indices[a:b][::-1] for a, b in zip(truth.indptr[:-1], truth.indptr[1:])]
    indices = np.concatenate([np.concatenate([r, r, [0]]) for r in rev])
    data = np.concatenate([np.r_[np.ones(2 * len(r)), 0.0] for r in rev])
    indptr = np.r_[0, np.cumsum([2 * len(r) + 1 for r in rev])]
    messy = sp.csr_matrix((data, indices, indptr), shape=truth.shape)
    assert not messy.has_sorted_indices
    got = evaluate_full_ranking(lambda u: scores[u], np.arange(60), messy, [e.tocoo() for e in excludes])
    assert got == expected


def test_hand_computed_example():
    # 4 items. User 0: item 1 is trained on, test {0, 3}; its scores tie items 0 and 2 at 0.5.
    # User 1: no test item (skipped). User 2: test {2}, constant scores, item 0 excluded.
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    truth = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]]))
    train = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]))
    result = evaluate_full_ranking(
        lambda u: scores[u], np.arange(3), truth, train, ks=(1, 2), metrics=ALL_METRICS
    )
    # User 0 ranks 0, 2, 3 (item 0 wins the tie by index): hit at rank 1 -> HR@1 = NDCG@1 = 1.
    # User 2 ranks 1, 2, 3: the test item sits at rank 2.
    l3 = math.log2(3)
    expected = {
        "users": 2,
        "hr@1": 0.5, "ndcg@1": 0.5, "recall@1": 0.25, "precision@1": 0.5, "mrr@1": 0.5,
        "hr@2": 1.0,
        "ndcg@2": (1 / (1 + 1 / l3) + 1 / l3) / 2,  # user 0: DCG 1 / IDCG (1 + 1/log2 3)
        "recall@2": (0.5 + 1.0) / 2,
        "precision@2": (0.5 + 0.5) / 2,
        "mrr@2": (1.0 + 0.5) / 2,
    }
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-15), key


def test_single_test_item_hr_equals_recall_and_ndcg_is_discount():
    rng = np.random.default_rng(3)
    n_users, n_items = 50, 30
    scores = torch.from_numpy(rng.random((n_users, n_items)).astype(np.float32))
    items = rng.integers(0, n_items, n_users)
    truth = sp.csr_matrix((np.ones(n_users), (np.arange(n_users), items)), shape=(n_users, n_items))
    result, per_user = evaluate_full_ranking(
        lambda u: scores[u], np.arange(n_users), truth, None, ks=(5, 20), return_per_user=True
    )
    rank = 1 + (scores > scores[np.arange(n_users), items].unsqueeze(1)).sum(1).numpy()
    for k in (5, 20):
        np.testing.assert_array_equal(per_user[f"hr@{k}"], per_user[f"recall@{k}"])
        expected = np.where(rank <= k, 1 / np.log2(rank + 1), 0.0)
        np.testing.assert_allclose(per_user[f"ndcg@{k}"], expected, rtol=1e-12)


def test_scores_returned_by_score_fn_are_not_modified():
    scores, truth, excludes = random_problem(4)
    before = scores.clone()
    # A basic slice is a view of ``scores``: masking in place would write -inf into it.
    evaluate_full_ranking(lambda u: scores[: len(u)], np.arange(60), truth, excludes, batch_size=16)
    assert torch.equal(scores, before)


def test_module_device_integer_scores_and_no_users():
    class Popularity(nn.Module):
        def __init__(self):
            super().__init__()
            self.counts = nn.Parameter(torch.tensor([3.0, 1.0, 2.0]), requires_grad=False)

        def score_all(self, users):
            assert users.dtype == torch.long and users.device == self.counts.device
            return self.counts.long().expand(len(users), -1)  # integer scores are accepted

    truth = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 1]]))
    result = evaluate_full_ranking(Popularity().score_all, np.arange(2), truth, ks=(1,))
    assert result["hr@1"] == 0.5
    empty = evaluate_full_ranking(Popularity().score_all, np.array([], dtype=int), truth)
    assert empty["users"] == 0 and math.isnan(empty["ndcg@10"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"ks": (0,)}, ValueError, "ks"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"metrics": ("auc",)}, ValueError, "unknown metric"),
        ({"recall_denominator": "max"}, ValueError, "recall_denominator"),
        ({"exclude": sp.csr_matrix((2, 4))}, ValueError, "shape"),
        ({"users": np.array([0, 3])}, ValueError, "user ids"),
        ({"truth": np.eye(3)}, TypeError, "scipy.sparse"),
        ({"score_fn": lambda u: torch.zeros(len(u), 2)}, ValueError, "score_fn returned"),
    ],
)
def test_evaluate_refuses_bad_input(kwargs, error, match):
    args = {
        "score_fn": lambda u: torch.zeros(len(u), 3),
        "users": np.arange(3),
        "truth": sp.csr_matrix(np.eye(3)),
        "exclude": None,
    } | kwargs
    with pytest.raises(error, match=match):
        evaluate_full_ranking(**args)


# ---- properties ------------------------------------------------------------------------------------


@st.composite
def problems(draw):
    """Small problems with heavy ties: scores from a 4-level grid, random masks and test sets."""
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 12))
    cells = st.lists(st.integers(0, 3), min_size=n_items, max_size=n_items)
    scores = np.array(draw(st.lists(cells, min_size=n_users, max_size=n_users)), dtype=np.float32)
    flags = st.lists(st.lists(st.booleans(), min_size=n_items, max_size=n_items),
                     min_size=n_users, max_size=n_users)
    test = np.array(draw(flags), dtype=bool)
    train = np.array(draw(flags), dtype=bool) & ~test
    ks = tuple(draw(st.lists(st.integers(1, 15), min_size=1, max_size=3)))
    return torch.from_numpy(scores), sp.csr_matrix(test), sp.csr_matrix(train), ks


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(["test", "min"]))
def test_property_matches_reference(problem, denominator):
    scores, truth, train, ks = problem
    result, per_user = evaluate_full_ranking(
        lambda u: scores[u], np.arange(scores.shape[0]), truth, train, ks=ks, metrics=ALL_METRICS,
        recall_denominator=denominator, batch_size=4, return_per_user=True,
    )
    reference = ref_evaluate(scores.numpy(), truth, [train], sorted(set(ks)), denominator)
    keys = [f"{m}@{k}" for k in sorted(set(ks)) for m in ALL_METRICS]
    if reference["user"]:
        assert_matches_reference(result, per_user, reference, keys)
    for key in keys:  # every metric lies in [0, 1]
        assert np.all((per_user[key] >= 0) & (per_user[key] <= 1 + 1e-12))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_property_excluded_items_never_ranked_ahead(problem):
    scores, _, train, ks = problem
    masked = scores.clone()
    masked[torch.from_numpy(train.toarray())] = NEG_INF
    k = min(max(ks), scores.shape[1])
    idx, val = topk_deterministic(masked, k)
    is_excluded = torch.from_numpy(train.toarray()).gather(1, idx)
    n_free = (~torch.from_numpy(train.toarray())).sum(1, keepdim=True)
    slot = torch.arange(k).unsqueeze(0)
    # An excluded item shows up only in a slot past the user's last unmasked item.
    assert torch.all(~is_excluded | (slot >= n_free))
    assert torch.all(torch.isneginf(val) == is_excluded)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_property_oracle_scores_one_and_orderings(problem):
    _, truth, train, ks = problem
    oracle = torch.from_numpy(truth.toarray().astype(np.float32))
    users = np.arange(oracle.shape[0])
    ks = sorted(set(ks))
    common = dict(ks=ks, metrics=("hr", "ndcg", "recall", "mrr"), return_per_user=True)
    result, per = evaluate_full_ranking(lambda u: oracle[u], users, truth, train, **common)
    _, per_min = evaluate_full_ranking(
        lambda u: oracle[u], users, truth, train, recall_denominator="min", **common
    )
    if result["users"] == 0:
        return
    for k in ks:
        assert result[f"hr@{k}"] == 1.0 and result[f"mrr@{k}"] == 1.0
        assert result[f"ndcg@{k}"] == pytest.approx(1.0, rel=1e-12)
        np.testing.assert_array_equal(per_min[f"recall@{k}"], 1.0)
        expected = np.minimum(k, per["n_test"]) / per["n_test"]
        np.testing.assert_allclose(per[f"recall@{k}"], expected, rtol=1e-12)
    # Random scores: HR >= recall(min) >= recall(test), and HR / recall are monotone in K.
    rng = np.random.default_rng(len(users))
    noisy = torch.from_numpy(rng.random(oracle.shape).astype(np.float32))
    _, a = evaluate_full_ranking(lambda u: noisy[u], users, truth, train, **common)
    _, b = evaluate_full_ranking(
        lambda u: noisy[u], users, truth, train, recall_denominator="min", **common
    )
    for k in ks:
        assert np.all(a[f"hr@{k}"] >= b[f"recall@{k}"] - 1e-12)
        assert np.all(b[f"recall@{k}"] >= a[f"recall@{k}"] - 1e-12)
    for k_lo, k_hi in zip(ks, ks[1:]):
        assert np.all(a[f"hr@{k_lo}"] <= a[f"hr@{k_hi}"])
        assert np.all(a[f"recall@{k_lo}"] <= a[f"recall@{k_hi}"] + 1e-12)


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from(["test", "min"]), st.lists(st.booleans(), min_size=2, max_size=2))
def test_property_ranking_by_a_topk_fn_matches_the_reference(problem, denominator, masks):
    """``topk_fn`` (a model's fused top-k) in place of ranking the scores: the same metrics, with the
    exclusions of every matrix handed over as one per batch."""
    from qrec.retrieval.topk import masked_topk

    scores, truth, train, ks = problem
    excludes = [m for m, keep in zip((train, sp.csr_matrix(train.toarray()[::-1].copy())), masks) if keep]
    calls = []

    def topk_fn(users, k, exclude):
        calls.append(exclude.shape)
        return masked_topk(scores[users].clone(), k, exclude)

    result, per_user = evaluate_full_ranking(
        lambda u: scores[u], np.arange(scores.shape[0]), truth, excludes, ks=ks, metrics=ALL_METRICS,
        recall_denominator=denominator, batch_size=4, return_per_user=True, topk_fn=topk_fn,
    )
    reference = ref_evaluate(scores.numpy(), truth, excludes, sorted(set(ks)), denominator)
    if reference["user"]:
        assert_matches_reference(result, per_user, reference, [f"{m}@{k}" for k in sorted(set(ks)) for m in ALL_METRICS])
        assert all(shape[1] == scores.shape[1] for shape in calls)


def test_a_topk_fn_of_the_wrong_shape_is_a_clear_error():
    truth = sp.csr_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="topk_fn returned"):
        evaluate_full_ranking(lambda u: torch.zeros(len(u), 3), np.arange(3), truth, ks=(2,),
                              topk_fn=lambda u, k, e: (torch.zeros(len(u), 1, dtype=torch.long), torch.zeros(len(u), 1)))
