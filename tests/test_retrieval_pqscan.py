"""Scoring from product-quantization codes (``qrec.retrieval.pqscan``) against a float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrec.compress.coded import narrow_codes
from qrec.quant.packing import pack_bits
from qrec.retrieval import pqscan
from qrec.retrieval.pqscan import lookup_tables, pq_scores


def _reference(queries: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Decode every row in float64 by a plain loop over subspaces, then multiply."""
    D, K, s = codebook.shape
    rows = torch.cat([codebook.double()[j, codes[:, j].long()] for j in range(D)], dim=1)  # (n, D s)
    return queries.double() @ rows.T


@settings(max_examples=40, deadline=None)
@given(D=st.integers(1, 6), bits=st.integers(1, 9), s=st.integers(1, 5), n=st.integers(1, 70),
       B=st.integers(1, 40), seed=st.integers(0, 2**16), method=st.sampled_from(["lut", "decode", "auto"]))
def test_pq_scores_equal_the_float64_brute_force(D, bits, s, n, B, seed, method):
    g = torch.Generator().manual_seed(seed)
    K = 1 << bits
    codebook = torch.randn(D, K, s, generator=g)
    codes = torch.randint(0, K, (n, D), generator=g).to(torch.uint8 if K <= 256 else torch.int16)
    queries = torch.randn(B, D * s, generator=g)
    got = pq_scores(queries, codes, codebook, method)
    assert got.shape == (B, n) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _reference(queries, codes, codebook), rtol=1e-5, atol=1e-5)


def test_query_blocks_and_row_blocks_cover_everything(monkeypatch):
    """More queries than one lookup-table block and more rows than one decoded block."""
    monkeypatch.setattr(pqscan, "LUT_BYTES", 4 * 4 * 16 * 3)  # below the 8-query floor: blocks of 8
    monkeypatch.setattr(pqscan, "DECODE_ROWS", 7)
    g = torch.Generator().manual_seed(0)
    codebook, codes = torch.randn(4, 16, 2, generator=g), torch.randint(0, 16, (50, 4), generator=g)
    queries = torch.randn(20, 8, generator=g)
    assert pqscan.lut_queries(4, 16) == 8
    for method in ("lut", "decode"):
        torch.testing.assert_close(pq_scores(queries, codes, codebook, method).double(),
                                   _reference(queries, codes, codebook), rtol=1e-5, atol=1e-5)


def test_lookup_tables_are_subvector_dot_products():
    g = torch.Generator().manual_seed(1)
    codebook, queries = torch.randn(3, 5, 2, generator=g), torch.randn(4, 6, generator=g)
    tables = lookup_tables(queries, codebook)
    for b in range(4):
        for j in range(3):
            for k in range(5):
                assert tables[b, j, k].item() == pytest.approx(float(queries[b, 2 * j:2 * j + 2] @ codebook[j, k]), abs=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="do not fit"):
        pq_scores(torch.randn(2, 8), torch.zeros(3, 3, dtype=torch.uint8), torch.randn(4, 16, 2))
    with pytest.raises(ValueError, match="unknown pq scoring method"):
        pq_scores(torch.randn(2, 8), torch.zeros(3, 4, dtype=torch.uint8), torch.randn(4, 16, 2), "fast")


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 16), count=st.integers(0, 60), seed=st.integers(0, 2**16))
def test_narrow_codes_round_trip_the_packed_stream(bits, count, seed):
    codes = torch.randint(0, 1 << bits, (count,), generator=torch.Generator().manual_seed(seed))
    packed = pack_bits(codes, bits)
    narrow = narrow_codes(packed, bits, count)
    assert torch.equal(narrow.long(), codes)
    assert narrow.element_size() == (1 if bits <= 8 else 2 if bits < 16 else 4)
    if bits == 8 and count:  # 8-bit codes are served in place: no copy of the artifact's bytes
        assert narrow.data_ptr() == packed.data_ptr()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(D=st.integers(1, 4), bits=st.integers(1, 4), s=st.sampled_from([1, 8]), n=st.integers(1, 60),
       B=st.integers(1, 12), k=st.integers(1, 12), seed=st.integers(0, 2**16), masked=st.booleans(),
       offset=st.sampled_from([0.0, 0.5]), method=st.sampled_from(["lut", "decode"]))
