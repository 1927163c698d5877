"""Named benchmark datasets: where to find them, how to read them, and how to check them.

``load_dataset(name, path=None)`` looks in five places, in order, and uses the first that has the
dataset's files:

1. ``path``: an explicit file or folder (the CLI's ``--path``). If given, nothing else is tried.
2. ``$QREC_DATA_DIR/<name>/``.
3. the cache, ``$QREC_CACHE_DIR/<name>/`` (default ``~/.cache/qrec/<name>/``).
4. ``ml-100k`` only: the MovieLens-100K copy inside the ``recbole`` wheel (installed as a data
   package, never imported).
5. a download from the dataset's official URL into the cache, verified against a published
   checksum (set ``QREC_OFFLINE=1`` or pass ``download=False`` to forbid it).

Raw logs load as :class:`Interactions`; datasets that ship already split (LightGCN files, LastFM)
load as :class:`Split` with protocol ``"given"``. Local files are hashed (sha256) and compared with
the published hash where one is known; a mismatch warns, because results on a modified copy are
not comparable with published ones. Downloads must match, or they are deleted and an error raised.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np
from tqdm.auto import tqdm

from qrec.data.interactions import Interactions, Split
from qrec.data.loaders import (
    read_lastfm,
    read_lightgcn_split,
    read_ml100k,
    read_movielens_dat,
    read_named_table,
    read_recbole_inter,
    read_sequences,
)
from qrec.errors import DataFormatError, DatasetNotFoundError

__all__ = [
    "ModifiedDataWarning",
    "DatasetSpec",
    "Derivation",
    "Layout",
    "Remote",
    "Source",
    "DATASETS",
    "list_datasets",
    "load_dataset",
    "resolved_source",
    "cache_dir",
]


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class ModifiedDataWarning(UserWarning):
    """A local dataset file differs from the published one (its sha256 does not match)."""


@dataclass(frozen=True)
class Layout:
    """One way a dataset can sit in a folder: these files, read by ``read(*paths, name=...)``."""

    files: tuple[str, ...]
    read: Callable[..., Interactions | Split]


@dataclass(frozen=True)
class Remote:
    """Where to download one file of a dataset, and the published checksum(s) of what comes back.

    ``member`` names the file inside a zip archive; ``md5``/``sha256`` then check the archive. ``side``: other
    members of the same archive kept beside it (side information for analyses, e.g. MovieLens genres).
    """

    url: str
    file: str
    md5: str | None = None
    sha256: str | None = None
    member: str | None = None
    side: tuple[str, ...] = ()


@dataclass(frozen=True)
class Derivation:
    """How a dataset is computed from another registered one (e.g. ``ml-1m-seq`` from the official
    ``ml-1m`` archive): ``write(source_data, target_file)`` writes the canonical layout's one file;
    ``side`` files found beside the source (e.g. ``movies.dat``) are copied beside the result."""

    source: str
    write: Callable[[Interactions, Path], None]
    side: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its layouts (first = canonical), known hashes and download recipe."""

    name: str
    description: str
    layouts: tuple[Layout, ...]
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> published sha256
    remote: tuple[Remote, ...] = ()
    bundled: Callable[[], Path | None] | None = None  # a folder shipped inside an installed package
    note: str = ""  # extra advice when the dataset cannot be found
    derived: Derivation | None = None  # computed from another dataset when no copy is found


