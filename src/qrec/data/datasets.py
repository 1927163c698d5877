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

A *computed* dataset (``DatasetSpec.computed``, e.g. ``ml-100k-i2i``: item-item relevance from ML-100K's
ratings) resolves its base dataset as above (``path`` is the base's file), computes its pairs once and
caches them under ``$QREC_CACHE_DIR/<name>/``, keyed by the base files' sha256 and the recipe.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qrec.data.catalogue import (
    DATASETS,
    GENERATED,
    Computed,
    DatasetSpec,
    Derivation,
    Layout,
    ModifiedDataWarning,
    Remote,
    _generate,
    _generator,
    cache_dir,
    list_datasets,
)
from qrec.data.duplicates import check_option
from qrec.data.fetch import _download, _sha256
from qrec.data.interactions import Interactions, Split
from qrec.errors import DataFormatError, DatasetNotFoundError

__all__ = [
    "ModifiedDataWarning",
    "DatasetSpec",
    "Computed",
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
# Resolution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a dataset was (or would be) read from: ``kind`` is one of ``"path"``,
    ``"QREC_DATA_DIR"``, ``"cache"``, ``"recbole"``, ``"download"``, ``"generated"`` (no files)."""

    name: str
    kind: str
    files: tuple[Path, ...]
    layout: int = 0  # index into the spec's layouts
    url: str | None = None  # for "download": the first URL fetched

    def __str__(self) -> str:
        if self.kind == "generated":
            return f"{self.name} (generated from its name)"
        where = self.url if self.kind == "download" and self.url else ", ".join(str(f) for f in self.files)
        if self.kind == "derived" and self.url:
            where += f", derived from {self.url}"
        return f"{self.name} from {self.kind}: {where}"


_LAST_SOURCE: dict[str, Source] = {}


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join([*DATASETS, *GENERATED])
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
    if _generator(name) is not None:
        return Source(name, "generated", ())
    spec = _spec(name)
    if spec.computed is not None:
        return resolved_source(spec.computed.base, path)
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


def load_dataset(name: str, path=None, download: bool = True, duplicates: str = "error") -> Interactions | Split:
    """Load a registered dataset by name (see the module docstring for where it is looked for).

    Returns :class:`Interactions` for raw logs, :class:`Split` (protocol ``"given"``) for
    pre-split ones. Loading the same files twice in one process returns the cached object: treat
    it as read-only. Raises :class:`DatasetNotFoundError` listing every place looked at. A generated dataset's
    name (``synthetic-powerlaw:...``) makes its data; ``path`` must then be None. ``duplicates``: a (user,
    item) pair given twice in a file is an ``"error"`` naming its line, or ``"sum"``-med / ``"drop"``-ped
    (``qrec.data.duplicates``, the rule DataFrames and matrices follow too).
    """
    check_option(duplicates)
    if _generator(name) is not None:
        if path is not None:
            raise DatasetNotFoundError(f"{name} is generated from its name; it reads no --path ({path})")
        return _generate(name)
    spec = _spec(name)
    if spec.computed is not None:
        base = load_dataset(spec.computed.base, path=path, download=download, duplicates=duplicates)
        _LAST_SOURCE[name] = _LAST_SOURCE[spec.computed.base]
        return _computed(spec, base, duplicates)
    if path is not None:
        source = _explicit(spec, Path(path))
    else:
        source, looked = _local_sources(spec)
        if source is None:
            source = _download_source(spec, looked, allowed=download and not _offline())
    _LAST_SOURCE[name] = source
    stamps = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in source.files)
    return _load_files(name, source.layout, tuple(str(f) for f in source.files), stamps, source.kind, duplicates)


def _computed(spec: DatasetSpec, base: Interactions, duplicates: str = "error") -> Interactions:
    """``spec``'s data computed from ``base``, through a cache file keyed by the base files' sha256, the recipe
    and how repeated pairs were read (``$QREC_CACHE_DIR/<name>/<recipe>-<key>.npz``, written atomically), and
    kept per process."""
    if not isinstance(base, Interactions):
        raise DataFormatError(spec.computed.base, f"{spec.name} is computed from a raw log, not a pre-split dataset")
    recipe = (spec.computed.recipe, sorted(base.meta.get("sha256", {}).items()))
    recipe += () if duplicates == "error" else (duplicates,)  # files without repeats keep their caches' names
    key = hashlib.sha256(repr(recipe).encode()).hexdigest()[:16]
    path = cache_dir() / spec.name / f"{spec.computed.recipe}-{key}.npz"
    if path not in _COMPUTED:
        data = _read_computed(path, spec.name) if path.exists() else _write_computed(path, spec.computed.build(base))
        data.meta.update(dataset=spec.name, source=f"computed from {spec.computed.base}", recipe=spec.computed.recipe,
                         cache=str(path), base_sha256=base.meta.get("sha256", {}))
        _COMPUTED[path] = data
    return _COMPUTED[path]


_COMPUTED: dict[Path, Interactions] = {}


def _write_computed(path: Path, data: Interactions) -> Interactions:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, users=data.users, items=data.items, ratings=data.ratings, item_ids=data.item_ids)
        os.replace(tmp_name, path)  # atomic: a reader never sees a half-written cache
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return data


def _read_computed(path: Path, name: str) -> Interactions:
    """A cached computed dataset; a damaged cache file is named in the error (delete it to rebuild)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            ids = z["item_ids"]
            return Interactions(users=z["users"], items=z["items"], n_users=len(ids), n_items=len(ids),
                                user_ids=ids, item_ids=ids, ratings=z["ratings"], name=name)
    except (OSError, KeyError, ValueError) as err:
        raise DataFormatError(path, f"unreadable cache of {name} ({err}); delete it to rebuild") from None


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


@functools.lru_cache(maxsize=16)
def _load_files(name: str, layout: int, files: tuple[str, ...], stamps: tuple, kind: str,
                duplicates: str = "error") -> Interactions | Split:
    """Read and hash the files once per (files, sizes, mtimes); ``stamps`` invalidates on change."""
    del stamps  # only part of the cache key
    spec = DATASETS[name]
    paths = tuple(Path(f) for f in files)
    data = spec.layouts[layout].read(*paths, name=name, duplicates=duplicates)
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
