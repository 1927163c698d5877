"""SASRec (Kang & McAuley, ICDM 2018): next-item prediction with causal self-attention over a user's last
``L`` items. MGQE's third backbone (its Tables 4 and 6): only the item table is compressed; the position
embeddings and the attention / feed-forward weights stay float32 and count in the model size.

As the reference code (pmixer/SASRec.pytorch, the port of kang205/SASRec): item embeddings scaled by
``sqrt(d)`` plus learned position embeddings, dropout, empty slots zeroed; each block is ``q = LN_a(x);
x = q + MHA(q, x, x)`` under a causal mask, then ``x = LN_f(x); x = x + FFN(x)`` (two position-wise linear
layers with ReLU and dropout), empty slots zeroed again; a final LayerNorm. The input and output item embeddings are
tied: the logit of item ``i`` after slot ``t`` is ``h_t . E_i``. Training: BCE on each slot's next item
against one sampled negative (``sequence_epoch``); Adam with beta2 = 0.98. There is no user embedding: a
user is their history window, given per stage (``windows``: the split's training items for validation,
training and validation items for test; an artifact's every known item for serving).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qrec.compress.base import EmbeddingTable
from qrec.data.sequences import PAD
from qrec.models.base import Recommender


class SASRec(Recommender):
    loss_kind = "sequence"
    adam_betas = (0.9, 0.98)  # the reference code's

    def __init__(self, item_table: EmbeddingTable, n_users: int, windows: dict[str, np.ndarray], maxlen: int = 50,
                 blocks: int = 2, heads: int = 1, dropout: float = 0.2):
        super().__init__(n_users, item_table.num_embeddings)
        d = item_table.dim
        if d % heads:
            raise ValueError(f"SASRec: {heads} attention heads must divide d = {d}")
        self.item_table, self.maxlen = item_table, int(maxlen)
        self.positions = nn.Parameter(torch.empty(self.maxlen, d))
        self.dropout = nn.Dropout(dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.attention = nn.ModuleList(nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
                                       for _ in range(blocks))
        self.forward_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(blocks))
        self.feed_forward = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.Dropout(dropout), nn.ReLU(),
                                                        nn.Linear(d, d), nn.Dropout(dropout))
                                          for _ in range(blocks))
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        for name, p in self.named_parameters():  # the reference code's xavier-normal; items keep MGQE's N(0, 0.01^2)
            if p.dim() > 1 and not name.startswith("item_table."):
                nn.init.xavier_normal_(p)
        self._stage = "test"
        self.set_windows(windows)

    def set_windows(self, windows: dict[str, np.ndarray]) -> None:
        """The ``(n_users, maxlen)`` history window of each stage (``qrec.data.sequences.history_windows``);
        ``"test"`` is also what serving reads. Data, not state: never in the checkpoint."""
        if "test" not in windows or any(w.shape != (self.n_users, self.maxlen) for w in windows.values()):
            raise ValueError(f"SASRec needs a 'test' history window of shape ({self.n_users}, {self.maxlen}) per stage")
        self._windows = dict(windows)

    # -- what a user is: their history window at the current stage

    def set_stage(self, stage: str) -> None:
        """Which history ``score_all`` reads: ``"valid"`` (training items) or ``"test"`` (training and
        validation items; also what serving uses). ``evaluate_model`` sets it."""
        if stage not in self._windows:
            raise ValueError(f"stage must be one of {sorted(self._windows)}, got {stage!r}")
        self._stage = stage

    def history(self, users: torch.Tensor) -> torch.Tensor:
        """``(B, maxlen)`` item ids of each user's window, right-aligned, ``PAD`` (-1) in empty slots."""
        window = self._windows[self._stage][users.cpu().numpy()]
        return torch.from_numpy(window).to(self.positions.device)

    # -- the encoder

    def encode(self, seq: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states ``(B, L, d)`` of windows ``seq`` (``PAD`` = -1). ``items``: the embeddings of
        ``seq``'s filled slots in row-major order, when the caller looked them up already."""
        filled = seq != PAD
        if items is None:
            items = self.item_table(seq[filled])
        L, d = seq.shape[1], self.item_table.dim
        x = torch.zeros(*seq.shape, d, dtype=items.dtype, device=items.device)
        x[filled] = items * math.sqrt(d)
        x = self.dropout(x + self.positions[-L:]) * filled.unsqueeze(-1)
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).triu(1)  # True: may not attend
        for norm_a, attend, norm_f, ffn in zip(self.attention_norms, self.attention, self.forward_norms,
                                               self.feed_forward):
            q = norm_a(x)
            x = q + attend(q, x, x, attn_mask=causal, need_weights=False)[0]
            x = norm_f(x)
            x = (x + ffn(x)) * filled.unsqueeze(-1)
        return self.last_norm(x)

    # -- Recommender

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.item_table.scores(self._queries(users))

    @torch.no_grad()
    def topk(self, users: torch.Tensor, k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ranked by the item table itself: a served DPQ / MGQE table keeps a running top-k over its codes."""
        return self.item_table.topk(self._queries(users), k, exclude)

    def _queries(self, users: torch.Tensor) -> torch.Tensor:
        return self.encode(self.history(users))[:, -1]  # the window's last slot: the most recent item

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of the (broadcast) pairs ``(users, items)``: each distinct user's window is encoded once."""
        users, items = torch.broadcast_tensors(users, items)
        distinct, inverse = users.reshape(-1).unique(return_inverse=True)
        return self.score_all(distinct)[inverse, items.reshape(-1)].reshape(items.shape)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BCE of each filled slot's next item (label 1) and its negative (label 0), each averaged over the
        filled slots as the reference code does, plus the item table's auxiliary loss. One table lookup for
        inputs, positives and negatives together, so a quantized table searches each distinct row once."""
        seq, pos, neg = batch["seq"], batch["pos"], batch["neg"]
        filled = seq != PAD
        n = int(filled.sum())
        rows = self.item_table(torch.cat([seq[filled], pos[filled], neg[filled]]))
        h = self.encode(seq, rows[:n])[filled]
        pos_logit, neg_logit = (h * rows[n:2 * n]).sum(-1), (h * rows[2 * n:]).sum(-1)
        loss = (F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
                + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit)))
        return loss + self.aux_loss()

