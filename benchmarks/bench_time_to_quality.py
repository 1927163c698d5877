"""Time to quality of LightGCN training recipes: test Recall@20 / NDCG@20 against training seconds.

    .venv/bin/python benchmarks/bench_time_to_quality.py --recipes fast --seeds 0 1 --budget-minutes 120
    .venv/bin/python benchmarks/bench_time_to_quality.py --recipes reference preset fast --budget-minutes 30

Same model in every recipe (LightGCN, 3 layers, d = 64, mean of layer embeddings, N(0, 0.1) init, L2 1e-4 on
the batch's layer-0 rows), same split (LightGCN's Gowalla train/test files), same metrics (full ranking with
training items masked, Recall@K over the user's test items, NDCG@K); only the training recipe changes:

* ``reference``: LightGCN's own code: BPR with one uniform negative, batch 2048, Adam lr 1e-3;
* ``preset``: qrec's ``gcn-gowalla`` preset until now: BPR, batch 8192, Adam lr 5e-3;
* ``fast``: the shared-negative sampled softmax (``loss = "softmax"``, ``LightGCN.ranking_loss``): each
  positive against the batch's first 2,048 uniform negatives at once, logits / 0.25, batch 8192, Adam lr 5e-3
  divided by 10 after epoch 20, and an L2 weight of 0.1 on the batch's layer-0 rows (1e-4 lets the softmax
  overfit from epoch ~10: see RESULTS.md, gcn-gowalla-fast);
* ``masked`` and ``table``: the presets ``gcn-fast-masked`` (the softmax's accidental hits left out, the decay
  after epoch 14) and ``gcn-fast-table`` (and the L2 over the whole table, bfloat16 propagation), read from them.

Each run is ``qrec.train.fit`` in a run folder (``--runs``/<dataset>-<recipe>-s<seed>), extended a chunk of
``eval_every`` epochs at a time until its training seconds pass ``--budget-minutes``: a checkpoint resumes
bit for bit, so the curve is the one a single long run gives, and an interrupted benchmark resumes where it
stopped. The x axis is training time only (sampling, propagation, loss, backward, Adam; evaluation excluded,
as it is a measurement): what a run needs to reach a quality. Each point is written to ``--out`` as it is
measured (one JSON per run); the table and the figure are made from those files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mdtable import table  # noqa: E402  (benchmarks/mdtable.py: scripts run with this folder on the path)

from qrec.experiments.presets import load_preset  # noqa: E402
from qrec.train.config import RunConfig  # noqa: E402
from qrec.train.trainer import fit  # noqa: E402

BASE = dict(model="lightgcn", protocol="given", ks=(20, 50), select_metric="ndcg@20")
RECIPES = {
    "reference": dict(batch_size=2048, lr=1e-3, eval_every=2),
    "preset": dict(batch_size=8192, lr=5e-3, eval_every=5),
    "fast": dict(batch_size=8192, lr=5e-3, eval_every=2, lr_milestones=(20,), lr_gamma=0.1,
                 model_options={"loss": "softmax", "negatives": 2048, "temperature": 0.25, "reg": 0.1}),
}
# what issue 21 found since, read from the presets that publish them (their teacher, the first grid's run)
PRESET_RECIPES = {"masked": "gcn-fast-masked", "table": "gcn-fast-table"}
TARGETS = {"gowalla": 0.1824}  # LightGCN-PyTorch's README, Recall@20 after 1,000 epochs


def recipe_settings(recipe: str) -> dict:
    if recipe in RECIPES:
        return RECIPES[recipe]
    cfg = load_preset(PRESET_RECIPES[recipe]).configs(seeds=1)[0]
    return {k: getattr(cfg, k) for k in ("batch_size", "lr", "eval_every", "lr_milestones", "lr_gamma", "model_options")}


def run_config(dataset: str, recipe: str, seed: int, epochs: int, threads: int) -> RunConfig:
    return RunConfig(dataset=dataset, seed=seed, epochs=epochs, threads=threads, **BASE, **recipe_settings(recipe))


def curve_points(history: list[dict]) -> list[dict]:
    """``(epoch, cumulative training seconds, test metrics)`` at every evaluated epoch."""
    points, seconds = [], 0.0
    for row in history:
        seconds += row["seconds"]
        if "test_curve" in row:
            points.append({"epoch": row["epoch"], "train_seconds": round(seconds, 2), **row["test_curve"]})
    return points


def run_curve(dataset: str, recipe: str, seed: int, budget_s: float, threads: int, runs: Path, out: Path,
              max_epochs: int) -> dict:
    """Extend the run a chunk at a time until its training time passes the budget; write the curve as it grows."""
    name = f"{dataset}-{recipe}-s{seed}"
    chunk = recipe_settings(recipe)["eval_every"]
    path = out / f"{name}.json"
    record = json.loads(path.read_text()) if path.exists() else {"points": []}
    epochs = record["points"][-1]["epoch"] if record["points"] else 0
    while epochs < max_epochs and (not record["points"] or record["points"][-1]["train_seconds"] < budget_s):
        epochs = min(max_epochs, epochs + chunk)
        cfg = run_config(dataset, recipe, seed, epochs, threads)
        result = fit(cfg, runs / name, progress=False)
        record = {"dataset": dataset, "recipe": recipe, "seed": seed, "config": cfg.to_dict(),
                  "machine": f"{platform.node()} ({os.cpu_count()} cpus), {threads} threads",
                  "points": curve_points(result.history)}
        path.write_text(json.dumps(record, indent=1))
        last = record["points"][-1]
        print(f"{name}: epoch {last['epoch']}, {last['train_seconds'] / 60:.1f} min, "
              f"recall@20 {100 * last['recall@20']:.2f}%", flush=True)
    return record


def record_from_run(run: Path, dataset: str) -> dict:
    """A curve record from a run folder's checkpoint or a qrec record (``results/<preset>/*.json``) of any recipe."""
    from qrec.train.checkpoint import load_checkpoint

    if run.suffix == ".json":
        ckpt = json.loads(run.read_text())
        ckpt["state"] = {"history": ckpt["history"]}
        label = f"{run.parent.name}: {ckpt['config']['model']}"  # results/<preset>/<run>.json
        run = run.with_suffix("")
    else:
        ckpt = load_checkpoint(run / "checkpoint.pt")
        label = run.name
    cfg = ckpt["config"]
    opts = ",".join(f"{k}={v}" for k, v in sorted(cfg.get("model_options", {}).items()))
    recipe = f"{run.name}: batch {cfg['batch_size']}, lr {cfg['lr']:g}" + (f", {opts}" if opts else "")
    return {"dataset": dataset, "recipe": recipe, "label": label, "seed": cfg["seed"], "config": cfg,
            "machine": f"{cfg.get('device', 'cpu')}, {cfg.get('threads')} threads (from the run)",
            "points": curve_points(ckpt["state"]["history"])}