def _github(repo: str, ref: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{ref}/{path}"


def _lightgcn_remote(repo: str, ref: str, folder: str, sha256: dict | None = None, md5: dict | None = None):
    """train.txt and test.txt from ``repo@ref:folder`` with their checksums."""
    return tuple(
        Remote(_github(repo, ref, f"{folder}/{f}"), f, md5=(md5 or {}).get(f), sha256=(sha256 or {}).get(f))
        for f in ("train.txt", "test.txt")
    )


def _recbole_ml100k() -> Path | None:
    """The folder of ``ml-100k.inter`` shipped in the recbole wheel, found without importing recbole
    (its import pulls in dependencies that are deliberately not installed)."""
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "dataset_example" / "ml-100k"


_LIGHTGCN = Layout(("train.txt", "test.txt"), read_lightgcn_split)
_RECZOO = ("reczoo/RecZoo", "fd2379d3b5df99d23513a8c423c083d27a45126d")
_GOWALLA_SHA = {
    "train.txt": "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
    "test.txt": "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
}
_ML1M_LGCN_SHA = {
    "train.txt": "31fe589506162c76c90e87ddd017642f73655a3f959bd70deec8dda142608f4e",
    "test.txt": "c8b4f275ea29fdb5560f0d9014d85a3865743f3089dca0259c79fee30dcdbdcd",
}
_ELECTRONICS_SHA = {
    "train.txt": "884a6569732136656d67e530798ecfcb6b9def627e81685c30cb18697a7d668f",
    "test.txt": "33b54edda8047be66ae135b9b52934f07858c482ec2a54995054e4eb2157f89d",
}
_LASTFM_SHA = {
    "data1.txt": "c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded",
    "test1.txt": "de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9",
}
# md5 of amazon-book train.txt / test.txt as listed by reczoo's AmazonBooks_m1 README (the same
# pair is in DHG's AmazonBook loader); no sha256 is published.
_AMAZON_BOOK_MD5 = {"train.txt": "c916ecac04ca72300a016228258b41ed", "test.txt": "30f8ccfea18d25007ba9fb9aba4e174d"}
# md5 of yelp2018 train.txt / test.txt as listed by reczoo's Yelp18_m1 README (a copy of LightGCN's split)
_YELP2018_MD5 = {"train.txt": "1b8b5d22a227e01d6de002c53d32b4c4", "test.txt": "0d57d7399862c32152b045ec5d2698e7"}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-100k",
            "MovieLens-100K ratings with timestamps (943 users, 1,682 items, 100,000 ratings)",
            layouts=(Layout(("u.data",), read_ml100k), Layout(("ml-100k.inter",), read_recbole_inter)),
            sha256={
                "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
                # ml-100k.inter as shipped in the recbole 1.2.1 wheel (the same 100,000 ratings)
                "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            },
            remote=(Remote("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "u.data",
                           md5="0e33842e24a9c977be4e0107933c0723", member="ml-100k/u.data",
                           side=("ml-100k/u.item",)),),
            bundled=_recbole_ml100k,
        ),
        DatasetSpec(
            "ml-1m",
            "MovieLens-1M ratings.dat with ratings and timestamps (6,040 users, 3,706 items, 1,000,209)",
            layouts=(Layout(("ratings.dat",), read_movielens_dat),),
            remote=(Remote("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ratings.dat",
                           md5="c4d9eecfca2ab87c1945afe126590906", member="ml-1m/ratings.dat",
                           side=("ml-1m/movies.dat",)),),
        ),
        DatasetSpec(
            "ml-1m-seq",
            "MovieLens-1M as per-user chronological sequences, no timestamps (SASRec/DiffuRec ml-1m)",
            layouts=(Layout(("sequences.txt",), read_sequences),),
            sha256={"sequences.txt": "3b3803d72c034929ada18b2cbd114296261c012b7a3e10282543adeceba53fb1"},
            note="without a copy, sequences.txt is derived from the official ML-1M archive (the 'ml-1m' "
            "dataset, md5-checked): each user's ratings sorted by timestamp, ties in file order.",
            derived=Derivation("ml-1m", lambda data, target: write_sequences(data, target), side=("movies.dat",)),
        ),
        DatasetSpec(
            "ml-1m-lgcn",
            "MovieLens-1M LightGCN train/test split (LCFN/BARS Movielens1M_m1; 6,022 users, 3,043 items)",
            layouts=(_LIGHTGCN,),
            sha256=_ML1M_LGCN_SHA,
            remote=_lightgcn_remote(*_RECZOO, "data/Movielens1M_m1", sha256=_ML1M_LGCN_SHA),
        ),
        DatasetSpec(
            "gowalla",
            "Gowalla check-ins, original LightGCN train/test split (29,858 users, 40,981 items)",
            layouts=(_LIGHTGCN,),
            sha256=_GOWALLA_SHA,
            remote=_lightgcn_remote("kuandeng/LightGCN", "b067ec05f16a24e0e1efe63cd82385f0c469af20",
                                    "Data/gowalla", sha256=_GOWALLA_SHA),
        ),
        DatasetSpec(
            "amazon-electronics",
            "Amazon Electronics, tiny LightGCN-format split (NBPO/BARS; 1,435 users, 1,522 items)",
            layouts=(_LIGHTGCN,),
            sha256=_ELECTRONICS_SHA,
            remote=_lightgcn_remote(*_RECZOO, "data/AmazonElectronics_m1", sha256=_ELECTRONICS_SHA),
        ),
        DatasetSpec(
            "amazon-book",
            "Amazon-Book, LightGCN train/test split (52,643 users, 91,599 items)",
            layouts=(_LIGHTGCN,),
            remote=_lightgcn_remote("kuandeng/LightGCN", "master", "Data/amazon-book", md5=_AMAZON_BOOK_MD5),
        ),
        DatasetSpec(
            "yelp2018",
            "Yelp2018, LightGCN train/test split (31,668 users, 38,048 items)",
            layouts=(_LIGHTGCN,),
            remote=_lightgcn_remote("kuandeng/LightGCN", "master", "Data/yelp2018", md5=_YELP2018_MD5),
        ),
        DatasetSpec(
            "beauty",
            "Amazon Beauty 5-core per-user chronological sequences (S3Rec/ICLRec; 22,363 users, 12,101 items)",
            layouts=(Layout(("Beauty.txt",), read_sequences),),
            sha256={"Beauty.txt": "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"},
            remote=(Remote(_github("salesforce/ICLRec", "2890e6c3ff6a22c6699fc19cb863b66786c1cde4", "data/Beauty.txt"),
                           "Beauty.txt",
                           sha256="226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"),),
        ),
        DatasetSpec(
            "lastfm",
            "LastFM hetrec2011 user-artist listens, LightGCN-PyTorch train/test split (1,892 users, 4,489 items)",
            layouts=(Layout(("data1.txt", "test1.txt"), read_lastfm),),
            sha256=_LASTFM_SHA,
            remote=tuple(
                Remote(_github("gusye1234/LightGCN-PyTorch", "947ca2b3b1d2d3545b114145710cb06c4e57b3d2",
                               f"data/lastfm/{f}"), f, sha256=sha)
                for f, sha in _LASTFM_SHA.items()
            ),
        ),
        # Generic formats for your own files: pass --path (a file, or a folder for the LightGCN pair).
        DatasetSpec(
            "sequences",
            "your own per-user chronological sequences, `user item item ...` oldest first (--path FILE)",
            layouts=(Layout(("sequences.txt",), read_sequences),),
            note="generic format: give the file with --path.",
        ),
        DatasetSpec(
            "lightgcn",
            "your own LightGCN/NGCF split, a folder with train.txt and test.txt (--path FOLDER)",
            layouts=(_LIGHTGCN,),
            note="generic format: give the folder with --path.",
        ),
        DatasetSpec(
            "table",
            "your own interaction table: CSV / TSV / Parquet / RecBole .inter, columns found by header "
            "(user_id/userId, item_id/movieId/asin, timestamp, rating) (--path FILE)",
            layouts=(Layout(("interactions.csv",), read_named_table),),
            note="generic format: give the file with --path; any suffix, the separator is guessed.",
        ),
        DatasetSpec(
            "movielens",
            "your own MovieLens-style ratings: ratings.dat (`::`) or u.data (tab) (--path FILE)",
            layouts=(Layout(("ratings.dat",), read_movielens_dat), Layout(("u.data",), read_ml100k)),
            note="generic format: give the file with --path.",
        ),
    )
}


