"""The serving commands end to end: ``qrec export`` / ``evaluate`` / ``recommend`` on graph and popularity
models, from the artifact alone (the training data moved away), the whole history filtered."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qrec.cli import main
from qrec.train.pipeline import _cached_split

GRAPH = ["--dataset", "lightgcn", "--protocol", "given", "--epochs", "1", "--batch-size", "64", "--ks", "20",
         "--threads", "1", "--quiet"]


def _json_out(capsys):
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("model, options", [("lightgcn", []), ("binary-gcn", []),
                                            ("lowbit-gcn", ["--option", "bits=2"])])
def test_graph_artifacts_evaluate_and_recommend_from_the_file_alone(graph_dir, tmp_path, capsys, model, options):
    data = tmp_path / "data"
    shutil.copytree(graph_dir, data)
    run, artifact = tmp_path / "run", tmp_path / "model.safetensors"
    assert main(["train", *GRAPH, "--path", str(data), "--model", model, *options, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    checkpoint = _json_out(capsys)
    assert main(["export", str(run), str(artifact)]) == 0
    assert "id vocabularies" in capsys.readouterr().out
    assert main(["evaluate", str(artifact), "--json"]) == 0  # graph scorers have no parameters: this used to crash
    served = _json_out(capsys)
    assert served["metrics"] == checkpoint["metrics"] and served["serving_bits"] == checkpoint["serving_bits"]

    shutil.rmtree(data)  # from here on, only the artifact
    assert main(["recommend", str(artifact), "--user", "0", "4", "-k", "5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["user"] for x in lines] == ["0", "4"] and all(len(x["items"]) == 5 for x in lines)
    history = _history(graph_dir)
    assert not history[0] & set(lines[0]["items"]) and not history[4] & set(lines[1]["items"])
    _cached_split.cache_clear()  # the split of this process's earlier commands
    assert main(["evaluate", str(artifact)]) == 2  # evaluating needs the data; serving does not
    assert "qrec: error:" in capsys.readouterr().err


def _history(folder) -> dict[int, set[int]]:
    """Each user's items over train.txt and test.txt."""
    out: dict[int, set[int]] = {}
    for name in ("train.txt", "test.txt"):
        for line in (folder / name).read_text().splitlines():
            user, *items = map(int, line.split())
            out.setdefault(user, set()).update(items)
    return out


def test_recommend_filters_the_whole_history_by_default(seq_file, tmp_path, capsys):
    run, artifact = tmp_path / "run", tmp_path / "m.safetensors"
    args = ["--dataset", "sequences", "--path", str(seq_file), "--model", "gmf", "--embedding", "dpq4x16c", "--dim", "8",
            "--epochs", "1", "--threads", "1", "--quiet"]
    assert main(["train", *args, "--out", str(run)]) == 0
    assert main(["export", str(run), str(artifact)]) == 0
    lines = {int(line.split()[0]): list(map(int, line.split()[1:])) for line in seq_file.read_text().splitlines()}
    capsys.readouterr()
    n_items = len({i for items in lines.values() for i in items})
    assert main(["recommend", str(artifact), "--user", "1", "-k", str(n_items)]) == 0
    ranked = json.loads(capsys.readouterr().out)["items"]
    assert len(ranked) == n_items - len(lines[1]) and not set(ranked) & set(lines[1])  # test items included
    assert main(["recommend", str(artifact), "--user", "1", "-k", str(n_items), "--keep-seen"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == n_items
    assert main(["recommend", str(artifact), "--user", "nobody"]) == 2
    assert "unknown user id(s): 'nobody'" in capsys.readouterr().err


def test_pop_trains_evaluates_and_equals_a_hand_count(seq_file, tmp_path, capsys):
    """Popularity HR@10 against a direct count: train items by frequency, ties to the lower index, the user's
    training and validation items masked (leave-one-out: the last item is test, the one before valid)."""
    run = tmp_path / "pop"
    assert main(["train", "--dataset", "sequences", "--path", str(seq_file), "--model", "pop", "--epochs", "1",
                 "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    metrics = _json_out(capsys)["metrics"]
    sequences = [list(map(int, line.split()[1:])) for line in seq_file.read_text().splitlines()]
    items = sorted({i for s in sequences for i in s})
    counts = np.zeros(len(items))
    for s in sequences:
        for i in s[:-2]:
            counts[items.index(i)] += 1
    order = sorted(range(len(items)), key=lambda i: (-counts[i], i))
    hits = [s[-1] in [items[i] for i in order if items[i] not in s[:-1]][:10] for s in sequences]
    assert metrics["hr@10"] == pytest.approx(np.mean(hits), abs=1e-12)
