"""``qrec plot``: figures from records. Fig. 6: HR@10 / NDCG@10 (or, for Table 5's regression, RMSE / MAE)
against model size; Fig. 7: training loss; GCN presets: test curves per epoch."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qrec.eval.regression import LOWER_IS_BETTER  # noqa: E402
from qrec.records import read_records, relative_sizes  # noqa: E402
from qrec.train.config import DEFAULT_DIM  # noqa: E402


def _family(spec: str) -> str:
    return re.match(r"[a-z]+(-[a-z]+)?", spec).group(0).replace("-ptq", "")


def plot_size_tradeoff(records: list[dict], path: Path, title: str, metrics=("hr@10", "ndcg@10")) -> Path:
    """One line per compressor family: mean metric over seeds against the served model's relative size; a
    point with several seeds carries a +/- 1 sample-std bar. Ranking metrics in %, RMSE / MAE as they are."""
    points = defaultdict(lambda: defaultdict(list))
    for r, size in zip(records, relative_sizes(records, DEFAULT_DIM)):
        spec = r["embedding"]["item"]
        label = "full (d varies)" if spec == "full" else _family(spec)
        points[label][(size, r["config"]["dim"], spec)].append(r["metrics"]["test"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, metrics):
        scale = 1.0 if metric in LOWER_IS_BETTER else 100.0
        for label, by_size in sorted(points.items()):
            xs = sorted(by_size)
            values = [scale * np.asarray([m[metric] for m in by_size[x]]) for x in xs]
            std = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
            ax.errorbar([100 * x[0] for x in xs], [v.mean() for v in values], yerr=std, marker="o", capsize=3,
                        label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"model size (% of full at d = {DEFAULT_DIM}, log scale)")
        ax.set_ylabel(f"{metric.upper()}" + (" (lower is better)" if metric in LOWER_IS_BETTER else " (%)"))
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


def plot_regression_tradeoff(records: list[dict], path: Path, title: str) -> Path:
    """Fig. 6's panel for Table 5's task: GMF's test RMSE / MAE against model size, on the dataset with the
    most (spec, d) points (the one the size sweep ran on)."""
    gmf = [r for r in records if r["model"] == "gmf"]
    points = Counter(r["dataset"] for r in {(r["dataset"], r["embedding"]["item"], r["config"]["dim"]): r for r in gmf}.values())
    dataset = points.most_common(1)[0][0]
    runs = [r for r in gmf if r["dataset"] == dataset]
    return plot_size_tradeoff(runs, path, title.format(dataset=dataset), metrics=("rmse", "mae"))


PLOTS = {
    "mgqe-fig6": (plot_size_tradeoff, "MGQE Fig. 6 on ML-1M (GMF): quality vs model size"),
    "mgqe-fig7": (plot_training_loss, "MGQE Fig. 7 on ML-1M: training loss, MGQE vs full"),
}


def plot_all(results_dir: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    by_preset = defaultdict(list)
    for r in read_records(results_dir):
        by_preset[r.get("preset")].append(r)
    written = []
    for preset, records in sorted(by_preset.items(), key=lambda kv: str(kv[0])):
        if preset in PLOTS:
            fn, title = PLOTS[preset]
        elif all(r["config"].get("task") == "regression" for r in records):  # Table 5's task
            fn, title = plot_regression_tradeoff, (f"{preset}: MGQE Fig. 6's regression panel, GMF on {{dataset}}, "
                                                   "error vs model size")
        elif any("test_curve" in h for r in records for h in r["history"]):  # pre-split data (GCN presets)
            fn, title = plot_test_curves, f"{preset}: test metrics per epoch (no validation split; nothing selected on them)"
        else:
            continue
        written.append(fn(records, out_dir / f"{preset}.png", title))
    return written
