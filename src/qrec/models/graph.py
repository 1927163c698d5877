"""The normalised user-item graph of LightGCN and its propagation, fast on a few CPU cores.

``A_hat = D^-1/2 A D^-1/2`` over ``n_users + n_items`` nodes (users first, then items), where ``A`` is
the symmetric bipartite 0/1 adjacency of the training pairs (duplicates collapse to one edge, no
self-loops) and ``D`` its degree matrix; isolated nodes get a zero row (``0^-1/2 := 0``), as in
LightGCN's code.

Speed notes (Gowalla train, 70,839 nodes, 1,620,256 non-zeros, d = 64, 2 cores; see
``benchmarks/bench_gcn.py`` for the measured table):

* Building ``A_hat`` is a handful of vectorised scipy calls: about 0.2 s (LightGCN-PyTorch's Python
  loops take 121 s on the same machine).
* ``torch.sparse.mm`` with a CSR matrix is about 2x faster than with COO in the forward pass, and int32
  indices a little faster than int64. ``sparse_dense_mm`` calls ``addmm(beta=0)`` to skip the zero-fill
  and copy around the product.
* Autograd's own backward for ``sparse.mm`` transposes the sparse matrix on every call, which costs
  more than the product itself. ``A_hat`` is symmetric, so :class:`SymmetricSpMM` returns
  ``A_hat @ grad`` instead: one SpMM per layer forward and one per layer backward (about 2.5x less
  time for a 3-layer forward + backward than plain autograd).

Everything is device-agnostic: ``normalized_adjacency(..., device="cuda")`` returns a CUDA CSR tensor
and ``propagate`` runs there unchanged (``torch.sparse.mm`` dispatches to cuSPARSE).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "training_pairs",
    "normalized_adjacency_scipy",
    "normalized_adjacency",
    "to_torch_csr",
    "SymmetricSpMM",
    "sparse_dense_mm",
    "spmm",
    "propagate",
    "layer_weights",
]


def training_pairs(train, n_users: int | None = None, n_items: int | None = None):
    """``(users, items, n_users, n_items)`` as int64 arrays from an ``Interactions``, a scipy
    user x item matrix, or a ``(users, items)`` pair of arrays."""
    if hasattr(train, "users") and hasattr(train, "items") and hasattr(train, "n_users"):
        users, items = np.asarray(train.users), np.asarray(train.items)
        n_users = train.n_users if n_users is None else n_users
        n_items = train.n_items if n_items is None else n_items
    elif sp.issparse(train):
        coo = sp.coo_matrix(train)
        users, items = coo.row, coo.col
        n_users = train.shape[0] if n_users is None else n_users
        n_items = train.shape[1] if n_items is None else n_items
    elif isinstance(train, (tuple, list)) and len(train) == 2:
        users, items = (np.asarray(a) for a in train)
        if n_users is None or n_items is None:
            raise ValueError("pass n_users and n_items with a (users, items) pair")
    else:
        raise TypeError(f"training pairs must be Interactions, a scipy matrix or (users, items); got {type(train)!r}")
    users = users.astype(np.int64, copy=False)
    items = items.astype(np.int64, copy=False)
    if users.size and (users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items):
        raise ValueError("user/item index out of range for the given n_users/n_items")
    return users, items, int(n_users), int(n_items)


def normalized_adjacency_scipy(train, n_users: int | None = None, n_items: int | None = None,
                               dtype=np.float32) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` as a scipy CSR matrix with sorted indices, shape ``(nu+ni, nu+ni)``.

    Memory is linear in the pairs: the user rows are the normalised ``R`` and the item rows its transpose,
    concatenated straight into the CSR arrays (no COO of the whole graph, nothing ``n x n``); indices are
    int32 whenever the non-zeros fit, so ``to_torch_csr`` can share them instead of copying."""
    users, items, nu, ni = training_pairs(train, n_users, n_items)
    n = nu + ni
    R = sp.csr_matrix((np.ones(users.size, dtype=dtype), (users, items)), shape=(nu, ni))
    del users, items
    R.sum_duplicates()  # also sorts each row's indices
    deg_u = np.diff(R.indptr)
    deg_i = np.bincount(R.indices, minlength=ni)
    # R_ui / sqrt(d_u d_i) on R's own arrays; a pair seen twice is still one edge
    R.data = (_inv_sqrt(deg_u).repeat(deg_u) * _inv_sqrt(deg_i)[R.indices]).astype(dtype)
    RT = R.T.tocsr()  # item rows; scipy's transpose conversion leaves each row's indices sorted
    index = sp.get_index_dtype(maxval=max(2 * R.nnz, n))
    indptr = np.concatenate([R.indptr.astype(index), (R.nnz + RT.indptr[1:]).astype(index)])
    indices = np.concatenate([(R.indices + np.int64(nu)).astype(index), RT.indices.astype(index)])
    data = np.concatenate([R.data, RT.data])
    del R, RT
    A = sp.csr_matrix((data, indices, indptr), shape=(n, n), copy=False)
    A.has_sorted_indices = True
    return A


