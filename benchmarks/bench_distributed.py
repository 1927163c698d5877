"""Data-parallel training: ``torchrun --nproc_per_node 1`` against ``2``, GMF on ML-1M, Adam and row-wise AdaGrad.

Each configuration is one ``torchrun --standalone`` launch of this file in ``--worker`` mode (1 torch thread per
process). Every rank loads ML-1M (5-core, leave-one-out), builds GMF and its optimizer exactly as ``qrec train``
does (``qrec.train.distributed``: broadcast, shards of each global batch, gradients exchanged per step), then trains
``--batches`` global batches per round, ``--rounds`` rounds (median) after a warm-up round; the epoch's sampling
happens before the clock, and the clock runs from a barrier to a barrier (rank 0's). Columns: global training rows
per second (pointwise rows: positives and their sampled negatives, the whole batch over all ranks), the ratio to
one process, rank 0's share of the training time spent in the gradient exchange (waiting for the other ranks
included), and the payload one rank puts into the gradient collectives per step (all-reduced dense gradients,
all-gathered sparse rows + values + row counts; 0 for one process).

    PYTHONPATH=src:benchmarks nice -n 19 python benchmarks/bench_distributed.py --rounds 3 --batches 200

The launches are interleaved (1 then 2 processes per optimizer, ``--repeats`` times) so both see the same drift of a
shared machine; each cell is the median over all its rounds. Each launch is appended to ``--out`` (JSON lines) as
it ends: a rerun with the same ``--out`` and settings resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


CONFIG = ("dataset", "optimizer", "lr", "procs", "repeat", "dim", "batch_size", "batches", "rounds")


def _counted(batches, seen: list[int]):
    """``batches`` unchanged, their global rows added to ``seen[0]`` (before the ranks cut them)."""
    for batch in batches:
        seen[0] += len(batch["users"])
        yield batch


def _timed(exchange, seconds: list[float]):
    """``exchange`` with its wall time added to ``seconds[0]``."""
    def timed(params) -> None:
        t0 = time.perf_counter()
        exchange(params)
        seconds[0] += time.perf_counter() - t0
    return timed


def worker(a) -> None:
    """One rank: the trainer's data-parallel path, timed; rank 0 prints one JSON line."""
    import torch.distributed as dist

    from qrec.train.config import RunConfig
    from qrec.train.distributed import finish, from_env
    from qrec.train.pipeline import load_split
    from qrec.train.tasks import make_task
    from qrec.train.trainer import _epoch_batches, _train_epoch, build, make_optimizer

    cfg = RunConfig(dataset=a.dataset, min_count=5, model="gmf", dim=a.dim, batch_size=a.batch_size, epochs=1,
                    optimizer=a.optimizer, lr=a.lr, threads=1)
    torch.set_num_threads(1)
    parallel = from_env(cfg)
    split = load_split(cfg)
    model = build(cfg, split)
    optimizer = make_optimizer(model, cfg)
    waited = [0.0]  # seconds in the gradient exchange, waiting for the other ranks included
    if parallel is not None:
        parallel.broadcast_parameters(model)
        optimizer = parallel.wrap(optimizer)
        parallel.all_reduce_gradients = _timed(parallel.all_reduce_gradients, waited)
    task = make_task(cfg, split)
    seconds, rows, exchange, steps, sent = [], [], [], 0, 0
    for r in range(a.rounds + 1):  # round 0 warms up
        stream = iter(_epoch_batches(model, task, cfg, r))
        first = next(stream)  # sampling the epoch happens here, before the clock
        seen = [0]
        batches = _counted(itertools.islice(itertools.chain([first], stream), a.batches), seen)
        if parallel is not None:
            batches = parallel.shard(batches, r)
            dist.barrier()
            sent = parallel.sent_bytes
        waited[0] = 0.0
        t0 = time.perf_counter()
        _train_epoch(model, optimizer, batches, cfg, r, progress=False, loss_fn=task.loss)
        if parallel is not None:
            dist.barrier()
        if r:
            seconds.append(time.perf_counter() - t0)
            rows.append(seen[0])
            exchange.append(waited[0] / seconds[-1])
            steps = a.batches
    if parallel is None or parallel.writes:
        per_step = (parallel.sent_bytes - sent) / steps if parallel is not None else 0
        print(json.dumps({"rows_per_s": [n / s for n, s in zip(rows, seconds)], "exchange": exchange,
                          "sent_per_step": per_step}), flush=True)
    finish()


def launch(a, nproc: int, optimizer: str) -> dict:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", str(nproc), __file__, "--worker", "--optimizer", optimizer,
           "--lr", str(a.lr_of[optimizer]), "--dataset", a.dataset, "--dim", str(a.dim), "--batch-size",
           str(a.batch_size), "--batches", str(a.batches), "--rounds", str(a.rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-1m-seq")
    ap.add_argument("--optimizers", nargs="+", default=["adam", "rowwise-adagrad"])
    ap.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--lr-adam", type=float, default=1e-3)
    ap.add_argument("--lr-rowwise", type=float, default=0.05)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=200, help="global batches per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per launch (median), after a warm-up round")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved launches per configuration")
    ap.add_argument("--out", type=Path, default=Path("bench_distributed.jsonl"),
                    help="JSON lines, one per launch; launches already there are not rerun (default: %(default)s)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--optimizer", help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    from mdtable import table
    from resume import append, key, written

    a.lr_of = {"adam": a.lr_adam, "rowwise-adagrad": a.lr_rowwise}
    load = os.getloadavg()
    print(f"\nGMF d = {a.dim} on {a.dataset} (5-core, leave-one-out), global batch {a.batch_size}, 1 thread per "
          f"process, {a.batches} batches x {a.rounds} rounds x {a.repeats} launch(es) (median), torch "
          f"{torch.__version__}; load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
          f"{os.cpu_count()} cores\n", flush=True)
    rates = {k: [] for k in itertools.product(a.optimizers, a.procs)}
    shares = {k: [] for k in rates}
    sent, done = {}, written(a.out, CONFIG)
    for repeat, opt, nproc in itertools.product(range(a.repeats), a.optimizers, a.procs):
        config = {"dataset": a.dataset, "optimizer": opt, "lr": a.lr_of[opt], "procs": nproc, "repeat": repeat,
                  "dim": a.dim, "batch_size": a.batch_size, "batches": a.batches, "rounds": a.rounds}
        r = done.get(key(config, CONFIG))
        if r is None:
            r = {**config, **launch(a, nproc, opt), "load_avg": os.getloadavg(),
                 "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            append(a.out, r)
        rates[opt, nproc] += r["rows_per_s"]
        shares[opt, nproc] += r["exchange"]
        sent[opt, nproc] = r["sent_per_step"]
        print(f"  {opt} x {nproc}: {statistics.median(r['rows_per_s']):,.0f} rows/s", file=sys.stderr, flush=True)
    rows = []
    for opt, nproc in rates:
        rate, base = statistics.median(rates[opt, nproc]), statistics.median(rates[opt, a.procs[0]])
        exchange = f"{statistics.median(shares[opt, nproc]):.0%}" if shares[opt, nproc] else "-"
        rows.append([opt, nproc, f"{rate:,.0f}", f"{rate / base:.2f}", exchange, f"{sent[opt, nproc] / 1024:,.1f}"])
    table(rows, ["optimizer", "processes", "train rows/s", f"x {a.procs[0]} process", "time in the exchange",
                 "KiB sent per rank per step"])
    load = os.getloadavg()
    print(f"load average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()
