"""Every reader on tiny files: the parsed content, and each malformed case's exact error text."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from qrec.data.interactions import Interactions, Split
from qrec.data.loaders import (
    read_lastfm,
    read_lightgcn_split,
    read_ml100k,
    read_movielens_dat,
    read_named_table,
    read_recbole_inter,
    read_sequences,
    read_table,
)
from qrec.data.formats.tokens import REPEAT_HINT
from qrec.errors import DataFormatError, DatasetNotFoundError


def write(tmp_path, name: str, text: str, crlf: bool = False):
    path = tmp_path / name
    path.write_bytes((text.replace("\n", "\r\n") if crlf else text).encode())
    return path


def raises_at(path, line, message):
    """Expect DataFormatError whose text is exactly ``"<path>, line <line>: <message>"``."""
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return pytest.raises(DataFormatError, match="^" + re.escape(f"{where}: {message}") + "$")


def pairs(data: Interactions) -> set[tuple]:
    """(raw user, raw item) pairs, to compare content independently of internal numbering."""
    return set(zip(data.user_ids[data.users].tolist(), data.item_ids[data.items].tolist()))


# --------------------------------------------------------------------------------------------
# MovieLens ratings.dat and u.data
# --------------------------------------------------------------------------------------------

ML1M = "1::1193::5::978300760\n1::661::3::978302109\n6040::1193::4::956703932\n"


def test_movielens_dat_parses_and_factorizes(tmp_path):
    data = read_movielens_dat(write(tmp_path, "ratings.dat", ML1M))
    assert (data.n_users, data.n_items, len(data)) == (2, 2, 3)
    assert data.user_ids.tolist() == [1, 6040] and data.item_ids.tolist() == [661, 1193]
    assert data.users.tolist() == [0, 0, 1] and data.items.tolist() == [1, 0, 1]
    assert data.ratings.tolist() == [5.0, 3.0, 4.0] and data.ratings.dtype == np.float32
    assert data.timestamps.tolist() == [978300760, 978302109, 956703932]
    assert data.name == "ml-1m" and data.timestamps.dtype == np.int64


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("1::10::5::1\n1::11::5\n", 2, "expected 4 fields (user, item, rating, timestamp), found 3"),
        ("1::10::5::1\n1::x7::5::2\n", 2, "expected a non-negative integer id, found 'x7'"),
        ("1::10::5::1\n1:11::5::2\n", 2, "expected a non-negative integer id, found '1:11'"),
        ("1::10::5::1\n1::10 ::5::2\n", 2, "unexpected blank; ratings.dat fields are separated by '::'"),
        ("1::10::5::1\n2::10::5::1\n1::10::4::3\n", 3,
         "duplicate interaction (user 1, item 10); first given on line 1" + REPEAT_HINT),
        ("1::99999999999999999999::5::1\n", 1, "id '99999999999999999999' is too large"),
    ],
)
def test_movielens_dat_errors(tmp_path, text, line, message):
    path = write(tmp_path, "ratings.dat", text)
    with raises_at(path, line, message):
        read_movielens_dat(path)


@pytest.mark.parametrize("text", ["", "\n\n", "  \r\n"])
def test_empty_file_is_an_error(tmp_path, text):
    path = write(tmp_path, "u.data", text)
    with raises_at(path, None, "file is empty: no interactions found"):
        read_ml100k(path)


def test_ml100k_crlf_and_blank_lines_keep_line_numbers(tmp_path):
    text = "196\t242\t3\t881250949\n\n186\t302\t3\t891717742\n"
    data = read_ml100k(write(tmp_path, "u.data", text, crlf=True))
    assert pairs(data) == {(196, 242), (186, 302)} and data.name == "ml-100k"
    bad = write(tmp_path, "bad.data", text + "\n196\t242\t1\t5\n")
    with raises_at(bad, 5, "duplicate interaction (user 196, item 242); first given on line 1" + REPEAT_HINT):
        read_ml100k(bad)


def test_missing_file_is_dataset_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        read_ml100k(tmp_path / "nope.data")


# --------------------------------------------------------------------------------------------
# RecBole atomic files and generic tables
# --------------------------------------------------------------------------------------------

INTER = "item_id:token\tuser_id:token\trating:float\ttimestamp:float\textra:token\n" \
        "242\t196\t3\t881250949\tx\n302\t186\t3.5\t891717742\ty\n"


def test_recbole_inter_maps_columns_by_header(tmp_path):
    data = read_recbole_inter(write(tmp_path, "ml-100k.inter", INTER))
    assert pairs(data) == {(196, 242), (186, 302)}
    assert data.user_ids.dtype == np.int64  # integer tokens stay integers
    assert data.ratings.tolist() == [3.0, 3.5] and data.timestamps.dtype == np.int64
    assert data.name == "ml-100k"


def test_recbole_inter_string_tokens(tmp_path):
    path = write(tmp_path, "a.inter", "user_id:token\titem_id:token\nA1\tB7\nA2\tB7\n")
    data = read_recbole_inter(path)
    assert data.user_ids.tolist() == ["A1", "A2"] and data.item_ids.tolist() == ["B7"]
    assert data.timestamps is None and data.ratings is None


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("user_id:token\trating:float\n1\t2\n", 1, "header lacks item_id (found: user_id:token, rating:float)"),
        ("user_id:token\titem_id:token\trating:float\n1\t2\t4\n1\t3\tgood\n", 3, "rating 'good' is not a number"),
        ("user_id:token\titem_id:token\n1\t2\n1\t3\t9\n", 3, "expected 2 fields, found 3"),
        ("user_id:token\titem_id:token\n1\t2\n\n1\t2\n", 4,
         "duplicate interaction (user 1, item 2); first given on line 2" + REPEAT_HINT),
        ("user_id:token\titem_id:token\n1\t2\n1\n", 3, "missing item value"),
    ],
)
def test_recbole_inter_errors(tmp_path, text, line, message):
    path = write(tmp_path, "x.inter", text)
    with raises_at(path, line, message):
        read_recbole_inter(path)


def test_read_table_csv_by_name_with_dates(tmp_path):
    path = write(tmp_path, "log.csv", "who,what,when,stars\nann,book,2020-01-02,4\nbob,book,2020-01-01,5\n")
    data = read_table(path, columns={"user": "who", "item": "what", "timestamp": "when", "rating": "stars"})
    assert pairs(data) == {("ann", "book"), ("bob", "book")}
    assert data.timestamps.tolist() == [1577923200, 1577836800]  # Unix seconds, UTC
    assert data.name == "log"


def test_read_table_positional_headerless(tmp_path):
    path = write(tmp_path, "log.tsv", "5\t7\t100\n5\t8\t90\n")
    data = read_table(path, columns={"user": 0, "item": 1, "timestamp": 2})
    assert pairs(data) == {(5, 7), (5, 8)} and data.timestamps.tolist() == [100, 90]


def test_read_table_guesses_separator_from_first_line(tmp_path):
    path = write(tmp_path, "log.txt", "u;i\n1;2\n3;4\n")
    assert pairs(read_table(path, columns={"user": "u", "item": "i"})) == {(1, 2), (3, 4)}


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("u,i\n1,2\n,3\n", 3, "missing user value"),
        ("u,i\n1,2\n1,2.5\n", 3, "item id 2.5 is not an integer"),
        ("u,i,t\n1,2,5\n1,3,soon\n", 3, "timestamp 'soon' is neither a number nor a date"),
        ("u,i\n", None, "file is empty: no interactions found"),
    ],
)
def test_read_table_errors(tmp_path, text, line, message):
    path = write(tmp_path, "t.csv", text)
    columns = {"user": "u", "item": "i"} | ({"timestamp": "t"} if ",t" in text else {})
    with raises_at(path, line, message):
        read_table(path, columns=columns)


def test_read_table_rejects_unknown_roles(tmp_path):
    with pytest.raises(ValueError, match="columns must map"):
        read_table(write(tmp_path, "t.csv", "u,i\n1,2\n"), columns={"user": "u", "thing": "i"})


@pytest.mark.parametrize(
    "name, text, roles",
    [  # MovieLens ratings.csv, RecBole .inter, an Amazon review dump, a TSV log with odd spacing and case
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,5\n2,10,3.5,7\n", {"timestamp", "rating"}),
        ("x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t10\t5\n2\t10\t7\n", {"timestamp"}),
        ("reviews.csv", "reviewerID,asin,overall,unixReviewTime,summary\n1,10,5,5,ok\n2,10,4,7,fine\n", {"timestamp", "rating"}),
        ("log.txt", "User ID\tItem-Id\tTime\n1\t10\t5\n2\t10\t7\n", {"timestamp"}),
        ("clicks.csv", "session_id,item_id\n1,10\n2,10\n", set()),
    ],
)
def test_named_table_finds_columns_by_header(tmp_path, name, text, roles):
    data = read_named_table(write(tmp_path, name, text))
    assert pairs(data) == {(1, 10), (2, 10)}
    assert (data.timestamps is not None) == ("timestamp" in roles) and (data.ratings is not None) == ("rating" in roles)
    if "timestamp" in roles:
        assert data.timestamps.tolist() == [5, 7]


def test_named_table_without_an_item_column_names_what_it_looked_for(tmp_path):
    path = write(tmp_path, "t.csv", "user,thing\n1,2\n")
    with pytest.raises(DataFormatError, match=r"line 1: no item column in the header \['user', 'thing'\] \(looked for item: itemid"):
        read_named_table(path)
    with raises_at(write(tmp_path, "e.csv", "\n1,2\n"), 1, "file is empty or its first line is blank: no header"):
        read_named_table(tmp_path / "e.csv")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow_says_what_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install pyarrow"):
        read_table(tmp_path / "x.parquet", columns={"user": "u", "item": "i"})


# --------------------------------------------------------------------------------------------
# LightGCN splits and per-user sequences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crlf", [False, True])
def test_lightgcn_split_shares_one_id_space(tmp_path, crlf):
    train = write(tmp_path, "train.txt", "0 1 2\n1 0\n2\n", crlf)
    test = write(tmp_path, "test.txt", "0 5\n3 1\n", crlf)  # item 5 and user 3 appear only in test
    split = read_lightgcn_split(train, test)
    assert isinstance(split, Split) and split.protocol == "given" and len(split.valid) == 0
    assert (split.n_users, split.n_items) == (4, 6)
    for part in (split.train, split.valid, split.test):
        assert (part.n_users, part.n_items) == (4, 6)
        assert part.user_ids.tolist() == [0, 1, 2, 3] and part.item_ids.tolist() == list(range(6))
    assert pairs(split.train) == {(0, 1), (0, 2), (1, 0)} and pairs(split.test) == {(0, 5), (3, 1)}
    assert split.name == tmp_path.name


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("0 1 2\n1 3\n0 4\n", 3, "user 0 already has a line (line 1); each user must appear on one line only"),
        ("0 1 2\n1 3 4 3\n", 2, "item 3 appears twice for user 1 on this line" + REPEAT_HINT),
        ("0 1 2\n1 -3\n", 2, "expected a non-negative integer id, found '-3'"),
        ("0 1 2\n1 3.0\n", 2, "expected a non-negative integer id, found '3.0'"),
        ("0 1 2\n1,3\n", 2, "expected a non-negative integer id, found '1,3'"),
    ],
)
def test_lightgcn_errors(tmp_path, text, line, message):
    train = write(tmp_path, "train.txt", text)
    test = write(tmp_path, "test.txt", "0 7\n")
    with raises_at(train, line, message):
        read_lightgcn_split(train, test)


def test_lightgcn_error_names_the_test_file(tmp_path):
    train = write(tmp_path, "train.txt", "0 1\n")
    test = write(tmp_path, "test.txt", "0 2\n\n0 3\n")
    with raises_at(test, 3, "user 0 already has a line (line 1); each user must appear on one line only"):
        read_lightgcn_split(train, test)


def test_sequences_keep_order_as_positions(tmp_path):
    data = read_sequences(write(tmp_path, "seq.txt", "10 7 3 9\n4 3\n12\n", crlf=True))
    assert data.user_ids.tolist() == [4, 10, 12] and data.item_ids.tolist() == [3, 7, 9]
    assert data.users.tolist() == [1, 1, 1, 0] and data.items.tolist() == [1, 0, 2, 0]
    assert data.timestamps.tolist() == [0, 1, 2, 0] and data.timestamps.dtype == np.int64
    assert data.n_users == 3  # user 12 has an empty sequence but is a known user


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("1 5 6\n2 5\n1 7\n", 3, "user 1 already has a line (line 1); each user must appear on one line only"),
        ("1 5 6\n2 5 8 5\n", 2, "item 5 appears twice for user 2 on this line" + REPEAT_HINT),
        ("1 5 6\n2 5 a\n", 2, "expected a non-negative integer id, found 'a'"),
    ],
)
def test_sequence_errors(tmp_path, text, line, message):
    path = write(tmp_path, "seq.txt", text)
    with raises_at(path, line, message):
        read_sequences(path)


# --------------------------------------------------------------------------------------------
# LastFM
# --------------------------------------------------------------------------------------------


def test_lastfm_is_one_based_with_counts(tmp_path):
    train = write(tmp_path, "data1.txt", "1\t3\t10\n2\t1\t3.2466e+05\n", crlf=True)
    test = write(tmp_path, "test1.txt", "4\t2\t7\n", crlf=True)
    split = read_lastfm(train, test)
    assert split.protocol == "given" and (split.n_users, split.n_items) == (4, 3)
    assert split.train.users.tolist() == [0, 1] and split.train.items.tolist() == [2, 0]
    assert split.train.user_ids.tolist() == [1, 2, 3, 4]
    assert split.train.ratings.tolist() == [10.0, 324660.0] and split.test.ratings.tolist() == [7.0]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("1\t3\t10\n0\t1\t4\n", 2, "user ids are 1-based, found 0"),
        ("1\t3\t10\n2\tx\t4\n", 2, "item id 'x' is not an integer"),
        ("1\t3\t10\n1\t3\t4\n", 2, "duplicate interaction (user 1, item 3); first given on line 1" + REPEAT_HINT),
        ("1\t3\t10\n1\t4\n", 2, "missing count value"),
        ("1\t3\n", 1, "expected 3 fields (user, artist, count), found 2"),
    ],
)
def test_lastfm_errors(tmp_path, text, line, message):
    train = write(tmp_path, "data1.txt", text, crlf=True)
    test = write(tmp_path, "test1.txt", "1\t1\t1\n", crlf=True)
    with raises_at(train, line, message):
        read_lastfm(train, test)


# --------------------------------------------------------------------------------------------
# Real files (skipped without ../shared/data)
# --------------------------------------------------------------------------------------------


def test_gowalla_counts(shared_data):
    split = read_lightgcn_split(shared_data / "gowalla" / "train.txt", shared_data / "gowalla" / "test.txt")
    assert (split.n_users, split.n_items, len(split.train), len(split.test)) == (29858, 40981, 810128, 217242)


def test_ml100k_counts(shared_data):
    data = read_ml100k(shared_data / "ml-100k" / "u.data")
    assert (data.n_users, data.n_items, len(data)) == (943, 1682, 100000)
    assert np.bincount(data.ratings.astype(int))[1:].tolist() == [6110, 11370, 27145, 34174, 21201]
    assert (data.timestamps.min(), data.timestamps.max()) == (874724710, 893286638)


def test_sequence_files_counts(shared_data):
    ml = read_sequences(shared_data / "ml-1m-seq" / "sequences.txt")
    beauty = read_sequences(shared_data / "beauty" / "Beauty.txt")
    assert (ml.n_users, ml.n_items, len(ml)) == (6040, 3706, 1000209)
    assert (beauty.n_users, beauty.n_items, len(beauty)) == (22363, 12101, 198502)


def test_lastfm_counts(shared_data):
    split = read_lastfm(shared_data / "lastfm" / "data1.txt", shared_data / "lastfm" / "test1.txt")
    assert (split.n_users, split.n_items, len(split.train), len(split.test)) == (1892, 4489, 42135, 10533)


def test_recbole_longer_first_row_is_an_error(tmp_path):
    # pandas only warns (and drops a column) when the *first* row is the long one
    path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\n1\t2\t9\n1\t3\n")
    with raises_at(path, 2, "expected 2 fields, found 3"):
        read_recbole_inter(path)


def test_read_table_unknown_column(tmp_path):
    path = write(tmp_path, "t.csv", "u,i\n1,2\n")
    with raises_at(path, 1, "no column 'item' (columns: u, i)"):
        read_table(path, columns={"user": "u", "item": "item"})


# ---- values no real file holds: refused, never cast (inf used to become -2^63 and merge two users) ----


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("user,item\n1,2\ninf,3\n", 3, "user id inf is out of range (ids are integers below 2^53 when written as floats)"),
        ("user,item\n1,2\n1e300,3\n", 3, "user id 1e+300 is out of range (ids are integers below 2^53 when written as floats)"),
        ("user,item\n1,2.5\n2,-inf\n", 3, "item id -inf is out of range (ids are integers below 2^53 when written as floats)"),
        ("user,item,timestamp\n1,2,5\n2,3,inf\n", 3, "timestamp inf is out of range"),
        ("user,item,timestamp\n1,2,5.5\n2,3,1e300\n", 3, "timestamp 1e+300 is out of range"),
        ("user,item,timestamp\n1,2,2020-01-01\n2,3,NaT\n", 3, "timestamp 'NaT' is neither a number nor a date"),
        ("user,item,rating\n1,2,5\n2,3,inf\n", 3, "rating inf is not a finite number in range"),
        ("user,item,rating\n1,2,5\n2,3,1e300\n", 3, "rating 1e+300 is not a finite number in range"),
    ],
)
def test_non_finite_and_out_of_range_values_are_refused(tmp_path, text, line, message):
    path = write(tmp_path, "x.csv", text)
    with raises_at(path, line, message):
        read_named_table(path)


def test_two_huge_ids_are_not_merged_into_one(tmp_path):
    """Both used to become -2^63: two raw users silently merged into one."""
    path = write(tmp_path, "x.csv", "user,item\n1e300,1\n-1e300,2\n")
    with pytest.raises(DataFormatError, match="out of range"):
        read_named_table(path)


def test_a_huge_timestamp_token_fails_fast_with_a_short_echo(tmp_path):
    """pandas' date parser is quadratic in the token length: a 10 MB token used to run for minutes."""
    import time

    path = write(tmp_path, "x.csv", "user,item,timestamp\n1,2,2020-01-01\n2,3," + "9" * 10_000_000 + "x\n")
    start = time.perf_counter()
    with pytest.raises(DataFormatError, match=r"line 3: timestamp value '9{30,}\.\.\. is longer than 256") as err:
        read_named_table(path)
    assert time.perf_counter() - start < 10 and len(str(err.value)) < 200


