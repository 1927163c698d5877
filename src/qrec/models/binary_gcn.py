"""1-bit graph embeddings in the style of L2Q-GCN / BiGeaR (Chen et al., 2022).

Model. LightGCN's propagation (``qrec.models.lightgcn``) gives layers ``e_0 .. e_L`` per node. Every layer
is binarised: ``s_l = sign(e_l)`` and ``alpha_l = mean(|e_l|)`` (per node and layer), and

    score(u, i) = sum_l w_l^2 * alpha_u,l * alpha_i,l * <s_u,l, s_i,l>

with BiGeaR's layer weights ``w_l = (l+1)/(L+1)`` (``layer_weights="uniform"`` gives ``1/(L+1)``).
Equivalently, a node's code is the concatenation of ``q_l = w_l alpha_l s_l``. The gradient of ``sign``
is a surrogate chosen by ``estimator`` (``qrec.quant.sign``: ``"ste"``, ``"gaussian"`` (BiGeaR, default,
``a = 1``), ``"fourier"`` (BGCH, ``H``, ``n_terms``)); gradients also flow through ``alpha`` (a mean of
absolute values). The scale's gradient is what lets training shrink or grow a node's layer.

Loss. BPR on the quantized scores + LightGCN's L2 on the batch's layer-0 rows + (with a teacher) an
inference-distillation term + (``fp_weight > 0``) LightGCN's float BPR on the same encoder, to train the
float and the binary views jointly. Training can start from a pre-trained LightGCN (``from_lightgcn``,
which copies its layer-0 tables and can attach it as the teacher) or from scratch.

Distillation (BiGeaR's "inference distillation", as a ranking loss). For every user the teacher's top-R
items (R = 100) are listed once, per layer (``kd_mode="layer"``: ranked by ``<e_u,l, e_i,l>`` of the
teacher's layer ``l``; the student's matching layer score is ``w_l^2 alpha alpha <s, s>``) or once for the
final score (``kd_mode="final"``). Position ``r`` (0-based) weighs ``w_r = exp(-r / 10)``. For up to
``kd_users`` (256) distinct users of the batch (a uniform subset) and every layer we draw ``kd_samples`` (2)
positions ``r ~ w_r / sum(w)`` and as many uniform random items ``j`` and add
``kd_weight * mean softplus(-(y(u, top_r) - y(u, j)))``: an unbiased Monte-Carlo estimate of
``mean_u sum_r (w_r / sum w) * BPR(top_r vs random)``, at ``kd_samples`` pairs per user and layer instead
of R. The caps keep the extra rows small: every distillation row goes through the same propagation, and
with 4 samples for every batch user the step cost 2.8x that of the plain model on Gowalla.

Evaluation scores from packed bits: ``refresh()`` packs ``s_l`` into 64-bit words and keeps
``w_l * alpha_l`` as float32 scales (``qrec.retrieval.hamming.BinaryCodes``); ``score_all`` computes
``sum_l (w alpha)_u,l (w alpha)_i,l (d - 2 popcount(b_u,l xor b_i,l))``.

Serving size per node: ``(L+1) d`` bits + ``(L+1)`` float32 scales (the layer weights folded in).
With d = 64, L = 3: 256 + 128 = 384 bits, against the float LightGCN's served final embedding of
``64 x 32 = 2048`` bits: ratio 5.33x (``serving_bits()`` vs ``full_bits()``). That is the honest
comparison: both are what a server must hold to score (the float model serves only its final mean
embedding, not its L+1 layers). Per layer the code alone is 32x smaller than a float layer; the
scales (128 of the 384 bits) would shrink to 64 bits in float16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qrec.models.lightgcn import LightGCN, ranked_unseen
from qrec.models.served import ScoredFromCodes
from qrec.quant.sign import ESTIMATORS, sign
from qrec.retrieval.hamming import BinaryCodes

__all__ = ["BinaryGCN"]


class BinaryGCN(ScoredFromCodes, LightGCN):
    """L2Q-GCN / BiGeaR-style 1-bit GCN; see the module docstring.

    Extra args (beyond ``LightGCN``'s):
        layer_weights: ``"bigear"`` (default) or ``"uniform"`` or a list.
        estimator: sign gradient, one of ``"ste"``, ``"gaussian"``, ``"fourier"``; ``a`` (gaussian),
            ``H`` and ``n_terms`` (fourier).
        kd_weight, kd_topr (R), kd_samples, kd_users, kd_mode (``"layer"``/``"final"``), kd_tau (10: w_r =
            exp(-r/tau)): distillation, active once ``attach_teacher`` is called.
        fp_weight: weight of LightGCN's float BPR loss on the same encoder (joint training; 0: off).
        scoring_backend: ``qrec.retrieval.hamming.score_layers`` backend for ``score_all``.
    """

    def __init__(self, n_users: int, n_items: int, train=None, dim: int = 64, n_layers: int = 3,
                 reg: float = 1e-4, init_std: float = 0.1, table: str = "full", layer_weights="bigear",
                 estimator: str = "gaussian", a: float = 1.0, H: float = 1.0, n_terms: int = 5,
                 kd_weight: float = 1.0, kd_topr: int = 100, kd_samples: int = 2, kd_users: int = 256,
                 kd_mode: str = "layer",
                 kd_tau: float = 10.0, fp_weight: float = 0.0, scoring_backend: str = "auto", **kwargs):
        super().__init__(n_users, n_items, train, dim=dim, n_layers=n_layers, reg=reg, init_std=init_std,
                         table=table, layer_weights=layer_weights, **kwargs)
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
        if kd_mode not in ("layer", "final"):
            raise ValueError("kd_mode must be 'layer' or 'final'")
        self.estimator, self.a, self.H, self.n_terms = estimator, float(a), float(H), int(n_terms)
        self.kd_weight, self.kd_topr, self.kd_samples = float(kd_weight), int(kd_topr), int(kd_samples)
        self.kd_users = int(kd_users)
        self.kd_mode, self.kd_tau = kd_mode, float(kd_tau)
        self.fp_weight = float(fp_weight)
        self.scoring_backend = scoring_backend
        self.register_buffer("kd_top", torch.zeros(0, 0, 0, dtype=torch.int32), persistent=False)
        self._codes = None

    # ----------------------------------------------------------------- quantized layers
    def binarize(self, E: torch.Tensor, l: int) -> torch.Tensor:
        """``q_l = w_l * mean(|e_l|) * sign(e_l)`` row-wise (differentiable through the estimator)."""
        alpha = E.abs().mean(dim=-1, keepdim=True)
        s = sign(E, self.estimator, a=self.a, H=self.H, n=self.n_terms)
        return (self.layer_weights[l] * alpha) * s

    def quantized_rows(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """Concatenated codes ``[q_0 | ... | q_L]`` of rows given per layer: ``(n, (L+1) d)``."""
        return torch.cat([self.binarize(E, l) for l, E in enumerate(layers)], dim=-1)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self._cache = None
        self._codes = None
        batch = self.training_batch(batch)
        B = batch["users"].shape[0]
        idx = self.batch_index(batch)
        m = len(idx)                                             # users, positives, negatives: 2B + N rows
        kd = self.kd_weight > 0 and self.kd_top.numel() > 0
        if kd:  # the distillation pairs' rows go through the same (row-restricted) propagation
            kd_u, kd_t, kd_j = self.sample_distillation(batch["users"])
            idx = torch.cat([idx, kd_u, kd_t, kd_j])
        layers = self.batch_layers(idx)                          # per layer, (len(idx), d)
        # alpha and sign are row-wise: binarise just the rows the batch touches
        q = self.quantized_rows([E[:m] for E in layers])         # (m, (L+1) d)
        qu, qp, qn = q[:B], q[B:2 * B], q[2 * B:]
        loss = self.ranking_loss(qu, qp, qn, batch.get("hits")) + self.reg_loss(batch, layers[0][:m])
        if self.fp_weight > 0:  # joint training: LightGCN's own loss on the same encoder (mean of layers)
            x = sum(E[:m] for E in layers) / len(layers)
            loss = loss + self.fp_weight * self.ranking_loss(x[:B], x[B:2 * B], x[2 * B:], batch.get("hits"))
        if kd:
            loss = loss + self.kd_weight * self.distillation_loss([E[m:] for E in layers])
        return loss + self._table_aux()

    # ----------------------------------------------------------------- distillation
    @torch.no_grad()
    def attach_teacher(self, teacher: LightGCN, exclude_train: bool = False, chunk: int = 2048) -> None:
        """List the teacher's top-R items per user (per layer or final), used by the distillation loss.

        ``exclude_train`` masks the user's training items (needs the teacher's graph: the user->item block
        of ``A_hat`` holds exactly the training pairs).
        """
        if (teacher.n_users, teacher.n_items) != (self.n_users, self.n_items):
            raise ValueError("teacher must be over the same users and items")
        dev = self.user_table._device()
        teacher_layers = teacher.layer_embeddings()
        if self.kd_mode == "layer":
            if len(teacher_layers) != self.n_layers + 1:
                raise ValueError("kd_mode='layer' needs a teacher with the same number of layers")
            views = [(E[: self.n_users], E[self.n_users:]) for E in teacher_layers]
        else:
            E = teacher.combine(teacher_layers)
            views = [(E[: self.n_users], E[self.n_users:])]
        R = min(self.kd_topr, self.n_items)
        seen = teacher.training_matrix() if exclude_train else None
        top = torch.stack([ranked_unseen(U, I, seen, R, chunk) for U, I in views], dim=1)
        self.kd_top = top.to(dev)
        w = torch.exp(-torch.arange(R, dtype=torch.float32) / self.kd_tau)
        self._kd_probs = (w / w.sum()).to(dev)

    def detach_teacher(self) -> None:
        self.kd_top = torch.zeros(0, 0, 0, dtype=torch.int32, device=self.kd_top.device)

    def sample_distillation(self, users: torch.Tensor):
        """Distillation pairs for the batch's distinct users: node ids ``(users, teacher items, random items)``,
        each of length ``V * U * kd_samples`` (``V`` views: L+1 layers or 1 final), view-major."""
        dev = users.device
        users = torch.unique(users)
        if self.kd_users > 0 and users.numel() > self.kd_users:  # a uniform subset: same expectation
            users = users[torch.randperm(users.numel(), device=dev)[: self.kd_users]]
        uu = users.repeat_interleave(self.kd_samples)
        nu = self.n_users
        us, ts, js = [], [], []
        for v in range(self.kd_top.shape[1]):
            r = torch.multinomial(self._kd_probs, uu.numel(), replacement=True)
            us.append(uu)
            ts.append(self.kd_top[uu, v, r].long() + nu)
            js.append(torch.randint(0, self.n_items, (uu.numel(),), device=dev) + nu)
        return torch.cat(us), torch.cat(ts), torch.cat(js)

    def distillation_loss(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """Ranking distillation on the rows of ``sample_distillation`` (per layer, ``[users; top; random]``):
        ``mean softplus(-(y(u, top_r) - y(u, j)))`` averaged over views."""
        n_views = self.kd_top.shape[1]
        M = rows[0].shape[0] // 3
        per = M // n_views
        total = 0.0
        for v in range(n_views):
            sl = slice(v * per, (v + 1) * per)
            y_t = y_j = 0.0
            for l in ([v] if self.kd_mode == "layer" else range(len(rows))):
                E = rows[l]
                qu = self.binarize(E[:M][sl], l)
                y_t = y_t + (qu * self.binarize(E[M:2 * M][sl], l)).sum(-1)
                y_j = y_j + (qu * self.binarize(E[2 * M:][sl], l)).sum(-1)
            total = total + F.softplus(y_j - y_t).mean()
        return total / n_views

    # ----------------------------------------------------------------- evaluation from bits
    @torch.no_grad()
    def refresh(self) -> None:
        layers = self.layer_embeddings()
        E = torch.stack(layers, dim=1)                                      # (n, L+1, d)
        w = torch.tensor(self.layer_weights, dtype=E.dtype, device=E.device)
        scales = E.abs().mean(dim=-1) * w                                   # (n, L+1): w_l alpha_l
        codes = BinaryCodes.from_float(E, scales)
        nu = self.n_users
        self._codes = (codes[:nu], codes[nu:])
        self._cache = None

    @classmethod
    def from_lightgcn(cls, model: LightGCN, teacher: bool = True, **kwargs) -> "BinaryGCN":
        """Initialise from a (pre-trained) LightGCN's layer-0 tables; attach it as teacher if asked."""
        new = super().from_lightgcn(model, **kwargs)
        if teacher:
            new.attach_teacher(model)
        return new

