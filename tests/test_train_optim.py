"""Row-wise AdaGrad against a float64 reference (dense and sparse gradients, repeated rows, weight decay), the
split of a model's parameters, the trainer route, and the memory of a 10^6-row MGQE table and a 10^6-node graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from qrec.train.config import RunConfig
from qrec.train.optim import OptimizerChain, RowWiseAdagrad, rowwise_adagrad, table_row_parameters

SRC = Path(__file__).resolve().parents[1] / "src"


def _reference(w, s, steps, lr, eps, wd):
    """float64 FBGEMM row-wise AdaGrad: ``steps`` is a list of (ids looked up, per-lookup gradient rows)."""
    w, s = w.astype(np.float64).copy(), s.astype(np.float64).copy()
    for ids, grads in steps:
        g = np.zeros_like(w)
        np.add.at(g, ids, grads)
        for r in np.unique(ids):
            gr = g[r] + wd * w[r]
            s[r] += np.mean(gr ** 2)
            w[r] -= lr * gr / (np.sqrt(s[r]) + eps)
    return w, s


def _run(n, d, steps, lr, wd, sparse):
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(n, d))
    start = weight.detach().numpy().copy()
    opt = RowWiseAdagrad([weight], lr=lr, weight_decay=wd)
    for ids, grads in steps:
        opt.zero_grad()
        out = torch.nn.functional.embedding(torch.from_numpy(ids), weight, sparse=sparse)
        out.backward(torch.from_numpy(grads))  # d(sum out * grads)/d weight: grads scattered to their rows
        opt.step()
    return start, weight.detach().numpy(), opt.state[weight]["sum"].numpy()


def _steps(rng, n, d, n_steps, batch):
    return [(rng.integers(0, n, size=batch), rng.standard_normal((batch, d)).astype(np.float32)) for _ in range(n_steps)]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_matches_the_float64_reference_and_touches_only_looked_up_rows(sparse, wd):
    rng = np.random.default_rng(1)
    n, d = 50, 8
    steps = _steps(rng, n, d, 4, 30)  # rows repeat within a batch: their gradients sum first
    start, w, s = _run(n, d, steps, lr=0.05, wd=wd, sparse=sparse)
    ref_w, ref_s = _reference(start, np.zeros(n), steps, 0.05, 1e-8, wd)
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-7)
    assert s.shape == (n,)  # one state float per row
    untouched = np.setdiff1d(np.arange(n), np.concatenate([ids for ids, _ in steps]))
    assert untouched.size and np.array_equal(w[untouched], start[untouched]) and not s[untouched].any()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 6), batch=st.integers(1, 20), seed=st.integers(0, 1000),
       sparse=st.booleans())
def test_property_dense_and_sparse_agree_with_the_reference(n, d, batch, seed, sparse):
    steps = _steps(np.random.default_rng(seed), n, d, 2, batch)
    start, w, s = _run(n, d, steps, lr=0.1, wd=0.0, sparse=sparse)
    ref_w, ref_s = _reference(start, np.zeros(n), steps, 0.1, 1e-8, 0.0)
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-7)


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr > 0"):
        RowWiseAdagrad([torch.nn.Parameter(torch.zeros(2, 2))], lr=0.0)


def _model(embedding):
    from qrec.data.synthetic import random_interactions
    from qrec.data.splits import leave_one_out
    from qrec.models.registry import build_model

    split = leave_one_out(random_interactions(30, 40, 300, seed=0))
    return build_model("gmf", split, embedding, embedding, 16)


@pytest.mark.parametrize("embedding, row_names", [
    ("full", {"user_table.weight", "item_table.weight"}),
    ("mgqe4x16/8@0.25", {"user_table.query", "item_table.query"}),
])
def test_tables_rows_go_row_wise_everything_else_to_adagrad(embedding, row_names):
    model = _model(embedding)
    names = {id(p): name for name, p in model.named_parameters()}
    assert {names[id(p)] for p in table_row_parameters(model)} == row_names
    chain = rowwise_adagrad(model, lr=0.1)
    rows, dense = chain.optimizers
    assert isinstance(rows, RowWiseAdagrad) and isinstance(dense, torch.optim.Adagrad)
    dense_names = {names[id(p)] for group in dense.param_groups for p in group["params"]}
    assert dense_names == {name for name in names.values() if name not in row_names}


def test_chain_state_round_trips_and_refuses_another_chain():
    model = _model("full")
    chain = rowwise_adagrad(model, lr=0.1)
    batch = {"users": torch.tensor([0, 1]), "items": torch.tensor([2, 3]), "labels": torch.tensor([1.0, 0.0])}
    model.training_loss(batch).backward()
    chain.step()
    again = rowwise_adagrad(model, lr=0.1)
    again.load_state_dict(chain.state_dict())
    assert torch.equal(again.optimizers[0].state_dict()["state"][0]["sum"], chain.optimizers[0].state_dict()["state"][0]["sum"])
    with pytest.raises(ValueError, match="optimizer chain"):
        OptimizerChain(chain.optimizers[0]).load_state_dict(chain.state_dict())


def test_config_names_the_optimizer_only_when_not_adam():
    adam = RunConfig()
    assert "optimizer" not in adam.to_dict()  # earlier runs' records and checkpoints keep their identity
    assert RunConfig.from_dict(adam.to_dict()) == adam
    rowwise = adam.replace(optimizer="rowwise-adagrad")
    assert rowwise.to_dict()["optimizer"] == "rowwise-adagrad" and "rowwise-adagrad" in rowwise.run_name()
    assert adam.run_name() == rowwise.run_name().replace("-rowwise-adagrad", "")


def test_trainer_trains_and_resumes_exactly_with_rowwise_adagrad(tmp_path):
    from qrec.errors import QrecError
    from qrec.train.trainer import fit

    cfg = RunConfig(dataset="synthetic-powerlaw:users=300,items=200,n=4000", optimizer="rowwise-adagrad", lr=0.05,
                    dim=8, epochs=2, batch_size=256, threads=1)
    quiet = dict(progress=False, log=lambda _: None)
    full = fit(cfg, tmp_path / "a", **quiet)
    assert full.history[1]["loss"] < full.history[0]["loss"]
    fit(cfg.replace(epochs=1), tmp_path / "b", **quiet)
    resumed = fit(cfg, tmp_path / "b", **quiet)
    untimed = lambda history: [{k: v for k, v in row.items() if k not in ("seconds", "rows_per_second")} for row in history]  # noqa: E731
    assert untimed(resumed.history) == untimed(full.history) and resumed.test == full.test
    with pytest.raises(QrecError, match="optimizer"):
        fit(cfg.replace(optimizer="sgd"), **quiet)


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from qrec.compress.mgqe import MGQEEmbedding
    from qrec.models.graph import normalized_adjacency
    from qrec.train.optim import RowWiseAdagrad
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    base = peak()
    n, d = 10**6, 16
    counts = np.random.default_rng(0).zipf(1.5, size=n)
    table = MGQEEmbedding(n, d, "mgqe4x256/64@0.1", counts)
    opt = RowWiseAdagrad([table.query], lr=0.1)
    ids = torch.randint(0, n, (4096,))
    table(ids).square().sum().backward()
    opt.step()
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, n // 2, 3 * n), rng.integers(0, n // 2, 3 * n)
    A = normalized_adjacency((users, items), n // 2, n // 2)
    print(json.dumps({"base": base, "peak": peak(), "nodes": A.shape[0], "nnz": int(A.values().numel())}))
""")


