"""FAISS indexes built from qrec's own codes return qrec's top-k on the same queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qrec
from qrec.errors import QrecError
from qrec.export.faiss_index import binary_index, faiss_index, sign_bytes
from qrec.retrieval.hamming import BinaryCodes

faiss = pytest.importorskip("faiss")

FAST = dict(dim=8, epochs=1, batch_size=64, threads=1)


@pytest.mark.parametrize("spec", ["dpq4x16c", "dpq2x256", "mgqe4x16/4@0.25"])
def test_index_pq_holds_qrecs_codebook_and_ranks_as_qrec(seq_file, spec):
    model = qrec.fit(str(seq_file), model="gmf", embedding=spec, **FAST)
    scorer = model.scorer
    index = faiss_index(scorer)
    assert index.ntotal == model.n_items and 2**index.pq.nbits == int(spec.split("x")[1].split("/")[0].rstrip("c"))
    with torch.no_grad():
        queries = scorer.user_table(torch.arange(model.n_users)) * scorer.output.weight[0]  # what GMF ranks by
        top, values = scorer.item_table.topk(queries, 10)
        exact = (queries.double() @ scorer.item_table.all().double().T).numpy()
    dist, ids = index.search(queries.numpy(), 10)
    np.testing.assert_allclose(dist, values.numpy(), rtol=1e-5, atol=1e-6)
    # the same items, up to items tied to float32 rounding: FAISS's picks score as high as qrec's, exactly
    np.testing.assert_allclose(np.take_along_axis(exact, ids, 1), np.take_along_axis(exact, top.numpy(), 1),
                               rtol=1e-5, atol=1e-6)
    assert (ids == top.numpy()).mean() > 0.95


def test_index_binary_flat_holds_the_sign_bits_and_ranks_by_hamming(served_models):
    model = qrec.load(served_models["binary-gcn"][1])
    users, items = model.scorer.users, model.scorer.items
    index = faiss_index(model.scorer)
    assert index.ntotal == model.n_items and index.d == items.bits.shape[1] * items.bits.shape[2] * 64
    queries = sign_bytes(users)
    dist, ids = index.search(queries, 8)
    brute = np.unpackbits(queries[:, None, :] ^ sign_bytes(items)[None, :, :], axis=2).sum(2)  # Hamming
    assert np.array_equal(np.take_along_axis(brute, ids, 1), dist)
    assert np.array_equal(dist, np.sort(brute, axis=1)[:, :8])


def test_with_equal_scales_faiss_and_qrec_rank_the_same(served_models):
    """One layer, unit scales: qrec's score is d - 2 Hamming, so both rank identically (ties by index in qrec)."""
    model = qrec.load(served_models["binary-gcn"][1])
    one = lambda c: BinaryCodes(c.bits[:, :1].contiguous(), torch.ones(len(c), 1), c.dim)  # noqa: E731
    users, items = one(model.scorer.users), one(model.scorer.items)
    top, values = users.topk(items, 10)
    dist, ids = binary_index(items).search(sign_bytes(users), 10)
    assert np.array_equal((items.dim - values.numpy()) / 2, dist)  # the same ranked distances, row by row
    brute = np.unpackbits(sign_bytes(users)[:, None, :] ^ sign_bytes(items)[None, :, :], axis=2).sum(2)
    assert np.array_equal(np.take_along_axis(brute, ids, 1), np.take_along_axis(brute, top.numpy(), 1))


def test_formats_without_a_faiss_index_are_refused(seq_file, served_models):
    with pytest.raises(QrecError, match="no product-quantization codes"):
        faiss_index(qrec.fit(str(seq_file), model="gmf", embedding="sq4", **FAST).scorer)
    with pytest.raises(QrecError, match="one codebook per group"):
        faiss_index(qrec.fit(str(seq_file), model="gmf", embedding="mgqe-uk4x16/4@0.25", **FAST).scorer)
    with pytest.raises(QrecError, match="no FAISS form for a Popularity"):
        faiss_index(qrec.fit(str(seq_file), model="pop", **FAST).scorer)


def test_qrec_export_faiss_writes_a_readable_index(seq_file, graph_dir, tmp_path, capsys):
    from qrec.cli import main

    run = tmp_path / "run"
    assert main(["train", "--dataset", "lightgcn", "--path", str(graph_dir), "--protocol", "given", "--model",
                 "binary-gcn", "--epochs", "1", "--batch-size", "64", "--ks", "20", "--quiet", "--out", str(run)]) == 0
    assert main(["export", str(run), str(tmp_path / "m.safetensors"), "--faiss", str(tmp_path / "items.index")]) == 0
    assert "IndexBinaryFlat" in capsys.readouterr().out
    index = faiss.read_index_binary(str(tmp_path / "items.index"))
    served = qrec.load(tmp_path / "m.safetensors")
    assert index.ntotal == served.n_items
    assert np.array_equal(index.search(sign_bytes(served.scorer.users[:3]), 5)[0],
                          binary_index(served.scorer.items).search(sign_bytes(served.scorer.users[:3]), 5)[0])
