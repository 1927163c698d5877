"""Differentiable product quantization (DPQ, Chen et al. ICML 2020; MGQE paper section 3.3): ``dpq<D>x<K>[-sx][-bn]``.

Each row ``i`` has a free *query* vector ``e_i`` (training only), split into ``D`` sub-vectors of ``s = d / D``
dims; subspace ``j`` has ``K`` centroids ``c^(j)_k`` (the codebook ``C``, ``D x K x s``).

VQ flavour (default, the one MGQE builds on)::

    code_j = argmin_k ||e^(j) - c^(j)_k||^2                    ties -> lowest k
    out    = e + stop_grad(c_code - e)                          forward: centroids; backward: identity to e
    aux    = mean((c_code - stop_grad(e))^2)                    centroid loss, weight 1 (DPQ's code)
           + beta * mean((e - stop_grad(c_code))^2)             commitment, beta = 0 by default

Softmax flavour (``-sx``)::

    r_k = -||e^(j) - c^(j)_k||^2 / tau,  p = softmax(r),  code_j = argmax_k r_k
    out = (p + stop_grad(one_hot(code) - p)) @ C^(j)            forward: one-hot centroid; backward: via p

so ``e`` learns only through the softmax and ``C`` through the selected centroid; ``aux = beta *
mean(-log p_code)`` (0 by default). DPQ's reference SX scores with a dot product and separate key/value
codebooks; qrec ties them and uses the euclidean response, so the serving size is the same either way.

``-bn``: batch-normalise the responses ``-||e - c_k||^2`` (no affine) before the argmax, as the reference
code does: ``tf.layers.batch_normalization`` on ``(B, D, K)`` with axis -1, i.e. one statistic per centroid
index ``k`` pooled over the batch and the subspaces, TF's momentum 0.99 and eps 1e-3. Pitfall: in training
mode the codes depend on the batch statistics, so they differ from eval mode. qrec's ``export()`` (and the
eval-mode forward) always use the running statistics, row by row: the exported codes are deterministic and
are exactly what the model sees in eval mode.

Init: queries and centroids both ``N(0, init_std^2)`` (0.01, as MGQE): every centroid is a draw from the
queries' own distribution (the same, in distribution, as initialising from random rows), so none starts
far from the data.

Nearest-centroid search: ``qrec.compress.nearest`` (exact kernels, identical codes, ties to the lowest
index). Only the batch's distinct rows are quantized in ``forward``.

Serving (``export``): the codes packed at ``log2 K`` bits (``ceil(n D log2 K / 8)`` bytes) and the centroids
as float32 (``D K s = K d`` floats): ``n D log2 K + 32 K d`` bits as in Table 1, plus < 8 bits of byte
padding. The query table is training state only and is not exported.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from qrec.compress.base import EmbeddingTable
from qrec.compress.coded import CodedPart, decode_parts, narrow_codes
from qrec.compress.nearest import carried_order, nearest_codes, rows_per_chunk
from qrec.quant.packing import MAX_BITS, pack_bits, packed_nbytes, unpack_bits
from qrec.quant.ste import straight_through, zero_with_grad_of
from qrec.retrieval.pqscan import gather_centroids, select_rows
from qrec.errors import SpecError

_BN_MOMENTUM, _BN_EPS = 0.01, 1e-3  # TF's batch_normalization defaults (momentum 0.99 in TF's convention)


# --------------------------------------------------------------------------------------------- sizes


def code_bits(d: int, D: int, K: int) -> int:
    """``log2 K``, after checking that ``D`` divides ``d`` and ``K`` is a power of two in ``2..2^16``."""
    if D <= 0 or d % D:
        raise SpecError(f"{D} subspaces must divide the embedding dimension {d}")
    if K < 2 or K & (K - 1) or K > 1 << MAX_BITS:
        raise SpecError(f"K={K} centroids: K must be a power of two in 2..{1 << MAX_BITS} "
                        "(codes are stored in log2 K bits)")
    return K.bit_length() - 1


#: a bare ``dpq<D>x<n>`` above this reads as centroids: FAISS's nbits never exceeds it (``qrec.compress.spec``)
MAX_BARE_AMBIGUOUS = 16


def dpq_spec(D: int, K: int, softmax: bool = False, bn: bool = False) -> str:
    """The canonical spec of a DPQ table: ``dpq<D>x<K>`` above 16 centroids (every record so far), else the
    bits form ``dpq<D>x<b>b``, so a spec read back never meets the ambiguous form."""
    count = f"{K}" if K > MAX_BARE_AMBIGUOUS else f"{K.bit_length() - 1}b" if K & (K - 1) == 0 else f"{K}c"
    return f"dpq{D}x{count}" + "-sx" * softmax + "-bn" * bn


def dpq_bits(n: int, d: int, D: int, K: int) -> int:
    """Serving size of ``dpq<D>x<K>``: packed codes ``8 ceil(n D log2 K / 8)`` + centroids ``32 K d``."""
    return 8 * packed_nbytes(n * D, code_bits(d, D, K)) + 32 * K * d


# ------------------------------------------------------------------------------------------- kernels


def split(x: torch.Tensor, D: int) -> torch.Tensor:
    """``(B, d) -> (B, D, d/D)``: the sub-vectors."""
    return x.reshape(x.shape[0], D, -1)


def responses(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """DPQ's responses ``-||x^(j) - c^(j)_k||^2`` as ``(D, B, K)`` (subspace-major, so no big transposes) for
    ``x (B, D, s)``, ``centroids (D, K, s)``: ``2 x.c - ||x||^2 - ||c||^2`` in one batched matmul-add;
    differentiable in both."""
    xt = x.transpose(0, 1)  # (D, B, s)
    norms = xt.square().sum(-1, keepdim=True) + centroids.square().sum(-1).unsqueeze(1)  # (D, B, K)
    return torch.baddbmm(norms, xt, centroids.transpose(1, 2), beta=-1, alpha=2)



class _VQLookup(torch.autograd.Function):
    """``vq_lookup``'s forward and backward written out: a handful of tensor ops instead of the ~25 (and their
    autograd nodes) of composing gather, straight-through, centroid loss and batch gather; on the CPU a DPQ /
    MGQE step is dominated by such small ops, not by arithmetic."""

    @staticmethod
    def forward(ctx, query, centroids, x, rows, codes, counts, inverse, beta, sparse):
        D, K = centroids.shape[:2]
        flat = (codes + K * torch.arange(D, device=codes.device)).reshape(-1)
        q = select_rows(centroids.detach().reshape(D * K, -1), flat).reshape_as(x)
        diff = q - x  # x: the detached query rows
        weighted = diff * counts.unsqueeze(1).to(diff.dtype)
        aux = (1.0 + beta) * (diff * weighted).sum()
        ctx.save_for_backward(weighted, rows, flat, inverse)
        ctx.shapes, ctx.beta, ctx.sparse = (query.shape, centroids.shape), beta, sparse
        return (q if inverse is None else q.index_select(0, inverse)), aux

    @staticmethod
    def backward(ctx, grad_out, grad_aux):
        weighted, rows, flat, inverse = ctx.saved_tensors
        (query_shape, book_shape), beta = ctx.shapes, ctx.beta
        grad_query = grad_book = None
        if ctx.needs_input_grad[0]:  # straight-through to the query rows, plus the commitment term
            g_rows = grad_out if inverse is None else _add_rows(torch.zeros_like(weighted), inverse, grad_out)
            if beta:
                g_rows = g_rows - (2.0 * beta) * grad_aux * weighted
            if ctx.sparse:
                grad_query = torch.sparse_coo_tensor(rows.unsqueeze(0), g_rows, query_shape, check_invariants=False)
            else:
                grad_query = grad_out.new_zeros(query_shape).index_copy_(0, rows, g_rows)  # rows are distinct
        if ctx.needs_input_grad[1]:  # centroid loss: d/dc sum counts ||c - sg(x)||^2 = 2 counts (c - x)
            book = weighted.new_zeros(book_shape[0] * book_shape[1], book_shape[2])
            sub = (2.0 * grad_aux) * weighted.reshape(flat.numel(), book_shape[2])
            grad_book = _add_rows(book, flat, sub).reshape(book_shape)
        return grad_query, grad_book, None, None, None, None, None, None, None


def _add_rows(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[i]] += src[i]`` as a ``scatter_add_`` (on the CPU ``index_add_`` costs ~ms per call for
    the 1-float rows of scalar subspaces; the scatter is what torch's own index_select backward uses).
    One-float rows scatter into the 1-D view: the same additions in the same order (bit-identical), 3-6x
    faster than through the expanded 2-D index."""
    if src.shape[1] == 1:
        out.reshape(-1).scatter_add_(0, index, src.reshape(-1))
        return out
    return out.scatter_add_(0, index.unsqueeze(1).expand(-1, src.shape[1]), src)


