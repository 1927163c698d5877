"""Property: every reader of a file, given any bytes, returns a result whose invariants hold or raises a
``QrecError``; never another exception. Bounded here; ``benchmarks/fuzz.py`` runs the same cases for as long as
asked, each input under a time limit (the readers and the mutator are in tests/fuzz_cases.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_cases import make_input, outcome, readers, scratch

EXAMPLES = 60
# the artifact reader's own errors (a manifest that is not JSON, a missing key) are issue 17's to make QrecErrors
NAMES = list(readers())


def _inputs(reader):
    """Mostly mutated seed inputs; sometimes arbitrary bytes for one of the files."""
    raw = st.tuples(st.integers(0, len(reader.files) - 1), st.binary(max_size=300), st.integers(0, 10**6))
    return st.one_of(st.randoms(use_true_random=False).map(lambda rng: make_input(reader, rng)),
                     raw.map(lambda r: _replace_one(reader, *r)))


def _replace_one(reader, k: int, data: bytes, pick: int):
    seeds = reader.seeds()
    files = seeds[pick % len(seeds)]
    return files[:k] + (data,) + files[k + 1 :] if reader.structured is None else files


@pytest.mark.parametrize("name", NAMES)
def test_any_bytes_are_read_or_refused_with_a_qrec_error(name):
    reader = readers()[name]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(_inputs(reader))
    def check(inputs):
        with scratch() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # readers may warn (modified data, dropped rows): not a finding
            got, detail = outcome(reader, inputs, Path(folder))
        assert got in ("ok", "refused"), f"{got}: {detail}"

    check()


@pytest.mark.parametrize("name", list(readers()))
def test_the_seed_inputs_are_read(name):
    reader = readers()[name]
    with scratch() as folder:
        for files in reader.seeds():
            assert outcome(reader, files, Path(folder)) == ("ok", "")
