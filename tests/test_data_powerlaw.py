"""synthetic-powerlaw: the name grammar, exact counts, determinism independent of the chunk size, Zipf-like
popularity, leave-one-out, the registry route, and planted structure a model can learn (GMF beats popularity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from qrec.data.datasets import list_datasets, load_dataset, resolved_source
from qrec.data.powerlaw import BLOCK, NAME, PowerLawSpec, powerlaw_interactions
from qrec.data.splits import leave_one_out
from qrec.errors import DatasetNotFoundError, SpecError

SMALL = "synthetic-powerlaw:users=300,items=200,n=3000,seed=3"


def _pairs(data) -> set:
    return set(zip(data.users.tolist(), data.items.tolist()))


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("users", "items", "timestamps"))


def test_parse_defaults_scientific_ints_and_canonical_name():
    assert PowerLawSpec.parse(NAME) == PowerLawSpec()
    spec = PowerLawSpec.parse("synthetic-powerlaw:users=1e6, items=1e5,n=1e7,zipf=1.1,seed=0")
    assert (spec.users, spec.items, spec.n, spec.zipf) == (10**6, 10**5, 10**7, 1.1)
    assert PowerLawSpec.parse(spec.name) == spec


@pytest.mark.parametrize("name, fragment", [
    ("synthetic-powerlaw:users", "bad option"),
    ("synthetic-powerlaw:colour=3", "bad option"),
    ("synthetic-powerlaw:users=1.5", "whole number"),
    ("synthetic-powerlaw:zipf=abc", "not a number"),
    ("synthetic-powerlaw:users=0", ">= 1"),
    ("synthetic-powerlaw:affinity=2", "affinity"),
    ("synthetic-powerlaw:users=10,items=10,n=80,clusters=2", "users x items"),
    ("synthetic-powerlaw:users=4,items=100,clusters=8,n=10", "clusters"),
])
def test_bad_names_raise_a_spec_error_naming_them(name, fragment):
    with pytest.raises(SpecError, match=fragment) as err:
        PowerLawSpec.parse(name)
    assert name in str(err.value)


def test_exact_counts_distinct_pairs_and_stream_timestamps():
    data = powerlaw_interactions(SMALL)
    assert (len(data), data.n_users, data.n_items) == (3000, 300, 200)
    assert data.users.dtype == data.items.dtype == data.timestamps.dtype == np.int64
    assert len(_pairs(data)) == 3000  # no repeated (user, item)
    assert np.all(np.diff(data.timestamps) > 0)  # stream positions, ascending and distinct
    assert data.users.min() >= 0 and data.users.max() < 300 and data.items.max() < 200
    assert data.meta["synthetic"] and PowerLawSpec.parse(data.meta["generator"]) == PowerLawSpec.parse(SMALL)


def test_deterministic_from_the_seed_and_independent_of_the_chunk():
    name = "synthetic-powerlaw:users=5000,items=3000,n=150000,seed=1"  # three blocks, repeats topped up
    whole = powerlaw_interactions(name)
    assert _same(whole, powerlaw_interactions(name, chunk=1))  # one block at a time
    assert _same(whole, powerlaw_interactions(name, chunk=2 * BLOCK + 1))
    assert not _same(whole, powerlaw_interactions(name.replace("seed=1", "seed=2")))


@settings(max_examples=15, deadline=None)
@given(users=st.integers(3, 60), items=st.integers(4, 60), frac=st.floats(0.01, 0.5), seed=st.integers(0, 9),
       clusters=st.integers(1, 3), zipf=st.floats(0, 2))
def test_any_small_spec_gives_exactly_n_distinct_pairs(users, items, frac, seed, clusters, zipf):
    n = max(1, int(frac * users * items))
    spec = PowerLawSpec(users=users, items=items, n=n, seed=seed, clusters=clusters, zipf=zipf)
    data = powerlaw_interactions(spec)
    assert len(data) == n and len(_pairs(data)) == n
    assert _same(data, powerlaw_interactions(spec, chunk=1))


@pytest.mark.parametrize("zipf", [0.8, 1.2])
def test_item_popularity_is_zipf_like(zipf):
    """Log-log slope of count vs rank below the head (which repeats cap: a user takes an item once)."""
    data = powerlaw_interactions(f"synthetic-powerlaw:users=20000,items=2000,n=100000,zipf={zipf}")
    counts = np.sort(data.item_counts())[::-1][4:500]
    slope = np.polyfit(np.log(np.arange(5, 501)), np.log(counts), 1)[0]
    assert -zipf - 0.15 < slope < -zipf + 0.15


def test_leave_one_out_holds_out_the_latest_two_of_every_user():
    data = powerlaw_interactions(SMALL)
    split = leave_one_out(data)
    users = np.flatnonzero(data.user_counts() >= 3)
    assert len(users) > 250  # round robin: three draws per user before activity takes over
    assert np.array_equal(np.sort(split.test.users), users) and np.array_equal(np.sort(split.valid.users), users)
    last = np.zeros(data.n_users, dtype=np.int64)
    np.maximum.at(last, split.train.users, split.train.timestamps)
    assert np.all(split.valid.timestamps > last[split.valid.users])


def test_registry_generates_by_name_and_refuses_a_path(tmp_path):
    assert NAME in list_datasets()
    data = load_dataset(SMALL)
    assert load_dataset(SMALL) is data  # cached per process, like files
    assert data.meta["dataset"] == SMALL and data.meta["source"] == "generated"
    assert resolved_source(SMALL).kind == "generated" and "generated" in str(resolved_source(SMALL))
    with pytest.raises(DatasetNotFoundError, match="generated"):
        load_dataset(SMALL, path=tmp_path)
    with pytest.raises(SpecError):
        load_dataset("synthetic-powerlaw:nope=1")


def test_gmf_learns_the_planted_communities_beyond_popularity():
    """Two epochs of GMF through the trainer beat the training-count ranking on HR@10 (same protocol)."""
    from qrec.eval.evaluate import evaluate_split
    from qrec.train.config import RunConfig
    from qrec.train.trainer import fit

    cfg = RunConfig(dataset="synthetic-powerlaw:users=2000,items=1000,n=30000,clusters=8", model="gmf", epochs=2,
                    lr=0.01, dim=16, batch_size=256, eval_every=2, threads=1)
    result = fit(cfg, progress=False, log=lambda _: None)
    counts = torch.from_numpy(result.split.train.item_counts().astype(np.float32))
    pop = evaluate_split(lambda users: counts.expand(len(users), -1), result.split, "test", (10,))
    assert pop["hr@10"] > 0.05  # popularity carries signal too
    assert result.test["hr@10"] > 1.5 * pop["hr@10"]
