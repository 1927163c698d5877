"""Pack small integer codes into a dense little-endian bitstream, and back.

Layout (the one every exported table uses): code ``i`` of width ``b`` occupies stream bits
``[i*b, (i+1)*b)``, least significant bit first, and stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``.
So ``pack_bits([1, 2, 3], 2)`` is the single byte ``0b00_11_10_01 = 0x39`` and ``pack_bits([0xABC, 0x123], 12)``
is ``bytes.fromhex("bc3a12")``: the same bytes as the integer ``sum(code_i << (i*b))`` written little-endian.
The stream is exactly ``ceil(numel * b / 8)`` bytes; the unused high bits of the last byte are zero.

``pack_rows`` packs each row of a ``(..., d)`` tensor on its own in the same layout, the row padded with zero
bits to a multiple of ``align`` bytes: ``align = 8`` gives the 64-bit words popcount scoring reads as int64
(``qrec.retrieval.hamming.pack_signs``), ``align = 1`` the byte rows of b-bit integer codes
(``qrec.retrieval.intdot``). This module is the only bit packer in qrec.

Both directions are vectorised over bits (``numel x b`` element-wise ops on the tensor's own device). The
only Python loop is over chunks of ``_CHUNK`` codes, which bounds the ``numel x b`` intermediate at a few
MiB; a chunk holds a multiple of 8 codes, so every chunk starts on a byte boundary for any width.
"""

from __future__ import annotations

import numbers

import torch

MAX_BITS = 16
_CHUNK = 1 << 18  # codes per chunk; a multiple of 8


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes of a stream holding ``count`` codes of ``bits`` bits: ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    return -(-int(count) * int(bits) // 8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``codes`` (any shape, integer, ``0 <= code < 2**bits``) into a flat ``uint8`` bitstream."""
    _check_bits(bits)
    bits = int(bits)
    flat = torch.as_tensor(codes).reshape(-1)
    if flat.is_floating_point() or flat.is_complex() or flat.dtype == torch.bool:
        raise TypeError(f"pack_bits needs an integer tensor, got {flat.dtype}")
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, 2**{bits}), got range [{int(flat.min())}, {int(flat.max())}]")
    flat = flat.to(torch.int32)
    chunks = [_pack_chunk(flat[i : i + _CHUNK], bits) for i in range(0, flat.numel(), _CHUNK)]
    return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8, device=flat.device)