def vq_lookup(query: torch.Tensor, centroids: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor,
              counts: torch.Tensor, inverse: torch.Tensor | None = None, beta: float = 0.0,
              x: torch.Tensor | None = None, sparse: bool = False):
    """VQ-quantized rows with the straight-through gradient, and their centroid loss, in one autograd node.

    For distinct ``rows`` of ``query`` with nearest-centroid ``codes (U, D)`` into ``centroids (D, K, s)``,
    occurring ``counts`` times in the batch, returns ``(out, aux)``: ``out = q[inverse]`` (``q`` when
    ``inverse`` is None), ``q`` the rows' centroids exactly, and ``aux = sum_u counts_u (||q_u - sg(x_u)||^2
    + beta ||x_u - sg(q_u)||^2)``. Gradients equal those of the composed reference
    ``straight_through(x, q)[inverse]`` and ``vq_aux_terms(x, q, beta, counts)`` (tested). ``x``: the
    detached ``query[rows]`` when the caller already gathered it for the code search. ``sparse``: the query's
    gradient as a sparse tensor over ``rows`` (for row-wise optimizers) instead of a dense one."""
    if x is None:
        x = query.detach().index_select(0, rows)
    return _VQLookup.apply(query, centroids, x, rows, codes, counts, inverse, float(beta), sparse)


