"""b-bit uniform quantizer: grid, codes, plain STE, EWGS's generalized STE (hand-computed case)."""

import pytest
import torch

from qrec.quant.uniform import (
    GAUSSIAN_STEP_OVER_MEANABS,
    dequantize_codes,
    ewgs_delta,
    fake_quantize,
    int8_codes,
    node_step,
    quantize_codes,
    round_ste,
)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_grid_codes_roundtrip(bits):
    torch.manual_seed(bits)
    x = torch.randn(50, 24, dtype=torch.float64)
    step = node_step(x, bits)
    xq = fake_quantize(x, bits, step)
    c = quantize_codes(x, bits, step)
    assert c.dtype == torch.uint8 and int(c.max()) <= 2 ** bits - 1
    torch.testing.assert_close(dequantize_codes(c, bits, step), xq, rtol=0, atol=1e-12)
    # levels are step * (k + 1/2), symmetric, 2^b of them
    u = (xq / step).flatten()
    torch.testing.assert_close(u - 0.5, torch.round(u - 0.5), rtol=0, atol=1e-9)
    assert u.abs().max() <= 2 ** (bits - 1) - 0.5 + 1e-9
    assert len(torch.unique(c)) <= 2 ** bits
    # a point on the grid is reproduced exactly
    torch.testing.assert_close(fake_quantize(xq, bits, step), xq, rtol=0, atol=1e-12)
    # int8 codes with scale/zero give the same values
    q, s, z = int8_codes(c, bits, step)
    torch.testing.assert_close(s[:, None].double() * (q.double() - z[:, None].double()), xq, rtol=1e-6, atol=1e-7)


def test_one_bit_is_meanabs_sign():
    torch.manual_seed(0)
    x = torch.randn(10, 16)
    xq = fake_quantize(x, 1)
    want = x.abs().mean(1, keepdim=True) * torch.where(x >= 0, 1.0, -1.0)
    torch.testing.assert_close(xq, want, rtol=1e-5, atol=1e-6)
    assert GAUSSIAN_STEP_OVER_MEANABS[1] == pytest.approx(2.0, abs=1e-3)


def test_ste_gradient_is_masked_identity():
    u = torch.tensor([-2.5, -2.0, -1.2, -0.3, 0.0, 0.7, 1.99, 2.0, 2.01], requires_grad=True)
    g = torch.arange(1.0, 10.0)
    round_ste(u, 2, "ste").backward(g)
    inside = (u.detach().abs() <= 2).float()
    assert torch.equal(u.grad, g * inside)


def test_ewgs_gradient_hand_computed():
    # 2 bits: levels -1.5, -0.5, 0.5, 1.5 (step units), clipping at |u| <= 2.
    u = torch.tensor([0.2, 0.9, -1.3, 1.6, 3.0], requires_grad=True)
    uq = round_ste(u, 2, "ewgs", delta=0.4)
    assert uq.tolist() == [0.5, 0.5, -1.5, 1.5, 1.5]
    g = torch.tensor([1.0, -2.0, 0.5, -1.0, 1.0])
    uq.backward(g)
    # g_u = g (1 + delta sign(g) (u - u_q)), 0 outside the range
    want = [1.0 * (1 + 0.4 * 1 * (0.2 - 0.5)),     # 0.88
            -2.0 * (1 + 0.4 * -1 * (0.9 - 0.5)),   # -1.68
            0.5 * (1 + 0.4 * 1 * (-1.3 + 1.5)),    # 0.54
            -1.0 * (1 + 0.4 * -1 * (1.6 - 1.5)),   # -0.96
            0.0]
    torch.testing.assert_close(u.grad, torch.tensor(want), rtol=1e-6, atol=1e-7)
    assert want[:4] == pytest.approx([0.88, -1.68, 0.54, -0.96])
    # delta = 0 is the plain STE
    u.grad = None
    round_ste(u, 2, "ewgs", delta=0.0).backward(g)
    assert torch.equal(u.grad, g * torch.tensor([1.0, 1, 1, 1, 0]))


def test_ewgs_through_raw_domain():
    """x -> x/step -> grid -> * step: the scaling term is unit-free, so g_x = g_xq (1 + delta sign(g) (u - u_q))."""
    x = torch.tensor([[0.3, -0.1, 0.25, 0.05]], requires_grad=True)
    step = torch.tensor([[0.2]])
    xq = fake_quantize(x, 2, step, estimator="ewgs", delta=1.0)
    g = torch.tensor([[1.0, 1.0, -1.0, 2.0]])
    xq.backward(g)
    u = x.detach() / step
    uq = xq.detach() / step
    torch.testing.assert_close(x.grad, g * (1 + torch.sign(g) * (u - uq)))


def test_ewgs_delta_formula_and_clamp():
    assert ewgs_delta(0.6, 0.1) == pytest.approx(2.0)
    assert ewgs_delta(0.03, 0.1) == pytest.approx(0.1)
    assert ewgs_delta(-1.0, 0.1) == 0.0
    assert ewgs_delta(100.0, 0.1, delta_max=2.0) == 2.0
    assert ewgs_delta(1.0, 0.0) == 0.0
    assert ewgs_delta(float("nan"), 1.0) == 0.0


def test_maxabs_step_has_no_clipping():
    torch.manual_seed(1)
    x = torch.randn(5, 32)
    step = node_step(x, 4, "maxabs")
    u = x / step
    assert u.abs().max() <= 8 + 1e-5


def test_bad_bits():
    with pytest.raises(ValueError):
        node_step(torch.randn(2, 2), 9)
    with pytest.raises(ValueError):
        round_ste(torch.randn(2), 2, "nope")
