"""One frozen dataclass describes a run; TOML presets and CLI overrides both land here."""

from __future__ import annotations

import dataclasses
from qrec import toml as tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path


DEFAULT_DIM = 64
TASKS = ("ranking", "regression")
# Fields added after records existed: written only when set, so older checkpoints and records keep their identity.
_OMITTED_AT_DEFAULT = {"task": "ranking", "l2": 0.0}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. Two runs with equal configs give equal numbers on the CPU."""

    task: str = "ranking"                  # ranking (top-k over all items) | regression (squared loss on scores)
    dataset: str = "ml-100k"
    data_path: str | None = None           # explicit file/folder; else the registry resolves the name
    protocol: str = "loo"                  # loo | ratio | given (pre-split files)
    min_count: int = 0                     # one-pass k-core filter (SASRec's ML-1M uses 5)
    model: str = "gmf"
    embedding: str = "full"                # spec for user and item tables, e.g. "mgqe64x256/64@0.1"
    user_embedding: str | None = None      # override the user tables' spec
    dim: int = DEFAULT_DIM
    init_std: float | None = None          # None: the backbone's default (0.01 for NCF models, 0.1 for LightGCN)
    epochs: int = 20
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    l2: float = 0.0                        # regression: L2 on each training pair's looked-up rows (biased MF's reg)
    n_neg: int = 4                         # pointwise models: sampled negatives per positive
    seed: int = 0
    eval_every: int = 1                    # validate every n epochs (pre-split data: test curve for plots only)
    patience: int = 0                      # epochs without validation gain before stopping; 0 = never stop
    select_metric: str = "ndcg@10"         # validation metric that picks the reported epoch (regression: rmse
                                           # unless this names mae)
    ks: tuple[int, ...] = (10,)
    recall_denominator: str = "test"
    threads: int | None = None             # torch intra-op threads; None keeps torch's default. Not in a run's
                                           # name, but it is in its numbers' rounding: BLAS splits reductions
                                           # by thread (ML-100K GMF: epoch-1 loss differs in the 6th digit)
    device: str = "cpu"
    model_options: dict = field(default_factory=dict)  # backbone-specific (e.g. n_layers for LightGCN)

    @property
    def item_spec(self) -> str:
        return self.embedding

    @property
    def user_spec(self) -> str:
        return self.user_embedding or self.embedding

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ks"] = list(self.ks)
        return {k: v for k, v in d.items() if k not in _OMITTED_AT_DEFAULT or v != _OMITTED_AT_DEFAULT[k]}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config keys {unknown}; known keys: {sorted(known)}")
        raw = dict(raw)
        if "ks" in raw:
            raw["ks"] = tuple(int(k) for k in raw["ks"])
        return cls(**raw)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "RunConfig":
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw, source=str(path))

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def options_tag(self) -> str:
        """``model_options`` as ``key=value,...`` (sorted); "" when there are none. Names grid variants."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.model_options.items()))

    def run_name(self) -> str:
        """A readable, filesystem-safe id: dataset, model, specs, d (when not the default 64), model options
        and seed."""
        spec = self.embedding if self.user_embedding is None else f"u{self.user_embedding}-i{self.embedding}"
        if self.dim != DEFAULT_DIM:
            spec += f"-d{self.dim}"
        # a path-valued option (a teacher run) is named by its last component
        tag = "-".join(f"{k}{Path(str(v)).name}" for k, v in sorted(self.model_options.items()))
        safe = (spec + (f"-{tag}" if tag else "")).replace("/", "_").replace("@", "at")
        return f"{self.dataset}-{self.model}-{safe}-s{self.seed}"
