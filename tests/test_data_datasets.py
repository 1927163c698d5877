"""Dataset registry: the five-place resolution order, checksummed downloads, caching, stats."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from qrec.data import datasets
from qrec.data.datasets import (
    DATASETS,
    DatasetSpec,
    Layout,
    Remote,
    list_datasets,
    load_dataset,
    resolved_source,
)
from qrec.data.interactions import Interactions, Split
from qrec.data.loaders import read_lightgcn_split, read_ml100k
from qrec.data.stats import describe, gini
from qrec.errors import DataFormatError, DatasetNotFoundError

# The tiny test files are not the published ones; that warning is asserted where it matters.
pytestmark = pytest.mark.filterwarnings("ignore::qrec.data.datasets.ModifiedDataWarning")

U_DATA = "1\t10\t5\t100\n1\t11\t3\t101\n2\t10\t4\t102\n"
ALL_NAMES = ["ml-100k", "ml-1m", "ml-1m-seq", "ml-1m-lgcn", "gowalla", "amazon-electronics",
             "amazon-book", "yelp2018", "beauty", "lastfm"]
GENERIC_FORMATS = ["sequences", "lightgcn", "table", "movielens"]  # need an explicit --path; never downloaded
DERIVED = ["ml-100k-i2i", "ml-1m-i2i"]  # computed from a registered dataset (test_data_relevance.py)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No QREC_DATA_DIR, an empty cache, no downloads, no recbole: only what a test sets up."""
    monkeypatch.delenv("QREC_DATA_DIR", raising=False)
    monkeypatch.setenv("QREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QREC_OFFLINE", "1")
    monkeypatch.setitem(DATASETS, "ml-100k", _without_bundle(DATASETS["ml-100k"]))
    monkeypatch.setattr(datasets, "_LAST_SOURCE", {})
    return tmp_path


def _without_bundle(spec: DatasetSpec) -> DatasetSpec:
    return DatasetSpec(spec.name, spec.description, spec.layouts, spec.sha256, spec.remote, None, spec.note)


def _folder(root, name, files: dict):
    folder = root / name
    folder.mkdir(parents=True)
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


def test_registry_lists_every_dataset_with_a_description():
    described = list_datasets()
    assert list(described) == ALL_NAMES + GENERIC_FORMATS + DERIVED + ["synthetic-powerlaw"]  # generated last
    assert all(DATASETS[name].computed.base in ALL_NAMES and not DATASETS[name].layouts for name in DERIVED)
    assert all(isinstance(text, str) and text and "\n" not in text for text in described.values())
    assert all(DATASETS[name].remote for name in ALL_NAMES if name != "ml-1m-seq")
    for spec in DATASETS.values():  # a download must produce the files of one layout
        if spec.remote:
            assert tuple(r.file for r in spec.remote) in [layout.files for layout in spec.layouts]
            assert all(r.md5 or r.sha256 or spec.sha256.get(r.file) for r in spec.remote)  # all verified


def test_explicit_folder_and_file(isolated):
    folder = _folder(isolated, "mine", {"u.data": U_DATA})
    data = load_dataset("ml-100k", path=folder)
    assert isinstance(data, Interactions) and len(data) == 3 and data.name == "ml-100k"
    assert resolved_source("ml-100k").kind == "path"
    renamed = folder / "ratings.tsv"
    renamed.write_text(U_DATA)
    assert len(load_dataset("ml-100k", path=renamed)) == 3  # any file name: the canonical reader
    inter = folder / "mine.inter"
    inter.write_text("user_id:token\titem_id:token\n1\t10\n")
    assert load_dataset("ml-100k", path=inter).meta["format"] == "recbole-inter"  # chosen by suffix


def test_table_format_reads_any_headed_file(isolated):
    folder = _folder(isolated, "own", {"ratings.csv": "userId,movieId,rating,timestamp\n1,10,4.0,5\n2,10,3.5,7\n"})
    data = load_dataset("table", path=folder / "ratings.csv")
    assert len(data) == 2 and data.meta["format"] == "table" and data.timestamps.tolist() == [5, 7]


def test_explicit_path_never_falls_back(isolated, monkeypatch):
    monkeypatch.setenv("QREC_DATA_DIR", str(_folder(isolated, "root/ml-100k", {"u.data": U_DATA}).parent))
    with pytest.raises(DatasetNotFoundError, match="no such file or folder"):
        load_dataset("ml-100k", path=isolated / "missing")
    with pytest.raises(DatasetNotFoundError, match="holds no ml-100k files: expected u.data or ml-100k.inter"):
        load_dataset("ml-100k", path=isolated / "root")