def test_a_huge_id_token_in_an_integer_file_fails_fast_with_a_short_echo(tmp_path):
    path = tmp_path / "sequences.txt"
    path.write_bytes(b"1 2 3\n4 " + b"9" * 10_000_000 + b"\n")
    with pytest.raises(DataFormatError, match="line 2: id '9+...' is too large") as err:
        read_sequences(path)
    assert len(str(err.value)) < 200


@pytest.mark.parametrize("name, text, reader", [
    ("u.data", "1\t2\t5\t100\n2\t3\t4\t101\n", read_ml100k),
    ("sequences.txt", "1 10 11\n2 12 13\n", read_sequences),
    ("x.inter", "user_id:token\titem_id:token\n1\t2\n2\t3\n", read_recbole_inter),
    ("x.csv", "user,item\n1,2\n2,3\n", read_named_table),
])
def test_a_utf8_byte_order_mark_is_ignored(tmp_path, name, text, reader):
    plain = reader(write(tmp_path, name, text))
    path = tmp_path / ("bom-" + name)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert pairs(reader(path)) == pairs(plain)


def test_non_utf8_bytes_are_an_error_naming_the_file(tmp_path):
    for text in (b"\xffuser_id:token\titem_id:token\n1\t2\n", b"user_id:token\titem_id:token\n\xff1\t2\n"):
        path = tmp_path / "x.inter"
        path.write_bytes(text)
        with pytest.raises(DataFormatError, match=re.escape(f"{path}: not UTF-8 text")):
            read_recbole_inter(path)


