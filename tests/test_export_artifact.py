"""Artifact version 2: self-contained (vocabularies, seen items, SASRec histories), verified on load, served
exactly as the trained model scores; version-1 and malformed files refused with a message naming them."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save

from qrec.compress.base import tensor_bits
from qrec.errors import DataFormatError
from qrec.export.artifact import history_length, load_artifact, read_manifest, serving_data
from qrec.export.container import pack, unpack


@pytest.mark.parametrize("name", ["gmf", "sasrec", "binary-gcn"])
def test_round_trip_serves_the_trained_model_from_the_file_alone(served_models, name):
    res, path = served_models[name]
    artifact = load_artifact(path)
    manifest, split = artifact.manifest, res.split
    assert manifest["version"] == 2 and manifest["serving_bits"] == res.model.serving_bits()
    tensors, _ = unpack(path.read_bytes(), path)
    assert manifest["vocab_bits"] == tensor_bits({k: t for k, t in tensors.items() if k.startswith("vocab/")})
    assert manifest["history_bits"] == tensor_bits({k: t for k, t in tensors.items() if k.startswith(("seen/", "history/"))})
    assert list(artifact.data.user_ids) == list(split.train.user_ids)
    assert list(artifact.data.item_ids) == list(split.train.item_ids)
    every = serving_data(split, history_length(res.model))
    assert (artifact.data.seen != every.seen).nnz == 0  # train, valid and test items: the whole history
    assert artifact.data.seen.sum() == len({(u, i) for p in (split.train, split.valid, split.test)
                                            for u, i in zip(p.users, p.items)})
    users = torch.arange(split.n_users)
    if name != "sasrec":  # SASRec serves the whole history; the trained model reads the test-stage windows
        with torch.no_grad():
            torch.testing.assert_close(artifact.model.score_all(users), res.model.eval().score_all(users),
                                       rtol=1e-5, atol=1e-5)


def test_saving_a_loaded_artifact_gives_the_same_bytes(served_models, tmp_path):
    from qrec.serving.model import Model

    _, path = served_models["gmf"]
    Model.load(path).save(tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("name", ["gmf", "binary-gcn"])
def test_random_byte_flips_in_an_artifact_are_all_detected(served_models, tmp_path, name):
    _, path = served_models[name]
    raw = path.read_bytes()
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    rng = np.random.default_rng(0)
    for pos in rng.integers(start, len(raw), size=150):
        bad = bytearray(raw)
        bad[pos] ^= int(rng.integers(1, 256))
        (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
        with pytest.raises(DataFormatError, match=r"bad.safetensors: tensor '[^']+' is corrupt"):
            load_artifact(tmp_path / "bad.safetensors")


def _repacked(path, change) -> bytes:
    """The artifact with its tensors / manifest changed and the hashes recomputed: defects only structure finds."""
    tensors, manifest = unpack(path.read_bytes(), path)
    change(tensors, manifest)
    manifest.pop("tensors")
    return pack(tensors, manifest)[0]


def _set(key, value):
    return lambda tensors, manifest: tensors.__setitem__(key, value)


@pytest.mark.parametrize("change, message", [
    (lambda t, m: t.pop("vocab/items"), "no id vocabulary 'vocab/items'"),
    (lambda t, m: t.__setitem__("vocab/users", t["vocab/users"][:-1]), "vocab/users: .* ids for"),
    (lambda t, m: t.__setitem__("vocab/users", torch.zeros_like(t["vocab/users"])), "not unique"),
    (lambda t, m: t.__setitem__("seen/indptr", t["seen/indptr"].flip(0)), "not a CSR matrix"),
    (lambda t, m: t.__setitem__("seen/items", t["seen/items"] + 10**6), "not a CSR matrix"),
    (lambda t, m: t.pop("tables/item_table/codes0"), "does not describe a model"),
    (lambda t, m: t.pop("dense/output.bias"), "dense weights do not fit"),
    (lambda t, m: m["tables"]["item_table"].update(spec="nonsense"), "does not describe a model"),
    (lambda t, m: m["tables"]["item_table"].update({"class": "Nope"}), "unknown table class Nope"),
    (lambda t, m: m["config"].update(model="nope"), "no served form for model 'nope'"),
    (lambda t, m: m.update(n_items=m["n_items"] + 1), "ids for"),
    (lambda t, m: m.update(version=3), "format version 3"),
    (lambda t, m: m.update(format="other"), "not a qrec artifact"),
])
def test_structurally_wrong_artifacts_are_data_format_errors(served_models, change, message):
    _, path = served_models["gmf"]
    with pytest.raises(DataFormatError, match=message):
        load_artifact(_repacked(path, change), name="edited.safetensors")


def test_a_sasrec_artifact_without_histories_is_refused(served_models):
    _, path = served_models["sasrec"]
    with pytest.raises(DataFormatError, match="history windows"):
        load_artifact(_repacked(path, lambda t, m: t.pop("history/items")), name="s.safetensors")
    with pytest.raises(DataFormatError, match="history/items"):
        load_artifact(_repacked(path, _set("history/items", torch.full((2, 8), 10**6, dtype=torch.int32))), name="s")


def test_a_version_1_artifact_says_how_to_re_export(tmp_path):
    manifest = {"format": "qrec-artifact", "version": 1, "config": {}, "tables": {}}
    (tmp_path / "old.safetensors").write_bytes(save({"dense/w": torch.zeros(2)}, metadata={"qrec": json.dumps(manifest)}))
    for read in (load_artifact, read_manifest):
        with pytest.raises(DataFormatError, match=r"old.safetensors: a version-1 .*qrec export <run folder>"):
            read(tmp_path / "old.safetensors")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        load_artifact(tmp_path / "none.safetensors")
    with pytest.raises(DataFormatError, match="is a folder"):
        load_artifact(tmp_path)
    (tmp_path / "plain.safetensors").write_bytes(save({"w": torch.zeros(2)}))
    with pytest.raises(DataFormatError, match="without a qrec manifest"):
        load_artifact(tmp_path / "plain.safetensors")


def test_loading_imports_neither_training_nor_experiments(served_models):
    """Layering: a server imports export, models, compress, retrieval and data, never train / experiments."""
    _, path = served_models["sasrec"]
    code = ("import sys; import qrec; m = qrec.load(sys.argv[1]); m.recommend(m.user_ids[:3], k=2); "
            "bad = sorted(n for n in sys.modules if n.startswith(('qrec.train', 'qrec.experiments'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_loaded_graph_model_exports_to_the_same_bytes(served_models):
    from qrec.export.artifact import artifact_bytes

    _, path = served_models["binary-gcn"]
    artifact = load_artifact(path)
    assert artifact_bytes(artifact.model, artifact.manifest["config"], artifact.data)[0] == path.read_bytes()


def test_an_artifact_naming_a_foreign_file_as_its_data_echoes_none_of_it(served_models, tmp_path, capsys):
    """``qrec evaluate <artifact>`` reads the held-out data its manifest names: a crafted manifest (hashes made
    consistent) pointing at another file gets an error that prints none of that file (it used to echo the first
    line of /etc/passwd)."""
    from qrec.cli import main

    _, path = served_models["gmf"]
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret-first-line\n")
    crafted = tmp_path / "crafted.safetensors"
    crafted.write_bytes(_repacked(path, lambda t, m: m["config"].update(dataset="table", data_path=str(secret))))
    assert main(["evaluate", str(crafted)]) == 2
    err = capsys.readouterr().err
    assert "its manifest names the data 'table'" in err and "secret-first-line" not in err
