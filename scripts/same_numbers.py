"""Does a change keep every number? Short runs of each backbone family at two revisions, records compared.

    python scripts/same_numbers.py <old-rev> [--new <rev>]      (default new: the working tree)

Runs the same short trainings (GMF-MGQE, NeuMF-DPQ, SASRec-SQ, a LightGCN teacher and its low-bit and 1-bit
students) on ML-100K with one thread at both revisions (the old one in a temporary git worktree, imported via
PYTHONPATH) and compares the records: per-epoch losses and validation metrics, test metrics, sizes and
diagnostics must be equal to the last digit; timings are ignored. Exit status 1 names what differs. A refactor
that leaves the code path of a published number unchanged must pass this before it lands (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # name -> qrec train arguments (ML-100K, one thread)
    "gmf": ["--model", "gmf", "--embedding", "mgqe16x64/16@0.1", "--epochs", "2", "--seed", "1"],
    "neumf": ["--model", "neumf", "--embedding", "dpq16x64", "--epochs", "1", "--seed", "1"],
    "sasrec": ["--model", "sasrec", "--embedding", "sq8-ptq", "--epochs", "2", "--eval-every", "1", "--seed", "1"],
    "teacher": ["--model", "lightgcn", "--epochs", "2", "--batch-size", "2048", "--seed", "0"],
    "student": ["--model", "lowbit-gcn", "--option", "bits=2", "--option", "estimator=ewgs", "--option",
                "teacher={out}/teacher", "--epochs", "2", "--batch-size", "2048", "--seed", "0"],
    "bgcn": ["--model", "binary-gcn", "--option", "teacher={out}/teacher", "--epochs", "1", "--batch-size", "2048",
             "--seed", "0"],
}
TIMING = ("seconds", "rows_per_second")


def run_all(src: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(src))
    for name, args in RUNS.items():
        cmd = [sys.executable, "-m", "qrec.cli", "train", "--dataset", "ml-100k", "--threads", "1", "--quiet",
               *[a.format(out=out) for a in args], "--out", str(out / name), "--record", str(out / f"{name}.json")]
        print(f"[{src.parent.name}] {name}", file=sys.stderr)
        subprocess.run(cmd, env=env, check=True, cwd=out, stdout=subprocess.DEVNULL)


def comparable(record: dict) -> dict:
    history = [{k: v for k, v in row.items() if k not in TIMING} for row in record["history"]]
    return {"history": history, "metrics": record["metrics"], "size": record["size"],
            "diagnostics": record.get("diagnostics")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", help="git revision to compare against")
    ap.add_argument("--new", help="git revision (default: the working tree)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qrec-same-") as tmp:
        tmp = Path(tmp)
        trees = {}
        for label, rev in (("old", args.old), ("new", args.new)):
            if rev is None:
                trees[label] = ROOT
                continue
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / label), rev], check=True,
                           stdout=subprocess.DEVNULL)
            trees[label] = tmp / label
        try:
            for label, tree in trees.items():
                (tmp / f"out-{label}").mkdir()
                run_all(tree / "src", tmp / f"out-{label}")
            differ = [name for name in RUNS
                      if comparable(json.loads((tmp / "out-old" / f"{name}.json").read_text()))
                      != comparable(json.loads((tmp / "out-new" / f"{name}.json").read_text()))]
        finally:
            for label, tree in trees.items():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    for name in RUNS:
        print(f"{name:8s} {'DIFFERS' if name in differ else 'identical'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