def _inv_sqrt(deg: np.ndarray) -> np.ndarray:
    """``deg^-1/2`` in float64, ``0`` for isolated nodes (LightGCN's convention)."""
    out = np.zeros(deg.shape, dtype=np.float64)
    np.power(deg, -0.5, out=out, where=deg > 0)
    return out


def to_torch_csr(A: sp.csr_matrix, device=None, index_dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (float32 values), sharing ``A``'s arrays where the dtypes
    match: neither may be modified in place afterwards."""
    A = A.tocsr()
    np_index = np.int32 if index_dtype == torch.int32 else np.int64
    # copy=False: when the dtypes already match, the tensor shares A's arrays (one graph in memory, not two)
    crow = torch.from_numpy(A.indptr.astype(np_index, copy=False))
    col = torch.from_numpy(A.indices.astype(np_index, copy=False))
    val = torch.from_numpy(A.data.astype(np.float32, copy=False))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and tested here
        warnings.simplefilter("ignore", UserWarning)
        t = torch.sparse_csr_tensor(crow, col, val, size=A.shape, check_invariants=False)
    return t.to(device) if device is not None else t


def normalized_adjacency(train, n_users: int | None = None, n_items: int | None = None, device=None,
                         index_dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """``A_hat`` as a torch sparse CSR tensor on ``device`` (users first, then items)."""
    return to_torch_csr(normalized_adjacency_scipy(train, n_users, n_items), device=device, index_dtype=index_dtype)


def sparse_dense_mm(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A @ X`` (sparse CSR times dense), no autograd.

    ``torch.addmm(empty, A, X, beta=0)`` skips the zero-fill and the copy that ``torch.sparse.mm`` does
    around the product (about 15% of its time at Gowalla's size); with ``beta = 0`` the ``empty`` input is
    ignored, NaNs included (``tests/test_gcn_graph.py`` checks it).
    """
    X = X.contiguous()
    return torch.addmm(X.new_empty(A.shape[0], X.shape[1]), A, X, beta=0.0)


PRECISIONS = ("float32", "bfloat16")


def product(precision: str):
    """The no-autograd sparse-dense product to propagate with: ``"float32"`` (``sparse_dense_mm``) or
    ``"bfloat16"`` (``bf16_product``)."""
    if precision == "float32":
        return sparse_dense_mm
    if precision == "bfloat16":
        return bf16_product
    raise ValueError(f"propagation must be one of {PRECISIONS}, got {precision!r}")


def bf16_product(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A @ X`` with ``X`` read as bfloat16 on the CPU (``qrec.models.bf16_spmm``); torch's float32 product on
    other devices (the kernel is about the CPU's memory traffic)."""
    if A.device.type != "cpu":
        return sparse_dense_mm(A, X)
    from qrec.models.bf16_spmm import bf16_dense_mm  # compiled (numba): imported when first used
    return bf16_dense_mm(A, X)


class SymmetricSpMM(torch.autograd.Function):
    """``A @ X`` for a constant *symmetric* sparse ``A``; backward is ``A @ grad`` (no transpose)."""

    @staticmethod
    def forward(ctx, A, X, mm=sparse_dense_mm):
        ctx.A, ctx.mm = A, mm
        return mm(A, X)

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.mm(ctx.A, grad), None


def spmm(A: torch.Tensor, X: torch.Tensor, mm=sparse_dense_mm) -> torch.Tensor:
    """``A @ X`` for the symmetric ``A_hat``; differentiable in ``X`` only. ``mm``: the no-autograd product
    (``sparse_dense_mm``, or ``bf16_product``)."""
    if X.requires_grad and torch.is_grad_enabled():
        return SymmetricSpMM.apply(A, X.contiguous(), mm)
    return mm(A, X)


def propagate(A_hat: torch.Tensor, E0: torch.Tensor, n_layers: int, mm=sparse_dense_mm) -> list[torch.Tensor]:
    """``[E0, A E0, A^2 E0, ..., A^L E0]``: LightGCN's layers (no weights, no non-linearity).

    ``A_hat`` must be symmetric (it is, by construction): the backward pass relies on it.
    """
    if E0.shape[0] != A_hat.shape[0]:
        raise ValueError(f"E0 has {E0.shape[0]} rows, A_hat has {A_hat.shape[0]}")
    layers = [E0]
    h = E0
    for _ in range(int(n_layers)):
        h = spmm(A_hat, h, mm)
        layers.append(h)
    return layers


def layer_weights(n_layers: int, kind="uniform") -> list[float]:
    """Per-layer weights: ``"uniform"`` 1/(L+1) (LightGCN), ``"bigear"`` (l+1)/(L+1), or a list."""
    L1 = int(n_layers) + 1
    if isinstance(kind, str):
        if kind == "uniform":
            return [1.0 / L1] * L1
        if kind in ("bigear", "linear"):
            return [(l + 1) / L1 for l in range(L1)]
        raise ValueError(f"unknown layer weights {kind!r}; use 'uniform', 'bigear' or a list of {L1} floats")
    w = [float(v) for v in kind]
    if len(w) != L1:
        raise ValueError(f"need {L1} layer weights for {n_layers} layers, got {len(w)}")
    return w
