"""``qrec experiment``: run a preset's grid, one record per (config, seed), skipping finished ones.

A grid stopped anywhere resumes: finished runs have records and are skipped, an interrupted run resumes
from its last epoch checkpoint under ``runs/<preset>/``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from qrec.experiments.presets import load_preset, preset_path
from qrec.experiments.report import write_results_md
from qrec.records import build_record, read_records, write_record
from qrec.errors import SpecError
from qrec.train.trainer import CHECKPOINT, fit


def record_path(results_dir: Path, preset: str, run_name: str) -> Path:
    return results_dir / preset / f"{run_name}.json"


def _config_key(config: dict) -> str:
    """Identity of a run's numbers: the config without knobs that do not change them (threads)."""
    return json.dumps({k: v for k, v in config.items() if k != "threads"}, sort_keys=True)


def finished_runs(results_dir: Path) -> dict[str, dict]:
    """Records of every finished run under ``results_dir``, keyed by config: presets share identical runs
    (Fig. 7's curves are Table 3's full/MGQE runs) instead of training them twice."""
    return {_config_key(r["config"]): r for r in read_records(results_dir)} if results_dir.exists() else {}


def run_preset(name: str, results_dir: Path = Path("results"), max_runs: int | None = None, seeds: int | None = None,
               only: str | None = None, dry_run: bool = False, threads: int | None = None, report: Path | None = Path("RESULTS.md"),
               device: str | None = None) -> int:
    preset = load_preset(name)
    configs = [c for c in preset.configs(seeds) if not only or only in c.run_name()]
    done = finished_runs(results_dir)
    for c in configs:  # identical finished runs from other presets are shared, not retrained
        target = record_path(results_dir, preset.name, c.run_name())
        twin = done.get(_config_key(c.to_dict()))
        if twin and not target.exists() and not dry_run:
            write_record(target, {k: v for k, v in twin.items() if k != "_path"} | {"preset": preset.name, "shared_from": twin["_path"]})
    todo = [c for c in configs if not record_path(results_dir, preset.name, c.run_name()).exists()]
    print(f"preset {preset.name}: {len(configs)} runs, {len(configs) - len(todo)} done, {len(todo)} to run", file=sys.stderr)
    if dry_run:
        for c in todo:
            print(c.run_name())
        return 0
    for i, cfg in enumerate(todo[:max_runs] if max_runs else todo):
        cfg = cfg.replace(threads=threads, device=device)  # neither is in the run's name; device is in its record
        t0 = time.time()
        _ensure_teacher(cfg, preset.name, preset.configs(seeds), threads)
        result = fit(cfg, Path("runs") / preset.name / cfg.run_name(), progress=False, log=_log)
        rec = build_record(result, extra={"preset": preset.name, "preset_file": str(preset_path(name).resolve()) if name.endswith(".toml") else None})
        write_record(record_path(results_dir, preset.name, cfg.run_name()), rec)
        t = rec["metrics"]["test"]
        print(f"[{i + 1}/{len(todo)}] {cfg.run_name()}: " + " ".join(f"{k} {t[k]:.4f}" for k in preset.metrics if k in t)
              + f" size {rec['size']['relative']:.1%} of full d={cfg.dim} ({time.time() - t0:.0f}s)", file=sys.stderr)
        if report:
            write_results_md(results_dir, report)
    return 0


def _log(line: str) -> None:
    print("   ", line, file=sys.stderr)


def _ensure_teacher(cfg, preset_name: str, configs, threads: int | None) -> None:
    """A student (``model_options.teacher = "runs/<preset>/<run>"``) needs its teacher's checkpoint. On a fresh
    clone the teacher's record exists but its checkpoint does not: retrain that run of the preset (same
    config, same numbers) into the expected folder."""
    teacher = cfg.model_options.get("teacher")
    if not teacher or (Path(teacher) / CHECKPOINT).exists():
        return
    for c in configs:
        if Path("runs") / preset_name / c.run_name() == Path(teacher):
            print(f"    training the teacher {c.run_name()} first (its checkpoint {teacher} is missing)", file=sys.stderr)
            fit(c.replace(threads=threads) if threads else c, Path(teacher), progress=False, log=_log)
            return
    raise SpecError(f"{cfg.run_name()}: teacher checkpoint {teacher}/{CHECKPOINT} is missing and no run of preset "
                    f"{preset_name} writes it")
