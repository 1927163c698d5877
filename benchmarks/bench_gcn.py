"""Graph-side timings on Gowalla (LightGCN split): adjacency build, SpMM layouts, training epoch time.

    .venv/bin/python benchmarks/bench_gcn.py                 # full epochs, torch's default threads
    .venv/bin/python benchmarks/bench_gcn.py --batches 60    # time 60 batches, extrapolate to an epoch
    .venv/bin/python benchmarks/bench_gcn.py --threads 1

Reference (ANCHORS.md, same kind of 2-core machine): LightGCN-PyTorch takes 121 s to build the
normalised adjacency and 266 s per training epoch (3 layers, d = 64, batch 2048).

An "epoch" here is what LightGCN calls one: one pass over the 810,128 training pairs in batches of
``--batch`` with one uniform negative each (``qrec.data.sampling.bpr_epoch``), for each batch a
full-graph propagation, the loss, backward and an Adam step (lr 1e-3). Sampling time is included.
With ``--batches N`` only the first N batches are timed (after 3 warm-up batches) and the epoch time is
extrapolated linearly (marked ``~``).
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

from qrec.models.graph import (SymmetricSpMM, bf16_product, normalized_adjacency_scipy, sparse_dense_mm,  # noqa: E402
                               to_torch_csr)


def load_gowalla(data_dir: Path):
    from qrec.data.loaders import read_lightgcn_split

    d = data_dir / "gowalla"
    split = read_lightgcn_split(d / "train.txt", d / "test.txt")
    return split.train.users, split.train.items, split.n_users, split.n_items, split.train


def timeit(fn, repeats=5, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)



def bench_adjacency(u, i, nu, ni):
    rows = []
    t_sp = timeit(lambda: normalized_adjacency_scipy((u, i), nu, ni), repeats=3)
    A = normalized_adjacency_scipy((u, i), nu, ni)
    t_th = timeit(lambda: to_torch_csr(A), repeats=3)
    rows.append(["normalised adjacency (scipy, vectorised)", f"{t_sp:.3f}", f"{121 / t_sp:.0f}x"])
    rows.append(["  + to torch CSR", f"{t_th:.3f}", ""])
    print(f"A_hat: {A.shape[0]:,} nodes, {A.nnz:,} non-zeros")
    table(rows, ["step", "seconds (median of 3)", "vs 121 s (LightGCN-PyTorch)"])
    return A


def copy_bandwidth(nbytes: int, repeats: int = 9) -> float:
    """The machine's memory copy bandwidth, bytes read + written per second (numpy copy of ``nbytes``)."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    return 2 * src.nbytes / timeit(lambda: np.copyto(dst, src), repeats=repeats)


def spmm_bytes(A, d: int, x_bytes: int = 4) -> int:
    """Bytes one CSR ``A @ X`` must move at least: int32 column + float32 value per non-zero, the gathered
    ``d``-value row of ``X`` per non-zero (``x_bytes`` each; a random read: no reuse assumed), the written float32
    output and the row pointers."""
    return A.nnz * (4 + 4 + x_bytes * d) + 4 * A.shape[0] * d + 4 * (A.shape[0] + 1)


