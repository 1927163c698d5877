"""Training throughput, peak memory and full-ranking evaluation time on ML-1M (5-core, leave-one-out).

Per backbone, one process builds every embedding and times them *interleaved*: each round trains every
configuration for ``--max-batches`` batches, in turn; the table reports the median over ``--rounds`` rounds
(after one warm-up round) and the ratio to full embeddings. Interleaving matters on a shared machine: the
same configuration timed in separate processes moved by up to 40% between processes, while within a process
every configuration sees the same drift. Peak RSS and evaluation time come from one short subprocess per
configuration (so each RSS is that configuration's alone).

    python benchmarks/bench_train.py --models gmf neumf --specs full lr48 sq8 dpq64x256 mgqe64x256/64@0.1 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from qrec.threads import set_threads


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _setup(model_name: str, spec: str, batch_size: int, dataset: str, device: str = "cpu"):
    from qrec.train.config import RunConfig
    from qrec.train.pipeline import load_split
    from qrec.train.tasks import RankingTask
    from qrec.train.trainer import build, make_optimizer

    cfg = RunConfig(dataset=dataset, min_count=5, model=model_name, embedding=spec, batch_size=batch_size, epochs=1,
                    device=device)
    split = load_split(cfg)
    model = build(cfg, split)
    return cfg, split, model, make_optimizer(model, cfg), RankingTask(cfg, split)


def _train(setup, batches: int, epoch: int) -> tuple[float, int]:
    """Seconds and positive rows for the first ``batches`` batches of an epoch. The epoch's negatives are sampled
    before the clock starts (the same work for every embedding, once per epoch)."""
    from qrec.train.trainer import _epoch_batches, _train_epoch

    cfg, split, model, opt, task = setup
    stream = _epoch_batches(model, task, cfg, epoch)
    first = next(stream)  # the generator samples the whole epoch on its first step
    stream = itertools.islice(itertools.chain([first], stream), batches)
    _sync(cfg.device)
    t0 = time.perf_counter()
    _, rows = _train_epoch(model, opt, stream, cfg, epoch, progress=False)
    _sync(cfg.device)
    return time.perf_counter() - t0, rows


def interleaved(model_name: str, specs: list[str], rounds: int, batches: int, batch_size: int, dataset: str,
                device: str = "cpu") -> dict:
    setups = {s: _setup(model_name, s, batch_size, dataset, device) for s in specs}
    seconds = {s: [] for s in specs}
    rows = {}
    for r in range(rounds + 1):  # round 0 warms up (numba compiles, allocator settles)
        for s in specs:
            t, rows[s] = _train(setups[s], batches, r)
            print(f"  {model_name} {s} round {r}: {t:.2f}s", file=sys.stderr, flush=True)
            if r:
                seconds[s].append(t)
    return {s: {"s": float(np.median(v)), "rows": rows[s]} for s, v in seconds.items()}


def footprint(model_name: str, spec: str, batch_size: int, dataset: str, device: str = "cpu") -> dict:
    """Peak memory after 50 training batches (RSS; on CUDA the allocator's peak), and full-ranking evaluation
    of all test users (own process)."""
    from qrec.models.evaluate import evaluate_model

    setup = _setup(model_name, spec, batch_size, dataset, device)
    _train(setup, 50, 0)
    _sync(device)
    t0 = time.perf_counter()
    evaluate_model(setup[2], setup[1], "test", (10,))
    _sync(device)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"eval_s": time.perf_counter() - t0, "peak_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["gmf", "neumf"])
    ap.add_argument("--specs", nargs="+", default=["full"])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (median), after one warm-up round")
    ap.add_argument("--max-batches", type=int, default=300, help="batches per configuration per round")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dataset", default="ml-1m-seq")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (peak memory is then the CUDA allocator's)")
    ap.add_argument("--footprint", nargs=2, metavar=("MODEL", "SPEC"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    set_threads(a.threads)
    if a.footprint:
        print(json.dumps(footprint(*a.footprint, a.batch_size, a.dataset, a.device)))
        return
    specs = ["full"] + [s for s in a.specs if s != "full"]
    unit = f"{a.max_batches} batches"
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or platform.machine()
    print(f"\nML-1M 5-core, batch {a.batch_size}, {a.threads} thread(s), {unit} per configuration x {a.rounds} "
          f"rounds interleaved (sampling excluded), torch {torch.__version__}, {a.device}: {where}\n")
    peak = "peak CUDA MiB" if a.device.startswith("cuda") else "peak RSS MiB"
    print(f"| model | embedding | s / {unit} (median) | x full | train rows/s | {peak} | eval all users s |")
    print("|---|---|---|---|---|---|---|")
    for m in a.models:
        times = interleaved(m, specs, a.rounds, a.max_batches, a.batch_size, a.dataset, a.device)
        for s in specs:
            cmd = [sys.executable, __file__, "--footprint", m, s, "--batch-size", str(a.batch_size),
                   "--threads", str(a.threads), "--dataset", a.dataset, "--device", a.device]
            fp = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            t = times[s]
            print(f"| {m} | `{s}` | {t['s']:.2f} | {t['s'] / times['full']['s']:.2f} | {t['rows'] / t['s']:,.0f} |"
                  f" {fp['peak_mib']:.0f} | {fp['eval_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
