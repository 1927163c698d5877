"""Shared fixtures: ``shared_data`` points at the real benchmark files (read-only) or skips; ``seq_file`` and
``graph_dir`` are tiny synthetic datasets (sequences; LightGCN train/test files) for end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

_DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real datasets: ``$QREC_DATA_DIR``, else ``../shared/data`` beside the repo.
    Tests that use it skip cleanly when it is absent."""
    root = Path(os.environ.get("QREC_DATA_DIR") or _DEFAULT_DATA).resolve()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set QREC_DATA_DIR)")
    return root


def pytest_collection_modifyitems(items):
    """Mark every test that uses ``shared_data`` so ``-m 'not shared_data'`` deselects them."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def seq_file(tmp_path_factory):
    """40 users with 8-20 chronological items out of 60 (raw ids offset by 1000 to check the id maps)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "sequences.txt"
    lines = []
    for u in range(40):
        items = rng.choice(60, size=rng.integers(8, 20), replace=False) + 1000
        lines.append(" ".join(map(str, [u + 1, *items])))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def graph_dir(tmp_path_factory):
    """LightGCN-format train.txt/test.txt: 30 users in 3 planted communities of 10 items each."""
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("graph")
    train, test = [], []
    for u in range(30):
        items = rng.permutation(10) + 10 * (u % 3)
        train.append(" ".join(map(str, [u, *items[:7]])))
        test.append(" ".join(map(str, [u, *items[7:]])))
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    return folder


@pytest.fixture(scope="session")
def served_models(seq_file, graph_dir, tmp_path_factory):
    """Small trained models and their artifacts (name -> (FitResult, artifact path)): GMF-MGQE and SASRec-DPQ on
    ``seq_file``, the 1-bit GCN on ``graph_dir``; one epoch each (what is tested is serving, not quality)."""
    from qrec.export.artifact import export_model, history_length, serving_data
    from qrec.train.config import RunConfig
    from qrec.train.trainer import fit

    folder = tmp_path_factory.mktemp("artifacts")
    seq = dict(dataset="sequences", data_path=str(seq_file), dim=8, epochs=1, batch_size=64, threads=1)
    configs = {
        "gmf": RunConfig(model="gmf", embedding="mgqe4x16/4@0.25", **seq),
        "sasrec": RunConfig(model="sasrec", embedding="dpq4x16c", model_options={"maxlen": 8}, **seq),
        "binary-gcn": RunConfig(dataset="lightgcn", data_path=str(graph_dir), protocol="given", model="binary-gcn",
                                epochs=1, batch_size=64, dim=64, ks=(20,), select_metric="ndcg@20", threads=1),
    }
    out = {}
    for name, cfg in configs.items():
        res = fit(cfg, None, progress=False, log=lambda s: None)
        path = folder / f"{name}.safetensors"
        export_model(res.model, cfg.to_dict(), path, serving_data(res.split, history_length(res.model)))
        out[name] = (res, path)
    return out


@pytest.fixture(scope="session")
def ratings_file(tmp_path_factory):
    """A MovieLens-100K-format ``u.data`` (user, item, 1-5 stars, time; tab-separated): 60 users x 40 items, each
    user rating about half of them, stars from a rank-2 taste model plus noise (so co-ratings correlate)."""
    rng = np.random.default_rng(1)
    taste, traits = rng.normal(size=(60, 2)), rng.normal(size=(40, 2))
    lines = []
    for u in range(60):
        for i in np.flatnonzero(rng.random(40) < 0.5):
            star = int(np.clip(np.rint(3 + taste[u] @ traits[i] + 0.5 * rng.normal()), 1, 5))
            lines.append(f"{u + 1}\t{i + 101}\t{star}\t{880000000 + len(lines)}")
    path = tmp_path_factory.mktemp("ratings") / "u.data"
    path.write_text("\n".join(lines) + "\n")
    return path
