"""INT8 quantization toolkit: calibration observers, QDQ placement and writing, automatic mixed
precision, and per-layer error reports. Writes standard QDQ ONNX that onnxruntime also runs.

    from qrt.quantization import quantize_static, quantize_dynamic, compare_models
"""
from qrt.quantization.compare import CompareReport, LayerError, compare_models  # noqa: F401
from qrt.quantization.quantize import (  # noqa: F401
    MixedPrecision,
    QuantOptions,
    QuantResult,
    Target,
    TensorRange,
    quantize_dynamic,
    quantize_static,
)

__all__ = ["quantize_static", "quantize_dynamic", "compare_models", "QuantOptions", "QuantResult",
           "Target", "TensorRange", "MixedPrecision", "CompareReport", "LayerError"]
