"""Serving sizes: qrec's ``code_size`` against the formulas of the MGQE paper's Table 1, and the relative
model sizes of GMF / NeuMF on MovieLens-1M against the paper's Table 3.

Table 1 (bits at serving; log = log2):
    full   32 n d                      LRF   32 n r + 32 r d
    SQ     n d b                       DPQ   n D log K + 32 K d
    MGQE   sum_i |V_i| D log K_i + 32 K d

What qrec stores beyond Table 1, and counts (every extra is in the exported tensors):
    SQ     + 64 d: per-dimension min and max as float32 (Table 1 leaves the ranges out)
    MGQE   + n ceil(log2 m): the row -> group map (a 1-bit head bitmap for two groups); Table 1 assumes
           ids renumbered by frequency, which qrec does not do (see qrec.compress.mgqe)
    all    each packed code stream is rounded up to whole bytes (< 8 bits per stream)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qrec.compress import build_table, code_size

N_USERS, N_ITEMS, D = 6040, 3416, 64  # MovieLens-1M as the MGQE paper counts it (section 5.1)
GMF_DENSE = 32 * (D + 1)  # GMF's output layer h (d weights) + bias, float32
# qrec's NeuMF: 4 tables; MLP 128-64-32-16 with biases; output layer over [d ; 16] + bias
NEUMF_DENSE = 32 * (128 * 64 + 64 + 64 * 32 + 32 + 32 * 16 + 16 + (D + 16) + 1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- Table 1, written out


def paper_full(n, d):
    return 32 * n * d


def paper_lrf(n, d, r):
    return 32 * n * r + 32 * r * d


def paper_sq(n, d, b):
    return n * d * b


def paper_dpq(n, d, D, K):
    return n * D * math.log2(K) + 32 * K * d


def paper_mgqe(group_sizes, d, D, Ks):
    return sum(v * D * math.log2(k) for v, k in zip(group_sizes, Ks)) + 32 * max(Ks) * d


def _head(n, f):
    return math.ceil(round(f * n, 9))


def _padding(*streams_bits):
    return sum(-bits % 8 for bits in streams_bits)


# --------------------------------------------------------------------------- qrec = Table 1 + stated extras


@pytest.mark.parametrize("n", [N_USERS, N_ITEMS, 1001, 7])
def test_code_size_is_table_1_plus_the_stated_extras(n):
    d = D
    assert code_size("full", n, d) == paper_full(n, d)
    assert code_size("lr48", n, d) == paper_lrf(n, d, 48)
    for b in (1, 3, 8):
        assert code_size(f"sq{b}", n, d) == paper_sq(n, d, b) + 64 * d + _padding(n * d * b)
        assert code_size(f"sq{b}-ptq", n, d) == code_size(f"sq{b}", n, d)
    for D_, K in ((64, 256), (8, 16), (16, 8), (32, 2)):
        assert code_size(f"dpq{D_}x{K}c", n, d) == paper_dpq(n, d, D_, K) + _padding(n * D_ * int(math.log2(K)))
        assert code_size(f"dpq{D_}x{K}c-sx-bn", n, d) == code_size(f"dpq{D_}x{K}c", n, d)

    head = _head(n, 0.1)
    sizes = [head, n - head]
    group_map = n + _padding(n)
    codes_pad = _padding(head * 64 * 8, (n - head) * 64 * 6)
    assert code_size("mgqe64x256/64@0.1", n, d) == paper_mgqe(sizes, d, 64, [256, 64]) + group_map + codes_pad
    # unshared variants: one codebook per group (Table 1's 32 K d becomes 32 d sum_i K_i)
    assert code_size("mgqe-uk64x256/64@0.1", n, d) == (
        paper_mgqe(sizes, d, 64, [256, 64]) + 32 * 64 * d + group_map + codes_pad
    )
    ud_codes = head * 64 * 8 + (n - head) * 32 * 8
    assert code_size("mgqe-ud64/32x256@0.1", n, d) == ud_codes + 2 * 32 * 256 * d + group_map + _padding(
        head * 64 * 8, (n - head) * 32 * 8
    )
    # three tiers: 2-bit group ids, cumulative fractions 0.1 / 0.3
    cut1, cut2 = _head(n, 0.1), _head(n, 0.3)
    tiers = [cut1, cut2 - cut1, n - cut2]
    bits3 = [v * 64 * b for v, b in zip(tiers, (8, 6, 4))]
    assert code_size("mgqe64x256/64/16@0.1/0.3", n, d) == (
        paper_mgqe(tiers, d, 64, [256, 64, 16]) + 2 * n + _padding(2 * n) + _padding(*bits3)
    )


def test_mgqe_size_does_not_depend_on_which_rows_are_frequent():
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(3):
        torch.manual_seed(0)
        table = build_table("mgqe8x16/4@0.3", 101, 16, frequencies=rng.integers(0, 50, 101))
        sizes.add(table.serving_bits())
    assert sizes == {code_size("mgqe8x16/4@0.3", 101, 16)}


# --------------------------------------------------------------------------- GMF / NeuMF on MovieLens-1M


def _tables_bits(spec):
    return code_size(spec, N_USERS, D) + code_size(spec, N_ITEMS, D)


def relative_size(spec: str, model: str) -> float:
    """Serving size of the whole model (tables + float32 dense weights) over the same model with full tables."""
    copies, dense = {"gmf": (1, GMF_DENSE), "neumf": (2, NEUMF_DENSE)}[model]
    return (copies * _tables_bits(spec) + dense) / (copies * _tables_bits("full") + dense)


# Observed with qrec (d = 64, n = 6040 users + 3416 items):      paper's Table 3
#   spec                    GMF       NeuMF     (GMF / NeuMF)
#   lr48                    76.02%    76.23%    75.5% / 77.3%
#   sq8                     25.05%    25.71%    25.0% / 29.0%
#   dpq64x256               30.42%    31.04%    30.4% / 34.1%
#   mgqe64x256/64@0.1       24.85%    25.51%    20.7% / 24.4%
#   mgqe-uk64x256/64@0.1    26.20%    26.85%
#   mgqe-ud64/32x256@0.1    24.64%    25.30%
# GMF's SQ and DPQ match the paper to 0.05 points. MGQE does not: Table 1's own formula for the stated
# configuration (D = 64, top 10% K1 = 256, tail K2 = 64) already gives 24.80% for GMF (qrec adds 0.05 points
# of group bitmap); 20.7% would need about 4.5 bits per tail code. LRF: the paper's 75.5% is what one shared
# Q (32 r d counted once for both tables) gives; qrec's two tables each hold their own Q. NeuMF: the paper's
# dense part is larger than qrec's 128-64-32-16 tower (its SQ at 29.0% implies dense weights of about 5.6%
# of the embedding bits, qrec's are 0.9%), so every NeuMF ratio sits higher there.
OBSERVED = {
    "lr48": (76.02, 76.23),
    "sq8": (25.05, 25.71),
    "dpq64x256": (30.42, 31.04),
    "mgqe64x256/64@0.1": (24.85, 25.51),
    "mgqe-uk64x256/64@0.1": (26.20, 26.85),
    "mgqe-ud64/32x256@0.1": (24.64, 25.30),
}
PAPER_GMF = {"sq8": 25.0, "dpq64x256": 30.4}


@pytest.mark.parametrize("spec", sorted(OBSERVED))
def test_relative_sizes_on_movielens_1m(spec):
    gmf, neumf = OBSERVED[spec]
    assert 100 * relative_size(spec, "gmf") == pytest.approx(gmf, abs=0.005)
    assert 100 * relative_size(spec, "neumf") == pytest.approx(neumf, abs=0.005)
    if spec in PAPER_GMF:
        assert 100 * relative_size(spec, "gmf") == pytest.approx(PAPER_GMF[spec], abs=0.1)


def test_mgqe_table_1_formula_gives_24_8_percent_not_the_papers_20_7():
    head_u, head_i = _head(N_USERS, 0.1), _head(N_ITEMS, 0.1)
    bits = sum(paper_mgqe([h, n - h], D, 64, [256, 64]) for n, h in ((N_USERS, head_u), (N_ITEMS, head_i)))
    full = paper_full(N_USERS + N_ITEMS, D) + GMF_DENSE
    assert 100 * (bits + GMF_DENSE) / full == pytest.approx(24.80, abs=0.005)


def test_gmf_model_serving_bits_equal_the_formula():
    """End to end: a GMF built from qrec tables reports exactly the size computed above."""
    from qrec.models.gmf import GMF

    counts = {n: np.random.default_rng(n).zipf(1.3, n) for n in (N_USERS, N_ITEMS)}
    for spec in ("sq8", "dpq64x256", "mgqe64x256/64@0.1"):
        torch.manual_seed(0)
        model = GMF(*(build_table(spec, n, D, frequencies=counts[n]) for n in (N_USERS, N_ITEMS)))
        assert model.serving_bits() == _tables_bits(spec) + GMF_DENSE
        assert model.full_bits() == _tables_bits("full") + GMF_DENSE


def test_report_sizes_a_wider_embedding_only_model_against_float_at_the_presets_d():
    """A 1-bit d = 192 GCN in a preset of d = 64 is sized against float32 at d = 64 (224 / 2048 bits per
    node), with or without a d = 64 record of its own model beside it; a model with dense weights and no
    such record keeps its own relative size."""
    from qrec.records import relative_sizes
    rows = 1000
    wide = {"dataset": "g", "model": "lowbit-gcn", "config": {"dim": 192},
            "size": {"serving_bits": rows * 224, "full_bits": rows * 192 * 32, "relative": 224 / 6144,
                     "dense_bits": 0}}
    narrow = {"dataset": "g", "model": "lowbit-gcn", "config": {"dim": 64},
              "size": {"serving_bits": rows * 96, "full_bits": rows * 64 * 32, "relative": 96 / 2048,
                       "dense_bits": 0}}
    mlp = {"dataset": "g", "model": "neumf", "config": {"dim": 32},
           "size": {"serving_bits": 10, "full_bits": 40, "relative": 0.25, "dense_bits": 8}}
    assert relative_sizes([wide], 64) == pytest.approx([224 / 2048])
    assert relative_sizes([wide, narrow], 64) == pytest.approx([224 / 2048, 96 / 2048])
    assert relative_sizes([mlp], 64) == [0.25]
