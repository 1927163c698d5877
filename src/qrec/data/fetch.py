"""Checksummed downloads into the cache: fetch, verify (sha256 or md5), extract; a download that does not match
its published checksum is deleted and an error raised."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm

from qrec.data.catalogue import DatasetSpec, Remote
from qrec.errors import DataFormatError



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
