"""The artifact's byte container: a standard safetensors file whose manifest vouches for every byte.

``pack`` writes the tensors with safetensors and two metadata strings: ``qrec``, the JSON manifest, which
lists every tensor's dtype, shape and SHA-256 (key ``tensors``), and ``qrec_sha256``, the SHA-256 of the
manifest string itself. ``unpack`` parses the file itself (8-byte little-endian header length, JSON header,
data) so that every defect becomes a ``DataFormatError`` naming the file and, where there is one, the
tensor: the header must tile the data region exactly (so every data byte belongs to a tensor, and a flip
anywhere in it changes some tensor's hash), every tensor must match the manifest's dtype, shape and hash,
and the manifest must match its own hash (so a flipped config value cannot slip through either).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import torch

from qrec.errors import DataFormatError

MANIFEST_KEY = "qrec"
MANIFEST_HASH_KEY = "qrec_sha256"

# safetensors dtype names -> (numpy dtype, torch dtype): the ones an artifact uses
_DTYPES = {
    "F32": (np.float32, torch.float32), "F64": (np.float64, torch.float64), "F16": (np.float16, torch.float16),
    "I64": (np.int64, torch.int64), "I32": (np.int32, torch.int32), "I16": (np.int16, torch.int16),
    "I8": (np.int8, torch.int8), "U8": (np.uint8, torch.uint8), "BOOL": (np.bool_, torch.bool),
}
_NAME_OF = {torch_dtype: name for name, (_, torch_dtype) in _DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes as stored (C order, little-endian)."""
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def pack(tensors: dict[str, torch.Tensor], manifest: dict) -> tuple[bytes, dict]:
    """The safetensors bytes of ``tensors`` with ``manifest`` as metadata, its ``tensors`` entry filled in;
    returns ``(bytes, that manifest)``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    for name, t in tensors.items():
        if t.dtype not in _NAME_OF:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} is not stored in artifacts")
    manifest = dict(manifest, tensors={k: {"dtype": _NAME_OF[t.dtype], "shape": list(t.shape), "sha256": tensor_digest(t)}
                                       for k, t in sorted(tensors.items())})
    text = json.dumps(manifest, sort_keys=True)
    raw = _serialize(tensors, {MANIFEST_KEY: text, MANIFEST_HASH_KEY: hashlib.sha256(text.encode()).hexdigest()})
    return raw, manifest


def _serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The safetensors layout, written here so that equal inputs give equal bytes (safetensors' own writer
    orders the metadata map at random): tensors by element size, largest first (every one stays aligned
    to its size, as safetensors does), then by name; the header padded with spaces to a multiple of 8."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, at = {"__metadata__": metadata}, 0
    for name in order:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _NAME_OF[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + size]}
        at += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = b"".join(tensors[name].reshape(-1).view(torch.uint8).numpy().tobytes() if tensors[name].numel() else b""
                    for name in order)
    return struct.pack("<Q", len(text)) + text + data


def unpack(buf: bytes, source: str | Path, check=None) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, manifest)`` of an artifact's bytes, every check passed; ``source`` names it in errors.
    ``check(manifest, source)`` runs first (e.g. the format version, before any tensor is looked at)."""
    header, data = _split(buf, source)
    manifest = _manifest(header.pop("__metadata__", None), source)
    if check is not None:
        check(manifest, source)
    _check_tiling(header, len(data), source)
    listed = manifest.get("tensors")
    if not isinstance(listed, dict):
        raise DataFormatError(source, "manifest lists no tensors (key 'tensors')")
    if set(listed) != set(header):
        extra, missing = sorted(set(header) - set(listed)), sorted(set(listed) - set(header))
        raise DataFormatError(source, f"tensors differ from the manifest: not listed {extra}, missing {missing}")
    tensors = {}
    for name, entry in header.items():
        want = listed[name]
        if not isinstance(want, dict) or (entry["dtype"], list(entry["shape"])) != (want.get("dtype"), want.get("shape")):
            raise DataFormatError(source, f"tensor {name!r}: {entry['dtype']} {entry['shape']} in the file, "
                                          f"the manifest says {want}")
        start, end = entry["data_offsets"]
        raw = data[start:end]
        if hashlib.sha256(raw).hexdigest() != want.get("sha256"):
            raise DataFormatError(source, f"tensor {name!r} is corrupt: its SHA-256 differs from the manifest's")
        np_dtype, _ = _DTYPES[entry["dtype"]]
        array = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(entry["shape"])
        tensors[name] = torch.from_numpy(array.astype(np_dtype, copy=True))  # owned and writable
    return tensors, manifest


