"""Readers for the interaction file formats qrec supports, one function per format.

Every reader returns :class:`~qrec.data.interactions.Interactions` (raw logs) or
:class:`~qrec.data.interactions.Split` (files that ship already split). Internal ids are contiguous
and 0-based; ``user_ids`` / ``item_ids`` map them back to the ids written in the file.

Malformed input raises :class:`~qrec.errors.DataFormatError` naming the file and the 1-based line:
a wrong column count, a token that is not an id, an empty file, a (user, item) pair given twice, a
user given two lines of a per-user file, an item repeated within one line. Blank lines carry no
data and are skipped.

The integer formats (MovieLens, LightGCN, sequences) are parsed without a Python loop over lines:
one ``bytes.translate`` pass rejects any byte that cannot belong to an id, numpy finds token and
line boundaries in the byte buffer, and ``np.fromstring`` converts every token at C speed. Tables
with headers or non-integer fields (RecBole, CSV/TSV, LastFM) go through pandas' C parser.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qrec.data.interactions import Interactions, Split
from qrec.errors import DataFormatError, DatasetNotFoundError

__all__ = [
    "read_movielens_dat",
    "read_ml100k",
    "read_recbole_inter",
    "read_table",
    "read_lightgcn_split",
    "read_sequences",
    "read_lastfm",
]

# The only bytes the integer formats may hold (no signs: ids are >= 0).
_ID_BYTES = b"0123456789 \t\r\n"
# Every decimal of up to 18 digits fits in int64; longer ones would overflow silently in C.
_MAX_DIGITS = 18
# Longest field of a delimited table: checked before any number or date parsing (pandas' date parser
# is quadratic in the token length; a 10 MB token ran for minutes). Longer than any real id or date.
MAX_TOKEN = 256
# Numbers read as float64 are exact integers below 2**53: a larger "id" would merge with its neighbours.
_MAX_EXACT = 2.0**53
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------------
# Byte-level tokenizer shared by the integer formats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _IntLines:
    """The integers of a whitespace-separated file, grouped by (non-blank) line."""

    values: np.ndarray  # every token, in file order (int64)
    first: np.ndarray  # index into ``values`` of each line's first token
    lengths: np.ndarray  # number of tokens on each line
    line_no: np.ndarray  # 1-based physical line number of each line

    def column(self, k: int) -> np.ndarray:
        """Token ``k`` of every line (callers check ``lengths`` first)."""
        return self.values[self.first + k]

    def heads_and_tails(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For ``head tail tail ...`` lines: (head repeated per tail, tails, line number per tail)."""
        tail_counts = self.lengths - 1
        is_tail = np.ones(len(self.values), dtype=bool)
        is_tail[self.first] = False
        heads = np.repeat(self.values[self.first], tail_counts)
        return heads, self.values[is_tail], np.repeat(self.line_no, tail_counts)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, a UTF-8 byte-order mark (Windows editors write one) removed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a folder, expected a file") from None
    return raw[len(_BOM):] if raw.startswith(_BOM) else raw


def _echo(value) -> str:
    """A value from a file as an error shows it (text quoted), cut to 40 characters: never a whole huge token."""
    return _cut(repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value))


