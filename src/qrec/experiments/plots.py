"""``qrec plot``: figures from records. Fig. 6: HR@10 / NDCG@10 against model size; Fig. 7: training loss;
GCN presets: test curves per epoch."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from qrec.errors import QrecError  # noqa: E402
from qrec.records import common_dim, headline_metrics, records_or_explain, relative_sizes  # noqa: E402
from qrec.train.config import DEFAULT_DIM  # noqa: E402


def _family(spec: str) -> str:
    return re.match(r"[a-z]+(-[a-z]+)?", spec).group(0).replace("-ptq", "")


def plot_size_tradeoff(records: list[dict], path: Path, title: str) -> Path:
    """One line per compressor family: mean metric over seeds against the served model's relative size; a
    point with several seeds carries a +/- 1 sample-std bar."""
    points = defaultdict(lambda: defaultdict(list))
    for r, size in zip(records, relative_sizes(records, DEFAULT_DIM)):
        spec = r["embedding"]["item"]
        label = "full (d varies)" if spec == "full" else _family(spec)
        points[label][(size, r["config"]["dim"], spec)].append(r["metrics"]["test"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("hr@10", "ndcg@10")):
        for label, by_size in sorted(points.items()):
            xs = sorted(by_size)
            values = [100 * np.asarray([m[metric] for m in by_size[x]]) for x in xs]
            std = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
            ax.errorbar([100 * x[0] for x in xs], [v.mean() for v in values], yerr=std, marker="o", capsize=3,
                        label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"model size (% of full at d = {DEFAULT_DIM}, log scale)")
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_training_loss(records: list[dict], path: Path, title: str) -> Path:
    """Training loss per epoch, one panel per backbone, mean over seeds of each (backbone, embedding)."""
    curves = defaultdict(lambda: defaultdict(list))
    for r in records:
        curves[r["model"]][r["embedding"]["item"]].append([h["loss"] for h in r["history"]])
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (model, by_spec) in zip(axes[0], sorted(curves.items())):
        for spec, runs in sorted(by_spec.items()):
            n = min(len(c) for c in runs)
            mean = np.mean([c[:n] for c in runs], axis=0)
            ax.plot(np.arange(1, n + 1), mean, marker=".", label=f"{spec} (n={len(runs)})")
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (BCE + aux)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _variant_label(r: dict) -> str:
    """``model [d=..] options`` (a teacher run by its folder name): what tells two runs of a preset apart."""
    cfg = r["config"]
    dim = f"d={cfg['dim']}" if cfg.get("dim", DEFAULT_DIM) != DEFAULT_DIM else ""
    options = ",".join(f"{k}={Path(str(v)).name if k == 'teacher' else v}"
                       for k, v in sorted(cfg.get("model_options", {}).items()))
    return " ".join(part for part in (r["model"], dim, options) if part)


def plot_test_curves(records: list[dict], path: Path, title: str) -> Path:
    """Pre-split (train/test only) runs: the test metric every ``eval_every`` epochs, one line per variant.
    Nothing is selected on these curves; they show convergence within the epoch budget."""
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.5))
    runs = sorted(records, key=lambda r: r["_path"])
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    seeds = Counter(map(_variant_label, runs))  # a variant with several seeds names each line's seed
    for ax, metric in zip(axes, ("recall@20", "ndcg@20")):
        for n, r in enumerate(runs):
            points = [(h["epoch"], h["test_curve"][metric]) for h in r["history"] if metric in h.get("test_curve", {})]
            if points:
                x, y = zip(*points)
                ax.plot(x, 100 * np.asarray(y), marker=".", color=colors[n % 20], linestyle=("-", "--", ":")[n // 20 % 3],
                        label=f"{_variant_label(r)} s{r['seed']}" if seeds[_variant_label(r)] > 1 else _variant_label(r))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"test {metric} (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label(r: dict, base_dim: int = DEFAULT_DIM) -> str:
    """What tells a record's model apart within its group: the item spec (a ``qrec ptq`` row: its label), then
    ``d=`` when off the group's d, and options, as the report names rows."""
    if r.get("kind") == "ptq":
        return r["label"]
    cfg = r.get("config", {})
    dim = f"d={cfg['dim']}" if cfg.get("dim", base_dim) != base_dim else ""
    options = ",".join(f"{k}={Path(str(v)).name if k == 'teacher' else v}" for k, v in sorted(cfg.get("model_options", {}).items()))
    return " ".join(p for p in (r["embedding"]["item"], dim, options) if p)