@pytest.mark.slow  # a subprocess building 10^6-row structures: ~10 s idle
def test_a_million_row_mgqe_table_and_a_million_node_graph_fit_a_memory_cap():
    """No O(n^2) or O(users x items) allocation: a 10^6-row MGQE table (query 64 MB, its dense gradient as much)
    trained one row-wise AdaGrad step, and LightGCN's normalised adjacency over 10^6 nodes and 3 x 10^6 edges
    (12 x 10^6 stored values with int64 indices), within 1.5 GB above the interpreter with torch loaded; one
    dense n x n float32 matrix would be 4 TB."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["nodes"] == 10**6 and stats["nnz"] > 5 * 10**6
    assert stats["peak"] - stats["base"] < 1.5 * 2**30, stats


@pytest.mark.parametrize("embedding", ["full", "dpq4x16c", "mgqe4x16/8@0.25", "mgqe-uk4x16/8@0.25"])
def test_sparse_table_gradients_train_exactly_as_dense_ones(embedding):
    """rowwise_adagrad switches the tables to sparse gradients; three steps land where dense gradients do."""
    batch = {"users": torch.tensor([0, 1, 1, 5]), "items": torch.tensor([2, 3, 2, 30]),
             "labels": torch.tensor([1.0, 0.0, 1.0, 0.0])}
    trained = []
    for sparse in (False, True):
        torch.manual_seed(0)
        model = _model(embedding)
        chain = rowwise_adagrad(model, lr=0.1)
        for table in model.embedding_tables().values():
            table.sparse_grad = sparse
        for _ in range(3):
            chain.zero_grad()
            model.training_loss(batch).backward()
            chain.step()
        assert model.item_table.parameters().__next__().grad.is_sparse == sparse
        trained.append(model.state_dict())
    for name, value in trained[0].items():
        torch.testing.assert_close(trained[1][name], value, rtol=1e-6, atol=1e-7, msg=name)
