"""Where one qrec LightGCN training step goes, at LightGCN's recipe on Gowalla (issue 21, input for the 1/6).

    .venv/bin/python benchmarks/profile_lightgcn_step.py --threads 1 --steps 20

The step is the trainer's (``qrec.train.trainer``: the task's loss, backward, Adam) on the batches of
``_epoch_batches``, with the configuration of ``bench_vs_lightgcn_pytorch.py`` (3 layers, d = 64, batch 2048,
BPR, Adam lr 1e-3, L2 1e-4). Two passes over the same kind of steps, after ``--warmup`` untimed ones:

* phases, timed with ``perf_counter`` without the profiler: forward (the loss), backward, optimizer
  (``zero_grad`` + Adam step); the epoch's sampling (``_epoch_batches``: shuffle and negatives, drawn once per
  epoch) divided by its batch count;
* operators, under ``torch.profiler`` (CPU): self time of each aten operator, summed into buckets (sparse
  products, gathers, scatter-adds, Adam, ...); what no operator accounts for (Python: the per-batch scipy row
  slice of ``A_hat`` and its transpose in ``"rows"`` mode, autograd bookkeeping) is the rest of the step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path


from qrec.threads import set_threads
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_vs_lightgcn_pytorch import qrec_config  # noqa: E402  (this folder is on the path)
from mdtable import table  # noqa: E402

from qrec.train.pipeline import load_split  # noqa: E402
from qrec.train.tasks import make_task  # noqa: E402
from qrec.train.trainer import _epoch_batches, build, make_optimizer  # noqa: E402

# aten operator -> bucket; an operator not listed is "other operators"
BUCKETS = {
    "sparse product A @ X (forward and backward)": ("aten::addmm", "aten::_sparse_csr_mm", "aten::_sparse_mm"),
    "gather rows (E[rows], lookups)": ("aten::index", "aten::index_select", "aten::embedding", "aten::gather"),
    "scatter-add rows (index_add_, index_put_)": ("aten::index_add_", "aten::index_put_", "aten::_index_put_impl_"),
    "Adam (fused step)": ("aten::_fused_adam_", "aten::_fused_adamw_"),
    "concatenate / copy / fill": ("aten::cat", "aten::copy_", "aten::clone", "aten::fill_", "aten::zero_",
                                  "aten::zeros", "aten::empty", "aten::empty_strided", "aten::contiguous"),
    "unique batch rows": ("aten::_unique2", "aten::unique_dim", "aten::_unique"),
    "torch CSR tensors of the row slice": ("aten::sparse_csr_tensor", "aten::_sparse_csr_tensor_unsafe"),
}


def step_parts(model, task, optimizer, batch) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    loss = task.loss(model, batch)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    float(loss.detach())
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def buckets(prof, steps: int) -> dict[str, float]:
    """Self CPU milliseconds per step of each bucket of aten operators (the rest: other operators)."""
    out = defaultdict(float)
    where = {op: name for name, ops in BUCKETS.items() for op in ops}
    for ev in prof.key_averages():
        if ev.key.startswith("aten::"):
            out[where.get(ev.key, "other operators")] += ev.self_cpu_time_total / 1e3 / steps
    return dict(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data_root = Path(os.environ.get("QREC_DATA_DIR", ROOT.parent / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=data_root / "gowalla", help="folder with train.txt and test.txt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="steps timed in each of the two passes")
    ap.add_argument("--top", type=int, default=12, help="operators listed by self time")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    cfg = qrec_config(args.data, args.threads)
    split = load_split(cfg)
    model = build(cfg, split)
    optimizer, task = make_optimizer(model, cfg), make_task(cfg, split)
    model.train()
    load = os.getloadavg()[0]
    t = time.perf_counter()
    batches = _epoch_batches(model, task, cfg, 0)
    sampling = (time.perf_counter() - t) / len(batches)
    it = iter(batches)
    for _ in range(args.warmup):
        step_parts(model, task, optimizer, next(it))
    parts = [step_parts(model, task, optimizer, next(it)) for _ in range(args.steps)]
    fwd, bwd, opt = (statistics.median(p[k] for p in parts) * 1e3 for k in range(3))
    step = fwd + bwd + opt
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(args.steps):
            step_parts(model, task, optimizer, next(it))
        profiled = (time.perf_counter() - t) * 1e3 / args.steps
    print(f"# profile_lightgcn_step: Gowalla, batch {cfg.batch_size}, {args.threads} threads, load average "
          f"{load:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs); median of {args.steps} steps\n")
    rows = [["forward (loss)", f"{fwd:.1f}", f"{100 * fwd / (step + sampling * 1e3):.0f}%"],
            ["backward", f"{bwd:.1f}", f"{100 * bwd / (step + sampling * 1e3):.0f}%"],
            ["optimizer (Adam step + zero_grad)", f"{opt:.1f}", f"{100 * opt / (step + sampling * 1e3):.0f}%"],
            ["sampling (the epoch's, per batch)", f"{sampling * 1e3:.1f}", f"{100 * sampling * 1e3 / (step + sampling * 1e3):.0f}%"],
            ["step + its share of sampling", f"{step + sampling * 1e3:.1f}", "100%"]]
    table(rows, ["phase", "ms per step (median)", "share"])
    by_bucket = buckets(prof, args.steps)
    accounted = sum(by_bucket.values())
    rows = [[name, f"{ms:.1f}", f"{100 * ms / profiled:.0f}%"] for name, ms in sorted(by_bucket.items(), key=lambda kv: -kv[1])]
    rows.append(["not in any operator (Python: scipy row slice, autograd)", f"{profiled - accounted:.1f}",
                 f"{100 * (profiled - accounted) / profiled:.0f}%"])
    table(rows, [f"operators (self time), of a profiled step of {profiled:.1f} ms", "ms per step", "share"])
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
