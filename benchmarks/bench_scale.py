"""The scale curve: GMF with full / DPQ / MGQE tables as the catalogue grows, on synthetic-powerlaw logs.

Per (items, table, optimizer), one subprocess (so its peak RSS is its own) generates
``synthetic-powerlaw:users=U,items=I,n=N`` (leave-one-out), builds GMF, trains ``--batches`` batches per round
(median of ``--rounds`` rounds after a warm-up round; the epoch's negatives are sampled before the clock starts),
times full-ranking evaluation (all items, seen items masked) of a ``--eval-users`` sample of the test users, writes
the served artifact (qrec.export: the model, id vocabularies and seen items), loads it as ``qrec serve`` does and
times ``recommend`` for one user per call (k = 10, seen items filtered; ``--requests`` calls). Columns: generation +
split seconds, training rows per second (pointwise rows: each positive and its 4 negatives), peak RSS, artifact
bytes, evaluation seconds, then, in a fresh process holding only the artifact: its load seconds, its peak RSS (the
server's memory) and the median / 99th-percentile latency of one recommend call. The first peak RSS is the
training process's (training, evaluation, export).

    python benchmarks/bench_scale.py --items 1e5 1e6 --users 1e5 --interactions 1e6 --rounds 3 --out scale.jsonl

Every measured row is appended to ``--out`` as one JSON line (its configuration, its measurements, the load average
and the time), as soon as it is measured: a rerun with the same ``--out`` skips the rows already there (same
configuration), so an interrupted curve resumes. ``benchmarks/plot_scale.py`` draws the log-log figure from it.

The row-wise optimizer (``--optimizers adam rowwise-adagrad``) is the point of the comparison: Adam updates every
row of every table each step (its cost grows with the catalogue), row-wise AdaGrad with sparse table gradients only
the rows a batch touches.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mdtable import table
from qrec.threads import set_threads
from resume import append, key, written


def _name(users: int, items: int, n: int, seed: int) -> str:
    return f"synthetic-powerlaw:users={users},items={items},n={n},zipf=1.1,seed={seed}"


def _sample_test(split, users: int, seed: int):
    """The split with its test part cut to ``users`` random test users (training and validation kept: masks)."""
    from dataclasses import replace

    test_users = np.unique(split.test.users)
    keep = np.random.default_rng(seed).choice(test_users, size=min(users, test_users.size), replace=False)
    return replace(split, test=split.test.subset(np.isin(split.test.users, keep)))


def _train_rounds(cfg, split, model, optimizer, batches: int, rounds: int) -> tuple[float, int]:
    from qrec.train.tasks import make_task
    from qrec.train.trainer import _epoch_batches, _train_epoch

    task = make_task(cfg, split)
    seconds, rows = [], 0
    for r in range(rounds + 1):  # round 0 warms up
        stream = iter(_epoch_batches(model, task, cfg, r))
        first = next(stream)  # sampling the epoch happens here, before the clock
        t0 = time.perf_counter()
        _, rows = _train_epoch(model, optimizer, itertools.islice(itertools.chain([first], stream), batches), cfg, r,
                               progress=False)
        if r:
            seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), rows


def measure(a, items: int, spec: str, optimizer: str) -> dict:
    from qrec.export.artifact import export_model, serving_data
    from qrec.models.evaluate import evaluate_model
    from qrec.train.config import RunConfig
    from qrec.train.pipeline import load_split
    from qrec.train.trainer import build, make_optimizer

    cfg = RunConfig(dataset=_name(a.users, items, a.interactions, a.seed), model="gmf", embedding=spec, dim=a.dim,
                    batch_size=a.batch_size, optimizer=optimizer, lr=a.lr.get(optimizer, 1e-3), epochs=1)
    t0 = time.perf_counter()
    split = load_split(cfg)
    generate_s = time.perf_counter() - t0
    model = build(cfg, split)
    train_s, rows = _train_rounds(cfg, split, model, make_optimizer(model, cfg), a.batches, a.rounds)
    sample = _sample_test(split, a.eval_users, a.seed)
    t0 = time.perf_counter()
    metrics = evaluate_model(model, sample, "test", (10,))
    eval_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        export_model(model, cfg.to_dict(), path, serving_data(split))
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # training, evaluation, export
        np.save(Path(tmp) / "users.npy", np.unique(sample.test.users))
        serving = _run_self(["--serve", tmp])  # its own process: the server's memory is its own peak RSS
        artifact = path.stat().st_size
    return {"generate_s": generate_s, "rows_per_s": rows / train_s, "peak_mib": peak_mib, "artifact_bytes": artifact,
            "eval_s": eval_s, "eval_users": metrics["users"], "hr@10": metrics["hr@10"], **serving}


def _run_self(extra: list[str]) -> dict:
    """This script with ``extra`` arguments in a fresh process; its last stdout line as JSON."""
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], *extra], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve(folder: Path, a) -> dict:
    """Load ``folder``'s artifact as ``qrec serve`` does and time ``recommend`` (k = 10, seen items filtered) for
    one user per call (``users.npy``: row indices): median and 99th-percentile latency over ``--requests`` calls
    (bounded by ``--serve-seconds``), and this process's peak RSS: what a server of the artifact holds."""
    from qrec.serving.model import Model

    t0 = time.perf_counter()
    served = Model.load(folder / "model.safetensors")
    load_s = time.perf_counter() - t0
    users = np.load(folder / "users.npy")
    ids = served.user_ids[np.random.default_rng(a.seed).choice(users, size=a.requests)]
    for user in ids[:3]:  # warm-up: first-call compilation and caches
        served.recommend(user, k=10)
    latencies, deadline = [], time.perf_counter() + a.serve_seconds
    for user in ids:
        t0 = time.perf_counter()
        served.recommend(user, k=10)
        latencies.append(time.perf_counter() - t0)
        if t0 > deadline:
            break
    ms = 1e3 * np.asarray(latencies)
    return {"load_s": load_s, "requests_timed": len(ms), "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "serve_peak_mib": _high_water_mib()}


def _high_water_mib() -> float:
    """This process's peak resident memory since its ``exec`` (``VmHWM``): ``ru_maxrss`` would carry over the
    peak of the process it was forked from (Linux keeps it across ``execve``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no procfs: an upper bound


CONFIG = ("items", "spec", "optimizer", "lr", "users", "interactions", "dim", "batch_size", "batches", "rounds",
          "eval_users", "requests", "seed", "threads")


def _config(a, items: int, spec: str, optimizer: str) -> dict:
    """What a row measured: the key under which ``--out`` remembers it."""
    return {"items": items, "spec": spec, "optimizer": optimizer, "lr": a.lr.get(optimizer, 1e-3),
            **{k: getattr(a, k) for k in CONFIG[4:]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", nargs="+", type=float, default=[1e5, 1e6])
    ap.add_argument("--users", type=float, default=1e5)
    ap.add_argument("--interactions", type=float, default=1e6)
    ap.add_argument("--specs", nargs="+", default=["full", "dpq64x256", "mgqe64x256/64@0.1"])
    ap.add_argument("--optimizers", nargs="+", default=["adam", "rowwise-adagrad"])
    ap.add_argument("--lr-adam", type=float, default=1e-3)
    ap.add_argument("--lr-rowwise", type=float, default=0.05)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=100, help="training batches per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (median), after one warm-up round")
    ap.add_argument("--eval-users", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200, help="single-user recommend calls timed on the artifact")
    ap.add_argument("--serve-seconds", type=float, default=60.0, help="stop timing requests after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench_scale.jsonl"),
                    help="JSON lines, one per measured row; rows already there are not rerun (default: %(default)s)")
    ap.add_argument("--one", nargs=3, metavar=("ITEMS", "SPEC", "OPTIMIZER"), help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.users, a.interactions = int(a.users), int(a.interactions)
    a.lr = {"adam": a.lr_adam, "rowwise-adagrad": a.lr_rowwise}
    set_threads(a.threads)
    if a.serve:
        print(json.dumps(serve(a.serve, a)))
        return
    if a.one:
        print(json.dumps(measure(a, int(float(a.one[0])), a.one[1], a.one[2])))
        return
    print(f"\nGMF d = {a.dim} on {_name(a.users, 0, a.interactions, a.seed).replace('items=0,', 'items=I,')} "
          f"(leave-one-out), batch {a.batch_size}, {a.threads} thread(s), {a.batches} batches x {a.rounds} rounds "
          f"(median), eval: {a.eval_users} test users x all items; torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n", flush=True)
    rows, done = [], written(a.out, CONFIG)
    for items, spec, opt in itertools.product(a.items, a.specs, a.optimizers):
        config = _config(a, int(items), spec, opt)
        r = done.get(key(config, CONFIG))
        if r is None:
            try:
                measured = _run_self(["--one", str(items), spec, opt])
            except RuntimeError as e:
                print(e, file=sys.stderr)
                rows.append([f"{int(items):,}", f"`{spec}`", opt, "failed", *[""] * 8])
                continue
            r = {**config, **measured, "load_avg": os.getloadavg()[0], "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            append(a.out, r)
        rows.append([f"{int(items):,}", f"`{spec}`", opt, f"{r['generate_s']:.1f}", f"{r['rows_per_s']:,.0f}",
                     f"{r['peak_mib']:,.0f}", f"{r['artifact_bytes'] / 2**20:,.1f}", f"{r['eval_s']:.1f}",
                     f"{r['hr@10']:.3f}", f"{r['load_s']:.2f}", f"{r['serve_peak_mib']:,.0f}",
                     f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ({r['requests_timed']})"])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    table(rows, ["items", "item table", "optimizer", "generate+split s", "train rows/s", "peak RSS MiB",
                 "artifact MiB", f"eval s ({a.eval_users} users)", "HR@10 after the timed batches",
                 "artifact load s", "server peak RSS MiB", "recommend p50 / p99 ms (calls)"])


if __name__ == "__main__":
    main()