def test_split_dataset_needs_a_folder(isolated):
    folder = _folder(isolated, "gw", {"train.txt": "0 1\n", "test.txt": "0 2\n"})
    with pytest.raises(DatasetNotFoundError, match="pass the folder"):
        load_dataset("gowalla", path=folder / "train.txt")
    with pytest.warns(datasets.ModifiedDataWarning, match="differs from the published gowalla file"):
        split = load_dataset("gowalla", path=folder)
    assert isinstance(split, Split) and split.protocol == "given" and split.name == "gowalla"


def test_data_dir_comes_before_cache(isolated, monkeypatch):
    _folder(isolated, "cache/ml-100k", {"u.data": U_DATA + "3\t12\t1\t103\n"})
    assert len(load_dataset("ml-100k")) == 4 and resolved_source("ml-100k").kind == "cache"
    _folder(isolated, "data/ml-100k", {"u.data": U_DATA})
    monkeypatch.setenv("QREC_DATA_DIR", str(isolated / "data"))
    data = load_dataset("ml-100k")
    assert len(data) == 3 and resolved_source("ml-100k").kind == "QREC_DATA_DIR"
    assert data.meta["source"] == "QREC_DATA_DIR" and set(data.meta["sha256"]) == {"u.data"}


def test_not_found_lists_every_place_and_the_fixes(isolated):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("amazon-book")
    text = str(err.value)
    assert "$QREC_DATA_DIR/amazon-book: not set" in text
    assert str(isolated / "cache" / "amazon-book") in text
    assert "download: disabled" in text and "--path" in text and "QREC_DATA_DIR" in text
    with pytest.raises(DatasetNotFoundError, match="no public URL.*\n.*\nNote: generic format"):
        load_dataset("sequences")


def test_unknown_name_lists_known(isolated):
    with pytest.raises(DatasetNotFoundError, match="unknown dataset 'ml-2m'; known datasets: ml-100k, ml-1m"):
        load_dataset("ml-2m")


def test_same_files_load_once_until_they_change(isolated):
    folder = _folder(isolated, "a", {"u.data": U_DATA})
    first = load_dataset("ml-100k", path=folder)
    assert load_dataset("ml-100k", path=folder) is first
    (folder / "u.data").write_text(U_DATA + "3\t12\t1\t103\n")
    assert len(load_dataset("ml-100k", path=folder)) == 4


# --------------------------------------------------------------------------------------------
# The bundled recbole copy of MovieLens-100K
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="recbole (data package) not installed")
def test_recbole_route_without_importing_recbole(tmp_path):
    code = (
        "import sys; from qrec.data.datasets import load_dataset, resolved_source\n"
        "d = load_dataset('ml-100k', download=False)\n"
        "print(resolved_source('ml-100k').kind, d.n_users, d.n_items, len(d), 'recbole' in sys.modules)\n"
    )
    env = {"QREC_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["recbole", "943", "1682", "100000", "False"]


# --------------------------------------------------------------------------------------------
# Downloads (served from file:// URLs, so no network is touched)
# --------------------------------------------------------------------------------------------


def _fake_spec(monkeypatch, remote: tuple, sha256: dict | None = None, name: str = "fake"):
    spec = DatasetSpec(name, "test double", (Layout(("u.data",), read_ml100k),), sha256 or {}, remote)
    monkeypatch.setitem(DATASETS, name, spec)
    monkeypatch.delenv("QREC_OFFLINE")
    return spec


def test_download_verifies_and_lands_in_cache(isolated, monkeypatch):
    served = _folder(isolated, "server", {"u.data": U_DATA}) / "u.data"
    digest = hashlib.sha256(U_DATA.encode()).hexdigest()
    _fake_spec(monkeypatch, (Remote(served.as_uri(), "u.data", sha256=digest),))
    data = load_dataset("fake")
    assert len(data) == 3 and resolved_source("fake").kind == "download"
    assert sorted(p.name for p in (isolated / "cache" / "fake").iterdir()) == ["u.data"]
    monkeypatch.setattr(datasets, "_LAST_SOURCE", {})
    assert resolved_source("fake").kind == "cache"


def test_download_extracts_a_zip_member(isolated, monkeypatch):
    archive = isolated / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml/u.data", U_DATA)
        zf.writestr("ml/README", "x")
        zf.writestr("ml/u.item", "1|Toy Story (1995)|||x|" + "|".join("0" * 19) + "\n")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    _fake_spec(monkeypatch, (Remote(archive.as_uri(), "u.data", md5=md5, member="ml/u.data", side=("ml/u.item",)),),
               sha256={"u.data": hashlib.sha256(U_DATA.encode()).hexdigest()})
    assert len(load_dataset("fake")) == 3
    # the archive is removed; the side file (genres, for `qrec codes`) stays beside the ratings
    assert sorted(p.name for p in (isolated / "cache" / "fake").iterdir()) == ["u.data", "u.item"]


def test_checksum_mismatch_deletes_and_raises(isolated, monkeypatch):
    served = _folder(isolated, "server", {"u.data": U_DATA}) / "u.data"
    _fake_spec(monkeypatch, (Remote(served.as_uri(), "u.data", sha256="0" * 64),))
    with pytest.raises(DataFormatError, match="checksum mismatch: sha256 .* expected 0{64}; the file was deleted"):
        load_dataset("fake")
    assert list((isolated / "cache" / "fake").iterdir()) == []  # no partial or temporary file left


def test_unreachable_url_is_not_found(isolated, monkeypatch):
    _fake_spec(monkeypatch, (Remote((isolated / "nowhere" / "u.data").as_uri(), "u.data"),))
    with pytest.raises(DatasetNotFoundError, match=r"download file://.*: failed"):
        load_dataset("fake")


def test_resolved_source_does_not_download(isolated, monkeypatch):
    served = _folder(isolated, "server", {"u.data": U_DATA}) / "u.data"
    _fake_spec(monkeypatch, (Remote(served.as_uri(), "u.data"),))
    source = resolved_source("fake")
    assert source.kind == "download" and source.url == served.as_uri()
    assert not (isolated / "cache" / "fake").exists()


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def test_gini_extremes():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 12])) == pytest.approx(0.75)  # (n - 1) / n for one holder
    assert gini(np.zeros(3)) == 0.0


