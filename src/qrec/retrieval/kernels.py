"""The compiled CPU loops of qrec's retrieval (numba; imported on first use, machine code cached on disk).

One module, so that every loop is a module-level function calling module-level functions: numba caches
those (a loop that calls a function captured from an enclosing scope is recompiled in every process and
adds a cache file each time), and a change anywhere here invalidates every cached loop at once.

* ``popcount_scores`` / ``popcount_topk`` (a few queries) / ``scan_topk_sign``: sign codes (``qrec.retrieval.hamming``);
* ``lut_scan`` / ``merge_topk`` / ``scan_topk_pq``: product-quantization codes (``qrec.retrieval.pqscan``);
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


@numba.njit(nogil=True, cache=True, inline="always")
def offer_run(top_i, top_v, filled, k, row, lo, start, stop):
    """``insert`` of ``row[start:stop]`` (items ``lo + i``), exactly; once ``k`` are kept, an item is compared with
    the k-th value alone (almost every item of a large catalogue stops there: a predictable branch, ~1 ns)."""
    i = start
    while filled < k and i < stop:
        filled = insert(top_i, top_v, filled, k, row[i], lo + i)
        i += 1
    if i < stop:
        kth = top_v[k - 1]
        for j in range(i, stop):
            if row[j] > kth:
                filled = insert(top_i, top_v, filled, k, row[j], lo + j)
                kth = top_v[k - 1]
    return filled


@numba.njit(parallel=True, cache=True, nogil=True)
def merge_topk(block, lo, top_i, top_v, filled, indptr, excluded, cursor):
    """Merge ``block`` (scores of items ``lo:lo + c`` for each query) into the running top-k, each query's
    (sorted) excluded items offered as ``-inf``; ``block`` is only read."""
    B, c = block.shape
    k = top_i.shape[1]
    for q in numba.prange(B):
        vi, vv, row = top_i[q], top_v[q], block[q]
        f, e, e_end, start = filled[q], cursor[q], indptr[q + 1], 0
        while e < e_end and excluded[e] < lo + c:
            x = excluded[e] - lo
            if x >= start:  # runs of unmasked items between the masked ones
                f = offer_run(vi, vv, f, k, row, lo, start, x)
                f = insert(vi, vv, f, k, -np.inf, lo + x)
                start = x + 1
            e += 1
        filled[q], cursor[q] = offer_run(vi, vv, f, k, row, lo, start, c), e


# ------------------------------------------------------------- fused scan + top-k over item parts
# Both code families share one shape of loop (``scan_topk_*``): items split into contiguous parts scanned in
# parallel, each part keeping its own top-k per query; inside a part, a chunk of items (in L2) meets every
# block of queries, and an item's scores for the block's ``lanes`` queries are computed side by side (the
# queries' data are laid out block-major, ``lanes`` contiguous floats) and compared at once with the running
# k-th values, so an item that enters no query's top-k -- almost all of them -- costs a few vector compares.
# ``merge_parts`` then merges the parts in item order, which keeps ``insert``'s tie rule exact.
# ``lanes`` is read from the arrays' shape, never a compile-time constant: LLVM would fully unroll a constant
# 16- or 64-step loop into scalar code (numba leaves the SLP vectoriser off), while a loop of unknown length is
# loop-vectorised (64 lanes: four AVX-512 vectors per step).


@numba.njit(nogil=True, cache=True, inline="always")
def part_start(indptr, excluded, lo, cursor):
    """``cursor[u]``: the first of query ``u``'s (sorted) excluded items at or after item ``lo``."""
    for u in range(cursor.shape[0]):
        cursor[u] = indptr[u] + np.searchsorted(excluded[indptr[u]:indptr[u + 1]], lo)


@numba.njit(nogil=True, cache=True, inline="always")
def offer(acc, thr, q0, item, nq, k, top_i, top_v, filled, indptr, excluded, cursor):
    """Offer ``acc[q]`` (item ``item``'s score for query ``q0 + q``) to the running top-k of the block's queries
    (``nq`` real ones); ``thr[q]``: query ``q0 + q``'s k-th kept value (``-inf`` while fewer than ``k`` are
    kept, ``+inf`` on padding lanes)."""
    hit = False
    for q in range(acc.shape[0]):
        hit |= acc[q] > thr[q]
    if not hit:
        return
    for q in range(nq):
        v = acc[q]
        if v > thr[q]:
            u = q0 + q
            e, e_end = cursor[u], indptr[u + 1]
            while e < e_end and excluded[e] < item:
                e += 1
            cursor[u] = e
            if e < e_end and excluded[e] == item:
                v = -np.inf
            f = insert(top_i[u], top_v[u], filled[u], k, v, item)
            filled[u] = f
            if f == k:
                thr[q] = top_v[u, k - 1]


