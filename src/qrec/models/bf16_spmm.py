"""``A @ X`` reading ``X`` as bfloat16, accumulating in float32: the graph propagation at half the bytes (CPU).

One sparse product ``A_hat @ X`` on Gowalla gathers a 64-float row of ``X`` per non-zero: 256 of the 264
bytes it reads per non-zero, and it already runs at ~75% of the machine's copy bandwidth in float32
(BENCHMARKS.md, "Bytes, not flops"). Reading ``X`` as bfloat16 (float32's exponent, 8 bits of mantissa)
halves those bytes; the products and the sums stay float32 and the result is float32, so the only error is
``X``'s rounding: each output differs from the exact product by at most ``2^-8 * (|A| @ |X|)`` (plus
float32 summation error), which ``tests/test_bf16_spmm.py`` checks against a float64 reference.

The loop is compiled with numba (rows split into chunks of equal non-zero count, so a hub's long row does
not leave a thread idle); bfloat16 -> float32 is a 16-bit shift of the bits (``_widen``), which LLVM
vectorises. Off the CPU ``qrec.models.graph.product`` keeps torch's float32 product: the kernel exists for the
CPU's memory traffic.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["bf16_bits", "bf16_dense_mm"]

_CHUNKS_PER_THREAD = 16


@intrinsic
def _widen(typingctx, h):
    """bfloat16 bits (uint16) -> the float32 they stand for: the bits shifted into float32's upper half."""
    def codegen(context, builder, signature, args):
        w = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(w, ir.FloatType())
    return types.float32(types.uint16), codegen


@numba.njit(parallel=True, nogil=True, cache=True, fastmath=False)
def _csr_bf16_rows(bounds, indptr, ind, val, X16, out):
    """``out[r] = sum_p val[p] * X16[ind[p]]`` for every row ``r``, rows in chunks ``bounds[c]..bounds[c+1]``."""
    d = out.shape[1]
    for c in numba.prange(bounds.shape[0] - 1):
        acc = np.empty(d, np.float32)
        for r in range(bounds[c], bounds[c + 1]):
            acc[:] = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                x = X16[ind[p]]
                v = val[p]
                for j in range(d):
                    acc[j] += v * _widen(x[j])
            for j in range(d):
                out[r, j] = acc[j]


def bf16_bits(X: torch.Tensor) -> np.ndarray:
    """``X`` rounded to bfloat16 (to nearest, ties to even: torch's cast), as a uint16 numpy array of its bits."""
    return X.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)


def _chunk_bounds(indptr: np.ndarray, n_chunks: int) -> np.ndarray:
    """Row boundaries splitting the rows into ``n_chunks`` runs of about equal non-zero count."""
    n = indptr.shape[0] - 1
    targets = np.linspace(0, int(indptr[-1]), n_chunks + 1)[1:-1]
    inner = np.searchsorted(indptr, targets, side="left")
    return np.unique(np.concatenate([[0], inner, [n]])).astype(np.int64)


def bf16_dense_mm(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A @ X`` (CPU sparse CSR ``A``, dense ``X``, no autograd) with ``X`` read as bfloat16; float32 result."""
    if A.layout != torch.sparse_csr or A.device.type != "cpu":
        raise ValueError("bf16_dense_mm takes a CPU sparse CSR matrix")
    if X.shape[0] != A.shape[1]:
        raise ValueError(f"A is {tuple(A.shape)}, X has {X.shape[0]} rows")
    indptr = A.crow_indices().numpy()
    out = torch.empty(A.shape[0], X.shape[1], dtype=torch.float32)
    if A.shape[0] == 0 or X.shape[1] == 0:
        return out
    bounds = _chunk_bounds(indptr, _CHUNKS_PER_THREAD * numba.get_num_threads())
    _csr_bf16_rows(bounds, indptr, A.col_indices().numpy(), A.values().to(torch.float32).numpy(),
                   bf16_bits(X), out.numpy())
    return out

