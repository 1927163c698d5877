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
gradients are all-reduced (``n x d`` floats per table under Adam: this suits tables that fit one process); sparse
table gradients (``--optimizer rowwise-adagrad``) are all-gathered as (row ids, row values) and summed into one
coalesced sparse gradient, so a step exchanges the batch's rows, never the whole table (``qrec.train.exchange``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from qrec.train.exchange import exchange_gradients

__all__ = ["DataParallel", "from_env", "finish"]


@dataclass
class DataParallel:
    """One rank of a data-parallel run: cuts batches, averages gradients, says who writes."""

    rank: int
    world: int
    seed: int = 0
    _share: float = field(default=1.0, repr=False)  # this rank's fraction of the current global batch
    sent_bytes: int = 0  # what this rank has put into the gradient collectives so far (benchmarks/bench_distributed.py)

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
        """Replace every gradient by the global batch's (``qrec.train.exchange``: dense ones all-reduced in one bucket,
        sparse ones all-gathered as rows and values)."""
        self.sent_bytes += exchange_gradients(list(model_params), self._share, self.world)


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