def test_pq_topk_equals_ranking_the_masked_score_matrix(monkeypatch, D, bits, s, n, B, k, seed, masked, offset, method):
    """Fused scoring + running top-k against ``masked_topk`` of the full matrix: same items in the same order,
    ties (repeated codes) by the lower row, masked rows last; row blocks smaller than the table."""
    import scipy.sparse as sp

    from qrec.retrieval.topk import masked_topk

    monkeypatch.setattr(pqscan, "TOPK_ROWS", 7)  # the same value for every example: the fixture is not reset
    g = torch.Generator().manual_seed(seed)
    k = min(k, n)
    K = 1 << bits
    codebook = torch.randn(D, K, s, generator=g)
    codes = torch.randint(0, K, (n, D), generator=g).to(torch.uint8)  # few codes: many exactly tied rows
    queries = torch.randn(B, D * s, generator=g)
    exclude = sp.random(B, n, density=0.5, format="csr", random_state=seed) if masked else None
    top, val = pqscan.pq_topk(queries, codes, codebook, k, exclude, method, offset)
    scores = pq_scores(queries, codes, codebook, method) + offset
    ref_top, ref_val = masked_topk(scores.clone(), k, exclude)
    if method == "lut":  # each score is the same sum in every block: the very same ranking
        assert torch.equal(top, ref_top) and torch.equal(val, ref_val)
    else:  # BLAS may round a row differently in another block shape: a top-k up to that rounding
        torch.testing.assert_close(val, ref_val)
        finite = torch.isfinite(val)
        torch.testing.assert_close(scores.gather(1, top)[finite], val[finite])


def test_pq_topk_refuses_a_k_beyond_the_rows():
    with pytest.raises(ValueError, match="k must be"):
        pqscan.pq_topk(torch.randn(2, 4), torch.zeros(3, 2, dtype=torch.uint8), torch.randn(2, 4, 2), 4)


def _reference_topk(scores: np.ndarray, k: int, masked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 brute force: per query, -inf on the masked rows, then (score desc, row asc) by lexsort."""
    s = np.where(masked, -np.inf, scores)
    order = np.stack([np.lexsort((np.arange(s.shape[1]), -row))[:k] for row in s])
    return order, np.take_along_axis(s, order, 1)


@settings(max_examples=40, deadline=None)
@given(D=st.sampled_from([1, 3, 8, 16]), n=st.integers(1, 300), B=st.sampled_from([1, 7, 64, 65, 150]),
       k=st.integers(1, 40), parts=st.sampled_from([None, 1, 4, 9]), threads=st.sampled_from([1, 2]),
       density=st.sampled_from([0.0, 0.3, 0.97]), seed=st.integers(0, 2**16))
def test_fused_lut_topk_equals_a_float64_brute_force(D, n, B, k, parts, threads, density, seed):
    """Integer centroids and queries: every score is an exact small integer in float32 and float64 alike, so
    the fused scan must return the brute force's very ranking: heavy ties to the lower row, masked rows only
    in a short row's tail, across query blocks (64 lanes, padded), item parts and threads."""
    import scipy.sparse as sp

    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randint(-3, 4, (D, 4, 2), generator=g).float()
    codes = torch.randint(0, 4, (n, D), generator=g).to(torch.uint8)
    queries = torch.randint(-2, 3, (B, 2 * D), generator=g).float()
    exclude = sp.random(B, n, density=density, format="csr", random_state=seed)
    top, val = pqscan.pq_topk(queries, codes, codebook, k, exclude, "lut", 0.5, n_threads=threads, parts=parts)
    want_i, want_v = _reference_topk(_reference(queries, codes, codebook).numpy() + 0.5, k, exclude.toarray() != 0)
    np.testing.assert_array_equal(top.numpy(), want_i)
    np.testing.assert_array_equal(val.numpy(), want_v.astype(np.float32))


def test_fused_lut_topk_with_no_queries_and_k_equal_to_the_rows():
    codebook, codes = torch.randn(2, 16, 4), torch.randint(0, 16, (5, 2)).to(torch.uint8)
    top, val = pqscan.pq_topk(torch.zeros(0, 8), codes, codebook, 3)
    assert top.shape == (0, 3) and val.shape == (0, 3)
    queries = torch.randn(3, 8)
    top, val = pqscan.pq_topk(queries, codes, codebook, 5, parts=5)
    ref = pq_scores(queries, codes, codebook, "lut")
    assert torch.equal(val, ref.gather(1, top)) and torch.equal(top.sort(1).values, torch.arange(5).expand(3, 5))


@pytest.mark.parametrize("B", [1, 3, 8])
def test_fused_lut_scores_are_the_lut_sums_bit_for_bit_for_few_queries(B):
    """One to seven queries sum a tile's items side by side (``kernels.lut_add_items``), eight or more the
    queries side by side: either way each score is ``pq_scores``' float32 sum, same additions, same order."""
    g = torch.Generator().manual_seed(B)
    codebook, queries = torch.randn(21, 256, 1, generator=g), torch.randn(B, 21, generator=g)
    codes = torch.randint(0, 256, (3000, 21), generator=g).to(torch.uint8)
    top, val = pqscan.pq_topk(queries, codes, codebook, 50, offset=0.25)
    assert torch.equal(val, (pq_scores(queries, codes, codebook, "lut") + 0.25).gather(1, top))
