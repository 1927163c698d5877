"""The compiled CPU loops of the nearest-centroid search (``qrec.compress.nearest``; numba, imported on first
use). Module-level functions calling module-level functions, so numba's on-disk cache serves every process
(a loop calling a function captured from an enclosing scope is recompiled each time and adds a cache file).
"""

from __future__ import annotations

import numba
import numpy as np

# ------------------------------------------------------------------------------ scalar subspaces

@numba.njit(cache=True, nogil=True)
def nearest_scalar(xt: np.ndarray, books: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """The loop of ``nearest_sorted``. ``xt (D, B)``, ``books (D, K)`` float32; ``orders (D, K)`` int64, sorted
    in place. Per subspace: an insertion sort of the K centroids by (value, index), starting from ``order``
    (nearly sorted: last step's order, or a fresh stable argsort), the lowest original index of each run of
    equal values, the midpoints padded with +inf to a power of two ``P``, then a branchless lower bound for
    all values at once with the ``log2 P`` halving steps as the outer loop: the values are independent, so
    the CPU overlaps their loads (5x faster than one binary search per value, whose steps wait on each
    other). Branchless only with ``is_below``: the plain comparison was compiled into a data-dependent jump
    (BENCHMARKS.md: the search 4-8x slower, a DPQ / MGQE training step 1.7-1.9x)."""
    D, B = xt.shape
    K = books.shape[1]
    P = 1
    while P < K:
        P *= 2
    codes = np.empty((B, D), np.int64)
    values = np.empty(K, np.float64)
    lowest = np.empty(K, np.int64)
    mids = np.full(P, np.inf)
    below = np.empty(B, np.uint64)  # unsigned: indexing with it needs no negative-index wraparound
    one = np.uint64(1)
    for j in range(D):
        order, book = orders[j], books[j]
        for p in range(1, K):  # by (value, index): a run of equal values starts at its lowest index
            cur = order[p]
            v = book[cur]
            q = p - 1
            while q >= 0 and (book[order[q]] > v or (book[order[q]] == v and order[q] > cur)):
                order[q + 1] = order[q]
                q -= 1
            order[q + 1] = cur
        first = 0
        for p in range(K):
            values[p] = books[j, order[p]]
            if p > 0 and values[p] != values[p - 1]:
                first = p
            lowest[p] = order[first]
        for p in range(K - 1):
            mids[p] = (values[p] + values[p + 1]) * 0.5
        x = xt[j]
        below[:] = 0  # number of midpoints < x: at most K - 1, the +inf padding is never below
        step = np.uint64(P >> 1)
        while step >= one:
            for b in range(B):
                p = below[b]
                below[b] = p + step * is_below(mids[p + step - one], np.float64(x[b]))
            step >>= one
        for b in range(B):
            v = np.float64(x[b])
            p = np.int64(below[b]) if v == v else 0  # a NaN is below no midpoint
            code = lowest[p]
            if p < K - 1 and mids[p] == v:  # on a midpoint: positions p and p + 1 tie
                code = min(code, lowest[p + 1])
            codes[b, j] = code
    return codes


@numba.njit(inline="always")
def is_below(mid: float, x: float) -> np.uint64:
    """``mid < x`` as 0 / 1 from the sign bit of ``mid - x`` (exact in sign for floats; +0 when equal). LLVM
    compiles the comparison ``mid < x`` into a branch, mispredicted on half the steps of the search: 4-8x
    slower than this arithmetic form. A NaN ``x`` gives either bit: the caller overrides it."""
    return np.uint64(np.signbit(mid - x))


# ------------------------------------------------------------------------------ vector subspaces


@numba.njit(inline="always")
def smallest(bits: np.ndarray) -> int:
    m = bits[0]
    for k in range(bits.shape[0]):
        v = bits[k]
        m = v if v < m else m
    return m


@numba.njit(inline="always")
def first_index_of(bits: np.ndarray, m: int) -> int:
    K = bits.shape[0]
    best = K
    for k in range(K):
        best = min(best, k if bits[k] == m else K)
    return best


@numba.njit(cache=True, nogil=True)
def nearest_exhaustive(x: np.ndarray, books: np.ndarray) -> np.ndarray:
    """The loop of ``qrec.compress.nearest.nearest_exhaustive``, float64 ``x (B, D, s)``, ``books (D, s, K)``:
    per (row, subspace), three branch-free passes over the K centroids, which the compiler vectorises: the
    distances, their minimum, the lowest index holding it (one scan keeping the best so far branches on the
    data at every centroid: 1.3-1.4x slower here, BENCHMARKS.md).

    The minimum is taken over the distances' IEEE-754 bit patterns read as int64: the distances are sums of
    squares, so >= +0.0 (never -0.0), and non-negative doubles order exactly like their bit patterns (+inf,
    and a NaN from a NaN query, sort above every finite value). numba vectorises an int64 minimum but not a
    float one (it keeps the scalar compare that Python's NaN semantics need), 2.5x slower per centroid."""
    B, D, s = x.shape
    K = books.shape[2]
    codes = np.empty((B, D), np.int64)
    dist = np.empty(K, np.float64)
    bits = dist.view(np.int64)
    for b in range(B):
        for j in range(D):
            v, row = x[b, j, 0], books[j, 0]
            for k in range(K):
                diff = v - row[k]
                dist[k] = diff * diff
            for t in range(1, s):
                v, row = x[b, j, t], books[j, t]
                for k in range(K):
                    diff = v - row[k]
                    dist[k] += diff * diff
            codes[b, j] = first_index_of(bits, smallest(bits))
    return codes
