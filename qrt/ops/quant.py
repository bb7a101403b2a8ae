"""Quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
