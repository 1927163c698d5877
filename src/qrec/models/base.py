"""The backbone protocol: everything the trainer, evaluation and export call on a model, declared here.

Callers never probe a model with ``getattr`` / ``hasattr``: a backbone overrides what it needs and inherits
no-op defaults for the rest (``tests/test_models_conformance.py`` runs the same checks on every backbone).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from qrec.compress.base import EmbeddingTable, module_device
from qrec.errors import SpecError
from qrec.retrieval.topk import masked_topk


class Recommender(nn.Module):
    """A model over ``n_users`` x ``n_items`` whose embeddings live in ``EmbeddingTable``s.

    Subclasses implement ``score_all`` (users -> logits over every item: full-ranking evaluation and serving)
    and, when trainable, ``training_loss``; ``loss_kind`` says which batches the trainer feeds it.
    """

    #: the batches ``training_loss`` reads: ``"pointwise"`` (user, item, label), ``"bpr"`` (user, positive,
    #: negative) or ``"sequence"`` (history windows with next-item targets)
    loss_kind: ClassVar[str] = "pointwise"
    #: Adam's betas (a backbone whose reference code sets its own, e.g. SASRec's 0.98, overrides them)
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.n_users = int(n_users)
        self.n_items = int(n_items)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of ``(users[i], items[i])`` pairs; by default read off ``score_all``."""
        return self.score_all(users).gather(1, items.view(-1, 1)).view(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch of ``loss_kind``; a scorer loaded from an artifact cannot be trained."""
        raise NotImplementedError(f"{type(self).__name__} is not trainable")

    def score_and_norm(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair scores and each pair's squared L2 norm of what it looked up (the regression task's loss and its
        per-pair L2); only pair-scoring backbones (GMF, NeuMF) regress."""
        raise SpecError(f"{type(self).__name__} cannot be trained for regression (gmf and neumf can)")

    # ---- hooks with no-op defaults -------------------------------------------------------------------

    def on_epoch_start(self) -> None:
        """Called before each training epoch (e.g. a GCN re-reads its graph, EWGS re-estimates its delta)."""

    def refresh(self) -> None:
        """Drop state cached from the parameters (final embeddings, packed codes) before scoring."""

    def set_stage(self, stage: str) -> None:
        """Which history scoring may read: ``"valid"`` (training items) or ``"test"`` (training and validation
        items: also what serving reads). Only models that read a user's history (SASRec) care."""

    def diagnostics(self) -> dict:
        """Model-specific state worth keeping in the run's record (e.g. EWGS's delta); JSON-serialisable."""
        return {}

    def export(self) -> dict[str, torch.Tensor] | None:
        """The tensors a server holds when they are not the embedding tables themselves (a GCN serves its final
        embeddings' codes); ``None``: the tables and dense weights are the served model."""
        return None

    def serving_meta(self) -> dict:
        """Options the served scorer of ``export()``'s tensors needs (e.g. the bit width)."""
        return {}

    @property
    def device(self) -> torch.device:
        return module_device(self)

    @torch.no_grad()
    def topk(self, users: torch.Tensor, k: int, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(items, scores)``, ``(B, k)``: each user's ``k`` best items, ``exclude`` (a ``(B, n_items)`` scipy
        sparse matrix, e.g. the seen items) masked, ordered by score then item index. Code scorers override
        this with a fused kernel that never holds the score matrix."""
        return masked_topk(self.score_all(users).clone(), k, exclude)

    def ranks_in_blocks(self) -> bool:
        """True when ``topk`` here never holds the ``(B, n_items)`` score matrix (it merges blocks of items into a
        running top-k), so evaluation may rank many users at once whatever the catalogue's size."""
        return False

    def embedding_tables(self) -> dict[str, EmbeddingTable]:
        return {name: m for name, m in self.named_modules() if isinstance(m, EmbeddingTable)}

    def aux_loss(self) -> torch.Tensor:
        """Sum of the tables' auxiliary losses (e.g. DPQ centroid loss) from the last forward pass."""
        losses = [t.aux_loss() for t in self.embedding_tables().values()]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def dense_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters outside the embedding tables (MLP weights, output layer): kept float32 at serving."""
        inside = {id(p) for t in self.embedding_tables().values() for p in t.parameters()}
        return {n: p for n, p in self.named_parameters() if id(p) not in inside}

    def dense_bits(self) -> int:
        return sum(p.numel() * 32 for p in self.dense_parameters().values())

    def serving_bits(self) -> int:
        """Bits to store the whole served model: every table's serving form plus float32 dense weights."""
        return sum(t.serving_bits() for t in self.embedding_tables().values()) + self.dense_bits()

    def full_bits(self) -> int:
        """Bits of the same model with full float32 embedding tables (the 100% of MGQE's Table 3)."""
        return sum(t.full_bits() for t in self.embedding_tables().values()) + self.dense_bits()


class RowBiases(nn.Module):
    """One learned float32 bias per user row and per item row (biased MF's ``b_u + b_i``), zero-initialised.

    Used by the regression task: an absolute score needs per-row offsets that a ranking of one user's items
    ignores. They are dense parameters (served as float32, 32 bits per row, counted in the model size)."""

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.user = nn.Parameter(torch.zeros(n_users))
        self.item = nn.Parameter(torch.zeros(n_items))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b_u + b_i, b_u^2 + b_i^2)`` of each pair: the offset and its squared L2 norm."""
        bu, bi = self.user[users], self.item[items]
        return bu + bi, bu * bu + bi * bi

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        """``(B, n_items)`` offsets of every item for each user."""
        return self.user[users][:, None] + self.item[None, :]


def squared_norms(*rows: torch.Tensor) -> torch.Tensor:
    """Sum over the given ``(B, d)`` tensors of each pair's squared L2 norm, ``(B,)``."""
    return sum((r * r).sum(-1) for r in rows)
