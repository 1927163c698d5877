"""The compiled CPU loops of qrec's retrieval (numba; imported on first use, machine code cached on disk).

One module, so that every loop is a module-level function calling module-level functions: numba caches
those (a loop that calls a function captured from an enclosing scope is recompiled in every process and
adds a cache file each time), and a change anywhere here invalidates every cached loop at once.

* ``popcount_scores`` / ``popcount_topk``: sign codes (``qrec.retrieval.hamming``);
* ``lut_scan`` / ``merge_topk``: product-quantization codes (``qrec.retrieval.pqscan``);
* ``insert``: the running top-k both top-k loops share.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@numba.njit(nogil=True, cache=True, inline="always")
def insert(top_i, top_v, filled, k, value, index):
    """Offer ``(value, index)`` to a query's top-k rows ``top_i`` / ``top_v`` holding ``filled`` entries, sorted
    by value descending; returns the new count. Candidates arrive in increasing index order, and one equal to
    the k-th kept value ranks after it, so the rows end ordered exactly as
    ``qrec.retrieval.topk.topk_deterministic`` orders the full score matrix (score descending, then index;
    ``-inf`` candidates fill the tail only while fewer than ``k`` are kept)."""
    if filled == k and not value > top_v[k - 1]:
        return filled
    p = filled if filled < k else k - 1
    while p > 0 and top_v[p - 1] < value:
        top_v[p] = top_v[p - 1]
        top_i[p] = top_i[p - 1]
        p -= 1
    top_v[p] = value
    top_i[p] = index
    return filled + 1 if filled < k else k


# ---------------------------------------------------------------------------------------- sign codes
# For each user and layer the inner loops run over the items' contiguous words, so LLVM vectorises them (SIMD
# popcount of the XOR, then the float32 scaling). ``popcnt`` is LLVM's ``ctpop``, which numba does not expose.


@intrinsic
def popcnt(typingctx, x):
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@numba.njit(nogil=True, cache=True)
def score_row(a, sa, b, sbT, d, u, lo, hi, cnt, o):
    """``o[:hi-lo]`` = scores of user ``u`` against items ``lo..hi-1`` (numpy backend's float32 order)."""
    L, W = b.shape[0], b.shape[1]
    fd = np.float32(d)
    m2 = np.float32(-2.0)
    n = hi - lo
    for l in range(L):
        x = a[u, l, 0]
        bw = b[l, 0]
        for i in range(n):
            cnt[i] = popcnt(x ^ bw[lo + i])
        for w in range(1, W):
            x = a[u, l, w]
            bw = b[l, w]
            for i in range(n):
                cnt[i] += popcnt(x ^ bw[lo + i])
        ul = sa[u, l]
        c2, cd = m2 * ul, fd * ul
        sl = sbT[l]
        if l == 0:
            for i in range(n):
                o[i] = (np.float32(cnt[i]) * c2 + cd) * sl[lo + i]
        else:
            for i in range(n):
                o[i] += (np.float32(cnt[i]) * c2 + cd) * sl[lo + i]


@numba.njit(nogil=True, cache=True)
def popcount_scores(a, sa, b, sbT, d, start, end, out):  # a (B,L,W) u64, sa (B,L) f32, b (L,W,N), sbT (L,N), out (B,N)
    N = b.shape[2]
    cnt = np.empty(N, np.uint64)
    for u in range(start, end):
        score_row(a, sa, b, sbT, d, u, 0, N, cnt, out[u])
    return 0


@numba.njit(nogil=True, cache=True)
def popcount_topk(a, sa, b, sbT, d, k, indptr, excluded, start, end, top_i, top_v, chunk):
    """Rows ``start..end-1`` of ``(top_i, top_v)``: best ``k`` items by (score desc, index asc), the
    items ``excluded[indptr[u]:indptr[u+1]]`` (sorted) scored ``-inf``, as ``topk_deterministic``.
    Item chunks outermost: a chunk's codes are read from memory once for all the users of the call (a
    million items' codes do not fit in cache; one chunk does), each user's candidates still in index order."""
    N = b.shape[2]
    cnt = np.empty(chunk, np.uint64)
    buf = np.empty(chunk, np.float32)
    filled = np.zeros(end - start, np.int64)
    cursor = indptr[start:end].copy()
    for lo in range(0, N, chunk):
        hi = min(N, lo + chunk)
        for u in range(start, end):
            score_row(a, sa, b, sbT, d, u, lo, hi, cnt, buf)
            e, e_end = cursor[u - start], indptr[u + 1]
            while e < e_end and excluded[e] < hi:
                if excluded[e] >= lo:
                    buf[excluded[e] - lo] = -np.inf
                e += 1
            cursor[u - start] = e
            vi, vv, f = top_i[u], top_v[u], filled[u - start]
            for i in range(hi - lo):
                f = insert(vi, vv, f, k, buf[i], lo + i)
            filled[u - start] = f
    return 0


# ------------------------------------------------------------------------ product-quantization codes


@numba.njit(parallel=True, cache=True, nogil=True)
def lut_scan(tables: np.ndarray, codes: np.ndarray, out: np.ndarray, start: int) -> None:
    # tables (D, K, b) float32: the adds over a block's b queries are contiguous and vectorise;
    # codes (n, D); out (B, n) float32, rows start .. start + b written
    n, D = codes.shape
    b = tables.shape[2]
    chunk = 256  # rows per parallel task: one accumulator each, not one allocation per row
    for c in numba.prange((n + chunk - 1) // chunk):
        acc = np.empty(b, np.float32)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            acc[:] = 0.0
            for j in range(D):
                row = tables[j, codes[i, j]]
                for q in range(b):
                    acc[q] += row[q]
            for q in range(b):
                out[start + q, i] = acc[q]


@numba.njit(parallel=True, cache=True, nogil=True)
def merge_topk(block, lo, top_i, top_v, filled, indptr, excluded, cursor):
    B, c = block.shape
    k = top_i.shape[1]
    for q in numba.prange(B):
        vi, vv, row = top_i[q], top_v[q], block[q]
        f, e, e_end = filled[q], cursor[q], indptr[q + 1]
        for i in range(c):
            s, item = row[i], lo + i
            while e < e_end and excluded[e] < item:
                e += 1
            if e < e_end and excluded[e] == item:
                s = -np.inf
            f = insert(vi, vv, f, k, s, item)
        filled[q], cursor[q] = f, e