def bench_spmm(A, d=64, L=3):
    from qrec.models.lightgcn import node_order

    n = A.shape[0]
    X = torch.randn(n, d)
    _, A_rcm = node_order(A.tocsr(), "rcm")
    csr32 = to_torch_csr(A, index_dtype=torch.int32)
    # name: (matrix, the no-autograd product, bytes per gathered value); autograd's backward only for torch's
    layouts = {
        "CSR int64": (to_torch_csr(A, index_dtype=torch.int64), sparse_dense_mm, 4),
        "CSR int32 (the default)": (csr32, sparse_dense_mm, 4),
        "CSR int32, reverse Cuthill-McKee order": (to_torch_csr(A_rcm, index_dtype=torch.int32), sparse_dense_mm, 4),
        "CSR int32, X read as bfloat16 (propagation=bfloat16)": (csr32, bf16_product, 2),
        "COO": (to_torch_csr(A).to_sparse_coo().coalesce(), sparse_dense_mm, 4),
    }
    bandwidth = copy_bandwidth(spmm_bytes(A, d))
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (numpy copy, read + write); one float32 A @ X moves >= "
          f"{spmm_bytes(A, d) / 1e6:.0f} MB, with X read as bfloat16 {spmm_bytes(A, d, 2) / 1e6:.0f} MB")
    rows = []
    for name, (M, mm, x_bytes) in layouts.items():
        moved = spmm_bytes(A, d, x_bytes)
        fwd = timeit(lambda: mm(M, X))

        def train_autograd():
            E = X.clone().requires_grad_(True)
            h, acc = E, E
            for _ in range(L):
                h = torch.sparse.mm(M, h)
                acc = acc + h
            (acc[:6000] ** 2).sum().backward()

        def train_symmetric():
            E = X.clone().requires_grad_(True)
            h, acc = E, E
            for _ in range(L):
                h = SymmetricSpMM.apply(M, h, mm)
                acc = acc + h
            (acc[:6000] ** 2).sum().backward()

        t_auto = f"{timeit(train_autograd, repeats=3) * 1e3:.0f}" if mm is not bf16_product else "-"
        t_sym = timeit(train_symmetric, repeats=3)
        rows.append([name, f"{fwd * 1e3:.1f}", f"{moved / fwd / 1e9:.1f}", f"{moved / fwd / bandwidth:.2f}",
                     t_auto, f"{t_sym * 1e3:.0f}"])
    table(rows, ["layout", "A @ X ms", "GB/s moved", "of copy bandwidth", f"{L}-layer fwd+bwd, autograd ms",
                 f"{L}-layer fwd+bwd, symmetric bwd ms"])