def list_datasets() -> dict[str, str]:
    """Every registered dataset name with a one-line description."""
    return {name: spec.description for name, spec in DATASETS.items()}


def cache_dir() -> Path:
    """Where downloads go: ``$QREC_CACHE_DIR`` or ``~/.cache/qrec``."""
    return Path(os.environ.get("QREC_CACHE_DIR") or Path.home() / ".cache" / "qrec").expanduser()


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a dataset was (or would be) read from: ``kind`` is one of ``"path"``,
    ``"QREC_DATA_DIR"``, ``"cache"``, ``"recbole"``, ``"download"``."""

    name: str
    kind: str
    files: tuple[Path, ...]
    layout: int = 0  # index into the spec's layouts
    url: str | None = None  # for "download": the first URL fetched

    def __str__(self) -> str:
        where = self.url if self.kind == "download" and self.url else ", ".join(str(f) for f in self.files)
        if self.kind == "derived" and self.url:
            where += f", derived from {self.url}"
        return f"{self.name} from {self.kind}: {where}"


_LAST_SOURCE: dict[str, Source] = {}


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise DatasetNotFoundError(
            f"unknown dataset {name!r}; known datasets: {known}. "
            "Files in another format can be read with qrec.data.loaders.read_table."
        ) from None


def _match_folder(spec: DatasetSpec, folder: Path) -> tuple[int, tuple[Path, ...]] | None:
    """The first layout whose files are all in ``folder``."""
    for k, layout in enumerate(spec.layouts):
        files = tuple(folder / f for f in layout.files)
        if all(f.is_file() for f in files):
            return k, files
    return None


def _expected(spec: DatasetSpec) -> str:
    return " or ".join(" + ".join(layout.files) for layout in spec.layouts)


def _explicit(spec: DatasetSpec, path: Path) -> Source:
    """Resolve a user-given file or folder; failing here is final (no silent fallback)."""
    path = path.expanduser()
    if path.is_dir():
        match = _match_folder(spec, path)
        if match is None:
            raise DatasetNotFoundError(f"{path} holds no {spec.name} files: expected {_expected(spec)}")
        return Source(spec.name, "path", match[1], match[0])
    if path.is_file():
        single = [k for k, layout in enumerate(spec.layouts) if len(layout.files) == 1]
        if not single:
            raise DatasetNotFoundError(
                f"{spec.name} needs {_expected(spec)}: pass the folder holding them, not the file {path}"
            )
        # pick the layout by file name, else by suffix (e.g. any *.inter), else the canonical reader
        names = {k: Path(spec.layouts[k].files[0]) for k in single}
        k = next((k for k in single if names[k].name == path.name), None)
        k = next((k for k in single if names[k].suffix == path.suffix), single[0]) if k is None else k
        return Source(spec.name, "path", (path,), k)
    raise DatasetNotFoundError(f"{path}: no such file or folder (given as the path of {spec.name})")


def _local_sources(spec: DatasetSpec) -> tuple[Source | None, list[str]]:
    """Places 2-4: the first that holds the dataset, and a line per place looked at."""
    looked = []
    env = os.environ.get("QREC_DATA_DIR")
    places = [
        ("QREC_DATA_DIR", Path(env).expanduser() / spec.name if env else None),
        ("cache", cache_dir() / spec.name),
    ]
    if spec.bundled is not None:
        places.append(("recbole", spec.bundled()))
    for kind, folder in places:
        if folder is None:
            looked.append(f"${kind}/{spec.name}: not set" if kind == "QREC_DATA_DIR" else f"{kind}: not installed")
            continue
        match = _match_folder(spec, folder)
        if match is not None:
            kind = "derived" if kind == "cache" and (folder / DERIVED_NOTE).is_file() else kind
            return Source(spec.name, kind, match[1], match[0]), looked
        looked.append(f"{folder} ({kind}): no {_expected(spec)}")
    return None, looked


def _offline() -> bool:
    return os.environ.get("QREC_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _not_found(spec: DatasetSpec, looked: list[str]) -> DatasetNotFoundError:
    lines = "\n".join(f"  - {line}" for line in looked)
    fix = (
        f"To fix: put {_expected(spec)} in a folder and pass it as --path (load_dataset({spec.name!r}, path=...)), "
        f"or set QREC_DATA_DIR to a folder with a subfolder {spec.name}/ holding them"
    )
    if spec.remote:
        fix += f", or run once online to download it into {cache_dir()}"
    return DatasetNotFoundError(
        f"dataset {spec.name!r} not found. Looked in:\n{lines}\n{fix}." + (f"\nNote: {spec.note}" if spec.note else "")
    )


def resolved_source(name: str, path=None) -> Source:
    """Where ``load_dataset(name, path)`` reads from: the source of the last load of ``name`` in
    this process, or else where it would read now (``kind="download"`` if only a download would
    do; nothing is downloaded here)."""
    if path is None and name in _LAST_SOURCE:
        return _LAST_SOURCE[name]
    spec = _spec(name)
    if path is not None:
        return _explicit(spec, Path(path))
    source, looked = _local_sources(spec)
    if source is not None:
        return source
    if spec.remote and not _offline():
        files = tuple(cache_dir() / spec.name / r.file for r in spec.remote)
        return Source(name, "download", files, 0, url=spec.remote[0].url)
    if spec.derived is not None:
        try:
            origin = resolved_source(spec.derived.source)
        except DatasetNotFoundError as err:
            raise _not_found(spec, looked + [_derive_failed(spec, err)]) from None
        return Source(name, "derived", (cache_dir() / name / spec.layouts[0].files[0],), 0, url=str(origin))
    raise _not_found(spec, looked + (["download: offline (QREC_OFFLINE)"] if spec.remote else []))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_dataset(name: str, path=None, download: bool = True) -> Interactions | Split:
    """Load a registered dataset by name (see the module docstring for where it is looked for).

    Returns :class:`Interactions` for raw logs, :class:`Split` (protocol ``"given"``) for
    pre-split ones. Loading the same files twice in one process returns the cached object: treat
    it as read-only. Raises :class:`DatasetNotFoundError` listing every place looked at.
    """
    spec = _spec(name)
    if path is not None:
        source = _explicit(spec, Path(path))
    else:
        source, looked = _local_sources(spec)
        if source is None:
            source = _download_source(spec, looked, allowed=download and not _offline())
    _LAST_SOURCE[name] = source
    stamps = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in source.files)
    return _load_files(name, source.layout, tuple(str(f) for f in source.files), stamps, source.kind)


def _download_source(spec: DatasetSpec, looked: list[str], allowed: bool) -> Source:
    if spec.derived is not None and not spec.remote:
        return _derived_source(spec, looked, allowed)
    if not spec.remote:
        raise _not_found(spec, looked + ["download: no public URL for this dataset"])
    if not allowed:
        raise _not_found(spec, looked + ["download: disabled (offline: QREC_OFFLINE or download=False)"])
    folder = cache_dir() / spec.name
    try:
        files = tuple(_download(spec, remote, folder) for remote in spec.remote)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise _not_found(spec, looked + [f"download {spec.remote[0].url}: failed ({reason})"]) from None
    layout = next(k for k, lay in enumerate(spec.layouts) if lay.files == tuple(r.file for r in spec.remote))
    return Source(spec.name, "download", files, layout, url=spec.remote[0].url)


DERIVED_NOTE = "DERIVED.txt"  # beside a derived dataset in the cache: what it was computed from


def _derived_source(spec: DatasetSpec, looked: list[str], allowed: bool) -> Source:
    """Derive ``spec`` into the cache from its source dataset, found or downloaded (checksummed) as
    ``load_dataset`` finds any dataset; written through a temporary file, so a reader never sees half."""
    derivation = spec.derived
    try:
        data = load_dataset(derivation.source, download=allowed)
    except DatasetNotFoundError as err:
        raise _not_found(spec, looked + [_derive_failed(spec, err)]) from None
    if not isinstance(data, Interactions):
        raise DataFormatError(derivation.source, "a derivation needs raw interactions, not a pre-split dataset")
    origin = _LAST_SOURCE[derivation.source]
    folder = cache_dir() / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.layouts[0].files[0]
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        derivation.write(data, Path(tmp_name))
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    for side in derivation.side:
        beside = origin.files[0].parent / side
        if beside.is_file() and not (folder / side).exists():
            shutil.copyfile(beside, folder / side)
    sources = "\n".join(f"- {f.name}: sha256 {_sha256(f)}" for f in origin.files)
    (folder / DERIVED_NOTE).write_text(f"{spec.name} derived by qrec from {origin}\n{sources}\n"
                                       f"{target.name}: sha256 {_sha256(target)}\n")
    return Source(spec.name, "derived", (target,), 0, url=str(origin))


def _derive_failed(spec: DatasetSpec, err: Exception) -> str:
    source = DATASETS[spec.derived.source]
    url = f" ({source.remote[0].url})" if source.remote else ""
    looked = [line.strip()[2:] for line in str(err).splitlines() if line.strip().startswith("- ")]
    return f"derive from {spec.derived.source}{url}: not possible, {spec.derived.source} " + (
        f"{looked[-1]}" if looked else str(err).splitlines()[0])


def write_sequences(data: Interactions, target: Path) -> None:
    """``data`` as per-user chronological sequences, ``user item item ...`` with raw ids, oldest first:
    each user's interactions sorted by timestamp, ties kept in file order; users in raw-id order."""
    if data.timestamps is None:
        raise DataFormatError(target, f"{data.name} has no timestamps to order the sequences by")
    order = np.lexsort((np.arange(len(data)), data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    lines = {data.user_ids[users[a]]: items[a:b] for a, b in zip(starts, np.r_[starts[1:], len(users)])}
    with target.open("w") as f:
        for raw in sorted(lines, key=_raw_key):
            f.write(" ".join(map(str, [raw, *data.item_ids[lines[raw]]])) + "\n")


def _raw_key(raw):
    """Raw ids sort as numbers where they are numbers (MovieLens), else as text."""
    text = str(raw)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


@functools.lru_cache(maxsize=16)
def _load_files(name: str, layout: int, files: tuple[str, ...], stamps: tuple, kind: str) -> Interactions | Split:
    """Read and hash the files once per (files, sizes, mtimes); ``stamps`` invalidates on change."""
    del stamps  # only part of the cache key
    spec = DATASETS[name]
    paths = tuple(Path(f) for f in files)
    data = spec.layouts[layout].read(*paths, name=name)
    hashes = {p.name: _sha256(p) for p in paths}
    _warn_on_mismatch(spec, paths, hashes, kind)
    parts = (data.train, data.valid, data.test) if isinstance(data, Split) else (data,)
    for meta in {id(part.meta): part.meta for part in parts}.values():
        meta.update(dataset=name, source=kind, sha256=hashes)
    return data


def _warn_on_mismatch(spec: DatasetSpec, paths: tuple[Path, ...], hashes: dict[str, str], kind: str) -> None:
    if kind == "derived":  # checked through its source's checksum; its own hash is recorded, not compared
        return
    for p in paths:
        expected = spec.sha256.get(p.name)
        if expected is not None and hashes[p.name] != expected:
            warnings.warn(
                f"{p} differs from the published {spec.name} file (sha256 {hashes[p.name]}, expected "
                f"{expected}); results on it are not comparable with published ones",
                ModifiedDataWarning,
                stacklevel=2,
            )


# --------------------------------------------------------------------------------------------
# Download with checksum verification
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return _digest(path, "sha256")


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(spec: DatasetSpec, remote: Remote, folder: Path) -> Path:
    """Fetch one remote into ``folder`` (extracting a zip member), verify it, return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.file
    fetched = _fetch(remote.url, folder / Path(urlparse(remote.url).path).name, md5=remote.md5, sha256=remote.sha256)
    if remote.member is not None:
        try:
            _extract(fetched, remote.member, target)
            for side in remote.side:
                _extract(fetched, side, folder / Path(side).name)
        finally:
            fetched.unlink(missing_ok=True)  # keep only the file qrec reads
    expected = spec.sha256.get(remote.file)
    if expected is not None:
        _verify(target, "sha256", expected)
    return target


def _fetch(url: str, dest: Path, md5: str | None, sha256: str | None) -> Path:
    """Download ``url`` to ``dest`` through a temporary file renamed into place once verified."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}", disable=None) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            if expected is not None:
                _verify(tmp, algorithm, expected, shown=url)
        os.replace(tmp, dest)  # atomic: a reader never sees a half-written file
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _extract(archive: Path, member: str, target: Path) -> None:
    """Copy one member of a zip archive to ``target`` atomically."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, target)
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataFormatError(archive, f"cannot extract {member}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _verify(path: Path, algorithm: str, expected: str, shown: str | None = None) -> None:
    """Raise (after deleting ``path``) unless its digest is ``expected``."""
    actual = _digest(path, algorithm)
    if actual != expected.lower():
        path.unlink(missing_ok=True)
        raise DataFormatError(
            shown or path,
            f"checksum mismatch: {algorithm} {actual}, expected {expected}; the file was deleted. "
            "The upstream file may have changed; check the URL or place a verified copy under QREC_DATA_DIR.",
        )
