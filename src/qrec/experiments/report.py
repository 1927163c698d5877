"""RESULTS.md from the records under ``results/``: mean +/- std over seeds beside the paper's figure.

Regenerate with ``qrec report`` (or ``make results``). Hand-written analysis for a preset lives in
``results/<preset>/NOTES.md`` and is included verbatim under its table; ``results/SUMMARY.md`` (each paper's
claims against what qrec measured) goes verbatim before the first table.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import numpy as np

from qrec.experiments.presets import load_preset, preset_names
from qrec.records import common_dim, headline_metrics, records_or_explain, relative_sizes
from qrec.train.config import DEFAULT_DIM, RunConfig

HEADER = """# qrec results

Every number below is regenerated from the JSON records in `results/` by `qrec report` (or `make results`);
each record holds its config, seed, git commit, command, machine and per-epoch history. Metrics are
percentages, mean +/- sample std over seeds (n = number of seeds). "size" is the bits of the whole served
model (embedding codes + codebooks + scales + every float32 dense weight) relative to the same model with
float32 embedding tables at the preset's d, as MGQE's Table 3 counts it (a row with another d says `d=` and
is sized against that same reference). Runs are on CPU (2 cores) unless a record says otherwise: "n = 10 (4
cuda)" means 4 of the 10 seeds trained on a GPU (`qrec experiment --device cuda`), whose numbers differ from a
CPU run of the same seed in float rounding; "epoch s" is the median over the row's CPU runs.
"""


def _fmt(values: list[float], scale: float = 100.0) -> str:
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def _group(records: list[dict], base_dim: int) -> dict:
    """Rows keyed by (dataset, model, label): the spec, then ``d=`` when off the preset's d, then options."""
    groups = defaultdict(list)
    for r in records:
        spec = r["embedding"]["item"] if r["embedding"]["user"] == r["embedding"]["item"] else f"u:{r['embedding']['user']} i:{r['embedding']['item']}"
        dim = r["config"].get("dim", base_dim) if "config" in r else base_dim
        if dim != base_dim:
            spec += f" d={dim}"
        options = RunConfig.from_dict(r["config"]).options_tag() if "config" in r else ""
        groups[(r["dataset"], r["model"], spec + (f" {options}" if options else ""))].append(r)
    return groups


def _find_preset(name: str, records: list[dict]):
    """The preset by bundled name, else from the file its records name, else the preset moved to another
    dataset that they name (``qrec experiment --dataset``); None if none exists."""
    moved = next((r["preset_on_dataset"] for r in records if r.get("preset_on_dataset")), None)
    if moved:
        try:
            return load_preset(moved["preset"]).on_dataset(moved["dataset"], moved["path"])
        except (ValueError, OSError):
            pass
    for ref in [name] + sorted({r["preset_file"] for r in records if r.get("preset_file")}):
        try:
            return load_preset(ref)
        except (ValueError, OSError):
            continue
    return None


def preset_table(name: str, records: list[dict]) -> str:
    preset = _find_preset(name, records)
    paper, metrics = (preset.paper, preset.metrics) if preset else ({}, headline_metrics(records))
    reference = preset.reference if preset else ""
    ref_cols = [f"{metrics[0]} vs {reference.replace('|', ' ')}"] if reference else []
    base_dim = int(preset.base.get("dim", DEFAULT_DIM)) if preset else common_dim(records)
    groups = _group(records, base_dim)
    sizes = dict(zip(map(id, records), relative_sizes(records, base_dim)))
    cols = ["dataset", "model", "embedding", "n"] + metrics + ["size"] + ref_cols + ["epoch s"]
    paper_cols = [f"paper {m}" for m in metrics] + ["paper size"] if paper else []
    lines = ["| " + " | ".join(cols + paper_cols) + " |", "|" + "---|" * (len(cols) + len(paper_cols))]
    for (dataset, model, spec), recs in groups.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        row = [dataset, model, f"`{spec}`", _count(recs)]
        row += [_fmt([r["metrics"]["test"].get(m, np.nan) for r in recs]) for m in metrics]
        row.append(f"{100 * np.mean([sizes[id(r)] for r in recs]):.1f}%")
        if reference:
            row.append(_relative(recs, groups.get((dataset, *reference.split("|", 1))), metrics[0]))
        row.append(_epoch_seconds(recs))
        if paper:
            ref = paper.get(f"{model}|{spec}", {})
            row += [f"{ref[m]:.2f}" if m in ref else "" for m in metrics]
            row.append(f"{ref['size']:.1f}%" if "size" in ref else "")
        lines.append("| " + " | ".join(row) + " |")
    head = [f"## {name}", ""]
    if preset:
        head += [preset.description.strip(), "", f"Protocol: {preset.protocol_note.strip()}", "",
                 f"Command: `{preset.command or f'qrec experiment {name}'}` (resumable), then `qrec report`.", ""]
    return "\n".join(head + lines)


def _device(record: dict) -> str:
    return record.get("config", {}).get("device") or "cpu"


def _count(recs: list[dict]) -> str:
    """Seeds in the row; seeds trained on a GPU are counted apart (their numbers differ in rounding)."""
    gpu = sum(_device(r) != "cpu" for r in recs)
    return f"{len(recs)} ({gpu} cuda)" if gpu else str(len(recs))


def _epoch_seconds(recs: list[dict]) -> str:
    """Median epoch time of the row's CPU runs (GPU runs are another machine), else of its GPU runs."""
    cpu = [r for r in recs if _device(r) == "cpu"]
    if not any(r.get("history") for r in recs):  # nothing trained (qrec ptq rows)
        return ""
    seconds = np.median([h["seconds"] for r in (cpu or recs) for h in r["history"]])
    return f"{seconds:.1f}" if cpu else f"{seconds:.1f} (cuda)"


def _relative(recs: list[dict], ref: list[dict] | None, metric: str) -> str:
    """Mean ``metric`` of a row as a percentage of the reference row's mean (same dataset)."""
    if not ref:
        return ""
    mean = lambda rs: np.mean([r["metrics"]["test"].get(metric, np.nan) for r in rs])  # noqa: E731
    return f"{100 * mean(recs) / mean(ref):.1f}%"


def write_results_md(results_dir: Path, output: Path) -> Path:
    """Write the report of every record under ``results_dir`` to ``output`` (its folder is created).
    Raises ``QrecError`` when there is no record to report: an empty report is never what was meant."""
    records = records_or_explain(results_dir)
    by_preset = defaultdict(list)
    for r in records:
        by_preset[r.get("preset") or Path(r["_path"]).parent.name].append(r)
    order = [p for p in preset_names() if p in by_preset] + sorted(set(by_preset) - set(preset_names()))
    parts = [HEADER, f"_Regenerated {dt.date.today().isoformat()} from {len(records)} records._", ""]
    summary = results_dir / "SUMMARY.md"
    if summary.exists():
        parts += [summary.read_text().strip(), ""]
    for name in order:
        parts.append(preset_table(name, by_preset[name]))
        notes = results_dir / name / "NOTES.md"
        if notes.exists():
            parts += ["", notes.read_text().strip()]
        parts.append("")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text("\n".join(parts).rstrip() + "\n")
    tmp.replace(output)  # atomic: two grid processes may regenerate it at once
    return output