def first_reaching(points: list[dict], target: float | None) -> str:
    hit = next((p for p in points if target is not None and p["recall@20"] >= target), None)
    return f"{hit['train_seconds'] / 60:.1f} (epoch {hit['epoch']})" if hit else "-"


def summary(records: list[dict], target: float | None) -> None:
    rows = []
    for r in records:
        best = max(r["points"], key=lambda p: p["recall@20"])
        last = r["points"][-1]
        rows.append([r["recipe"], r["seed"], last["epoch"], f"{last['train_seconds'] / 60:.1f}",
                     f"{100 * last['recall@20']:.2f}", f"{100 * last['ndcg@20']:.2f}",
                     f"{100 * best['recall@20']:.2f} (epoch {best['epoch']})", first_reaching(r["points"], target)])
    table(rows, ["recipe", "seed", "epochs", "train min", "recall@20 %", "ndcg@20 %", "best recall@20 %",
                 f"min to recall@20 >= {100 * target:.2f}" if target else "min to target"])


def plot(records: list[dict], target: float | None, path: Path, by: str = "minutes", threads: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = (len(records) + 2) // 2  # the legend's rows, below the axes (the recipes' names are long)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4 + 0.2 * rows))
    for i, r in enumerate(records):
        x = [p["train_seconds"] / 60 if by == "minutes" else p["epoch"] for p in r["points"]]
        for ax, metric in zip(axes, ("recall@20", "ndcg@20")):
            ax.plot(x, [100 * p[metric] for p in r["points"]], marker=".", color=plt.cm.tab20.colors[i % 20], label=f"{r.get('label', r['recipe'])} s{r['seed']}")
    for ax, metric in zip(axes, ("Recall@20 %", "NDCG@20 %")):
        ax.set_xlabel(f"training minutes ({threads} CPU threads)" if by == "minutes" else "epoch")
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
    if target:
        axes[0].axhline(100 * target, color="grey", ls="--", lw=1, label="LightGCN-PyTorch, 1,000 epochs")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"LightGCN on {records[0]['dataset']}: test quality against training " + ("time" if by == "minutes" else "epochs"))
    fig.tight_layout(rect=(0, 0.2 * rows / (4 + 0.2 * rows) + 0.02, 1, 1))
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="gowalla", help="a pre-split LightGCN-format dataset (gowalla, ml-1m-lgcn, ...)")
    ap.add_argument("--recipes", nargs="+", default=["reference", "preset", "fast"], choices=sorted(RECIPES | PRESET_RECIPES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--budget-minutes", type=float, default=120.0, help="training minutes per run")
    ap.add_argument("--max-epochs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "time-to-quality", help="run folders (checkpoints)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "curves" / "time-to-quality",
                    help="curve records (benchmark output, not qrec records: kept out of results/)")
    ap.add_argument("--figure", type=Path, default=None, help="default: docs/figures/time-to-quality-<dataset>.png")
    ap.add_argument("--report-only", action="store_true", help="table and figure from the records, no training")
    ap.add_argument("--from-runs", type=Path, nargs="+", default=[],
                    help="instead of training: curve records from these run folders' checkpoints or qrec records (any recipe)")
    ap.add_argument("--by", choices=["minutes", "epoch"], default="minutes", help="the figure's x axis")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    target = TARGETS.get(args.dataset)
    if args.from_runs:
        records = [record_from_run(run, args.dataset) for run in args.from_runs]
        for run, record in zip(args.from_runs, records):
            name = f"{run.parent.name}-{run.stem}" if run.suffix == ".json" else run.name  # a record: <preset>-<run>
            (args.out / f"{args.dataset}-run-{name}.json").write_text(json.dumps(record, indent=1))
        summary(records, target)
        plot(records, target, args.figure or ROOT / "docs" / "figures" / f"time-to-quality-{args.dataset}-runs.png",
             args.by, args.threads)
        return
    records = []
    for recipe in args.recipes:
        for seed in args.seeds:
            path = args.out / f"{args.dataset}-{recipe}-s{seed}.json"
            if args.report_only:
                if path.exists():
                    records.append(json.loads(path.read_text()))
                continue
            records.append(run_curve(args.dataset, recipe, seed, 60 * args.budget_minutes, args.threads,
                                     args.runs, args.out, args.max_epochs))
    if not records:
        sys.exit("no records to report")
    summary(records, target)
    plot(records, target, args.figure or ROOT / "docs" / "figures" / f"time-to-quality-{args.dataset}.png", args.by,
         args.threads)


if __name__ == "__main__":
    main()
