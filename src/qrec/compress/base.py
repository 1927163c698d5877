"""The one interface every embedding table implements: full, low-rank, scalar, DPQ, MGQE, binary, low-bit.

A table maps ids in ``[0, num_embeddings)`` to ``dim``-dimensional vectors. During training it is an
``nn.Module`` whose ``forward`` is differentiable (straight-through where it quantizes). For serving it
``export()``s exactly the tensors a server must hold (packed codes, codebooks, scales); the size of a
served table is the size of those tensors, so ``serving_bits()`` cannot drift from what is stored.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod

import torch
from torch import nn

from qrec.retrieval.topk import BLOCK_FLOATS, blocked_topk, masked_topk


def tensor_bits(tensors: dict[str, torch.Tensor]) -> int:
    """Bits held by a dict of tensors (numel x element size)."""
    return sum(int(t.numel()) * t.element_size() * 8 for t in tensors.values())


def module_device(module: nn.Module) -> torch.device:
    """Where a module computes: its first parameter's or buffer's device (a served scorer may hold only buffers)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


class EmbeddingTable(nn.Module, ABC):
    """Maps ids to vectors; trains end to end; exports its compact serving form."""

    #: short family name used in spec strings, e.g. "full", "dpq"
    family: str = ""
    #: lookups give the per-row parameters a sparse gradient over the looked-up rows instead of a dense ``n x d``
    #: one (set by a row-wise optimizer, qrec.train.optim; tables whose lookup is not a row gather ignore it)
    sparse_grad: bool = False

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        if num_embeddings <= 0 or dim <= 0:
            raise ValueError(f"table needs num_embeddings > 0 and dim > 0, got {num_embeddings} x {dim}")
        self.num_embeddings = int(num_embeddings)
        self.dim = int(dim)

    @classmethod
    def blank(cls, *args, **kwargs):
        """A table to be filled by a ``from_float``: built under a forked RNG, so its throw-away random
        initialisation does not shift the caller's random stream."""
        with torch.random.fork_rng(devices=[]):
            return cls(*args, **kwargs)

    @property
    @abstractmethod
    def spec(self) -> str:
        """The spec string that rebuilds this table, e.g. ``"mgqe64x256/64@0.1"``."""

    @abstractmethod
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors for ``ids`` (any shape), shape ``ids.shape + (dim,)``; what the model sees."""

    #: rows per lookup when ``all()`` decodes an eval-mode table without gradient: a lookup's temporaries (sorted
    #: ids, gathered query rows, codes) then scale with the chunk, not the table (a 10^7-row MGQE table needed 5x
    #: its size at once). A multiple of 8: MGQE packs its codes by such chunks into one stream
    ALL_CHUNK = 1 << 18

    def all(self) -> torch.Tensor:
        """The whole table as the model sees it (dequantized for compressed tables), ``(n, dim)``. In eval mode
        without gradient, looked up in chunks of rows (an eval-mode row does not depend on the others)."""
        ids = torch.arange(self.num_embeddings, device=self._device())
        if torch.is_grad_enabled() or self.training or self.num_embeddings <= self.ALL_CHUNK:
            return self.forward(ids)
        return torch.cat([self.forward(chunk) for chunk in ids.split(self.ALL_CHUNK)])

    #: score matrices (queries x rows) larger than this many floats are ranked block by block on the CPU
    #: (``blocked_topk``), never built whole; smaller ones take ``masked_topk`` as they always did
    TOPK_BLOCKED_FLOATS = BLOCK_FLOATS

    def eval_rows(self) -> torch.Tensor:
        """``all()``, decoded once and kept while the table is in eval mode without gradient and its parameters
        and buffers are unchanged (their version counters): an evaluation scores batch after batch of users
        against one table, and decoding a 10^7-row MGQE table (its nearest-centroid search) takes about a minute."""
        if self.training or torch.is_grad_enabled():
            return self.all()
        state = tuple((t.data_ptr(), t._version) for t in itertools.chain(self.parameters(), self.buffers()))
        cached = self.__dict__.get("_eval_rows")
        if cached is None or cached[0] != state:
            self.__dict__["_eval_rows"] = cached = (state, self.all())
        return cached[1]

    def train(self, mode: bool = True):
        self.__dict__.pop("_eval_rows", None)  # back to training: the kept rows would only hold memory
        return super().train(mode)

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """Inner products of ``queries (B, dim)`` with every row, ``(B, n)``: what dot-product backbones rank
        by. Served DPQ / MGQE tables compute them from their codes (``qrec.compress.coded``)."""
        return queries @ self.eval_rows().T

    def topk(self, queries: torch.Tensor, k: int, exclude=None, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's ``k`` best rows by ``scores(queries) + offset``, ``exclude`` (a scipy sparse matrix, one
        row per query) masked: ``(indices, values)`` as ``qrec.retrieval.topk.masked_topk``. A large score
        matrix on the CPU is scored and merged block by block (same result, one block of memory)."""
        if queries.device.type != "cpu" or queries.shape[0] * self.num_embeddings <= self.TOPK_BLOCKED_FLOATS:
            return masked_topk(self.scores(queries) + offset, k, exclude)
        rows = self.eval_rows()

        def block(lo: int, hi: int) -> torch.Tensor:
            return (queries @ rows[lo:hi].T).add_(offset)  # in float32, as ``scores + offset`` is

        return blocked_topk(block, self.num_embeddings, queries.shape[0], k, exclude)

    def aux_loss(self) -> torch.Tensor:
        """Extra training loss of this training step (e.g. DPQ's centroid loss, averaged over every forward
        call since it was last read: BPR looks a table up more than once per step); 0 by default."""
        return torch.zeros((), device=self._device())

    def codes(self) -> torch.Tensor:
        """Each row's discrete codes ``(n, positions)`` (scalar levels, centroid indices); float tables have none."""
        raise NotImplementedError(f"a {self.spec!r} table stores no codes")

    @abstractmethod
    def export(self) -> dict[str, torch.Tensor]:
        """The tensors a server holds for this table (packed codes, codebooks, scales), on the CPU."""

    @classmethod
    @abstractmethod
    def decode_export(cls, tensors: dict[str, torch.Tensor], num_embeddings: int, dim: int, spec: str) -> torch.Tensor:
        """Rebuild the ``(n, dim)`` float table from ``export()``'s tensors alone (no training state)."""

    def serving_bits(self) -> int:
        """Bits a server holds for this table: exactly the bits of ``export()``."""
        return tensor_bits(self.export())

    def full_bits(self) -> int:
        """Bits of the float32 table it replaces: ``n x d x 32``."""
        return self.num_embeddings * self.dim * 32

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, n={self.num_embeddings}, d={self.dim}"

    def _device(self) -> torch.device:
        return module_device(self)
