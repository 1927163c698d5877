"""Item-item Pearson relevance (MGQE's AAR analogue) against a pair-by-pair float64 reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.data.datasets import load_dataset
from qrec.data.interactions import Interactions
from qrec.data.relevance import pearson_pairs


def ratings(n_users: int, n_items: int, density: float, seed: int, levels: int = 5) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    stars = rng.integers(1, levels + 1, size=len(users)).astype(np.float32)
    return Interactions(users=users, items=items, n_users=n_users, n_items=n_items,
                        user_ids=np.arange(n_users) + 1, item_ids=np.arange(n_items) + 500, ratings=stars)


def reference(data: Interactions, min_common: int) -> dict[tuple[int, int], float]:
    """100 x Pearson r over the co-raters of every unordered item pair, one pair at a time (np.corrcoef)."""
    by_item = {i: {} for i in range(data.n_items)}
    for u, i, r in zip(data.users, data.items, data.ratings):
        by_item[int(i)][int(u)] = float(r)
    out = {}
    for a, b in itertools.combinations(range(data.n_items), 2):
        common = sorted(set(by_item[a]) & set(by_item[b]))
        x = np.array([by_item[a][u] for u in common])
        y = np.array([by_item[b][u] for u in common])
        if len(common) >= min_common and x.std() > 0 and y.std() > 0:
            out[(int(data.item_ids[a]), int(data.item_ids[b]))] = 100 * np.corrcoef(x, y)[0, 1]
    return out


def as_raw_pairs(pairs: Interactions) -> dict[tuple[int, int], float]:
    """Scores keyed by the unordered pair of raw item ids (smaller first)."""
    out = {}
    for a, b, s in zip(pairs.user_ids[pairs.users], pairs.item_ids[pairs.items], pairs.ratings):
        key = (int(min(a, b)), int(max(a, b)))
        assert key not in out, f"pair {key} kept twice"
        out[key] = float(s)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 25), st.integers(2, 12), st.floats(0.2, 0.9), st.integers(0, 2**16), st.integers(2, 6),
       st.integers(2, 5))
def test_matches_pairwise_pearson(n_users, n_items, density, seed, min_common, levels):
    """Same pairs, same scores (to float32), each unordered pair once; zero-variance pairs dropped."""
    data = ratings(n_users, n_items, density, seed, levels)
    want = reference(data, min_common)
    got = as_raw_pairs(pearson_pairs(data, min_common=min_common))
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-4)
        assert -100 <= got[key] <= 100


def test_one_id_space_and_a_fixed_orientation():
    data = ratings(40, 30, 0.6, seed=0)
    pairs = pearson_pairs(data, min_common=5)
    assert pairs.n_users == pairs.n_items and np.array_equal(pairs.user_ids, pairs.item_ids)
    assert np.all(np.diff(pairs.item_ids) > 0)  # raw-id order
    assert np.all(pairs.users != pairs.items)
    forward = np.mean(pairs.user_ids[pairs.users] < pairs.item_ids[pairs.items])
    assert 0.35 < forward < 0.65  # a fair coin orients the pairs
    again = pearson_pairs(data, min_common=5)
    assert np.array_equal(again.users, pairs.users) and np.array_equal(again.ratings, pairs.ratings)
    assert pairs.meta["relevance"]["min_common"] == 5


def test_bad_inputs_are_errors():
    data = ratings(10, 5, 0.8, seed=1)
    with pytest.raises(ValueError, match="min_common"):
        pearson_pairs(data, min_common=1)
    with pytest.raises(ValueError, match="needs ratings"):
        pearson_pairs(Interactions(data.users, data.items, 10, 5, data.user_ids, data.item_ids), 2)
    twice = Interactions(np.r_[data.users, data.users[:1]], np.r_[data.items, data.items[:1]], 10, 5,
                         data.user_ids, data.item_ids, ratings=np.r_[data.ratings, data.ratings[:1]])
    with pytest.raises(ValueError, match="more than once"):
        pearson_pairs(twice, 2)


@pytest.mark.filterwarnings("ignore::qrec.data.datasets.ModifiedDataWarning")  # a synthetic u.data under the ml-100k name
def test_registered_i2i_dataset_is_built_once_and_cached(ratings_file, tmp_path, monkeypatch):
    """ml-100k-i2i from a u.data file: the recipe's pairs, written to the cache, read back identical."""
    monkeypatch.setenv("QREC_CACHE_DIR", str(tmp_path))
    built = load_dataset("ml-100k-i2i", path=ratings_file)
    cached = list((tmp_path / "ml-100k-i2i").glob("*.npz"))
    assert len(cached) == 1
    want = pearson_pairs(load_dataset("ml-100k", path=ratings_file), min_common=20)
    assert np.array_equal(built.users, want.users) and np.array_equal(built.ratings, want.ratings)
    from qrec.data import datasets

    datasets._COMPUTED.clear()
    again = load_dataset("ml-100k-i2i", path=ratings_file)
    assert again is not built and np.array_equal(again.items, built.items) and np.array_equal(again.ratings, built.ratings)
    assert again.meta["cache"] == str(cached[0])


@pytest.mark.filterwarnings("ignore::qrec.data.datasets.ModifiedDataWarning")  # a synthetic u.data under the ml-100k name
def test_a_damaged_cache_is_named(ratings_file, tmp_path, monkeypatch):
    monkeypatch.setenv("QREC_CACHE_DIR", str(tmp_path))
    from qrec.data import datasets
    from qrec.errors import DataFormatError

    load_dataset("ml-100k-i2i", path=ratings_file)
    cache = next((tmp_path / "ml-100k-i2i").glob("*.npz"))
    cache.write_bytes(b"not an npz")
    datasets._COMPUTED.clear()
    with pytest.raises(DataFormatError, match=str(cache.name)):
        load_dataset("ml-100k-i2i", path=ratings_file)


@pytest.mark.filterwarnings("ignore::qrec.data.datasets.ModifiedDataWarning")  # a synthetic u.data under the ml-100k name
def test_ml1m_recipe_reads_ratings_dat(ratings_file, tmp_path, monkeypatch):
    """ml-1m-i2i: the same recipe over ML-1M's ratings.dat format (here the fixture's ratings in '::' form)."""
    monkeypatch.setenv("QREC_CACHE_DIR", str(tmp_path))
    dat = tmp_path / "ratings.dat"
    dat.write_text("".join("::".join(line.split("\t")) + "\n" for line in ratings_file.read_text().split("\n") if line))
    one = as_raw_pairs(load_dataset("ml-1m-i2i", path=dat))
    other = as_raw_pairs(load_dataset("ml-100k-i2i", path=ratings_file))
    assert one.keys() == other.keys() and all(one[k] == pytest.approx(other[k]) for k in one)


def test_ml100k_i2i_statistics(shared_data, tmp_path, monkeypatch):
    """The recipe on the real ML-100K: the counts RESULTS.md and the preset quote."""
    monkeypatch.setenv("QREC_CACHE_DIR", str(tmp_path))
    pairs = load_dataset("ml-100k-i2i", path=shared_data / "ml-100k" / "u.data")
    assert (len(pairs), pairs.n_items) == (139_594, 915)
    assert pairs.ratings.mean() == pytest.approx(15.48, abs=0.01)
    assert pairs.ratings.std() == pytest.approx(19.89, abs=0.01)
