"""The artifact's byte container: every tensor and the manifest vouched for by SHA-256, every defect a
``DataFormatError`` naming the file (and the tensor), never another exception."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load

from qrec.errors import DataFormatError
from qrec.export.container import pack, read_header, unpack


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"tables/item/codes": torch.randint(0, 255, (7, 4), dtype=torch.uint8, generator=g),
            "dense/w": torch.randn(3, 5, generator=g), "seen/indptr": torch.arange(4, dtype=torch.int64),
            "empty": torch.zeros(0, dtype=torch.int32)}


def _raw():
    return pack(_tensors(), {"format": "x", "version": 2, "config": {"dim": 8}})


def _header_end(raw: bytes) -> int:
    return 8 + struct.unpack("<Q", raw[:8])[0]


def test_pack_is_plain_safetensors_and_unpack_round_trips():
    raw, manifest = _raw()
    plain = st_load(raw)  # any safetensors reader takes it
    tensors, read = unpack(raw, "m.safetensors")
    assert read == manifest and set(read["tensors"]) == set(_tensors())
    for name, t in _tensors().items():
        assert torch.equal(plain[name], t) and torch.equal(tensors[name], t) and tensors[name].dtype == t.dtype
        assert read["tensors"][name]["shape"] == list(t.shape)


def test_every_single_byte_flip_in_the_data_is_caught_naming_its_tensor():
    raw, manifest = _raw()
    start = _header_end(raw)
    header = json.loads(raw[8:start])
    owner = {}
    for name, entry in header.items():
        if name != "__metadata__":
            for pos in range(*entry["data_offsets"]):
                owner[start + pos] = name
    assert len(owner) == len(raw) - start  # the tensors tile the data region: no unchecked byte
    rng = np.random.default_rng(0)
    for pos in range(start, len(raw)):  # every data byte, each flipped to a random other value
        bad = bytearray(raw)
        bad[pos] ^= int(rng.integers(1, 256))
        with pytest.raises(DataFormatError, match=f"m.safetensors: tensor '{owner[pos]}' is corrupt"):
            unpack(bytes(bad), "m.safetensors")


def test_a_byte_flip_in_the_header_is_caught_or_changes_nothing():
    """Header flips: an error naming the file, or (JSON whitespace) exactly the same tensors and manifest."""
    raw, manifest = _raw()
    rng = np.random.default_rng(1)
    caught = 0
    for pos in rng.choice(_header_end(raw), size=400, replace=False):
        bad = bytearray(raw)
        bad[pos] ^= int(rng.integers(1, 256))
        try:
            tensors, read = unpack(bytes(bad), "m.safetensors")
        except DataFormatError as e:
            assert str(e).startswith("m.safetensors")
            caught += 1
            continue
        assert read == manifest and all(torch.equal(tensors[k], t) for k, t in _tensors().items())
    assert caught > 300


@pytest.mark.parametrize("case, message", [
    (lambda raw: b"", "not a safetensors file"),
    (lambda raw: raw[:5], "not a safetensors file"),
    (lambda raw: raw[:-1], "data region|byte range"),
    (lambda raw: raw + b"\0", "tensors cover"),
    (lambda raw: struct.pack("<Q", 2**40) + raw[8:], "header length"),
    (lambda raw: struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (lambda raw: b"\x05\0\0\0\0\0\0\0{\"a\":", "not valid JSON"),
])
def test_malformed_files_are_data_format_errors(case, message):
    raw, _ = _raw()
    with pytest.raises(DataFormatError, match=message):
        unpack(case(raw), "m.safetensors")


def _rewrite(raw: bytes, edit) -> bytes:
    """The file with its header JSON edited by ``edit(header)`` (data unchanged)."""
    end = _header_end(raw)
    header = json.loads(raw[8:end])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[end:]


def _edit_manifest(change):
    def edit(header):
        manifest = json.loads(header["__metadata__"]["qrec"])
        change(manifest)
        header["__metadata__"]["qrec"] = json.dumps(manifest)
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.pop("__metadata__"), "without a qrec manifest"),
    (lambda h: h["__metadata__"].update(qrec="{}"), "manifest is corrupt"),
    (_edit_manifest(lambda m: m["config"].update(dim=9)), "manifest is corrupt"),
    (lambda h: h["dense/w"].update(dtype="F99"), "malformed header entry"),
    (lambda h: h["dense/w"].update(dtype="I32"), "the manifest says"),
    (lambda h: h["dense/w"].update(shape=[5, 3]), "the manifest says"),
    (lambda h: h["dense/w"].update(shape=[3, 4]), "does not hold"),
    (lambda h: h.update(extra=h.pop("dense/w")), "not listed \\['extra'\\], missing \\['dense/w'\\]"),
])
def test_headers_that_disagree_with_the_manifest_are_refused(edit, message):
    raw, _ = _raw()
    with pytest.raises(DataFormatError, match=message):
        unpack(_rewrite(raw, edit), "m.safetensors")


def test_read_header_reads_only_the_manifest(tmp_path):
    raw, manifest = _raw()
    (tmp_path / "m.safetensors").write_bytes(raw[:_header_end(raw)])  # data cut off: the header still reads
    assert read_header(tmp_path / "m.safetensors") == manifest
    with pytest.raises(DataFormatError, match="no such file"):
        read_header(tmp_path / "missing.safetensors")


def test_equal_inputs_give_equal_bytes():
    """Written by qrec, not by safetensors' writer (whose metadata map comes out in random order)."""
    assert _raw()[0] == _raw()[0]
    raw, _ = _raw()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0 and json.loads(raw[8:8 + n])["__metadata__"].keys() == {"qrec", "qrec_sha256"}
