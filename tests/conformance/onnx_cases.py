"""The ONNX backend node test cases, generated in-process from `onnx.backend.test.case` (the wheel
ships no data files), filtered to the ops qrt implements."""
from __future__ import annotations

import dataclasses
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
    # common float/integer ops of exported models
    "Neg", "Abs", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
    "Softplus", "Elu", "Selu", "PRelu", "Mish", "ThresholdedRelu", "Max", "Min", "Sum", "Mean",
    "Mod", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Not",
    "Size", "Range", "ConstantOfShape", "Tile", "GatherElements", "GatherND", "ScatterND",
    "ScatterElements", "TopK", "ArgMax", "ArgMin", "CumSum", "Trilu", "OneHot", "DepthToSpace",
    "SpaceToDepth", "NonZero", "EyeLike", "Dropout",
    "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
    "ReduceLogSumExp", "ReduceLogSum",
    "LogSoftmax", "InstanceNormalization", "GlobalMaxPool", "Einsum", "LRN",
    "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Softsign",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "CumProd",
    "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss",
    # recurrent, detection, signal, random and the less common ops (tests/ops/test_more_ops.py)
    "LSTM", "GRU", "RNN", "NonMaxSuppression", "RoiAlign", "CastLike", "IsNaN", "IsInf", "Celu",
    "Shrink", "Hardmax", "MeanVarianceNormalization", "GroupNormalization", "RMSNormalization",
    "Compress", "Unique", "ReverseSequence", "BitShift", "Det", "LpNormalization",
    "GlobalLpPool", "LpPool", "MaxUnpool", "Col2Im", "GridSample", "AffineGrid",
    "CenterCropPad", "Swish", "Bernoulli", "RandomUniform", "RandomNormal",
    "RandomUniformLike", "RandomNormalLike", "Multinomial", "HannWindow", "HammingWindow",
    "BlackmanWindow", "DFT", "STFT", "MelWeightMatrix", "RotaryEmbedding",
}
# Control flow, sequences and optionals (a case runs when its subgraphs' ops are in scope too).
IN_SCOPE_OPS |= {
    "If", "Loop", "Scan", "SequenceMap", "SequenceEmpty", "SequenceConstruct", "SequenceInsert",
    "SequenceAt", "SequenceErase", "SequenceLength", "SplitToSequence", "ConcatFromSequence",
    "Optional", "OptionalHasElement", "OptionalGetElement",
}
# Deprecated ops of opsets 7-10 (qrt/ops/legacy.py): Upsample-9, Scatter-9.
IN_SCOPE_OPS |= {"Upsample", "Scatter"}


def _graphs(g: onnx.GraphProto):
    """`g` and every subgraph in it (If branches, Loop/Scan/SequenceMap bodies), recursively."""
    yield g
    for n in g.node:
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _graphs(sub)

# Element types outside qrt's scope: a case using any of them is skipped with this reason.
T = onnx.TensorProto
OUT_OF_SCOPE_TYPES = {
    getattr(T, n): n for n in (
        "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0",
        "FLOAT4E2M1", "INT2", "UINT2", "BFLOAT16", "STRING", "COMPLEX64", "COMPLEX128")
    if hasattr(T, n)
}


def _types_used(model: onnx.ModelProto) -> set[int]:
    used = set()
    for g in _graphs(model.graph):
        used |= _graph_types_used(g)
    return used


def _graph_types_used(g: onnx.GraphProto) -> set[int]:
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
    from qrt.onnx_import import MIN_OPSET
    if _default_opset(model) < MIN_OPSET:
        return (f"opset {_default_opset(model)} is below qrt's minimum {MIN_OPSET} and the op "
                "changed since")
    if _default_opset(model) == 8 and any(n.op_type == "Scan" for g in _graphs(model.graph)
                                          for n in g.node):
        # Scan-8 (batch axis, sequence_lens) is not implemented: qrt reports it unsupported.
        return "Scan-8 (opset 8: batch axis, sequence_lens) is not implemented"
    return None


def _default_opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def _restamped(case):
    """qrt loads opset >= MIN_OPSET only. A few generators (And/Or/Xor at 7, Not at 1) stamp
    an older opset; where every node's op resolves to the same ONNX op version at MIN_OPSET (the
    spec of the node is unchanged), the case runs restamped to MIN_OPSET, otherwise as is (and
    then fails loading, visibly)."""
    from qrt.onnx_import import MIN_OPSET

    old = _default_opset(case.model)
    if old >= MIN_OPSET:
        return case
    for n in (n for g in _graphs(case.model.graph) for n in g.node):
        if (onnx.defs.get_schema(n.op_type, old).since_version
                != onnx.defs.get_schema(n.op_type, MIN_OPSET).since_version):
            return case
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = MIN_OPSET
    return dataclasses.replace(case, model=model)


@functools.lru_cache(maxsize=1)
def cases():
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        allcases = node.collect_testcases(None)
    picked = []
    for c in allcases:
        ops = {n.op_type for g in _graphs(c.model.graph) for n in g.node}
        if ops and ops <= IN_SCOPE_OPS:
            picked.append(_restamped(c))
    return sorted(picked, key=lambda c: c.name)
