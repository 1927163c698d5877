"""``qrec demo``: full vs quantized GMF on MovieLens-100K, which ships with qrec's install (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

from qrec.data.datasets import resolved_source
from qrec.records import build_record, write_record
from qrec.train.config import RunConfig
from qrec.train.trainer import fit

DEMO_SPECS = ("full", "sq8", "dpq64x256", "mgqe64x256/64@0.1")


def run_demo(epochs: int = 10, out: Path = Path("runs/demo")) -> int:
    base = RunConfig(dataset="ml-100k", protocol="loo", model="gmf", epochs=epochs, batch_size=1024, lr=2e-3, ks=(10, 20))
    print(f"MovieLens-100K from: {resolved_source('ml-100k')}", file=sys.stderr)
    print("protocol: leave-one-out by timestamp, full ranking over all items, train (and valid) items masked;"
          f" GMF d=64, {epochs} epochs, test metrics at the best validation NDCG@10 epoch, seed 0", file=sys.stderr)
    rows = []
    for spec in DEMO_SPECS:
        cfg = base.replace(embedding=spec)
        result = fit(cfg, out / cfg.run_name(), progress=False, resume=False, log=lambda s: None)
        rec = build_record(result)
        write_record(out / cfg.run_name() / "record.json", rec)
        rows.append(rec)
        print(f"  trained {spec:20s} {rec['train_seconds']:.1f}s", file=sys.stderr)
    print(_table(rows))
    return 0


def _table(rows: list[dict]) -> str:
    head = f"{'embedding':22s} {'HR@10':>7s} {'NDCG@10':>8s} {'HR@20':>7s} {'size':>8s} {'KiB':>8s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["metrics"]["test"]
        lines.append(f"{r['embedding']['item']:22s} {100 * t['hr@10']:6.2f}% {100 * t['ndcg@10']:7.2f}% {100 * t['hr@20']:6.2f}%"
                     f" {100 * r['size']['relative']:7.1f}% {r['size']['serving_bits'] / 8 / 1024:8.1f}")
    d = rows[0]["data"]
    lines.append(f"(ml-100k: {d['users']} users, {d['items']} items; size = served model bits / same model with float32 tables)")
    return "\n".join(lines)