@numba.njit(nogil=True, cache=True)
def merge_parts(part_i, part_v, part_f, top_i, top_v):
    """Each query's top-k over all parts (``part_*``: ``(P, B, k)`` / ``(P, B)``), parts in item order: within a
    part the kept entries are (value desc, index asc), every index above the earlier parts', so ``insert``
    (equal values rank after) reproduces the single-pass order exactly. Returns the kept count per query."""
    P, B, k = part_i.shape
    filled = np.zeros(B, np.int64)
    for u in range(B):
        f = 0
        for p in range(P):
            for t in range(part_f[p, u]):
                f = insert(top_i[u], top_v[u], f, k, part_v[p, u, t], part_i[p, u, t])
        filled[u] = f
    return filled


@numba.njit(nogil=True, cache=True, inline="always")
def part_state(nb, lanes, nq, indptr, excluded, lo):
    """A part's running thresholds ``(nb, lanes)`` (padding lanes ``+inf``) and exclusion cursors."""
    thr = np.full(nb * lanes, -np.inf, np.float32)
    thr[nq:] = np.inf
    cursor = np.empty(nq, np.int64)
    part_start(indptr, excluded, lo, cursor)
    return thr.reshape(nb, lanes), cursor


LUT_GROUP = 8   # subspaces summed per pass over a tile of items: 8 x 256 rows of 64 lanes = 512 KiB, within L2
LUT_TILE = 256  # items per tile: their partial sums (64 KiB at 64 lanes) wait in cache between passes


@numba.njit(nogil=True, cache=True, inline="always")
def lut_add(t, c, K, j0, j1, acc):
    """``acc[q]`` (+)= ``t[j K + c[j], q]`` for ``j = j0..j1-1`` in that order, starting from the first entry
    when ``j0 == 0``. Four rows per pass over ``acc`` (``(((a + r0) + r1) + r2) + r3``, the same additions in
    the same order), so the accumulators are loaded and stored a quarter as often."""
    lanes = acc.shape[0]
    j = j0
    if j0 == 0:
        r0 = t[np.int64(c[0])]
        if j1 >= 4:
            r1, r2, r3 = t[K + np.int64(c[1])], t[2 * K + np.int64(c[2])], t[3 * K + np.int64(c[3])]
            for q in range(lanes):
                acc[q] = ((r0[q] + r1[q]) + r2[q]) + r3[q]
            j = 4
        else:
            for q in range(lanes):
                acc[q] = r0[q]
            j = 1
    while j + 4 <= j1:
        r0, r1 = t[j * K + np.int64(c[j])], t[(j + 1) * K + np.int64(c[j + 1])]
        r2, r3 = t[(j + 2) * K + np.int64(c[j + 2])], t[(j + 3) * K + np.int64(c[j + 3])]
        for q in range(lanes):
            acc[q] = (((acc[q] + r0[q]) + r1[q]) + r2[q]) + r3[q]
        j += 4
    while j < j1:
        r0 = t[j * K + np.int64(c[j])]
        for q in range(lanes):
            acc[q] += r0[q]
        j += 1


@numba.njit(nogil=True, cache=True, inline="always")
def lut_add_items(t, codes, i0, i1, K, j0, j1, sums):
    """``lut_add`` for the items ``i0..i1-1`` of a tile at once, subspace outermost: ``sums[i - i0, q]`` (+)=
    ``t[j K + codes[i, j], q]`` for ``j = j0..j1-1``. Each sum gets the same additions in the same order as
    ``lut_add`` gives it, but the items' sums are independent chains: with one query (one lane) ``lut_add``'s
    single chain waits on each add's latency (~2.2 ns a code), here the adds of neighbouring items overlap."""
    lanes = sums.shape[1]
    for j in range(j0, j1):
        base = j * K
        if lanes == 1:
            if j == 0:
                for i in range(i0, i1):
                    sums[i - i0, 0] = t[base + np.int64(codes[i, j]), 0]
            else:
                for i in range(i0, i1):
                    sums[i - i0, 0] += t[base + np.int64(codes[i, j]), 0]
            continue
        for i in range(i0, i1):
            r, acc = t[base + np.int64(codes[i, j])], sums[i - i0]
            if j == 0:
                for q in range(lanes):
                    acc[q] = r[q]
            else:
                for q in range(lanes):
                    acc[q] += r[q]


