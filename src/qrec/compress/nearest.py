"""Nearest-centroid search for product quantization: ``argmin_k ||x^(j) - c^(j)_k||^2`` per subspace ``j``.

This search is the cost of a DPQ / MGQE training step on the CPU (every looked-up row, every step), so it has
three exact kernels that return identical codes, ties to the lowest centroid index:

* ``sorted`` (scalar subspaces, ``s = 1``: the paper's D = d): sort each subspace's K centroids and count the
  midpoints below each value (float64, where midpoints of float32 values are exact). On CPU tensors a
  compiled (numba) loop does the sort, the run bookkeeping and a branchless search of all values in
  lock-step; torch's ``searchsorted`` spends ~100 ns per value on mispredicted branches and the surrounding
  tie handling costs a dozen more tensor passes. Elsewhere (CUDA) the same algorithm runs as torch ops.
* ``exhaustive`` (any ``s``, CPU): a compiled loop computes every ``||x - c_k||^2`` in float64 (the
  reference computation itself) with the centroids laid out ``(D, s, K)`` so the loop over ``k`` vectorises;
  it keeps no ``(B, D, K)`` tensor. ``"auto"``'s choice for ``s > 1`` on the CPU.
* ``matmul`` (any ``s``, any device): one batched matmul scores ``||c||^2 - 2 x.c`` for all K, then near-ties
  are re-scored exactly in float64. ``"auto"``'s choice for ``s > 1`` off the CPU.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SCORE_BUDGET", "carried_order", "nearest_codes", "nearest_shared", "nearest_exhaustive", "nearest_matmul", "nearest_sorted", "rows_per_chunk"]

#: score-tensor elements (rows x D x K) per chunk when quantizing many rows without gradients: 16 MiB float32
SCORE_BUDGET = 1 << 22


def nearest_codes(x: torch.Tensor, centroids: torch.Tensor, kernel: str = "auto",
                  order: np.ndarray | None = None) -> torch.Tensor:
    """Codes of sub-vectors ``x (B, D, s)`` against ``centroids (D, K, s)``, int64 ``(B, D)``; no gradient.

    ``kernel``: ``"sorted"`` (needs ``s = 1``), ``"exhaustive"`` (CPU), ``"matmul"``, or ``"auto"`` (sorted
    when ``s = 1``, else exhaustive on the CPU and matmul elsewhere). ``order``: see ``nearest_sorted``.
    """
    if kernel == "auto":
        kernel = "sorted" if centroids.shape[-1] == 1 else "exhaustive" if x.device.type == "cpu" else "matmul"
    with torch.no_grad():
        x, centroids = x.detach(), centroids.detach()
        if kernel == "sorted":
            return nearest_sorted(x, centroids, order=order)
        if kernel == "exhaustive":
            return nearest_exhaustive(x, centroids)
        if kernel == "matmul":
            parts = x.split(rows_per_chunk(*centroids.shape[:2]))
            return torch.cat([nearest_matmul(part, centroids) for part in parts])
    raise ValueError(f"unknown nearest-centroid kernel {kernel!r}; expected 'auto', 'sorted', 'exhaustive' or 'matmul'")


def nearest_shared(u: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``(n, D)`` int64: each ``s``-block of the rows ``u (n, D s)`` to its nearest codeword of the one ``(K, s)``
    ``codebook`` all blocks share (``qrec.quant.vector``); ties to the lowest index, no gradient."""
    n, s = u.shape[0], codebook.shape[1]
    D = u.shape[1] // s
    shared = codebook.float().unsqueeze(0).expand(D, -1, -1).contiguous()
    return nearest_codes(u.detach().float().reshape(n, D, s), shared)


def carried_order(cache: dict, key, centroids: torch.Tensor) -> np.ndarray | None:
    """The ``order`` array ``nearest_sorted`` refines between calls for codebook ``key``, held in ``cache``
    (a table's own dict); None when the sorted compiled kernel does not apply (vector subspaces, CUDA)."""
    D, K, s = centroids.shape
    if s != 1 or centroids.device.type != "cpu":
        return None
    order = cache.get(key)
    if order is None or order.shape != (D, K):
        order = cache[key] = np.tile(np.arange(K, dtype=np.int64), (D, 1))
    return order