def _series(r: dict) -> str:
    """The colour of a point: the compressor family (full, sq, dpq, mgqe-uk, ...), or for a ptq row its bits."""
    if r.get("kind") == "ptq":
        return r.get("family", "ptq")
    return _family(r["embedding"]["item"])


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (smaller or equal size and higher quality, or the same
    quality at a smaller size), by increasing size."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_quality_vs_size(records: list[dict], path: Path, title: str) -> Path | None:
    """Any set of records (runs, ``qrec ptq`` rows): test quality against the served model's size, log-x,
    one panel row per (dataset, model) and a column per metric. A point is the mean over seeds with a
    +/- 1 sample-std bar; the Pareto frontier (nothing smaller is as good) is the dashed line, its points
    named."""
    panels, base_dim = defaultdict(list), common_dim(records)
    for r, size in zip(records, relative_sizes(records, base_dim)):
        panels[(r["dataset"], r["model"] if r.get("kind") != "ptq" else f"{r['model']}, post-training")].append((r, size))
    metrics = headline_metrics(records)
    if not metrics:
        return None
    fig, axes = plt.subplots(len(panels), len(metrics), figsize=(6.5 * len(metrics), 4.2 * len(panels)), squeeze=False)
    families = sorted({_series(r) for r in records})
    colors = dict(zip(families, plt.get_cmap("tab10")(np.arange(len(families)) % 10)))
    for row, ((dataset, model), pairs) in zip(axes, sorted(panels.items())):
        groups = defaultdict(list)
        for r, size in pairs:
            groups[(_label(r, base_dim), _series(r))].append((size, r["metrics"]["test"]))
        for ax, metric in zip(row, metrics):
            _quality_panel(ax, groups, metric, colors)
            ax.set_title(f"{dataset}, {model}", fontsize=10)
    handles = [plt.Line2D([], [], color=colors[f], marker="o", linestyle="", label=f) for f in families]
    handles.append(plt.Line2D([], [], color="black", linestyle="--", marker="o", mfc="none", label="Pareto frontier"))
    axes[0][-1].legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(fig, path, title)


def _quality_panel(ax, groups: dict, metric: str, colors: dict) -> None:
    labels, points, std = [], [], []
    for (label, family), runs in sorted(groups.items()):
        values = 100 * np.asarray([m.get(metric, np.nan) for _, m in runs], dtype=float)
        size = 100 * float(np.mean([s for s, _ in runs]))
        labels.append(label)
        points.append((size, float(np.nanmean(values))))
        std.append(float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0)
        ax.errorbar(size, points[-1][1], yerr=std[-1], marker="o", capsize=3, color=colors[family], linestyle="")
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=1, zorder=0)
    for i in front:
        ax.scatter(*points[i], s=120, facecolors="none", edgecolors="black", zorder=3)
    named = [i for i in range(len(labels)) if i in front or len(labels) <= 12]  # all while they fit
    for i, (dx, dy, align) in zip(named, _label_offsets([points[i] for i in named])):
        ax.annotate(labels[i], points[i], textcoords="offset points", xytext=(dx, dy), fontsize=7, ha=align,
                    color="black" if i in front else "dimgray")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.12)
    percent = FuncFormatter(lambda v, _: f"{v:g}%")
    ax.xaxis.set_major_formatter(percent)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}%" if str(round(v, 6))[0] in "1235" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("served model size (% of the float32 model, log scale)")
    ax.set_ylabel(f"test {metric} (%)")
    ax.grid(alpha=0.3, which="both")


def _label_offsets(points: list[tuple[float, float]], near: float = 0.05):
    """Where each point's label goes, in points from it: left of points in the right third of the panel
    (so no label runs into the legend), and stacked downwards where points nearly coincide."""
    if not points:
        return []
    xs, ys = np.log10([p[0] for p in points]), np.asarray([p[1] for p in points])
    span = lambda v: (v - v.min()) / (np.ptp(v) or 1.0)  # noqa: E731
    u, v = span(xs), span(ys)
    out = []
    for i in range(len(points)):
        crowd = sum(abs(u[j] - u[i]) < near and abs(v[j] - v[i]) < near for j in range(i))
        right = u[i] > 0.67
        out.append((-6 if right else 6, 4 - 9 * crowd, "right" if right else "left"))
    return out


