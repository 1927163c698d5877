"""LightGCN epoch time side by side with LightGCN-PyTorch, in one process, the two alternating (issue 21).

    .venv/bin/python benchmarks/bench_vs_lightgcn_pytorch.py --peer ../peer/LightGCN-PyTorch --threads 2
    .venv/bin/python benchmarks/bench_vs_lightgcn_pytorch.py --peer DIR --batches 20 --repeats 1   # quick

``--peer``: a checkout of gusye1234/LightGCN-PyTorch (its ``code/`` folder is imported by path and never
edited; default ``$QREC_PEER_LIGHTGCN``, else ``../peer/LightGCN-PyTorch`` beside this repository).
``--data``: a folder with LightGCN's ``train.txt`` and ``test.txt`` (default: ``$QREC_DATA_DIR/gowalla``).

LightGCN's recipe on both sides, on the CPU, with the same torch thread count: 3 layers, d = 64, batch 2048,
BPR with one uniform negative per positive, Adam lr 1e-3, L2 1e-4 on the batch's layer-0 rows.

* peer: their modules under their own flags (``PEER_FLAGS`` in ``sys.argv`` while ``world`` parses them,
  ``world.device`` set to the CPU). One epoch is one call of their ``Procedure.BPR_train_original``: their
  sampling of the epoch (their C++ extension when cppimport builds it, else their Python loop: the output
  says which), the tensors, the shuffle, and per batch their ``BPRLoss.stageOne`` (the full graph propagated
  through ``torch.sparse.mm`` on their COO tensor, the loss, backward, the Adam step).
* qrec: the trainer's own epoch, as ``qrec.train.trainer.fit`` runs it: ``_epoch_batches`` (the epoch's
  shuffle and negatives) and ``_train_epoch`` (per batch the model's training loss, backward, Adam step).

Reading the data and building the model (the normalised adjacency included) are outside the epochs and timed
on rows of their own: theirs is ``dataloader.Loader`` and the ``model.LightGCN`` constructor, which builds the
graph from scratch (``getSparseGraph``: their dok / lil matrices, their ``save_npz`` cache write into a
temporary folder, so every run builds; the torch COO tensor); ours is ``qrec.train.pipeline.load_split`` and
``qrec.train.trainer.build``. The sides alternate, peer then qrec, ``--repeats`` times, so a change of load
on the machine reaches both; each side's model keeps training, so repeat r is its epoch r + 1; the table
gives the median. ``--batches N`` times only the first N batches of each epoch: the epoch is then estimated
as its setup (everything before the first step: sampling, shuffle) + the N steps' time / N x the epoch's
batch count, marked ``~``. ``--test`` also times one full test evaluation of each (their ``Procedure.Test``,
our ``evaluate_model``) after the last epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import torch

from qrec.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mdtable import table  # noqa: E402  (benchmarks/mdtable.py: scripts run with this folder on the path)

from qrec.train.config import RunConfig  # noqa: E402
from qrec.train.pipeline import load_split  # noqa: E402
from qrec.train.tasks import make_task  # noqa: E402
from qrec.train.trainer import _epoch_batches, _train_epoch, build, make_optimizer  # noqa: E402

BATCH = 2048
PEER_FLAGS = ["--dataset", "gowalla", "--layer", "3", "--recdim", "64", "--bpr_batch", str(BATCH), "--lr", "0.001",
              "--decay", "1e-4", "--tensorboard", "0", "--model", "lgn"]
PEER_MODULES = ("parse", "world", "dataloader", "model", "utils", "Procedure")
PEER_CACHE = "s_pre_adj_mat.npz"  # their normalised adjacency, written beside the data on the first build


@dataclass
class Clock:
    """Wall and process (CPU) time of one instant."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)


