"""``qrec experiment``: run a preset's grid, one record per (config, seed), skipping finished ones.

A grid stopped anywhere resumes: finished runs have records and are skipped, an interrupted run resumes
from its last epoch checkpoint under ``runs/<preset>/``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from qrec.experiments.presets import load_preset, preset_path
from qrec.experiments.report import write_results_md
from qrec.records import build_record, read_records, write_record
from qrec.errors import QrecError, SpecError
from qrec.train.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from qrec.train.trainer import fit, probe_epoch_seconds

LOG = logging.getLogger("qrec.experiment")


def record_path(results_dir: Path, preset: str, run_name: str) -> Path:
    return results_dir / preset / f"{run_name}.json"


def _config_key(config: dict) -> str:
    """Identity of a run: the config without ``threads``, which changes only float rounding (BLAS splits
    its reductions by thread), so a run finished with other threads is the same experiment, shared."""
    return _key_without(config, "threads")


def _key_without(config: dict, *dropped: str) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in dropped}, sort_keys=True)


def finished_runs(results_dir: Path) -> dict[str, dict]:
    """Records of every finished run under ``results_dir``, keyed by config: presets share identical runs
    (Fig. 7's curves are Table 3's full/MGQE runs) instead of training them twice."""
    done = {}
    for r in _run_records(results_dir):
        key = _config_key(r["config"])
        if key not in done or "shared_from" in done[key]:  # point at the trained record, not at a copy of it
            done[key] = r
    return done


def _run_records(results_dir: Path) -> list[dict]:
    """The records of trained runs under ``results_dir`` (not ``qrec ptq`` rows, which have no config)."""
    return [r for r in (read_records(results_dir) if results_dir.exists() else []) if "config" in r]


def run_preset(name: str, results_dir: Path = Path("results"), max_runs: int | None = None, seeds: int | None = None,
               only: str | None = None, dry_run: bool = False, threads: int | None = None, report: Path | None = Path("RESULTS.md"),
               device: str | None = None, jobs: int = 1, dataset: str | None = None, data_path: str | None = None,
               duplicates: str | None = None) -> int:
    """Run the preset's unfinished (config, seed) pairs, ``jobs`` at a time (separate processes; each run's
    log then goes to ``runs/<preset>/<run>/train.log``). ``dataset`` / ``data_path``: the same grid on
    another dataset (``Preset.on_dataset``); ``duplicates``: how its repeated pairs are read (``RunConfig``).
    Returns the number of runs that failed."""
    preset = load_preset(name)
    if duplicates:
        preset = replace(preset, base=preset.base | {"duplicates": duplicates})
    data_path = str(Path(data_path).expanduser().resolve()) if data_path else None  # as its runs store it
    if dataset or data_path:
        if not dataset:
            raise SpecError("--path needs --dataset: the format or registered name the file is read as")
        preset = preset.on_dataset(dataset, data_path)
    configs = [c for c in preset.configs(seeds) if not only or _selected(only, c.run_name())]
    if not dry_run:
        done = finished_runs(results_dir)
        for c in configs:  # identical finished runs from other presets are shared, not retrained
            _share_twin(c, results_dir, preset.name, done)
    todo = [c for c in configs if not record_path(results_dir, preset.name, c.run_name()).exists()]
    LOG.info(f"preset {preset.name}: {len(configs)} runs, {len(configs) - len(todo)} done, {len(todo)} to run")
    if dry_run:  # probes time the runs as they would run: same threads and device
        _print_plan([c.replace(threads=threads, device=device) for c in todo], preset.name, results_dir)
        return 0
    # neither threads nor device is in a run's name; device is in its record
    todo = [c.replace(threads=threads, device=device) for c in (todo[:max_runs] if max_runs else todo)]
    for cfg in todo:  # teachers first, in this process, so that parallel students never train one twice
        _ensure_teacher(cfg, preset.name, preset.configs(seeds), threads)
    extra = {"preset": preset.name, "preset_file": str(preset_path(name).resolve()) if name.endswith(".toml") else None}
    if dataset:  # how the report finds the derived preset again
        extra["preset_on_dataset"] = {"preset": name, "dataset": dataset, "path": data_path}
    runs = _in_processes(todo, jobs, results_dir, extra) if jobs > 1 else (
        (cfg, _train_and_record(cfg, results_dir, extra)) for cfg in todo)
    failed, t0 = 0, time.time()
    for i, (cfg, rec) in enumerate(runs):
        if isinstance(rec, BaseException):
            failed += 1
            LOG.error(f"[{i + 1}/{len(todo)}] {cfg.run_name()} FAILED: {rec!r} (log: {_log_path(cfg, preset.name)})")
            continue
        t = rec["metrics"]["test"]
        LOG.info(f"[{i + 1}/{len(todo)}] {cfg.run_name()}: " + " ".join(f"{k} {100 * t[k]:.2f}%" for k in preset.metrics if k in t)
                 + f" size {rec['size']['relative']:.1%} of full d={cfg.dim} ({sum(h['seconds'] for h in rec['history']):.0f}s"
                 f" of training, {time.time() - t0:.0f}s into the grid)")
        if report:
            write_results_md(results_dir, report)
    return failed



def _selected(only: str, run_name: str) -> bool:
    """``--only``: a regular expression searched in the run name (a plain substring is one); a malformed one is
    matched as text."""
    try:
        return re.search(only, run_name) is not None
    except re.error:
        return only in run_name

def _train_and_record(cfg, results_dir: Path, extra: dict) -> dict:
    """One run: train (resuming its checkpoint; its log in ``runs/<preset>/<run>/train.log``), then write
    its record. Top level, so worker processes can run it. A twin finished meanwhile by another grid (two
    presets share runs, and grids run side by side) is copied."""
    twin = _share_twin(cfg, results_dir, extra["preset"], finished_runs(results_dir))
    if twin is not None:
        return twin
    result = fit(cfg, _log_path(cfg, extra["preset"]).parent, progress=False)
    rec = build_record(result, extra=extra)
    write_record(record_path(results_dir, extra["preset"], cfg.run_name()), rec)
    return rec


def _share_twin(cfg, results_dir: Path, preset_name: str, done: dict[str, dict]) -> dict | None:
    """The record of a finished run with ``cfg``'s numbers, or None: this preset's own, or another preset's,
    which is then copied into this preset (identical runs are shared, not retrained)."""
    target = record_path(results_dir, preset_name, cfg.run_name())
    twin = done.get(_config_key(cfg.to_dict()))
    if twin is None:
        return None
    record = {k: v for k, v in twin.items() if k != "_path"}
    if Path(twin["_path"]).resolve() == target.resolve():
        return record
    record |= {"preset": preset_name, "shared_from": twin["_path"]}
    if not target.exists():
        write_record(target, record)
    return record


def _log_path(cfg, preset_name: str) -> Path:
    return Path("runs") / preset_name / cfg.run_name() / "train.log"


def _in_processes(todo, jobs: int, results_dir: Path, extra: dict):
    """``(config, record or exception)`` as runs finish, ``jobs`` processes at a time ("spawn": no forked torch
    state). A failed run does not stop the others; its exception is yielded in place of its record."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_and_record, cfg, results_dir, extra): cfg
                   for cfg in todo}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], error if error is not None else future.result()


