"""LightGCN (He et al., SIGIR 2020): layer-0 tables, L weightless propagation layers, mean of layers, BPR.

Faithful to LightGCN's code (gusye1234/LightGCN-PyTorch):

* layer-0 user and item tables are ``EmbeddingTable``s (``FullEmbedding``, normal init with std 0.1);
* ``E_l = A_hat E_{l-1}`` on the symmetric-normalised bipartite graph (``qrec.models.graph``); the final
  embedding is ``sum_l w_l E_l`` with ``w_l = 1/(L+1)`` (the mean of layers 0..L);
* loss = BPR ``mean softplus(-(s_pos - s_neg))`` + ``reg * 0.5 * (|u0|^2 + |p0|^2 + |n0|^2) / B`` on the
  batch's layer-0 rows (``reg = 1e-4``);
* training propagates the graph once per batch, as LightGCN does. ``train_graph="full"`` is LightGCN's
  way: ``E_1 .. E_L`` over all nodes, ``2 L`` sparse products per batch (``L`` forward, ``L`` backward:
  the symmetric backward of ``graph.SymmetricSpMM``). ``train_graph="rows"`` gives the same loss and the
  same gradients (up to float summation order) for less: the loss only reads the batch's rows of the
  last layer, so ``E_L`` is computed for those rows only (``A_hat[rows] @ E_{L-1}``) and its backward
  is ``A_hat[:, rows] @ G`` (the CSR row slice and its transpose, built per batch with scipy in a few ms).
  On Gowalla (2048-pair batches touch ~5,700 distinct nodes, ~16% of the non-zeros) that replaces 2 of
  the 6 full products by two ~6x cheaper ones: about 25-30% less time per batch (see
  ``benchmarks/bench_gcn.py``). ``"auto"`` (default) uses ``"rows"`` on the CPU and ``"full"`` elsewhere
  (the per-batch slicing runs on the CPU). In ``"rows"`` mode the whole propagation is one autograd node
  (``_RowLayers``) that adds each layer's row gradients in place, and the L2 term reads the layer-0 rows the
  propagation gathered: no table-sized, zero-filled gradient per layer or per lookup, which at 2M nodes
  (half a gigabyte each) cost about as much as a sparse product (``benchmarks/bench_gcn_scale.py``).
  Either way the cost per batch does not depend on the batch size, so the epoch time is about
  ``n_batches * t_batch``; a larger batch is the other faithful lever (same estimator, fewer
  propagations per epoch), and the trainer owns that choice;
* ``propagation="bfloat16"``: training's products read the propagated layer (and, backward, the gradient)
  as bfloat16 with float32 sums (``qrec.models.bf16_spmm``): the products are memory-bound and the gathered
  rows are most of their bytes. Evaluation and exports propagate in float32 either way.

Evaluation (``score``/``score_all``) reads final embeddings cached by ``refresh()``. The cache is dropped
by every ``training_loss`` call and by ``on_epoch_start()``, and rebuilt on first use, so scores never come
from stale parameters.

Serving: the served model is the final ``(n_users + n_items) x d`` float32 table (``export()``), so
``serving_bits() == full_bits()`` for full layer-0 tables: the 100% every quantized GCN is compared to.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee
import torch
import torch.nn.functional as F

from qrec.compress.base import EmbeddingTable, tensor_bits
from qrec.models.base import Recommender
from qrec.models.graph import layer_weights as _layer_weights
from qrec.models.graph import (normalized_adjacency_scipy, product, propagate, sparse_dense_mm, to_torch_csr,
                               training_pairs)

__all__ = ["LOSSES", "LightGCN", "bpr_loss", "ranked_unseen", "sample_bpr_batch", "sampled_softmax_loss",
           "shared_negative_logits", "soft_target_loss"]

LOSSES = ("bpr", "softmax")
REG_SCOPES = ("batch", "table")


class _RowLayers(torch.autograd.Function):
    """``[E_0[rows], ..., E_L[rows]]`` of ``E_l = A E_{l-1}``, the last layer computed for ``rows`` only.

    One autograd node for the whole propagation: its backward runs the chain ``G_{L-1} = A[rows]^T g_L``,
    ``G_{l-1} = A (G_l + g_l at rows)`` with the per-layer row gradients added in place (``index_add_``), so no
    layer gets a zero-filled full-size gradient of its own and no full-size gradients are summed (at 2M
    nodes each is half a gigabyte: those passes cost about a third of a step)."""

    @staticmethod
    def forward(ctx, A, A_rows, A_rows_T, rows, n_layers, E0, mm=sparse_dense_mm):
        ctx.A, ctx.AT, ctx.n_layers, ctx.mm = A, A_rows_T, n_layers, mm
        ctx.save_for_backward(rows)
        h, out = E0, [E0[rows]]
        for _ in range(n_layers - 1):
            h = mm(A, h)
            out.append(h[rows])
        out.append(mm(A_rows, h))
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        (rows,) = ctx.saved_tensors
        mm = ctx.mm
        G = mm(ctx.AT, grads[-1])
        for l in range(ctx.n_layers - 1, -1, -1):
            G.index_add_(0, rows, grads[l])
            if l:
                G = mm(ctx.A, G)
        return None, None, None, None, None, G, None


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``mean(softplus(-(pos - neg)))`` = ``-mean(log sigmoid(pos - neg))``, numerically stable."""
    return F.softplus(neg - pos).mean()


