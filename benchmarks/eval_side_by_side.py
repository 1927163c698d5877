"""Full-ranking evaluation time of two qrec checkouts on the same synthetic catalogue, one process per run.

    git worktree add /tmp/qrec-old <commit>
    python benchmarks/eval_side_by_side.py --checkouts /tmp/qrec-old . --items 1e6 --specs full mgqe64x256/64@0.1 \
        --eval-users 1000 --rounds 2

Each run builds GMF (d = 64, seed 0, untrained: what is timed is the ranking, not the model) on
``synthetic-powerlaw:users=100000,items=I,n=1000000`` (``bench_scale.py``'s data) and times ``evaluate_model`` over
a sample of the test users (all items ranked, seen items masked), checkouts alternating within each round. Prints
one JSON line per run and a table of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mdtable import table

RUN = """
import sys, time, json, torch
sys.path[:0] = [{src!r}, {bench!r}]
import qrec
assert qrec.__file__.startswith({src!r}), qrec.__file__
import bench_scale as bs
from qrec.train.config import RunConfig
from qrec.train.pipeline import load_split
from qrec.train.trainer import build
from qrec.models.evaluate import evaluate_model
torch.set_num_threads(1)
cfg = RunConfig(dataset=bs._name(100000, {items}, 1000000, 0), model="gmf", embedding={spec!r}, dim=64, epochs=1, seed=0)
split = load_split(cfg)
torch.manual_seed(0)
model = build(cfg, split)
sample = bs._sample_test(split, {users}, 0)
t = time.perf_counter()
m = evaluate_model(model, sample, "test", (10,))
print(json.dumps({{"eval_s": time.perf_counter() - t, "users": m["users"], "ndcg@10": m["ndcg@10"]}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkouts", nargs=2, type=Path, required=True)
    ap.add_argument("--items", type=float, default=1e6)
    ap.add_argument("--specs", nargs="+", default=["full", "mgqe64x256/64@0.1"])
    ap.add_argument("--eval-users", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.rounds):
        for spec in a.specs:
            for checkout in a.checkouts:
                root = checkout.resolve()
                code = RUN.format(src=str(root / "src"), bench=str(root / "benchmarks"), items=int(a.items), spec=spec,
                                  users=a.eval_users)
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
                if out.returncode:
                    raise SystemExit(f"{root} {spec}: {out.stderr[-2000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1]) | {"checkout": str(root), "spec": spec}
                print(json.dumps(r), flush=True)
                times.setdefault((str(root), spec), []).append(r["eval_s"])
    first, second = (str(c.resolve()) for c in a.checkouts)
    rows = [[f"`{spec}`", f"{statistics.median(times[first, spec]):.2f}", f"{statistics.median(times[second, spec]):.2f}",
             f"{statistics.median(times[first, spec]) / statistics.median(times[second, spec]):.1f}x"] for spec in a.specs]
    table(rows, ["item table", f"eval s: {Path(first).name}", f"eval s: {Path(second).name}", "ratio"])


if __name__ == "__main__":
    main()
