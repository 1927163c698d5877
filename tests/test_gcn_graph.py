"""Normalised adjacency and propagation against a dense float64 reference."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from qrec.models.graph import (
    layer_weights,
    normalized_adjacency,
    normalized_adjacency_scipy,
    propagate,
    to_torch_csr,
    training_pairs,
)


def _random_pairs(seed=0, nu=13, ni=17, m=60):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, nu - 1, size=m)  # the last user and ...
    i = rng.integers(0, ni - 2, size=m)  # ... the last two items stay isolated
    u = np.concatenate([u, u[:5]])       # duplicates collapse to one edge
    i = np.concatenate([i, i[:5]])
    return nu, ni, u, i


def _dense_reference(nu, ni, u, i):
    A = np.zeros((nu + ni, nu + ni))
    A[u, nu + i] = 1.0
    A[nu + i, u] = 1.0
    deg = A.sum(1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1)), 0.0)
    return dinv[:, None] * A * dinv[None, :]


def test_adjacency_matches_dense_reference():
    nu, ni, u, i = _random_pairs()
    ref = _dense_reference(nu, ni, u, i)
    A = normalized_adjacency_scipy((u, i), nu, ni)
    np.testing.assert_allclose(A.toarray(), ref, rtol=1e-6, atol=1e-7)
    At = normalized_adjacency((u, i), nu, ni)
    assert At.layout == torch.sparse_csr
    np.testing.assert_allclose(At.to_dense().double().numpy(), ref, rtol=1e-6, atol=1e-7)
    # isolated nodes have empty rows; the matrix is symmetric
    assert np.all(ref[nu - 1] == 0) and np.all(ref[-1] == 0)
    assert abs(A - A.T).max() == 0


def test_adjacency_is_compact_sorted_and_shared_with_torch():
    """int32 indices, each row's columns sorted (what the CSR kernels and row slicing assume), float32 values; the
    torch CSR of ``to_torch_csr`` reads the same arrays (one graph in memory, not two)."""
    nu, ni, u, i = _random_pairs(3)
    A = normalized_adjacency_scipy((u, i), nu, ni)
    assert A.indices.dtype == A.indptr.dtype == np.int32 and A.dtype == np.float32
    assert all(np.all(np.diff(A.indices[a:b]) > 0) for a, b in zip(A.indptr[:-1], A.indptr[1:]))
    T = to_torch_csr(A, index_dtype=torch.int32)
    assert T.crow_indices().data_ptr() == A.indptr.ctypes.data
    assert T.col_indices().data_ptr() == A.indices.ctypes.data and T.values().data_ptr() == A.data.ctypes.data


def test_inputs_interactions_scipy_and_pairs_agree():
    from qrec.data.interactions import Interactions

    nu, ni, u, i = _random_pairs(1)
    inter = Interactions(users=u, items=i, n_users=nu, n_items=ni, user_ids=np.arange(nu), item_ids=np.arange(ni))
    a = normalized_adjacency_scipy(inter)
    b = normalized_adjacency_scipy(inter.to_csr())
    c = normalized_adjacency_scipy((u, i), nu, ni)
    assert (a != b).nnz == 0 and (a != c).nnz == 0
    assert training_pairs(inter)[2:] == (nu, ni)
    with pytest.raises(ValueError):
        training_pairs((u, i), nu - 2, ni)


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_propagate_matches_dense_powers(index_dtype):
    nu, ni, u, i = _random_pairs(2)
    ref = _dense_reference(nu, ni, u, i)
    A = normalized_adjacency((u, i), nu, ni, index_dtype=index_dtype)
    rng = np.random.default_rng(0)
    E0 = rng.normal(size=(nu + ni, 8))
    layers = propagate(A, torch.tensor(E0, dtype=torch.float32), 3)
    assert len(layers) == 4
    want = E0
    for l in range(4):
        np.testing.assert_allclose(layers[l].double().numpy(), want, rtol=1e-5, atol=1e-6)
        want = ref @ want


def test_propagate_gradient_matches_dense():
    """The symmetric backward (A @ grad, no transpose) equals autograd through the dense float64 graph."""
    nu, ni, u, i = _random_pairs(3)
    ref = torch.tensor(_dense_reference(nu, ni, u, i))
    A = normalized_adjacency((u, i), nu, ni)
    rng = np.random.default_rng(1)
    E0 = torch.tensor(rng.normal(size=(nu + ni, 5)), requires_grad=True)
    W = torch.tensor(rng.normal(size=(nu + ni, 5)))
    w = layer_weights(3, "bigear")

    E32 = E0.detach().float().requires_grad_(True)
    out = sum(wl * El for wl, El in zip(w, propagate(A, E32, 3)))
    (out.double() * W).sum().backward()

    h, acc = E0, w[0] * E0
    for l in range(1, 4):
        h = ref @ h
        acc = acc + w[l] * h
    (acc * W).sum().backward()
    np.testing.assert_allclose(E32.grad.double().numpy(), E0.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_layer_weights():
    assert layer_weights(3) == [0.25] * 4
    assert layer_weights(3, "bigear") == [0.25, 0.5, 0.75, 1.0]
    assert layer_weights(1, [0.3, 0.7]) == [0.3, 0.7]
    with pytest.raises(ValueError):
        layer_weights(2, [1.0])
    with pytest.raises(ValueError):
        layer_weights(2, "nope")


def test_scipy_input_with_extra_ids():
    R = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    A = normalized_adjacency_scipy(R, 3, 4)  # one more user and item than seen
    assert A.shape == (7, 7)
    assert A[2].nnz == 0 and A[6].nnz == 0


def test_sparse_dense_mm_ignores_its_scratch_input():
    from qrec.models.graph import sparse_dense_mm

    nu, ni, u, i = _random_pairs(4)
    A = normalized_adjacency((u, i), nu, ni)
    X = torch.randn(nu + ni, 6)
    want = A.to_dense() @ X
    torch.testing.assert_close(sparse_dense_mm(A, X), want, rtol=1e-5, atol=1e-6)
    nan = torch.full((nu + ni, 6), float("nan"))
    torch.testing.assert_close(torch.addmm(nan, A, X, beta=0.0), want, rtol=1e-5, atol=1e-6)
