"""``qrec demo``: full vs quantized GMF and LightGCN on MovieLens-100K, which ships with qrec's install (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

from qrec.data.datasets import resolved_source
from qrec.records import build_record, write_record
from qrec.train.config import RunConfig
from qrec.train.trainer import fit

#: (model, embedding spec, model options): popularity (the floor), GMF with each compressor family, then
#: LightGCN and its 1-bit and 2-bit variants (served from packed codes, scored by popcount / integer dot products)
DEMO_RUNS = (
    ("pop", "full", {}),
    ("gmf", "full", {}),
    ("gmf", "sq8", {}),
    ("gmf", "dpq64x256", {}),
    ("gmf", "mgqe64x256/64@0.1", {}),
    ("lightgcn", "full", {}),
    ("binary-gcn", "full", {}),
    ("lowbit-gcn", "full", {"bits": 2, "estimator": "ewgs"}),
)


def run_demo(epochs: int = 10, out: Path = Path("runs/demo")) -> int:
    # one thread: BLAS splits reductions by thread count, so a pinned count gives the same table on any core count
    base = RunConfig(dataset="ml-100k", protocol="loo", epochs=epochs, batch_size=1024, lr=2e-3, ks=(10, 20), threads=1)
    print(f"MovieLens-100K from: {resolved_source('ml-100k')}", file=sys.stderr)
    print("protocol: leave-one-out by timestamp, full ranking over all items, train (and valid) items masked;"
          f" d=64, {epochs} epochs, test metrics at the best validation NDCG@10 epoch, seed 0, 1 thread;"
          " pop: training counts; GMF: BCE + 4 negatives; GCNs: 3 layers, BPR, batch 2048, lr 5e-3", file=sys.stderr)
    rows = []
    for model, spec, options in DEMO_RUNS:
        cfg = base.replace(model=model, embedding=spec, model_options=options)
        if model != "gmf":
            cfg = cfg.replace(batch_size=2048, lr=5e-3)
        result = fit(cfg, out / cfg.run_name(), progress=False, resume=False, log=lambda s: None)
        rec = build_record(result)
        write_record(out / cfg.run_name() / "record.json", rec)
        rows.append(rec)
        print(f"  trained {_label(rec):28s} {rec['train_seconds']:.1f}s", file=sys.stderr)
    print(_table(rows))
    return 0


def _label(rec: dict) -> str:
    if rec["model"] == "pop":
        return "pop (most popular unseen items)"
    options = ",".join(f"{k}={v}" for k, v in rec["config"].get("model_options", {}).items())
    return f"{rec['model']} {rec['embedding']['item']}" + (f" {options}" if options else "")


def _table(rows: list[dict]) -> str:
    head = f"{'model / embedding':40s} {'HR@10':>7s} {'NDCG@10':>8s} {'HR@20':>7s} {'size':>8s} {'KiB':>8s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["metrics"]["test"]
        lines.append(f"{_label(r):40s} {100 * t['hr@10']:6.2f}% {100 * t['ndcg@10']:7.2f}% {100 * t['hr@20']:6.2f}%"
                     f" {100 * r['size']['relative']:7.1f}% {r['size']['serving_bits'] / 8 / 1024:8.1f}")
    d = rows[0]["data"]
    lines.append(f"(ml-100k: {d['users']} users, {d['items']} items; size = served model bits / same model with float32 tables)")
    return "\n".join(lines)
