"""``qrec.fit`` / ``qrec.load`` / ``Model``: raw ids in and out, the whole history filtered, the same answers
from the fitted object and from its saved file, checked against brute-force rankings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import qrec
from qrec.data.sequences import last_items, user_sequences
from qrec.errors import QrecError
from qrec.retrieval.topk import masked_topk
from qrec.export.vocab import UnknownIdError
from qrec.serving.model import Model

FAST = dict(dim=8, epochs=1, batch_size=64, threads=1)


def _reference(model: Model, users: np.ndarray, k: int, mask=None):
    """Brute force: every item scored, ``mask`` set to -inf, ranked by (score desc, index asc)."""
    with torch.no_grad():
        scores = model.scorer.score_all(torch.from_numpy(users)).float().clone()
    top, val = masked_topk(scores, k, mask)
    return top.numpy(), val.numpy()


@pytest.mark.parametrize("name", ["gmf", "sasrec", "binary-gcn"])
def test_recommend_equals_brute_force_with_the_whole_history_masked(served_models, name):
    res, path = served_models[name]
    model = qrec.load(path)
    users = np.arange(model.n_users)
    items, scores = model.recommend(model.user_ids, k=5)
    ref_top, ref_val = _reference(model, users, 5, model.seen)
    np.testing.assert_allclose(scores, ref_val, rtol=1e-6, atol=1e-7)
    assert (items == model.item_ids[ref_top]).mean() > 0.99  # the same items but for float near-ties
    split = res.split
    for p in (split.train, split.valid, split.test):  # nothing a user has seen, in any part of the history
        known = set(zip(p.user_ids[p.users].tolist(), p.item_ids[p.items].tolist()))
        assert not any((u, i) in known for u, row in zip(model.user_ids.tolist(), items.tolist()) for i in row)


def test_sasrec_serves_each_user_from_their_whole_history(served_models):
    res, path = served_models["sasrec"]
    model = qrec.load(path)
    split = res.split
    every = last_items(*user_sequences(split.train, split.valid, split.test), 8)
    assert np.array_equal(model.scorer.history(torch.arange(model.n_users)).numpy(), every)


def test_shapes_follow_the_input_like_implicit(served_models):
    model = qrec.load(served_models["gmf"][1])
    one_items, one_scores = model.recommend(model.user_ids[3], k=4)
    assert one_items.shape == (4,) and one_scores.shape == (4,)
    many_items, many_scores = model.recommend(model.user_ids[[3, 5]], k=4)
    assert many_items.shape == (2, 4) and np.array_equal(many_items[0], one_items)
    as_text, _ = model.recommend([str(model.user_ids[3])], k=4)  # a numeric string names an integer id
    assert np.array_equal(as_text[0], one_items)


def test_filter_seen_and_exclude(served_models):
    model = qrec.load(served_models["gmf"][1])
    user = model.user_ids[0]
    unfiltered, _ = model.recommend(user, k=model.n_items, filter_seen=False)
    ref, _ = _reference(model, np.array([0]), model.n_items)
    assert np.array_equal(unfiltered, model.item_ids[ref[0]])
    top, _ = model.recommend(user, k=3)
    extra, scores = model.recommend(user, k=3, exclude=[top[0], "no such item"])
    assert top[0] not in extra and np.array_equal(extra[:2], top[1:])
    n_seen = model.seen[0].nnz
    _, tail = model.recommend(user, k=model.n_items)  # more than the rankable items: -inf at the end
    assert np.isinf(tail[-n_seen:]).all() and np.isfinite(tail[:-n_seen]).all()


def test_bad_queries_raise_clear_errors(served_models):
    model = qrec.load(served_models["gmf"][1])
    with pytest.raises(UnknownIdError, match=r"unknown user id\(s\): 99999, 'x'"):
        model.recommend([model.user_ids[0], 99999, "x"])
    for k in (0, model.n_items + 1, "3", 2.0, True):
        with pytest.raises(QrecError, match="k must be an integer"):
            model.recommend(model.user_ids[0], k=k)
    with pytest.raises(QrecError, match="no ids"):
        model.recommend([])
    with pytest.raises(UnknownIdError, match="unknown item"):
        model.similar_items(-5)


@pytest.mark.parametrize("name", ["gmf", "binary-gcn"])
def test_similar_items_is_cosine_over_the_decoded_item_vectors(served_models, name):
    model = qrec.load(served_models[name][1])
    scorer = model.scorer
    with torch.no_grad():
        vectors = (scorer.item_table.all() if hasattr(scorer, "item_table") else scorer.items.decode()).double()
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    cosine = (unit @ unit.T).fill_diagonal_(-np.inf)
    items, scores = model.similar_items(model.item_ids[:6], k=5)
    ref_val = cosine[:6].topk(5, dim=1).values.numpy()
    np.testing.assert_allclose(scores, ref_val, rtol=1e-5, atol=1e-6)
    rows = model.items.lookup(items.reshape(-1)).reshape(items.shape)  # items with equal codes tie: compare values
    np.testing.assert_allclose(np.take_along_axis(cosine[:6].numpy(), rows, 1), ref_val, rtol=1e-5, atol=1e-6)


def test_fit_on_a_dataframe_with_string_ids_and_load_it_back(tmp_path):
    rng = np.random.default_rng(0)
    users = [f"user-{u}" for u in rng.integers(0, 30, 500)]
    items = [f"item/{i}" for i in rng.integers(0, 40, 500)]
    df = pd.DataFrame({"user": users, "item": items})  # repeated pairs: summed by default
    model = qrec.fit(df, model="gmf", embedding="dpq4x16c", **FAST)
    assert model.metrics["test"]["users"] > 0 and model.item_ids.dtype.kind == "U"
    path = model.save(tmp_path / "m.safetensors")
    loaded = qrec.load(path)
    a, b = model.recommend(["user-1", "user-2"], k=5), loaded.recommend(["user-1", "user-2"], k=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[0][0][0].startswith("item/")
    assert np.array_equal(model.similar_items("item/3", k=3)[0], loaded.similar_items("item/3", k=3)[0])
    with pytest.raises(Exception, match="duplicate interaction"):
        qrec.fit(df, duplicates="error", **FAST)


@pytest.mark.parametrize("users", [[0], [3, 3, 0], [5, 1, 7, 2]])
def test_seen_rows_are_the_rows_of_the_seen_matrix(served_models, users):
    model = qrec.load(served_models["gmf"][1])
    rows = np.array(users)
    got = model._seen_rows(rows)
    assert got.has_sorted_indices and (got != model.seen[rows]).nnz == 0 and got.shape == (len(rows), model.n_items)
    mixed = model._exclusions(rows, np.arange(len(rows)) % 2 == 0, [np.array([1, 2])] * len(rows))
    want = model.seen[rows].toarray() * (np.arange(len(rows)) % 2 == 0)[:, None]
    want[:, [1, 2]] = 1
    assert np.array_equal(mixed.toarray() != 0, want != 0)


def _repeated_pairs(kind: str, tmp_path):
    """Users 0-5, four items each out of 0-8, and user 0's item 1 given twice more: a file path, a DataFrame or a
    COO matrix (which holds repeated entries; a CSR made from it has summed them already)."""
    users = [u for u in range(6) for _ in range(4)] + [0, 0]
    items = [(u + j) % 9 for u in range(6) for j in range(4)] + [1, 1]
    frame = pd.DataFrame({"user": users, "item": items})
    if kind == "file":
        frame.to_csv(tmp_path / "dup.csv", index=False)
        return str(tmp_path / "dup.csv")
    if kind == "frame":
        return frame
    return sp.coo_matrix((np.ones(len(users), np.float32), (users, items)), shape=(6, 9))


@pytest.mark.parametrize("kind", ["file", "frame", "matrix"])
def test_fit_sums_drops_or_refuses_repeated_pairs_alike_for_every_input(kind, tmp_path):
    data = _repeated_pairs(kind, tmp_path)
    with pytest.raises(QrecError, match=r"duplicate interaction \(user 0, item 1\)"):
        qrec.fit(data, model="pop", protocol="all", duplicates="error", ks=(3,), **FAST)
    distinct = {(u, (u + j) % 9) for u in range(6) for j in range(4)}
    users_per_item = np.bincount([i for _, i in distinct], minlength=9)
    for how in ("sum", "drop"):  # one interaction per pair: the popularity model counts users, not rows
        model = qrec.fit(data, model="pop", protocol="all", duplicates=how, ks=(3,), **FAST)
        assert model.seen.nnz == len(distinct) and model.manifest["config"]["duplicates"] == how
        items, scores = model.recommend(5, k=9, filter_seen=False)
        assert scores.tolist() == users_per_item[items.astype(int)].tolist()


def test_protocol_all_trains_on_everything_and_filters_it(seq_file):
    model = qrec.fit(str(seq_file), model="pop", protocol="all", **FAST)
    assert model.metrics["test"] == {} and model.manifest["config"]["protocol"] == "all"
    lines = [list(map(int, line.split())) for line in seq_file.read_text().splitlines()]
    counts = np.bincount(np.concatenate([line[1:] for line in lines]) - 1000)
    user, seen = lines[0][0], set(lines[0][1:])
    items, scores = model.recommend(user, k=5)
    order = [i + 1000 for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)) if i + 1000 not in seen]
    assert items.tolist() == order[:5] and scores.tolist() == [counts[i - 1000] for i in order[:5]]


def test_fit_on_a_sparse_matrix_and_refuse_what_it_cannot_read():
    m = sp.random(25, 30, density=0.3, format="csr", random_state=0)
    model = qrec.fit(m, model="gmf", **FAST)
    assert model.n_users == 25 and model.recommend(3, k=2)[0].shape == (2,)
    with pytest.raises(QrecError, match="must be a file path, a pandas DataFrame or a SciPy sparse matrix"):
        qrec.fit([(1, 2)])
    with pytest.raises(QrecError, match="known config keys"):
        qrec.fit(m, no_such_option=1)
    with pytest.raises(QrecError, match="has no item embeddings"):
        qrec.fit(m, model="pop", protocol="all", **FAST).similar_items(0)


def test_build_table_is_a_trainable_module_with_its_aux_loss():
    table = qrec.build_table("dpq4x16c", 50, 8)
    assert isinstance(table, torch.nn.Module) and "aux_loss" in qrec.build_table.__doc__
    loss = table(torch.tensor([1, 2, 3])).sum() + table.aux_loss()
    loss.backward()
    assert table.aux_loss().item() > 0 and table.centroids.grad.abs().sum() > 0  # the loss trains the codebooks


def test_a_model_loaded_from_a_file_saves_that_file_without_holding_its_bytes(served_models, tmp_path):
    """A server holds the decoded tables, not also the artifact's bytes; saving re-reads the file, the same bytes,
    and refuses a file that changed since (another artifact written over it)."""
    import shutil

    from qrec.errors import DataFormatError

    path = tmp_path / "m.safetensors"
    shutil.copy(served_models["gmf"][1], path)
    model = qrec.load(path)
    assert model._artifact.raw is None and model.metadata()["file_bytes"] == path.stat().st_size
    assert model.save(tmp_path / "copy.safetensors").read_bytes() == path.read_bytes()
    shutil.copy(served_models["sasrec"][1], path)
    with pytest.raises(DataFormatError, match="changed on disk"):
        model.save(tmp_path / "again.safetensors")
    assert not (tmp_path / "again.safetensors").exists()


def test_a_served_float_table_is_the_decoded_tensor_itself():
    """No second copy of a float table at load (a 10^7 x 64 table is 2.5 GB); a wrong weight is refused."""
    from qrec.compress.full import FullEmbedding

    weight = torch.randn(7, 4)
    table = FullEmbedding(7, 4, weight=weight)
    assert table.weight.data_ptr() == weight.data_ptr() and not table.weight.requires_grad
    with pytest.raises(ValueError, match="float32 7 x 4"):
        FullEmbedding(7, 4, weight=torch.randn(7, 5))
