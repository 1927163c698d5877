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
from qrec.records import common_dim, headline_metrics, records_or_explain, relative_sizes
from qrec.train.config import DEFAULT_DIM, RunConfig

HEADER = """# qrec results

Every number below is regenerated from the JSON records in `results/` by `qrec report` (or `make results`);
each record holds its config, seed, git commit, command, machine and per-epoch history. Metrics are
percentages (RMSE and MAE: on the data's own scale), mean +/- sample std over seeds (n = number of seeds).
"size" is the bits of the whole served model (embedding codes + codebooks + scales + every float32 dense
weight) relative to the same model with float32 embedding tables at the preset's d, as MGQE's Table 3 counts
it (a row with another d says `d=` and is sized against that same reference). Runs are on CPU (2 cores) unless
a record says otherwise: "n = 10 (4 cuda)" means 4 of the 10 seeds trained on a GPU (`qrec experiment --device
cuda`), whose numbers differ from a CPU run of the same seed in float rounding; "epoch s" is the median over
the row's CPU runs.
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
    ``claims["dataset"]`` (``metric``, lower is better). A row is compared with full seed by seed (same seed:
    same split and initial draws): the mean difference d over the common seeds, with its standard error se,
    reads "worse" if d > 2 se, "better" if d < -2 se, else "equal within noise".

    (i) SQ slightly worse than full: SQ worse, by less than 2% of full's mean;
    (ii) DPQ and MGQE at or below full: each ``matched`` row equal within noise or better;
    (iii) MGQE smallest at equal quality: of the rows equal within noise or better than full (any spec or d),
    the smallest model is a ``smallest``-family row (``mgqe...``)."""
    dataset = claims["dataset"]
    rows = {f"{model}|{spec}": recs for (d, model, spec), recs in groups.items() if d == dataset}
    needed = [claims["full"], claims["sq"], *claims["matched"]]
    missing = [k for k in needed if k not in rows]
    if missing:
        return [f"Claims on {dataset}: not answered yet, no records for {', '.join(missing)}."]
    full = rows[claims["full"]]
    full_mean = float(np.mean([r["metrics"]["test"][metric] for r in full]))
    verdict = {k: _paired(recs, full, metric) for k, recs in rows.items()}
    show = lambda key: (f"`{key.split('|', 1)[1]}` {_fmt_metric([r['metrics']['test'][metric] for r in rows[key]], metric)}"  # noqa: E731
                        f" (n = {len(rows[key])}); seed by seed {verdict[key][1]}")
    sq_word, sq_text = verdict[claims["sq"]]
    sq_mean = float(np.mean([r["metrics"]["test"][metric] for r in rows[claims["sq"]]]))
    answers = [("(i) SQ slightly worse than full", sq_word == "worse" and sq_mean < 1.02 * full_mean,
                f"{show(claims['sq'])}, {100 * (sq_mean / full_mean - 1):+.3f}% of full's "
                f"{_fmt_metric([r['metrics']['test'][metric] for r in full], metric)}")]
    answers.append(("(ii) DPQ and MGQE at or below full " + metric.upper(),
                    all(verdict[k][0] != "worse" for k in claims["matched"]),
                    "; ".join(show(k) for k in claims["matched"])))
    size = lambda key: float(np.mean([sizes[id(r)] for r in rows[key]]))  # noqa: E731
    equal = sorted((size(k), k) for k in rows if k == claims["full"] or verdict[k][0] != "worse")
    answers.append((f"(iii) {claims['smallest'].upper()} smallest at equal quality (not worse than full)",
                    equal[0][1].split("|", 1)[1].startswith(claims["smallest"]),
                    f"smallest such row `{equal[0][1].split('|', 1)[1]}` at {100 * equal[0][0]:.1f}%; next: "
                    + ", ".join(f"`{k.split('|', 1)[1]}` {100 * s:.1f}%" for s, k in equal[1:4])))
    out = [f"Claims of MGQE's section 5.6.3 on {dataset} ({metric.upper()}, lower is better; mean ± std over seeds; "
           "seed-by-seed difference to full: mean d ± its standard error, worse / better when |d| > 2 se):", ""]
    out += [f"- {claim}: **{'yes' if ok else 'no'}**. {why}." for claim, ok, why in answers]
    return out


def _paired(recs: list[dict], ref: list[dict], metric: str) -> tuple[str, str]:
    """``(verdict, text)``: the seed-by-seed difference of ``metric`` to the reference row over the seeds both
    have, its mean d and standard error se; "worse" if d > 2 se, "better" if d < -2 se, else "equal"."""
    by_seed = {r["seed"]: r["metrics"]["test"][metric] for r in ref}
    diffs = np.asarray([r["metrics"]["test"][metric] - by_seed[r["seed"]] for r in recs if r["seed"] in by_seed])
    if len(diffs) < 2:
        return "equal", f"{len(diffs)} common seed(s), too few to compare"
    d, se = float(diffs.mean()), float(diffs.std(ddof=1) / np.sqrt(len(diffs)))
    word = "worse" if d > 2 * se else "better" if d < -2 * se else "equal"
    return word, f"{d:+.4f} ± {se:.4f} ({word if word != 'equal' else 'equal within noise'})"


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