@dataclass
class Epoch:
    """One timed epoch of ``n_batches``: started at ``start``, its first step at ``first``, ``steps`` steps done
    at ``end``."""

    start: Clock
    first: Clock
    end: Clock
    steps: int
    n_batches: int
    loss: float

    def _scaled(self, kind: str) -> float:
        start, first, end = (getattr(c, kind) for c in (self.start, self.first, self.end))
        return first - start + (end - first) * self.n_batches / self.steps

    @property
    def setup(self) -> float:
        """Wall seconds before the first step: the epoch's sampling and shuffle."""
        return self.first.wall - self.start.wall

    @property
    def step(self) -> float:
        return (self.end.wall - self.first.wall) / self.steps

    @property
    def seconds(self) -> float:
        """The epoch's wall seconds: measured whole, or estimated from the timed steps when only some ran."""
        return self._scaled("wall")

    @property
    def cpu_seconds(self) -> float:
        """The same in process CPU time (all threads), which other processes on the cores inflate less."""
        return self._scaled("cpu")


@dataclass
class Side:
    name: str
    read_s: float
    build_s: float
    run_epoch: object  # (epoch index, batch limit or 0) -> Epoch
    evaluate: object  # () -> (seconds, recall@20)
    note: str = ""
    epochs: list[Epoch] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- the peer
class _Enough(Exception):
    """Ends the peer's epoch after the batches asked for (raised from inside their loop, caught here)."""


class _ClockedSteps:
    """Their ``BPRLoss`` with a clock: each ``stageOne`` runs theirs unchanged; the first call's start marks the
    end of the epoch's setup; after ``limit`` calls (0: never) the epoch is ended."""

    def __init__(self, bpr, limit: int):
        self.bpr, self.limit = bpr, limit
        self.first = self.last = None
        self.losses: list[float] = []

    def stageOne(self, users, pos, neg):  # noqa: N802  (their name)
        if self.first is None:
            self.first = Clock()
        loss = self.bpr.stageOne(users, pos, neg)
        self.losses.append(loss)
        self.last = Clock()
        if self.limit and len(self.losses) >= self.limit:
            raise _Enough
        return loss


def import_peer(peer: Path) -> SimpleNamespace:
    """Their modules from ``peer/code``, imported under their flags, with their device set to the CPU."""
    code = peer / "code"
    missing = [m for m in PEER_MODULES if not (code / f"{m}.py").is_file()]
    if missing:
        sys.exit(f"{code}: not a LightGCN-PyTorch checkout (missing {', '.join(f'{m}.py' for m in missing)})")
    clash = [m for m in PEER_MODULES if m in sys.modules]
    if clash:
        sys.exit(f"modules named {clash} are already imported; run this benchmark as its own process")
    argv = sys.argv
    sys.argv = ["main.py", *PEER_FLAGS]  # world.py parses sys.argv when imported
    sys.path.insert(0, str(code))
    try:
        mods = {m: __import__(m) for m in PEER_MODULES}
    finally:
        sys.argv = argv
    mods["world"].device = torch.device("cpu")  # world.py picks CUDA when it sees one; every call reads world.device
    return SimpleNamespace(**mods)


