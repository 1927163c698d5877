"""Straight-through estimators (Bengio et al. 2013) shared by every quantizer in qrec.

The textbook form is ``x + stop_grad(q - x)``: the forward value is ``q`` and the backward pass treats the
quantizer as the identity. In floating point that sum is *not* exactly ``q`` (``x + (q - x)`` can be off
by an ulp), and qrec promises that the served table is bit-for-bit what the model saw. So every helper
here is written as ``q + (x - stop_grad(x))``: ``x - x`` is exactly ``+0`` for finite ``x``, the forward
value is exactly ``q``, and the gradient with respect to ``x`` is still the identity.
"""

from __future__ import annotations

import torch


def zero_with_grad_of(x: torch.Tensor) -> torch.Tensor:
    """Exact zeros shaped like ``x`` whose gradient with respect to ``x`` is the identity."""
    return x - x.detach()


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value exactly ``q``; gradient passed to ``x`` unchanged (d out / d x = I); none to ``q``.

    Same estimator as ``x + (q - x).detach()``, bit-exact in the forward value.
    """
    return q.detach() + zero_with_grad_of(x)


def one_hot_straight_through(probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Value exactly ``one_hot(index)`` over ``probs``' last axis; gradient flows to ``probs`` as identity.

    Same estimator as ``probs - stop_grad(probs - one_hot)`` (DPQ's softmax flavour), bit-exact in value.
    """
    hard = torch.zeros_like(probs).scatter_(-1, index.unsqueeze(-1), 1.0)
    return straight_through(probs, hard)
