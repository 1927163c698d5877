"""Negative sampling: never a training item, uniform over the rest, deterministic; epoch batches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from qrec.data.interactions import Interactions
from qrec.data.sampling import NegativeSampler, bpr_epoch, pointwise_epoch
from qrec.data.synthetic import random_interactions


def log(pairs: list[tuple[int, int]], n_users: int, n_items: int) -> Interactions:
    users, items = (np.array(c, dtype=np.int64) for c in zip(*pairs))
    return Interactions(users, items, n_users, n_items, np.arange(n_users), np.arange(n_items))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(2, 12), st.data())
def test_never_returns_a_training_item(n_users, n_items, draw):
    # every user keeps at least one non-interacted item, so negatives exist for all
    density = draw.draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(draw.draw(st.integers(0, 1000)))
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = False
    train = log(list(zip(*np.nonzero(mask))) or [(0, 0)], n_users, n_items)
    sampler = NegativeSampler(train, seed=1)
    users = rng.integers(0, n_users, 50)
    negatives = sampler.sample(users, 3)
    assert negatives.shape == (50, 3) and negatives.dtype == np.int64
    dense = train.to_csr().toarray().astype(bool)
    assert not dense[users[:, None], negatives].any()


def test_uniform_over_non_interacted_items():
    # user 0 has items 0..2 out of 10: its negatives must be uniform over the other 7
    train = log([(0, 0), (0, 1), (0, 2), (1, 5)], 2, 10)
    negatives = NegativeSampler(train, seed=0).sample(np.zeros(70_000, dtype=np.int64), 1).ravel()
    counts = np.bincount(negatives, minlength=10)
    assert counts[:3].sum() == 0
    assert chisquare(counts[3:]).pvalue > 1e-3


def test_dense_user_falls_back_to_the_complement():
    # user 0 has 499 of 500 items: only item 123 is a valid negative
    n_items = 500
    train = log([(0, i) for i in range(n_items) if i != 123] + [(1, 0)], 2, n_items)
    negatives = NegativeSampler(train, seed=0).sample(np.array([0, 1, 0]), 4)
    assert (negatives[[0, 2]] == 123).all() and (negatives[1] != 0).all()


def test_user_with_every_item_is_a_clear_error():
    train = log([(0, 0), (0, 1), (1, 0)], 2, 2)
    sampler = NegativeSampler(train)
    with pytest.raises(ValueError, match="1 user\\(s\\) interacted with every one of the 2 items.*first: \\[0\\]"):
        sampler.sample(np.array([1, 0]), 2)
    with pytest.raises(ValueError, match="user ids must be in"):
        sampler.sample(np.array([2]), 1)


def test_deterministic_and_accepts_csr():
    data = random_interactions(30, 40, 300, seed=2)
    a = NegativeSampler(data, seed=7).sample(data.users, 4)
    b = NegativeSampler(data.to_csr(), seed=7).sample(data.users, 4)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(3)
    c = NegativeSampler(data, seed=0).sample(data.users, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(c, NegativeSampler(data, seed=99).sample(data.users, 4, rng))


def test_pointwise_epoch_rows_and_labels():
    data = random_interactions(20, 50, 200, seed=0)
    sampler = NegativeSampler(data, seed=0)
    batches = list(pointwise_epoch(data, sampler, n_neg=4, batch_size=64, rng=np.random.default_rng(0)))
    assert [len(b["users"]) for b in batches] == [64] * 15 + [40]  # 200 * (1 + 4) = 1000 rows
    users, items, labels = (torch.cat([b[k] for b in batches]).numpy() for k in ("users", "items", "labels"))
    assert batches[0]["labels"].dtype == torch.float32 and batches[0]["users"].dtype == torch.int64
    assert labels.sum() == 200 and set(np.unique(labels)) == {0.0, 1.0}
    positive = sampler.is_positive(users, items)
    np.testing.assert_array_equal(positive, labels == 1)  # positives are training pairs, negatives never
    assert sorted(zip(users[labels == 1], items[labels == 1])) == sorted(zip(data.users, data.items))
    np.testing.assert_array_equal(np.bincount(users, minlength=20), 5 * data.user_counts())
    assert not (labels[:5] == [1, 0, 0, 0, 0]).all() or not (labels[5:10] == [1, 0, 0, 0, 0]).all()  # shuffled


def test_bpr_epoch_is_one_shuffled_pass():
    data = random_interactions(20, 50, 300, seed=1)
    sampler = NegativeSampler(data, seed=0)
    run = lambda seed: list(bpr_epoch(data, sampler, batch_size=128, rng=np.random.default_rng(seed)))  # noqa: E731
    batches = run(5)
    users, pos, neg = (torch.cat([b[k] for b in batches]).numpy() for k in ("users", "pos", "neg"))
    assert len(batches) == 3 and len(users) == 300
    assert sorted(zip(users, pos)) == sorted(zip(data.users, data.items))
    assert not sampler.is_positive(users, neg).any()
    assert (users != data.users).any()  # shuffled, not file order
    again = run(5)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(batches, again) for k in ("users", "pos", "neg"))


def test_sparse_input_with_explicit_zero_is_not_an_interaction():
    matrix = sp.csr_matrix((np.array([1.0, 0.0]), (np.array([0, 0]), np.array([1, 2]))), shape=(1, 3))
    sampler = NegativeSampler(matrix)
    assert sampler.is_positive(np.array([0, 0, 0]), np.array([0, 1, 2])).tolist() == [False, True, False]