def rows_per_chunk(D: int, K: int) -> int:
    """Rows whose ``(rows, D, K)`` scores fit in ``SCORE_BUDGET`` elements."""
    return max(1, SCORE_BUDGET // (D * K))


# ------------------------------------------------------------------------------ scalar subspaces


def nearest_sorted(x: torch.Tensor, centroids: torch.Tensor, compiled: bool | None = None,
                   order: np.ndarray | None = None) -> torch.Tensor:
    """Scalar subspaces (``s = 1``): binary search against the midpoints of the sorted centroids.

    With ``v`` the sorted values and ``m_i = (v_i + v_{i+1}) / 2``, the nearest sorted position to ``x`` is the
    number of midpoints below ``x``: O(log K) per code instead of K distances. Ties: equal centroid values
    share a run, and each sorted position maps to the lowest original index of its run (the first of the
    run, by a stable sort); ``x`` exactly on a midpoint ties its two neighbours and takes the lower index of
    the two. ``compiled``: the numba loop (default on CPU tensors) or the torch ops (default elsewhere).

    ``order``: an int64 ``(D, K)`` array the compiled loop sorts in place and starts from on the next call
    (any permutation of each row is a valid start; the codes never depend on it). Between training steps
    the centroids move, but most keep their rank, so an insertion sort from last step's order does far less
    work than a fresh stable sort (0.9 ms for 64 x 256 centroids, more than searching the few hundred rows of
    an MGQE head group). Its worst case is quadratic in K; measured over real GMF training it is a net gain
    (BENCHMARKS.md).
    """
    if centroids.shape[-1] != 1:
        raise ValueError(f"the sorted kernel needs 1-dim subspaces, got {centroids.shape[-1]}")
    if compiled is None:
        compiled = x.device.type == "cpu"
    if not compiled:
        return _nearest_sorted_torch(x, centroids)
    values = x[..., 0].T.to(torch.float32).contiguous().numpy()  # (D, B): each subspace's values contiguous
    books = centroids[..., 0].to(torch.float32).contiguous().numpy()
    if order is None or order.shape != books.shape:
        order = np.argsort(books, axis=1, kind="stable")
    from qrec.compress.nearest_kernels import nearest_scalar

    return torch.from_numpy(nearest_scalar(values, books, order))


def _nearest_sorted_torch(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    values, order = torch.sort(centroids[..., 0].double(), dim=1, stable=True)  # (D, K)
    position = torch.arange(values.shape[1], device=values.device).expand_as(values)
    run_start = torch.ones_like(values, dtype=torch.bool)
    run_start[:, 1:] = values[:, 1:] != values[:, :-1]
    first_of_run = torch.where(run_start, position, 0).cummax(dim=1).values
    lowest_index = order.gather(1, first_of_run)  # lowest original index among centroids equal to v_i
    mids = (values[:, 1:] + values[:, :-1]) / 2  # (D, K-1)
    queries = x[..., 0].double().T.contiguous()  # (D, B)
    below = torch.searchsorted(mids, queries)  # number of midpoints < x = nearest sorted position
    # x on a midpoint: sorted positions `below` and `below + 1` tie (if more midpoints equal x, the values
    # between them all equal x and form one run, so the next position is still in a tied run)
    mids_padded = F.pad(mids, (0, 1), value=float("inf"))
    on_mid = mids_padded.gather(1, below) == queries
    best = lowest_index.gather(1, below)
    neighbour = lowest_index.gather(1, (below + 1).clamp_max(values.shape[1] - 1))
    return torch.where(on_mid, torch.minimum(best, neighbour), best).T.contiguous()


# ------------------------------------------------------------------------------ vector subspaces


def nearest_exhaustive(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Every ``||x^(j) - c^(j)_k||^2`` in float64 by a compiled loop (CPU tensors); argmin, ties to the lowest k."""
    values = x.to("cpu", torch.float64).contiguous().numpy()                            # (B, D, s)
    books = centroids.to("cpu", torch.float64).transpose(1, 2).contiguous().numpy()     # (D, s, K)
    from qrec.compress.nearest_kernels import nearest_exhaustive as loop

    return torch.from_numpy(loop(values, books)).to(x.device)


def nearest_matmul(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """General subspaces: score ``||c||^2 - 2 x.c`` for all K with one batched matmul (the row's ``||x||^2``
    does not change the argmin), then settle near-ties exactly.

    The float32 scores cancel: near a tie the two best can swap. Their error is at most
    ``eps = (s + 2) u (max ||c||^2 + 2 ||x|| max ||c||)`` (``u`` the matmul's unit roundoff), so a winner whose
    margin over the runner-up exceeds ``4 eps`` is certainly the true nearest; the rare rows with a smaller
    margin (ties, duplicate centroids) are re-scored over all K with ``||x - c||^2`` in float64, where
    ``argmin`` takes the lowest index. The result equals ``nearest_sorted`` wherever both apply.
    """
    D, K, s = centroids.shape
    c_sq = centroids.square().sum(-1)  # (D, K)
    xt = x.transpose(0, 1)  # (D, B, s)
    scores = torch.baddbmm(c_sq.unsqueeze(1), xt, centroids.transpose(1, 2), alpha=-2)  # (D, B, K)
    low, best = scores.min(-1)  # (D, B); min returns the first (lowest) index of equal scores
    if K > 1:
        runner_up = scores.scatter_(-1, best.unsqueeze(-1), float("inf")).amin(-1)
        c_max = c_sq.max(-1).values.sqrt().unsqueeze(1)  # (D, 1)
        err = (s + 2) * _matmul_roundoff(x) * (c_max.square() + 2 * xt.norm(dim=-1) * c_max)
        j, b = torch.nonzero(runner_up - low <= 4 * err, as_tuple=True)
        if j.numel():
            exact = (xt[j, b].double().unsqueeze(1) - centroids[j].double()).square().sum(-1)  # (F, K)
            best[j, b] = exact.argmin(-1)
    return best.T.contiguous()


def _matmul_roundoff(x: torch.Tensor) -> float:
    """Unit roundoff of a float32 matmul: 2^-24, or bfloat16's 2^-8 when TF32 / reduced precision is allowed."""
    reduced = torch.get_float32_matmul_precision() != "highest" or (x.is_cuda and torch.backends.cuda.matmul.allow_tf32)
    return 2.0**-8 if reduced else 2.0**-24
