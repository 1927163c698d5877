"""Splits and filters: properties over random data (hypothesis) and SASRec's exact ml-1m numbers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.data.interactions import Interactions, Split
from qrec.data.loaders import read_sequences
from qrec.data.splits import (
    holdout_split,
    kcore_filter,
    kfold_split,
    leave_one_out,
    make_split,
    ratio_split,
    reindex,
    seeded_protocol,
)
from qrec.data.synthetic import checkerboard, planted_communities, random_interactions

FAST = settings(max_examples=60, deadline=None)


@st.composite
def interactions(draw, with_timestamps=True):
    """Small random logs with distinct (user, item) pairs and tie-prone timestamps."""
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 8))
    n = draw(st.integers(0, n_users * n_items))
    seed = draw(st.integers(0, 2**16))
    data = random_interactions(n_users, n_items, n, seed=seed, with_timestamps=with_timestamps)
    if with_timestamps and n:  # squash timestamps into a few values so ties are common
        data = Interactions(data.users, data.items, data.n_users, data.n_items, data.user_ids,
                            data.item_ids, timestamps=data.timestamps % 3, name=data.name)
    return data


def triples(data: Interactions) -> list[tuple]:
    """Rows as sortable (user, item, timestamp) tuples."""
    ts = data.timestamps if data.timestamps is not None else np.zeros(len(data), dtype=np.int64)
    return sorted(zip(data.users.tolist(), data.items.tolist(), ts.tolist()))


def assert_partition(split: Split, data: Interactions):
    """Parts are disjoint, their union is the input, and they share the input's id space."""
    parts = (split.train, split.valid, split.test)
    assert sorted(sum((triples(p) for p in parts), [])) == triples(data)
    for part in parts:
        assert (part.n_users, part.n_items) == (data.n_users, data.n_items)
        assert part.user_ids is data.user_ids and part.item_ids is data.item_ids


# --------------------------------------------------------------------------------------------
# Leave-one-out
# --------------------------------------------------------------------------------------------


@FAST
@given(interactions())
def test_leave_one_out_holds_out_the_latest(data):
    split = leave_one_out(data)
    assert split.protocol == "leave-one-out"
    assert_partition(split, data)
    counts = data.user_counts()
    for user in range(data.n_users):
        rows = np.flatnonzero(data.users == user)
        test_rows = split.test.items[split.test.users == user]
        valid_rows = split.valid.items[split.valid.users == user]
        if counts[user] < 3:
            assert test_rows.size == valid_rows.size == 0
            continue
        # latest = largest timestamp, ties broken by file position (later row is later)
        chronological = rows[np.lexsort((rows, data.timestamps[rows]))]
        assert test_rows.tolist() == [data.items[chronological[-1]]]
        assert valid_rows.tolist() == [data.items[chronological[-2]]]


def test_leave_one_out_ties_keep_file_order():
    users, items = np.zeros(4, dtype=np.int64), np.arange(4)
    data = Interactions(users, items, 1, 4, np.arange(1), np.arange(4), timestamps=np.array([5, 9, 9, 1]))
    split = leave_one_out(data)
    assert split.test.items.tolist() == [2] and split.valid.items.tolist() == [1]
    assert split.train.items.tolist() == [3, 0]  # train stays chronological


def test_leave_one_out_without_timestamps_uses_file_order():
    data = random_interactions(3, 10, 20, seed=1, with_timestamps=False)
    split = leave_one_out(data)
    for user in range(3):
        rows = np.flatnonzero(data.users == user)
        if len(rows) >= 3:
            assert split.test.items[split.test.users == user].tolist() == [data.items[rows[-1]]]


# --------------------------------------------------------------------------------------------
# Ratio split
# --------------------------------------------------------------------------------------------


