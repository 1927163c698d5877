"""Presets: small TOML files naming a grid of (backbone, compressor, seed) runs and the paper's figures.

A preset may ``extends = "<other preset>"`` to run the same grid on another dataset (``qrec experiment
<preset> --dataset <name> [--path <file>]`` does the same without a file, see ``Preset.on_dataset``): it inherits the other's
grids, metrics and reference row, merges ``[base]`` over the other's, and keeps only its own ``[paper]``
figures (those belong to one dataset). Strings in ``model_options`` may name ``{preset}`` and ``{dataset}``
(a teacher run: ``"runs/{preset}/{dataset}-lightgcn-full-s0"``), so an extending preset finds its own teachers.
"""

from __future__ import annotations

import itertools
from qrec import toml as tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from qrec.train.config import RunConfig

GRID_AXES = ("model", "embedding", "user_embedding", "dim", "lr", "batch_size", "epochs", "eval_every", "model_options")


@dataclass
class Preset:
    name: str
    description: str
    base: dict
    grids: list[dict]
    paper: dict = field(default_factory=dict)      # "model|embedding" -> {"hr@10": %, "ndcg@10": %, "size": %}
    protocol_note: str = ""
    metrics: list[str] = field(default_factory=lambda: ["hr@10", "ndcg@10"])
    reference: str = ""  # "model|embedding" row that RESULTS.md compares every row's first metric to
    command: str = ""    # how to run it, for RESULTS.md; default ``qrec experiment <name>``

    def configs(self, seeds: int | None = None) -> list[RunConfig]:
        """Every run of the grid, cheapest seeds first so that partial grids cover all rows early."""
        runs = []
        for grid in self.grids:
            axes = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items() if k in GRID_AXES}
            n_seeds = seeds if seeds is not None else int(grid.get("seeds", 1))
            for seed in range(n_seeds):
                for combo in itertools.product(*axes.values()):
                    raw = dict(self.base) | dict(zip(axes, combo)) | {"seed": seed}
                    if "model_options" in raw:
                        raw["model_options"] = self._expand(raw["model_options"])
                    runs.append(RunConfig.from_dict(raw, source=f"preset {self.name}"))
        return runs

    def on_dataset(self, dataset: str, path: str | None = None) -> "Preset":
        """The same grid and protocol on another dataset, as an ``extends`` preset would run it: named
        ``<preset>-<dataset>`` (or ``-<file stem>`` with a path), without the paper's figures (they belong to
        the original dataset)."""
        tag = Path(path).stem if path else dataset
        command = f"qrec experiment {self.name} --dataset {dataset}" + (f" --path {path}" if path else "")
        return replace(self, name=f"{self.name}-{tag}", base=self.base | {"dataset": dataset, "data_path": path},
                       paper={}, command=command)

    def _expand(self, options: dict) -> dict:
        names = {"preset": self.name, "dataset": self.base.get("dataset", "")}
        return {k: v.format(**names) if isinstance(v, str) else v for k, v in options.items()}


def preset_path(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".toml" and p.exists():
        return p
    bundled = resources.files("qrec") / "presets" / f"{name}.toml"
    if not bundled.is_file():
        raise ValueError(f"unknown preset {name!r}; bundled presets: {', '.join(preset_names())}")
    return Path(str(bundled))


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in (resources.files("qrec") / "presets").iterdir() if p.name.endswith(".toml"))


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The preset's TOML with its ``extends`` chain resolved (bundled names, or paths beside the file)."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    parent_name = raw.pop("extends", None)
    if parent_name is None:
        return raw
    beside = path.parent / f"{parent_name}.toml"
    parent_path = beside if beside.exists() else preset_path(parent_name)
    if parent_path.resolve() in seen:
        raise ValueError(f"{path}: preset extends itself through {parent_name!r}")
    parent = _read(parent_path, seen + (path.resolve(),))
    parent.pop("paper", None)  # the parent's figures are for its own dataset
    parent.pop("name", None)
    return parent | raw | {"base": parent.get("base", {}) | raw.get("base", {})}


def load_preset(name: str) -> Preset:
    path = preset_path(name)
    raw = _read(path)
    try:
        return Preset(name=raw.get("name", path.stem), description=raw.get("description", ""), base=raw.get("base", {}),
                      grids=raw["grid"], paper=raw.get("paper", {}), protocol_note=raw.get("protocol_note", ""),
                      metrics=raw.get("metrics", ["hr@10", "ndcg@10"]), reference=raw.get("reference", ""))
    except KeyError as e:
        raise ValueError(f"{path}: preset needs a [[grid]] table ({e})") from e