@numba.njit(parallel=True, nogil=True, cache=True)
def scan_topk_pq(tables, codes, offset, k, nq, indptr, excluded, bounds, chunk, part_i, part_v, part_f):
    """Product-quantization codes ``codes (n, D)`` against lookup tables ``tables (nb, D K, lanes)`` (block
    ``b``, row ``j K + c``: the ``lanes`` queries' ``q^(j) . c^(j)_c``; ``nq`` real queries): score = the
    float32 sum over ``j = 0..D-1`` of the entries at ``codes[i, j]`` (``lut_scan``'s order), plus
    ``offset``. Part ``p`` scans items ``bounds[p]..bounds[p+1]-1`` into ``part_*[p]``. Subspaces are summed
    ``LUT_GROUP`` at a time over a tile of ``LUT_TILE`` items, so the tables in use stay in L2 (at D = 16 a
    block's tables are 1 MiB)."""
    nb, lanes = tables.shape[0], tables.shape[2]
    D = codes.shape[1]
    K = tables.shape[1] // D
    off = np.float32(offset)
    for p in numba.prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        top_i, top_v, filled = part_i[p], part_v[p], part_f[p]
        thr, cursor = part_state(nb, lanes, nq, indptr, excluded, lo)
        sums = np.empty((LUT_TILE, lanes), np.float32)
        for c0 in range(lo, hi, chunk):
            c1 = min(hi, c0 + chunk)
            for b in range(nb):
                t, th = tables[b], thr[b]
                for i0 in range(c0, c1, LUT_TILE):
                    i1 = min(c1, i0 + LUT_TILE)
                    for j0 in range(0, D, LUT_GROUP):
                        if lanes < 8:  # a few queries: the tile's items side by side instead
                            lut_add_items(t, codes, i0, i1, K, j0, min(D, j0 + LUT_GROUP), sums)
                            continue
                        for i in range(i0, i1):
                            lut_add(t, codes[i], K, j0, min(D, j0 + LUT_GROUP), sums[i - i0])
                    for i in range(i0, i1):
                        acc = sums[i - i0]
                        for q in range(lanes):
                            acc[q] += off
                        offer(acc, th, b * lanes, i, min(lanes, nq - b * lanes), k, top_i, top_v, filled,
                              indptr, excluded, cursor)
    return 0


@numba.njit(parallel=True, cache=True, nogil=True)
def lut_scan(tables: np.ndarray, codes: np.ndarray, out: np.ndarray, start: int) -> None:
    # tables (D, K, b) float32: the adds over a block's b queries are contiguous and vectorise (``lut_add``, the
    # fused top-k's very sums); codes (n, D); out (B, n) float32, rows start .. start + b written
    n, D = codes.shape
    K, b = tables.shape[1], tables.shape[2]
    t = tables.reshape(D * K, b)
    chunk = 256  # rows per parallel task: one accumulator each, not one allocation per row
    for c in numba.prange((n + chunk - 1) // chunk):
        acc = np.empty(b, np.float32)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            lut_add(t, codes[i], K, 0, D, acc)
            for q in range(b):
                out[start + q, i] = acc[q]


@numba.njit(parallel=True, nogil=True, cache=True)
def scan_topk_sign(a, c2, cd, b, sb, k, nq, indptr, excluded, bounds, chunk, part_i, part_v, part_f):
    """Sign codes: queries ``a (nb, L, W, lanes)`` u64 with the per-layer factors ``c2 = -2 s_u`` and
    ``cd = d s_u`` ``(nb, L, lanes)`` float32; items ``b (N, L, W)`` u64 and scales ``sb (N, L)``. Score = the
    float32 sum over layers of ``(popcount(a ^ b) c2 + cd) sb`` (``score_row``'s operations, same order)."""
    nb, L, W, lanes = a.shape
    for p in numba.prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        top_i, top_v, filled = part_i[p], part_v[p], part_f[p]
        thr, cursor = part_state(nb, lanes, nq, indptr, excluded, lo)
        acc = np.empty(lanes, np.float32)
        cnt = np.empty(lanes, np.uint64)
        for c0 in range(lo, hi, chunk):
            c1 = min(hi, c0 + chunk)
            for blk in range(nb):
                th = thr[blk]
                for i in range(c0, c1):
                    for l in range(L):
                        al = a[blk, l]
                        x, a0 = b[i, l, 0], al[0]
                        for q in range(lanes):
                            cnt[q] = popcnt(a0[q] ^ x)
                        for w in range(1, W):
                            x, aw = b[i, l, w], al[w]
                            for q in range(lanes):
                                cnt[q] += popcnt(aw[q] ^ x)
                        s = sb[i, l]
                        m2, md = c2[blk, l], cd[blk, l]
                        if l == 0:
                            for q in range(lanes):
                                acc[q] = (np.float32(cnt[q]) * m2[q] + md[q]) * s
                        else:
                            for q in range(lanes):
                                acc[q] += (np.float32(cnt[q]) * m2[q] + md[q]) * s
                    offer(acc, th, blk * lanes, i, min(lanes, nq - blk * lanes), k, top_i, top_v, filled,
                          indptr, excluded, cursor)
    return 0