@FAST
@given(interactions(), st.sampled_from([(0.8, 0.1), (0.6, 0.2), (1.0, 0.0), (0.5, 0.5)]), st.integers(0, 5))
def test_ratio_split_sizes_per_user(data, ratios, seed):
    train, valid = ratios
    split = ratio_split(data, train, valid, seed=seed)
    assert_partition(split, data)
    n = data.user_counts()
    expected_valid = np.floor(np.round(valid * n, 9)).astype(int)
    expected_test = np.floor(np.round((1 - train - valid) * n, 9)).astype(int)
    np.testing.assert_array_equal(split.valid.user_counts(), expected_valid)
    np.testing.assert_array_equal(split.test.user_counts(), expected_test)
    again = ratio_split(data, train, valid, seed=seed)
    assert triples(again.test) == triples(split.test)  # deterministic given the seed


def test_ratio_split_protocol_and_seed_matter():
    data = random_interactions(20, 50, 600, seed=0)
    a, b = ratio_split(data, seed=0), ratio_split(data, seed=1)
    assert a.protocol == "ratio-0.8/0.1/0.1-seed0" and b.protocol.endswith("seed1")
    assert triples(a.test) != triples(b.test)
    with pytest.raises(ValueError, match="sum to at most 1"):
        ratio_split(data, 0.9, 0.2)


# --------------------------------------------------------------------------------------------
# k-core and re-indexing
# --------------------------------------------------------------------------------------------


@FAST
@given(interactions(), st.integers(1, 4), st.integers(1, 4), st.booleans())
def test_kcore_properties(data, min_user, min_item, iterative):
    out = kcore_filter(data, min_user, min_item, iterative=iterative)
    # raw pairs kept are exactly those whose full-data counts pass (one pass) ...
    raw = lambda d: set(zip(d.user_ids[d.users].tolist(), d.item_ids[d.items].tolist()))  # noqa: E731
    if not iterative:
        ok = (data.user_counts()[data.users] >= min_user) & (data.item_counts()[data.items] >= min_item)
        assert raw(out) == raw(data.subset(ok))
    else:  # ... or form a true core where every survivor meets both thresholds
        assert raw(out) <= raw(data)
        assert (out.user_counts() >= min_user).all() and (out.item_counts() >= min_item).all()
    # re-indexed contiguously: every id in range is used
    assert (out.user_counts() > 0).all() and (out.item_counts() > 0).all()


def test_reindex_keeps_raw_maps():
    data = Interactions(np.array([2, 2, 5]), np.array([7, 1, 7]), 6, 9, np.arange(100, 106), np.arange(200, 209))
    out = reindex(data)
    assert (out.n_users, out.n_items) == (2, 2)
    assert out.user_ids.tolist() == [102, 105] and out.item_ids.tolist() == [201, 207]
    assert list(zip(out.user_ids[out.users], out.item_ids[out.items])) == [(102, 207), (102, 201), (105, 207)]


def test_sasrec_ml1m_five_core_is_one_pass(shared_data):
    data = kcore_filter(read_sequences(shared_data / "ml-1m-seq" / "sequences.txt"), 5, 5)
    assert (data.n_users, data.n_items, len(data)) == (6040, 3416, 999611)
    assert data.meta["kcore"] == {"min_user": 5, "min_item": 5, "iterative": False}
    split = leave_one_out(data)
    assert len(split.test) == len(split.valid) == 6040


# --------------------------------------------------------------------------------------------
# make_split dispatch
# --------------------------------------------------------------------------------------------


def test_make_split_dispatch():
    data = random_interactions(10, 30, 200, seed=3)
    assert make_split(data, "loo").protocol == "leave-one-out"
    assert make_split(data, "leave-one-out").protocol == "leave-one-out"
    assert make_split(data, "ratio", seed=4).protocol == "ratio-0.8/0.1/0.1-seed4"
    assert make_split(data, "ratio-0.7/0.1/0.2").protocol == "ratio-0.7/0.1/0.2-seed0"
    given_split = leave_one_out(data)
    assert make_split(given_split, "loo") is given_split
    with pytest.raises(ValueError, match="unknown split protocol"):
        make_split(data, "temporal")
    with pytest.raises(ValueError, match="ships its own split"):
        make_split(data, "given")
    with pytest.raises(ValueError, match="must sum to 1"):
        make_split(data, "ratio-0.7/0.1/0.1")


