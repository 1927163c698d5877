"""Readers for the interaction file formats qrec supports: one module per format in ``qrec.data.formats``,
gathered here as the one place to import a reader from.

Every reader returns :class:`~qrec.data.interactions.Interactions` (raw logs) or
:class:`~qrec.data.interactions.Split` (files that ship already split). Internal ids are contiguous
and 0-based; ``user_ids`` / ``item_ids`` map them back to the ids written in the file.

Malformed input raises :class:`~qrec.errors.DataFormatError` naming the file and the 1-based line:
a wrong column count, a token that is not an id, an empty file, a (user, item) pair given twice, a
user given two lines of a per-user file, an item repeated within one line. Blank lines carry no
data and are skipped.

The integer formats (MovieLens, LightGCN, sequences) are parsed without a Python loop over lines
(``formats/tokens.py``): one ``bytes.translate`` pass rejects any byte that cannot belong to an id, numpy finds
token and line boundaries in the byte buffer, and ``np.fromstring`` converts every token at C speed. Tables
with headers or non-integer fields (RecBole, CSV/TSV, Parquet, LastFM) go through pandas' C parser
(``formats/table.py``).
"""

from qrec.data.formats.graph import read_lightgcn_split
from qrec.data.formats.movielens import read_movie_genres, read_movielens_dat, read_ml100k
from qrec.data.formats.sequences import read_sequences, write_sequences
from qrec.data.formats.table import read_lastfm, read_named_table, read_recbole_inter, read_table
from qrec.data.formats.tokens import MAX_TOKEN

__all__ = [
    "MAX_TOKEN",
    "read_lastfm",
    "read_lightgcn_split",
    "read_movie_genres",
    "read_movielens_dat",
    "read_ml100k",
    "read_named_table",
    "read_recbole_inter",
    "read_sequences",
    "read_table",
    "write_sequences",
]
