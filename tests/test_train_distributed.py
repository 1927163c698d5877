"""Data-parallel training: the slices of a global batch, the merge of the ranks' sparse row gradients, and a
2-process torchrun (gloo, CPU) that ends with the weights of the one-process run with the same global batch, with
Adam (dense gradients, all-reduced) and row-wise AdaGrad (sparse table gradients, all-gathered by rows)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.train.config import RunConfig
from qrec.train.distributed import DataParallel, merge_row_gradients

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("n, world", [(10, 2), (7, 3), (1, 2), (5, 4)])
def test_slices_cover_each_global_batch_once_with_shares_summing_to_one(n, world):
    batch = {"users": torch.arange(n), "labels": torch.arange(n, dtype=torch.float32)}
    rows, shares = [], []
    for rank in range(world):
        part = DataParallel(rank, world)
        (sliced,) = list(part.shard(iter([batch]), epoch=0))
        shares.append(part._share)
        if part._share:
            rows.append(sliced["users"])
        else:  # an empty slice trains one row with no weight, so its loss stays finite
            assert len(sliced["users"]) == 1
    assert torch.equal(torch.cat(rows), batch["users"])
    assert sum(shares) == pytest.approx(1.0)


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


@pytest.mark.slow  # two fresh interpreters importing torch: ~20 s idle
@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
@pytest.mark.parametrize("optimizer", ["adam", "rowwise-adagrad"])
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, optimizer):
    from qrec.train.trainer import fit

    dataset = "synthetic-powerlaw:users=200,items=150,n=3000,clusters=4"
    args = ["--dataset", dataset, "--model", "gmf", "--dim", "8", "--epochs", "2", "--batch-size", "501",
            "--lr", "0.01", "--optimizer", optimizer, "--threads", "1", "--quiet"]  # 501: uneven slices
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "qrec.cli", "train", *args,
                          "--out", str(tmp_path / "dp")], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "dp" / "record.json").exists()
    parallel = torch.load(tmp_path / "dp" / "checkpoint.pt", weights_only=False)["model"]

    cfg = RunConfig(dataset=dataset, model="gmf", dim=8, epochs=2, batch_size=501, lr=0.01, optimizer=optimizer,
                    threads=1)
    fit(cfg, tmp_path / "one", progress=False, log=lambda _: None)
    single = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)["model"]  # the last epoch's
    assert parallel.keys() == single.keys()
    for name, value in single.items():
        torch.testing.assert_close(parallel[name], value, rtol=1e-4, atol=1e-6, msg=name)
