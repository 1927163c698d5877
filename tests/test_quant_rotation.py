"""ITQ: an orthogonal rotation, a monotone loss, and the exact answer when one exists."""

from __future__ import annotations

import torch

from qrec.quant.rotation import itq_loss, itq_rotation


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_itq_is_orthogonal_and_never_worse_than_its_start():
    V = torch.randn(500, 16, generator=_gen(0), dtype=torch.float64) * torch.linspace(0.2, 3, 16, dtype=torch.float64)
    start = itq_loss(V, torch.eye(16, dtype=torch.float64))
    losses = [itq_loss(V, itq_rotation(V, iters=n)) for n in (1, 5, 20, 50)]
    R = itq_rotation(V)
    torch.testing.assert_close(R.T @ R, torch.eye(16, dtype=torch.float64), atol=1e-10, rtol=0)
    assert all(b <= a + 1e-9 for a, b in zip([start] + losses, losses))  # monotone, as the alternation is
    assert losses[-1] < 0.9 * start


def test_itq_recovers_a_rotated_hypercube():
    """Rows that are vertices of a rotated cube: some rotation quantizes them with zero loss, and ITQ started
    near it finds one (the rotation is unique up to the cube's signed permutations)."""
    d = 8
    B = torch.where(torch.rand(2000, d, generator=_gen(1)) < 0.5, -1.0, 1.0).double()
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(2), dtype=torch.float64))
    V = B @ Q.T
    noise, _ = torch.linalg.qr(torch.eye(d, dtype=torch.float64) + 0.05 * torch.randn(d, d, generator=_gen(3), dtype=torch.float64))
    R = itq_rotation(V, iters=30, init=Q @ noise)
    assert itq_loss(V, R) < 1e-12
    codes = torch.where(V @ R >= 0, 1.0, -1.0).double()
    assert torch.equal(codes @ codes.T, B @ B.T)  # the cube's codes, up to its own symmetries


def test_rotation_keeps_inner_products():
    V = torch.randn(50, 12, generator=_gen(4), dtype=torch.float64)
    R = itq_rotation(V, iters=10)
    torch.testing.assert_close((V @ R) @ (V @ R).T, V @ V.T, atol=1e-10, rtol=1e-10)