def sampled_softmax_loss(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float = 1.0,
                         hits: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each positive against the batch's negatives, shared by all rows of the batch.

    ``u``, ``pos``: ``(B, d)`` user and positive rows; ``neg``: ``(N, d)`` negative rows (the batch's uniform
    negatives). Row ``b``'s logits are ``[u_b . pos_b, u_b . neg_1, ..., u_b . neg_N] / temperature``: one
    ``(B, N)`` product gives every row ``N`` negatives for the price of one (uniform sampling needs no logQ
    correction). A negative that happens to be another positive of ``u_b`` stays in unless ``hits`` marks it
    (``(B, N)`` bool, ``LightGCN.accidental_hits``): rare on sparse data (0.2% on Gowalla), 10% on ML-1M."""
    logits = shared_negative_logits(u, pos, neg, temperature, hits)
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def shared_negative_logits(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float = 1.0,
                           hits: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 1 + N)`` logits of ``sampled_softmax_loss``: column 0 the row's positive, then the shared negatives;
    ``hits`` (``(B, N)`` bool): negatives left out of their row (logit -inf)."""
    negs = u @ neg.T
    if hits is not None:
        negs = negs.masked_fill(hits, float("-inf"))
    return torch.cat([(u * pos).sum(-1, keepdim=True), negs], dim=1) / temperature


def soft_target_loss(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` over each row's candidates from their log-probabilities (``log_softmax`` of
    the logits), mean over rows: Hinton's distillation of a teacher's whole distribution over the candidates,
    not only its top item. A candidate both sides leave out (``-inf``: ``mask_hits``) adds 0, not ``0 x nan``."""
    p = teacher_logp.exp()
    return (p * (teacher_logp - student_logp).masked_fill(p == 0, 0.0)).sum(1).mean()


@torch.no_grad()
def ranked_unseen(U: torch.Tensor, I: torch.Tensor, seen: sp.spmatrix | None, R: int, chunk: int = 2048) -> torch.Tensor:
    """``(n_users, R)`` int32: each user's ``R`` best items by ``U @ I.T``, best first, ``seen``'s items (a user x item
    sparse matrix: the training pairs) left out; a teacher's ranking for distillation, ``chunk`` users at a time.
    A user with fewer than ``R`` unseen items has them first, then seen ones (``n_items - seen row count`` are valid)."""
    top = torch.empty(U.shape[0], R, dtype=torch.int32)
    seen = None if seen is None else sp.csr_matrix(seen)
    for s in range(0, U.shape[0], chunk):
        e = min(U.shape[0], s + chunk)
        sc = U[s:e] @ I.T
        if seen is not None:
            block = seen[s:e].tocoo()
            sc[torch.from_numpy(block.row.astype(np.int64)), torch.from_numpy(block.col.astype(np.int64))] = -float("inf")
        top[s:e] = sc.topk(R, dim=1).indices.to(torch.int32).cpu()
    return top


def sample_bpr_batch(users: np.ndarray, items: np.ndarray, n_items: int, batch_size: int,
                     rng: np.random.Generator, seen: set | None = None) -> dict[str, torch.Tensor]:
    """A uniform batch of training pairs with one uniform negative each (resampled once if seen).

    A small helper for tests and benchmarks; the real sampler lives with the trainer.
    """
    k = rng.integers(0, len(users), size=batch_size)
    neg = rng.integers(0, n_items, size=batch_size)
    if seen is not None:
        u = users[k]
        bad = np.fromiter(((int(a), int(b)) in seen for a, b in zip(u, neg)), dtype=bool, count=batch_size)
        neg[bad] = rng.integers(0, n_items, size=int(bad.sum()))
    return {"users": torch.from_numpy(users[k]), "pos": torch.from_numpy(items[k]), "neg": torch.from_numpy(neg)}


REORDERS = ("none", "rcm")


def node_order(A: sp.csr_matrix, reorder: str) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, sp.csr_matrix]:
    """``((perm, inv), A[perm][:, perm])`` for ``reorder="rcm"`` (``E_internal = E[perm]``, ``E = E_internal[inv]``),
    ``(None, A)`` for ``"none"``."""
    if reorder not in REORDERS:
        raise ValueError(f"reorder must be one of {REORDERS}, got {reorder!r}")
    if reorder == "none":
        return None, A
    perm = reverse_cuthill_mckee(A, symmetric_mode=True).astype(np.int64)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return (torch.from_numpy(perm), torch.from_numpy(inv)), permuted(A, perm, inv)


def permuted(A: sp.csr_matrix, perm: np.ndarray, inv: np.ndarray) -> sp.csr_matrix:
    """``A[perm][:, perm]`` for a permutation ``perm`` with inverse ``inv``: one row gather and a relabelling of
    the column indices (scipy's column fancy-indexing would build a second copy of the graph)."""
    P = A[perm]
    P.indices = inv[P.indices].astype(P.indices.dtype)
    P.has_sorted_indices = False
    P.sort_indices()
    return P


def _make_table(spec: str, n: int, d: int, init_std: float, frequencies=None) -> EmbeddingTable:
    from qrec.compress.full import FullEmbedding

    if spec == "full":
        return FullEmbedding(n, d, init_std=init_std)
    from qrec.compress.spec import build_table

    return build_table(spec, n, d, frequencies=frequencies, init_std=init_std)


def orthonormal_rows(d: int, wide: int) -> torch.Tensor:
    """A random ``(d, wide)`` matrix ``W`` with ``W W^T = I`` (from torch's generator: seeded by the run)."""
    q, _ = torch.linalg.qr(torch.randn(wide, d, dtype=torch.float64))
    return q.T.contiguous().float()


class LightGCN(Recommender):
    """LightGCN over a fixed training graph.

    Args:
        n_users, n_items: id ranges.
        train: training pairs (``Interactions``, scipy user x item matrix, or ``(users, items)``); builds
            ``A_hat``. May be ``None`` when ``adjacency=`` (an ``A_hat`` CSR tensor) is given.
        dim: embedding size d (64). n_layers: L (3). reg: L2 weight on the batch's layer-0 rows (1e-4).
        reg_scope: ``"batch"`` (LightGCN's code: the L2 of each row the batch draws, so a node's prior grows
            with how often it is drawn: 5-10x stronger per node on ML-1M's dense graph than on Gowalla's) or
            ``"table"`` (LightGCN's paper: ``reg * |E0|^2`` over the whole objective, every node alike; see
            ``reg_loss``).
        init_std: std of the layer-0 normal init (0.1, LightGCN's). table: spec of the layer-0 tables
            (``"full"``; any ``qrec.compress`` spec works, built with the training frequencies).
        layer_weights: ``"uniform"`` (1/(L+1): LightGCN), ``"bigear"`` ((l+1)/(L+1)) or a list.
        user_table, item_table: ready-made layer-0 tables (override ``table``).
        train_graph: ``"auto"``, ``"full"`` or ``"rows"`` (see the module docstring).
        adjacency: a ready ``A_hat`` (scipy or torch CSR) instead of ``train``.
        index_dtype: index type of the torch CSR (int32: a little faster for SpMM, fits < 2^31 non-zeros).
        loss: ``"bpr"`` (LightGCN's: one negative per positive) or ``"softmax"`` (each positive against all
            the batch's negatives at once, ``sampled_softmax_loss``; same batches, same model).
        reorder: ``"none"`` or ``"rcm"``: propagate in reverse Cuthill-McKee node order, which puts a node's
            neighbours' rows close together in memory (the sparse products read ``X``'s rows at random: the
            reordering is about the bytes, not the flops). The same model and gradients up to float summation
            order; tables, scores and exports stay in id order.
        propagation: ``"float32"`` or ``"bfloat16"``: training's sparse products read their dense operand (the
            layer being propagated, forward; the gradient, backward) rounded to bfloat16 and accumulate in
            float32 (``qrec.models.bf16_spmm``: half the bytes gathered per non-zero, on the CPU). Evaluation,
            exports and the served embeddings always propagate in float32.
        temperature: the softmax loss's logit scale (``1.0``: plain dot products).
        mask_hits: the softmax loss leaves out each row's "accidental hits": ``True``, shared negatives that are
            training items of the row's user (0.2% of uniform negatives on Gowalla, 10% on ML-1M's dense
            catalogue); ``"label"``, only the row's own positive where it is drawn as a negative (what
            TensorFlow's ``sampled_softmax_loss(remove_accidental_hits=True)`` removes); ``False``: none.
        negatives: the softmax loss's shared negatives per batch: the first ``negatives`` of the batch's
            (``0``: all ``B``). The ``(B, N)`` logits cost ``O(B N d)``: at ``B = 8192`` all of them cost 4x
            the graph propagation, 1,024 of them a fraction of it.
    """

    loss_kind = "bpr"  # the trainer feeds (user, positive, one uniform negative) batches

    def __init__(self, n_users: int, n_items: int, train=None, dim: int = 64, n_layers: int = 3,
                 reg: float = 1e-4, init_std: float = 0.1, table: str = "full", layer_weights="uniform",
                 user_table: EmbeddingTable | None = None, item_table: EmbeddingTable | None = None,
                 train_graph: str = "auto", adjacency=None, index_dtype: torch.dtype = torch.int32,
                 loss: str = "bpr", temperature: float = 1.0, negatives: int = 0, reorder: str = "none",
                 mask_hits: bool | str = False, propagation: str = "float32", reg_scope: str = "batch"):
        super().__init__(n_users, n_items)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if int(negatives) < 0:
            raise ValueError(f"negatives must be >= 0, got {negatives!r}")
        self.loss, self.temperature, self.negatives = loss, float(temperature), int(negatives)
        if mask_hits not in (False, True, "label"):
            raise ValueError(f"mask_hits must be true, false or 'label', got {mask_hits!r}")
        if mask_hits and loss != "softmax":
            raise ValueError("mask_hits applies to the softmax loss's shared negatives (loss='softmax')")
        self.mask_hits = mask_hits
        self.propagation, self._train_mm = propagation, product(propagation)
        self._train_rows = None  # the user x item training matrix (CSR), built on first use by mask_hits
        self.dim = int(dim)
        self.n_layers = int(n_layers)
        self.reg = float(reg)
        if reg_scope not in REG_SCOPES:
            raise ValueError(f"reg_scope must be one of {REG_SCOPES}, got {reg_scope!r}")
        self.reg_scope = reg_scope
        self.init_std = float(init_std)
        if train_graph not in ("auto", "full", "rows"):
            raise ValueError("train_graph must be 'auto', 'full' or 'rows'")
        self.train_graph = train_graph
        u_freq = i_freq = None
        if adjacency is None:
            if train is None:
                raise ValueError("LightGCN needs the training pairs (train=) or a ready adjacency (adjacency=)")
            users, items, _, _ = training_pairs(train, self.n_users, self.n_items)
            A_sp = normalized_adjacency_scipy((users, items), self.n_users, self.n_items)
            u_freq = np.bincount(users, minlength=self.n_users)
            i_freq = np.bincount(items, minlength=self.n_items)
        elif sp.issparse(adjacency):
            A_sp = adjacency.tocsr()
        else:
            c = adjacency.detach().to("cpu").to_sparse_csr()
            A_sp = sp.csr_matrix((c.values().numpy(), c.col_indices().numpy(), c.crow_indices().numpy()),
                                 shape=tuple(c.shape))
        if A_sp.shape != (self.n_users + self.n_items,) * 2:
            raise ValueError("adjacency shape does not match n_users + n_items")
        if A_sp.nnz >= 2 ** 31:
            index_dtype = torch.int64
        self._index_dtype = index_dtype
        self.reorder = reorder
        self._order, self._prop_sp = node_order(A_sp, reorder)
        del A_sp  # reordered, only the propagation-order graph is kept (``_adj_sp`` rebuilds the other)
        self._adj = to_torch_csr(self._prop_sp, index_dtype=index_dtype)  # shares _prop_sp's arrays
        self._n_pairs = max(1, self._prop_sp.nnz // 2)  # training pairs: one edge each way
        self.user_table = user_table if user_table is not None else _make_table(table, self.n_users, self.dim, self.init_std, u_freq)
        self.item_table = item_table if item_table is not None else _make_table(table, self.n_items, self.dim, self.init_std, i_freq)
        self.layer_weights = _layer_weights(self.n_layers, layer_weights)
        self._cache = None

    # ----------------------------------------------------------------- graph
    @property
    def _adj_sp(self) -> sp.csr_matrix:
        """``A_hat`` (scipy CSR) in id order (users, then items): what distillation and exports read. Reordered,
        it is permuted back on demand, not kept: at 10^8 non-zeros a second graph is gigabytes."""
        if self._order is None:
            return self._prop_sp
        perm, inv = (t.numpy() for t in self._order)
        return permuted(self._prop_sp, inv, perm)

    @property
    def adjacency(self) -> torch.Tensor:
        """``A_hat`` (CSR) in propagation order (id order unless ``reorder``), moved lazily to the device (and
        float dtype) of the parameters."""
        dev = self.user_table._device()
        dtype = next((p.dtype for p in self.user_table.parameters() if p.is_floating_point()), self._adj.dtype)
        if self._adj.device != dev or self._adj.dtype != dtype:
            self._adj = self._adj.to(device=dev, dtype=dtype)
        return self._adj

    def layer0(self) -> torch.Tensor:
        """``E0``: user rows then item rows, ``(n_users + n_items, d)``."""
        return torch.cat([self.user_table.all(), self.item_table.all()], dim=0)

    def _internal_rows(self, X: torch.Tensor) -> torch.Tensor:
        """Rows in id order -> propagation order."""
        return X if self._order is None else X[self._order[0].to(X.device)]

    def _internal_ids(self, idx: torch.Tensor) -> torch.Tensor:
        """Global node ids -> their rows in propagation order."""
        return idx if self._order is None else self._order[1].to(idx.device)[idx]

    def _natural(self, X: torch.Tensor) -> torch.Tensor:
        """Rows in propagation order -> id order."""
        return X if self._order is None else X[self._order[1].to(X.device)]

    def _propagated(self) -> list[torch.Tensor]:
        return propagate(self.adjacency, self._internal_rows(self.layer0()), self.n_layers)

    def layer_embeddings(self) -> list[torch.Tensor]:
        """``[E0, ..., EL]`` over all nodes, in id order (differentiable)."""
        return [self._natural(E) for E in self._propagated()]

    def _rows_mode(self) -> bool:
        if self.train_graph == "auto":
            return self.user_table._device().type == "cpu"
        return self.train_graph == "rows"

    def batch_layers(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """``[E0[idx], ..., EL[idx]]`` for global node ids ``idx`` (users ``< n_users``, items offset by it),
        differentiable; the last layer only for these rows in ``"rows"`` mode (same values)."""
        E0 = self._internal_rows(self.layer0())
        idx = self._internal_ids(idx)
        if self.n_layers == 0:
            return [E0[idx]]
        if not self._rows_mode():
            return [E[idx] for E in propagate(self.adjacency, E0, self.n_layers, mm=self._train_mm)]
        uniq, inv = torch.unique(idx, return_inverse=True)
        A_rows = self._prop_sp[uniq.cpu().numpy()]
        dev = E0.device
        Ar = to_torch_csr(A_rows, device=dev, index_dtype=self._index_dtype)
        ArT = to_torch_csr(A_rows.T.tocsr(), device=dev, index_dtype=self._index_dtype)
        layers = _RowLayers.apply(self.adjacency, Ar, ArT, uniq, self.n_layers, E0.contiguous(), self._train_mm)
        return [E[inv] for E in layers]

    def batch_index(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Global node ids ``[users, pos + n_users, neg + n_users]`` of a BPR batch."""
        return torch.cat([batch["users"], batch["pos"] + self.n_users, batch["neg"] + self.n_users])

    def combine(self, layers: list[torch.Tensor]) -> torch.Tensor:
        out = layers[0] * self.layer_weights[0]
        for w, E in zip(self.layer_weights[1:], layers[1:]):
            out = out + w * E
        return out

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users (n_users, d), items (n_items, d))`` final embeddings (differentiable)."""
        E = self._natural(self.combine(self._propagated()))
        return E[: self.n_users], E[self.n_users:]

    # ----------------------------------------------------------------- training
    def reg_loss(self, batch: dict[str, torch.Tensor], rows0: torch.Tensor | None = None) -> torch.Tensor:
        """``reg * 0.5 * (|u0|^2 + |p0|^2 + |n0|^2) / B`` on the batch's layer-0 rows (LightGCN's code), or with
        ``reg_scope="table"`` ``reg * 0.5 * |E0|^2 / n_pairs`` on every layer-0 row (the paper's ``lambda |E0|^2``
        as a batch's share of the whole objective: the same prior on every node, however often it is drawn).

        ``rows0``: those rows ``[u0; p0; n0]`` as the propagation gathered them (``batch_layers(...)[0]``): the
        same values, and their gradient then joins the propagation's (in place, in ``"rows"`` mode) instead of
        three table lookups each making a zero-filled table-sized gradient (half a gigabyte at 2M nodes)."""
        if self.reg_scope == "table":
            squares = sum(t.all().pow(2).sum() for t in (self.user_table, self.item_table))
            return self.reg * 0.5 * squares / self._n_pairs
        if rows0 is None:
            rows0 = torch.cat([self.user_table(batch["users"]), self.item_table(batch["pos"]),
                               self.item_table(batch["neg"])])
        return self.reg * 0.5 * rows0.pow(2).sum() / batch["users"].shape[0]

    def ranking_loss(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                     hits: torch.Tensor | None = None) -> torch.Tensor:
        """The configured loss of ``(B, d)`` user, positive and negative rows (BPR or the shared-negative softmax,
        ``hits`` left out of it: ``training_batch``'s ``"hits"``)."""
        if self.loss == "softmax":
            return sampled_softmax_loss(u, p, n, self.temperature, hits)
        return bpr_loss((u * p).sum(-1), (u * n).sum(-1))

    def candidate_logits(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                         hits: torch.Tensor | None = None) -> torch.Tensor:
        """Each row's logits over the candidates its loss ranks, the positive first: ``(B, 1 + N)`` under the
        softmax (the shared negatives, over the temperature, ``hits`` at -inf), ``(B, 2)`` under BPR."""
        if self.loss == "softmax":
            return shared_negative_logits(u, p, n, self.temperature, hits)
        return torch.stack([(u * p).sum(-1), (u * n).sum(-1)], dim=1)

    def training_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` on the model's device, its negatives cut to the softmax's shared ``negatives`` (the first N):
        every GCN's loss (teacher and students) then sees the same negatives, and propagates only their rows."""
        dev = self.user_table._device()
        batch = {k: v.to(dev) for k, v in batch.items()}
        if self.loss == "softmax" and self.negatives:
            batch["neg"] = batch["neg"][: self.negatives]
        if self.loss == "softmax" and self.mask_hits == "label":
            batch["hits"] = batch["neg"].unsqueeze(0) == batch["pos"].unsqueeze(1)
        elif self.loss == "softmax" and self.mask_hits:
            batch["hits"] = self.accidental_hits(batch["users"], batch["neg"])
        return batch

    def training_matrix(self) -> sp.csr_matrix:
        """The user x item training pairs (CSR, ones): the user -> item block of ``A_hat``, built once."""
        if self._train_rows is None:
            R = self._adj_sp[: self.n_users, self.n_users:].tocsr()
            R.data[:] = 1
            self._train_rows = R
        return self._train_rows

    def accidental_hits(self, users: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` bool: is shared negative ``j`` a training item of row ``b``'s user? One row-and-column slice of
        the training matrix (the user -> item block of ``A_hat``), O(the rows' training items + N)."""
        sub = self.training_matrix()[users.cpu().numpy()][:, neg.cpu().numpy()].tocoo()
        hits = torch.zeros(users.shape[0], neg.shape[0], dtype=torch.bool)
        hits[torch.from_numpy(sub.row.astype(np.int64)), torch.from_numpy(sub.col.astype(np.int64))] = True
        return hits.to(users.device)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BPR on the final embeddings (whole graph propagated) + L2 on layer 0 + the tables' aux losses."""
        self._cache = None
        batch = self.training_batch(batch)
        B = batch["users"].shape[0]
        layers = self.batch_layers(self.batch_index(batch))
        x = self.combine(layers)
        u, p, n = x[:B], x[B:2 * B], x[2 * B:]
        loss = self.ranking_loss(u, p, n, batch.get("hits")) + self.reg_loss(batch, layers[0])
        return loss + self._table_aux()

    def _table_aux(self) -> torch.Tensor | float:
        tables = self.embedding_tables().values()
        if all(t.family == "full" for t in tables):
            return 0.0
        return self.aux_loss().to(self.user_table._device())

    def on_epoch_start(self) -> None:
        self.drop_caches()

    def drop_caches(self) -> None:
        """Forget what was derived from the parameters (final embeddings; codes in the quantized subclasses)."""
        self._cache = None
        self._codes = None

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .cpu() move parameters, not the caches derived from them: drop those, or scoring
        # would mix the old device's cached embeddings with the new device's inputs
        self.drop_caches()
        return super()._apply(fn, *args, **kwargs)

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the cached final embeddings from the current parameters."""
        U, I = self.final_embeddings()
        self._cache = (U.detach(), I.detach())

    def _final_cached(self):
        if self._cache is None:
            self.refresh()
        return self._cache

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        U, I = self._final_cached()
        return (U[users.to(U.device)] * I[items.to(U.device)]).sum(-1)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        U, I = self._final_cached()
        return U[users.to(U.device)] @ I.T

    # ----------------------------------------------------------------- serving
    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        """What a server holds: the final float32 user and item embeddings."""
        U, I = self._final_cached()
        return {"user_emb": U.detach().cpu().float().contiguous(), "item_emb": I.detach().cpu().float().contiguous()}

    def serving_bits(self) -> int:
        return tensor_bits(self.export()) + self.dense_bits()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_lightgcn(cls, model: "LightGCN", **kwargs) -> "LightGCN":
        """A new model of this class on ``model``'s graph, its layer-0 tables initialised from ``model``'s.

        A wider student (``dim`` > the teacher's d) starts from the teacher's rows times a random ``(d, dim)``
        matrix with orthonormal rows: dot products and norms are unchanged (``x W (y W)^T = x y^T``), and the
        propagation is linear, so it starts with the teacher's scores and L2 exactly, in more coordinates (more
        sign bits for a 1-bit student to keep)."""
        kw = dict(dim=model.dim, n_layers=model.n_layers, reg=model.reg, init_std=model.init_std)
        if model.loss != "bpr":  # a student trains with its teacher's loss unless told otherwise
            kw.update(loss=model.loss, temperature=model.temperature, negatives=model.negatives, mask_hits=model.mask_hits)
        kw.update(kwargs)
        kw.setdefault("train_graph", model.train_graph)
        kw.setdefault("index_dtype", model._index_dtype)
        kw.setdefault("reorder", model.reorder)
        new = cls(model.n_users, model.n_items, train=None, adjacency=model._adj_sp, **kw)
        if new.dim < model.dim:
            raise ValueError(f"a student cannot be narrower than its teacher (d = {new.dim} < {model.dim})")
        lift = None if new.dim == model.dim else orthonormal_rows(model.dim, new.dim)
        for source, target in ((model.user_table, new.user_table), (model.item_table, new.item_table)):
            if lift is None:
                target.load_state_dict(source.state_dict())
            else:
                with torch.no_grad():
                    target.weight.copy_(source.weight.detach().cpu() @ lift)
        return new.to(model.user_table._device())