def read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, "no such file") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a folder, not an artifact file") from None


def read_header(path: str | Path) -> dict:
    """Only the manifest (checked against its hash), without reading the tensor data."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n <= _MAX_HEADER:
                raise DataFormatError(path, "not a safetensors file (bad header length)")
            header = _json(f.read(n), path, "header")
    except FileNotFoundError:
        raise DataFormatError(path, "no such file") from None
    if not isinstance(header, dict):
        raise DataFormatError(path, "safetensors header is not a JSON object")
    return _manifest(header.get("__metadata__"), path)


def _split(buf: bytes, source) -> tuple[dict, memoryview]:
    if len(buf) < 8:
        raise DataFormatError(source, f"not a safetensors file ({len(buf)} bytes)")
    n = struct.unpack("<Q", buf[:8])[0]
    if not 0 < n <= min(_MAX_HEADER, len(buf) - 8):
        raise DataFormatError(source, f"not a safetensors file (header length {n} of a {len(buf)}-byte file)")
    header = _json(buf[8:8 + n], source, "header")
    if not isinstance(header, dict):
        raise DataFormatError(source, "safetensors header is not a JSON object")
    return header, memoryview(buf)[8 + n:]


def _json(raw: bytes, source, what: str):
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(source, f"safetensors {what} is not valid JSON ({e})") from None


def _manifest(meta, source) -> dict:
    if not isinstance(meta, dict) or MANIFEST_KEY not in meta:
        raise DataFormatError(source, f"safetensors file without a qrec manifest (metadata key {MANIFEST_KEY!r})")
    text = meta[MANIFEST_KEY]
    if not isinstance(text, str):
        raise DataFormatError(source, "the qrec manifest is not a string")
    try:
        encoded = text.encode()
    except UnicodeEncodeError as e:  # a lone surrogate escaped in the JSON
        raise DataFormatError(source, f"the qrec manifest is not UTF-8 ({e})") from None
    manifest = _json(encoded, source, "qrec manifest")
    if not isinstance(manifest, dict):
        raise DataFormatError(source, "the qrec manifest is not a JSON object")
    if manifest.get("version") != 1 and meta.get(MANIFEST_HASH_KEY) != hashlib.sha256(encoded).hexdigest():
        raise DataFormatError(source, "the qrec manifest is corrupt: its SHA-256 differs from the stored one")
    return manifest


def _check_tiling(header: dict, size: int, source) -> None:
    """Every entry well formed, and the entries' byte ranges tile ``[0, size)`` exactly, in order."""
    spans = []
    for name, entry in header.items():
        ok = (isinstance(entry, dict) and entry.get("dtype") in _DTYPES and isinstance(entry.get("shape"), list)
              and all(isinstance(s, int) and s >= 0 for s in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(isinstance(o, int) for o in entry["data_offsets"]))
        if not ok:
            raise DataFormatError(source, f"tensor {name!r}: malformed header entry {entry!r}")
        start, end = entry["data_offsets"]
        itemsize = np.dtype(_DTYPES[entry["dtype"]][0]).itemsize
        if not 0 <= start <= end or end - start != int(np.prod(entry["shape"], dtype=np.int64)) * itemsize:
            raise DataFormatError(source, f"tensor {name!r}: byte range {start}..{end} does not hold "
                                          f"{entry['dtype']} {entry['shape']}")
        spans.append((start, end, name))
    at = 0
    for start, end, name in sorted(spans):
        if start != at:
            raise DataFormatError(source, f"tensor {name!r}: data starts at byte {start}, expected {at} "
                                          "(gap or overlap between tensors)")
        at = end
    if at != size:
        raise DataFormatError(source, f"data region is {size} bytes, its tensors cover {at}")