def _cut(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _token_at(raw: bytes, pos: int) -> str:
    """The whitespace-delimited token around byte ``pos``, for error messages."""
    start = max(raw.rfind(b" ", 0, pos), raw.rfind(b"\t", 0, pos), raw.rfind(b"\n", 0, pos)) + 1
    start = max(start, pos - 40)  # never walk a huge token: 40 characters are all an error message shows
    end = pos
    while end < min(len(raw), pos + 41) and raw[end : end + 1] not in b" \t\r\n":
        end += 1
    return _cut(raw[start:end].decode("utf-8", errors="replace"))


def _line_of(raw: bytes, pos: int) -> int:
    return raw.count(b"\n", 0, pos) + 1


def _int_lines(path: Path, raw: bytes) -> _IntLines:
    """Tokenize a file of non-negative integers separated by blanks, one record per line."""
    stray = raw.translate(None, delete=_ID_BYTES)  # C-speed scan; empty for a well-formed file
    if stray:
        pos = raw.find(stray[:1])  # every earlier byte is valid, so this is the first bad byte
        token = _token_at(raw, pos)
        raise DataFormatError(path, f"expected a non-negative integer id, found {token!r}", _line_of(raw, pos))
    buf = np.frombuffer(raw, dtype=np.uint8)
    is_digit = (buf >= ord("0")) & (buf <= ord("9"))
    edges = np.diff(is_digit.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if starts.size == 0:
        raise DataFormatError(path, "file is empty: no interactions found")
    too_long = np.flatnonzero(ends - starts > _MAX_DIGITS)
    if too_long.size:
        pos = int(starts[too_long[0]])
        raise DataFormatError(path, f"id {_token_at(raw, pos)!r} is too large", _line_of(raw, pos))

    token_line = np.searchsorted(np.flatnonzero(buf == ord("\n")), starts)  # 0-based line of each token
    first = np.flatnonzero(np.diff(token_line, prepend=-1))
    lengths = np.diff(first, append=len(starts))
    values = np.fromstring(raw, dtype=np.int64, sep=" ")  # "sep=' '" matches any run of whitespace
    if values.size != starts.size:  # cannot happen once the byte scan passed; guard the invariant
        raise DataFormatError(path, "could not parse the file as integers")
    return _IntLines(values, first, lengths, token_line[first] + 1)


def _int_table(path: Path, raw: bytes, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A headerless table of integer columns: (rows as an (n, k) array, 1-based line of each row)."""
    lines = _int_lines(path, raw)
    wrong = np.flatnonzero(lines.lengths != len(columns))
    if wrong.size:
        k = wrong[0]
        raise DataFormatError(
            path,
            f"expected {len(columns)} fields ({', '.join(columns)}), found {lines.lengths[k]}",
            int(lines.line_no[k]),
        )
    return lines.values.reshape(-1, len(columns)), lines.line_no


# --------------------------------------------------------------------------------------------
# Validation and id mapping
# --------------------------------------------------------------------------------------------


def _check_unique_heads(path: Path, lines: _IntLines, what: str = "user") -> None:
    """Per-user files give each user one line; name both lines of the first repeat."""
    heads = lines.column(0)
    order = np.argsort(heads, kind="stable")
    repeat = np.flatnonzero(heads[order][1:] == heads[order][:-1])
    if repeat.size:
        # the repeat that appears earliest in the file, and the line its user was first given on
        second = order[1:][repeat].min()
        first = order[np.searchsorted(heads[order], heads[second])]
        raise DataFormatError(
            path,
            f"{what} {heads[second]} already has a line (line {lines.line_no[first]}); "
            f"each {what} must appear on one line only",
            int(lines.line_no[second]),
        )


def _check_unique_pairs(
    path: Path, users: np.ndarray, items: np.ndarray, n_items: int, line_no: np.ndarray,
    user_ids: np.ndarray, item_ids: np.ndarray,
) -> None:
    """Reject a (user, item) pair given twice; the error names the line of the second occurrence."""
    keys = users * np.int64(n_items) + items
    sorted_keys = np.sort(keys)  # an unstable sort is enough to learn whether any key repeats
    if not np.any(sorted_keys[1:] == sorted_keys[:-1]):
        return
    order = np.argsort(keys, kind="stable")  # stable: equal keys stay in file order
    sorted_keys = keys[order]
    repeat = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    second = order[1:][repeat].min()  # the repeat that comes earliest in the file
    first = order[np.searchsorted(sorted_keys, keys[second])]
    u, i = user_ids[users[second]], item_ids[items[second]]
    if line_no[first] == line_no[second]:
        message = f"item {i} appears twice for user {u} on this line"
    else:
        message = f"duplicate interaction (user {u}, item {i}); first given on line {line_no[first]}"
    raise DataFormatError(path, message, int(line_no[second]))


def _factorize(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous 0-based codes for raw ids (ordered by raw id) and the raw id of each code."""
    raw = np.asarray(raw)
    if raw.dtype.kind in "iu" and raw.size and raw.min() >= 0 and raw.max() <= 8 * raw.size + 1_000_000:
        # ids are small non-negative ints (all formats here): a lookup table is O(n), no sort
        present = np.zeros(int(raw.max()) + 1, dtype=bool)
        present[raw] = True
        code_of = np.cumsum(present, dtype=np.int64) - 1
        return code_of[raw], np.flatnonzero(present).astype(raw.dtype)
    uniques, codes = np.unique(raw, return_inverse=True)
    return codes.astype(np.int64, copy=False).reshape(-1), uniques


def _pairwise(
    path: Path, user_raw: np.ndarray, item_raw: np.ndarray, line_no: np.ndarray, *,
    timestamps: np.ndarray | None, ratings: np.ndarray | None, name: str, fmt: str,
) -> Interactions:
    """Interactions from one row per (user, item) pair, raw ids factorized, duplicates rejected."""
    users, user_ids = _factorize(user_raw)
    items, item_ids = _factorize(item_raw)
    _check_unique_pairs(path, users, items, len(item_ids), line_no, user_ids, item_ids)
    return Interactions(
        users=users, items=items, n_users=len(user_ids), n_items=len(item_ids),
        user_ids=user_ids, item_ids=item_ids, timestamps=timestamps, ratings=ratings,
        name=name, meta={"format": fmt, "files": [str(path)]},
    )


def _empty_like(data: Interactions) -> Interactions:
    """No interactions, same id space (the validation part of files that ship only train/test)."""
    return data.subset(np.zeros(0, dtype=np.int64))


def _default_name(path: Path) -> str:
    return path.parent.name or path.stem


# --------------------------------------------------------------------------------------------
# MovieLens and other fixed-column integer formats
# --------------------------------------------------------------------------------------------


def read_movielens_dat(path, name: str | None = None) -> Interactions:
    """MovieLens-1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` per line."""
    path = Path(path)
    raw = _read_bytes(path)
    blank = min((p for p in (raw.find(b" "), raw.find(b"\t")) if p >= 0), default=-1)
    if blank >= 0:  # the format has no blanks; accepting them would hide a wrong file
        raise DataFormatError(path, "unexpected blank; ratings.dat fields are separated by '::'", _line_of(raw, blank))
    rows, line_no = _int_table(path, raw.replace(b"::", b" "), ("user", "item", "rating", "timestamp"))
    return _pairwise(
        path, rows[:, 0], rows[:, 1], line_no, timestamps=rows[:, 3].copy(),
        ratings=rows[:, 2].astype(np.float32), name=name or "ml-1m", fmt="movielens-dat",
    )


def read_ml100k(path, name: str | None = None) -> Interactions:
    """MovieLens-100K ``u.data``: tab-separated ``user item rating timestamp``."""
    path = Path(path)
    rows, line_no = _int_table(path, _read_bytes(path), ("user", "item", "rating", "timestamp"))
    return _pairwise(
        path, rows[:, 0], rows[:, 1], line_no, timestamps=rows[:, 3].copy(),
        ratings=rows[:, 2].astype(np.float32), name=name or "ml-100k", fmt="movielens-100k",
    )


def read_lastfm(train_path, test_path, name: str | None = None) -> Split:
    """LastFM as shipped with LightGCN-PyTorch: tab-separated ``user artist count``, 1-based, CRLF.

    Ids become ``raw - 1`` with ``n = largest raw id`` over both files, LightGCN-PyTorch's own
    convention (1892 users, 4489 items: users without pairs keep their row). The listen count is
    kept as ``ratings`` (a few are written in float notation, e.g. ``3.2466e+05``, so this format
    goes through pandas rather than the integer tokenizer). Returns a ``Split`` with protocol
    ``"given"`` and an empty ``valid``.
    """
    paths = [Path(train_path), Path(test_path)]
    tables = [_lastfm_table(p) for p in paths]
    n_users = _id_space(paths, [(users, line_no) for users, _, _, line_no in tables], "user", base=1)
    n_items = _id_space(paths, [(items, line_no) for _, items, _, line_no in tables], "item", base=1)
    user_ids, item_ids = np.arange(1, n_users + 1), np.arange(1, n_items + 1)
    name = name or _default_name(paths[0])
    parts = []
    for p, (users, items, counts, line_no) in zip(paths, tables):
        _check_unique_pairs(p, users - 1, items - 1, n_items, line_no, user_ids, item_ids)
        parts.append(Interactions(
            users=users - 1, items=items - 1, n_users=n_users, n_items=n_items, user_ids=user_ids,
            item_ids=item_ids, ratings=counts, name=name,
            meta={"format": "lastfm", "files": [str(p) for p in paths]},
        ))
    return Split(train=parts[0], valid=_empty_like(parts[0]), test=parts[1], protocol="given")


def _lastfm_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw 1-based (users, items, counts as float32, line numbers) of one LastFM file."""
    frame, line_no = _read_delimited(path, "\t", header=False)
    if frame.empty:
        raise DataFormatError(path, "file is empty: no interactions found")
    if frame.shape[1] != 3:
        raise DataFormatError(path, f"expected 3 fields (user, artist, count), found {frame.shape[1]}", int(line_no[0]))
    users = _column_ids(path, frame[0], line_no, "user", integer_only=True)
    items = _column_ids(path, frame[1], line_no, "item", integer_only=True)
    counts = _column_numbers(path, frame[2], line_no, "count").astype(np.float32)
    for role, ids in (("user", users), ("item", items)):
        below = np.flatnonzero(ids < 1)
        if below.size:
            raise DataFormatError(path, f"{role} ids are 1-based, found {ids[below[0]]}", int(line_no[below[0]]))
    return users, items, counts, line_no


# --------------------------------------------------------------------------------------------
# Per-user line formats: LightGCN splits and chronological sequences
# --------------------------------------------------------------------------------------------


def read_lightgcn_split(train_path, test_path, name: str | None = None) -> Split:
    """LightGCN/NGCF ``train.txt`` + ``test.txt``: lines ``user item item ...``, 0-based ids.

    Both files share one id space: ``n_users`` / ``n_items`` are the largest id in either file
    plus one, and raw ids equal internal ids. A user line may list no items. LF and CRLF both
    work. Returns a ``Split`` with protocol ``"given"`` and an empty ``valid``.
    """
    paths = [Path(train_path), Path(test_path)]
    parsed = []
    for p in paths:
        lines = _int_lines(p, _read_bytes(p))
        _check_unique_heads(p, lines)
        parsed.append(lines.heads_and_tails() + (lines,))
    n_users = _id_space(paths, [(lines.column(0), lines.line_no) for *_, lines in parsed], "user")
    n_items = _id_space(paths, [(items, line_no) for _, items, line_no, _ in parsed], "item")
    ids_u, ids_i = np.arange(n_users), np.arange(n_items)
    name = name or _default_name(paths[0])
    parts = []
    for p, (users, items, line_no, _) in zip(paths, parsed):
        _check_unique_pairs(p, users, items, n_items, line_no, ids_u, ids_i)
        parts.append(Interactions(
            users=users, items=items, n_users=n_users, n_items=n_items, user_ids=ids_u,
            item_ids=ids_i, name=name, meta={"format": "lightgcn", "files": [str(p) for p in paths]},
        ))
    return Split(train=parts[0], valid=_empty_like(parts[0]), test=parts[1], protocol="given")


def _id_space(paths: list[Path], ids_per_file: list[tuple[np.ndarray, np.ndarray]], what: str, base: int = 0) -> int:
    """Rows of an id space numbered by the files themselves (largest id + 1 - ``base``), refused when it would be
    mostly empty: a stray huge id would otherwise allocate that many rows (10^18: a MemoryError; 10^9: minutes)."""
    present = [ids for ids, _ in ids_per_file if ids.size]
    if not present:
        return 0
    n = int(max(ids.max() for ids in present)) + 1 - base
    distinct = len(np.unique(np.concatenate(present)))
    if n > 10 * distinct + 1_000_000:
        path, (ids, line_no) = max(zip(paths, ids_per_file), key=lambda f: f[1][0].max() if f[1][0].size else -1)
        k = int(np.argmax(ids))
        raise DataFormatError(path, f"{what} id {ids[k]} is far beyond the {distinct} {what}s of these files (this "
                                    f"format numbers the rows by id, from {base})", int(line_no[k]))
    return n


def read_sequences(path, name: str | None = None) -> Interactions:
    """Per-user chronological sequences, one line ``user item item ...`` oldest first.

    Used by SASRec-style data (``ml-1m-seq``, ``beauty``). There are no clock times, so
    ``timestamps`` holds each item's position in its sequence (0, 1, 2, ...): sorting by it
    restores the file's order. Raw ids are factorized in increasing order.
    """
    path = Path(path)
    lines = _int_lines(path, _read_bytes(path))
    _check_unique_heads(path, lines)
    _, item_raw, line_no = lines.heads_and_tails()
    users, user_ids = _factorize(lines.column(0))  # every line's user, even one with no items
    users = np.repeat(users, lines.lengths - 1)
    items, item_ids = _factorize(item_raw)
    _check_unique_pairs(path, users, items, len(item_ids), line_no, user_ids, item_ids)
    # position within the line: running index minus the index of the line's first item
    line_start = np.cumsum(lines.lengths - 1) - (lines.lengths - 1)
    positions = np.arange(len(items), dtype=np.int64) - np.repeat(line_start, lines.lengths - 1)
    return Interactions(
        users=users, items=items, n_users=len(user_ids), n_items=len(item_ids),
        user_ids=user_ids, item_ids=item_ids, timestamps=positions,
        name=name or _default_name(path), meta={"format": "sequences", "files": [str(path)]},
    )


# --------------------------------------------------------------------------------------------
# Delimited tables with headers: RecBole atomic files, generic CSV / TSV / Parquet
# --------------------------------------------------------------------------------------------

_PARQUET_SUFFIXES = {".parquet", ".pq"}
_SEP_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".inter": "\t"}
_ROLES = ("user", "item", "timestamp", "rating")


def _read_delimited(path: Path, sep: str, header: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """pandas C-engine read of every column; returns the frame without blank lines and the 1-based
    line of each row. A row with more fields than the first one is an error naming its line."""
    try:
        with warnings.catch_warnings():
            # pandas only *warns* when the first data row is longer than the header, then drops data
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path, sep=sep, header=0 if header else None, index_col=False,
                skip_blank_lines=False,  # keep blank lines as all-NaN rows so row -> line stays exact
                encoding="utf-8", low_memory=False,
            )
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(path, "file is empty: no interactions found") from None
    except pd.errors.ParserWarning:
        expected, line, saw = _first_long_line(path, sep)
        raise DataFormatError(path, f"expected {expected} fields, found {saw}", line) from None
    except pd.errors.ParserError as err:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if match is None:
            raise DataFormatError(path, f"cannot parse: {err}") from None
        expected, line, saw = (int(g) for g in match.groups())
        raise DataFormatError(path, f"expected {expected} fields, found {saw}", line) from None
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"not UTF-8 text ({err.reason})") from None
    line_no = np.arange(len(frame), dtype=np.int64) + (2 if header else 1)
    keep = ~frame.isna().all(axis=1).to_numpy()
    return frame[keep].reset_index(drop=True), line_no[keep]


def _first_long_line(path: Path, sep: str) -> tuple[int, int | None, int | None]:
    """(header width, 1-based line, width) of the first row wider than the header (error path)."""
    split = (lambda line: line.split()) if sep == r"\s+" else (lambda line: line.split(sep))  # noqa: E731
    with path.open(encoding="utf-8", errors="replace") as f:
        width = len(split(f.readline().rstrip("\r\n")))
        for number, line in enumerate(f, start=2):
            fields = len(split(line.rstrip("\r\n")))
            if fields > width:
                return width, number, fields
    return width, None, None


def _check_columns(path: Path, frame: pd.DataFrame, roles: dict, header: bool) -> None:
    """Every column ``roles`` names (header names, or positions in a headerless file) exists."""
    absent = [c for c in roles.values() if c not in frame.columns]
    if absent:
        raise DataFormatError(
            path, f"no column {absent[0]!r} (columns: {', '.join(map(str, frame.columns))})", 1 if header else None
        )


def _column_ids(
    path: Path, values: pd.Series, line_no: np.ndarray, role: str, integer_only: bool = False
) -> np.ndarray:
    """Raw ids of one column: int64 when every id is an integer, otherwise strings (unless
    ``integer_only``, where a non-integer id is an error naming its line)."""
    _check_present(path, values, line_no, role)
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(values):  # floats: integral ones are ids (blank lines make NaN)
        array = values.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~(np.abs(array) < _MAX_EXACT))  # inf, nan and ids beyond exact float range
        if bad.size:
            k = bad[0]
            raise DataFormatError(path, f"{role} id {array[k]:g} is out of range (ids are integers below 2^53 "
                                        "when written as floats)", int(line_no[k]))
        fractional = np.flatnonzero(array != np.floor(array))
        if fractional.size:
            k = fractional[0]
            raise DataFormatError(path, f"{role} id {array[k]:g} is not an integer", int(line_no[k]))
        return array.astype(np.int64)
    strings = values.astype(str).str.strip()
    is_int = strings.str.fullmatch(r"-?[0-9]{1,18}").to_numpy(dtype=bool)  # [0-9]: "³" is a \d, not an int
    if is_int.all():  # integer ids read as text (e.g. RecBole tokens)
        return strings.astype(np.int64).to_numpy()
    if integer_only:
        k = int(np.flatnonzero(~is_int)[0])
        raise DataFormatError(path, f"{role} id {_echo(strings.iloc[k])} is not an integer", int(line_no[k]))
    return strings.to_numpy(dtype=str)


def _column_numbers(path: Path, values: pd.Series, line_no: np.ndarray, role: str) -> np.ndarray:
    """A numeric column as float64, every value finite and within float32 (how ratings are kept); anything
    else is an error naming its line."""
    _check_present(path, values, line_no, role)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy())
    if bad.size:
        k = bad[0]
        raise DataFormatError(path, f"{role} {_echo(values.iloc[k])} is not a number", int(line_no[k]))
    array = numbers.to_numpy(dtype=np.float64)
    out = np.flatnonzero(~(np.abs(array) <= _FLOAT32_MAX))
    if out.size:
        k = out[0]
        raise DataFormatError(path, f"{role} {_echo(values.iloc[k])} is not a finite number in range", int(line_no[k]))
    return array


def _column_times(path: Path, values: pd.Series, line_no: np.ndarray) -> np.ndarray:
    """Timestamps: numbers (int64 when all integral, else float64) or dates (Unix seconds)."""
    _check_present(path, values, line_no, "timestamp")
    if pd.api.types.is_integer_dtype(values):  # int64 as parsed: no round trip through float64
        return values.to_numpy(dtype=np.int64)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        times = numbers.to_numpy(dtype=np.float64)
        out = np.flatnonzero(~(np.abs(times) < 2.0**63))  # inf, nan, or beyond int64: never cast to -2^63
        if out.size:
            k = out[0]
            raise DataFormatError(path, f"timestamp {_echo(values.iloc[k])} is out of range", int(line_no[k]))
        return times.astype(np.int64) if np.all(times == np.floor(times)) else times
    is_number = numbers.notna().to_numpy()
    dates = pd.to_datetime(values.where(~is_number), utc=True, format="mixed", errors="coerce")
    bad = np.flatnonzero(dates.isna().to_numpy() & ~is_number)  # also "NaT", which parses to a missing date
    if bad.size:
        k = bad[0]
        message = f"timestamp {_echo(values.iloc[k])} is neither a number nor a date"
        raise DataFormatError(path, message, int(line_no[k]))
    if is_number.any():
        k = int(np.flatnonzero(is_number)[0])
        raise DataFormatError(path, f"timestamp {_echo(values.iloc[k])} is a number among dates", int(line_no[k]))
    # Unix seconds through numpy, whatever unit pandas parsed in (subtracting a nanosecond Timestamp would
    # overflow on dates before 1677)
    return dates.dt.tz_convert(None).to_numpy().astype("datetime64[s]").astype(np.int64)


def _check_present(path: Path, values: pd.Series, line_no: np.ndarray, role: str) -> None:
    """Every value is there, and (text columns) no longer than ``MAX_TOKEN``: checked before parsing."""
    missing = np.flatnonzero(values.isna().to_numpy())
    if missing.size:
        raise DataFormatError(path, f"missing {role} value", int(line_no[missing[0]]))
    if not pd.api.types.is_numeric_dtype(values):
        long = np.flatnonzero(values.astype(str).str.len().to_numpy() > MAX_TOKEN)
        if long.size:
            k = long[0]
            raise DataFormatError(path, f"{role} value {_echo(values.iloc[k])} is longer than {MAX_TOKEN} "
                                        "characters", int(line_no[k]))


def _from_frame(path: Path, frame: pd.DataFrame, line_no: np.ndarray, roles: dict, name: str, fmt: str) -> Interactions:
    """Interactions from a frame whose columns ``roles[role]`` hold user, item, timestamp, rating."""
    if frame.empty:
        raise DataFormatError(path, "file is empty: no interactions found")
    col = lambda role: frame[roles[role]]  # noqa: E731
    user_raw = _column_ids(path, col("user"), line_no, "user")
    item_raw = _column_ids(path, col("item"), line_no, "item")
    timestamps = _column_times(path, col("timestamp"), line_no) if "timestamp" in roles else None
    ratings = _column_numbers(path, col("rating"), line_no, "rating").astype(np.float32) if "rating" in roles else None
    return _pairwise(path, user_raw, item_raw, line_no, timestamps=timestamps, ratings=ratings, name=name, fmt=fmt)


def read_recbole_inter(path, name: str | None = None) -> Interactions:
    """A RecBole atomic ``.inter`` file: tab-separated, header ``field:type`` (e.g. ``user_id:token``).

    Columns are found by header name: ``user_id``, ``item_id`` (required), ``timestamp`` and
    ``rating`` (optional); other columns are ignored.
    """
    path = Path(path)
    header = _first_line(path, errors="strict").rstrip("\r\n").split("\t")
    if header == [""]:
        raise DataFormatError(path, "file is empty: no interactions found")
    by_field = {column.split(":", 1)[0].strip(): column for column in header}
    wanted = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "rating": "rating"}
    missing = [field for role, field in wanted.items() if role in ("user", "item") and field not in by_field]
    if missing:
        raise DataFormatError(path, f"header lacks {', '.join(missing)} (found: {_cut(', '.join(header), 200)})", 1)
    roles = {role: by_field[field] for role, field in wanted.items() if field in by_field}
    frame, line_no = _read_delimited(path, "\t", header=True)
    return _from_frame(path, frame, line_no, roles, name or path.stem, "recbole-inter")


def read_table(path, columns: dict, sep: str | None = None, name: str | None = None) -> Interactions:
    """A generic CSV / TSV / Parquet table of interactions.

    ``columns`` maps the roles ``"user"``, ``"item"`` (required), ``"timestamp"``, ``"rating"``
    (optional) to column names in the header; give integer positions instead for a headerless
    text file. ``sep`` defaults from the suffix (``.csv`` comma, ``.tsv``/``.tab`` tab) or else
    from the first line (tab, comma, semicolon, or any whitespace). Ids may be integers or strings.
    """
    path = Path(path)
    unknown = set(columns) - set(_ROLES)
    if unknown or not {"user", "item"} <= set(columns):
        raise ValueError(f"columns must map 'user' and 'item' (optionally 'timestamp', 'rating'), got {columns}")
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        frame, line_no = _read_parquet(path, list(columns.values()))
        return _from_frame(path, frame, line_no, columns, name or path.stem, "parquet")
    header = not all(isinstance(c, int) for c in columns.values())
    frame, line_no = _read_delimited(path, sep or _guess_sep(path), header=header)
    _check_columns(path, frame, columns, header)
    return _from_frame(path, frame, line_no, columns, name or path.stem, "table")


# Header names each role is recognised by (lower case, ``_``/``-``/spaces removed), most specific first:
# the names of MovieLens, RecBole, Amazon, Yelp, Last.fm, Steam and RetailRocket exports.
_HEADER_NAMES = {
    "user": ("userid", "user", "uid", "customerid", "reviewerid", "visitorid", "sessionid"),
    "item": ("itemid", "item", "iid", "movieid", "productid", "asin", "businessid", "artistid", "trackid", "appid"),
    "timestamp": ("timestamp", "time", "ts", "unixtime", "unixreviewtime", "datetime", "date"),
    "rating": ("rating", "score", "stars", "overall"),
}


def read_named_table(path, name: str | None = None) -> Interactions:
    """A CSV / TSV / Parquet / RecBole ``.inter`` table whose header names its columns: the user and item
    columns (required), timestamp and rating (optional) are found by their usual names (``user_id``,
    ``userId``, ``item_id``, ``movieId``, ``asin``, ``timestamp``, ``rating``, ...; RecBole's ``:type``
    suffixes are ignored). ``read_table`` takes an explicit column map instead."""
    path = Path(path)
    header = _header(path)
    found = {}
    for role, names in _HEADER_NAMES.items():
        by_name = {_normalised(column): column for column in header}
        column = next((by_name[n] for n in names if n in by_name), None)
        if column is not None:
            found[role] = column
    missing = [role for role in ("user", "item") if role not in found]
    if missing:
        looked = "; ".join(f"{role}: {', '.join(_HEADER_NAMES[role])}" for role in missing)
        raise DataFormatError(path, f"no {' or '.join(missing)} column in the header {header} (looked for {looked}; "
                                    "a file without a header: read_table with column positions)", 1)
    return read_table(path, columns=found, name=name)


def _normalised(column: str) -> str:
    return re.sub(r"[\s_\-]", "", str(column).split(":", 1)[0]).lower()


def _header(path: Path) -> list[str]:
    """Column names: the parquet schema, or the first line split at the guessed separator."""
    if path.suffix.lower() in _PARQUET_SUFFIXES:
        _require_pyarrow(path)
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except FileNotFoundError:
            raise DatasetNotFoundError(f"{path}: no such file") from None
        except (OSError, ValueError) as err:
            raise DataFormatError(path, f"cannot read parquet: {err}") from None
    sep = _guess_sep(path)
    first = _first_line(path).rstrip("\r\n")
    if not first.strip():
        raise DataFormatError(path, "file is empty or its first line is blank: no header", 1)
    return [c.strip('"') for c in re.split(sep, first) if c.strip()]  # as pandas names them: spaces kept


def _guess_sep(path: Path) -> str:
    if path.suffix.lower() in _SEP_BY_SUFFIX:
        return _SEP_BY_SUFFIX[path.suffix.lower()]
    first = _first_line(path)
    return next((s for s in ("\t", ",", ";") if s in first), r"\s+")


def _first_line(path: Path, errors: str = "replace", limit: int = 1 << 20) -> str:
    """The first line (at most ``limit`` characters), a byte-order mark dropped. ``errors="strict"``: bytes
    that are not UTF-8 are an error naming the file."""
    try:
        with path.open(encoding="utf-8-sig", errors=errors) as f:
            return f.readline(limit)
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a folder, expected a file") from None
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def _require_pyarrow(path: Path) -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise ImportError(f"reading {path} needs pyarrow, which is not installed: pip install pyarrow")


def _read_parquet(path: Path, wanted: list) -> tuple[pd.DataFrame, np.ndarray]:
    """Parquet via pandas + pyarrow; rows have no line numbers, so errors cite the row (1-based)."""
    _require_pyarrow(path)
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file")
    try:
        frame = pd.read_parquet(path, columns=wanted)
    except (KeyError, ValueError, OSError) as err:
        raise DataFormatError(path, f"cannot read parquet: {err}") from None
    return frame, np.arange(1, len(frame) + 1, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Item side information: MovieLens genres (for analyses, never for training)
# --------------------------------------------------------------------------------------------

# ML-100K's u.item ends in 19 genre flags, in u.genre's order
_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                  "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                  "War", "Western")


def read_movie_genres(path) -> dict[int, frozenset[str]]:
    """Raw movie id -> its genres, from ML-1M's ``movies.dat`` (``id::title::A|B``), ML-100K's ``u.item``
    (``id|title|date|video date|url|`` + 19 flags; latin-1, as GroupLens ships them) or RecBole's
    ``ml-100k.item`` (tab-separated, genres space-separated in its ``class`` column)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1").removeprefix(_BOM.decode("latin-1"))
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a folder, expected a file") from None
    lines = text.splitlines()
    header = lines[0].split("\t") if lines and lines[0].startswith("item_id:") else None
    genre_column = next((k for k, c in enumerate(header or []) if c.split(":")[0] == "class"), None)
    if header is not None and genre_column is None:
        raise DataFormatError(path, f"RecBole item file without a class column (header: {header})", 1)
    genres = {}
    for line_no, line in enumerate(lines, 1):
        if not line.strip() or (header is not None and line_no == 1):
            continue
        fields = line.split("\t") if header else line.split("::") if "::" in line else line.split("|")
        if header is not None:
            if len(fields) != len(header):
                raise DataFormatError(path, f"expected {len(header)} fields, found {len(fields)}", line_no)
            names = frozenset(fields[genre_column].split())
        elif len(fields) == 3:  # movies.dat
            names = frozenset(g for g in fields[2].split("|") if g)
        elif len(fields) == 5 + len(_ML100K_GENRES) and all(f in ("0", "1") for f in fields[5:]):
            names = frozenset(g for g, flag in zip(_ML100K_GENRES, fields[5:]) if flag == "1")
        else:
            raise DataFormatError(path, f"expected `id::title::genres` or `id|title|date|video|url|` + "
                                        f"{len(_ML100K_GENRES)} 0/1 flags, found {len(fields)} fields", line_no)
        if not re.fullmatch(r"[0-9]{1,18}", fields[0].strip()):  # not isdigit(): "³" is a digit to it
            raise DataFormatError(path, f"movie id {_echo(fields[0])} is not an integer", line_no)
        genres[int(fields[0])] = names
    if not genres:
        raise DataFormatError(path, "file is empty: no movies found")
    return genres


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
