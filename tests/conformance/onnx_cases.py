"""The ONNX backend node test cases, generated in-process from `onnx.backend.test.case` (the wheel
ships no data files), filtered to the ops qrt implements."""
from __future__ import annotations

import functools
import warnings

import onnx

# The ops issue "runtime core" puts in scope; a case runs when every node in it is one of these.
IN_SCOPE_OPS = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu",
    "Softmax", "LayerNormalization", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "MaxPool",
    "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose", "Concat", "Split",
    "Slice", "Squeeze", "Unsqueeze", "Gather", "Shape", "Resize", "Pad", "ReduceMean", "Cast",
    "Identity", "Expand", "Where", "Equal", "Constant",
}

# Element types outside qrt's scope: a case using any of them is skipped with this reason.
T = onnx.TensorProto
OUT_OF_SCOPE_TYPES = {
    getattr(T, n): n for n in (
        "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0",
        "FLOAT4E2M1", "INT2", "UINT2", "BFLOAT16", "STRING", "COMPLEX64", "COMPLEX128")
    if hasattr(T, n)
}


def _types_used(model: onnx.ModelProto) -> set[int]:
    g = model.graph
    used = set()
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            used.add(vi.type.tensor_type.elem_type)
    for t in g.initializer:
        used.add(t.data_type)
    for n in g.node:
        for a in n.attribute:
            if a.name in ("to", "output_dtype") and a.type == onnx.AttributeProto.INT:
                used.add(a.i)
            if a.type == onnx.AttributeProto.TENSOR:
                used.add(a.t.data_type)
    return used


def out_of_scope_reason(model: onnx.ModelProto) -> str | None:
    bad = sorted(OUT_OF_SCOPE_TYPES[t] for t in _types_used(model) if t in OUT_OF_SCOPE_TYPES)
    if bad:
        return "element type out of scope: " + ", ".join(bad)
    return None


@functools.lru_cache(maxsize=1)
def cases():
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        allcases = node.collect_testcases(None)
    picked = []
    for c in allcases:
        ops = {n.op_type for n in c.model.graph.node}
        if ops and ops <= IN_SCOPE_OPS:
            picked.append(c)
    return sorted(picked, key=lambda c: c.name)
