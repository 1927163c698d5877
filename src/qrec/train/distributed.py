"""Data-parallel training under ``torchrun`` (torch.distributed: gloo on the CPU, nccl on CUDA).

    torchrun --nproc_per_node 2 -m qrec.cli train --dataset ml-1m --model gmf ...

Every rank builds the same model from the same seed and walks the same global epoch (negatives and order seeded by
``(seed, epoch)``, as in one process); each global batch is cut into ``world`` contiguous slices and rank ``r``
trains on slice ``r``. After backward the gradients are all-reduced, each rank's weighted by its slice's share of
the global batch, so every rank takes the step one process takes on the whole batch: a run on N processes equals the
one-process run with the same ``batch_size`` to float rounding (``tests/test_train_distributed.py``). Randomness
inside the forward pass (dropout) is seeded per rank by ``(seed, epoch, rank)``. Rank 0 alone writes checkpoints,
records and logs. See docs/DISTRIBUTED.md.

Every rank samples the whole epoch (cheap and vectorised next to training, and what makes the equality exact). Dense
gradients are all-reduced (``n x d`` floats per table: this suits tables that fit one process); sparse table
gradients (``--optimizer rowwise-adagrad``) are all-gathered as (row ids, row values) and summed into one coalesced
sparse gradient, so a step exchanges the batch's rows, never the whole table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from qrec.errors import QrecError

__all__ = ["DataParallel", "from_env", "finish", "merge_row_gradients"]


@dataclass
class DataParallel:
    """One rank of a data-parallel run: cuts batches, averages gradients, says who writes."""

    rank: int
    world: int
    seed: int = 0
    _share: float = field(default=1.0, repr=False)  # this rank's fraction of the current global batch

    @property
    def writes(self) -> bool:
        return self.rank == 0

    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        """Rank 0's weights everywhere (they are equal already when every rank seeds alike; this makes it so)."""
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def shard(self, batches: Iterator[dict[str, torch.Tensor]], epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's contiguous slice of every global batch (a rank whose slice is empty trains on nothing
        that step but still joins the all-reduce)."""
        torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch, self.rank]).generate_state(1)[0]))
        for batch in batches:
            n = len(next(iter(batch.values())))
            lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
            self._share = (hi - lo) / n
            if hi == lo:  # a last batch smaller than the world: one row with no weight keeps the loss finite
                lo, hi = 0, 1
            yield {k: v[lo:hi] for k, v in batch.items()}

    def wrap(self, optimizer) -> "_AveragingOptimizer":
        return _AveragingOptimizer(optimizer, self)

    def all_reduce_gradients(self, model_params) -> None:
        """Replace every gradient by the global batch's: each rank's weighted by its share, then summed. Dense ones
        are all-reduced; sparse ones (row-wise AdaGrad's tables) are all-gathered as rows and values."""
        params = list(model_params)
        sizes = self._gradient_sizes(params)  # (world, params): the ranks' row counts, or DENSE / NONE
        for k, p in enumerate(params):
            if (sizes[:, k] >= 0).any():
                if (sizes[:, k] == DENSE).any():
                    raise QrecError(f"parameter {k} {tuple(p.shape)} has a sparse gradient on some ranks and a dense "
                                    "one on others; the ranks run different models")
                p.grad = self._gather_sparse(p, sizes[:, k].tolist())
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)  # a rank whose slice missed a parameter still joins the sum
            p.grad.mul_(self._share) if self._share else p.grad.zero_()
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)

    def _gradient_sizes(self, params) -> torch.Tensor:
        """Every rank's gradient kind per parameter, in one small all-gather: the number of rows of a sparse
        gradient (this rank's rows once coalesced, 0 when its share is 0), ``DENSE``, or ``NONE``."""
        for p in params:
            if p.grad is not None and p.grad.is_sparse:
                p.grad = p.grad.coalesce()  # once: sums the rows looked up more than once
        mine = torch.tensor([_rows_of(p.grad, self._share) for p in params], dtype=torch.int64,
                            device=params[0].device if params else "cpu")
        every = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        return torch.stack(every).cpu()

    def _gather_sparse(self, p: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """The global batch's coalesced sparse gradient of ``p``: every rank's (rows, share-weighted values), padded
        to the largest rank's row count for ``all_gather`` and trimmed back before the sum."""
        rows, values = _weighted_rows(p, self._share)
        width = max(sizes)
        rows = torch.cat([rows, rows.new_zeros(width - len(rows))])
        values = torch.cat([values, values.new_zeros(width - len(values), *values.shape[1:])])
        all_rows, all_values = [torch.empty_like(rows) for _ in sizes], [torch.empty_like(values) for _ in sizes]
        dist.all_gather(all_rows, rows)
        dist.all_gather(all_values, values)
        return merge_row_gradients([(r[:n], v[:n]) for r, v, n in zip(all_rows, all_values, sizes)], p.shape)


DENSE, NONE = -1, -2  # a parameter's gradient kind in DataParallel._gradient_sizes (else its sparse row count)


def _rows_of(grad: torch.Tensor | None, share: float) -> int:
    if grad is None:
        return NONE
    if not grad.is_sparse:
        return DENSE
    if grad.sparse_dim() != 1:  # raised on every rank alike, before any rank waits in a collective
        raise QrecError(f"sparse gradients are exchanged by rows; got one with {grad.sparse_dim()} sparse dimensions")
    return grad._nnz() if share else 0


def _weighted_rows(p: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's ``(rows, values x share)`` of ``p``'s sparse gradient (coalesced: a row looked up twice is one
    row); none when the rank has no share or no gradient."""
    if p.grad is None or not share:
        return torch.zeros(0, dtype=torch.int64, device=p.device), p.new_zeros(0, *p.shape[1:])
    grad = p.grad.coalesce()  # a no-op after _gradient_sizes
    return grad.indices()[0], grad.values() * share


def merge_row_gradients(parts, shape) -> torch.Tensor:
    """One coalesced sparse gradient of ``shape`` from the ranks' ``(rows, values)``: a row several ranks touched
    gets the sum of their values."""
    rows = torch.cat([r for r, _ in parts]).unsqueeze(0)
    values = torch.cat([v for _, v in parts])
    return torch.sparse_coo_tensor(rows, values, shape, check_invariants=False).coalesce()


class _AveragingOptimizer:
    """An optimizer whose ``step`` first replaces every gradient by the global batch's."""

    def __init__(self, optimizer, parallel: DataParallel):
        self.optimizer, self.parallel = optimizer, parallel

    def _params(self):
        optimizers = getattr(self.optimizer, "optimizers", (self.optimizer,))
        return [p for opt in optimizers for group in opt.param_groups for p in group["params"] if p.requires_grad]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.parallel.all_reduce_gradients(self._params())
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


def from_env(cfg) -> DataParallel | None:
    """The rank of a ``torchrun`` launch (``WORLD_SIZE`` > 1 in the environment), its process group joined; None
    for an ordinary single-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(cfg.device).startswith("cuda") else "gloo")
    rank = dist.get_rank()
    if str(cfg.device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return DataParallel(rank=rank, world=dist.get_world_size(), seed=cfg.seed)


def finish() -> None:
    """Leave the process group (after the run), if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_worker() -> bool:
    """Whether this process is a ``torchrun`` rank other than 0 (it writes nothing)."""
    return int(os.environ.get("RANK", "0")) != 0