def _peer_batches(p: SimpleNamespace, dataset) -> int:
    """Batches of their epoch: their C++ sampler draws ``trainDataSize // n_users`` pairs per user, their Python
    sampler ``trainDataSize`` pairs."""
    n = (dataset.trainDataSize // dataset.n_users) * dataset.n_users if p.utils.sample_ext else dataset.trainDataSize
    return -(-n // BATCH)


def peer_side(peer: Path, data: Path, workdir: Path) -> Side:
    p = import_peer(peer)
    for f in ("train.txt", "test.txt"):  # their graph cache (s_pre_adj_mat.npz) is written beside the files
        link = workdir / f
        if link.is_symlink() and link.resolve() != (data / f).resolve():
            sys.exit(f"{workdir} holds another dataset's files (and their graph cache); use another --peer-work")
        if not link.is_symlink():
            link.symlink_to((data / f).resolve())
    cached = (workdir / PEER_CACHE).exists()
    p.utils.set_seed(p.world.seed)  # as their main.py
    t = time.perf_counter()
    dataset = p.dataloader.Loader(path=str(workdir))
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    model = p.model.LightGCN(p.world.config, dataset).to(p.world.device)
    build_s = time.perf_counter() - t
    bpr = p.utils.BPRLoss(model, p.world.config)
    n_batches = _peer_batches(p, dataset)

    def run_epoch(epoch: int, limit: int) -> Epoch:
        clock = _ClockedSteps(bpr, limit)
        start = Clock()
        try:
            p.Procedure.BPR_train_original(dataset, model, clock, epoch, neg_k=1, w=None)
            end = Clock()  # the whole call: its bookkeeping after the last step included
        except _Enough:
            end = clock.last
        steps = len(clock.losses)
        if not limit and steps != n_batches:
            raise RuntimeError(f"their epoch ran {steps} batches, expected {n_batches}")
        return Epoch(start, clock.first, end, steps, n_batches, statistics.fmean(clock.losses))

    def evaluate():
        t = time.perf_counter()
        result = p.Procedure.Test(dataset, model, 0, None, 0)
        return time.perf_counter() - t, float(result["recall"][0])

    note = "their C++ sampler (cppimport)" if p.utils.sample_ext else "their Python sampler (no cppimport)"
    if cached:
        note += f"; their graph loaded from their cache {workdir / PEER_CACHE}, not built"
    return Side("LightGCN-PyTorch", read_s, build_s, run_epoch, evaluate, note=note)


# ----------------------------------------------------------------------------------------------- qrec
def qrec_config(data: Path, threads: int, propagation: str = "float32") -> RunConfig:
    options = {"n_layers": 3, "reg": 1e-4}
    if propagation != "float32":
        options["propagation"] = propagation
    return RunConfig(dataset="lightgcn", data_path=str(data), protocol="given", model="lightgcn", dim=64,
                     batch_size=BATCH, lr=1e-3, threads=threads, ks=(20,), model_options=options)


def qrec_side(data: Path, threads: int, propagation: str = "float32") -> Side:
    cfg = qrec_config(data, threads, propagation)
    t = time.perf_counter()
    split = load_split(cfg)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    model = build(cfg, split)
    build_s = time.perf_counter() - t
    optimizer = make_optimizer(model, cfg)
    task = make_task(cfg, split)

    def run_epoch(epoch: int, limit: int) -> Epoch:
        marks = {}

        def clocked(batches):
            for k, b in enumerate(batches):
                if k == 0:
                    marks["first"] = Clock()
                yield b

        start = Clock()
        batches = _epoch_batches(model, task, cfg, epoch)
        n_batches = len(batches)
        loss, _ = _train_epoch(model, optimizer, clocked(islice(batches, limit or None)), cfg, epoch, False, task.loss)
        return Epoch(start, marks["first"], Clock(), min(limit or n_batches, n_batches), n_batches, loss)

    def evaluate():
        t = time.perf_counter()
        result = task.evaluate(model, "test")
        return time.perf_counter() - t, float(result["recall@20"])

    name = "qrec" if propagation == "float32" else f"qrec, {propagation} propagation"
    return Side(name, read_s, build_s, run_epoch, evaluate, note="qrec.data.sampling.bpr_epoch")


# ----------------------------------------------------------------------------------------------- report
def _ratio(a: float, b: float) -> str:
    """``a / b``, or "-" below 10 ms (a second qrec side reads the split from the first one's cache)."""
    return f"{a / b:.1f}x" if b >= 0.01 else "-"


def report(peer: Side, ours: list[Side], limit: int, tests: list | None, threads: int, loads: tuple) -> None:
    """One column per side, then LightGCN-PyTorch / each qrec side."""
    sides = [peer, *ours]
    est = "~" if limit else ""
    med = lambda s, f: statistics.median(f(e) for e in s.epochs)  # noqa: E731
    epoch, cpu, setup = ([med(s, f) for s in sides] for f in (lambda e: e.seconds, lambda e: e.cpu_seconds,
                                                              lambda e: e.setup))

    def row(label, values, fmt, ratios=None):
        tail = [_ratio(ratios[0], r) for r in ratios[1:]] if ratios else [""] * len(ours)
        return [label, *(fmt(v) for v in values), *tail]

    what = f"first {limit} batches timed, scaled to the epoch" if limit else "whole epochs"
    rows = [
        row("read the data (s)", [s.read_s for s in sides], "{:.2f}".format, [s.read_s for s in sides]),
        row("build the model, graph included (s)", [s.build_s for s in sides], "{:.2f}".format,
            [s.build_s for s in sides]),
        row(f"epoch (s, median of {len(peer.epochs)}; {what})", epoch, lambda v: f"{est}{v:.1f}", epoch),
        row("  of which the epoch's setup: sampling, shuffle (s)", setup, "{:.2f}".format, setup),
        row("  per step (ms, median)", [1e3 * med(s, lambda e: e.step) for s in sides], "{:.0f}".format),
        row("epoch in process CPU seconds, all threads (median)", cpu, lambda v: f"{est}{v:.1f}", cpu),
        ["epochs, one per repeat, in run order (s)", *(", ".join(f"{est}{e.seconds:.1f}" for e in s.epochs)
                                                       for s in sides), *[""] * len(ours)],
        [f"batches of {BATCH} per epoch (timed)", *(f"{s.epochs[0].n_batches} ({s.epochs[0].steps})" for s in sides),
         *[""] * len(ours)],
        row("mean training loss over the steps, last repeat", [s.epochs[-1].loss for s in sides], "{:.4f}".format),
    ]
    if tests:
        rows.append(row("full test evaluation (s)", [t for t, _ in tests], "{:.1f}".format, [t for t, _ in tests]))
        rows.append(row("  test Recall@20 after the epochs (%)", [100 * r for _, r in tests], "{:.2f}".format))
    table(rows, ["", *(s.name for s in sides), *(f"LightGCN-PyTorch / {s.name}" for s in ours)])
    print(f"{threads} torch threads on every side; load average {loads[0]:.2f} before, {loads[1]:.2f} after "
          f"({os.cpu_count()} CPUs: above that, other processes shared the cores). Peer: {peer.note}.")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", type=Path, default=Path(os.environ.get("QREC_PEER_LIGHTGCN", ROOT.parent / "peer" / "LightGCN-PyTorch")))
    data_root = Path(os.environ.get("QREC_DATA_DIR", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=data_root / "gowalla", help="folder with train.txt and test.txt")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    ap.add_argument("--repeats", type=int, default=3, help="epochs of each side, alternating")
    ap.add_argument("--batches", type=int, default=0, help="time the first N batches of each epoch (0: whole epochs)")
    ap.add_argument("--test", action="store_true", help="also time one full test evaluation of each")
    ap.add_argument("--peer-work", type=Path, default=None,
                    help="keep their graph cache in this folder between runs (default: a fresh temporary folder, "
                         "so every run builds their graph)")
    ap.add_argument("--propagation", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                    help="qrec sides to time, one per propagation precision (LightGCN's propagation= option)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.batches < 0 or args.threads < 1:
        sys.exit("--repeats and --threads must be >= 1, --batches >= 0")
    if not all((args.data / f).is_file() for f in ("train.txt", "test.txt")):
        sys.exit(f"{args.data}: no train.txt and test.txt (LightGCN's format) there")
    set_threads(args.threads)
    loads = [os.getloadavg()[0]]
    print(f"# bench_vs_lightgcn_pytorch: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} threads; data {args.data}; peer {args.peer}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="lgcn-peer-") as work:
        if args.peer_work:
            args.peer_work.mkdir(parents=True, exist_ok=True)
        peer = peer_side(args.peer, args.data, args.peer_work or Path(work))
        ours = [qrec_side(args.data, args.threads, p) for p in args.propagation]
        for r in range(args.repeats):
            for side in (peer, *ours):
                side.epochs.append(side.run_epoch(r, args.batches))
                e = side.epochs[-1]
                print(f"  repeat {r + 1}: {side.name} {'~' if args.batches else ''}{e.seconds:.1f} s "
                      f"({e.steps} of {e.n_batches} batches, setup {e.setup:.2f} s)", flush=True)
        tests = [side.evaluate() for side in (peer, *ours)] if args.test else None
    loads.append(os.getloadavg()[0])
    print()
    report(peer, ours, args.batches, tests, args.threads, tuple(loads))


if __name__ == "__main__":
    main()
