"""Full-ranking scoring cost: every test user against every item, float vs 1-bit popcount vs b-bit intdot.

    .venv/bin/python benchmarks/bench_scoring.py                  # Gowalla shape: 29,858 users x 40,981 items
    .venv/bin/python benchmarks/bench_scoring.py --users 4096 --repeats 5 --threads 1

Shapes are Gowalla's (d = 64, L = 3 so 4 layers for the 1-bit GCN); the embeddings are random normal
(speed does not depend on the values). Every method produces the full ``(users x items)`` float32 score
matrix, in user blocks of ``--block`` rows (what full-ranking evaluation does before its top-K); the time
is the median over ``--repeats`` runs of scoring all users. ``ratio`` = float32 d=64 time / method time
(> 1: faster than the float LightGCN). Optional rows for faiss (IndexFlatIP, IndexBinaryFlat) appear when
faiss is importable (``pip install faiss-cpu``), otherwise they are skipped.
"""

from __future__ import annotations

import argparse
import os
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

from qrec.retrieval.hamming import BinaryCodes, score_layers, topk_layers  # noqa: E402
from qrec.retrieval.intdot import IntCodes  # noqa: E402


def run_blocks(n_users, block, fn):
    for s in range(0, n_users, block):
        fn(s, min(n_users, s + block))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=29858)
    ap.add_argument("--items", type=int, default=40981)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch / numpy-popcount threads (0: torch's default)")
    ap.add_argument("--topk", type=int, default=0,
                    help="also take the top-k of every score block (retrieval; faiss rows always search k): "
                         "e.g. --users 256 --items 1000000 --topk 10 is ANCHORS.md's retrieval setting")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA: the torch popcount and int8 GEMM paths; "
                                                    "the numba/numpy/faiss rows are CPU-only and skipped)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.threads:
        set_threads(args.threads)
    nU, nI, d, L1, blk = args.users, args.items, args.dim, args.layers + 1, args.block
    print(f"# bench_scoring: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"numpy {np.__version__}, {torch.get_num_threads()} threads; {nU:,} users x {nI:,} items, d={d}, "
          f"{L1} layers for 1-bit; blocks of {blk} users; median of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f}; device {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}\n")

    g = torch.Generator().manual_seed(0)
    U = torch.randn(nU, d, generator=g)
    I = torch.randn(nI, d, generator=g)
    UL = torch.randn(nU, L1, d, generator=g)
    IL = torch.randn(nI, L1, d, generator=g)
    su, si = torch.rand(nU, L1, generator=g), torch.rand(nI, L1, generator=g)
    Ucat, Icat = (UL * su[..., None]).reshape(nU, -1), (IL * si[..., None]).reshape(nI, -1)
    bu, bi = BinaryCodes.from_float(UL, su), BinaryCodes.from_float(IL, si)
    bu1, bi1 = BinaryCodes.from_float(UL[:, :1], su[:, :1]), BinaryCodes.from_float(IL[:, :1], si[:, :1])
    ints = {b: (IntCodes.from_float(U, b), IntCodes.from_float(I, b)) for b in (1, 2, 4, 8)}
    if dev.type != "cpu":
        U, I, Ucat, Icat = U.to(dev), I.to(dev), Ucat.to(dev), Icat.to(dev)
        bu, bi, bu1, bi1 = bu.to(dev), bi.to(dev), bu1.to(dev), bi1.to(dev)
        ints = {b: (cu.to(dev), ci.to(dev)) for b, (cu, ci) in ints.items()}

    methods = []
    methods.append(("float32 matmul, d=64 (LightGCN final)", f"{nI * d * 4 / 2**20:.1f}",
                    lambda s, e: U[s:e] @ I.T))
    methods.append((f"float32 matmul, d={L1 * d} (1-bit codes as floats, BiGeaR's code)", f"{nI * L1 * d * 4 / 2**20:.1f}",
                    lambda s, e: Ucat[s:e] @ Icat.T))
    code_mb = bi.bits_held() / 8 / 2**20
    labels = ({"numba": "popcount (compiled, numba)", "numpy": "popcount (np.bitwise_count)",
               "gemm": "unpack bits -> +-1 GEMM"} if dev.type == "cpu" else
              {"torch": "popcount (torch bit tricks)", "gemm": "unpack bits -> +-1 GEMM"})
    for backend, label in labels.items():
        methods.append((f"1-bit x {L1} layers, {label}", f"{code_mb:.1f}",
                        (lambda bk: lambda s, e: score_layers(bu.bits[s:e], bu.scales[s:e], bi.bits, bi.scales, d, bk))(backend)))
    for backend in ("numba", "numpy") if dev.type == "cpu" else ("torch",):
        methods.append((f"1-bit x 1 layer (64-bit codes), {labels[backend]}", f"{bi1.bits_held() / 8 / 2**20:.1f}",
                        (lambda bk: lambda s, e: score_layers(bu1.bits[s:e], bu1.scales[s:e], bi1.bits, bi1.scales, d, bk))(backend)))
    for b, (cu, ci) in ints.items():
        mb = sum(t.numel() * t.element_size() for t in ci.export().values()) / 2**20
        how = "popcount (auto for 1-bit codes on CPU)" if b == 1 and dev.type == "cpu" else "integer dots (auto)"
        methods.append((f"{b}-bit codes, {how}", f"{mb:.2f}",
                        (lambda cu, ci: lambda s, e: cu[s:e].score(ci))(cu, ci)))
    methods.append(("2-bit codes, torch._int_mm int8 GEMM, int32 accumulation", "",
                    lambda s, e: ints[2][0][s:e].score(ints[2][1], backend="int_mm")))

    try:
        import faiss  # noqa: F401

        have_faiss = True
    except ImportError:
        have_faiss = False
    if have_faiss and dev.type == "cpu":
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
        k = args.topk or 20
        ip = faiss.IndexFlatIP(d)
        ip.add(I.numpy())
        Un = U.numpy()
        methods.append((f"faiss IndexFlatIP (search k={k})", f"{nI * d * 4 / 2**20:.1f}", lambda s, e: ip.search(Un[s:e], k)))
        bidx = faiss.IndexBinaryFlat(d)
        bidx.add(np.packbits((IL[:, 0] >= 0).numpy(), axis=1))
        qb = np.packbits((UL[:, 0] >= 0).numpy(), axis=1)
        methods.append((f"faiss IndexBinaryFlat 64-bit (search k={k})", f"{nI * d / 8 / 2**20:.1f}", lambda s, e: bidx.search(qb[s:e], k)))
    elif dev.type == "cpu":
        print("(faiss not importable: faiss rows skipped)\n")

    if args.topk and dev.type != "cpu":
        raise SystemExit("--topk times the compiled CPU top-k kernel; leave it out with --device cuda")
    if args.topk:  # qrec's methods score a block, then take its top-k, as a retrieval engine must
        methods = [(n, mb, fn if n.startswith("faiss") else (lambda f: lambda s, e: torch.topk(f(s, e), args.topk, dim=1))(fn))
                   for n, mb, fn in methods]
        methods.append(("1-bit x 1 layer, fused popcount + top-k (compiled; no score matrix)",
                        f"{bi1.bits_held() / 8 / 2**20:.1f}",
                        lambda s, e: topk_layers(bu1.bits[s:e], bu1.scales[s:e], bi1.bits, bi1.scales, d, args.topk)))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []
    base = None
    for name, mb, fn in methods:
        try:
            run_blocks(min(nU, blk), blk, fn)  # warm-up on one block
            ts = []
            for _ in range(args.repeats):
                sync()
                t = time.perf_counter()
                run_blocks(nU, blk, fn)
                sync()
                ts.append(time.perf_counter() - t)
        except RuntimeError as e:  # e.g. cuBLASLt refusing the int8 GEMM for some block's shape
            print(f"  {name}: not available here ({str(e).splitlines()[0][:80]})", flush=True)
            rows.append([name, mb, "n/a", "n/a", "n/a"])
            continue
        med = statistics.median(ts)
        base = base or med
        rows.append([name, mb, f"{med:.2f}", f"{nU / med:,.0f}", f"{base / med:.2f}"])
        print(f"  {name}: {med:.2f} s", flush=True)
    print()
    table(rows, ["method", "item-side MB", "s (all users)", "users / s", "ratio vs float d=64"])


if __name__ == "__main__":
    main()
