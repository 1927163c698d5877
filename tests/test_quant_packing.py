"""Bit packing: exact round trips at every width, exact byte counts, and the documented byte layout."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qrec.quant.packing import pack_bits, packed_nbytes, unpack_bits


@st.composite
def codes_and_width(draw):
    bits = draw(st.integers(1, 16))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=200))
    return torch.tensor(values, dtype=torch.int64), bits


@settings(max_examples=300, deadline=None)
@given(codes_and_width())
def test_round_trip_and_byte_count(case):
    codes, bits = case
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_nbytes(codes.numel(), bits) == -(-codes.numel() * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, codes.numel()), codes)


@settings(max_examples=100, deadline=None)
@given(codes_and_width())
def test_matches_the_integer_written_little_endian(case):
    """The stream is the integer sum(code_i << (i * bits)) in little-endian bytes (the documented layout)."""
    codes, bits = case
    value = sum(int(c) << (i * bits) for i, c in enumerate(codes.tolist()))
    expected = value.to_bytes(packed_nbytes(codes.numel(), bits), "little")
    assert bytes(pack_bits(codes, bits).tolist()) == expected


@pytest.mark.parametrize("bits", range(1, 17))
def test_every_width_with_extreme_codes_and_any_shape(bits):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (7, 3, 5), generator=gen)
    codes[0, 0, 0], codes[-1, -1, -1] = 0, (1 << bits) - 1
    packed = pack_bits(codes, bits)
    assert packed.numel() == -(-codes.numel() * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, codes.numel()).reshape(codes.shape), codes)


def test_golden_bytes():
    assert pack_bits(torch.tensor([1, 2, 3]), 2).tolist() == [0b00111001]  # 01 | 10 << 2 | 11 << 4
    assert bytes(pack_bits(torch.tensor([0xABC, 0x123]), 12).tolist()) == bytes.fromhex("bc3a12")
    assert pack_bits(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1).tolist() == [0b00001101, 0b1]
    assert pack_bits(torch.tensor([0xBEEF]), 16).tolist() == [0xEF, 0xBE]


def test_accepts_unsigned_and_numpy_dtypes():
    codes = torch.tensor([5, 0, 7, 3], dtype=torch.uint8)
    assert torch.equal(unpack_bits(pack_bits(codes, 3), 3, 4), codes.long())
    assert torch.equal(unpack_bits(pack_bits(torch.from_numpy(np.array([9, 1], dtype=np.int16)), 4), 4, 2),
                       torch.tensor([9, 1]))


def test_chunked_path_matches_a_large_stream():
    codes = torch.randint(0, 1 << 13, (600_001,), generator=torch.Generator().manual_seed(0))
    packed = pack_bits(codes, 13)
    assert packed.numel() == packed_nbytes(600_001, 13)
    assert torch.equal(unpack_bits(packed, 13, 600_001), codes)


def test_empty():
    assert pack_bits(torch.empty(0, dtype=torch.int64), 5).numel() == 0
    assert unpack_bits(torch.empty(0, dtype=torch.uint8), 5, 0).numel() == 0


@pytest.mark.parametrize("bits", [0, 17, -1, 2.0, True])
def test_rejects_bad_widths(bits):
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([0]), bits)


def test_rejects_out_of_range_codes_and_short_streams():
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([-1]), 2)
    with pytest.raises(TypeError):
        pack_bits(torch.tensor([1.0]), 2)
    with pytest.raises(ValueError):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 3, 3)  # 9 bits need 2 bytes


@st.composite
def rows_width_align(draw):
    bits = draw(st.integers(1, 16))
    n, d = draw(st.integers(0, 6)), draw(st.integers(1, 70))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n * d, max_size=n * d))
    return torch.tensor(values, dtype=torch.int64).reshape(n, d), bits, draw(st.sampled_from([1, 2, 8]))


@settings(max_examples=200, deadline=None)
@given(rows_width_align())
def test_rows_round_trip_and_each_row_is_its_own_stream(case):
    from qrec.quant.packing import pack_rows, unpack_rows

    codes, bits, align = case
    rows = pack_rows(codes, bits, align)
    n, d = codes.shape
    assert rows.shape == (n, -(-d * bits // (8 * align)) * align) and rows.dtype == torch.uint8
    assert torch.equal(unpack_rows(rows, bits, d), codes)
    for r in range(n):  # a row is pack_bits of that row, zero-padded to the alignment
        stream = pack_bits(codes[r], bits)
        assert torch.equal(rows[r, : stream.numel()], stream) and not rows[r, stream.numel():].any()


def test_sign_words_are_the_documented_int64_layout():
    """Bit j of word w is the sign bit of dimension 64 w + j (bit 63: the int64 sign bit), padding bits 0."""
    from qrec.retrieval.hamming import pack_signs

    x = torch.randn(5, 3, 130, generator=torch.Generator().manual_seed(0))
    words = pack_signs(x)
    assert words.shape == (5, 3, 3) and words.dtype == torch.int64
    bits = torch.nn.functional.pad((x >= 0).long(), (0, 3 * 64 - 130)).reshape(5, 3, 3, 64)
    weights = torch.tensor([1 << j for j in range(63)] + [-(1 << 63)], dtype=torch.int64)
    assert torch.equal(words, (bits * weights).sum(-1))


def test_rows_refuse_floats_and_out_of_range_codes():
    from qrec.quant.packing import pack_rows, unpack_rows

    with pytest.raises(TypeError, match="integer or bool"):
        pack_rows(torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match="must lie in"):
        pack_rows(torch.tensor([[4]]), 2)
    with pytest.raises(ValueError, match="need >= 2 uint8 bytes"):
        unpack_rows(torch.zeros(3, 1, dtype=torch.uint8), 3, 5)