def test_describe_split(tmp_path):
    (tmp_path / "train.txt").write_text("0 0 1 2\n1 0\n")
    (tmp_path / "test.txt").write_text("0 3\n1 1\n")
    info = describe(read_lightgcn_split(tmp_path / "train.txt", tmp_path / "test.txt"))
    assert (info["users"], info["items"], info["interactions"]) == (2, 4, 6)
    assert info["density"] == pytest.approx(6 / 8) and info["sparsity"] == pytest.approx(2 / 8)
    assert info["per_user"] == {"min": 2, "median": 3.0, "mean": 3.0, "max": 4}
    assert info["per_item"]["max"] == 2 and info["top10_item_share"] == pytest.approx(2 / 6)
    assert info["parts"]["train"] == {"interactions": 4, "users": 2, "items": 3}
    assert info["parts"]["valid"]["interactions"] == 0 and info["protocol"] == "given"


# --------------------------------------------------------------------------------------------
# Real data (skipped without ../shared/data)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n not in ("ml-1m", "amazon-book", "yelp2018")])
def test_shared_files_match_published_hashes(shared_data, name, monkeypatch, recwarn):
    monkeypatch.setenv("QREC_DATA_DIR", str(shared_data))
    monkeypatch.setenv("QREC_OFFLINE", "1")
    data = load_dataset(name)
    assert resolved_source(name).kind == "QREC_DATA_DIR"
    assert not [w for w in recwarn if issubclass(w.category, datasets.ModifiedDataWarning)]
    meta = (data.train if isinstance(data, Split) else data).meta
    assert meta["sha256"] == {f: DATASETS[name].sha256[f] for f in meta["sha256"]}


def test_shared_counts(shared_data, monkeypatch):
    monkeypatch.setenv("QREC_DATA_DIR", str(shared_data))
    gowalla, ml100k = load_dataset("gowalla"), load_dataset("ml-100k")
    assert (gowalla.n_users, gowalla.n_items, len(gowalla.train), len(gowalla.test)) == (29858, 40981, 810128, 217242)
    assert (ml100k.n_users, ml100k.n_items, len(ml100k)) == (943, 1682, 100000)
    info = describe(load_dataset("ml-1m-lgcn"))
    assert (info["users"], info["items"], info["parts"]["train"]["interactions"]) == (6022, 3043, 796244)


# --------------------------------------------------------------------------------------------
# Derived datasets (ml-1m-seq from the official ML-1M archive), offline: the archive is a local
# file:// URL holding real MovieLens ratings (ML-100K's u.data written in ML-1M's ratings.dat format)
# --------------------------------------------------------------------------------------------


def _ratings_dat(shared_data) -> str:
    return (shared_data / "ml-100k" / "u.data").read_text().replace("\t", "::")


