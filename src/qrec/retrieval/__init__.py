"""Scoring from compact codes: packed sign bits (popcount) and b-bit integer or vector codes (int8 GEMM)."""

from qrec.retrieval.hamming import BinaryCodes, hamming_dot, pack_signs, popcount64, score_layers, unpack_signs
from qrec.retrieval.intdot import IntCodes, VectorCodes, int_dot, pack_codes, score_codes, unpack_codes

__all__ = [
    "BinaryCodes",
    "IntCodes",
    "hamming_dot",
    "int_dot",
    "pack_codes",
    "pack_signs",
    "popcount64",
    "score_codes",
    "score_layers",
    "unpack_codes",
    "unpack_signs",
    "VectorCodes",
]
