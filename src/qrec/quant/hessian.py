"""Hutchinson's estimator of a Hessian's trace, by double backprop (Hessian-vector products).

``Tr(H) = E_v[v^T H v]`` for Rademacher ``v`` (entries +-1 with probability 1/2): unbiased, with
variance ``2 * sum_{i != j} H_ij^2`` (zero for a diagonal Hessian). Each sample costs one extra
backward pass through the graph of the gradient (``torch.autograd.grad(g, x, v)`` with
``create_graph=True`` on the first gradient).

This is what EWGS's reference code does to set its gradient-scaling factor (``trace()`` in its
``update_grad_scales``): Rademacher vectors, average of ``v^T H v``, divided by the number of elements,
then divided by ``3 * std(g)``; see ``qrec.quant.uniform.ewgs_delta`` and ``qrec.models.lowbit_gcn``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["rademacher_like", "hutchinson_trace", "hessian_trace"]


def rademacher_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A tensor of +-1 (equal probability) shaped like ``x``."""
    r = torch.randint(0, 2, x.shape, generator=generator, device=x.device if generator is None else "cpu")
    return (2 * r - 1).to(device=x.device, dtype=x.dtype)


def hutchinson_trace(grads: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor], n_samples: int = 16,
                     generator: torch.Generator | None = None, per_input: bool = False):
    """Estimate ``Tr(H)`` of the loss whose gradients w.r.t. ``inputs`` are ``grads``.

    ``grads`` must come from ``torch.autograd.grad(loss, inputs, create_graph=True)``. The Hessian is
    the joint one over all ``inputs`` (its trace is the sum of the per-input traces). Returns
    ``(mean estimate, per-sample values)``; with ``per_input=True`` the first element is instead a list
    of per-input trace estimates (the diagonal blocks' traces: ``E[v_i v_j] = 0`` for ``i != j``, so the
    block sums of ``v * Hv`` are unbiased for each block from the same samples).
    """
    grads, inputs = list(grads), list(inputs)
    if len(grads) != len(inputs):
        raise ValueError("need one gradient per input")
    keep = [k for k, g in enumerate(grads) if g is not None and g.requires_grad]
    if not keep:  # the gradient does not depend on the inputs: the loss is at most linear, H = 0
        return ([0.0] * len(inputs) if per_input else 0.0), [0.0] * int(n_samples)
    samples = []
    blocks = [0.0] * len(inputs)
    for _ in range(int(n_samples)):
        vs = [rademacher_like(x, generator) for x in inputs]
        hvs = torch.autograd.grad([grads[k] for k in keep], inputs, grad_outputs=[vs[k] for k in keep],
                                  retain_graph=True, allow_unused=True)
        parts = [float((hv * v).sum()) if hv is not None else 0.0 for hv, v in zip(hvs, vs)]
        blocks = [b + p for b, p in zip(blocks, parts)]
        samples.append(sum(parts))
    if per_input:
        return [b / len(samples) for b in blocks], samples
    return sum(samples) / len(samples), samples


def hessian_trace(loss_fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor] | torch.Tensor,
                  n_samples: int = 16, generator: torch.Generator | None = None, per_input: bool = False):
    """``Tr(H)`` of ``loss_fn(*inputs)`` w.r.t. ``inputs`` (detached copies are made leaf tensors).

    Returns ``(trace estimate, grads)`` where ``grads`` are the first-order gradients (detached), handy for
    EWGS's ``3 * std(g)`` denominator. ``per_input=True``: a list of per-input traces instead of the total.
    """
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    leaves = [x.detach().requires_grad_(True) for x in inputs]
    with torch.enable_grad():
        loss = loss_fn(*leaves)
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        tr, _ = hutchinson_trace(grads, leaves, n_samples, generator, per_input=per_input)
    return tr, [g.detach() for g in grads]