# --------------------------------------------------------------------------------------------
# Synthetic fixtures
# --------------------------------------------------------------------------------------------


def test_checkerboard_is_rank_two_parity_pattern():
    data = checkerboard(8, 6, n_blocks=2)
    dense = data.to_csr().toarray()
    assert np.linalg.matrix_rank(dense) == 2 and data.meta["synthetic"] and data.name.startswith("synthetic")
    ub, ib = data.meta["user_block"], data.meta["item_block"]
    np.testing.assert_array_equal(dense, ((ub[:, None] + ib[None, :]) % 2 == 0).astype(dense.dtype))


def test_planted_communities_holdout_is_in_community():
    split = planted_communities(3, 10, 8, p_in=0.6, p_out=0.05, seed=0, holdout=0.3)
    uc, ic = split.train.meta["user_community"], split.train.meta["item_community"]
    assert len(split.test) > 0 and (uc[split.test.users] == ic[split.test.items]).all()
    train = set(zip(split.train.users.tolist(), split.train.items.tolist()))
    assert not train & set(zip(split.test.users.tolist(), split.test.items.tolist()))
    same = (uc[split.train.users] == ic[split.train.items]).mean()
    assert same > 0.7  # p_in >> p_out: most training edges are inside a community


# ---- row-level random splits of the regression task (holdout, k-fold) ----------------------


@FAST
@given(interactions(), st.floats(0.0, 0.5), st.integers(0, 2**16))
def test_holdout_is_a_seeded_random_partition(data, test, seed):
    split = holdout_split(data, test=test, valid=0.1, seed=seed)
    assert_partition(split, data)
    assert len(split.test) == round(test * len(data))
    assert len(split.valid) == int(0.1 * (len(data) - len(split.test)) + 1e-9)
    again = holdout_split(data, test=test, valid=0.1, seed=seed)
    assert triples(again.test) == triples(split.test) and triples(again.valid) == triples(split.valid)


@FAST
@given(interactions(), st.integers(2, 6), st.integers(0, 2**16))
def test_kfold_test_parts_cover_every_row_once(data, k, seed):
    """Over folds 0..k-1 the test parts are disjoint, cover the data, and differ in size by at most one."""
    tests = []
    for fold in range(k):
        split = kfold_split(data, k, fold, valid=0.1, seed=seed)
        assert_partition(split, data)
        tests += triples(split.test)
        assert abs(len(split.test) - len(data) / k) < 1
    assert sorted(tests) == triples(data)


def test_kfold_protocol_reads_the_fold_from_the_seed():
    """``kfold-5``: seed s is fold s mod 5 of the shuffle seeded by s // 5, so seeds 0..4 are one CV."""
    data = random_interactions(30, 20, 200, seed=3)
    for seed in (0, 3, 7):
        by_name = make_split(data, "kfold-5", seed=seed)
        direct = kfold_split(data, 5, seed % 5, seed=seed // 5)
        assert triples(by_name.test) == triples(direct.test)
        assert by_name.protocol == f"kfold-5-fold{seed % 5}-valid0.1-seed{seed // 5}"
    assert triples(make_split(data, "holdout-0.2", seed=4).test) == triples(holdout_split(data, 0.2, seed=4).test)
    assert seeded_protocol("kfold-5") and seeded_protocol("holdout") and seeded_protocol("ratio")
    assert not seeded_protocol("loo") and not seeded_protocol("ratio-0.7/0.1/0.2")


def test_bad_random_split_arguments_are_errors():
    data = random_interactions(5, 5, 10, seed=0)
    with pytest.raises(ValueError, match="k-fold"):
        kfold_split(data, 5, 5)
    with pytest.raises(ValueError, match="test must be in"):
        holdout_split(data, test=1.0)
