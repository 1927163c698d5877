"""Experiment records: one JSON file per finished run, written atomically; RESULTS.md is built from them."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

from qrec.errors import QrecError
from qrec.train.config import DEFAULT_DIM

SCHEMA_VERSION = 1


def git_commit(cwd: Path | None = None) -> str | None:
    """Commit of the code that ran (``+dirty`` when the tree had uncommitted changes), or None."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def build_record(result, extra: dict | None = None) -> dict:
    """The JSON record of a finished ``FitResult``."""
    cfg, model = result.config, result.model
    tables = {name: {"spec": t.spec, "rows": t.num_embeddings, "dim": t.dim, "serving_bits": t.serving_bits(), "full_bits": t.full_bits()}
              for name, t in model.embedding_tables().items()}
    serving, full = model.serving_bits(), model.full_bits()
    record = {
        "schema": SCHEMA_VERSION,
        "run": cfg.run_name(),
        "dataset": cfg.dataset,
        "protocol": result.split.protocol + (f", {cfg.min_count}-core" if cfg.min_count else ""),
        "data": {"users": result.split.n_users, "items": result.split.n_items, "train": len(result.split.train),
                 "valid": len(result.split.valid), "test": len(result.split.test)},
        "model": cfg.model,
        "embedding": {"user": cfg.user_spec, "item": cfg.item_spec, "tables": tables},
        "seed": cfg.seed,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "config": cfg.to_dict(),
        "metrics": {"test": result.test, "valid": result.valid},
        "size": {"serving_bits": serving, "full_bits": full, "relative": serving / full,
                 "dense_bits": model.dense_bits()},
        "history": result.history,
        "train_seconds": round(result.train_seconds, 2),
        "interactions_per_second": round(result.interactions_per_second),
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    if diagnostics := model.diagnostics():  # model-specific state worth keeping (e.g. EWGS's delta)
        record["diagnostics"] = diagnostics
    if extra:
        record.update(extra)
    return record


def write_record(path: str | Path, record: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # this process's own: writers never share one
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_records(root: str | Path) -> list[dict]:
    """Every record under ``root`` (recursively); unreadable files raise with their path."""
    out = []
    for p in sorted(Path(root).rglob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not a valid record ({e})") from e
        if not isinstance(rec, dict):
            raise ValueError(f"{p}: not a record (a JSON {type(rec).__name__}, not an object)")
        rec["_path"] = str(p)
        out.append(rec)
    return out


def records_or_explain(root: str | Path) -> list[dict]:
    """``read_records(root)``, or a ``QrecError`` saying why there is nothing to read and what writes records."""
    root = Path(root)
    if not root.is_dir():
        raise QrecError(f"{root}: no such folder of records")
    records, others = [], []
    for r in read_records(root):
        (records if {"metrics", "embedding", "size"} <= set(r) else others).append(r)
    for r in others:  # a folder of records may hold other JSON (configs, notes): named, then left out
        logging.getLogger("qrec.records").warning(f"{r['_path']}: not a qrec record (no metrics / embedding / size); skipped")
    if not records:
        raise QrecError(f"{root}: no JSON records here (they are written by qrec experiment, qrec train --record FILE "
                        "and qrec ptq --records FOLDER)")
    return records


def headline_metrics(records: list[dict]) -> list[str]:
    """Two test metrics every record has, at the smallest shared cut-off: hr (or recall) and ndcg; for
    regression runs RMSE and MAE."""
    shared = set.intersection(*(set(r["metrics"]["test"]) for r in records))
    for k in sorted({int(m.split("@")[1]) for m in shared if "@" in m}):
        chosen = [m for m in (f"hr@{k}", f"recall@{k}", f"ndcg@{k}") if m in shared]
        if chosen:
            return [chosen[0], chosen[-1]] if len(chosen) > 1 else chosen
    return [m for m in ("rmse", "mae") if m in shared]


def common_dim(records: list[dict], default: int = DEFAULT_DIM) -> int:
    """The d of most full-table runs among ``records`` (what their sizes are measured against), else ``default``."""
    dims = Counter(r["config"]["dim"] for r in records if "config" in r and r["embedding"]["item"] == "full")
    return dims.most_common(1)[0][0] if dims else default


def relative_sizes(records: list[dict], base_dim: int) -> list[float]:
    """Each record's served bits over the full-precision model of its dataset and backbone at ``base_dim``
    (a record's own ``size.relative`` is against full embeddings of *its* d, so a d = 16 full model would
    read 100%). Without such a record in ``records``, an embedding-only model (no dense weights) is compared
    with its own float tables scaled to ``base_dim`` (float bits are rows x d x 32, linear in d); a model
    with dense weights falls back to its own ``size.relative``."""
    full = {(r["dataset"], r["model"]): r["size"]["full_bits"] for r in records
            if r.get("config", {}).get("dim", base_dim) == base_dim}
    return [r["size"]["serving_bits"] / _reference_bits(r, full, base_dim) for r in records]


def _reference_bits(record: dict, full: dict, base_dim: int) -> float:
    size = record["size"]
    if (record["dataset"], record["model"]) in full:
        return full[(record["dataset"], record["model"])]
    if size.get("dense_bits") == 0:  # an older record without the field is not assumed embedding-only
        return size["full_bits"] * base_dim / record.get("config", {}).get("dim", base_dim)
    return size["full_bits"]
