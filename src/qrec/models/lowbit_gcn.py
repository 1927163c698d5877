"""b-bit graph embeddings in the style of HQ-GNN (Chen et al., RecSys 2023): LightGCN encoder + quantizer.

What is implemented, exactly:

1. Encoder: LightGCN (``qrec.models.lightgcn``); final user and item embeddings ``x`` (mean of layers).
2. Quantizer (``qrec.quant.uniform``): symmetric mid-rise uniform grid with ``2^b`` levels (b = 1, 2, 4, 8;
   any 1..8 works), one step per node, ``step = k_b * mean|x|`` with ``k_b`` the Gaussian MSE-optimal
   step over ``E|x|`` (statistics-based, recomputed from the current embeddings at every forward, no
   gradient through it). Why this scale and not a learned (LSQ) one by default: see ``qrec.quant.uniform``.
   ``learn_scale=True``: each node's step is a parameter instead (stored as its log), set from the statistic at
   the first step and then trained by the loss as a scale (``x_q = step u_q``; no gradient through the
   rounding): at one bit it is the node's weight in every score. The same stored float per node.
   ``b = 1`` gives ``mean|x| * sign(x)``.
3. Training loss: BPR (or the teacher's shared-negative softmax) on the *quantized* scores
   ``<x_q,u, x_q,i>`` + LightGCN's L2 on the batch's layer-0 rows (+ ``fp_weight`` x the same loss on the
   float scores, 0 by default) (+ ``kd_weight`` x distillation, 0 by default: the KL divergence from the
   teacher's distribution over each row's candidates, the positive and its negatives, to the student's,
   ``soft_target_loss``; the teacher's final embeddings are computed once when it is attached, so a step
   pays one small product for them and no propagation). ``kd_top = k > 0`` adds to each row's distillation
   candidates ``k`` items drawn from the teacher's ``kd_pool`` best unseen items of its user (not to the
   ranking loss's: they are the teacher's guesses of held-out items, not negatives), so the student learns
   the teacher's order where Recall@K is decided, among its top items, not only against uniform negatives.
4. Gradient through the rounding: ``estimator="ste"`` (identity inside the clipping range) or
   ``"ewgs"``, the generalized STE ``g_x = g_q (1 + delta sign(g_q) (x - x_q))`` (EWGS, Lee et al. 2021), in
   step units (``u = x/step``, ``|u - u_q| <= 1/2``).
5. ``delta`` (one for users, one for items): at step 0 and then every ``delta_every`` training steps
   (default 200, not every step: each update costs ``hutchinson_samples`` extra backward passes), on the
   current batch, with the quantized codes ``u_q`` of the batch rows as leaves:
   ``Tr(H)`` of the BPR loss w.r.t. ``u_q`` by Hutchinson (Rademacher ``v``, ``hutchinson_samples = 16``,
   ``qrec.quant.hessian``), ``delta = (Tr(H) / N) / (3 std(g))`` with ``N`` and ``g`` the number of
   elements of, and the gradient w.r.t., that leaf, clamped to ``[0, delta_max = 2]`` (2 keeps the factor
   in [0, 2]). This is EWGS's reference recipe (``update_grad_scales``: trace by Hutchinson on the
   quantized values, divided by the element count and by 3 x the gradient's std, clipped at 0); EWGS
   averages 10 batches of 16 images every few epochs, we take one batch of 2 B rows every ``delta_every``
   steps, replacing the old value. The Hessian is taken w.r.t. the quantizer *outputs* (where EWGS's
   Taylor expansion ``g_x ~ g_q + H (x - x_q)`` is centred); with a plain STE it equals the Hessian w.r.t.
   the inputs. Units cancel: ``delta (u - u_q)`` is the same in step units and in raw units.
   The BPR loss is bilinear in the embeddings, so its Hessian w.r.t. the codes is cheap (no propagation).
   ``delta_history`` records ``(step, delta_user, delta_item)``.
6. Optional rotation (``rotation="itq"``, not in HQ-GNN): the final embeddings are rotated by an orthogonal
   ``R`` before quantizing, ``x_q = Q(x R)``. Inner products, hence the float model, are unchanged, and the
   codes a server stores are of ``x R``, so it costs no serving bits. ``R`` is ITQ's rotation
   (``qrec.quant.rotation``) of the current final embeddings (users and items, each side scaled to unit mean
   row norm), refitted at the start of every epoch from the previous one (warm start; no gradient through
   it). Measured on ML-1M: ``sign`` of a trained LightGCN's embeddings keeps 68% of its Recall@20, after
   ITQ's rotation 84%, before any training.
7. Evaluation scores from integer codes (``qrec.retrieval.intdot``): int8 codes, int32 dot products,
   per-node scales. Serving: ``b`` bits per dimension per node (packed) + one float32 step per node.
   ``step_bits=16`` stores the step as float16 instead, in training too (the steps are rounded to float16 where
   they are computed, so the trained, evaluated and served scores are the same): at one bit and d = 64 the step
   is a third of a node's 96 bits, and 16 saved bits buy 16 more sign dimensions at the same size.
8. Optional at one bit (``similarity="angular"``, with ``scale_method="norm"``: levels ``+-|x| / sqrt(d)``, so a
   code keeps its row's norm): the score is SimHash's estimate of the float dot product, ``|u| |i| cos(pi h / d)``
   with ``h`` the Hamming distance (``qrec.retrieval.hamming.angular_scores``), in training, evaluation and the
   served artifact; the same bits. The dot product of sign codes is linear in ``h`` where the cosine is not.
   Its top-k takes the popcount score matrix, then the cosine (the fused top-k kernels rank dot products).
   Measured on Gowalla (gcn-fast-masked teacher, d = 192 lifted, ITQ, no training): Recall@20 16.22 -> 16.87.
   As a training objective it failed there: a distilled student stayed at its start (16.87 -> 16.91 in 4 epochs)
   where the dot-product student gains a point; so it is a training-free (``qrec ptq``) gain, not a recipe.
9. Optional vector codes (``vector_dim = s >= 2``, not in HQ-GNN; ``qrec.quant.vector``): the same ``b`` bits per
   coordinate, spent ``s`` coordinates at a time: each block of a row (at the row's RMS as its step) is the index of
   its nearest codeword among ``2^(b s)`` of one codebook shared by all blocks and nodes, fitted by k-means to the
   rows at the first step and then fixed; straight-through gradient. The codewords lie on an int8 grid, so
   evaluation and serving score them with the same integer dot products; the artifact stores the indices, the
   steps and the codebook (``VectorCodes``). Measured on Gowalla (gcn-fast-table's teacher lifted to d = 104, 2
   bits, float16 steps, the same lift): before training Recall@20 / @50 16.72 / 26.41 on the scalar grid, 17.13 /
   26.89 with 4-coordinate codes; the distilled student (8 epochs) ends where the scalar one does, 17.92 / 27.79 against
   17.93 / 27.81. So, like item 8, a training-free gain (``qrec ptq``), not a better student.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from qrec.compress.kmeans import shared_codebook
from qrec.compress.nearest import nearest_shared
from qrec.models.lightgcn import LightGCN, ranked_unseen, soft_target_loss
from qrec.models.served import ScoredFromCodes
from qrec.quant.hessian import hutchinson_trace
from qrec.quant.rotation import itq_rotation
from qrec.quant.uniform import ewgs_delta, node_step, round_ste
from qrec.quant.vector import check_vector_code, row_step
from qrec.retrieval.hamming import angular_scores
from qrec.retrieval.intdot import IntCodes, VectorCodes

__all__ = ["LowBitGCN"]


class LowBitGCN(ScoredFromCodes, LightGCN):
    """HQ-GNN-style b-bit GCN; see the module docstring.

    Extra args (beyond ``LightGCN``'s): ``bits`` (2), ``estimator`` (``"ewgs"`` or ``"ste"``),
    ``scale_method`` (``"meanabs"``/``"maxabs"``), ``delta`` (initial, 0), ``delta_every`` (200),
    ``delta_max`` (2.0), ``hutchinson_samples`` (16), ``fp_weight`` (0.0), ``rotation`` (``"none"`` or
    ``"itq"``), ``scoring_backend`` (``qrec.retrieval.intdot.int_dot`` backend), ``kd_weight`` (0.0:
    distillation from the teacher ``from_lightgcn`` starts from), ``kd_top`` (0) and ``kd_pool`` (100): that many
    of the teacher's top items per row in the distillation (softmax loss only), ``similarity`` (``"dot"``, or at one
    bit ``"angular"``: item 8), ``learn_scale`` (False: item 2), ``step_bits`` (32, or 16: item 7), ``vector_dim``
    (1: the scalar grid; ``s >= 2``: vector codes, item 9).
    """

    def __init__(self, n_users: int, n_items: int, train=None, dim: int = 64, n_layers: int = 3,
                 reg: float = 1e-4, init_std: float = 0.1, table: str = "full", layer_weights="uniform",
                 bits: int = 2, estimator: str = "ewgs", scale_method: str = "meanabs", delta: float = 0.0,
                 delta_every: int = 200, delta_max: float = 2.0, hutchinson_samples: int = 16,
                 fp_weight: float = 0.0, rotation: str = "none", scoring_backend: str = "auto",
                 kd_weight: float = 0.0, kd_top: int = 0, kd_pool: int = 100, similarity: str = "dot",
                 learn_scale: bool = False, step_bits: int = 32, vector_dim: int = 1, **kwargs):
        super().__init__(n_users, n_items, train, dim=dim, n_layers=n_layers, reg=reg, init_std=init_std,
                         table=table, layer_weights=layer_weights, **kwargs)
        if estimator not in ("ste", "ewgs"):
            raise ValueError("estimator must be 'ste' or 'ewgs'")
        if not 1 <= int(bits) <= 8:
            raise ValueError("bits must be in 1..8")
        if rotation not in ("none", "itq"):
            raise ValueError("rotation must be 'none' or 'itq'")
        if similarity not in ("dot", "angular"):
            raise ValueError(f"similarity must be 'dot' or 'angular', got {similarity!r}")
        if similarity == "angular" and (int(bits) != 1 or scale_method != "norm"):
            raise ValueError("similarity='angular' scores sign codes by their angle: it needs bits=1 and scale_method='norm'")
        if step_bits not in (16, 32) or isinstance(step_bits, bool):
            raise ValueError(f"step_bits must be 32 (float32 steps) or 16 (float16), got {step_bits!r}")
        self.step_bits = int(step_bits)
        self.vector_dim = int(vector_dim)
        if self.vector_dim < 1:
            raise ValueError(f"vector_dim must be 1 (the scalar grid) or a block size >= 2, got {vector_dim}")
        if self.vector_dim > 1:
            check_vector_code(int(bits), self.vector_dim, dim)
            if estimator != "ste" or learn_scale or similarity != "dot" or scale_method != "meanabs":
                raise ValueError("vector codes (vector_dim > 1) train with estimator='ste', dot-product scores and "
                                 "the rows' RMS as steps (no learn_scale, no other scale_method)")
            self.register_buffer("codebook", torch.zeros(2 ** (int(bits) * self.vector_dim), self.vector_dim))
            self.register_buffer("codebook_set", torch.zeros((), dtype=torch.bool))
        self.step_dtype = torch.float16 if self.step_bits == 16 else torch.float32  # the artifact's step dtype
        self.similarity = similarity
        self.learn_scale = bool(learn_scale)
        if self.learn_scale:  # each node's step, learned by the ranking loss; set from scale_method's statistic first
            self.log_step = torch.nn.Parameter(torch.zeros(n_users + n_items))
            self.register_buffer("log_step_set", torch.zeros((), dtype=torch.bool))
        self.rotation = rotation
        self.bits = int(bits)
        self.estimator = estimator
        self.scale_method = scale_method
        self.delta_every = int(delta_every)
        self.delta_max = float(delta_max)
        self.hutchinson_samples = int(hutchinson_samples)
        self.fp_weight = float(fp_weight)
        self.kd_weight = float(kd_weight)
        self.kd_top, self.kd_pool = int(kd_top), int(kd_pool)
        if self.kd_top < 0 or self.kd_pool < 1:
            raise ValueError(f"kd_top must be >= 0 and kd_pool >= 1, got {kd_top} and {kd_pool}")
        if self.kd_top and (self.loss != "softmax" or self.kd_weight <= 0):
            raise ValueError("kd_top adds the teacher's top items to the softmax's distillation: it needs "
                             "loss='softmax' and kd_weight > 0")
        # the teacher's final embeddings (id order), attached by from_lightgcn; not saved: rebuilt from the teacher
        self.register_buffer("kd_users", torch.zeros(0, 0), persistent=False)
        self.register_buffer("kd_items", torch.zeros(0, 0), persistent=False)
        self.register_buffer("kd_ranked", torch.zeros(0, 0, dtype=torch.int32), persistent=False)
        self.register_buffer("kd_valid", torch.zeros(0, dtype=torch.long), persistent=False)
        self.scoring_backend = scoring_backend
        self.register_buffer("delta", torch.tensor([float(delta), float(delta)]))  # (user, item)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        if rotation == "itq":  # the rotation before quantizing (only then a buffer: older checkpoints load)
            self.register_buffer("R", torch.eye(dim))
        self.delta_history: list[tuple[int, float, float]] = []
        self._codes = None

    # ----------------------------------------------------------------- quantization
    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.R if self.rotation == "itq" else x

    @torch.no_grad()
    def fit_rotation(self) -> None:
        """ITQ's rotation of the current final embeddings, warm-started from the current ``R``."""
        U, I = self.final_embeddings()
        rows = torch.cat([U / U.norm(dim=1).mean().clamp_min(1e-12), I / I.norm(dim=1).mean().clamp_min(1e-12)])
        self.R.copy_(itq_rotation(rows, init=self.R))

    def quantize(self, x: torch.Tensor, delta: float, nodes: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_q, u_q, step)`` for rows ``x`` (of global node ids ``nodes``): dequantized values, codes in step
        units, per-row steps. A learned step gets the loss's gradient as a scale (``x_q = step u_q``), not
        through the rounding: at one bit it is each node's weight in every score, which is what it should learn."""
        if self.vector_dim > 1:
            return self.vector_quantize(x)
        if self.learn_scale and nodes is not None:
            step = self.node_steps(nodes)
            step = step + (self.stored_step(step.detach()) - step.detach())  # stored precision, gradient as is
            uq = round_ste(x / step.detach(), self.bits, self.estimator, delta)
            return step * uq, uq, step
        step = self.stored_step(node_step(x, self.bits, self.scale_method))
        uq = round_ste(x / step, self.bits, self.estimator, delta)
        return step * uq, uq, step

    def vector_quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``quantize`` with vector codes (item 9): each row's blocks snapped to the shared codebook, at the row's
        RMS scale; the gradient passes the snapping unchanged (straight-through)."""
        index, step = self.vector_index(x)
        u = x / step
        cq = self.codebook[index].reshape(u.shape).to(u.dtype)
        uq = u + (cq - u).detach()
        return step * uq, uq, step

    def vector_index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index (n, D), step (n, 1))``: each block's nearest codeword at the row's stored RMS step."""
        step = self.stored_step(row_step(x))
        return nearest_shared(x / step, self.shared_codebook()), step

    def shared_codebook(self) -> torch.Tensor:
        """The codebook, fitted to the current (rotated) final embeddings at its first use, then fixed."""
        if not bool(self.codebook_set):
            with torch.no_grad():
                U, I = (self.rotate(E) for E in self.final_embeddings())
                self.codebook.copy_(shared_codebook(torch.cat([U, I]), self.bits, self.vector_dim))
                self.codebook_set.fill_(True)
        return self.codebook

    def stored_step(self, step: torch.Tensor) -> torch.Tensor:
        """``step`` as the artifact stores it: float32, or rounded to float16 (kept in its range) at ``step_bits=16``."""
        if self.step_dtype == torch.float32:
            return step
        half = torch.finfo(self.step_dtype)
        return step.clamp(half.tiny, half.max).to(self.step_dtype).to(step.dtype)

    def node_steps(self, nodes: torch.Tensor) -> torch.Tensor:
        """``(len(nodes), 1)`` learned steps of global node ids, first set from ``scale_method``'s statistic."""
        if not bool(self.log_step_set):
            with torch.no_grad():
                U, I = (self.rotate(E) for E in self.final_embeddings())
                self.log_step.copy_(node_step(torch.cat([U, I]), self.bits, self.scale_method).squeeze(1).log())
                self.log_step_set.fill_(True)
        return self.log_step[nodes].exp().unsqueeze(1)

    def dense_parameters(self) -> dict[str, torch.Tensor]:
        """Not the learned steps: they are the codes' steps, which ``export()`` (and so ``serving_bits``) holds."""
        return {n: p for n, p in super().dense_parameters().items() if n != "log_step"}

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self._cache = None
        self._codes = None
        batch = self.training_batch(batch)
        B = batch["users"].shape[0]
        idx = self.batch_index(batch)
        m = len(idx)                                       # users, positives, negatives: 2B + N rows
        top = self.teacher_top(batch["users"])             # (B, kd_top) items, or None
        if top is not None:                                # their rows go through the same propagation
            idx = torch.cat([idx, top.flatten() + self.n_users])
        layers = self.batch_layers(idx)
        x = self.rotate(self.combine(layers))
        u, p, n = x[:B], x[B:2 * B], x[2 * B:m]
        d_u, d_i = (float(v) for v in self.delta)
        uq, uu, su = self.quantize(u, d_u, idx[:B])
        iq, ui, si = self.quantize(x[B:], d_i, idx[B:])
        if self.estimator == "ewgs" and self.delta_every > 0 and int(self.steps_done) % self.delta_every == 0:
            self.update_delta(uu.detach(), su, ui[:m - B].detach(), si[:m - B])
        self.steps_done += 1
        pq, nq = iq[:B], iq[B:m - B]
        tq = None if top is None else iq[m - B:].view(B, self.kd_top, -1)
        if self.kd_weight > 0 and self.kd_users.numel():
            loss = self.distilled_ranking_loss(batch, uq, pq, nq, top, tq)
        else:
            loss = self.code_ranking_loss(uq, pq, nq, batch.get("hits"))
        loss = loss + self.reg_loss(batch, layers[0][:m])
        if self.fp_weight > 0:
            loss = loss + self.fp_weight * self.ranking_loss(u, p, n, batch.get("hits"))
        return loss + self._table_aux()

    # ----------------------------------------------------------------- the student's scores
    def code_logits(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                    hits: torch.Tensor | None = None) -> torch.Tensor:
        """``candidate_logits`` of quantized rows under the model's ``similarity``: their dot products, or
        (``"angular"``) SimHash's estimate of them, ``|u| |i| cos(pi h / d)`` with ``h`` the rows' Hamming distance."""
        if self.similarity == "dot":
            return self.candidate_logits(u, p, n, hits)
        nu = u.norm(dim=1)
        pos = angular_scores((u * p).sum(-1), nu * p.norm(dim=1))
        if self.loss != "softmax":
            return torch.stack([pos, angular_scores((u * n).sum(-1), nu * n.norm(dim=1))], dim=1)
        negs = angular_scores(u @ n.T, nu[:, None] * n.norm(dim=1)[None, :])
        if hits is not None:
            negs = negs.masked_fill(hits, float("-inf"))
        return torch.cat([pos[:, None], negs], dim=1) / self.temperature

    def code_ranking_loss(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor,
                          hits: torch.Tensor | None = None) -> torch.Tensor:
        """``ranking_loss`` of quantized rows under the model's ``similarity``."""
        if self.similarity == "dot":
            return self.ranking_loss(u, p, n, hits)
        logits = self.code_logits(u, p, n, hits)
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()

    # ----------------------------------------------------------------- distillation
    @torch.no_grad()
    def attach_teacher(self, teacher: LightGCN) -> None:
        """Keep ``teacher``'s final embeddings: the targets of ``distilled_ranking_loss`` (any d: only its scores count)."""
        if (teacher.n_users, teacher.n_items) != (self.n_users, self.n_items):
            raise ValueError("the teacher must be over the same users and items")
        U, I = teacher.final_embeddings()
        dev = self.user_table._device()
        self.kd_users, self.kd_items = U.detach().float().to(dev), I.detach().float().to(dev)
        if self.kd_top:
            pool = min(self.kd_pool, self.n_items)
            seen = teacher.training_matrix()
            self.kd_ranked = ranked_unseen(U.detach(), I.detach(), seen, pool).to(dev)
            unseen = np.minimum(pool, self.n_items - np.diff(seen.indptr))  # a heavy user's valid prefix
            self.kd_valid = torch.from_numpy(np.maximum(unseen, 1)).to(dev)

    def distilled_ranking_loss(self, batch: dict[str, torch.Tensor], u: torch.Tensor, p: torch.Tensor,
                               n: torch.Tensor, top: torch.Tensor | None = None,
                               t: torch.Tensor | None = None) -> torch.Tensor:
        """The ranking loss (cross-entropy of the positive among the row's candidates: the softmax's, or BPR's
        ``softplus(neg - pos)`` over two) + ``kd_weight`` x the KL from the teacher's distribution over the same
        candidates (same logits, same temperature) to the student's, on the student's quantized rows
        ``u, p, n``. ``top`` ``(B, k)``: each row's own teacher-top items (``teacher_top``), ``t`` ``(B, k, d)``
        the student's quantized rows of them: extra candidates of the distillation only."""
        hits = batch.get("hits")
        logits = self.code_logits(u, p, n, hits)
        tu = self.kd_users[batch["users"]]
        with torch.no_grad():
            teacher = self.candidate_logits(tu, self.kd_items[batch["pos"]], self.kd_items[batch["neg"]], hits)
        logp = F.log_softmax(logits, dim=1)
        ce = -logp[:, 0].mean()
        if top is not None:  # the KL then spans more candidates than the cross-entropy
            mine = torch.einsum("bd,bkd->bk", u, t)
            if self.similarity == "angular":
                mine = angular_scores(mine, u.norm(dim=1, keepdim=True) * t.norm(dim=2))
            logp = F.log_softmax(torch.cat([logits, mine / self.temperature], dim=1), dim=1)
            with torch.no_grad():
                mine = torch.einsum("bd,bkd->bk", tu, self.kd_items[top]) / self.temperature
                teacher = torch.cat([teacher, mine], dim=1)
        return ce + self.kd_weight * soft_target_loss(logp, F.log_softmax(teacher, dim=1))

    def teacher_top(self, users: torch.Tensor) -> torch.Tensor | None:
        """``(B, kd_top)`` items for the rows' users, each uniform among the teacher's ``kd_pool`` best items the user
        has not seen in training (``ranked_unseen``), or None without ``kd_top`` or a teacher."""
        if not self.kd_top or not self.kd_ranked.numel():
            return None
        u = users.unsqueeze(1)
        pick = torch.rand(users.shape[0], self.kd_top, device=users.device) * self.kd_valid[u]
        return self.kd_ranked[u, pick.long()].long()

    @classmethod
    def from_lightgcn(cls, model: LightGCN, **kwargs) -> "LowBitGCN":
        """Start from ``model``'s layer-0 tables (``LightGCN.from_lightgcn``); with ``kd_weight > 0`` it is the teacher too."""
        new = super().from_lightgcn(model, **kwargs)
        if new.kd_weight > 0:
            new.attach_teacher(model)
        return new

    @torch.enable_grad()
    def update_delta(self, uu: torch.Tensor, su: torch.Tensor, ui: torch.Tensor, si: torch.Tensor) -> tuple[float, float]:
        """Set ``delta`` (user, item) from Hutchinson's trace of the training loss w.r.t. the codes (see module doc)."""
        leaf_u = uu.detach().clone().requires_grad_(True)
        leaf_i = ui.detach().clone().requires_grad_(True)
        B = leaf_u.shape[0]
        xu = su.detach() * leaf_u
        xi = si.detach() * leaf_i
        loss = self.code_ranking_loss(xu, xi[:B], xi[B:])
        grads = torch.autograd.grad(loss, [leaf_u, leaf_i], create_graph=True)
        traces, _ = hutchinson_trace(grads, [leaf_u, leaf_i], self.hutchinson_samples, per_input=True)
        new = []
        for tr, g, leaf in zip(traces, grads, (leaf_u, leaf_i)):
            new.append(ewgs_delta(tr / leaf.numel(), float(g.detach().std()), self.delta_max))
        self.delta.copy_(torch.tensor(new, dtype=self.delta.dtype))
        self.delta_history.append((int(self.steps_done), new[0], new[1]))
        return new[0], new[1]

    def serving_meta(self) -> dict:
        """What a reader needs besides the tensors to decode ``export()``: the bit width (and a non-dot similarity)."""
        return ({"bits": self.bits} | ({"similarity": self.similarity} if self.similarity != "dot" else {})
                | ({"vector_dim": self.vector_dim} if self.vector_dim > 1 else {}))

    def diagnostics(self) -> dict:
        """For the run record: the generalized STE's delta over training, ``[step, user, item]`` rows."""
        return {"delta_history": [[int(t), round(u, 8), round(i, 8)] for t, u, i in self.delta_history]}

    # ----------------------------------------------------------------- evaluation from integer codes
    @torch.no_grad()
    def refresh(self) -> None:
        U, I = (self.rotate(E) for E in self.final_embeddings())
        if self.vector_dim > 1:
            self._codes = tuple(self.vector_codes(E) for E in (U, I))
            self._cache = None
            return
        if self.learn_scale:
            steps = (self.node_steps(torch.arange(self.n_users, device=U.device)),
                     self.node_steps(torch.arange(self.n_users, self.n_users + self.n_items, device=U.device)))
        else:
            steps = (node_step(U, self.bits, self.scale_method), node_step(I, self.bits, self.scale_method))
        self._codes = tuple(IntCodes.from_float(E, self.bits, self.stored_step(s), step_dtype=self.step_dtype)
                            for E, s in ((U, steps[0]), (I, steps[1])))
        self._cache = None

    def vector_codes(self, E: torch.Tensor) -> VectorCodes:
        """The rows' vector codes as ``export`` stores them (the same codewords and steps as ``vector_quantize``)."""
        index, step = self.vector_index(E)
        return VectorCodes.from_index(index, self.codebook, step, self.bits, self.step_dtype)

    def on_epoch_start(self) -> None:
        self.drop_caches()
        if self.rotation == "itq":
            self.fit_rotation()