def _reference_sequences(ratings: str) -> list[str]:
    """Brute force: each user's items sorted by (timestamp, line), users by number."""
    rows = [tuple(map(int, line.split("::"))) + (k,) for k, line in enumerate(ratings.splitlines())]
    by_user: dict[int, list] = {}
    for user, item, _, stamp, line in rows:
        by_user.setdefault(user, []).append((stamp, line, item))
    return [" ".join(map(str, [u] + [item for *_, item in sorted(by_user[u])])) for u in sorted(by_user)]


def test_ml1m_seq_is_derived_from_an_official_format_ratings_file(shared_data, isolated, monkeypatch):
    ratings = _ratings_dat(shared_data)
    _folder(isolated, "data/ml-1m", {"ratings.dat": ratings, "movies.dat": "1::Toy Story (1995)::Animation\n"})
    monkeypatch.setenv("QREC_DATA_DIR", str(isolated / "data"))
    data = load_dataset("ml-1m-seq")
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100_000)
    assert resolved_source("ml-1m-seq").kind == "derived"
    folder = isolated / "cache" / "ml-1m-seq"
    assert (folder / "sequences.txt").read_text().splitlines() == _reference_sequences(ratings)
    assert (folder / "movies.dat").is_file()  # genres beside it, for `qrec codes`
    assert "ratings.dat: sha256 " + hashlib.sha256(ratings.encode()).hexdigest() in (folder / "DERIVED.txt").read_text()
    # read again from the cache: still "derived", and never compared with DiffuRec's own copy's hash
    monkeypatch.setattr(datasets, "_LAST_SOURCE", {})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", datasets.ModifiedDataWarning)
        assert len(load_dataset("ml-1m-seq")) == 100_000
    assert resolved_source("ml-1m-seq").kind == "derived"


def _archive_spec(monkeypatch, archive, md5: str) -> None:
    ml1m = DATASETS["ml-1m"]
    remote = Remote(archive.as_uri(), "ratings.dat", md5=md5, member="ml-1m/ratings.dat", side=("ml-1m/movies.dat",))
    monkeypatch.setitem(DATASETS, "ml-1m", DatasetSpec(ml1m.name, ml1m.description, ml1m.layouts, ml1m.sha256, (remote,)))
    monkeypatch.delenv("QREC_OFFLINE", raising=False)


def test_ml1m_seq_online_downloads_the_archive_checksummed_and_derives(shared_data, isolated, monkeypatch):
    archive = isolated / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", _ratings_dat(shared_data))
        zf.writestr("ml-1m/movies.dat", "1::Toy Story (1995)::Animation\n")
    _archive_spec(monkeypatch, archive, "0" * 32)
    with pytest.raises(DataFormatError, match="checksum mismatch: md5"):
        load_dataset("ml-1m-seq")
    assert not (isolated / "cache" / "ml-1m-seq" / "sequences.txt").exists()
    _archive_spec(monkeypatch, archive, hashlib.md5(archive.read_bytes()).hexdigest())
    assert str(resolved_source("ml-1m-seq")).endswith(f"derived from ml-1m from download: {archive.as_uri()}")
    assert len(load_dataset("ml-1m-seq")) == 100_000
    assert resolved_source("ml-1m-seq").kind == "derived" and resolved_source("ml-1m").kind == "download"


def test_ml1m_seq_without_a_copy_names_the_official_archive(isolated):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("ml-1m-seq")
    message = str(err.value)
    assert "no public URL" not in message
    assert "derive from ml-1m (https://files.grouplens.org/datasets/movielens/ml-1m.zip)" in message
    assert "offline" in message  # why it did not happen here


def test_cli_data_info_of_a_derived_dataset(shared_data, isolated, monkeypatch, capsys):
    from qrec.cli import main

    _folder(isolated, "data/ml-1m", {"ratings.dat": _ratings_dat(shared_data)})
    monkeypatch.setenv("QREC_DATA_DIR", str(isolated / "data"))
    assert main(["data", "info", "ml-1m-seq"]) == 0
    assert "derived from ml-1m from QREC_DATA_DIR" in capsys.readouterr().out


def test_cli_data_info_reads_repeated_pairs_as_asked(tmp_path, capsys):
    import json

    from qrec.cli import main

    data = tmp_path / "dup.csv"
    data.write_text("user,item\n1,a\n1,b\n2,a\n1,a\n")
    assert main(["data", "info", "table", "--path", str(data)]) == 2
    assert "line 5: duplicate interaction (user 1, item a)" in capsys.readouterr().err
    for how in ("sum", "drop"):
        assert main(["data", "info", "table", "--path", str(data), "--duplicates", how]) == 0
        assert json.loads(capsys.readouterr().out)["interactions"] == 3
