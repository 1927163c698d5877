"""qrec: recommenders whose embeddings are stored in 1 to 8 bits; train, compress, evaluate and serve them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from qrec.errors import QrecError, SpecError
from qrec.logs import setup_console


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help line, where it has one (not None, False or an empty list)."""

    def _get_help_string(self, action):
        default = action.default
        if (default is None or default is False or default == [] or "%(default)" in (action.help or "")
                or isinstance(action, argparse._CountAction)):
            return action.help
        return super()._get_help_string(action)


class _Spelling(argparse.Action):
    """Stores like ``store``; an old spelling (``--ks``, ``-k``) still works but says on stderr that it is
    deprecated, so scripts keep running while their authors learn the one spelling."""

    old: tuple[str, ...] = ()

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.old:
            print(f"qrec: {option_string} is deprecated; use {self.option_strings[0]}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _cutoffs(p: argparse.ArgumentParser, *old: str, help: str, **kwargs) -> None:
    """``--k``: the one spelling of the cut-off(s) in every command; ``old`` spellings as deprecated aliases."""
    action = type("Spelling", (_Spelling,), {"old": old})
    note = f" ({', '.join(old)}: deprecated spelling)" if old else ""
    p.add_argument("--k", *old, dest="k", type=int, action=action, metavar="K", help=help + note, **kwargs)


def _run_default(key: str) -> str:
    from qrec.train.config import RunConfig

    value = getattr(RunConfig(), key)
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run (each overrides --config; defaults are RunConfig's)")
    d = _run_default
    g.add_argument("--config", type=Path, help="TOML file with RunConfig keys")
    g.add_argument("--dataset", help=f"registered name (qrec data list) e.g. ml-1m-seq, gowalla (default: {d('dataset')})")
    g.add_argument("--path", dest="data_path", help="explicit data file or folder for the dataset")
    g.add_argument("--protocol", help="split: loo (leave-one-out by time), ratio, given (pre-split files), all (train "
                   "on everything, to serve); for the regression task holdout (random 90/10 of the pairs) or kfold-5 "
                   f"(fold = seed mod 5) (default: {d('protocol')})")
    g.add_argument("--task", choices=["ranking", "regression"], help="ranking (top-k) or regression (squared loss on "
                   f"the ratings / scores, RMSE and MAE) (default: {d('task')})")
    g.add_argument("--l2", type=float, help="regression: L2 on each training pair's looked-up rows and biases "
                   f"(default: {d('l2')})")
    g.add_argument("--min-count", type=int, help=f"one-pass k-core filter (5 reproduces SASRec's ML-1M) (default: {d('min_count')})")
    g.add_argument("--model", help="backbone: gmf, neumf, sasrec, lightgcn, binary-gcn, lowbit-gcn, pop (popularity) "
                   f"(default: {d('model')})")
    g.add_argument("--embedding", help="table spec for users and items, e.g. full, lr48, sq8, dpq64x256, dpq16x8b, "
                   f"mgqe64x256/64@0.1 (default: {d('embedding')})")
    g.add_argument("--user-embedding", help="separate spec for the user tables (default: --embedding)")
    g.add_argument("--dim", type=int, help=f"embedding size d (default: {d('dim')})")
    g.add_argument("--epochs", type=int, help=f"training epochs (default: {d('epochs')})")
    g.add_argument("--batch-size", type=int, help=f"training rows per step (default: {d('batch_size')})")
    g.add_argument("--lr", type=float, help=f"learning rate; rowwise-adagrad wants more, e.g. 0.05 (default: {d('lr')})")
    g.add_argument("--lr-milestones", type=int, nargs="+", metavar="EPOCH", help="step decay: multiply the lr by "
                   "--lr-gamma after each of these epochs, e.g. 20 30 (default: none)")
    g.add_argument("--lr-gamma", type=float, help=f"factor of each --lr-milestones step (default: {d('lr_gamma')})")
    g.add_argument("--optimizer", choices=["adam", "rowwise-adagrad"], help="adam, or rowwise-adagrad: one state float "
                   f"per table row, sparse gradients, touched rows only (qrec.train.optim) (default: {d('optimizer')})")
    g.add_argument("--n-neg", type=int, help=f"pointwise models: sampled negatives per positive (default: {d('n_neg')})")
    g.add_argument("--seed", type=int, help=f"seeds initialisation, sampling and shuffling (default: {d('seed')})")
    g.add_argument("--patience", type=int, help=f"stop after this many epochs without validation gain (0: never) (default: {d('patience')})")
    _cutoffs(g, "--ks", nargs="+", help=f"cut-offs of the metrics, e.g. 20 50; the first selects the epoch (default: {d('ks')})")
    g.add_argument("--eval-every", type=int, help=f"evaluate every n epochs (default: {d('eval_every')})")
    g.add_argument("--option", action="append", metavar="KEY=VALUE", default=[],
                   help="backbone option, repeatable: e.g. --option bits=2 --option estimator=ewgs (lowbit-gcn), "
                        "--option n_layers=2 (GCNs)")
    g.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    g.add_argument("--device", help=f"cpu or cuda (default: {d('device')})")
    g.add_argument("--given-test", choices=["error", "drop", "keep"],
                   help="pre-split data: test rows without a trained user or item, or also in training (default error)")
    _duplicates_option(g)


def _duplicates_option(p) -> None:
    from qrec.data.duplicates import DUPLICATES

    p.add_argument("--duplicates", choices=DUPLICATES, help="a (user, item) pair given twice in the data file: an "
                   "error naming its line (default), or one interaction with the ratings (else the count) summed "
                   "and the latest time, or its first row kept (drop); qrec.fit's duplicates= does the same")


def _add_console_options(p: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``-v`` on a (sub)command that does not define them itself."""
    if "--quiet" not in p._option_string_actions:
        p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only: no progress bars, no per-epoch lines")
    if "--verbose" not in p._option_string_actions:
        p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (debug messages)")


def _config(args):
    from qrec.eval.regression import REGRESSION_METRICS
    from qrec.train.config import RunConfig

    keys = ["task", "dataset", "data_path", "protocol", "min_count", "model", "embedding", "user_embedding", "dim", "epochs",
            "batch_size", "lr", "lr_milestones", "lr_gamma", "optimizer", "l2", "n_neg", "seed", "patience", "threads", "device", "given_test", "duplicates"]
    overrides = {k: getattr(args, k, None) for k in keys}
    overrides["ks"] = tuple(args.k) if getattr(args, "k", None) else None
    overrides["eval_every"] = getattr(args, "eval_every", None)
    base = RunConfig.from_toml(args.config) if args.config else RunConfig()
    ks = overrides["ks"] or base.ks
    if (overrides["task"] or base.task) == "regression":
        if base.select_metric not in REGRESSION_METRICS:
            overrides["select_metric"] = "rmse"
    elif base.select_metric.rpartition("@")[2] != str(ks[0]):  # select on the first requested cut-off
        overrides["select_metric"] = f"ndcg@{ks[0]}"
    options = _parse_options(getattr(args, "option", []))
    if options:
        overrides["model_options"] = base.model_options | options
    return base.replace(**overrides)


def _parse_options(items: list[str]) -> dict:
    """``["bits=2", "estimator=ewgs"]`` -> ``{"bits": 2, "estimator": "ewgs"}`` (numbers and booleans as TOML)."""
    from qrec import toml as tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()  # a bare word: a string
    return out


def cmd_train(args) -> int:
    from qrec.records import build_record, write_record
    from qrec.train.distributed import finish, is_worker
    from qrec.train.runlock import run_folder_lock
    from qrec.train.trainer import fit

    cfg = _config(args)
    out = Path(args.out or Path("runs") / cfg.run_name())
    if is_worker():  # a torchrun rank other than 0: trains its slices, writes nothing
        fit(cfg, out, progress=False)
        finish()
        return 0
    with run_folder_lock(out):  # the record too: a second writer never replaces this run's record
        result = fit(cfg, out, progress=not args.quiet)
        finish()  # leave the process group of a torchrun launch
        record = build_record(result)
        write_record(out / "record.json", record)
    if args.record:
        write_record(Path(args.record), record)
    print(summary_line(record))
    return 0


def summary_line(rec: dict) -> str:
    t = rec["metrics"]["test"]
    shown = "  ".join([f"{k} {100 * v:.2f}%" for k, v in t.items() if "@" in k and k.split("@")[0] in ("hr", "ndcg", "recall")]
                      + [f"{k} {t[k]:.4f}" for k in ("rmse", "mae") if k in t])  # regression: on the data's scale
    return (f"{rec['run']}: test {shown}  size {rec['size']['relative']:.1%} of full "
            f"({rec['size']['serving_bits'] / 8 / 2**20:.2f} MiB)  best epoch {rec['best_epoch']}  {rec['train_seconds']:.0f}s")


def cmd_evaluate(args) -> int:
    from qrec.eval.evaluate import format_metrics
    from qrec.models.evaluate import evaluate_model

    artifact = Path(args.checkpoint).suffix == ".safetensors"
    if artifact and args.last:
        raise QrecError("--last applies to a run's checkpoint; an artifact holds one model")
    model, cfg, split = _load_artifact(args.checkpoint) if artifact else _load_checkpoint_model(args.checkpoint, last=args.last)
    if cfg.task == "regression":  # RMSE / MAE of the held-out scores; nothing is ranked or masked
        from qrec.train.tasks import make_task

        metrics = make_task(cfg, split).evaluate(model, args.stage)
    else:
        cfg.check_catalogue(split.n_items, args.k)
        metrics = evaluate_model(model, split, args.stage, ks=args.k or cfg.ks, recall_denominator=cfg.recall_denominator,
                                 progress=not args.quiet, mask=args.mask)
    serving, full = model.serving_bits(), model.full_bits()
    if args.json:
        print(json.dumps({"artifact" if artifact else "checkpoint": args.checkpoint, "stage": args.stage, "mask": args.mask,
                          "metrics": metrics, "serving_bits": serving, "full_bits": full}, indent=1))
        return 0
    what = "exported model as served" if artifact else "last epoch" if args.last else "selected epoch"
    print(f"{args.checkpoint} ({what}): {cfg.model}, {cfg.embedding} tables, d = {cfg.dim}, {cfg.dataset}")
    if cfg.task == "regression":
        print(f"{args.stage} split, {metrics['pairs']:,} scored pairs: RMSE {metrics['rmse']:.4f}, MAE {metrics['mae']:.4f}")
    else:
        print(f"{args.stage} split, {metrics['users']:,} users, mask {args.mask}; metrics in %\n")
        print(format_metrics(metrics))
    print(f"\nmodel size {serving / 8 / 2**20:.2f} MiB = {serving / full:.1%} of the float32 model ({full / 8 / 2**20:.2f} MiB)")
    return 0


def _load_artifact(path: str):
    """The served model of an artifact (its codes, not the training state) and its dataset's split, to
    evaluate on: a sequential model reads each stage's history from the split, as the checkpoint did."""
    from qrec.data.sequences import history_windows
    from qrec.export.artifact import load_model
    from qrec.train.config import RunConfig
    from qrec.train.pipeline import load_split

    model, manifest = load_model(path)
    cfg = RunConfig.from_dict(manifest["config"], source=path)
    try:
        split = load_split(cfg)
    except QrecError as e:  # the file was chosen by the artifact, not by the user: echo none of its content
        raise QrecError(f"{path}: its manifest names the data {cfg.dataset!r} at {cfg.data_path}, which cannot be "
                        f"read as such ({type(e).__name__}; `qrec data info {cfg.dataset} --path ...` on your own "
                        "copy shows why)") from None
    if model.loss_kind == "sequence":  # SASRec
        model.set_windows(history_windows(split.train, split.valid, model.maxlen))
    return model, cfg, split


def _load_checkpoint_model(run: str, last: bool = False):
    from qrec.train.trainer import load_trained

    return load_trained(run, last)


def cmd_export(args) -> int:
    from qrec.export.artifact import export_model, history_length, serving_data

    model, cfg, split = _load_checkpoint_model(args.run)
    manifest = export_model(model, cfg.to_dict(), args.output, serving_data(split, history_length(model)))
    size = Path(args.output).stat().st_size
    mib = lambda bits: f"{bits / 8 / 2**20:.2f} MiB"  # noqa: E731
    print(f"wrote {args.output}: {size / 2**20:.2f} MiB on disk; model {mib(manifest['serving_bits'])}"
          f" = {manifest['serving_bits'] / manifest['full_bits']:.1%} of the float32 model; besides the model: "
          f"id vocabularies {mib(manifest['vocab_bits'])}, seen items and histories {mib(manifest['history_bits'])}")
    if args.faiss:
        from qrec.export.faiss_index import write_faiss_index

        print(write_faiss_index(model, args.faiss))
    return 0


def cmd_recommend(args) -> int:
    from qrec.serving.model import Model

    model = Model.load(args.artifact)
    items, scores = model.recommend(args.user, args.k, filter_seen=not args.keep_seen)
    for user, row, val in zip(args.user, items, scores):
        keep = val > -float("inf")
        print(json.dumps({"user": user, "items": row[keep].tolist(), "scores": [round(float(v), 4) for v in val[keep]]}))
    return 0


def cmd_serve(args) -> int:
    from qrec.serving.http import serve

    return serve(args.artifact, host=args.host, port=args.port, max_batch=args.max_batch, access_log=args.access_log,
                 threads=args.threads or None)


def cmd_data(args) -> int:
    from qrec.data.datasets import list_datasets, load_dataset, resolved_source
    from qrec.data.stats import describe

    if args.data_cmd == "list":
        for name, about in list_datasets().items():
            print(f"{name:20s} {about}")
        return 0
    data = load_dataset(args.name, path=args.path, duplicates=args.duplicates or "error")
    info = {"dataset": args.name, "source": str(resolved_source(args.name, path=args.path))}
    info.update(describe(data))
    print(json.dumps(info, indent=1, default=str))
    return 0


def cmd_demo(args) -> int:
    from qrec.demo import run_demo

    return run_demo(epochs=args.epochs, out=Path(args.out))


def cmd_experiment(args) -> int:
    from qrec.experiments.runner import run_preset

    results = Path(args.results)
    report = Path("RESULTS.md") if results == Path("results") else results / "RESULTS.md"  # never clobber ours
    failed = run_preset(args.preset, results_dir=results, report=report, max_runs=args.max_runs,
                        seeds=args.seeds, only=args.only, dry_run=args.dry_run, threads=args.threads,
                        device=args.device, jobs=args.jobs, dataset=args.dataset, data_path=args.path,
                        duplicates=args.duplicates)
    return 1 if failed else 0


def cmd_ptq(args) -> int:
    from qrec.experiments.ptq import ptq_table

    specs = {"specs": tuple(args.specs)} if args.specs else {}
    records = Path(args.records) if args.records else None
    print(ptq_table(args.run, tuple(args.bits), tuple(args.k) if args.k else None, records=records, **specs))
    if records:
        print(f"\nrecords in {records}/ (qrec plot --results {records}; qrec report --results {records})")
    return 0


def cmd_codes(args) -> int:
    from qrec.experiments.codesim import fig8, format_fig8, plot_fig8

    results = fig8(args.runs, args.genres, tuple(args.categories), args.per_set, args.seed)
    print(format_fig8(results, args.categories))
    if args.output:
        print(f"wrote {plot_fig8(results, args.categories, Path(args.output))}")
    return 0


def cmd_report(args) -> int:
    from qrec.experiments.report import write_results_md

    path = write_results_md(Path(args.results), Path(args.output))
    print(f"wrote {path}")
    return 0


def cmd_plot(args) -> int:
    from qrec.experiments.plots import plot_all

    for p in plot_all(Path(args.results), Path(args.output)):
        print(f"wrote {p}")
    return 0


def parser() -> argparse.ArgumentParser:
    from qrec import __version__

    p = argparse.ArgumentParser(prog="qrec", formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"qrec {__version__}")
    sub = p.add_subparsers(title="commands", dest="cmd", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train one model, checkpoint every epoch, write a JSON record")
    _add_run_options(t)
    t.add_argument("--out", help="run folder for checkpoint and record (default runs/<run name>); an existing checkpoint resumes")
    t.add_argument("--record", help="also write the record to this path (e.g. results/adhoc/x.json)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint, or an exported model as served, with full ranking")
    e.add_argument("checkpoint", help="run folder, checkpoint file, or .safetensors artifact (qrec export)")
    e.add_argument("--stage", choices=["valid", "test"], default="test", help="which held-out part to rank")
    _cutoffs(e, nargs="+", help="cut-offs (default: the run's)")
    e.add_argument("--json", action="store_true", help="one JSON object (fractions, full precision) instead of the table")
    e.add_argument("--last", action="store_true", help="use the last epoch, not the best validation epoch")
    e.add_argument("--mask", choices=["seen", "train", "none"], default="seen",
                   help="items that cannot be recommended: every known one (default, qrec's protocol), the "
                        "training items only (the validation item stays rankable at test), or none")
    e.set_defaults(fn=cmd_evaluate)

    d = sub.add_parser("demo", help="train full and quantized GMF and LightGCN on the embedded MovieLens-100K; print a table")
    d.add_argument("--epochs", type=int, default=10, help="epochs per model")
    d.add_argument("--out", default="runs/demo", help="folder of the demo's runs")
    d.set_defaults(fn=cmd_demo)

    x = sub.add_parser("experiment", help="run a preset grid (resumable: finished records are skipped)")
    x.add_argument("preset", help="preset name (see src/qrec/presets) or a TOML path")
    x.add_argument("--results", default="results", help="records folder (default results/; another folder gets "
                                                         "its own RESULTS.md, the repository's is left alone)")
    x.add_argument("--max-runs", type=int, help="stop after this many new runs")
    x.add_argument("--seeds", type=int, help="override the preset's seed count")
    x.add_argument("--only", help="run only the runs whose name this regular expression finds: a plain substring "
                   "('lowbit'), or anchored ('^gowalla-lightgcn': not the students, whose names hold their teacher's)")
    x.add_argument("--threads", type=int, help="torch threads per run")
    x.add_argument("--jobs", type=int, default=1, help="runs trained at once, in separate processes (each with "
                                                       "--threads threads; logs in runs/<preset>/<run>/train.log)")
    x.add_argument("--device", help="cpu (default) or cuda; CUDA numbers differ from the CPU's in float rounding, "
                                    "so a record keeps its device and never stands in for a CPU run")
    x.add_argument("--dry-run", action="store_true", help="list what would run, with the time each should take "
                   "(from finished seeds, else from a few timed training steps)")
    x.add_argument("--dataset", help="run the grid on this dataset instead (registered name, or the format of "
                                     "--path); records go to results/<preset>-<dataset>/")
    x.add_argument("--path", help="a local file or folder for --dataset (records: results/<preset>-<file stem>/)")
    _duplicates_option(x)
    x.set_defaults(fn=cmd_experiment)

    r = sub.add_parser("report", help="a Markdown report (RESULTS.md) of any folder of records: mean +/- std over seeds")
    r.add_argument("--results", default="results", help="folder of JSON records (searched recursively), e.g. from "
                   "qrec train --record, qrec experiment, qrec ptq --records")
    r.add_argument("--output", default="RESULTS.md", help="Markdown file to write (its folder is created)")
    r.set_defaults(fn=cmd_report)

    pl = sub.add_parser("plot", help="figures of any folder of records: quality vs model size (Pareto frontier), "
                                     "training curves")
    pl.add_argument("--results", default="results", help="folder of JSON records (searched recursively); one figure "
                    "set per preset or sub-folder")
    pl.add_argument("--output", default="docs/figures", help="folder for the PNGs (created)")
    pl.set_defaults(fn=cmd_plot)

    pq = sub.add_parser("ptq", help="compress a trained float run after training (lightgcn: 1-8 bits, ITQ, per layer; "
                                    "gmf/neumf: SQ, LRF, DPQ, MGQE fitted to its tables) and evaluate")
    pq.add_argument("run", help="a lightgcn, or gmf / neumf full-table, run folder (qrec train --out, or runs/<preset>/<run>)")
    pq.add_argument("--bits", type=int, nargs="+", default=[1, 2, 4, 8], help="b-bit codes (lightgcn) / sq<b> (gmf, neumf)")
    pq.add_argument("--specs", nargs="+", help="gmf / neumf: formats besides sq<b> (default: lr48, dpq at D = 64/16/8 "
                    "and mgqe at D = 64/16, K = 256 and 64)")
    _cutoffs(pq, nargs="+", help="cut-offs (default: the run's)")
    pq.add_argument("--records", help="also write one JSON record per row into this folder (for qrec plot / report)")
    pq.set_defaults(fn=cmd_ptq)
    cs = sub.add_parser("codes", help="MGQE Fig. 8: how alike the item codes of same-category items are "
                                      "(runs with sq / dpq / mgqe item tables, MovieLens genres)")
    cs.add_argument("runs", nargs="+", help="run folders")
    cs.add_argument("--genres", help="movies.dat (ML-1M) or u.item (ML-100K) of the runs' dataset (default: the "
                                     "one beside the runs' data files)")
    cs.add_argument("--categories", nargs="+", default=["Sci-Fi", "Romance", "Animation", "Horror"],
                    help="genres compared")
    cs.add_argument("--per-set", type=int, default=50, help="items per category in each of the two sets")
    cs.add_argument("--seed", type=int, default=0, help="seeds the choice of items")
    cs.add_argument("--output", help="heatmap PNG (one panel per run)")
    cs.set_defaults(fn=cmd_codes)
    ex = sub.add_parser("export", help="write a trained run's served form (codes, codebooks, dense weights) as safetensors")
    ex.add_argument("run", help="run folder or checkpoint file")
    ex.add_argument("output", help="e.g. model.safetensors")
    ex.set_defaults(fn=cmd_export)

    ex.add_argument("--faiss", metavar="OUT.index", help="also write a FAISS index of the item codes (1-bit sign "
                    "codes: IndexBinaryFlat; DPQ / shared MGQE codes: IndexPQ with qrec's codebooks)")
    _add_serving_parsers(sub)

    dt = sub.add_parser("data", help="datasets: list, info")
    dsub = dt.add_subparsers(dest="data_cmd", required=True)
    dsub.add_parser("list", help="registered datasets")
    di = dsub.add_parser("info", help="counts, sparsity, popularity skew")
    di.add_argument("name", help="registered name (qrec data list)")
    di.add_argument("--path", help="a local file or folder instead of the registered places")
    _duplicates_option(di)
    dt.set_defaults(fn=cmd_data)
    _finish(p, sub)
    return p


def _add_serving_parsers(sub) -> None:
    rc = sub.add_parser("recommend", help="top-k items for raw user ids from an exported model alone (every "
                                          "item in the user's history filtered)")
    rc.add_argument("artifact", help="a .safetensors file written by qrec export")
    rc.add_argument("--user", nargs="+", required=True, help="raw user ids as in the data file")
    _cutoffs(rc, "-k", default=10, help="items recommended per user")
    rc.add_argument("--keep-seen", action="store_true", help="do not filter the items the user has seen")
    rc.set_defaults(fn=cmd_recommend)

    sv = sub.add_parser("serve", help="HTTP service of an exported model (POST /recommend, GET /similar/{item}, "
                                      "/health, /metadata); loopback by default")
    sv.add_argument("artifact", help="a .safetensors file written by qrec export")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (loopback: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port")
    sv.add_argument("--max-batch", type=int, default=256, help="most users scored in one call when requests queue up")
    sv.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    sv.add_argument("--threads", type=int, default=1, help="threads of the scoring kernels (default 1: best on a "
                                                           "small or shared machine; 0: torch's and numba's default)")
    sv.set_defaults(fn=cmd_serve)


def _finish(p: argparse.ArgumentParser, sub) -> None:
    """What every command shares, added once for all (so a new command gets it without a line of its own):
    the defaults formatter and ``--quiet`` / ``-v``."""
    p.description = __doc__.strip()
    for sp in _all_parsers(sub):
        sp.formatter_class = HelpFormatter
        _add_console_options(sp)


def _all_parsers(sub):
    """Every parser under a subparsers action, nested ones (``data list``) included."""
    for sp in sub.choices.values():
        yield sp
        for action in sp._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from _all_parsers(action)


def main(argv=None) -> int:
    try:
        try:
            return _run(argv)
        finally:  # a reader that stopped early (qrec ... | head) is found here, not at interpreter exit
            sys.stdout.flush()
    except BrokenPipeError:  # from a command, or from the flush (also after argparse's --help and exit)
        return _reader_gone()


def _run(argv) -> int:
    args = parser().parse_args(argv)
    setup_console(-1 if args.quiet else args.verbose)
    try:
        return args.fn(args)
    except BrokenPipeError:
        raise
    except (QrecError, ValueError, OSError) as e:
        print(f"qrec: error: {e}", file=sys.stderr)
        return 2
    except ArithmeticError as e:  # FloatingPointError (a diverged loss), ZeroDivisionError, OverflowError
        print(f"qrec: error: numeric failure ({type(e).__name__}): {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qrec: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


PIPE_CLOSED = 141  # what a shell reports for a writer stopped by SIGPIPE (128 + 13), as `yes | head` leaves it


def _reader_gone() -> int:
    """The reader of stdout went away (``qrec data list | head -1``): stop quietly, as shell tools do. stdout is
    pointed at /dev/null first, so that the interpreter's last flush of what is still buffered raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (captured): nothing will be flushed to a closed pipe
        pass
    return PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
