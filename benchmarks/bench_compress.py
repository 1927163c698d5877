"""Training-step cost of every embedding table, relative to the full table, and the nearest-centroid kernels.

    .venv/bin/python benchmarks/bench_compress.py [--n 6040] [--batch 1024] [--device cpu|cuda] [--threads 1]

Part 1: forward + backward of a batch of ``--batch`` random ids (a new batch each step, cycled from a pool;
loss = mean(out^2) + aux_loss), per table; each entry is the median over 5 repeats of the mean over ``--iters`` steps, and the ratio is against
``full`` measured in the same run. Part 2: the sorted, exhaustive and matmul nearest-centroid kernels on
batches of random queries (cycled from a pool). Timings only; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from qrec.threads import set_threads

from qrec.compress import build_table
from qrec.compress.nearest import nearest_codes

#: inputs cycled through, never one batch again and again: the CPU's branch predictor learns a repeated
#: batch's comparisons, which hid a mispredicting search loop (sorted kernel 4x faster on a repeated batch)
POOL = 32

SPECS = [
    "full",
    "lr48",
    "sq8",
    "sq8-ptq",
    "dpq64x256",
    "dpq16x256",
    "dpq8x16c",
    "dpq64x256-bn",
    "dpq16x16c-sx",
    "mgqe64x256/64@0.1",
    "mgqe-uk64x256/64@0.1",
    "mgqe-ud64/32x256@0.1",
    "mgqe64x256/64/16@0.1/0.3",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn, device: torch.device, iters: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - start) / iters)
    return statistics.median(samples)


def table_step(spec: str, n: int, d: int, batch: int, device: torch.device):
    torch.manual_seed(0)
    counts = np.random.default_rng(0).zipf(1.3, n)
    table = build_table(spec, n, d, frequencies=counts).to(device).train()
    pool = torch.randint(0, n, (POOL, batch), device=device)
    turn = iter(range(1 << 62))

    def step():
        loss = table(pool[next(turn) % POOL]).square().mean() + table.aux_loss()
        table.zero_grad(set_to_none=True)
        loss.backward()

    return step


def kernel_call(kernel: str, D: int, K: int, d: int, batch: int, device: torch.device):
    gen = torch.Generator(device="cpu").manual_seed(0)
    pool = (torch.randn(POOL, batch, D, d // D, generator=gen) * 0.01).to(device)
    centroids = (torch.randn(D, K, d // D, generator=gen) * 0.01).to(device)
    turn = iter(range(1 << 62))
    return lambda: nearest_codes(pool[next(turn) % POOL], centroids, kernel=kernel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=6040, help="rows per table (ML-1M users: 6040)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--iters", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--specs", nargs="*", default=SPECS)
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)

    print(f"# forward + backward, B = {args.batch} ids, n = {args.n}, d = {args.dim}, {device}, "
          f"{args.threads} thread(s); median of 5 x {args.iters} steps\n")
    print(f"| {'table':26s} | {'ms / batch':>10s} | {'x full':>7s} |")
    print(f"|{'-' * 28}|{'-' * 12}:|{'-' * 8}:|")
    base = None
    for spec in args.specs:
        seconds = time_it(table_step(spec, args.n, args.dim, args.batch, device), device, args.iters)
        base = base or seconds
        print(f"| {spec:26s} | {1e3 * seconds:10.3f} | {seconds / base:7.2f} |", flush=True)

    print(f"\n# nearest centroid, B = {args.batch} rows, d = {args.dim}\n")
    print(f"| {'D x K (sub-dim)':22s} | {'kernel':7s} | {'ms':>8s} |")
    print(f"|{'-' * 24}|{'-' * 9}|{'-' * 9}:|")
    for D, K in ((64, 256), (64, 16), (32, 256), (8, 16)):
        kernels = ("sorted", "exhaustive", "matmul") if args.dim // D == 1 else ("exhaustive", "matmul")
        for kernel in kernels:
            seconds = time_it(kernel_call(kernel, D, K, args.dim, args.batch, device), device, args.iters)
            label = f"{D} x {K} ({args.dim // D})"
            print(f"| {label:22s} | {kernel:7s} | {1e3 * seconds:8.3f} |", flush=True)


if __name__ == "__main__":
    main()
