"""LightGCN and the 1-bit GCNs at the graph sizes where peers fail, on synthetic-powerlaw logs (qrec issue 18).

Shapes (``--cases SHAPE/MODEL/REORDER/STEPS``, one subprocess per case so its peak RSS is its own):

* ``1804``: recommenders-team/recommenders #1804, 2M users, 50k items, 7M interactions (their LightGCN: GPU out
  of memory, 2 h per epoch on CPU);
* ``15``: LightGCN-PyTorch #15, 1M users, 300k items, 42M interactions (killed past 240 GiB of RAM);
* ``small``: 200k users, 5k items, 700k interactions: the smoke test (the default); ``tiny`` (2k users): the
  test suite's.

MODEL is ``lightgcn``, ``binary-gcn`` or ``lowbit-gcn-b1`` (``lowbit-gcn`` with ``bits=1``); REORDER ``none`` or
``rcm``; STEPS ``epoch`` (a full epoch, timed) or a number of training steps (0: build only). Each case runs the
trainer's own path: ``load_split`` (protocol ``all``: every interaction trains), ``build``, ``make_optimizer``
(Adam), the ranking task's ``bpr_epoch`` (``_epoch_batches``: shuffle + one uniform negative per pair for the
whole epoch, timed as "sampling") and ``_train_epoch``. A step's wall and CPU seconds are read between the batches the
loop pulls; the loss of every step is recorded. Columns: generation s, build s (A_hat, RCM when asked, the
tables) and how much the build raised the peak RSS, RCM s, sampling s, s per step (median wall; CPU s of the
process beside it, all threads), steps per epoch, epoch minutes (measured for STEPS = epoch: sampling + all
steps; else ``sampling + median x steps``, marked ~), first -> last loss, peak RSS GiB, load average at the
case's start.

    python benchmarks/bench_gcn_scale.py                                   # the small smoke test
    python benchmarks/bench_gcn_scale.py --cases 1804/lightgcn/none/epoch 1804/binary-gcn/none/10 \\
        15/lightgcn/none/12

A large batch is the lever (every step propagates the whole graph, whatever the batch size): ``--batch-size``
65,536 with ``--lr`` scaled with it. LightGCN's estimator is unchanged: the loss is a mean over the batch, so a
larger batch estimates the same expected loss with less variance, in fewer propagations per epoch.
A parent watchdog kills a case whose RSS passes ``--max-rss-gib`` (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from qrec.threads import set_threads

from mdtable import table

SHAPES = {"tiny": (2_000, 200, 10_000), "small": (200_000, 5_000, 700_000), "1804": (2_000_000, 50_000, 7_000_000),
          "15": (1_000_000, 300_000, 42_000_000)}
MODELS = {"lightgcn": ("lightgcn", {}), "binary-gcn": ("binary-gcn", {}), "lowbit-gcn-b1": ("lowbit-gcn", {"bits": 1})}


def _dataset(shape: str, seed: int) -> str:
    users, items, n = SHAPES[shape]
    return f"synthetic-powerlaw:users={users},items={items},n={n},zipf=1.1,seed={seed}"


class _Clock:
    """Wraps the epoch's batches: the wall and CPU time at every pull, so step k lasts ``t[k+1] - t[k]``."""

    def __init__(self, batches, steps: int | None):
        self.batches, self.steps, self.wall, self.cpu = batches, steps, [], []

    def tick(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def __iter__(self):
        for k, batch in enumerate(self.batches):
            if self.steps is not None and k >= self.steps:
                break
            self.tick()
            yield batch

    def __len__(self) -> int:
        return len(self.batches) if self.steps is None else min(self.steps, len(self.batches))


def _timed_node_order():
    """Times the RCM reordering inside the model build (the constructor looks ``node_order`` up at call time)."""
    import qrec.models.lightgcn as lg

    spent, inner = [0.0], lg.node_order

    def node_order(A, reorder):
        t0 = time.perf_counter()
        try:
            return inner(A, reorder)
        finally:
            spent[0] += time.perf_counter() - t0

    lg.node_order = node_order
    return spent


def measure(a, case: str) -> dict:
    from qrec.train.config import RunConfig
    from qrec.train.pipeline import load_split
    from qrec.train.tasks import make_task
    from qrec.train.trainer import _epoch_batches, _train_epoch, build, make_optimizer

    shape, model_name, reorder, steps = case.split("/")
    name, options = MODELS[model_name]
    load = os.getloadavg()[0]
    cfg = RunConfig(dataset=_dataset(shape, a.seed), model=name, protocol="all", dim=a.dim, batch_size=a.batch_size,
                    lr=a.lr, epochs=1, threads=a.threads, model_options={**options, "reorder": reorder})
    t0 = time.perf_counter()
    split = load_split(cfg)
    generate_s = time.perf_counter() - t0
    rcm = _timed_node_order()
    t0, peak0 = time.perf_counter(), _peak_gib()
    model = build(cfg, split)
    build_s, build_gib = time.perf_counter() - t0, _peak_gib() - peak0
    optimizer, task = make_optimizer(model, cfg), make_task(cfg, split)
    t0 = time.perf_counter()
    batches = _epoch_batches(model, task, cfg, 0)
    sampling_s = time.perf_counter() - t0
    clock, losses = _Clock(batches, None if steps == "epoch" else int(steps)), []

    def loss_fn(m, batch):
        loss = task.loss(m, batch)
        losses.append(float(loss.detach()))
        into = time.perf_counter() - clock.wall[-1]  # progress of long cases
        print(f"{case} step {len(losses)}/{len(clock)}: loss {losses[-1]:.4f}, {into:.1f} s into it, load "
              f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        return loss

    _train_epoch(model, optimizer, clock, cfg, 0, progress=False, loss_fn=loss_fn)
    clock.tick()
    wall = [b - t for t, b in zip(clock.wall, clock.wall[1:])]
    cpu = [b - t for t, b in zip(clock.cpu, clock.cpu[1:])]
    timed = wall[1:] or wall or [float("nan")]  # the first step warms up (allocations, lazy device moves)
    return {"generate_s": generate_s, "build_s": build_s, "build_gib": build_gib, "rcm_s": rcm[0],
            "sampling_s": sampling_s, "step_s": statistics.median(timed),
            "cpu_step_s": statistics.median(cpu[1:] or cpu or [float("nan")]),
            "steps_per_epoch": len(batches), "measured_steps": len(wall), "train_s": sum(wall),
            "epoch_measured": steps == "epoch", "losses": losses, "nnz": int(model.adjacency._nnz()),
            "peak_gib": _peak_gib(), "load": load}


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _rss_gib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 2**20
    except (OSError, StopIteration):
        return 0.0


def run_case(a, case: str) -> dict | str:
    """The case in its own process (its progress and errors go to this stderr); ``"killed at N GiB"`` when the
    watchdog stops it."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--one", case]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if _rss_gib(proc.pid) > a.max_rss_gib:
            proc.kill()
            proc.wait()
            return f"killed at > {a.max_rss_gib} GiB"
        time.sleep(0.5)
    out, _ = proc.communicate()
    if proc.returncode:
        return f"failed (exit {proc.returncode}, see stderr)"
    return json.loads(out.strip().splitlines()[-1])


def _row(case: str, r: dict | str) -> list:
    shape, model, reorder, _ = case.split("/")
    users, items, n = SHAPES[shape]
    head = [f"#{shape}" if shape.isdigit() else shape, f"{users:,} x {items:,}, {n:,}", model, reorder]
    if isinstance(r, str):
        return head + [r] + [""] * 9
    if r["epoch_measured"]:
        epoch = f"{(r['sampling_s'] + r['train_s']) / 60:.1f}"
    else:
        epoch = f"~{(r['sampling_s'] + r['step_s'] * r['steps_per_epoch']) / 60:.1f}"
    L = r["losses"] or [float("nan")]
    return head + [f"{r['generate_s']:.0f}", f"{r['build_s']:.1f} (+{r.get('build_gib', 0):.1f})",
                   f"{r['rcm_s']:.1f}" if reorder != "none" else "-",
                   f"{r['sampling_s']:.1f}", f"{r['step_s']:.2f} ({r['cpu_step_s']:.2f})",
                   f"{r['measured_steps']} / {r['steps_per_epoch']}", epoch,
                   f"{L[0]:.4f} -> {L[-1]:.4f}", f"{r['peak_gib']:.1f}", f"{r['load']:.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["small/lightgcn/none/epoch", "small/lightgcn/rcm/10",
                                                   "small/binary-gcn/none/10"])
    ap.add_argument("--batch-size", type=int, default=65_536)
    ap.add_argument("--lr", type=float, default=0.032, help="Adam's lr (LightGCN's 1e-3 at batch 2,048, x 32)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-rss-gib", type=float, default=18.0)
    ap.add_argument("--json", help="append each case's record (JSON lines) to this file")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    for case in a.cases:
        shape, model, reorder, steps = (case.split("/") + [""] * 4)[:4]
        if shape not in SHAPES or model not in MODELS or reorder not in ("none", "rcm") or not (
                steps == "epoch" or steps.isdigit()):
            ap.error(f"bad case {case!r}: SHAPE/MODEL/REORDER/STEPS with SHAPE in {sorted(SHAPES)}, MODEL in "
                     f"{sorted(MODELS)}, REORDER none|rcm, STEPS epoch or a number")
    set_threads(a.threads)
    if a.one:
        print(json.dumps(measure(a, a.one)))
        return
    print(f"\nd = {a.dim}, 3 layers, batch {a.batch_size:,}, Adam lr {a.lr:g}, {a.threads} thread(s), zipf 1.1, "
          f"seed {a.seed}; torch {torch.__version__}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start\n", flush=True)
    rows = []
    for case in a.cases:
        r = run_case(a, case)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({"case": case, "args": {k: v for k, v in vars(a).items() if k != "one"},
                                    "result": r}) + "\n")
        rows.append(_row(case, r))
        print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    table(rows, ["shape", "users x items, interactions", "model", "order", "generate s",
                 "build s (A_hat, tables; +peak GiB)",
                 "RCM s", "sampling s", "s/step wall (CPU)", "steps measured / epoch", "epoch min",
                 "loss first -> last", "peak RSS GiB", "load avg"])


if __name__ == "__main__":
    main()
