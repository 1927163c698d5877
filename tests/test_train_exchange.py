"""The gradient exchange of a data-parallel step: the ranks' sparse row gradients merged (against one backward over
the whole batch, float64), their byte packing, and the whole exchange on a process group of one rank. Two ranks run
in tests/test_train_distributed.py (2 processes under torchrun against one process)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.errors import QrecError
from qrec.train.exchange import exchange_gradients, merge_row_gradients, pack_rows, unpack_rows


def _sparse_grad(weight: torch.Tensor, ids: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """The coalesced sparse gradient of ``sum(upstream * weight[ids])``, as an embedding table's backward gives it."""
    w = weight.clone().requires_grad_(True)
    (F.embedding(ids, w, sparse=True) * upstream).sum().backward()
    return w.grad.coalesce()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_merged_rank_gradients_equal_the_whole_batchs_gradient(n, world, seed):
    """Each rank's coalesced gradient of its slice, weighted by its share and merged, is the global batch's coalesced
    gradient: same rows, same values (float64 reference: the whole batch in one backward)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 12, (n,), generator=gen)  # few rows: the ranks' rows overlap and repeat
    upstream = torch.randn(n, 3, generator=gen, dtype=torch.float64) / n  # the batch mean's 1/n
    whole = _sparse_grad(weight, ids, upstream)
    parts = []
    for rank in range(world):
        lo, hi = n * rank // world, n * (rank + 1) // world
        if hi > lo:  # a slice's own mean is over its rows; the share brings it back to the global batch's
            share = (hi - lo) / n
            g = _sparse_grad(weight, ids[lo:hi], upstream[lo:hi] * n / (hi - lo))
            parts.append((g.indices()[0], g.values() * share))
    merged = merge_row_gradients(parts, weight.shape)
    assert merged.is_coalesced()
    assert torch.equal(merged.indices(), whole.indices())
    torch.testing.assert_close(merged.values(), whole.values(), rtol=1e-12, atol=1e-12)


def test_merging_no_rows_gives_an_empty_gradient():
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    merged = merge_row_gradients([empty, empty], (5, 4))
    assert merged.shape == (5, 4) and merged._nnz() == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.sampled_from([1, 3, 5]),
                          st.sampled_from([torch.float32, torch.float64, torch.float16])), min_size=1, max_size=4),
       st.integers(0, 2**31 - 1))
def test_packed_rows_unpack_to_themselves_padded_with_zeros(specs, seed):
    """Parts of any row count, width, row shape and dtype (odd byte sizes: offsets not aligned to int64) survive the
    byte buffer; the padding rows are zeros."""
    gen = torch.Generator().manual_seed(seed)
    parts, widths, layout = [], [], []
    for n, extra, d, dtype in specs:
        parts.append((torch.randint(0, 10**12, (n,), generator=gen), torch.randn(n, d, generator=gen).to(dtype)))
        widths.append(n + extra)
        layout.append(((d,), dtype))
    buffer = pack_rows(parts, widths)
    assert buffer.dtype == torch.uint8
    for (rows, values), (got_rows, got_values), width in zip(parts, unpack_rows(buffer, layout, widths), widths):
        n = len(rows)
        assert got_rows.shape == (width,) and got_values.shape == (width, values.shape[1])
        assert torch.equal(got_rows[:n], rows) and torch.equal(got_values[:n], values)
        assert not got_rows[n:].any() and not got_values[n:].any()


@pytest.fixture
def one_rank(tmp_path):
    """A gloo process group of one rank (a file store: no port), left again after the test."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_one_rank_keeps_its_gradients_weighted_by_its_share(one_rank):
    """The whole exchange in process (async collectives, byte buffers, merge): dense gradients come back scaled by the
    share, sparse ones coalesced and scaled, a missing one as zeros; the bytes counted are the payloads'."""
    table, dense, unused = (torch.nn.Parameter(torch.randn(9, 4)) for _ in range(3))
    ids = torch.tensor([3, 1, 3, 7])
    (F.embedding(ids, table, sparse=True).sum(1) * (F.embedding(ids, dense).sum(1))).sum().backward()
    want_sparse, want_dense = table.grad.coalesce().to_dense() * 0.5, dense.grad * 0.5
    sent = exchange_gradients([table, dense, unused], share=0.5, world=1)
    assert table.grad.is_sparse and table.grad.is_coalesced() and table.grad._nnz() == 3
    torch.testing.assert_close(table.grad.to_dense(), want_sparse)
    torch.testing.assert_close(dense.grad, want_dense)
    assert not unused.grad.any()
    assert sent == 3 * 8 + 2 * 9 * 4 * 4 + 3 * (8 + 4 * 4)


def test_gradients_sparse_in_two_dimensions_are_refused(one_rank):
    p = torch.nn.Parameter(torch.zeros(3, 3))
    p.grad = torch.eye(3).to_sparse(2)
    with pytest.raises(QrecError, match="2 sparse dimensions"):
        exchange_gradients([p], share=1.0, world=1)
