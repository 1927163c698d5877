"""The training loop: one epoch of sampled batches, validation, best-epoch selection, exact resume.

Resume is exact by construction: every epoch draws its negatives and shuffling from an RNG seeded by
``(seed, epoch)``, so a run restarted from the checkpoint of epoch e replays epochs e+1.. bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qrec.data import Split
from qrec.errors import QrecError, SpecError
from qrec.eval.regression import LOWER_IS_BETTER, improved
from qrec.logs import bar as progress_bar
from qrec.logs import run_log
from qrec.models.base import Recommender
from qrec.models.registry import build_model
from qrec.train.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint, restore, save_checkpoint
from qrec.train.config import OPTIMIZERS, RunConfig
from qrec.train.distributed import from_env, is_worker
from qrec.train.optim import OptimizerChain, rowwise_adagrad
from qrec.train.pipeline import load_split
from qrec.train.runlock import run_folder_lock
from qrec.train.tasks import make_task
from qrec.threads import set_threads

__all__ = ["CHECKPOINT", "FitResult", "build", "fit", "load_trained", "make_optimizer", "probe_epoch_seconds",
           "seed_everything"]
_DEBUG = logging.getLogger("qrec.train")  # -v: the run's full config and data provenance


@dataclass
class FitResult:
    config: RunConfig
    split: Split
    model: Recommender
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    valid: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    interactions_per_second: float = 0.0


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def build(cfg: RunConfig, split: Split) -> Recommender:
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise QrecError(f"device {cfg.device!r} asked for, but this torch sees no CUDA device; use --device cpu")
    opts = dict(cfg.model_options)
    if cfg.init_std is not None:
        opts["init_std"] = cfg.init_std
    if cfg.task == "regression":  # absolute scores need per-user / per-item offsets (biased MF)
        opts.setdefault("row_bias", True)
    seed_everything(cfg.seed)
    if opts.get("teacher"):  # loading it reseeds (the teacher's build): the student's init draws follow it, as ever
        opts["teacher"] = _load_teacher(opts["teacher"], split)
    return build_model(cfg.model, split, cfg.user_spec, cfg.item_spec, cfg.dim, **opts).to(cfg.device)


def _load_teacher(run: str, split: Split) -> Recommender:
    """The trained model of a teacher run (``teacher=<run folder>``: its last epoch), checked to be of ``split``."""
    teacher, cfg, teacher_split = load_trained(run, last=True)
    if (teacher_split.n_users, teacher_split.n_items, len(teacher_split.train)) != (split.n_users, split.n_items, len(split.train)):
        raise SpecError(f"teacher {run!r} was trained on another split ({cfg.dataset}, protocol {cfg.protocol})")
    return teacher


def make_optimizer(model: Recommender, cfg: RunConfig) -> torch.optim.Optimizer | OptimizerChain:
    """``cfg.optimizer``: ``"rowwise-adagrad"`` (qrec.train.optim), or Adam (with the backbone's own betas where its
    reference code sets them, e.g. SASRec's 0.98). The fused
    kernel is the same update in one pass over all parameters: 4-5x faster per step on the CPU than the
    per-tensor loop, which dominated a GMF step on ML-1M."""
    if cfg.optimizer == "rowwise-adagrad":
        return rowwise_adagrad(model, cfg.lr, cfg.weight_decay)
    if cfg.optimizer != "adam":
        raise QrecError(f"unknown optimizer {cfg.optimizer!r}; use one of {OPTIMIZERS}")
    args = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, betas=model.adam_betas)
    params = list(model.parameters()) or [{"params": []}]  # nothing to learn (pop): an empty group, no steps
    try:
        return torch.optim.Adam(params, fused=True, **args)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, **args)


def set_learning_rate(optimizer, lr: float) -> None:
    """Set every parameter group's lr, through the data-parallel wrapper and optimizer chains."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for opt in getattr(inner, "optimizers", (inner,)):
        for group in opt.param_groups:
            group["lr"] = lr


def _epoch_batches(model: Recommender, task, cfg: RunConfig, epoch: int):
    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)
    return task.batches(model, rng)


