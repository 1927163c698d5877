"""``bin`` / ``q<b>`` tables against a float64 reference of the quantizers, plus their gradients and sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.compress import build_table, code_size
from qrec.compress.lowbit import LowBitEmbedding, bits_of_spec
from qrec.compress.spec import compress_trained
from qrec.errors import SpecError
from qrec.quant.sign import surrogate_grad
from qrec.quant.uniform import GAUSSIAN_STEP_OVER_MEANABS


def reference(w: np.ndarray, bits: int) -> np.ndarray:
    """float64, row by row: step = k_b mean|w|, u_q = clamp(floor(w / step) + 1/2, +-(2^(b-1) - 1/2))."""
    out = np.empty_like(w, dtype=np.float64)
    half = 2 ** (bits - 1)
    for r, row in enumerate(w.astype(np.float64)):
        step = GAUSSIAN_STEP_OVER_MEANABS[bits] * np.abs(row).mean()
        out[r] = step * np.clip(np.floor(row / step) + 0.5, -half + 0.5, half - 0.5)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), bits=st.integers(1, 8), n=st.integers(1, 20), d=st.integers(1, 40))
def test_eval_rows_match_the_float64_reference(seed, bits, n, d):
    torch.manual_seed(seed)
    table = build_table(f"q{bits}", n, d, init_std=1.0).eval()
    got = table.all().detach().double().numpy()
    want = reference(table.weight.detach().numpy(), bits)
    # a value within float32 rounding of a grid boundary may land on either side: allow one step there
    close = np.isclose(got, want, rtol=1e-5, atol=1e-6)
    assert close.mean() > 0.99
    np.testing.assert_allclose(got, want, rtol=0, atol=float(np.abs(want).max() + 1e-9))


@pytest.mark.parametrize("spec", ["bin", "bin-gaussian", "bin-fourier", "q1"])
def test_one_bit_rows_are_sign_times_mean_abs(spec):
    torch.manual_seed(0)
    table = build_table(spec, 9, 13, init_std=1.0).eval()
    w = table.weight.detach().double()
    want = torch.where(w >= 0, 1.0, -1.0) * w.abs().mean(dim=1, keepdim=True)
    torch.testing.assert_close(table.all().detach().double(), want, rtol=1e-6, atol=1e-7)


def test_rows_on_the_one_bit_grid_round_trip_exactly():
    """+-a rows (dyadic a: their mean is exact) are their own quantization: decode(encode(x)) == x."""
    rng = np.random.default_rng(1)
    a = rng.integers(1, 64, size=(6, 1)).astype(np.float32) / 16
    w = torch.from_numpy(a * rng.choice([-1.0, 1.0], size=(6, 32)).astype(np.float32))
    table = compress_trained("bin", w).eval()
    assert torch.equal(table.all(), w)
    assert torch.equal(LowBitEmbedding.decode_export(table.export(), 6, 32, "bin"), w)


def test_more_bits_are_not_worse():
    w = torch.randn(200, 64, generator=torch.Generator().manual_seed(2))
    errors = [float((compress_trained(f"q{b}", w).eval().all().detach() - w).square().mean()) for b in range(1, 9)]
    assert all(e2 <= e1 for e1, e2 in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 * errors[0]


def test_sign_gradient_is_the_named_surrogate_times_the_scale():
    torch.manual_seed(3)
    table = build_table("bin-gaussian", 4, 8, init_std=1.0)
    table(torch.arange(4)).sum().backward()
    w = table.weight.detach()
    scale = w.abs().mean(dim=1, keepdim=True)  # detached: no gradient flows through the step
    torch.testing.assert_close(table.weight.grad, surrogate_grad(w, "gaussian") * scale)


def test_uniform_gradient_is_identity_inside_the_clipping_range():
    torch.manual_seed(4)
    table = build_table("q2", 5, 16, init_std=1.0)
    table(torch.arange(5)).sum().backward()
    w = table.weight.detach()
    step = GAUSSIAN_STEP_OVER_MEANABS[2] * w.abs().mean(dim=1, keepdim=True)
    inside = ((w / step).abs() <= 2).float()
    torch.testing.assert_close(table.weight.grad, inside)


@pytest.mark.parametrize("spec, bits", [("bin", 1), ("q2", 2), ("q5", 5)])
@pytest.mark.parametrize("n, d", [(1, 1), (7, 3), (1001, 64)])
def test_code_size_is_the_bytes_exported(spec, bits, n, d):
    table = build_table(spec, n, d)
    held = sum(t.numel() * t.element_size() * 8 for t in table.export().values())
    assert code_size(spec, n, d) == table.serving_bits() == held == 8 * math.ceil(n * d * bits / 8) + 32 * n


@pytest.mark.parametrize("spec", ["q0", "q9", "q16", "bin-ewgs", "bin2"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(SpecError):
        build_table(spec, 3, 4)


def test_bits_of_spec_and_post_training_of_every_width():
    assert [bits_of_spec(s) for s in ("bin", "bin-fourier", "q1", "q3", "q8")] == [1, 1, 1, 3, 8]
    with pytest.raises(ValueError, match="not a low-bit spec"):
        bits_of_spec("sq4")
    w = torch.randn(10, 8, generator=torch.Generator().manual_seed(5))
    for b in range(1, 9):
        table = compress_trained(f"q{b}", w).eval()
        assert torch.equal(table.all(), LowBitEmbedding.decode_export(table.export(), 10, 8, f"q{b}"))
