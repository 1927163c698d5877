"""Full-ranking evaluation: every user is ranked against the whole catalogue, never a sample.

Two rules make the numbers reproducible and honest:

* **Ties.** Items are ordered by score descending and equal scores by item index ascending
  (``topk_deterministic``). A model that scores many items equally therefore gets the same
  placement on every kernel and device, and a constant-score model gets exactly the ranking
  "item 0, item 1, ..." -- no lucky draws from an unstable sort.
* **Masking.** Items a user must not be recommended (training items; at test time also the
  validation items) get score ``-inf`` before ranking. A ``-inf`` item is never placed ahead of a
  finite one, and an item scored ``-inf`` never counts as a hit (see ``evaluate_full_ranking``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, overload

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from qrec.eval.metrics import metric_fn
from qrec.logs import bar as progress_bar
from qrec.retrieval.topk import topk_deterministic

ScoreFn = Callable[[Tensor], Tensor]
TopkFn = Callable[[Tensor, int, sp.spmatrix], tuple[Tensor, Tensor]]
DEFAULT_METRICS = ("hr", "ndcg", "recall", "precision")


# --------------------------------------------------------------------------------------------
# Full-ranking evaluation
# --------------------------------------------------------------------------------------------


@overload
def evaluate_full_ranking(
    score_fn: ScoreFn, users: np.ndarray | Tensor, truth: sp.spmatrix,
    exclude: sp.spmatrix | Sequence[sp.spmatrix] | None = ..., ks: Iterable[int] = ...,
    metrics: Iterable[str] = ..., recall_denominator: str = ..., batch_size: int = ...,
    device: torch.device | str | None = ..., progress: bool = ...,
    return_per_user: Literal[False] = ..., topk_fn: TopkFn | None = ...,
) -> dict[str, float]: ...


@overload
def evaluate_full_ranking(
    score_fn: ScoreFn, users: np.ndarray | Tensor, truth: sp.spmatrix,
    exclude: sp.spmatrix | Sequence[sp.spmatrix] | None = ..., ks: Iterable[int] = ...,
    metrics: Iterable[str] = ..., recall_denominator: str = ..., batch_size: int = ...,
    device: torch.device | str | None = ..., progress: bool = ...,
    *, return_per_user: Literal[True], topk_fn: TopkFn | None = ...,
) -> tuple[dict[str, float], dict[str, np.ndarray]]: ...


def evaluate_full_ranking(
    score_fn: ScoreFn,
    users: np.ndarray | Tensor,
    truth: sp.spmatrix,
    exclude: sp.spmatrix | Sequence[sp.spmatrix] | None = None,
    ks: Iterable[int] = (10,),
    metrics: Iterable[str] = DEFAULT_METRICS,
    recall_denominator: str = "test",
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    progress: bool = False,
    return_per_user: bool = False,
    topk_fn: TopkFn | None = None,
):
    """Rank every item for each user, mask the excluded ones, and average top-K metrics.

    Args:
        score_fn: ``users (B,) LongTensor -> (B, n_items)`` scores (e.g. ``model.score_all``).
            Its output is copied before masking, so a cached tensor it returns is left intact.
        users: the users to evaluate (any order; duplicates are evaluated twice).
        truth: ``n_users x n_items`` sparse matrix whose stored nonzeros are the test items.
        exclude: one matrix or a list of matrices of the same shape whose nonzeros are masked
            (set to ``-inf``): the training items, and at test time the validation items.
        ks: cut-offs. A cut-off above ``n_items`` is honoured (precision still divides by K).
        metrics: names from ``qrec.eval.metrics`` -- ``hr``, ``ndcg``, ``recall``, ``precision``,
            ``mrr``, ``recall_test``, ``recall_min``.
        recall_denominator: what ``"recall"`` divides by -- ``"test"`` (``|T_u|``, LightGCN's
            code) or ``"min"`` (``min(K, |T_u|)``).
        batch_size: users scored at once; peak memory is a few ``batch_size x n_items`` tensors.
        device: where user ids are sent. ``None``: the device of ``score_fn``'s parameters when it
            is an ``nn.Module`` or one's bound method, else the CPU. Ranking runs where the scores are.
        progress: show a progress bar over batches.
        return_per_user: also return the per-user values (for std over users, paired tests).
        topk_fn: ``(users (B,), k, exclude) -> (items, values)``, each ``(B, k)``: the same ranking as
            ``topk_deterministic`` of ``score_fn``'s masked scores, ``exclude`` a ``(B, n_items)`` scipy
            sparse matrix of the excluded items (e.g. ``model.topk``, fused with the scoring for codes:
            no ``(B, n_items)`` score matrix). ``None``: rank ``score_fn``'s scores.

    Returns:
        ``{"users": n_evaluated, "hr@10": ..., "ndcg@10": ..., ...}`` -- means over the evaluated
        users (NaN if there are none). With ``return_per_user=True``, a pair ``(summary,
        per_user)`` where ``per_user`` maps ``"user"`` (ids), ``"n_test"`` (``|T_u|``) and every
        metric key to a NumPy array aligned over the evaluated users.

    Users without test items are skipped: every metric is undefined or trivially 0 for them, and
    counting them would dilute the mean. ``|T_u|`` counts every test item, including one that is
    also excluded (it can then never be hit -- a leak-free split never does that). Any item
    scored ``-inf``, by the mask or by the model itself, is never counted as a hit, even when it
    fills a tail slot of a user with fewer than K unmasked items.
    """
    truth = _canonical_csr(truth, "truth")
    excludes = _exclusion_list(exclude, truth.shape)
    ks, fns = _resolve_metrics(ks, metrics, recall_denominator)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    evaluated = _users_with_test_items(users, truth)
    device = _default_device(score_fn) if device is None else torch.device(device)

    per_user: dict[str, list[Tensor]] = {key: [] for key in _result_keys(ks, fns)}
    starts = range(0, len(evaluated), batch_size)
    with torch.no_grad():
        for start in progress_bar(starts, desc="evaluate", enabled=progress):
            batch = evaluated[start : start + batch_size]
            k_top = min(max(ks), truth.shape[1])
            if topk_fn is None:
                top, values = topk_deterministic(_masked_scores(score_fn, batch, excludes, truth.shape[1], device), k_top)
            else:
                top, values = _fused_ranking(topk_fn, batch, excludes, truth.shape, k_top, device)
            hits = _hit_matrix(top, values, batch, truth, max(ks))
            n_test = torch.from_numpy(_n_test(truth, batch)).to(hits.device)
            for k in ks:
                for name, fn in fns.items():
                    per_user[f"{name}@{k}"].append(fn(hits[:, :k], n_test).cpu())
    return _summarise(per_user, evaluated, truth, return_per_user)


def _result_keys(ks: Sequence[int], fns: dict) -> list[str]:
    """Result keys in reporting order: every metric at the first K, then at the next K, ..."""
    return [f"{name}@{k}" for k in ks for name in fns]


def _resolve_metrics(ks, metrics, recall_denominator) -> tuple[list[int], dict]:
    """Validate cut-offs and metric names up front, before any scoring is spent."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    names = list(dict.fromkeys(metrics))
    if not names:
        raise ValueError("no metrics requested")
    return ks, {name: metric_fn(name, recall_denominator) for name in names}


