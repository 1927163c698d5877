"""Scoring from product-quantization codes (``qrec.retrieval.pqscan``) against a float64 brute force."""

from __future__ import annotations

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