def plot_training_curves(records: list[dict], path: Path, title: str) -> Path | None:
    """Training loss, and the validation metric where runs have one, per epoch: one line per model
    (mean over its seeds), one panel row per (dataset, model)."""
    runs = [r for r in records if r.get("history")]
    if not runs:
        return None
    panels, base_dim = defaultdict(lambda: defaultdict(list)), common_dim(runs)
    for r in runs:
        panels[(r["dataset"], r["model"])][_label(r, base_dim)].append(r["history"])
    valid = any("valid" in h for r in runs for h in r["history"])
    fig, axes = plt.subplots(len(panels), 1 + valid, figsize=(6.5 * (1 + valid), 4 * len(panels)), squeeze=False)
    for row, ((dataset, model), by_label) in zip(axes, sorted(panels.items())):
        cmap = plt.get_cmap("tab10" if len(by_label) <= 10 else "tab20")
        for n, (label, histories) in enumerate(sorted(by_label.items())):
            color, label = cmap(n % cmap.N), f"{label} (n={len(histories)})"
            _curve(row[0], histories, lambda h: h["loss"], color, label)
            if valid:
                key = next((k for h in histories[0] for k in h.get("valid", {}) if k.startswith("ndcg")), None)
                if key:
                    _curve(row[1], histories, lambda h: 100 * h["valid"][key] if "valid" in h else np.nan, color, label)
                    row[1].set_ylabel(f"validation {key} (%)")
        row[0].set_ylabel("training loss")
        row[0].set_title(f"{dataset}, {model}", fontsize=10)
        for ax in row:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        row[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(fig, path, title)


def _curve(ax, histories: list[list[dict]], value, color, label: str) -> None:
    n = min(len(h) for h in histories)
    values = np.asarray([[value(e) for e in h[:n]] for h in histories], dtype=float)
    counted = (~np.isnan(values)).sum(axis=0)  # epochs without a validation pass are skipped, not averaged
    keep = counted > 0
    y = np.nansum(values, axis=0)[keep] / counted[keep]
    x = np.asarray([e["epoch"] for e in histories[0][:n]])[keep]
    ax.plot(x, y, marker="." if len(x) <= 40 else None, color=color, label=label)


def _save(fig, path: Path, title: str) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


PLOTS = {
    "mgqe-fig6": (plot_size_tradeoff, "MGQE Fig. 6 on ML-1M (GMF): quality vs model size"),
    "mgqe-fig7": (plot_training_loss, "MGQE Fig. 7 on ML-1M: training loss, MGQE vs full"),
}


def plot_all(results_dir: Path, out_dir: Path) -> list[Path]:
    """Figures of every group of records under ``results_dir`` (a preset, else the folder a record is in):
    the paper's figure where a preset has one, else quality vs size and training curves (pre-split GCN
    runs: test curves)."""
    records = records_or_explain(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_group = defaultdict(list)
    for r in records:
        by_group[r.get("preset") or Path(r["_path"]).parent.name].append(r)
    written = []
    for group, recs in sorted(by_group.items()):
        if group in PLOTS:
            fn, title = PLOTS[group]
            written.append(fn(recs, out_dir / f"{group}.png", title))
        elif any("test_curve" in h for r in recs for h in r.get("history", [])):  # pre-split data (GCN presets)
            title = f"{group}: test metrics per epoch (no validation split; nothing selected on them)"
            written.append(plot_test_curves(recs, out_dir / f"{group}.png", title))
        else:
            written.append(plot_quality_vs_size(recs, out_dir / f"{group}-size.png", f"{group}: quality vs model size"))
            written.append(plot_training_curves(recs, out_dir / f"{group}-curves.png", f"{group}: training curves"))
    written = [p for p in written if p is not None]
    if not written:
        raise QrecError(f"{results_dir}: {len(records)} records, but none with a test metric or a training history to draw")
    return written
