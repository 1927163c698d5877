"""MGQE Fig. 8's code similarity against a brute-force loop; the category sets; the MovieLens genre files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.data.loaders import read_movie_genres
from qrec.errors import DataFormatError, QrecError
from qrec.experiments.codesim import category_sets, code_similarity, separation

CATS = ("Sci-Fi", "Romance", "Animation", "Horror")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 60), positions=st.integers(1, 6), k=st.integers(1, 4),
       per_set=st.integers(1, 5))
def test_similarity_matches_a_pairwise_loop(seed, n, positions, k, per_set):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, (n, positions))
    genres = [frozenset(rng.choice(CATS + ("Drama",), size=rng.integers(0, 3), replace=False)) for _ in range(n)]
    try:
        sets = category_sets(genres, CATS, per_set, seed=seed)
    except QrecError:  # a category with < 2 eligible items: refused with a clear error (tested below)
        return
    matrix = code_similarity(codes, sets)
    for a, (first, _) in enumerate(sets):
        for b, (_, second) in enumerate(sets):
            pairs = [sum(codes[i, p] == codes[j, p] for p in range(positions)) / positions for i in first for j in second]
            assert matrix[a, b] == pytest.approx(float(np.mean(pairs)), abs=1e-12)
    for c, (first, second) in zip(CATS, sets):
        assert not set(first) & set(second) and 1 <= len(first) == len(second) <= per_set
        assert all(genres[i] & set(CATS) == {c} for i in (*first, *second))  # exactly this one of the four


def test_separation_is_one_without_structure_and_grows_with_it():
    assert separation(np.full((4, 4), 0.3)) == pytest.approx(1.0)
    assert separation(np.eye(3) * 0.6 + 0.2) == pytest.approx(0.8 / 0.2)


def test_category_without_two_items_is_refused():
    with pytest.raises(QrecError, match="'Horror': fewer than 2 items"):
        category_sets([frozenset({"Sci-Fi"})] * 4 + [frozenset({"Horror"})], ("Sci-Fi", "Horror"), 2)


def test_genres_from_movies_dat_and_u_item(tmp_path):
    dat = tmp_path / "movies.dat"
    dat.write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Caf\xe9 (1990)::Drama\n".encode("latin-1"))
    assert read_movie_genres(dat) == {1: frozenset({"Animation", "Children's", "Comedy"}), 2: frozenset({"Drama"})}
    item = tmp_path / "u.item"
    flags = ["0"] * 19
    flags[15] = flags[11] = "1"  # Sci-Fi, Horror
    item.write_text("7|Alien (1979)|01-Jan-1979||http://x|" + "|".join(flags) + "\n")
    assert read_movie_genres(item) == {7: frozenset({"Sci-Fi", "Horror"})}
    recbole = tmp_path / "ml-100k.item"
    recbole.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                       "1\tToy Story\t1995\tAnimation Children's Comedy\n")
    assert read_movie_genres(recbole) == {1: frozenset({"Animation", "Children's", "Comedy"})}
    bad = tmp_path / "bad.dat"
    bad.write_text("1::Toy Story::Comedy\nx::Heat::Action\n")
    with pytest.raises(DataFormatError, match=r"bad.dat, line 2: movie id 'x' is not an integer"):
        read_movie_genres(bad)
