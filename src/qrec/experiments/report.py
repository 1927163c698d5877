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

from qrec.eval.regression import LOWER_IS_BETTER
from qrec.experiments.presets import load_preset, preset_names
from qrec.records import read_records, relative_sizes
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


def _fmt(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _fmt_metric(values: list[float], metric: str) -> str:
    """Ranking metrics as percentages; RMSE / MAE on the data's own scale, three decimals (ratings' 0.9xx)."""
    return _fmt(values, 1.0, 3) if metric in LOWER_IS_BETTER else _fmt(values)


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
    paper, metrics = (preset.paper, preset.metrics) if preset else ({}, ["hr@10", "ndcg@10"])
    reference = preset.reference if preset else ""
    ref_cols = [f"{metrics[0]} vs {reference.replace('|', ' ')}"] if reference else []
    base_dim = int(preset.base.get("dim", DEFAULT_DIM)) if preset else DEFAULT_DIM
    groups = _group(records, base_dim)
    sizes = dict(zip(map(id, records), relative_sizes(records, base_dim)))
    cols = ["dataset", "model", "embedding", "n"] + metrics + ["size"] + ref_cols + ["epoch s"]
    paper_cols = [f"paper {m}" for m in metrics] + ["paper size"] if paper else []
    lines = ["| " + " | ".join(cols + paper_cols) + " |", "|" + "---|" * (len(cols) + len(paper_cols))]
    for (dataset, model, spec), recs in groups.items():
        recs = sorted(recs, key=lambda r: r["seed"])
        row = [dataset, model, f"`{spec}`", _count(recs)]
        row += [_fmt_metric([r["metrics"]["test"].get(m, np.nan) for r in recs], m) for m in metrics]
        row.append(f"{100 * np.mean([sizes[id(r)] for r in recs]):.1f}%")
        if reference:
            row.append(_relative(recs, groups.get((dataset, *reference.split("|", 1))), metrics[0]))
        row.append(_epoch_seconds(recs))
        if paper:
            ref = paper.get(f"{dataset}|{model}|{spec}", paper.get(f"{model}|{spec}", {}))
            row += [f"{ref[m]:.2f}" if m in ref else "" for m in metrics]
            row.append(f"{ref['size']:.1f}%" if "size" in ref else "")
        lines.append("| " + " | ".join(row) + " |")
    if preset and preset.anchors:  # published numbers of other libraries under the same protocol
        for key, values in preset.anchors.items():
            dataset, method = key.split("|", 1)
            cells = [dataset, method, "(published)", ""] + [f"{values[m]:.3f}" if m in values else "" for m in metrics]
            lines.append("| " + " | ".join(cells + [""] * (len(cols) + len(paper_cols) - len(cells))) + " |")
    if preset and preset.claims:
        lines += [""] + claims_lines(preset.claims, groups, sizes, metrics[0])
    head = [f"## {name}", ""]
    if preset:
        head += [preset.description.strip(), "", f"Protocol: {preset.protocol_note.strip()}", "",
                 f"Command: `{preset.command or f'qrec experiment {name}'}` (resumable), then `qrec report`.", ""]
    return "\n".join(head + lines)


def claims_lines(claims: dict, groups: dict, sizes: dict, metric: str) -> list[str]:
    """The paper's three claims on a regression table (MGQE section 5.6.3), answered yes / no from the rows of
    ``claims["dataset"]`` (mean +/- sample std of ``metric``, lower is better, over each row's seeds):

    (i) SQ slightly worse than full: SQ's mean above full's, by less than 2% of it;
    (ii) DPQ and MGQE at or below full: each ``matched`` row's mean at most full's;
    (iii) MGQE smallest at equal quality: of the rows whose mean is within one std of full's mean (or below),
    the smallest model is a ``smallest``-family row (``mgqe...``)."""
    dataset = claims["dataset"]
    rows = {f"{model}|{spec}": recs for (d, model, spec), recs in groups.items() if d == dataset}
    mean = lambda key: float(np.mean([r["metrics"]["test"][metric] for r in rows[key]]))  # noqa: E731
    show = lambda key: f"`{key.split('|', 1)[1]}` {_fmt_metric([r['metrics']['test'][metric] for r in rows[key]], metric)} (n = {len(rows[key])})"  # noqa: E731
    needed = [claims["full"], claims["sq"], *claims["matched"]]
    missing = [k for k in needed if k not in rows]
    if missing:
        return [f"Claims on {dataset}: not answered yet, no records for {', '.join(missing)}."]
    full = mean(claims["full"])
    full_std = float(np.std([r["metrics"]["test"][metric] for r in rows[claims["full"]]], ddof=1)) if len(rows[claims["full"]]) > 1 else 0.0
    sq = mean(claims["sq"])
    answers = [("(i) SQ slightly worse than full", full < sq < 1.02 * full,
                f"{show(claims['sq'])} vs {show(claims['full'])}: {100 * (sq / full - 1):+.2f}%")]
    matched = [(k, mean(k)) for k in claims["matched"]]
    answers.append(("(ii) DPQ and MGQE at or below full " + metric.upper(), all(m <= full for _, m in matched),
                    "; ".join(f"{show(k)}: {100 * (m / full - 1):+.2f}%" for k, m in matched)))
    size = lambda key: float(np.mean([sizes[id(r)] for r in rows[key]]))  # noqa: E731
    equal = sorted((size(k), k) for k in rows if mean(k) <= full + full_std)
    smallest = equal[0][1]
    answers.append((f"(iii) {claims['smallest'].upper()} smallest at equal quality (mean within one std of full)",
                    smallest.split("|", 1)[1].startswith(claims["smallest"]),
                    "smallest such row " + f"{show(smallest)} at {100 * equal[0][0]:.1f}%; next: "
                    + ", ".join(f"`{k.split('|', 1)[1]}` {100 * s:.1f}%" for s, k in equal[1:4])))
    out = [f"Claims of MGQE's section 5.6.3 on {dataset} ({metric.upper()}, lower is better; mean ± std over seeds):", ""]
    out += [f"- {claim}: **{'yes' if ok else 'no'}**. {why}." for claim, ok, why in answers]
    return out


def _device(record: dict) -> str:
    return record.get("config", {}).get("device") or "cpu"


def _count(recs: list[dict]) -> str:
    """Seeds in the row; seeds trained on a GPU are counted apart (their numbers differ in rounding)."""
    gpu = sum(_device(r) != "cpu" for r in recs)
    return f"{len(recs)} ({gpu} cuda)" if gpu else str(len(recs))


def _epoch_seconds(recs: list[dict]) -> str:
    """Median epoch time of the row's CPU runs (GPU runs are another machine), else of its GPU runs."""
    cpu = [r for r in recs if _device(r) == "cpu"]
    seconds = np.median([h["seconds"] for r in (cpu or recs) for h in r["history"]])
    return f"{seconds:.1f}" if cpu else f"{seconds:.1f} (cuda)"


def _relative(recs: list[dict], ref: list[dict] | None, metric: str) -> str:
    """Mean ``metric`` of a row as a percentage of the reference row's mean (same dataset)."""
    if not ref:
        return ""
    mean = lambda rs: np.mean([r["metrics"]["test"].get(metric, np.nan) for r in rs])  # noqa: E731
    return f"{100 * mean(recs) / mean(ref):.1f}%"


def write_results_md(results_dir: Path, output: Path) -> Path:
    records = read_records(results_dir) if results_dir.exists() else []
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
    tmp = output.with_suffix(".tmp")
    tmp.write_text("\n".join(parts).rstrip() + "\n")
    tmp.replace(output)  # atomic: two grid processes may regenerate it at once
    return output
