"""Packed sign bits: the popcount identity holds exactly, pad bits never count, all backends agree."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qrec.retrieval.hamming as hm
from qrec.retrieval.hamming import (
    BinaryCodes,
    hamming_dot,
    n_words,
    pack_signs,
    popcount64,
    popcount_np,
    score_layers,
    unpack_signs,
)

DIMS = [1, 63, 64, 65, 70, 128, 130]


@pytest.mark.parametrize("d", DIMS)
def test_pack_unpack_roundtrip_and_padding(d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(9, d, generator=g)
    x[0, 0] = 0.0  # sign(0) = +1
    w = pack_signs(x)
    assert w.dtype == torch.int64 and w.shape == (9, n_words(d))
    pm = unpack_signs(w, d)
    assert torch.equal(pm, torch.where(x >= 0, 1.0, -1.0))
    # pad bits (positions >= d in the last word) are zero
    full = unpack_signs(w, n_words(d) * 64)
    assert torch.all(full[:, d:] == -1)


@pytest.mark.parametrize("d", DIMS)
def test_popcount_identity_is_exact(d):
    g = torch.Generator().manual_seed(100 + d)
    a = torch.randn(17, d, generator=g)
    b = torch.randn(23, d, generator=g)
    b[:3] = a[:3]          # identical codes: dot = d
    b[3] = -a[3]           # opposite codes: dot = -d (a has no exact zeros)
    sa, sb = torch.where(a >= 0, 1, -1), torch.where(b >= 0, 1, -1)
    want = (sa.long() @ sb.long().T).int()
    got = hamming_dot(pack_signs(a), pack_signs(b), d)
    assert got.dtype == torch.int32
    assert torch.equal(got, want)
    assert got[0, 0] == d and got[3, 3] == -d


def test_torch_swar_popcount_matches_numpy():
    rng = np.random.default_rng(0)
    words = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=1000, dtype=np.int64)
    words[:4] = [0, -1, np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    want = np.array([bin(int(v) & (2 ** 64 - 1)).count("1") for v in words])
    assert np.array_equal(popcount64(torch.from_numpy(words)).numpy(), want)
    assert np.array_equal(popcount_np(words.view(np.uint64)).astype(int), want)


def test_byte_table_fallback(monkeypatch):
    monkeypatch.setattr(hm, "_HAS_BITWISE_COUNT", False)
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2 ** 63, size=(5, 7), dtype=np.int64).view(np.uint64)
    want = np.array([[bin(int(v)).count("1") for v in row] for row in words])
    assert np.array_equal(popcount_np(words).astype(int), want)
    a, b = torch.randn(4, 70), torch.randn(6, 70)
    want = (torch.where(a >= 0, 1, -1) @ torch.where(b >= 0, 1, -1).T).int()
    assert torch.equal(hamming_dot(pack_signs(a), pack_signs(b), 70), want)


@pytest.mark.parametrize("d", [64, 70, 200])
@pytest.mark.parametrize("backend", ["numba", "numpy", "torch", "gemm"])
def test_layered_scores_all_backends(d, backend):
    g = torch.Generator().manual_seed(d)
    L = 3
    xu, xi = torch.randn(11, L, d, generator=g), torch.randn(37, L, d, generator=g)
    su, si = torch.rand(11, L, generator=g), torch.rand(37, L, generator=g)
    cu, ci = BinaryCodes.from_float(xu, su), BinaryCodes.from_float(xi, si)
    # float64 reference: sum_l su si <sign, sign>
    pu = torch.where(xu >= 0, 1.0, -1.0).double()
    pi = torch.where(xi >= 0, 1.0, -1.0).double()
    ref = torch.einsum("uld,ild,ul,il->ui", pu, pi, su.double(), si.double())
    got = score_layers(cu.bits, cu.scales, ci.bits, ci.scales, d, backend=backend)
    assert got.dtype == torch.float32 and got.shape == (11, 37)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    # decode(): the float vectors the codes stand for
    torch.testing.assert_close((cu.decode() @ ci.decode().T).double(), ref, rtol=1e-5, atol=1e-4)


def test_numpy_backend_threads_and_blocks_agree():
    g = torch.Generator().manual_seed(5)
    xu, xi = torch.randn(33, 2, 64, generator=g), torch.randn(50, 2, 64, generator=g)
    su, si = torch.rand(33, 2, generator=g), torch.rand(50, 2, generator=g)
    cu, ci = BinaryCodes.from_float(xu, su), BinaryCodes.from_float(xi, si)
    a = hm._score_numpy(cu.bits, cu.scales, ci.bits, ci.scales, 64, n_threads=1, block=1)
    b = hm._score_numpy(cu.bits, cu.scales, ci.bits, ci.scales, 64, n_threads=3, block=8)
    assert torch.equal(a, b)
    # the compiled loop does the same float32 operations in the same order: bit-identical, any blocking
    assert torch.equal(a, hm._score_numba(cu.bits, cu.scales, ci.bits, ci.scales, 64, n_threads=1, block=5))
    assert torch.equal(a, hm._score_numba(cu.bits, cu.scales, ci.bits, ci.scales, 64, n_threads=2, block=64))


def test_binary_codes_sizes_and_errors():
    c = BinaryCodes.from_float(torch.randn(10, 4, 64), torch.rand(10, 4))
    assert c.bits_held() == 10 * 4 * (64 + 32)
    assert sum(t.numel() * t.element_size() * 8 for t in c.export().values()) == c.bits_held()
    with pytest.raises(ValueError):
        score_layers(c.bits, c.scales, c.bits[:, :2], c.scales[:, :2], 64)
    with pytest.raises(ValueError):
        score_layers(c.bits, c.scales, c.bits, c.scales, 64, backend="nope")


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 9), N=st.integers(1, 300), L=st.integers(1, 3), d=st.sampled_from([8, 64, 70]),
       k=st.integers(1, 40), coarse=st.booleans(), parts=st.sampled_from([1, 3, 7]), seed=st.integers(0, 2**31 - 1))
def test_fused_topk_equals_deterministic_topk_of_the_masked_scores(B, N, L, d, k, coarse, parts, seed):
    """The compiled top-k (no score matrix) returns exactly topk_deterministic of the masked scores: same
    items in the same order, same values, ties to the lower index, masked items only in a short row's tail."""
    import scipy.sparse as sp

    from qrec.retrieval.topk import topk_deterministic

    k = min(k, N)
    g = torch.Generator().manual_seed(seed)
    xu, xi = torch.randn(B, L, d, generator=g), torch.randn(N, L, d, generator=g)
    if coarse:  # few distinct scores: many exact ties
        su, si = torch.ones(B, L), torch.randint(1, 3, (N, L), generator=g).float()
        xi[: N // 2] = xi[N // 2: 2 * (N // 2)]
    else:
        su, si = torch.rand(B, L, generator=g), torch.rand(N, L, generator=g)
    cu, ci = BinaryCodes.from_float(xu, su), BinaryCodes.from_float(xi, si)
    rng = np.random.default_rng(seed)
    seen = sp.random(B, N, density=float(rng.uniform(0, 0.95)), format="csr", random_state=seed)
    scores = score_layers(cu.bits, cu.scales, ci.bits, ci.scales, d, backend="numba").clone()
    scores[torch.from_numpy(seen.toarray() != 0)] = -torch.inf
    want_i, want_v = topk_deterministic(scores, k)
    got_i, got_v = hm.topk_layers(cu.bits, cu.scales, ci.bits, ci.scales, d, k, exclude=seen, parts=parts)
    assert torch.equal(got_v, want_v)
    assert torch.equal(got_i, want_i)


@settings(max_examples=25, deadline=None)
@given(B=st.sampled_from([1, 63, 64, 65, 130]), N=st.integers(1, 200), W=st.integers(1, 2), k=st.integers(1, 12),
       threads=st.sampled_from([1, 2]), parts=st.sampled_from([None, 1, 5]), seed=st.integers(0, 2**16))
def test_fused_topk_equals_a_float64_brute_force_across_query_blocks(B, N, W, k, threads, parts, seed):
    """Unit scales: the score is the integer ``d - 2 popcount``; a float64 brute force (np.lexsort) ranks
    the same, whatever the query blocks (64 lanes, the last padded), item parts and threads."""
    import scipy.sparse as sp

    k, d = min(k, N), 64 * W
    g = torch.Generator().manual_seed(seed)
    xu, xi = torch.randn(B, 1, d, generator=g), torch.randn(N, 1, d, generator=g)
    xi[N // 2:] = xi[: N - N // 2].clone()  # repeated codes: exact ties
    cu, ci = BinaryCodes.from_float(xu, torch.ones(B, 1)), BinaryCodes.from_float(xi, torch.ones(N, 1))
    seen = sp.random(B, N, density=0.2, format="csr", random_state=seed)
    exact = unpack_signs(cu.bits[:, 0], d).double() @ unpack_signs(ci.bits[:, 0], d).double().T
    exact[torch.from_numpy(seen.toarray() != 0)] = -np.inf
    order = np.stack([np.lexsort((np.arange(N), -row))[:k] for row in exact.numpy()])
    got_i, got_v = hm.topk_layers(cu.bits, cu.scales, ci.bits, ci.scales, d, k, exclude=seen, n_threads=threads, parts=parts)
    np.testing.assert_array_equal(got_i.numpy(), order)
    np.testing.assert_array_equal(got_v.numpy(), np.take_along_axis(exact.numpy(), order, 1).astype(np.float32))


def test_fused_topk_with_no_users_or_a_k_beyond_the_items():
    c = BinaryCodes.from_float(torch.randn(4, 1, 64), torch.rand(4, 1))
    top, val = hm.topk_layers(c.bits[:0], c.scales[:0], c.bits, c.scales, 64, 2)
    assert top.shape == (0, 2) and val.shape == (0, 2)
    with pytest.raises(ValueError, match="k must be"):
        hm.topk_layers(c.bits, c.scales, c.bits, c.scales, 64, 5)