def _print_plan(todo, preset_name: str, results_dir: Path) -> None:
    """``--dry-run``: one line per run to do (its name first, so the list stays scriptable), with how far its
    checkpoint got and how long it should take: the median epoch time of the finished seeds of the same
    config (any preset), else a short timed probe of the config on this machine (``probe_epoch_seconds``),
    scaled to the epochs left. The total goes to stderr."""
    seconds: dict[str, list[float]] = {}
    for r in _run_records(results_dir):
        if r["config"].get("device", "cpu") == "cpu" and "shared_from" not in r and r.get("history"):
            seconds.setdefault(_plan_key(r["config"]), []).append(sum(h["seconds"] for h in r["history"]) / len(r["history"]))
    probes: dict[str, float | str] = {}
    total, counts = 0.0, Counter()
    for c in todo:
        ckpt = Path("runs") / preset_name / c.run_name() / CHECKPOINT
        done = _checkpoint_epoch(ckpt)
        line = [c.run_name(), "not started" if done == 0 else f"epoch {done}/{c.epochs} checkpointed" if done > 0
                else f"{ckpt} is unreadable: the run will stop on it"]
        done, key = max(done, 0), _plan_key(c.to_dict())
        if key in seconds:
            per_epoch, how, source = float(np.median(seconds[key])), f"median of {len(seconds[key])} finished seed(s)", "finished seeds"
        else:
            if key not in probes:
                probes[key] = _probe(c)
            per_epoch, how, source = probes[key], "timed probe of a few training steps", "a timed probe"
        if isinstance(per_epoch, str):
            line.append(f"no estimate: {per_epoch}")
            counts["without an estimate"] += 1
        else:
            total += per_epoch * (c.epochs - done)
            counts[f"from {source}"] += 1
            line.append(f"~{_duration(per_epoch * (c.epochs - done))} of training ({how})")
        print("\t".join(line))
    if todo:
        sources = ", ".join(f"{n} {how}" for how, n in counts.items())
        LOG.info(f"estimated {_duration(total)} of training, one run at a time ({sources})")


def _plan_key(config: dict) -> str:
    return _key_without(config, "threads", "seed", "device")


def _probe(cfg) -> float | str:
    """Seconds per epoch of ``cfg`` from a timed probe, or why there is none (e.g. its data is missing)."""
    # a teacher run only sets a student's starting point, not its cost: probe the same model from scratch
    options = {k: v for k, v in cfg.model_options.items() if k != "teacher"}
    try:
        return probe_epoch_seconds(cfg.replace(model_options=options))
    except QrecError as e:
        return str(e).splitlines()[0]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _checkpoint_epoch(path: Path) -> int:
    """Epochs a run's checkpoint holds (0 without one, -1 if it cannot be read)."""
    if not path.exists():
        return 0
    try:
        return load_checkpoint(path)["state"]["epoch"]
    except CheckpointError:  # a dry run reports the file; the real run raises on it with the loader's message
        return -1


def _ensure_teacher(cfg, preset_name: str, configs, threads: int | None) -> None:
    """A student (``model_options.teacher = "runs/<preset>/<run>"``) needs its teacher's checkpoint. On a fresh
    clone the teacher's record exists but its checkpoint does not: retrain that run of the preset (same
    config, same numbers) into the expected folder."""
    teacher = cfg.model_options.get("teacher")
    if not teacher or (Path(teacher) / CHECKPOINT).exists():
        return
    for c in configs:
        if Path("runs") / preset_name / c.run_name() == Path(teacher):
            LOG.info(f"training the teacher {c.run_name()} first (its checkpoint {teacher} is missing)")
            fit(c.replace(threads=threads) if threads else c, Path(teacher), progress=False)
            return
    raise SpecError(f"{cfg.run_name()}: teacher checkpoint {teacher}/{CHECKPOINT} is missing and no run of preset "
                    f"{preset_name} writes it")
