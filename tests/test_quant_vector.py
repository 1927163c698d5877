"""Vector codes (``qrec.quant.vector``, ``VectorCodes``): nearest codewords against a float64 brute force, the
codebook's int8 grid, exact export round trips and integer scores equal to float64 dot products of the codes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.compress.kmeans import shared_codebook as fit_codebook
from qrec.compress.nearest import nearest_shared as nearest_index
from qrec.quant.vector import check_vector_code, codebook_ints, codebook_unit, row_step
from qrec.retrieval.intdot import IntCodes, VectorCodes


def brute_nearest(u: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Float64 reference: every block against every codeword, ties to the lowest index."""
    s = codebook.shape[1]
    blocks = u.double().reshape(len(u), -1, 1, s)
    dist = (blocks - codebook.double()[None, None]).square().sum(-1)  # (n, D, K)
    best = dist.min(dim=-1, keepdim=True).values
    k = torch.arange(codebook.shape[0]).expand_as(dist)
    return torch.where(dist == best, k, codebook.shape[0]).min(dim=-1).values


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([(2, 2), (2, 3), (2, 4), (4, 2)]), st.integers(1, 40),
       st.integers(1, 6))
def test_nearest_index_is_the_float64_brute_force(seed, code, n, D):
    bits, s = code
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(2 ** (bits * s), s, generator=g)
    u = torch.randn(n, D * s, generator=g) * 1.5
    assert torch.equal(nearest_index(u, codebook), brute_nearest(u, codebook))


def test_nearest_index_breaks_ties_to_the_lowest_codeword():
    codebook = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    u = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert nearest_index(u, codebook).tolist() == [[0, 3]]


def test_fit_codebook_is_seeded_on_an_int8_grid_and_lowers_the_error_of_the_scalar_grid():
    from qrec.quant.uniform import fake_quantize

    x = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0)) * torch.rand(3000, 1) * 3
    C = fit_codebook(x, 2, 4)
    assert C.shape == (256, 4) and torch.equal(C, fit_codebook(x, 2, 4))
    ints = codebook_ints(C)
    assert ints.abs().max() == 127
    torch.testing.assert_close(ints.float() * codebook_unit(C), C, rtol=0, atol=0)  # exactly on the grid
    u = x / row_step(x)
    vq = C[nearest_index(u, C)].reshape(u.shape)
    err_vq = (vq - u).square().sum() / u.square().sum()
    err_scalar = (fake_quantize(u, 2) - u).square().sum() / u.square().sum()
    assert err_vq < 0.9 * err_scalar  # the point of the blocks (Gaussian rows: ~0.096 against ~0.119)


@pytest.mark.parametrize("bits, s, d", [(1, 4, 8), (2, 1, 8), (2, 5, 10), (3, 3, 9), (2, 4, 10)])
def test_check_vector_code_refuses_what_a_byte_per_block_cannot_hold(bits, s, d):
    with pytest.raises(ValueError, match="vector"):
        check_vector_code(bits, s, d)


def _codes(seed=0, n=30, d=12, bits=2, s=3, step_dtype=torch.float16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 4
    C = fit_codebook(x, bits, s)
    step = row_step(x).half().float()
    return x, C, step, VectorCodes.from_index(nearest_index(x / step, C), C, step, bits, step_dtype)


@pytest.mark.parametrize("seed", range(4))
def test_vector_codes_score_as_float64_dot_products_of_the_codewords(seed):
    x, C, step, codes = _codes(seed)
    ref = step.double() * C.double()[nearest_index(x / step, C)].reshape(x.shape)
    torch.testing.assert_close(codes.decode().double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(codes[:7].score(codes).double(), ref[:7] @ ref.T, rtol=1e-5, atol=1e-5)
    assert isinstance(codes[2:5], VectorCodes) and len(codes[2:5]) == 3


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([(2, 2), (2, 4), (4, 2), (2, 3)]), st.integers(1, 25))
def test_export_round_trip_is_exact(seed, code, n):
    bits, s = code
    _, C, _, codes = _codes(seed, n=n, d=4 * s, bits=bits, s=s)
    out = codes.export()
    assert out["codes"].dtype == torch.uint8 and out["codes"].shape == (n, -(-4 * bits * s // 8))
    assert out["step"].dtype == torch.float16 and out["codebook"].shape == (2 ** (bits * s), s)
    back = VectorCodes.from_export(out, bits, 4 * s)
    for name in ("q", "scale", "index", "step"):
        assert torch.equal(getattr(back, name), getattr(codes, name)), name
    assert back.step_dtype == torch.float16 and isinstance(back, IntCodes)


def test_vector_codes_are_not_sign_codes():
    _, _, _, codes = _codes()
    with pytest.raises(ValueError, match="sign"):
        codes.binary()