def bench_epochs(u, i, nu, ni, train, models, graphs, batch, max_batches, lr=1e-3):
    from qrec.models.binary_gcn import BinaryGCN
    from qrec.models.lightgcn import LightGCN
    from qrec.models.lowbit_gcn import LowBitGCN

    try:
        from qrec.data.sampling import NegativeSampler, bpr_epoch

        sampler = NegativeSampler(train) if train is not None else None
    except ImportError:
        sampler = None

    def batches(rng):
        if sampler is not None:
            yield from bpr_epoch(train, sampler, batch, rng)
            return
        order = rng.permutation(len(u))
        for s in range(0, len(order), batch):
            k = order[s:s + batch]
            yield {"users": torch.from_numpy(u[k]), "pos": torch.from_numpy(i[k]),
                   "neg": torch.from_numpy(rng.integers(0, ni, size=k.size))}

    n_batches = (len(u) + batch - 1) // batch
    builders = {
        "lightgcn": ("LightGCN", lambda g: LightGCN(nu, ni, (u, i), train_graph=g)),
        "lightgcn-rcm": ("LightGCN, RCM order", lambda g: LightGCN(nu, ni, (u, i), train_graph=g, reorder="rcm")),
        "lightgcn-bf16": ("LightGCN, bfloat16 propagation",
                          lambda g: LightGCN(nu, ni, (u, i), train_graph=g, propagation="bfloat16")),
        "lightgcn-softmax": ("LightGCN, softmax 1,024 negatives, RCM order",
                             lambda g: LightGCN(nu, ni, (u, i), train_graph=g, reorder="rcm", loss="softmax",
                                                negatives=1024)),
        "binary": ("BinaryGCN (gaussian), no KD", lambda g: BinaryGCN(nu, ni, (u, i), train_graph=g)),
        "binary-kd": ("BinaryGCN (gaussian) + KD R=100", None),
        "lowbit2-ste": ("LowBitGCN b=2 STE", lambda g: LowBitGCN(nu, ni, (u, i), bits=2, estimator="ste", train_graph=g)),
        "lowbit2-ewgs": ("LowBitGCN b=2 EWGS", lambda g: LowBitGCN(nu, ni, (u, i), bits=2, estimator="ewgs", train_graph=g)),
    }
    rows = []
    for key, graph in [(m, g) for m in models for g in graphs]:
        name, build = builders[key]
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        extra = ""
        if key == "binary-kd":
            teacher = LightGCN(nu, ni, (u, i))
            t = time.perf_counter()
            model = BinaryGCN.from_lightgcn(teacher, teacher=True, train_graph=graph)
            extra = f"teacher top-100 x 4 layers: {time.perf_counter() - t:.1f} s, once"
        else:
            model = build(graph)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.on_epoch_start()
        t0 = time.perf_counter()
        it = batches(rng)
        first = next(it)  # bpr_epoch draws the whole epoch's negatives here
        t_sample = time.perf_counter() - t0
        walls, cpus = [], []
        done = 0
        t_epoch = time.perf_counter()
        b = first
        while b is not None:
            w0, c0 = time.perf_counter(), time.process_time()
            loss = model.training_loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w1, c1 = time.perf_counter(), time.process_time()
            done += 1
            if done > 3:  # warm-up
                walls.append(w1 - w0)
                cpus.append(c1 - c0)
            if max_batches and done >= max_batches + 3:
                break
            b = next(it, None)
        wall = time.perf_counter() - t_epoch + t_sample
        per, cpu = statistics.median(walls), statistics.median(cpus)
        epoch = f"~{per * n_batches + t_sample:.0f}" if max_batches else f"{wall:.0f}"
        threads = torch.get_num_threads()
        rows.append([name, graph, f"{per * 1e3:.0f}", f"{cpu * 1e3 / threads:.0f}", epoch,
                     f"{266 / (per * n_batches + t_sample):.1f}x", f"{t_sample:.1f}", extra])
        print(f"  {name} [{graph}]: {per * 1e3:.0f} ms/batch wall, {cpu * 1e3:.0f} ms CPU", flush=True)
    print()
    table(rows, ["model", "train_graph", "wall ms / batch", "CPU ms / batch / thread", f"s / epoch ({n_batches} batches of {batch})",
                 "vs 266 s", "sampling s (epoch)", "note"])
    print("wall: median over the timed batches (forward, backward, Adam step); CPU: process time over the same\n"
          "steps divided by the thread count, which other processes on the cores inflate much less than wall time.\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("QREC_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--batches", type=int, default=0, help="time only this many batches and extrapolate (0: full epoch)")
    ap.add_argument("--models", default="lightgcn,binary,binary-kd,lowbit2-ste,lowbit2-ewgs",
                    help="comma list of lightgcn, lightgcn-rcm, lightgcn-bf16, lightgcn-softmax, binary, binary-kd, lowbit2-ste, lowbit2-ewgs")
    ap.add_argument("--graphs", default="rows", help="comma list of train_graph modes to time: full, rows")
    ap.add_argument("--skip-spmm", action="store_true")
    args = ap.parse_args()
    if args.threads:
        set_threads(args.threads)
    data = Path(args.data)
    if not (data / "gowalla" / "train.txt").exists():
        print(f"gowalla not found under {data}; nothing to benchmark")
        return
    print(f"# bench_gcn: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} "
          f"(> {os.cpu_count()} means other processes share the cores: figures are then inflated)\n")
    t = time.perf_counter()
    u, i, nu, ni, train = load_gowalla(data)
    print(f"gowalla train: {nu:,} users, {ni:,} items, {len(u):,} pairs (read in {time.perf_counter() - t:.1f} s)\n")
    A = bench_adjacency(u, i, nu, ni)
    if not args.skip_spmm:
        bench_spmm(A)
    split_ = lambda s: [m.strip() for m in s.split(",") if m.strip()]  # noqa: E731
    bench_epochs(u, i, nu, ni, train, split_(args.models), split_(args.graphs), args.batch, args.batches)


if __name__ == "__main__":
    main()
