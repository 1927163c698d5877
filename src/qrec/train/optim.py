"""Row-wise AdaGrad for embedding tables (FBGEMM's ``EXACT_ROWWISE_ADAGRAD``): memory-lean training of big tables.

Adam keeps two float moments per weight: at 10^7 rows x d = 64 that is 5 GB on top of the 2.5 GB table. Row-wise
AdaGrad keeps *one float per row*, the running mean of the row's squared gradient, and updates only the rows a
step touched::

    g   = grad[r] (+ weight_decay * w[r])
    s_r = s_r + mean(g^2)
    w_r = w_r - lr * g / (sqrt(s_r) + eps)

A row is touched when it has a gradient: the indices of a sparse gradient (duplicates summed; what the tables give
once this optimizer switched them to sparse gradients), or the non-zero rows of a dense one (a looked-up row whose gradient is exactly zero gets a zero step and a zero state increment
either way, but no weight decay: decay, too, reaches touched rows only, as in FBGEMM).

``rowwise_adagrad(model, lr)`` applies it to every table's row parameters (2-D, one row per id) and plain AdaGrad,
with the same ``lr``, to everything else (codebooks, output layers, MLPs): one optimizer family, one learning rate.
"""

from __future__ import annotations

import torch

from qrec.models.base import Recommender

__all__ = ["RowWiseAdagrad", "OptimizerChain", "table_row_parameters", "rowwise_adagrad"]


def _touched(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, row gradients)``: the distinct rows a (sparse or dense) gradient reaches, flattened to 2-D."""
    if grad.is_sparse:
        grad = grad.coalesce()  # sums the gradients of a row looked up more than once
        return grad.indices()[0], grad.values().reshape(grad.indices().shape[1], -1)
    flat = grad.reshape(grad.shape[0], -1)
    rows = torch.nonzero(flat.ne(0).any(dim=1)).squeeze(1)
    return rows, flat.index_select(0, rows)


class RowWiseAdagrad(torch.optim.Optimizer):
    """Row-wise AdaGrad over parameters whose first dimension indexes rows (see the module docstring)."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-8, weight_decay: float = 0.0):
        if lr <= 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"row-wise AdaGrad needs lr > 0, eps > 0, weight_decay >= 0; got {lr}, {eps}, {weight_decay}")
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        rows, g = _touched(p.grad)
        if rows.numel() == 0:
            return
        flat = p.view(p.shape[0], -1)
        if group["weight_decay"]:
            g = g + group["weight_decay"] * flat.index_select(0, rows)
        total = state["sum"].index_select(0, rows) + g.float().pow(2).mean(dim=1)
        state["sum"].index_copy_(0, rows, total)
        step = g / (total.sqrt() + group["eps"]).unsqueeze(1).to(g.dtype)
        flat.index_add_(0, rows, step, alpha=-group["lr"])  # rows are distinct: an exact in-place update


class OptimizerChain:
    """Several optimizers over disjoint parameters, stepped together; the trainer's optimizer protocol
    (``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``)."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict:
        return {"chain": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("chain", ())) != len(self.optimizers):
            raise ValueError("optimizer state is not of this optimizer chain (another optimizer or model?)")
        for opt, part in zip(self.optimizers, state["chain"]):
            opt.load_state_dict(part)


def table_row_parameters(model: Recommender) -> list[torch.nn.Parameter]:
    """The tables' per-id parameters: 2-D with one row per id (full weights, DPQ / MGQE queries, low-rank P)."""
    rows = {}
    for table in model.embedding_tables().values():
        for p in table.parameters(recurse=False):
            if p.requires_grad and p.ndim == 2 and p.shape[0] == table.num_embeddings:
                rows[id(p)] = p
    return list(rows.values())


def rowwise_adagrad(model: Recommender, lr: float, weight_decay: float = 0.0) -> OptimizerChain:
    """Row-wise AdaGrad on the tables' rows, AdaGrad on the other parameters, both at ``lr``. The tables are switched
    to sparse gradients (``EmbeddingTable.sparse_grad``): a step then costs the rows it touches, not the table size
    (a dense gradient is an ``n x d`` zero-fill and scan per step)."""
    for table in model.embedding_tables().values():
        table.sparse_grad = True
    rows = table_row_parameters(model)
    taken = {id(p) for p in rows}
    dense = [p for p in model.parameters() if id(p) not in taken and p.requires_grad]
    parts = [RowWiseAdagrad(rows, lr=lr, weight_decay=weight_decay)] if rows else []
    if dense:
        parts.append(torch.optim.Adagrad(dense, lr=lr, weight_decay=weight_decay))
    return OptimizerChain(*parts)