def _train_epoch(model, optimizer, batches, cfg: RunConfig, epoch: int, progress: bool, loss_fn=None) -> tuple[float, int]:
    """One pass over ``batches``; ``loss_fn(model, batch)`` is the task's loss (default: the model's own)."""
    model.train()
    model.on_epoch_start()
    total, seen, n_batches = 0.0, 0, 0
    bar = progress_bar(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress)
    start = time.perf_counter()
    for batch in bar:
        batch = {k: v.to(cfg.device, non_blocking=True) for k, v in batch.items()}
        loss = loss_fn(model, batch) if loss_fn else model.training_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        n_batches += 1
        seen += len(batch["users"])
        if n_batches % 50 == 0:
            bar.set_postfix(loss=f"{total / n_batches:.4f}", rows_s=f"{seen / (time.perf_counter() - start):,.0f}")
    if not np.isfinite(total):
        raise FloatingPointError(f"training loss became {total} in epoch {epoch + 1}; lower lr or check the data")
    return total / max(1, n_batches), seen


def _resumable_key(config: dict, trained: int) -> dict:
    """What must match to resume a checkpoint after ``trained`` epochs: everything but ``threads`` (speed, and
    float rounding: the replay is bit for bit with the same threads), ``epochs`` (epoch e's batches depend on
    ``(seed, e)`` alone and nothing is scheduled on the total, so a run can be extended: 20 epochs then 40
    replays the first 20 of a 40-epoch run exactly) and the lr milestones not yet reached (a plateaued run
    can be decayed from where it stands: what it trained is what the new schedule would have trained)."""
    key = {k: v for k, v in config.items() if k not in ("threads", "epochs", "lr_milestones", "lr_gamma")}
    passed = [m for m in config.get("lr_milestones", ()) if m < trained]
    return key | ({"lr_milestones": passed, "lr_gamma": config.get("lr_gamma", 0.1)} if passed else {})


def fit(cfg: RunConfig, out_dir: str | Path | None = None, progress: bool = True, resume: bool = True, log=None,
        split: Split | None = None) -> FitResult:
    """Train ``cfg``; checkpoint every epoch into ``out_dir``; report test metrics at the best validation epoch.

    With no validation part (pre-split train/test files) the last epoch is reported and nothing is
    selected on the test set; with no test part either (protocol ``all``: train on everything, to serve)
    nothing is evaluated. One line per epoch goes to ``out_dir/train.log`` and to ``log(line)``, or
    without ``log`` to the ``qrec.train`` logger (``qrec.logs``). ``split``: the data, when it does not come
    from ``cfg`` (the Python API's frames). ``out_dir`` is locked for the whole run: a second writer fails at once.
    A relative ``data_path`` is stored absolute, so the run folder is usable from any working directory.
    """
    cfg = cfg.with_absolute_path()
    if is_worker():  # a torchrun rank other than 0 reads out_dir (to resume) but writes nothing there
        return _fit(cfg, out_dir, progress, resume, lambda _: None, split)
    with run_folder_lock(out_dir) if out_dir else contextlib.nullcontext(), run_log(out_dir, log) as emit:
        return _fit(cfg, out_dir, progress, resume, emit, split)


