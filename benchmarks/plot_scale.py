"""The log-log figure of the scale curve: training rows/s, peak RSS, artifact MiB and evaluation seconds against the
number of items, from ``bench_scale.py``'s JSON lines (``--out``).

    python benchmarks/plot_scale.py benchmarks/curves/scale/shared-2026-12-07.jsonl --out docs/figures/scale-gmf.png

One colour per (item table, optimizer); one line style per run (a row's ``run`` field, else one run per file), so
points measured in different invocations, under different load, are never joined into one line.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

PANELS = (("rows_per_s", "training rows / s", 1), ("peak_mib", "peak RSS (MiB)", 1),
          ("artifact_bytes", "artifact (MiB)", 2**20), ("eval_s", "evaluation (s)", 1),
          ("p50_ms", "recommend, one user: median (ms)", 1), ("p99_ms", "recommend, one user: p99 (ms)", 1))
STYLES = ("-", "--", ":", "-.")


def read_rows(paths: list[Path]) -> list[dict]:
    """Every row of the files; a row without ``run`` is labelled with its file's name."""
    rows = []
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path}:{n}: not a JSON line ({e.msg})") from None
                rows.append({"run": path.stem, **row})
    return rows


def lines(rows: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """The rows by (run, item table, optimizer), each line sorted by items."""
    out = defaultdict(list)
    for r in rows:
        out[r["run"], r["spec"], r["optimizer"]].append(r)
    return {k: sorted(v, key=lambda r: r["items"]) for k, v in out.items()}


def plot(rows: list[dict], path: Path, title: str) -> Path:
    by_line = lines(rows)
    configs = sorted({(spec, opt) for _, spec, opt in by_line})
    runs = sorted({run for run, _, _ in by_line})
    colour = {c: f"C{i}" for i, c in enumerate(configs)}
    style = {run: STYLES[i % len(STYLES)] for i, run in enumerate(runs)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, label, unit) in zip(axes.flat, PANELS):
        if not any(key in r for r in rows):
            ax.set_axis_off()
            continue
        for (run, spec, opt), points in by_line.items():
            points = [p for p in points if key in p]  # files older than a column lack it
            ax.plot([p["items"] for p in points], [p[key] / unit for p in points], style[run], marker="o",
                    color=colour[spec, opt])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items (log)")
        ax.set_ylabel(f"{label} (log)")
        ax.grid(alpha=0.3, which="both")
    eval_users = {run: sorted({r["eval_users"] for r in rows if r["run"] == run}) for run in runs}
    handles = [Line2D([], [], color=colour[c], marker="o", label=f"{c[0]}, {c[1]}") for c in configs]
    handles += [Line2D([], [], color="grey", linestyle=style[run],
                       label=f"run {run} (eval: {'/'.join(f'{u:,}' for u in eval_users[run])} users)") for run in runs]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="+", type=Path, help="bench_scale.py --out files")
    ap.add_argument("--out", type=Path, default=Path("scale.png"))
    ap.add_argument("--title", default="GMF d = 64 on synthetic-powerlaw (10^5 users, 10^6 interactions), 1 thread")
    a = ap.parse_args()
    print(plot(read_rows(a.jsonl), a.out, a.title))


if __name__ == "__main__":
    main()
