"""RMSE / MAE against literal float64 loops, batch independence, and properties of the two metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.eval.regression import evaluate_regression, improved, mae, rmse


def ref(pred, true) -> tuple[float, float]:
    """The formulas written out: one pair at a time, Python floats (float64)."""
    sq = ab = 0.0
    for p, y in zip(pred, true):
        sq += (float(p) - float(y)) ** 2
        ab += abs(float(p) - float(y))
    return math.sqrt(sq / len(true)), ab / len(true)


def test_hand_computed_values():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert rmse([0.0], [0.0]) == 0.0
    assert math.isnan(rmse([], []))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 3 targets"):
        rmse([1, 2], [1, 2, 3])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), min_size=1, max_size=60),
       st.integers(1, 17))
def test_batched_evaluation_equals_the_literal_formulas(pairs, batch):
    """Any batch size gives the float64 reference of the (float32-predicted) scores."""
    pred = np.asarray([p for p, _ in pairs], dtype=np.float32)
    true = np.asarray([y for _, y in pairs], dtype=np.float64)
    rows = np.arange(len(pairs))
    out = evaluate_regression(lambda r, c: torch.as_tensor(pred)[r], rows, rows, true, batch_size=batch)
    want_rmse, want_mae = ref(pred, true)
    assert out["rmse"] == pytest.approx(want_rmse, rel=1e-12, abs=1e-12)
    assert out["mae"] == pytest.approx(want_mae, rel=1e-12, abs=1e-12)
    assert out["pairs"] == len(pairs)
    assert rmse(pred, true) == pytest.approx(want_rmse, rel=1e-12, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=40), st.floats(-10, 10))
def test_properties(errors, shift):
    """MAE <= RMSE <= max |e| (power means); a constant error c has RMSE = MAE = |c|; order does not matter."""
    e = np.asarray(errors)
    zeros = np.zeros_like(e)
    r, m = rmse(e, zeros), mae(e, zeros)
    assert m <= r + 1e-9
    assert r <= np.abs(e).max() + 1e-9
    assert rmse(e[::-1], zeros) == pytest.approx(r)
    const = np.full(len(e), shift)
    assert rmse(const, zeros) == pytest.approx(abs(shift)) and mae(const, zeros) == pytest.approx(abs(shift))


def test_improved_reads_the_metric_direction():
    assert improved({"rmse": 0.9}, {"rmse": 1.0}, "rmse") and not improved({"rmse": 1.1}, {"rmse": 1.0}, "rmse")
    assert improved({"ndcg@10": 0.3}, {"ndcg@10": 0.2}, "ndcg@10")
    assert not improved({"ndcg@10": 0.1}, {"ndcg@10": 0.2}, "ndcg@10")
    assert improved({"rmse": 5.0}, {}, "rmse")


def test_mismatched_pairs_are_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_regression(lambda r, c: r.float(), np.arange(3), np.arange(2), np.zeros(3))
