"""The gradient exchange of a data-parallel step: every rank's gradients, weighted by its share of the global batch,
summed over the ranks, in three collectives whatever the model:

1. one small all-gather of one int64 per parameter: the rank's row count of a sparse gradient (coalesced), or
   ``DENSE`` / ``NONE``. It tells every rank which gradients are sparse anywhere and how many rows each rank sends;
2. one all-reduce of every dense gradient, flattened into one bucket (as DDP's buckets: one round trip, not one per
   parameter);
3. one all-gather of every sparse gradient's (row ids, row values), packed into one byte buffer, each parameter
   padded to the largest rank's row count (the padding is trimmed before the sum). Every rank then sums the ranks'
   rows into one coalesced sparse gradient (``merge_row_gradients``): the rows and values one process's coalesced
   gradient of the whole batch has. A table is never densified: a step moves O(batch rows x d) bytes, not O(table).

2 and 3 run concurrently (asynchronous collectives) once 1 has told the ranks the layout.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from qrec.errors import QrecError

__all__ = ["exchange_gradients", "merge_row_gradients", "pack_rows", "unpack_rows", "DENSE", "NONE"]

DENSE, NONE = -1, -2  # a parameter's gradient kind in the first all-gather (else its sparse row count)


def exchange_gradients(params: list[torch.Tensor], share: float, world: int) -> int:
    """Replace every ``p.grad`` by the global batch's; the bytes this rank put into the collectives."""
    if not params:
        return 0
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()  # once: sums the rows looked up more than once
    mine = torch.tensor([_rows_of(p.grad, share) for p in params], dtype=torch.int64, device=params[0].device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    sizes = torch.stack(every).cpu()  # (world, params)
    sparse = [k for k in range(len(params)) if (sizes[:, k] >= 0).any()]
    for k in sparse:
        if (sizes[:, k] == DENSE).any():
            raise QrecError(f"parameter {k} {tuple(params[k].shape)} has a sparse gradient on some ranks and a dense "
                            "one on others: the ranks run different models")
    dense = [p for k, p in enumerate(params) if k not in set(sparse)]
    dense_done, dense_bytes = _reduce_dense(dense, share)
    sparse_done, sparse_bytes = _gather_sparse([params[k] for k in sparse], sizes[:, sparse], share)
    dense_done()
    sparse_done()
    return mine.numel() * 8 + dense_bytes + sparse_bytes


def _rows_of(grad: torch.Tensor | None, share: float) -> int:
    if grad is None:
        return NONE
    if not grad.is_sparse:
        return DENSE
    if grad.sparse_dim() != 1:  # raised on every rank alike, before any rank waits in a collective
        raise QrecError(f"sparse gradients are exchanged by rows; got one with {grad.sparse_dim()} sparse dimensions")
    return grad._nnz() if share else 0


def _reduce_dense(params: list[torch.Tensor], share: float) -> tuple[Callable[[], None], int]:
    """Start the all-reduce of the dense gradients as one flat bucket; a function that waits and writes them back."""
    if not params:
        return (lambda: None), 0
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # a rank whose slice missed a parameter still joins the sum
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    flat.mul_(share) if share else flat.zero_()
    work = dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)

    def done() -> None:
        work.wait()
        for p, part in zip(params, flat.split([p.numel() for p in params])):
            p.grad = part.view_as(p).to(p.dtype)

    return done, flat.numel() * flat.element_size()


def _gather_sparse(params: list[torch.Tensor], sizes: torch.Tensor, share: float) -> tuple[Callable[[], None], int]:
    """Start the all-gather of the sparse gradients' rows (``sizes``: (world, params) row counts); a function that
    waits and writes the merged gradients back."""
    if not params:
        return (lambda: None), 0
    widths = sizes.max(dim=0).values.tolist()
    payload = pack_rows([_weighted_rows(p, share) for p in params], widths)
    every = [torch.empty_like(payload) for _ in range(sizes.shape[0])]
    work = dist.all_gather(every, payload, async_op=True)
    layout = [(p.shape[1:], p.dtype) for p in params]

    def done() -> None:
        work.wait()
        ranks = [unpack_rows(buffer, layout, widths) for buffer in every]
        for k, p in enumerate(params):
            parts = [(rows[:n], values[:n]) for (rows, values), n in zip((r[k] for r in ranks), sizes[:, k].tolist())]
            p.grad = merge_row_gradients(parts, p.shape)

    return done, payload.numel()


def _weighted_rows(p: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's ``(rows, values x share)`` of ``p``'s (coalesced) sparse gradient; none without share or gradient."""
    if p.grad is None or not share:
        return torch.zeros(0, dtype=torch.int64, device=p.device), p.new_zeros(0, *p.shape[1:])
    return p.grad.indices()[0], p.grad.values() * share


def pack_rows(parts: list[tuple[torch.Tensor, torch.Tensor]], widths: list[int]) -> torch.Tensor:
    """One byte buffer of every part's int64 row ids then values, each part zero-padded to ``widths[k]`` rows: the
    same layout on every rank, so one ``all_gather`` moves them all."""
    chunks = []
    for (rows, values), width in zip(parts, widths):
        pad = width - len(rows)
        chunks.append(torch.cat([rows.to(torch.int64), rows.new_zeros(pad, dtype=torch.int64)]).view(torch.uint8))
        values = torch.cat([values, values.new_zeros(pad, *values.shape[1:])])
        chunks.append(values.contiguous().reshape(-1).view(torch.uint8))
    return torch.cat(chunks)


def unpack_rows(buffer: torch.Tensor, layout, widths: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``(rows, values)`` of ``pack_rows``'s buffer, padding included; ``layout``: each part's value row shape
    and dtype."""
    parts, at = [], 0
    for (row_shape, dtype), width in zip(layout, widths):
        rows, at = _take(buffer, at, torch.int64, (width,))
        values, at = _take(buffer, at, dtype, (width, *row_shape))
        parts.append((rows, values))
    return parts


def _take(buffer: torch.Tensor, at: int, dtype: torch.dtype, shape) -> tuple[torch.Tensor, int]:
    n = torch.Size(shape).numel() * torch.empty(0, dtype=dtype).element_size()
    # clone: a slice at an offset not aligned to the dtype cannot be viewed as it
    return buffer[at:at + n].clone().view(dtype).reshape(shape), at + n


def merge_row_gradients(parts, shape) -> torch.Tensor:
    """One coalesced sparse gradient of ``shape`` from the ranks' ``(rows, values)``: a row several ranks touched
    gets the sum of their values."""
    rows = torch.cat([r for r, _ in parts]).unsqueeze(0)
    values = torch.cat([v for _, v in parts])
    return torch.sparse_coo_tensor(rows, values, shape, check_invariants=False).coalesce()
