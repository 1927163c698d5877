"""Orthogonal rotations that make sign / low-bit codes lose less: ITQ (Gong & Lazebnik, CVPR 2011).

Why a rotation is free for a recommender: scores are inner products and ``<x_u R, x_i R> = <x_u, x_i>`` for an
orthogonal ``R``, so the float model's ranking is unchanged, while ``sign(x R)`` can keep far more of it than
``sign(x)``: LightGCN's coordinates are correlated and unevenly scaled, and a sign code spends one bit on each
whatever its variance. The rotation is applied before quantizing and folded into the stored codes (a server
keeps ``sign(x_u R)`` and ``sign(x_i R)``), so it costs no serving bits.

ITQ minimises the quantization loss ``||B - V R||_F^2`` over binary ``B`` and orthogonal ``R`` by alternating:
``B = sign(V R)``, then ``R`` = the orthogonal Procrustes solution ``R = U W^T`` with ``U S W^T = svd(V^T B)``.
Neither step increases the loss, so it decreases monotonically (``tests/test_quant_rotation.py``).
"""

from __future__ import annotations

import torch

__all__ = ["itq_loss", "itq_rotation"]


def itq_loss(V: torch.Tensor, R: torch.Tensor) -> float:
    """``||sign(V R) - V R||_F^2`` (``sign(0) = +1``, as the quantizers here)."""
    P = V.double() @ R.double()
    return float((torch.where(P >= 0, 1.0, -1.0).double() - P).square().sum())


@torch.no_grad()
def itq_rotation(V: torch.Tensor, iters: int = 50, init: torch.Tensor | None = None) -> torch.Tensor:
    """ITQ's rotation ``(d, d)`` for rows ``V (n, d)``, from ``init`` (identity by default; a previous rotation
    to warm-start). Computed in float64 on V's device; returned in V's dtype."""
    d = V.shape[1]
    X = V.double()
    R = torch.eye(d, dtype=torch.float64, device=V.device) if init is None else init.double().clone()
    for _ in range(iters):
        B = torch.where(X @ R >= 0, 1.0, -1.0).double()
        u, _, vt = torch.linalg.svd(X.T @ B)   # argmax_R tr(B^T X R) over orthogonal R: R = U W^T
        R = u @ vt
    return R.to(V.dtype)
