"""One frozen dataclass describes a run; TOML presets and CLI overrides both land here.

Every ``RunConfig`` is checked when it is made (``__post_init__``), whether from CLI flags, a TOML file, a
checkpoint or Python: a value of the wrong type or out of range is a :class:`~qrec.errors.ConfigError`
naming the key, never a traceback deep in training nor a silently useless run. Integral floats (TOML
``epochs = 2e1``) become ints and ints become floats; strings are never read as numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from qrec import toml as tomllib
from qrec.data.duplicates import DUPLICATES
from qrec.errors import ConfigError
from qrec.eval.evaluate import DEFAULT_METRICS
from qrec.eval.metrics import RECALL_DENOMINATORS
from qrec.eval.regression import REGRESSION_METRICS

DEFAULT_DIM = 64
MAX_RUN_NAME = 200  # longer run names keep their first characters and a hash of the whole
OPTIMIZERS = ("adam", "rowwise-adagrad")
TASKS = ("ranking", "regression")
# Fields added after records existed: written only when set, so older checkpoints and records keep their identity.
_OMITTED_AT_DEFAULT = {"task": "ranking", "l2": 0.0, "given_test": "error", "optimizer": "adam", "duplicates": "error",
                       "lr_milestones": [], "lr_gamma": 0.1}
GIVEN_TEST = ("error", "drop", "keep")
# smallest allowed value of each integer key (threads: when set)
_INT_MIN = {"min_count": 0, "dim": 1, "epochs": 1, "batch_size": 1, "n_neg": 1, "seed": 0, "eval_every": 1,
            "patience": 0, "threads": 1}
_SEED_BOUND = 2**32  # torch and numpy seed from it; a larger one would be folded silently
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. Two runs with equal configs give equal numbers on the CPU."""

    task: str = "ranking"                  # ranking (top-k over all items) | regression (squared loss on scores)
    dataset: str = "ml-100k"
    data_path: str | None = None           # explicit file/folder; else the registry resolves the name. A run
                                           # stores it absolute (``with_absolute_path``), usable from anywhere
    duplicates: str = "error"              # a (user, item) pair given twice in the data: an "error" naming its
                                           # line, or "sum"-med / "drop"-ped (qrec.data.duplicates)
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
    lr_milestones: tuple[int, ...] = ()    # step decay: after each of these epochs the lr is multiplied by lr_gamma.
    lr_gamma: float = 0.1                  # Keyed on absolute epochs, so a run extended later replays exactly
    optimizer: str = "adam"                # adam | rowwise-adagrad (tables: one state float per row; qrec.train.optim)
    weight_decay: float = 0.0
    l2: float = 0.0                        # regression: L2 on each training pair's looked-up rows (biased MF's reg)
    n_neg: int = 4                         # pointwise models: sampled negatives per positive
    seed: int = 0
    eval_every: int = 1                    # validate every n epochs (pre-split data: test curve for plots only)
    patience: int = 0                      # epochs without validation gain before stopping; 0 = never stop
    select_metric: str | None = None       # validation metric that picks the reported epoch (None: ndcg at
                                           # the first cut-off, e.g. ndcg@10; regression: rmse or mae)
    ks: tuple[int, ...] = (10,)
    recall_denominator: str = "test"
    threads: int | None = None             # torch intra-op threads; None keeps torch's default. Not in a run's
                                           # name, but it is in its numbers' rounding: BLAS splits reductions
                                           # by thread (ML-100K GMF: epoch-1 loss differs in the 6th digit)
    device: str = "cpu"
    model_options: dict = field(default_factory=dict)  # backbone-specific (e.g. n_layers for LightGCN)
    given_test: str = "error"              # pre-split data (protocol given): test rows the training part cannot
                                           # score (user or item without training rows, or a pair also in
                                           # training) are an "error", dropped ("drop") or kept ("keep", as
                                           # LightGCN-PyTorch keeps LastFM's); drop / keep warn with counts

    def __post_init__(self):
        for f in fields(self):
            if f.name != "select_metric":
                object.__setattr__(self, f.name, _checked(f.name, getattr(self, f.name)))
        if self.select_metric is None:
            default = "rmse" if self.task == "regression" else f"ndcg@{self.ks[0]}"
            object.__setattr__(self, "select_metric", default)
        _checked("select_metric", self.select_metric)
        if self.task == "regression":
            if self.select_metric not in REGRESSION_METRICS:
                raise ConfigError(f"{_said('select_metric', self.select_metric)}: a regression run selects by one of "
                                  f"{list(REGRESSION_METRICS)}")
            return
        metric, _, k = self.select_metric.partition("@")
        if metric not in DEFAULT_METRICS or not k.isdigit() or int(k) not in self.ks:
            raise ConfigError(f"{_said('select_metric', self.select_metric)}: expected <metric>@<k> with metric one of "
                              f"{list(DEFAULT_METRICS)} and k one of ks = {list(self.ks)}")

    @property
    def item_spec(self) -> str:
        return self.embedding

    @property
    def user_spec(self) -> str:
        return self.user_embedding or self.embedding

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ks"] = list(self.ks)
        d["lr_milestones"] = list(self.lr_milestones)
        return {k: v for k, v in d.items() if k not in _OMITTED_AT_DEFAULT or v != _OMITTED_AT_DEFAULT[k]}

    def check_catalogue(self, n_items: int, ks=None) -> None:
        """Cut-offs must fit the catalogue: a top-k longer than the items there are measures nothing."""
        too_big = [k for k in (self.ks if ks is None else ks) if k > n_items]
        if too_big:
            raise ConfigError(f"cut-off k = {too_big[0]} is larger than the catalogue of {self.dataset} "
                              f"({n_items} items)")

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "RunConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a table of config keys, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(map(str, set(raw) - known))
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**raw)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "RunConfig":
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw, source=str(path))

    def with_absolute_path(self) -> "RunConfig":
        """This config with ``data_path`` absolute (``~`` expanded, resolved against the working directory),
        as a run stores it: a relative path typed in one folder would name another file from anywhere else."""
        if self.data_path is None:
            return self
        return dataclasses.replace(self, data_path=str(Path(self.data_path).expanduser().resolve()))

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``: ``lr`` times ``lr_gamma`` per milestone already passed."""
        return self.lr * self.lr_gamma ** sum(epoch >= m for m in self.lr_milestones)

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
        if self.optimizer != "adam":
            spec += f"-{self.optimizer}"
        # a path-valued option (a teacher run) is named by its last component
        tag = "-".join(f"{k}{Path(str(v)).name}" for k, v in sorted(self.model_options.items()))
        safe = (spec + (f"-{tag}" if tag else "")).replace("/", "_").replace("@", "at")
        name = f"{self.dataset}-{self.model}-{safe}-s{self.seed}"
        if len(name) > MAX_RUN_NAME:  # a file name (+ ".json") must fit the file system's 255 bytes
            digest = hashlib.sha1(name.encode()).hexdigest()[:12]
            name = f"{name[:MAX_RUN_NAME - 17]}-{digest}-s{self.seed}"
        return name


def _checked(key: str, value):
    """``value`` of config ``key`` with its type made exact, or a ConfigError saying what is expected."""
    if key in _INT_MIN:
        return None if value is None and key == "threads" else _integer(key, value, _INT_MIN[key])
    if key == "lr_milestones":
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"{_said(key, value)}: expected a list of epochs, e.g. [20, 30]")
        epochs = tuple(_integer(key, e, 1) for e in value)
        if list(epochs) != sorted(set(epochs)):
            raise ConfigError(f"{_said(key, value)}: epochs must be increasing, each given once")
        return epochs
    if key == "lr_gamma":
        number = _real(key, value)
        if not 0 < number <= 1:
            raise ConfigError(f"{_said(key, value)}: must be in (0, 1]")
        return number
    if key in ("lr", "weight_decay", "init_std", "l2"):
        if value is None and key == "init_std":
            return None
        number = _real(key, value)
        may_be_zero = key in ("weight_decay", "l2")
        if number < 0 or (number == 0 and not may_be_zero):
            raise ConfigError(f"{_said(key, value)}: must be {'>= 0' if may_be_zero else 'positive'}")
        return number
    if key == "ks":
        ks = (value,) if isinstance(value, numbers.Number) else value
        if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__") or not len(ks := tuple(ks)):
            raise ConfigError(f"{_said('ks', value)}: expected a non-empty list of cut-offs, e.g. [10, 20]")
        return tuple(_integer("ks", k, 1) for k in ks)
    if key == "model_options":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{_said('model_options', value)}: expected a table of named options")
        return dict(value)
    if value is None and key in ("data_path", "user_embedding"):
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{_said(key, value)}: expected a non-empty string")
    choices = {"recall_denominator": RECALL_DENOMINATORS, "given_test": GIVEN_TEST, "task": TASKS,
               "optimizer": OPTIMIZERS, "duplicates": DUPLICATES}.get(key)
    if choices is not None and value not in choices:
        raise ConfigError(f"{_said(key, value)}: expected one of {list(choices)}")
    if key == "device" and not _DEVICE.fullmatch(value):
        raise ConfigError(f"{_said('device', value)}: expected cpu, cuda or cuda:<index>")
    return value


def _integer(key: str, value, low: int) -> int:
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                                    and value == int(value))
    if isinstance(value, bool) or not whole:
        raise ConfigError(f"{_said(key, value)}: expected a whole number{_unquote_hint(value)}")
    high = _SEED_BOUND if key == "seed" else 2**63
    if not low <= int(value) < high:
        raise ConfigError(f"{_said(key, value)}: must be >= {low}" + (" and < 2**32" if key == "seed" else
                                                                      " and < 2**63" if value >= high else ""))
    return int(value)


def _real(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{_said(key, value)}: expected a number{_unquote_hint(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{_said(key, value)}: must be finite")
    return number


def _unquote_hint(value) -> str:
    return " (written as a string: drop the quotes)" if isinstance(value, str) else ""


def _said(key: str, value) -> str:
    """``key = value`` for a message, the value cut to 40 characters (a file may hold a huge one)."""
    shown = repr(value)
    return f"{key} = {shown if len(shown) <= 40 else shown[:37] + '...'}"
