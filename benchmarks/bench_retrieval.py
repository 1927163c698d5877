"""Retrieval from codes against FAISS on the very same codes, and against the machine's copy bandwidth.

    .venv/bin/python benchmarks/bench_retrieval.py                       # 1M and 10M items, 256 queries, top-10
    .venv/bin/python benchmarks/bench_retrieval.py --items 100000 --repeats 3   # a quick look

Rows, per item count, each the top-``k`` of every query against all items (d = ``--dim``, ``--threads``):

* qrec 1-bit: ``BinaryCodes.topk`` (what ``qrec recommend`` / serving call for a 1-bit GCN): one 64-bit sign
  code and one float32 scale per item, score ``s_u s_i (d - 2 popcount)``; faiss ``IndexBinaryFlat`` over the
  same sign bits (Hamming distance; no scale: 8 B per item against qrec's 12 B).
* qrec PQ D = 8 / 16: ``pq_topk`` with ``"auto"`` (what ``CodedEmbedding.topk`` calls for a DPQ table), K = 256
  centroids; faiss ``IndexPQ`` (inner product) holding the same codebook and codes.
* float32 GEMM + ``torch.topk`` over a float table, at the first item count only (``--no-float``: left out).

Every method runs at each of ``--threads`` (default 1 and 2). ``vs faiss`` = faiss's time / qrec's time, faiss's
being its best at up to the same number of threads: on a shared machine faiss's OpenMP threads spin while they
wait and lose to the other jobs (its 2-thread search was up to 10x slower than 1 thread at a load average of
4), so its 1-thread time is the fair rival there.

Data are random from a seeded generator, made in chunks (10M items: 120 MB of sign codes and scales, 80 / 160
MB of PQ codes). Before timing, each qrec row is checked against its faiss row: the same top-``k`` ids, or
equal scores where ids differ (ties; 1-bit: qrec with unit scales, whose score is ``d - 2 x`` faiss's distance).
Each repeat times every method once, interleaved (the machine is shared), and copies ``--copy-mb`` MiB with
numpy at each thread count (bytes read + written per second); the table quotes medians of the methods, ratios
from the same run, and the *best* copy bandwidth seen at that thread count over the whole run (other jobs only
ever slow a copy down, so the best is the closest to the machine's bound, and the fractions are conservative).

``bytes scanned / s`` = queries x items x bytes per item / seconds: the code bytes each query's scan covers
(as if every query read every code once); ``of copy BW`` divides it by the measured copy bandwidth, so 1.0
is a scan running at the speed memory copies (scans beyond 1.0 reuse each code from cache across queries).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from qrec.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_pq_serving import faiss_index  # noqa: E402  (this folder is on the path)
from mdtable import table  # noqa: E402

from qrec.retrieval.hamming import BinaryCodes  # noqa: E402
from qrec.retrieval.pqscan import pq_topk  # noqa: E402

CHUNK = 1 << 20


def random_chunks(rng: np.random.Generator, n: int, make) -> np.ndarray:
    """``make(rng, m)`` for chunks of at most ``CHUNK`` rows, concatenated: large tables without large temporaries."""
    return np.concatenate([make(rng, min(CHUNK, n - s)) for s in range(0, n, CHUNK)])


def copy_bandwidth(src: np.ndarray, dst: np.ndarray, threads: int) -> float:
    """Bytes read + written per second by ``np.copyto`` of ``src`` into ``dst``, split over ``threads`` threads
    (numpy releases the GIL while it copies)."""
    spans = np.linspace(0, src.size, threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads) as pool:
        t = time.perf_counter()
        list(pool.map(lambda i: np.copyto(dst[spans[i]:spans[i + 1]], src[spans[i]:spans[i + 1]]), range(threads)))
        return 2 * src.nbytes / (time.perf_counter() - t)


def sign_methods(n: int, queries: int, d: int, k: int, seed: int):
    """(name, bytes per item, faiss name, callable) rows of the 1-bit codes, checked against faiss first."""
    import faiss

    rng = np.random.default_rng(seed)
    words = random_chunks(rng, n, lambda r, m: r.integers(0, 2**64, (m, 1, 1), dtype=np.uint64))
    scales = random_chunks(rng, n, lambda r, m: r.random((m, 1), dtype=np.float32) + 0.5)
    qwords = rng.integers(0, 2**64, (queries, 1, 1), dtype=np.uint64)
    qscales = rng.random((queries, 1), dtype=np.float32) + 0.5
    items = BinaryCodes(torch.from_numpy(words.view(np.int64)), torch.from_numpy(scales), d)
    users = BinaryCodes(torch.from_numpy(qwords.view(np.int64)), torch.from_numpy(qscales), d)
    index = faiss.IndexBinaryFlat(d)
    index.add(words.reshape(n, 1).view(np.uint8))  # the same bits: Hamming distance does not see byte order
    qbytes = qwords.reshape(queries, 1).view(np.uint8)
    dist, ids = index.search(qbytes, k)
    unit = BinaryCodes(items.bits, torch.ones(n, 1), d)
    got_i, got_v = BinaryCodes(users.bits, torch.ones(queries, 1), d).topk(unit, k)
    same_scores = np.array_equal(got_v.numpy(), (d - 2 * dist).astype(np.float32))
    if not same_scores or (got_i.numpy() != ids).mean() > 0.5:
        raise SystemExit(f"qrec's 1-bit top-{k} and faiss IndexBinaryFlat disagree at {n:,} items")
    print(f"  1-bit check at {n:,} items: same top-{k} scores as faiss for all {queries} queries "
          f"(ids equal at {(got_i.numpy() == ids).mean():.1%} of slots; the rest are ties)", flush=True)
    return [("qrec 1-bit (BinaryCodes.topk)", 12, "faiss IndexBinaryFlat", lambda: users.topk(items, k)),
            ("faiss IndexBinaryFlat", 8, None, lambda: index.search(qbytes, k))]


def pq_methods(n: int, queries: torch.Tensor, D: int, K: int, k: int, seed: int):
    """Rows of DPQ codes with ``D`` subspaces, checked against faiss IndexPQ first."""
    rng = np.random.default_rng(seed + D)
    d = queries.shape[1]
    codebook = torch.from_numpy(rng.standard_normal((D, K, d // D), dtype=np.float32))
    codes = torch.from_numpy(random_chunks(rng, n, lambda r, m: r.integers(0, K, (m, D), dtype=np.uint8)))
    index = faiss_index(codes, codebook)
    qn = queries.numpy()
    _, ids = index.search(qn, k)
    got_i, got_v = pq_topk(queries, codes, codebook, k)
    diff = got_i.numpy() != ids
    # where the ids differ the scores must tie (up to float32 rounding: faiss forms its tables its own way)
    theirs = (queries.double()[:, None, :].reshape(-1, 1, D, d // D)
              * codebook.double()[torch.arange(D), codes[torch.from_numpy(ids)].long()].reshape(-1, k, D, d // D)).sum((-1, -2))
    if diff.any() and not np.allclose(got_v.double().numpy()[diff], theirs.reshape(len(qn), k).numpy()[diff], atol=1e-4):
        raise SystemExit(f"qrec pq_topk and faiss IndexPQ disagree at D = {D}, {n:,} items")
    print(f"  PQ D={D} check at {n:,} items: same top-{k} ids as faiss at {1 - diff.mean():.2%} of slots "
          f"(the rest tie to float32 rounding)", flush=True)
    return [(f"qrec PQ D={D} (pq_topk auto)", D, f"faiss IndexPQ D={D}", lambda: pq_topk(queries, codes, codebook, k)),
            (f"faiss IndexPQ D={D}", D, None, lambda: index.search(qn, k))]


def float_method(n: int, queries: torch.Tensor, k: int, seed: int, block: int = 1 << 16):
    """float32 table scored in item blocks (GEMM), each block's top-k merged: the uncompressed baseline."""
    g = torch.Generator().manual_seed(seed)
    table_ = torch.randn(n, queries.shape[1], generator=g)

    def run():
        vals, ids = [], []
        for s in range(0, n, block):
            v, i = torch.topk(queries @ table_[s:s + block].T, k, dim=1)
            vals.append(v)
            ids.append(i + s)
        v, j = torch.topk(torch.cat(vals, 1), k, dim=1)
        return torch.cat(ids, 1).gather(1, j), v

    return [("float32 GEMM + torch.topk", 4 * queries.shape[1], None, run)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--subspaces", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--centroids", type=int, default=256)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--copy-mb", type=int, default=512)
    ap.add_argument("--no-float", action="store_true", help="leave out the float32 GEMM row")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import faiss
    import numba

    def threaded(fn, n):
        def run():
            set_threads(n)
            faiss.omp_set_num_threads(n)
            return fn()
        return run

    load0 = os.getloadavg()
    print(f"# bench_retrieval: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"threads {args.threads}; torch {torch.__version__}, numpy {np.__version__}, faiss {faiss.__version__}, "
          f"numba {numba.__version__}; {args.queries} queries, d = {args.dim}, K = {args.centroids}, "
          f"top-{args.topk}, median of {args.repeats}; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
          flush=True)
    rng = np.random.default_rng(args.seed)
    queries = torch.from_numpy(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    src = np.ones(args.copy_mb << 20, np.uint8)
    dst = np.zeros_like(src)
    bandwidth = {t: [] for t in args.threads}
    results = []
    for n_index, n in enumerate(args.items):
        methods = sign_methods(n, args.queries, args.dim, args.topk, args.seed)
        for D in args.subspaces:
            methods += pq_methods(n, queries, D, args.centroids, args.topk, args.seed)
        if n_index == 0 and not args.no_float:
            methods += float_method(n, queries, args.topk, args.seed)
        methods = [(name, per_item, rival, t, threaded(fn, t)) for t in args.threads for name, per_item, rival, fn in methods]
        for *_, fn in methods:  # warm-up: compilation, first touch
            fn()
        times = [[] for _ in methods]
        for _ in range(args.repeats):
            for t in args.threads:
                bandwidth[t].append(copy_bandwidth(src, dst, t))
            for i, (*_, fn) in enumerate(methods):
                t = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t)
        med = {(name, th): statistics.median(t) for (name, _, _, th, _), t in zip(methods, times)}
        results.append((n, methods, med))
        print(f"  {n:,} items done; copy bandwidth so far (GB/s, read + write): "
              + ", ".join(f"{t} thread(s) {[round(b / 1e9, 1) for b in bandwidth[t]]}" for t in args.threads)
              + f"; load average now {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for n, methods, med in results:
        for name, per_item, rival, th, _ in methods:
            bw = max(bandwidth[th])
            s = med[name, th]
            scanned = args.queries * n * per_item / s
            best = min((v for (m, t), v in med.items() if m == rival and t <= th), default=None)
            rows.append([f"{n:,}", name, th, f"{s:.3f}", f"{args.queries / s:,.0f}", f"{scanned / 1e9:.1f} GB/s",
                         f"{scanned / bw:.2f}", f"{best / s:.2f}" if best else ""])
    print("\ncopy bandwidth (best of the run, read + write): "
          + ", ".join(f"{t} thread(s) {max(bandwidth[t]) / 1e9:.1f} GB/s" for t in args.threads) + "\n")
    table(rows, ["items", "method", "threads", "s (median)", "queries / s", "bytes scanned / s", "of copy BW", "vs faiss"])
    load1 = os.getloadavg()
    print(f"load average at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