def unpack_bits(packed: torch.Tensor, bits: int, count: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``count`` codes of the stream, as a flat ``dtype`` tensor (each chunk
    narrowed as it is unpacked: 10^7 x 64 codes are 640 MB as uint8, 5 GB as int64)."""
    _check_bits(bits)
    bits, count = int(bits), int(count)
    packed = torch.as_tensor(packed).reshape(-1)
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_bits needs a uint8 stream, got {packed.dtype}")
    need = packed_nbytes(count, bits)
    if packed.numel() < need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, the stream has {packed.numel()}")
    step = _CHUNK * bits // 8  # bytes per chunk of _CHUNK codes
    out = torch.empty(count, dtype=dtype, device=packed.device)
    for i, j in zip(range(0, count, _CHUNK), range(0, need, step)):
        out[i : i + _CHUNK] = _unpack_chunk(packed[j : j + step], bits, min(_CHUNK, count - i))
    return out


def pack_rows(codes: torch.Tensor, bits: int, align: int = 1) -> torch.Tensor:
    """Each row of ``codes (..., d)`` (integer or bool, ``0 <= code < 2**bits``) packed on its own:
    ``(..., row_bytes)`` uint8, ``row_bytes = ceil(d * bits / (8 * align)) * align``, zero-padded."""
    _check_bits(bits)
    bits, align = int(bits), int(align)
    codes = torch.as_tensor(codes)
    lead, d = codes.shape[:-1], codes.shape[-1]
    row_bytes = -(-d * bits // (8 * align)) * align
    flat = codes.reshape(-1, d)
    if flat.is_floating_point() or flat.is_complex():
        raise TypeError(f"pack_rows needs an integer or bool tensor, got {flat.dtype}")
    if flat.numel() and flat.dtype != torch.bool and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, 2**{bits}), got range [{int(flat.min())}, {int(flat.max())}]")
    step = max(1, _CHUNK // max(d, 1))
    chunks = [_pack_chunk(flat[i : i + step].to(torch.int32), bits, row_bytes) for i in range(0, flat.shape[0], step)]
    out = torch.cat(chunks) if chunks else torch.empty(0, row_bytes, dtype=torch.uint8, device=codes.device)
    return out.reshape(*lead, row_bytes)


def unpack_rows(packed: torch.Tensor, bits: int, d: int) -> torch.Tensor:
    """Inverse of ``pack_rows``: ``(..., row_bytes)`` uint8 -> the first ``d`` codes of each row, int64."""
    _check_bits(bits)
    bits, d = int(bits), int(d)
    if packed.dtype != torch.uint8 or packed.shape[-1] * 8 < d * bits:
        raise ValueError(f"rows of {d} codes of {bits} bits need >= {-(-d * bits // 8)} uint8 bytes, "
                         f"got {packed.dtype} rows of {packed.shape[-1]}")
    lead = packed.shape[:-1]
    flat = packed.reshape(-1, packed.shape[-1])
    step = max(1, _CHUNK // max(d, 1))
    chunks = [_unpack_chunk(flat[i : i + step], bits, d) for i in range(0, flat.shape[0], step)]
    out = torch.cat(chunks) if chunks else torch.empty(0, d, dtype=torch.int64, device=packed.device)
    return out.reshape(*lead, d)


def _pack_chunk(codes: torch.Tensor, bits: int, row_bytes: int | None = None) -> torch.Tensor:
    """``(m,)`` codes -> one stream, or ``(m, d)`` codes -> ``(m, row_bytes)`` rows, each its own stream.

    Code ``i`` fills bits ``i b .. i b + b - 1`` (LSB first): shifted to its first bit's position it spans at
    most 3 bytes, and each of those bytes is added into place (``index_add_``); the codes' bits are disjoint,
    so the sums are exact ORs and never pass 255."""
    count = codes.shape[-1]
    rows = codes.reshape(-1, count).to(torch.int32)
    first_bit = torch.arange(count, dtype=torch.int64, device=codes.device) * bits
    at, shifted = first_bit >> 3, rows << (first_bit & 7).to(torch.int32)  # < 2^23: 16 bits shifted by <= 7
    nbytes = -(-count * bits // 8) if row_bytes is None else row_bytes
    out = torch.zeros(rows.shape[0], nbytes + 2, dtype=torch.int32, device=codes.device)
    for byte in range(-(-(7 + bits) // 8)):  # the bytes a code can reach
        out.index_add_(1, at + byte, (shifted >> (8 * byte)) & 255)
    out = out[:, :nbytes].to(torch.uint8)
    return out.reshape(-1) if row_bytes is None else out


def _unpack_chunk(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """One stream ``(nbytes,)`` -> ``(count,)`` codes, or rows ``(m, row_bytes)`` -> ``(m, count)``.

    A code of at most ``MAX_BITS = 16`` bits lies within the 3 bytes from its first bit's byte: gather them as one
    integer, shift, mask (a few int32 passes, where expanding every bit to its own element took 32x the bytes)."""
    first_bit = torch.arange(count, device=packed.device) * bits
    wide = torch.nn.functional.pad(packed.to(torch.int32), (0, 2))  # the last code's 3 bytes may pass the end
    at = first_bit >> 3
    word = wide[..., at] | (wide[..., at + 1] << 8) | (wide[..., at + 2] << 16)
    return ((word >> (first_bit & 7)) & ((1 << bits) - 1)).to(torch.int64)


def _check_bits(bits) -> None:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