def test_unicode_digits_are_not_ids(tmp_path):
    """``str.isdigit`` and regex ``\\d`` accept "³" and "٣", which ``int`` / numpy then fail on."""
    from qrec.data.loaders import read_movie_genres

    movies = tmp_path / "movies.dat"
    movies.write_bytes("³::Jumanji (1995)::Adventure\n".encode("latin-1"))  # GroupLens files are latin-1
    with raises_at(movies, 1, "movie id '³' is not an integer"):
        read_movie_genres(movies)
    path = write(tmp_path, "x.csv", "user,item\n1,2\n٣,3\n")
    data = read_named_table(path)  # not integers: kept as string ids
    assert sorted(data.user_ids.tolist()) == ["1", "٣"]


@pytest.mark.parametrize("reader, files, where, line, message", [
    (read_lightgcn_split, ("0 1 2\n1 2 3\n", "0 3\n1 100000000000000000\n"), "test.txt", 2,
     "item id 100000000000000000 is far beyond the 4 items of these files (this format numbers the rows by id, from 0)"),
    (read_lightgcn_split, ("0 1 2\n5000000000 2 3\n", "0 3\n"), "train.txt", 2,
     "user id 5000000000 is far beyond the 2 users of these files (this format numbers the rows by id, from 0)"),
    (read_lastfm, ("1\t1\t3\n2\t99999999999\t4\n", "1\t2\t1\n"), "train.txt", 2,
     "item id 99999999999 is far beyond the 3 items of these files (this format numbers the rows by id, from 1)"),
])
def test_an_id_far_beyond_the_others_is_refused_not_allocated(tmp_path, reader, files, where, line, message):
    """Found by fuzzing: one stray id of 10^18 made the reader allocate 10^18 rows (MemoryError; 10^9: a hang)."""
    paths = [write(tmp_path, n, text) for n, text in zip(("train.txt", "test.txt"), files)]
    with raises_at(tmp_path / where, line, message):
        reader(*paths)