def _fit(cfg: RunConfig, out_dir, progress: bool, resume: bool, log, split: Split | None) -> FitResult:
    if cfg.threads:
        set_threads(cfg.threads)
    split = load_split(cfg) if split is None else split
    if cfg.task == "ranking":
        cfg.check_catalogue(split.n_items)
    parallel = from_env(cfg)  # under torchrun: this rank of a data-parallel run, else None
    model = build(cfg, split)
    optimizer = make_optimizer(model, cfg)
    if parallel is not None:
        parallel.broadcast_parameters(model)
        optimizer = parallel.wrap(optimizer)
    task = make_task(cfg, split)  # batches, loss and metrics: top-k ranking or score regression
    has_valid = len(split.valid) > 0
    state = {"epoch": 0, "history": [], "best": {}, "best_epoch": 0, "best_model": None, "train_seconds": 0.0, "seen": 0}

    ckpt = Path(out_dir) / CHECKPOINT if out_dir else None
    if ckpt and resume and ckpt.exists():
        state = _resume(ckpt, cfg, model, optimizer)
        log(f"resumed {ckpt} after epoch {state['epoch']}")

    log(f"{cfg.run_name()}: {cfg.model}, {cfg.embedding} tables, d = {cfg.dim}, {len(split.train):,} training "
        f"interactions, {cfg.epochs} epochs, {cfg.device}" + (f", checkpoints in {out_dir}" if out_dir else ""))
    _DEBUG.debug(f"config {json.dumps(cfg.to_dict(), default=str)}")
    _DEBUG.debug(f"data {cfg.dataset} from {split.train.meta.get('source', '?')} {split.train.meta.get('files', '')}, "
                 f"sha256 {split.train.meta.get('sha256', {})}; {split.n_users:,} users, {split.n_items:,} items; "
                 f"{torch.get_num_threads()} torch threads")
    stale = 0
    for epoch in range(state["epoch"], cfg.epochs):
        t0 = time.perf_counter()
        set_learning_rate(optimizer, cfg.lr_at(epoch))
        batches = _epoch_batches(model, task, cfg, epoch)
        if parallel is not None:
            batches = parallel.shard(batches, epoch)
        writes = parallel is None or parallel.writes
        loss, seen = _train_epoch(model, optimizer, batches, cfg, epoch, progress and writes, task.loss)
        seconds = time.perf_counter() - t0
        state["train_seconds"] += seconds
        state["seen"] += seen
        row = {"epoch": epoch + 1, "loss": loss, "seconds": round(seconds, 3), "rows_per_second": round(seen / seconds)}
        if has_valid and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            row["valid"] = task.evaluate(model, "valid")
            if improved(row["valid"], state["best"], task.select_metric):
                state.update(best=row["valid"], best_epoch=epoch + 1, best_model=copy.deepcopy(model.state_dict()))
                stale = 0
            else:
                stale += cfg.eval_every
        elif not has_valid and len(split.test) and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            # Pre-split files have no validation part: record the test curve for plots only; nothing is
            # selected on it, the reported epoch is the last one.
            row["test_curve"] = task.evaluate(model, "test")
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if ckpt and (parallel is None or parallel.writes):
            save_checkpoint(ckpt, {"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state})
        log(_epoch_line(row, task.select_metric))
        if cfg.patience and stale >= cfg.patience:
            log(f"early stop: no {task.select_metric} gain for {stale} epochs")
            break

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    else:
        state["best_epoch"] = state["epoch"]
    test = task.evaluate(model, "test") if len(split.test) else {}  # protocol "all": nothing held out
    return FitResult(
        config=cfg, split=split, model=model, history=state["history"], best_epoch=state["best_epoch"],
        valid=state["best"], test=test, train_seconds=state["train_seconds"],
        interactions_per_second=state["seen"] / max(state["train_seconds"], 1e-9),
    )


def probe_epoch_seconds(cfg: RunConfig, steps: int = 50, budget: float = 1.0) -> float:
    """Seconds one epoch of ``cfg`` should take here, from a short timed probe: the epoch's sampling, the
    median of up to ``steps`` training steps (at least 3, for about ``budget`` seconds, after an untimed
    warm-up step) scaled to the epoch's batch count, and the scoring of one batch of users scaled to the
    validation users, once per ``eval_every`` epochs. An estimate for a plan (``qrec experiment
    --dry-run``) on this machine as loaded now; it leaves out what changes over training (early stopping)."""
    if cfg.threads:
        set_threads(cfg.threads)
    split = load_split(cfg)
    model = build(cfg, split)
    optimizer = make_optimizer(model, cfg)
    task = make_task(cfg, split)
    t0 = time.perf_counter()
    batches = _epoch_batches(model, task, cfg, 0)
    sampling = time.perf_counter() - t0
    timed, start = [], time.perf_counter()
    for _, batch in zip(range(steps + 1), batches):
        if len(timed) > 3 and time.perf_counter() - start > budget:
            break
        t0 = time.perf_counter()
        batch = {k: v.to(cfg.device) for k, v in batch.items()}
        loss = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # waits for the step (an asynchronous device would otherwise time nothing)
        timed.append(time.perf_counter() - t0)
    per_step = float(np.median(timed[1:] or timed))
    return sampling + per_step * len(batches) + _probe_eval_seconds(model, split, cfg, task) / max(1, cfg.eval_every)


@torch.no_grad()
def _probe_eval_seconds(model: Recommender, split: Split, cfg: RunConfig, task, users: int = 256) -> float:
    part = split.valid if len(split.valid) else split.test
    if cfg.task == "regression":  # scoring the held-out pairs once is cheap: time it whole
        t0 = time.perf_counter()
        task.evaluate(model, "valid" if len(split.valid) else "test")
        return time.perf_counter() - t0
    n = int(np.count_nonzero(np.diff(part.to_csr().indptr)))
    model.eval()
    model.refresh()
    batch = torch.arange(min(users, split.n_users), device=cfg.device)
    t0 = time.perf_counter()
    torch.topk(model.score_all(batch), min(max(cfg.ks), split.n_items)).indices.cpu()
    return (time.perf_counter() - t0) * n / len(batch)


def _resume(ckpt: Path, cfg: RunConfig, model, optimizer) -> dict:
    """Load ``ckpt`` (written by this config) into ``model`` and ``optimizer``; its loop state. A damaged or
    foreign file stops the run naming it, and is never overwritten."""
    try:
        saved = load_checkpoint(ckpt, map_location=cfg.device)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; move or delete it to start this run over") from None
    # a checkpoint from before paths were stored absolute names its data relative to the folder it was trained in
    trained = saved["state"]["epoch"]
    saved_cfg = _saved_config(saved, ckpt).with_absolute_path()
    if _resumable_key(saved_cfg.to_dict(), trained) != _resumable_key(cfg.to_dict(), trained):
        raise ValueError(f"{ckpt} was written by a different config; use another --out or delete it")
    if saved["state"]["epoch"] > cfg.epochs:
        raise ValueError(f"{ckpt} has already trained {saved['state']['epoch']} epochs, more than the "
                         f"{cfg.epochs} asked for; ask for at least as many or use another --out")
    restore(model, saved["model"], ckpt)
    restore(optimizer, saved["optimizer"], ckpt)
    return saved["state"]


def _saved_config(saved: dict, path: Path) -> RunConfig:
    try:
        return RunConfig.from_dict(saved["config"], source=str(path))
    except QrecError as e:
        raise CheckpointError(f"not a usable qrec checkpoint: {e}") from None


def load_trained(run: str | Path, last: bool = False) -> tuple[Recommender, RunConfig, Split]:
    """The model of a run folder (or its checkpoint file): weights of the best validation epoch, or of the
    last epoch with ``last=True`` or when the run had no validation split."""
    path = Path(run)
    path = path / CHECKPOINT if path.is_dir() else path
    saved = load_checkpoint(path)
    cfg = _saved_config(saved, path)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        cfg = cfg.replace(device="cpu")  # trained on a GPU, evaluated or exported on a machine without one
    split = load_split(cfg)
    model = build(cfg, split)
    best = saved["state"].get("best_model")
    restore(model, best if (best is not None and not last) else saved["model"], path)
    return model.eval(), cfg, split


def _epoch_line(row: dict, key: str) -> str:
    valid, curve = row.get("valid", {}), row.get("test_curve", {})
    shown = "" if key not in valid else f" valid {key} {valid[key]:.4f}" if key in LOWER_IS_BETTER else \
        f" valid {key} {100 * valid[key]:.2f}%"
    shown += "".join(f" test {k} {100 * v:.2f}%" for k, v in curve.items() if k.startswith(("recall", "ndcg")))
    return f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}{shown}  {row['seconds']:.1f}s  {row['rows_per_second']:,} rows/s"
