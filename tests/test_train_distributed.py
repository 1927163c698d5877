"""Data-parallel training: the slices of a global batch, and a 2-process torchrun (gloo, CPU) that ends with the weights of the one-process run with the same global batch, with
Adam (dense gradients, all-reduced) and row-wise AdaGrad (sparse table gradients, all-gathered by rows)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qrec.train.config import RunConfig
from qrec.train.distributed import DataParallel

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