# ------------------------------------------------------------------------------------- the aux loss


class AuxLoss:
    """Accumulates a mean auxiliary loss over every forward call of one training step.

    A model may call a table several times per step (BPR looks up positive and negative items separately,
    LightGCN the whole table and then the batch); the loss is the mean over all their elements. ``value()``
    may be read any number of times; the first gradient-enabled forward after a read starts a new step.
    Forwards under ``no_grad`` are not recorded, and at most ``MAX_CALLS`` calls are kept (the oldest are
    dropped), so a loop that never reads the loss cannot pile up autograd graphs.
    """

    MAX_CALLS = 64

    def __init__(self):
        self._terms: deque[tuple[torch.Tensor, int]] = deque(maxlen=self.MAX_CALLS)
        self._read = False

    def __getstate__(self) -> dict:
        return {}  # the recorded terms are autograd graphs: copies and pickles start empty (deepcopy would fail)

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def add(self, total: torch.Tensor, count: int) -> None:
        """Record one call: ``total`` is the loss summed over its ``count`` elements."""
        if not torch.is_grad_enabled():
            return
        if self._read:
            self._terms.clear()
            self._read = False
        self._terms.append((total, int(count)))

    def value(self, device: torch.device) -> torch.Tensor:
        self._read = True
        count = sum(c for _, c in self._terms)
        if count == 0:
            return torch.zeros((), device=device)
        return torch.stack([t for t, _ in self._terms]).sum() / count


