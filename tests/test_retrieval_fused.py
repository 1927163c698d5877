"""The fused scan's driver (``qrec.retrieval.fused``): query blocks, lane widths, and the merge of per-part
top-k lists, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.retrieval.fused import LANES, fused_topk, lanes_for, pad_blocks


@given(B=st.integers(0, 200))
def test_lanes_are_exact_below_eight_queries_then_whole_vectors(B):
    lanes = lanes_for(B)
    if B < 8:  # a lone query is scored without padding
        assert lanes == max(1, B)
    else:  # whole 8-float vectors, one block when it fits
        assert lanes % 8 == 0 and lanes == min(LANES, 8 * -(-B // 8))


def test_pad_blocks_puts_each_query_in_its_lane_and_pads_with_zeros():
    x = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) + 1
    blocks = pad_blocks(x, 2)
    assert blocks.shape == (3, 3, 2) and blocks.flags.c_contiguous
    for q in range(5):
        np.testing.assert_array_equal(blocks[q // 2, :, q % 2], x[q])
    assert not blocks[2, :, 1].any()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), B=st.integers(1, 5), k=st.integers(1, 12), parts=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_merged_parts_rank_exactly_as_one_pass(n, B, k, parts, seed):
    """``merge_parts`` via ``fused_topk`` with a reference kernel that fills each part's top-k by brute force:
    the merge of any number of parts is the lexsort ranking (score desc, index asc) of all items, ties and
    short parts included."""
    from qrec.retrieval.kernels import insert

    k = min(k, n)
    scores = np.random.default_rng(seed).integers(0, 4, (B, n)).astype(np.float32)  # heavy ties

    def kernel(k_, nq, indptr, excluded, bounds, chunk, part_i, part_v, part_f):
        for p in range(len(bounds) - 1):
            for u in range(nq):
                f = 0
                for i in range(bounds[p], bounds[p + 1]):
                    f = insert(part_i[p, u], part_v[p, u], f, k_, scores[u, i], i)
                part_f[p, u] = f

    top, val = fused_topk(kernel, (), B, n, k, 1, parts=parts)
    want = np.stack([np.lexsort((np.arange(n), -row))[:k] for row in scores])
    np.testing.assert_array_equal(top.numpy(), want)
    np.testing.assert_array_equal(val.numpy(), np.take_along_axis(scores, want, 1))


def test_k_out_of_range_is_a_clear_error_and_no_queries_give_empty_rows():
    with pytest.raises(ValueError, match="k must be"):
        fused_topk(None, (), 2, 3, 4, 1)
    top, val = fused_topk(None, (), 0, 3, 2, 1)
    assert top.shape == (0, 2) and val.shape == (0, 2)
