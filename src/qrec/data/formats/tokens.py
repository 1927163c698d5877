"""What every reader shares: the integer formats' byte-level parser (no Python loop over lines), token echoes
capped before any parsing, and the checks that make a duplicate (unless summed or dropped) or an impossible value
a line-precise error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qrec.data.duplicates import check_option, first_repeat, merge
from qrec.data.interactions import Interactions
from qrec.errors import DataFormatError, DatasetNotFoundError


# The only bytes the integer formats may hold (no signs: ids are >= 0).
_ID_BYTES = b"0123456789 \t\r\n"
# Every decimal of up to 18 digits fits in int64; longer ones would overflow silently in C.
_MAX_DIGITS = 18
# Longest field of a delimited table: checked before any number or date parsing (pandas' date parser
# is quadratic in the token length; a 10 MB token ran for minutes). Longer than any real id or date.
MAX_TOKEN = 256
# Numbers read as float64 are exact integers below 2**53: a larger "id" would merge with its neighbours.
MAX_EXACT = 2.0**53
FLOAT32_MAX = float(np.finfo(np.float32).max)
BOM = b"\xef\xbb\xbf"


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


def read_bytes(path: Path) -> bytes:
    """The file's bytes, a UTF-8 byte-order mark (Windows editors write one) removed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a folder, expected a file") from None
    return raw[len(BOM):] if raw.startswith(BOM) else raw


def echo(value) -> str:
    """A value from a file as an error shows it (text quoted), cut to 40 characters: never a whole huge token."""
    return cut(repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value))


def cut(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _token_at(raw: bytes, pos: int) -> str:
    """The whitespace-delimited token around byte ``pos``, for error messages."""
    start = max(raw.rfind(b" ", 0, pos), raw.rfind(b"\t", 0, pos), raw.rfind(b"\n", 0, pos)) + 1
    start = max(start, pos - 40)  # never walk a huge token: 40 characters are all an error message shows
    end = pos
    while end < min(len(raw), pos + 41) and raw[end : end + 1] not in b" \t\r\n":
        end += 1
    return cut(raw[start:end].decode("utf-8", errors="replace"))


def line_of(raw: bytes, pos: int) -> int:
    return raw.count(b"\n", 0, pos) + 1


def int_lines(path: Path, raw: bytes) -> _IntLines:
    """Tokenize a file of non-negative integers separated by blanks, one record per line."""
    stray = raw.translate(None, delete=_ID_BYTES)  # C-speed scan; empty for a well-formed file
    if stray:
        pos = raw.find(stray[:1])  # every earlier byte is valid, so this is the first bad byte
        token = _token_at(raw, pos)
        raise DataFormatError(path, f"expected a non-negative integer id, found {token!r}", line_of(raw, pos))
    buf = np.frombuffer(raw, dtype=np.uint8)
    is_digit = (buf >= ord("0")) & (buf <= ord("9"))
    edges = np.diff(is_digit.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if starts.size == 0:
        raise DataFormatError(path, "file is empty: no interactions found")
    too_long = np.flatnonzero(ends - starts > _MAX_DIGITS)
    if too_long.size:
        pos = int(starts[too_long[0]])
        raise DataFormatError(path, f"id {_token_at(raw, pos)!r} is too large", line_of(raw, pos))

    token_line = np.searchsorted(np.flatnonzero(buf == ord("\n")), starts)  # 0-based line of each token
    first = np.flatnonzero(np.diff(token_line, prepend=-1))
    lengths = np.diff(first, append=len(starts))
    values = np.fromstring(raw, dtype=np.int64, sep=" ")  # "sep=' '" matches any run of whitespace
    if values.size != starts.size:  # cannot happen once the byte scan passed; guard the invariant
        raise DataFormatError(path, "could not parse the file as integers")
    return _IntLines(values, first, lengths, token_line[first] + 1)


def int_table(path: Path, raw: bytes, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A headerless table of integer columns: (rows as an (n, k) array, 1-based line of each row)."""
    lines = int_lines(path, raw)
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


def check_unique_heads(path: Path, lines: _IntLines, what: str = "user") -> None:
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


REPEAT_HINT = " (duplicates='sum' or 'drop', --duplicates, merges repeats)"


def check_unique_pairs(
    path: Path, users: np.ndarray, items: np.ndarray, n_items: int, line_no: np.ndarray,
    user_ids: np.ndarray, item_ids: np.ndarray,
) -> None:
    """Reject a (user, item) pair given twice; the error names the line of the second occurrence."""
    repeat = first_repeat(users * np.int64(n_items) + items)
    if repeat is None:
        return
    first, second = repeat
    u, i = user_ids[users[second]], item_ids[items[second]]
    if line_no[first] == line_no[second]:
        message = f"item {i} appears twice for user {u} on this line"
    else:
        message = f"duplicate interaction (user {u}, item {i}); first given on line {line_no[first]}"
    raise DataFormatError(path, message + REPEAT_HINT, int(line_no[second]))


def unique_pairs(path: Path, data: Interactions, line_no: np.ndarray, duplicates: str) -> Interactions:
    """``data`` with its repeated pairs refused (naming the line), summed or dropped (``qrec.data.duplicates``)."""
    check_option(duplicates)
    if duplicates != "error":
        return merge(data, duplicates)
    check_unique_pairs(path, data.users, data.items, data.n_items, line_no, data.user_ids, data.item_ids)
    return data


def factorize(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def pairwise(
    path: Path, user_raw: np.ndarray, item_raw: np.ndarray, line_no: np.ndarray, *,
    timestamps: np.ndarray | None, ratings: np.ndarray | None, name: str, fmt: str, duplicates: str = "error",
) -> Interactions:
    """Interactions from one row per (user, item) pair, raw ids factorized, repeated pairs as ``duplicates`` says."""
    users, user_ids = factorize(user_raw)
    items, item_ids = factorize(item_raw)
    return unique_pairs(path, Interactions(
        users=users, items=items, n_users=len(user_ids), n_items=len(item_ids),
        user_ids=user_ids, item_ids=item_ids, timestamps=timestamps, ratings=ratings,
        name=name, meta={"format": fmt, "files": [str(path)]},
    ), line_no, duplicates)


def empty_like(data: Interactions) -> Interactions:
    """No interactions, same id space (the validation part of files that ship only train/test)."""
    return data.subset(np.zeros(0, dtype=np.int64))


def default_name(path: Path) -> str:
    return path.parent.name or path.stem


def id_space(paths: list[Path], ids_per_file: list[tuple[np.ndarray, np.ndarray]], what: str, base: int = 0) -> int:
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
