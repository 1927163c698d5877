"""Raw id vocabularies in an artifact, and the raw id -> index lookup a server does per request.

Integer ids are stored as one int64 tensor ``<key>``; any other ids (strings) as their UTF-8 bytes
concatenated, ``<key>.utf8`` (uint8), with ``<key>.offsets`` (int64, ``n + 1``) marking where each starts.
"""

from __future__ import annotations

import numpy as np
import torch

from qrec.errors import DataFormatError, QrecError


class UnknownIdError(QrecError, KeyError):
    """Raw ids the model has no row for; ``.ids`` lists them."""

    def __init__(self, kind: str, ids: list):
        self.kind, self.ids = kind, list(ids)
        shown = ", ".join(map(repr, self.ids[:10])) + (f" (and {len(self.ids) - 10} more)" if len(self.ids) > 10 else "")
        super().__init__(f"unknown {kind} id(s): {shown}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def encode_ids(key: str, ids) -> dict[str, torch.Tensor]:
    """The tensors that store ``ids`` (integers as int64, anything else as UTF-8 strings)."""
    ids = np.asarray(ids)
    if np.issubdtype(ids.dtype, np.integer):
        return {key: torch.from_numpy(ids.astype(np.int64))}
    encoded = [str(x).encode("utf-8") for x in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return {f"{key}.utf8": torch.from_numpy(blob), f"{key}.offsets": torch.from_numpy(offsets)}


def decode_ids(tensors: dict[str, torch.Tensor], key: str, n: int, source) -> np.ndarray:
    """The ``n`` raw ids stored under ``key``: int64, or a numpy array of ``str``; checked to be unique."""
    if key in tensors:
        ids = tensors[key].numpy()
    elif f"{key}.utf8" in tensors and f"{key}.offsets" in tensors:
        ids = _decode_strings(tensors[f"{key}.utf8"].numpy(), tensors[f"{key}.offsets"].numpy(), key, source)
    else:
        raise DataFormatError(source, f"no id vocabulary {key!r} (re-export the run with this qrec)")
    if ids.ndim != 1 or len(ids) != n:
        raise DataFormatError(source, f"{key}: {ids.shape} ids for {n} rows")
    if len(np.unique(ids)) != n:
        raise DataFormatError(source, f"{key}: ids are not unique")
    return ids


def _decode_strings(blob: np.ndarray, offsets: np.ndarray, key: str, source) -> np.ndarray:
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0):
        raise DataFormatError(source, f"{key}.offsets do not delimit {key}.utf8")
    raw = blob.tobytes()
    try:
        return np.array([raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])], dtype=object).astype(str)
    except UnicodeDecodeError as e:
        raise DataFormatError(source, f"{key}.utf8: not UTF-8 ({e})") from None


class IdIndex:
    """Raw ids -> row indices by binary search over the sorted vocabulary (no per-id Python dict)."""

    def __init__(self, ids: np.ndarray, kind: str):
        self.ids, self.kind = ids, kind
        self.is_int = np.issubdtype(ids.dtype, np.integer)
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, raw) -> np.ndarray:
        """Indices of ``raw`` (a sequence of ids; numeric strings match integer ids); ``UnknownIdError``."""
        query, bad = self._coerce(raw)
        pos = np.searchsorted(self._sorted, query)
        pos = np.minimum(pos, len(self._sorted) - 1)
        found = (self._sorted[pos] == query) & ~bad
        if not found.all():
            raise UnknownIdError(self.kind, [r for r, f in zip(raw, found) if not f])
        return self._order[pos]

    def known(self, raw) -> np.ndarray:
        """Indices of the ids of ``raw`` the vocabulary holds, the others dropped."""
        query, bad = self._coerce(raw)
        pos = np.minimum(np.searchsorted(self._sorted, query), len(self._sorted) - 1)
        return self._order[pos[(self._sorted[pos] == query) & ~bad]]

    def raw(self, index) -> list:
        """The raw ids of row indices, as Python values (for JSON)."""
        return self.ids[np.asarray(index)].tolist()

    def _coerce(self, raw) -> tuple[np.ndarray, np.ndarray]:
        """The query ids in the vocabulary's type, and which of them could not be converted."""
        as_array = np.asarray(raw)
        if self.is_int and as_array.dtype.kind in "iu":  # the fast path: already integers
            return as_array.astype(np.int64).reshape(-1), np.zeros(as_array.size, dtype=bool)
        if not self.is_int:
            return np.array([str(r) for r in raw], dtype=str).reshape(-1), np.zeros(len(raw), dtype=bool)
        values, bad = np.zeros(len(raw), dtype=np.int64), np.zeros(len(raw), dtype=bool)
        for k, r in enumerate(raw):
            try:
                if isinstance(r, (bool, np.bool_)) or (isinstance(r, float) and not r.is_integer()):
                    raise ValueError
                values[k] = int(r)
            except (TypeError, ValueError, OverflowError):
                bad[k] = True
        return values, bad
