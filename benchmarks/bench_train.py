"""Training throughput, peak memory and full-ranking evaluation time on ML-1M (5-core, leave-one-out).

Each (model, embedding) runs in its own subprocess so that peak RSS is that configuration's alone.
Prints a markdown table; epoch times are medians over --repeats epochs after one warm-up epoch, and a
ratio column against full embeddings of the same backbone measured in the same invocation.

    python benchmarks/bench_train.py --models gmf neumf --specs full lr48 sq8 dpq64x256 mgqe64x256/64@0.1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def one(model_name: str, spec: str, epochs: int, batch_size: int, threads: int, dataset: str, max_batches: int | None) -> dict:
    from qrec.data.sampling import NegativeSampler
    from qrec.eval.evaluate import evaluate_model
    from qrec.train.config import RunConfig
    from qrec.train.pipeline import load_split
    from qrec.train.trainer import _epoch_batches, _train_epoch, build, make_optimizer

    torch.set_num_threads(threads)
    cfg = RunConfig(dataset=dataset, min_count=5, model=model_name, embedding=spec, batch_size=batch_size, epochs=epochs)
    split = load_split(cfg)
    model = build(cfg, split)
    opt = make_optimizer(model, cfg)
    sampler = NegativeSampler(split.train, seed=0)
    times, rows = [], 0
    for epoch in range(epochs + 1):  # epoch 0 is the warm-up
        batches = _epoch_batches(model, split, sampler, cfg, epoch)
        if max_batches:
            batches = (b for k, b in zip(range(max_batches), batches))
        t0 = time.perf_counter()
        _, rows = _train_epoch(model, opt, batches, cfg, epoch, progress=False)
        if epoch:
            times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    evaluate_model(model, split, "test", (10,))
    eval_s = time.perf_counter() - t0
    return {"model": model_name, "spec": spec, "epoch_s": float(np.median(times)), "rows": rows,
            "rows_per_s": rows / float(np.median(times)), "eval_s": eval_s, "users": split.n_users,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["gmf", "neumf"])
    ap.add_argument("--specs", nargs="+", default=["full"])
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (median), after one warm-up")
    ap.add_argument("--max-batches", type=int, help="time only this many batches per epoch")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dataset", default="ml-1m-seq")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "SPEC"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(*a.one, a.epochs, a.batch_size, a.threads, a.dataset, a.max_batches)))
        return
    rows = []
    for m in a.models:
        for s in a.specs:
            cmd = [sys.executable, __file__, "--one", m, s, "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
                   "--threads", str(a.threads), "--dataset", a.dataset] + (["--max-batches", str(a.max_batches)] if a.max_batches else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  done {m} {s}", file=sys.stderr)
    import platform

    print(f"\nML-1M 5-core, batch {a.batch_size}, {a.threads} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}\n")
    print("| model | embedding | epoch s (median) | x full | train rows/s | peak RSS MiB | eval all users s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["spec"] == "full") if any(
            x["model"] == r["model"] and x["spec"] == "full" for x in rows) else r
        print(f"| {r['model']} | `{r['spec']}` | {r['epoch_s']:.2f} | {r['epoch_s'] / base['epoch_s']:.2f} | {r['rows_per_s']:,.0f} |"
              f" {r['peak_rss_mib']:.0f} | {r['eval_s']:.2f} |")


if __name__ == "__main__":
    main()
