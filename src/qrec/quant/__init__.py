"""Quantizers and their gradient estimators: sign (1 bit), b-bit uniform (STE / EWGS), Hessian traces."""

from qrec.quant.hessian import hessian_trace, hutchinson_trace, rademacher_like
from qrec.quant.sign import ESTIMATORS, hard_sign, sign, surrogate_grad
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

__all__ = [
    "ESTIMATORS",
    "GAUSSIAN_STEP_OVER_MEANABS",
    "dequantize_codes",
    "ewgs_delta",
    "fake_quantize",
    "hard_sign",
    "hessian_trace",
    "hutchinson_trace",
    "int8_codes",
    "node_step",
    "quantize_codes",
    "rademacher_like",
    "round_ste",
    "sign",
    "surrogate_grad",
]