def _canonical_csr(m, what: str) -> sp.csr_matrix:
    """A CSR copy without duplicates or explicit zeros (row lengths count distinct items), with
    sorted column indices (``_hit_matrix`` binary-searches them)."""
    if not sp.issparse(m):
        raise TypeError(f"{what} must be a scipy.sparse matrix, got {type(m).__name__}")
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _exclusion_list(exclude, shape: tuple[int, int]) -> list[sp.csr_matrix]:
    if exclude is None:
        return []
    mats = [exclude] if sp.issparse(exclude) else list(exclude)
    out = [_canonical_csr(m, "exclude") for m in mats]
    for m in out:
        if m.shape != shape:
            raise ValueError(f"exclude has shape {m.shape}, truth has {shape}")
    return out


def _users_with_test_items(users, truth: sp.csr_matrix) -> np.ndarray:
    """The requested users as int64, in order, minus those with no test item."""
    users = users.detach().cpu().numpy() if isinstance(users, Tensor) else np.asarray(users)
    users = users.astype(np.int64, copy=False).reshape(-1)
    if users.size and (users.min() < 0 or users.max() >= truth.shape[0]):
        raise ValueError(f"user ids must lie in [0, {truth.shape[0]})")
    return users[_n_test(truth, users) > 0]


def _n_test(truth: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """``|T_u|`` (int64) for each of ``users``: the row lengths of the canonical truth matrix."""
    return (truth.indptr[users + 1] - truth.indptr[users]).astype(np.int64)


def _default_device(score_fn) -> torch.device:
    """The device of the module behind ``score_fn`` (a module or its bound method), else CPU."""
    module = score_fn if isinstance(score_fn, nn.Module) else getattr(score_fn, "__self__", None)
    if isinstance(module, nn.Module):
        param = next(module.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")


def _csr_rows_coo(m: sp.csr_matrix, rows: np.ndarray, device=None) -> tuple[Tensor, Tensor]:
    """Coordinates of the nonzeros of ``m[rows]`` as ``(local_row, col)`` int64 tensors.

    ``local_row`` indexes into ``rows`` (0..len(rows)-1). Vectorised over the CSR arrays: output
    slot ``j`` of local row ``r`` reads ``m.indices[indptr[rows[r]] + (j - first_slot_of_r)]``.
    """
    starts = m.indptr[rows].astype(np.int64)
    lengths = m.indptr[rows + 1].astype(np.int64) - starts
    local_row = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    first_slot = np.cumsum(lengths) - lengths
    ptr = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - first_slot, lengths)
    cols = m.indices[ptr].astype(np.int64)
    return torch.from_numpy(local_row).to(device), torch.from_numpy(cols).to(device)


def _masked_scores(score_fn, batch, excludes, n_items: int, device) -> Tensor:
    """``score_fn`` on the batch, copied, with ``-inf`` at every excluded (user, item)."""
    scores = score_fn(torch.from_numpy(batch).to(device))
    if scores.shape != (len(batch), n_items):
        raise ValueError(f"score_fn returned {tuple(scores.shape)}, expected ({len(batch)}, {n_items})")
    # Own copy: score_fn may hand back a cached tensor. Integer scores cannot hold -inf; float64
    # holds every int32 (and int64 up to 2**53) exactly, so the conversion creates no new ties.
    scores = scores.detach().clone() if scores.is_floating_point() else scores.double()
    for m in excludes:
        rows, cols = _csr_rows_coo(m, batch, scores.device)
        scores[rows, cols] = float("-inf")
    return scores


def _fused_ranking(topk_fn, batch, excludes, shape, k: int, device) -> tuple[Tensor, Tensor]:
    """``topk_fn`` on the batch with its users' exclusions: ``(items, values)``, checked for shape."""
    top, values = topk_fn(torch.from_numpy(batch).to(device), k, _batch_exclusions(excludes, batch, shape))
    if top.shape != (len(batch), k) or values.shape != top.shape:
        raise ValueError(f"topk_fn returned {tuple(top.shape)} / {tuple(values.shape)}, expected ({len(batch)}, {k})")
    return top, values


def _batch_exclusions(excludes: list[sp.csr_matrix], batch: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """The excluded items of the batch's users, one ``(B, n_items)`` matrix (the union of ``excludes``' rows)."""
    out = sp.csr_matrix((len(batch), shape[1]), dtype=np.float32)
    for m in excludes:
        out = out + m[batch]
    return out


def _hit_matrix(top: Tensor, values: Tensor, batch: np.ndarray, truth: sp.csr_matrix, k: int) -> Tensor:
    """``(B, k)`` bool: is the item at each rank (``top``, ``values``: the ranking's first ``min(k, n_items)``)
    a test item? Padded with False past ``n_items``."""
    n_items = truth.shape[1]
    top = top.to(values.device)
    rows, cols = _csr_rows_coo(truth, batch, top.device)
    # Flatten (row, item) into one int64 key. Rows come in batch order and columns sorted within
    # a row, so the test keys are already ascending: membership is one binary search per ranked
    # item -- no dense (B, n) mask, and no sort as in torch.isin (which also stalls badly on
    # oversubscribed CPUs).
    keys = rows * n_items + cols
    ranked = torch.arange(len(batch), device=top.device).unsqueeze(1) * n_items + top
    # Every evaluated user has a test item, so ``keys`` is never empty.
    found = keys[torch.searchsorted(keys, ranked).clamp_(max=keys.numel() - 1)]
    hits = found == ranked
    hits &= ~torch.isneginf(values)  # masked slots never count, even if they hold a test item
    if k > n_items:
        hits = torch.cat([hits, hits.new_zeros(len(batch), k - n_items)], dim=1)
    return hits


def _summarise(per_user: dict[str, list[Tensor]], evaluated, truth, return_per_user: bool):
    arrays = {key: _concat(parts) for key, parts in per_user.items()}
    n = len(evaluated)
    summary: dict[str, float] = {"users": n}
    summary.update({key: float(a.mean()) if n else float("nan") for key, a in arrays.items()})
    if not return_per_user:
        return summary
    per = {"user": evaluated, "n_test": _n_test(truth, evaluated), **arrays}
    return summary, per


def _concat(parts: list[Tensor]) -> np.ndarray:
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float64)