# --------------------------------------------------------------------------------------------
# Repeated pairs summed or dropped instead of refused (the rule of qrec.data.duplicates)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader, files", [
    (lambda p, **kw: read_movielens_dat(p[0], **kw), {"ratings.dat": "1::10::5::1\n2::10::3::1\n1::10::4::3\n"}),
    (lambda p, **kw: read_ml100k(p[0], **kw), {"u.data": "1\t10\t5\t1\n2\t10\t3\t1\n1\t10\t4\t3\n"}),
    (lambda p, **kw: read_sequences(p[0], **kw), {"seq.txt": "1 10\n2 10\n"}),
    (lambda p, **kw: read_lightgcn_split(*p, **kw).train, {"train.txt": "1 10\n2 10\n", "test.txt": "0 1\n"}),
    (lambda p, **kw: read_lastfm(*p, **kw).train, {"data1.txt": "1\t10\t5\n2\t10\t3\n1\t10\t4\n", "test1.txt": "1\t2\t1\n"}),
])
def test_every_reader_sums_or_drops_repeats_when_asked(tmp_path, reader, files):
    paths = [write(tmp_path, name, text) for name, text in files.items()]
    if "seq.txt" in files or "train.txt" in files:  # per-user lines: the repeat is within user 1's line
        paths[0].write_text(paths[0].read_text().replace("1 10\n", "1 10 11 10\n"))
    with pytest.raises(DataFormatError, match="duplicates='sum' or 'drop'"):
        reader(paths)
    summed, dropped = reader(paths, duplicates="sum"), reader(paths, duplicates="drop")
    assert pairs(summed) == pairs(dropped)
    assert len(summed) == len(pairs(summed)) == len(dropped)
    first = int(np.flatnonzero((summed.user_ids[summed.users] == 1) & (summed.item_ids[summed.items] == 10))[0])
    if summed.ratings is not None and dropped.ratings is not None:  # ratings summed, or the first row's kept
        assert summed.ratings[first] == 9 and dropped.ratings[first] == 5
    else:  # no ratings in the file: the sum counts the repeats
        assert summed.ratings[first] == 2 and dropped.ratings is None
