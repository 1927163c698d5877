"""Integer-code scoring equals the float score of the dequantized vectors."""

import pytest
import torch

from qrec.retrieval.intdot import IntCodes, int_dot, pack_codes, score_codes, unpack_codes


@pytest.mark.parametrize("backend", ["auto", "float", "int_mm"])
@pytest.mark.parametrize("d", [1, 13, 64, 100])
def test_int_dot_exact(backend, d):
    from qrec.retrieval.intdot import _int_mm_trusted

    if backend == "int_mm" and not _int_mm_trusted(torch.device("cpu"), d):
        pytest.skip("torch._int_mm unavailable or wrong for this inner size on this CPU")
    g = torch.Generator().manual_seed(d)
    a = torch.randint(-128, 128, (19, d), generator=g, dtype=torch.int64).to(torch.int8)
    b = torch.randint(-128, 128, (31, d), generator=g, dtype=torch.int64).to(torch.int8)
    got = int_dot(a, b, backend)
    assert got.dtype == torch.int32
    assert torch.equal(got.long(), a.long() @ b.long().T)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("d", [16, 64, 70])
def test_codes_score_equals_dequantized_float(bits, d):
    g = torch.Generator().manual_seed(bits * 100 + d)
    U, I = torch.randn(21, d, generator=g) * 0.3, torch.randn(45, d, generator=g)
    cu, ci = IntCodes.from_float(U, bits), IntCodes.from_float(I, bits)
    ref = cu.decode().double() @ ci.decode().double().T
    for backend in ("auto", "float", "int_mm"):
        try:
            got = cu.score(ci, backend=backend)
        except RuntimeError:  # int_mm unavailable here
            continue
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    # the codes are the b-bit grid values of the quantizer
    from qrec.quant.uniform import fake_quantize

    torch.testing.assert_close(cu.decode(), fake_quantize(U, bits), rtol=1e-5, atol=1e-6)


def test_nonzero_zero_points():
    g = torch.Generator().manual_seed(7)
    qu = torch.randint(-128, 128, (5, 33), generator=g).to(torch.int8)
    qi = torch.randint(-128, 128, (9, 33), generator=g).to(torch.int8)
    su, si = torch.rand(5, generator=g) + 0.1, torch.rand(9, generator=g) + 0.1
    zu, zi = torch.randn(5, generator=g) * 3, torch.randn(9, generator=g) * 3
    got = score_codes(qu, su, zu, qi, si, zi)
    xu = su[:, None].double() * (qu.double() - zu[:, None].double())
    xi = si[:, None].double() * (qi.double() - zi[:, None].double())
    torch.testing.assert_close(got.double(), xu @ xi.T, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_pack_codes_roundtrip_and_size(bits):
    g = torch.Generator().manual_seed(bits)
    c = torch.randint(0, 2 ** bits, (7, 37), generator=g).to(torch.uint8)
    p = pack_codes(c, bits)
    assert p.dtype == torch.uint8 and p.shape == (7, (37 * bits + 7) // 8)
    assert torch.equal(unpack_codes(p, bits, 37), c)


@pytest.mark.parametrize("bits", [2, 8])
def test_intcodes_export_holds_b_bits_per_dim(bits):
    codes = IntCodes.from_float(torch.randn(10, 64), bits)
    e = codes.export()
    assert e["codes"].numel() * 8 == 10 * 64 * bits and e["step"].shape == (10,)
    assert torch.equal(unpack_codes(e["codes"], bits, 64), codes.grid_codes())


def test_int_dot_rejects_float():
    with pytest.raises(TypeError):
        int_dot(torch.zeros(2, 3), torch.zeros(2, 3))