def vq_aux_terms(x: torch.Tensor, q: torch.Tensor, beta: float, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Sum (not mean) of the VQ losses over the batch: ``sum (q - sg(x))^2 + beta sum (x - sg(q))^2``.

    ``counts``: how often each (deduplicated) row occurs in the batch, so the sum equals the sum over the
    batch with its repeats, as DPQ computes it."""
    per_row = (q - x.detach()).square().sum(-1)
    if beta:
        per_row = per_row + beta * (x - q.detach()).square().sum(-1)
    return per_row.sum() if counts is None else (per_row * counts).sum()


def unique_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows, inverse, counts)`` of a flat id batch: quantize each distinct row once, then gather.

    A pointwise batch repeats each user 1 + n_neg times and popular items many times, so this does the
    nearest-centroid search (the cost of a DPQ/MGQE step on the CPU) for 2-5x fewer rows. Callers gather
    with ``index_select``, whose backward is an ``index_add`` (advanced indexing's sorts its indices)."""
    rows, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    return rows, inverse, counts


# ------------------------------------------------------------------------------------------ the table


class DPQEmbedding(EmbeddingTable):
    """DPQ table: a training-only query table plus a ``D x K x d/D`` codebook; serves codes + codebook."""

    family = "dpq"

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        num_subspaces: int,
        num_centroids: int,
        softmax: bool = False,
        bn: bool = False,
        tau: float = 1.0,
        beta: float = 0.0,
        init_std: float = 0.01,
        kernel: str = "auto",
    ):
        super().__init__(num_embeddings, dim)
        self.code_bits = code_bits(dim, num_subspaces, num_centroids)
        self.num_subspaces, self.num_centroids = int(num_subspaces), int(num_centroids)
        self.softmax, self.bn = bool(softmax), bool(bn)
        self.tau, self.beta, self.kernel = float(tau), float(beta), kernel
        self.query = nn.Parameter(torch.randn(num_embeddings, dim) * init_std)
        self.centroids = nn.Parameter(torch.randn(num_subspaces, num_centroids, dim // num_subspaces) * init_std)
        if self.bn:
            self.register_buffer("running_mean", torch.zeros(num_centroids))
            self.register_buffer("running_var", torch.ones(num_centroids))
        self._aux = AuxLoss()
        self._orders: dict = {}  # each codebook's centroid order, carried between steps (nearest_sorted)

    @classmethod
    def from_float(cls, weight: torch.Tensor, num_subspaces: int, num_centroids: int, seed: int = 0) -> "DPQEmbedding":
        """Post-training PQ of a trained float table: k-means codebooks (``qrec.compress.kmeans``), the table
        itself as the queries, so each row is served as its nearest centroids."""
        from qrec.compress.kmeans import product_kmeans

        weight = weight.detach().float().cpu()
        table = cls.blank(weight.shape[0], weight.shape[1], num_subspaces, num_centroids)
        with torch.no_grad():
            table.query.copy_(weight)
            table.centroids.copy_(product_kmeans(split(weight, num_subspaces), num_centroids, seed=seed))
        return table.eval()

    @property
    def spec(self) -> str:
        return dpq_spec(self.num_subspaces, self.num_centroids, self.softmax, self.bn)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (self.softmax or self.bn):  # rows are quantized independently: each distinct row once
            rows, inverse, counts = unique_ids(ids.reshape(-1))
            x = self.query.detach().index_select(0, rows)
            order = carried_order(self._orders, 0, self.centroids)
            codes = nearest_codes(split(x, self.num_subspaces), self.centroids, self.kernel, order)
            out, aux = vq_lookup(self.query, self.centroids, rows, codes, counts, inverse, self.beta, x=x,
                                 sparse=self.sparse_grad)
            self._aux.add(aux, ids.numel() * self.dim)
            return out.reshape(*ids.shape, self.dim)
        x = self.query[ids.reshape(-1)]
        if self.training:
            out = self._quantize(x, batch_stats=True)
        else:  # rows are independent in eval mode: bound the (rows, D, K) responses of -sx / -bn
            out = torch.cat([self._quantize(part, batch_stats=False) for part in x.split(self._eval_chunk())])
        return out.reshape(*ids.shape, self.dim)

    def aux_loss(self) -> torch.Tensor:
        return self._aux.value(self.centroids.device)

    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        """The ``(n, D)`` codes a server stores, computed deterministically in eval mode (running BN stats)."""
        parts = [self._codes(x, batch_stats=False)[0] for x in self.query.split(self._eval_chunk())]
        return torch.cat(parts)

    @torch.no_grad()
    def export(self) -> dict[str, torch.Tensor]:
        """Packed a chunk of rows at a time (the int64 codes of a whole 10^7-row table are 2x the float table): the
        same chunks as ``codes()`` where they matter (softmax / BN), ``ALL_CHUNK`` rows for VQ (exact per row),
        any chunk that packs to whole bytes, so the chunks' streams concatenate into the one stream."""
        chunk = self._eval_chunk() if self.softmax or self.bn else self.ALL_CHUNK
        if chunk * self.num_subspaces * self.code_bits % 8:
            chunk = self.num_embeddings
        codes = [pack_bits(self._codes(x, batch_stats=False)[0], self.code_bits).cpu() for x in self.query.split(chunk)]
        return {"codes": torch.cat(codes), "centroids": self.centroids.detach().to("cpu", torch.float32).contiguous()}

    @classmethod
    def coded_parts(cls, tensors, num_embeddings, dim, spec) -> list[CodedPart]:
        """The export as one ``CodedPart`` over all rows (what a server scores, ``qrec.compress.coded``)."""
        centroids = tensors["centroids"].float()
        D, K = centroids.shape[:2]
        codes = narrow_codes(tensors["codes"], code_bits(dim, D, K), num_embeddings * D)
        return [CodedPart(None, codes.reshape(num_embeddings, D), centroids)]

    @classmethod
    def decode_export(cls, tensors, num_embeddings, dim, spec):
        return decode_parts(cls.coded_parts(tensors, num_embeddings, dim, spec), num_embeddings, dim)

    # -- internals

    def _eval_chunk(self) -> int:
        """Rows per eval-mode call. The same split in ``forward`` and ``codes`` (both start at row 0), so
        ``all()`` and the export see identical batches and hence identical float rounding."""
        if self.softmax or self.bn:
            return rows_per_chunk(self.num_subspaces, self.num_centroids)
        return max(1, self.num_embeddings)  # VQ: nearest_codes bounds its own memory

    def _quantize(self, x: torch.Tensor, batch_stats: bool) -> torch.Tensor:
        codes, r = self._codes(x, batch_stats)
        q = gather_centroids(self.centroids, codes)
        if not self.softmax:  # -bn: VQ on batch-normalised responses
            self._aux.add(vq_aux_terms(x, q, self.beta), x.numel())
            return straight_through(x, q)
        probs = torch.softmax(r / self.tau, dim=-1)  # (D, B, K)
        soft = torch.bmm(probs, self.centroids.detach()).transpose(0, 1).reshape_as(x)  # sum_k p_k c_k
        if self.beta:
            log_p = torch.log(probs.gather(-1, codes.T.unsqueeze(-1)).clamp_min(1e-10))
            self._aux.add(-self.beta * log_p.sum(), log_p.numel())
        return q + zero_with_grad_of(soft)  # = one_hot_st(p) @ C: C learns via q, p via soft

    def _codes(self, x: torch.Tensor, batch_stats: bool):
        """Codes ``(B, D)`` and, for the softmax / BN flavours, the (differentiable) responses ``(D, B, K)``."""
        sub = split(x, self.num_subspaces)
        if not (self.softmax or self.bn):
            return nearest_codes(sub, self.centroids, self.kernel), None
        with torch.set_grad_enabled(self.softmax and torch.is_grad_enabled()):  # VQ only needs the argmax
            r = responses(sub, self.centroids)
            if self.bn:
                r = self._batch_norm(r, batch_stats)
        return r.detach().argmax(-1).T, r

    def _batch_norm(self, r: torch.Tensor, batch_stats: bool) -> torch.Tensor:
        """BatchNorm without affine over the K channels, statistics pooled over subspaces and batch."""
        flat = r.reshape(-1, r.shape[-1])
        use_batch = batch_stats and flat.shape[0] > 1  # a single response row has no batch variance
        out = F.batch_norm(flat, self.running_mean, self.running_var, training=use_batch,
                           momentum=_BN_MOMENTUM, eps=_BN_EPS)
        return out.reshape(r.shape)
