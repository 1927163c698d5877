"""``evaluate_split``'s masking conventions against a brute-force leave-one-out ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.data import Interactions
from qrec.data.splits import leave_one_out
from qrec.eval.evaluate import evaluate_split, ranking_problem


def fixed_scores(scores: np.ndarray):
    """Scores are a fixed matrix: what is ranked is known, so only the masking is under test."""
    table = torch.from_numpy(scores)
    return lambda users: table[users]


def _random_split(rng, n_users: int, n_items: int):
    """Each user a random sequence of 0..n_items distinct items in time order; leave-one-out."""
    users, items, times = [], [], []
    for u in range(n_users):
        seq = rng.permutation(n_items)[: rng.integers(0, n_items + 1)]
        users += [u] * len(seq)
        items += list(seq)
        times += list(range(len(seq)))
    data = Interactions(users=np.asarray(users, np.int64), items=np.asarray(items, np.int64), n_users=n_users,
                        n_items=n_items, user_ids=np.arange(n_users), item_ids=np.arange(n_items),
                        timestamps=np.asarray(times, np.int64))
    return leave_one_out(data)


def _brute_force(scores: np.ndarray, split, mask: str, k: int) -> tuple[float, float]:
    """float64 loop: the test item's rank among the items the convention leaves rankable."""
    hits, gains = [], []
    for u, t in zip(split.test.users, split.test.items):
        masked = set()
        if mask != "none":
            masked |= set(split.train.items[split.train.users == u])
        if mask == "seen":
            masked |= set(split.valid.items[split.valid.users == u])
        rank = 1 + sum(scores[u, i] > scores[u, t] for i in range(scores.shape[1]) if i not in masked and i != t)
        hits.append(float(rank <= k))
        gains.append(1.0 / math.log2(rank + 1) if rank <= k else 0.0)
    return float(np.mean(hits)), float(np.mean(gains))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 12), n_items=st.integers(3, 15),
       k=st.integers(1, 6), mask=st.sampled_from(["seen", "train", "none"]))
def test_each_mask_matches_brute_force(seed, n_users, n_items, k, mask):
    rng = np.random.default_rng(seed)
    split = _random_split(rng, n_users, n_items)
    if len(split.test) == 0:
        return
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float64)  # no ties
    got = evaluate_split(fixed_scores(scores), split, "test", ks=(k,), mask=mask)
    hr, ndcg = _brute_force(scores, split, mask, k)
    assert got["users"] == len(split.test)
    assert got[f"hr@{k}"] == pytest.approx(hr, abs=1e-12)
    assert got[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6)


def test_an_unmasked_validation_item_pushes_the_hit_down():
    """The validation item scored first and the test item second: rank 1 with qrec's mask, 2 without it."""
    rng = np.random.default_rng(0)
    split = _random_split(rng, 1, 8)
    while len(split.test) == 0:
        split = _random_split(rng, 1, 8)
    scores = np.zeros((1, 8))
    scores[0, split.valid.items[0]], scores[0, split.test.items[0]] = 2.0, 1.0
    model = fixed_scores(scores)
    assert evaluate_split(model, split, ks=(1,), mask="seen")["hr@1"] == 1.0
    assert evaluate_split(model, split, ks=(1,), mask="train")["hr@1"] == 0.0
    assert evaluate_split(model, split, ks=(2,), mask="train")["ndcg@2"] == pytest.approx(1 / math.log2(3))


def test_unknown_mask_is_refused():
    split = _random_split(np.random.default_rng(1), 3, 6)
    with pytest.raises(ValueError, match="mask must be one of"):
        evaluate_split(fixed_scores(np.zeros((3, 6))), split, mask="valid")


def test_unknown_stage_is_refused_and_the_problem_names_its_parts():
    split = _random_split(np.random.default_rng(2), 4, 6)
    with pytest.raises(ValueError, match="stage must be one of"):
        ranking_problem(split, "train")
    users, truth, exclude = ranking_problem(split, "test", "seen")
    assert list(users) == sorted(set(split.test.users.tolist()))
    assert truth.nnz == len(split.test) and len(exclude) == (2 if len(split.valid) else 1)
