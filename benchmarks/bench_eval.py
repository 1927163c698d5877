"""Throughput of full-ranking evaluation on random problems the size of ML-1M and Gowalla.

    .venv/bin/python benchmarks/bench_eval.py [--repeats 5] [--dim 64] [--ks 10 20]
    .venv/bin/python benchmarks/bench_eval.py --neumf-chunks 64 16 8 [--repeats 5]


Each configuration evaluates *all* users (scores from a random dim-64 dot-product model,
training items masked) once to warm up, then ``--repeats`` times; the table reports the median
wall time and users per second. ``score share`` is the fraction of that time spent inside the
scoring function itself, so ``1 - share`` is the evaluator's own cost (masking, top-k, metrics).
Torch uses as many threads as its environment says (``OMP_NUM_THREADS``, ``torch.get_num_threads``).

``--neumf-chunks`` times instead NeuMF's all-item scoring (``NeuMF.score_all``, the MLP over every
user-item pair: the cost of evaluating a NeuMF on ML-1M) for all 6,040 x 3,416 pairs at each user chunk,
the configurations interleaved round by round, and checks that every chunk gives the same scores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from qrec.eval import evaluate_full_ranking


@dataclass(frozen=True)
class Problem:
    name: str
    n_users: int
    n_items: int
    train_density: float  # of the exclusion (training) matrix
    test_per_user: float  # mean |T_u|; 1 means leave-one-out


PROBLEMS = (
    Problem("ML-1M-like", 6040, 3416, 0.040, 1),
    Problem("ML-1M-like", 6040, 3416, 0.040, 10),
    Problem("Gowalla-like", 29858, 40981, 0.00066, 1),
    Problem("Gowalla-like", 29858, 40981, 0.00066, 7),
)
BATCH_SIZES = (512, 2048)


def random_pairs(rng, n_users: int, n_items: int, per_user: float) -> sp.csr_matrix:
    """A 0/1 user x item matrix with about ``per_user`` items per user (at least one)."""
    counts = np.maximum(rng.poisson(per_user, n_users), 1) if per_user > 1 else np.ones(n_users, int)
    rows = np.repeat(np.arange(n_users), counts)
    cols = rng.integers(0, n_items, rows.size)
    m = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def build(problem: Problem, seed: int = 0):
    """Random train (exclusion) and disjoint test matrices, plus a dot-product scorer."""
    rng = np.random.default_rng(seed)
    train = random_pairs(rng, problem.n_users, problem.n_items, problem.train_density * problem.n_items)
    test = random_pairs(rng, problem.n_users, problem.n_items, problem.test_per_user)
    test = test - test.multiply(train)  # a leak-free split: no test item is also a training item
    test.eliminate_zeros()
    return train, sp.csr_matrix(test)


def make_scorer(problem: Problem, dim: int, timer: list[float]):
    """Dot-product scores from random float32 embeddings; adds its own run time to ``timer``."""
    gen = torch.Generator().manual_seed(0)
    user_emb = torch.randn(problem.n_users, dim, generator=gen)
    item_emb = torch.randn(problem.n_items, dim, generator=gen)

    def score_fn(users: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        scores = user_emb[users] @ item_emb.T
        timer[0] += time.perf_counter() - start
        return scores

    return score_fn


def bench(problem: Problem, batch_size: int, repeats: int, dim: int, ks) -> dict:
    train, test = build(problem)
    timer = [0.0]
    score_fn = make_scorer(problem, dim, timer)
    users = np.arange(problem.n_users)

    def run():
        return evaluate_full_ranking(score_fn, users, test, train, ks=ks, batch_size=batch_size)

    run()  # warm-up: allocator, thread pool, first-touch of the embeddings
    times, shares = [], []
    for _ in range(repeats):
        timer[0] = 0.0
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        shares.append(timer[0] / times[-1])
    median = statistics.median(times)
    return {
        "problem": f"{problem.name} {problem.n_users}x{problem.n_items}",
        "test/user": f"{test.nnz / result['users']:.1f}",
        "train nnz": f"{train.nnz:,}",
        "batch": batch_size,
        "median s": f"{median:.3f}",
        "users/s": f"{result['users'] / median:,.0f}",
        "score share": f"{statistics.median(shares):.0%}",
    }


COLUMNS = {  # header -> width; rows are printed as they finish, so widths are fixed up front
    "problem": 26, "test/user": 9, "train nnz": 10, "batch": 5,
    "median s": 8, "users/s": 8, "score share": 11,
}


def print_row(row: dict) -> None:
    print(" | ".join(str(row[c]).rjust(w) for c, w in COLUMNS.items()), flush=True)


def bench_neumf_chunks(chunks: list[int], repeats: int, dim: int) -> None:
    from qrec.compress.full import FullEmbedding
    from qrec.models.neumf import NeuMF

    torch.manual_seed(0)
    n_users, n_items = 6040, 3416
    model = NeuMF(*(FullEmbedding(n, dim, init_std=0.1) for n in (n_users, n_items, n_users, n_items)))
    users = torch.arange(n_users)
    reference = model.score_all(users, chunk=chunks[0])  # also the warm-up
    times = {c: [] for c in chunks}
    for _ in range(repeats):  # interleaved: a slow spell of a shared machine hits every chunk alike
        for chunk in chunks:
            start = time.perf_counter()
            model.score_all(users, chunk=chunk)
            times[chunk].append(time.perf_counter() - start)
    print(f"NeuMF score_all, {n_users:,} users x {n_items:,} items, d = {dim}, median of {repeats}\n")
    print("| user chunk | s (all users) | x first | max abs diff vs first |\n|---|---|---|---|")
    base = statistics.median(times[chunks[0]])
    for chunk in chunks:
        gap = (model.score_all(users, chunk=chunk) - reference).abs().max().item()
        median = statistics.median(times[chunk])
        print(f"| {chunk} | {median:.2f} | {base / median:.2f} | {gap:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--neumf-chunks", type=int, nargs="+", help="time NeuMF's all-item scoring instead")
    args = parser.parse_args()
    if args.neumf_chunks:
        return bench_neumf_chunks(args.neumf_chunks, args.repeats, args.dim)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dim {args.dim}, ks {args.ks}, "
          f"median of {args.repeats} after 1 warm-up\n")
    print(" | ".join(c.rjust(w) for c, w in COLUMNS.items()))
    print("-|-".join("-" * w for w in COLUMNS.values()))
    for problem in PROBLEMS:
        for batch_size in BATCH_SIZES:
            print_row(bench(problem, batch_size, args.repeats, args.dim, args.ks))


if __name__ == "__main__":
    main()
