"""MovieLens: ML-1M / ML-10M ``ratings.dat`` (``user::item::rating::time``), ML-100K ``u.data`` (tab-separated), and
the genre files (``movies.dat``, ``u.item``, RecBole's ``.item``) used by analyses, never for training."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from qrec.data.interactions import Interactions
from qrec.errors import DataFormatError, DatasetNotFoundError
from qrec.data.formats.tokens import (
    BOM,
    echo,
    int_table,
    line_of,
    pairwise,
    read_bytes,
)


# --------------------------------------------------------------------------------------------
# MovieLens and other fixed-column integer formats
# --------------------------------------------------------------------------------------------


def read_movielens_dat(path, name: str | None = None, duplicates: str = "error") -> Interactions:
    """MovieLens-1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` per line."""
    path = Path(path)
    raw = read_bytes(path)
    blank = min((p for p in (raw.find(b" "), raw.find(b"\t")) if p >= 0), default=-1)
    if blank >= 0:  # the format has no blanks; accepting them would hide a wrong file
        raise DataFormatError(path, "unexpected blank; ratings.dat fields are separated by '::'", line_of(raw, blank))
    rows, line_no = int_table(path, raw.replace(b"::", b" "), ("user", "item", "rating", "timestamp"))
    return pairwise(
        path, rows[:, 0], rows[:, 1], line_no, timestamps=rows[:, 3].copy(),
        ratings=rows[:, 2].astype(np.float32), name=name or "ml-1m", fmt="movielens-dat", duplicates=duplicates,
    )


def read_ml100k(path, name: str | None = None, duplicates: str = "error") -> Interactions:
    """MovieLens-100K ``u.data``: tab-separated ``user item rating timestamp``."""
    path = Path(path)
    rows, line_no = int_table(path, read_bytes(path), ("user", "item", "rating", "timestamp"))
    return pairwise(
        path, rows[:, 0], rows[:, 1], line_no, timestamps=rows[:, 3].copy(),
        ratings=rows[:, 2].astype(np.float32), name=name or "ml-100k", fmt="movielens-100k", duplicates=duplicates,
    )



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
        text = path.read_text(encoding="latin-1").removeprefix(BOM.decode("latin-1"))
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
            raise DataFormatError(path, f"movie id {echo(fields[0])} is not an integer", line_no)
        genres[int(fields[0])] = names
    if not genres:
        raise DataFormatError(path, "file is empty: no movies found")
    return genres
