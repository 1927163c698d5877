"""The spec grammar: FAISS's bit widths (``dpq16x8b``, ``pq16x8``), explicit centroid counts (``dpq8x4c``), the
ambiguous bare form refused, and every spec the presets and the committed records use still read as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qrec.compress.dpq import dpq_spec
from qrec.compress.spec import build_table, code_size, parse_spec
from qrec.errors import SpecError
from qrec.experiments.presets import load_preset, preset_names

REPO = Path(__file__).resolve().parents[1]
N, DIM = 50, 64


@given(D=st.sampled_from([1, 2, 4, 8, 16, 32, 64]), bits=st.integers(1, 16))
def test_bits_and_centroid_forms_name_the_same_table(D, bits):
    K = 1 << bits
    size = code_size(f"dpq{D}x{K}c", N, DIM)
    assert code_size(f"dpq{D}x{bits}b", N, DIM) == size == code_size(f"pq{D}x{bits}", N, DIM)
    assert code_size(f"dpq{D}x{bits}b-sx-bn", N, DIM) == size
    if K > 16:  # above FAISS's largest nbits a bare count can only be centroids
        assert code_size(f"dpq{D}x{K}", N, DIM) == size
    # the spec a table reports reads back as the same K (never as the refused bare form)
    assert parse_spec(dpq_spec(D, K))[0] is parse_spec(f"dpq{D}x{K}c")[0]
    assert code_size(dpq_spec(D, K), N, DIM) == size


def test_faiss_pq16x8_is_sixteen_subspaces_of_256_centroids():
    for spec in ("pq16x8", "dpq16x8b", "dpq16x256", "dpq16x256c"):
        table = build_table(spec, N, DIM)
        assert (table.num_subspaces, table.num_centroids) == (16, 256), spec
        assert table.spec == "dpq16x256"
    small = build_table("dpq8x4c", N, DIM)
    assert small.num_centroids == 4 and small.spec == "dpq8x2b"


@pytest.mark.parametrize("spec", ["dpq16x8", "dpq8x16", "dpq4x2-sx", "dpq8x4-bn"])
def test_the_ambiguous_bare_form_is_refused_naming_both_readings(spec):
    D, n = spec[3:].split("-")[0].split("x")
    with pytest.raises(SpecError) as err:
        code_size(spec, N, DIM)
    message = str(err.value)
    assert f"dpq{D}x{n}b" in message and f"dpq{D}x{n}c" in message and "ambiguous" in message


@pytest.mark.parametrize("spec", ["pq16x0", "pq16x17", "dpq16x17b", "dpq16x3c", "pq16x8-sx", "dpq16x8bc"])
def test_bad_bit_widths_and_counts_raise(spec):
    with pytest.raises(SpecError):
        code_size(spec, N, DIM)


def _preset_specs() -> set[str]:
    specs = set()
    for name in preset_names():
        for cfg in load_preset(name).configs():
            specs |= {cfg.item_spec, cfg.user_spec}
    return specs


def _record_specs() -> set[str]:
    specs = set()
    for path in (REPO / "results").rglob("*.json"):
        rec = json.loads(path.read_text())
        specs |= {rec["embedding"]["user"], rec["embedding"]["item"]}
        specs |= {t["spec"] for t in rec["embedding"].get("tables", {}).values()}
    return specs


def test_every_spec_of_the_presets_and_committed_records_still_parses():
    specs = _preset_specs() | _record_specs()
    assert any(s.startswith("dpq") for s in specs) and any(s.startswith("mgqe") for s in specs)
    for spec in specs:
        parse_spec(spec)  # raises on any spec this grammar no longer reads
        if spec.startswith("dpq"):
            assert code_size(spec, N, DIM) > 0


def test_report_reads_every_committed_record(tmp_path):
    from qrec.experiments.report import write_results_md

    out = write_results_md(REPO / "results", tmp_path / "sub" / "RESULTS.md")
    assert "## mgqe-table3" in out.read_text()
