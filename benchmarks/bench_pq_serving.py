"""Serving a DPQ / MGQE item table from its codes: top-k of every query against all items.

    .venv/bin/python benchmarks/bench_pq_serving.py                      # ANCHORS.md's retrieval setting
    .venv/bin/python benchmarks/bench_pq_serving.py --items 3416 --queries 6040 --subspaces 64   # ML-1M shape

Rows, each producing the top-k items of every query (``--queries`` x ``--items``, d = ``--dim``):

* float32 GEMM over the decoded table (what ``load_model`` held before codes were served; the table in RAM);
* ``pq_topk(method="lut")``: lookup tables + a compiled scan of the codes (``qrec.retrieval.pqscan``);
* ``pq_topk(method="decode")``: item blocks decoded to float32 and multiplied, never the whole table;
* faiss ``IndexPQ`` (inner product) holding the same codebook and codes, when faiss is importable.

Codes and codebooks are random (speed does not depend on the values); the float table takes ``torch.topk`` of
each query block's scores, the codes keep a running top-k as rows are scored (``pq_topk``, what a served
table does), faiss its own search. Configurations are interleaved round by round; the time is the median of
``--repeats`` rounds; ratio = float GEMM time / method time (> 1: faster than the float table).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from qrec.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mdtable import table  # noqa: E402  (benchmarks/mdtable.py: scripts run with this folder on the path)

from qrec.retrieval.pqscan import gather_centroids  # noqa: E402
from qrec.retrieval.pqscan import pq_scores, pq_topk  # noqa: E402



def faiss_index(codes: torch.Tensor, codebook: torch.Tensor):
    """A faiss IndexPQ over exactly these codes and centroids (faiss lays its centroids out (M, ksub, dsub) too)."""
    try:
        import faiss
    except ImportError:
        return None
    D, K, s = codebook.shape
    index = faiss.IndexPQ(D * s, D, K.bit_length() - 1, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(codebook.numpy().astype(np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    faiss.copy_array_to_vector(codes.numpy().astype(np.uint8).ravel(), index.codes)
    index.ntotal = codes.shape[0]
    return index


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--subspaces", type=int, nargs="+", default=[64, 16, 8], help="D values (K = --centroids)")
    ap.add_argument("--centroids", type=int, default=256)
    ap.add_argument("--block", type=int, default=256, help="queries scored per call")
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    set_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        print("faiss not importable: its rows are skipped (pip install faiss-cpu)")
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(args.queries, args.dim, generator=g)
    K, n, k = args.centroids, args.items, args.topk

    def blocks(fn):  # the float table: scores, then torch.topk
        for start in range(0, args.queries, args.block):
            torch.topk(fn(queries[start:start + args.block]), k, dim=1)

    def topk_blocks(fn):  # the codes: scored row block by row block into a running top-k (qrec's serving path)
        for start in range(0, args.queries, args.block):
            fn(queries[start:start + args.block])

    configs = []  # (D, name, item-side MB, callable)
    for D in args.subspaces:
        codebook = torch.randn(D, K, args.dim // D, generator=g)
        codes = torch.randint(0, K, (n, D), generator=g).to(torch.uint8)
        dense = gather_centroids(codebook, codes.long())
        code_mb = (codes.numel() + codebook.numel() * 4) / 2**20
        configs += [
            (D, "float32 GEMM over the decoded table", dense.numel() * 4 / 2**20, lambda dense=dense: blocks(lambda q: q @ dense.T)),
            (D, "codes: lookup tables + compiled scan (lut)", code_mb,
             lambda c=codes, b=codebook: topk_blocks(lambda q: pq_topk(q, c, b, k, method="lut"))),
            (D, "codes: decode blocks + GEMM (decode)", code_mb,
             lambda c=codes, b=codebook: topk_blocks(lambda q: pq_topk(q, c, b, k, method="decode"))),
        ]
        index = faiss_index(codes, codebook)
        if index is not None:  # the same codes in both: the same top-k (random scores have no ties)
            ours = torch.topk(pq_scores(queries[:8], codes, codebook, "decode"), k, dim=1).indices
            if not np.array_equal(index.search(queries[:8].numpy(), k)[1], ours.numpy()):
                raise SystemExit(f"faiss IndexPQ and pq_scores disagree on the top-{k} at D = {D}")
            configs.append((D, "faiss IndexPQ (search)", code_mb, lambda index=index: index.search(queries.numpy(), k)))
    for _, _, _, fn in configs:  # warm-up: compilation, first-touch of the tables
        fn()
    times = [[] for _ in configs]
    for _ in range(args.repeats):
        for i, (_, _, _, fn) in enumerate(configs):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    print(f"{n:,} items x {args.queries} queries, d = {args.dim}, K = {K}, top-{k}, {args.threads} thread(s), "
          f"median of {args.repeats}; torch {torch.__version__}, {platform.machine()}\n")
    rows, base = [], {}
    for (D, name, mb, _), t in zip(configs, times):
        med = statistics.median(t)
        base.setdefault(D, med)  # the first row of each D is the float GEMM
        rows.append([D, args.dim // D, name, f"{mb:.1f}", f"{med:.2f}", f"{args.queries / med:,.0f}", f"{base[D] / med:.2f}"])
    table(rows, ["D", "dims / code", "method", "item-side MB", "s (all queries)", "queries / s", "ratio vs float"])


if __name__ == "__main__":
    main()
