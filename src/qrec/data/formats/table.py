"""Tables with headers or non-integer fields (RecBole ``.inter``, CSV / TSV, Parquet) through pandas' C parser:
columns found by header name or given explicitly."""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from qrec.data.interactions import Interactions, Split
from qrec.errors import DataFormatError, DatasetNotFoundError
from qrec.data.formats.tokens import (
    MAX_TOKEN,
    FLOAT32_MAX,
    MAX_EXACT,
    cut,
    default_name,
    echo,
    empty_like,
    id_space,
    pairwise,
    unique_pairs,
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
        bad = np.flatnonzero(~(np.abs(array) < MAX_EXACT))  # inf, nan and ids beyond exact float range
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
        raise DataFormatError(path, f"{role} id {echo(strings.iloc[k])} is not an integer", int(line_no[k]))
    return strings.to_numpy(dtype=str)


def _column_numbers(path: Path, values: pd.Series, line_no: np.ndarray, role: str) -> np.ndarray:
    """A numeric column as float64, every value finite and within float32 (how ratings are kept); anything
    else is an error naming its line."""
    _check_present(path, values, line_no, role)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy())
    if bad.size:
        k = bad[0]
        raise DataFormatError(path, f"{role} {echo(values.iloc[k])} is not a number", int(line_no[k]))
    array = numbers.to_numpy(dtype=np.float64)
    out = np.flatnonzero(~(np.abs(array) <= FLOAT32_MAX))
    if out.size:
        k = out[0]
        raise DataFormatError(path, f"{role} {echo(values.iloc[k])} is not a finite number in range", int(line_no[k]))
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
            raise DataFormatError(path, f"timestamp {echo(values.iloc[k])} is out of range", int(line_no[k]))
        return times.astype(np.int64) if np.all(times == np.floor(times)) else times
    is_number = numbers.notna().to_numpy()
    dates = pd.to_datetime(values.where(~is_number), utc=True, format="mixed", errors="coerce")
    bad = np.flatnonzero(dates.isna().to_numpy() & ~is_number)  # also "NaT", which parses to a missing date
    if bad.size:
        k = bad[0]
        message = f"timestamp {echo(values.iloc[k])} is neither a number nor a date"
        raise DataFormatError(path, message, int(line_no[k]))
    if is_number.any():
        k = int(np.flatnonzero(is_number)[0])
        raise DataFormatError(path, f"timestamp {echo(values.iloc[k])} is a number among dates", int(line_no[k]))
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
            raise DataFormatError(path, f"{role} value {echo(values.iloc[k])} is longer than {MAX_TOKEN} "
                                        "characters", int(line_no[k]))


def _from_frame(path: Path, frame: pd.DataFrame, line_no: np.ndarray, roles: dict, name: str, fmt: str,
                duplicates: str = "error") -> Interactions:
    """Interactions from a frame whose columns ``roles[role]`` hold user, item, timestamp, rating."""
    if frame.empty:
        raise DataFormatError(path, "file is empty: no interactions found")
    col = lambda role: frame[roles[role]]  # noqa: E731
    user_raw = _column_ids(path, col("user"), line_no, "user")
    item_raw = _column_ids(path, col("item"), line_no, "item")
    timestamps = _column_times(path, col("timestamp"), line_no) if "timestamp" in roles else None
    ratings = _column_numbers(path, col("rating"), line_no, "rating").astype(np.float32) if "rating" in roles else None
    return pairwise(path, user_raw, item_raw, line_no, timestamps=timestamps, ratings=ratings, name=name, fmt=fmt,
                    duplicates=duplicates)


def read_recbole_inter(path, name: str | None = None, duplicates: str = "error") -> Interactions:
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
        raise DataFormatError(path, f"header lacks {', '.join(missing)} (found: {cut(', '.join(header), 200)})", 1)
    roles = {role: by_field[field] for role, field in wanted.items() if field in by_field}
    frame, line_no = _read_delimited(path, "\t", header=True)
    return _from_frame(path, frame, line_no, roles, name or path.stem, "recbole-inter", duplicates)


def read_table(path, columns: dict, sep: str | None = None, name: str | None = None,
               duplicates: str = "error") -> Interactions:
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
        return _from_frame(path, frame, line_no, columns, name or path.stem, "parquet", duplicates)
    header = not all(isinstance(c, int) for c in columns.values())
    frame, line_no = _read_delimited(path, sep or _guess_sep(path), header=header)
    _check_columns(path, frame, columns, header)
    return _from_frame(path, frame, line_no, columns, name or path.stem, "table", duplicates)


# Header names each role is recognised by (lower case, ``_``/``-``/spaces removed), most specific first:
# the names of MovieLens, RecBole, Amazon, Yelp, Last.fm, Steam and RetailRocket exports.
_HEADER_NAMES = {
    "user": ("userid", "user", "uid", "customerid", "reviewerid", "visitorid", "sessionid"),
    "item": ("itemid", "item", "iid", "movieid", "productid", "asin", "businessid", "artistid", "trackid", "appid"),
    "timestamp": ("timestamp", "time", "ts", "unixtime", "unixreviewtime", "datetime", "date"),
    "rating": ("rating", "score", "stars", "overall"),
}


def read_named_table(path, name: str | None = None, duplicates: str = "error") -> Interactions:
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
    return read_table(path, columns=found, name=name, duplicates=duplicates)


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


def read_lastfm(train_path, test_path, name: str | None = None, duplicates: str = "error") -> Split:
    """LastFM as shipped with LightGCN-PyTorch: tab-separated ``user artist count``, 1-based, CRLF.

    Ids become ``raw - 1`` with ``n = largest raw id`` over both files, LightGCN-PyTorch's own
    convention (1892 users, 4489 items: users without pairs keep their row). The listen count is
    kept as ``ratings`` (a few are written in float notation, e.g. ``3.2466e+05``, so this format
    goes through pandas rather than the integer tokenizer). Returns a ``Split`` with protocol
    ``"given"`` and an empty ``valid``.
    """
    paths = [Path(train_path), Path(test_path)]
    tables = [_lastfm_table(p) for p in paths]
    n_users = id_space(paths, [(users, line_no) for users, _, _, line_no in tables], "user", base=1)
    n_items = id_space(paths, [(items, line_no) for _, items, _, line_no in tables], "item", base=1)
    user_ids, item_ids = np.arange(1, n_users + 1), np.arange(1, n_items + 1)
    name = name or default_name(paths[0])
    parts = []
    for p, (users, items, counts, line_no) in zip(paths, tables):
        parts.append(unique_pairs(p, Interactions(
            users=users - 1, items=items - 1, n_users=n_users, n_items=n_items, user_ids=user_ids,
            item_ids=item_ids, ratings=counts, name=name,
            meta={"format": "lastfm", "files": [str(p) for p in paths]},
        ), line_no, duplicates))
    return Split(train=parts[0], valid=empty_like(parts[0]), test=parts[1], protocol="given")


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
