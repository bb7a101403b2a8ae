"""In-memory pre-processing before quantization (onnx API only, nothing written to disk):
opset upgrade, Constant nodes -> initializers, folding of nodes whose inputs are all constant,
BatchNormalization and constant bias Adds folded into the preceding Conv, shape inference."""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper


def load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        return m
    from qrt.onnx_import import read_model

    if isinstance(model, (bytes, bytearray)):
        return read_model(bytes(model))[0]  # a corrupt file: ModelLoadError naming it
    if isinstance(model, (str, os.PathLike)):
        read_model(model)
        return onnx.load(os.fspath(model))  # again, with its external data
    raise TypeError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")


def opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


def upgrade_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    cur = opset(model)
    if cur >= target:
        return model
    from onnx import version_converter
    try:
        return version_converter.convert_version(model, target)
    except Exception as e:  # the converter raises bare RuntimeErrors
        raise ValueError(f"cannot upgrade the model from opset {cur} to {target} "
                         f"(needed for the requested quantization): {e}") from e


_FOLDABLE = {"Identity", "Cast", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Concat",
             "Gather", "Add", "Sub", "Mul", "Div", "Sqrt", "Neg", "Flatten", "Slice",
             "ConstantOfShape", "Range", "Expand", "Pow", "Reciprocal"}


def _eval_node(node: onnx.NodeProto, inputs: list, ops: int):
    from onnx.reference import ReferenceEvaluator
    g = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(f"__in{i}", helper.np_dtype_to_tensor_dtype(a.dtype),
                                       a.shape) for i, a in enumerate(inputs)],
        [helper.make_tensor_value_info(o, 0, None) for o in node.output])
    n2 = onnx.NodeProto()
    n2.CopyFrom(node)
    del n2.input[:]
    n2.input.extend([f"__in{i}" if name else "" for i, name in enumerate(node.input)])
    g.node[0].CopyFrom(n2)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", ops)])
    return ReferenceEvaluator(m).run(None, {f"__in{i}": a for i, a in enumerate(inputs)})


def fold_constants(model: onnx.ModelProto) -> int:
    """Constant nodes become initializers; small nodes whose inputs are all constant are evaluated
    (onnx's reference evaluator). Returns the number of nodes removed."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    ops = opset(model)
    removed = 0
    keep = []
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            g.initializer.append(t)
            inits[t.name] = t
            removed += 1
            continue
        if (node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx")
                and all((not i) or i in inits for i in node.input)
                and not any(o in outputs for o in node.output)):
            try:
                args = [numpy_helper.to_array(inits[i]) for i in node.input if i]
                if len(args) == len([i for i in node.input if i]) and \
                        sum(a.size for a in args) <= 1 << 24:
                    res = _eval_node(node, args, ops)
                    for name, arr in zip(node.output, res):
                        t = numpy_helper.from_array(np.asarray(arr), name)
                        g.initializer.append(t)
                        inits[name] = t
                    removed += 1
                    continue
            except Exception:
                pass
        keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    # Drop initializers nothing reads any more.
    used = {i for n in g.node for i in n.input} | outputs
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    names = {t.name for t in g.initializer}
    real_inputs = [i for i in g.input if i.name not in names or i.name in used]
    del g.input[:]
    g.input.extend(real_inputs)
    return removed


def fold_batchnorm(model: onnx.ModelProto) -> list[str]:
    """Conv -> BatchNormalization (inference form, Conv output read only by the BN) becomes one Conv
    with rescaled weights and bias. Returns the names of the folded BN nodes."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    prod = {o: n for n in g.node for o in n.output}
    folded, drop = [], set()
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1 and any(bn.output[1:]):
            continue
        if any(a.name == "training_mode" and a.i for a in bn.attribute):
            continue
        conv = prod.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or consumers.get(bn.input[0], 0) != 1 \
                or bn.input[0] in outputs or conv.input[1] not in inits:
            continue
        if not all(i in inits for i in bn.input[1:5]):
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64)
                                  for i in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        k = gamma / np.sqrt(var + eps)
        w2 = (w * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        b2 = ((b - mean) * k + beta).astype(np.float32)
        wname, bname = conv.input[1] + "_bnfolded", (conv.name or conv.output[0]) + "_bias_bnfolded"
        g.initializer.extend([numpy_helper.from_array(w2, wname),
                              numpy_helper.from_array(b2, bname)])
        conv.input[1] = wname
        if len(conv.input) > 2:
            conv.input[2] = bname
        else:
            conv.input.append(bname)
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
        folded.append(bn.name or bn.output[0])
    if drop:
        keep = [n for n in g.node if id(n) not in drop]
        del g.node[:]
        g.node.extend(keep)
        used = {i for n in g.node for i in n.input}
        live = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(live)
    return folded


def fold_conv_bias_add(model: onnx.ModelProto) -> list[str]:
    """Conv -> Add(constant per-output-channel bias, shape [C], [C,1,1] or [1,C,1,1]; the Conv's
    output read only by the Add) becomes one Conv with that bias (exporters such as paddle2onnx
    write the bias as a separate Add). The bias then becomes int32 at sx*sw and the Conv's output
    is quantized once, after the bias, instead of before it. Returns the folded Add nodes."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    prod = {o: n for n in g.node for o in n.output}
    folded, drop = [], set()
    for add in g.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        k = next((j for j in (0, 1) if add.input[j] in inits), None)
        if k is None or add.input[1 - k] in inits:
            continue
        conv = prod.get(add.input[1 - k])
        if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") \
                or consumers.get(conv.output[0], 0) != 1 or conv.output[0] in outputs \
                or conv.input[1] not in inits:
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        b = numpy_helper.to_array(inits[add.input[k]])
        w = numpy_helper.to_array(inits[conv.input[1]])
        c = w.shape[0]
        nsp = w.ndim - 2  # spatial dims
        # a per-channel bias broadcasts against [N, C, *spatial] as [C, 1...] / [1, C, 1...]
        shp = b.shape
        if b.dtype != np.float32 or b.size != c or not (
                shp == (c,) and nsp == 0 or shp == (c,) + (1,) * nsp
                or shp == (1, c) + (1,) * nsp):
            continue
        old = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
               if len(conv.input) > 2 and conv.input[2] else np.zeros(c))
        bname = (conv.name or conv.output[0]) + "_bias_addfolded"
        g.initializer.append(numpy_helper.from_array(
            (old + b.reshape(-1).astype(np.float64)).astype(np.float32), bname))
        if len(conv.input) > 2:
            conv.input[2] = bname
        else:
            conv.input.append(bname)
        conv.output[0] = add.output[0]
        drop.add(id(add))
        folded.append(add.name or add.output[0])
    if drop:
        keep = [n for n in g.node if id(n) not in drop]
        del g.node[:]
        g.node.extend(keep)
        used = {i for n in g.node for i in n.input} | outputs
        live = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(live)
    return folded


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (reports and exclusion lists need names)."""
    seen = {n.name for n in model.graph.node if n.name}
    for k, n in enumerate(model.graph.node):
        if not n.name:
            base = f"{n.op_type}_{k}"
            name, j = base, 0
            while name in seen:
                j += 1
                name = f"{base}_{j}"
            n.name = name
            seen.add(name)


def preprocess(model, target_opset: int = 13) -> tuple[onnx.ModelProto, dict]:
    """Returns (model, facts) where facts records what was done."""
    m = load(model)
    facts = {"opset_before": opset(m)}
    m = upgrade_opset(m, target_opset)
    facts["opset"] = opset(m)
    facts["constants_folded"] = fold_constants(m)
    facts["batchnorm_folded"] = fold_batchnorm(m)
    facts["bias_add_folded"] = fold_conv_bias_add(m)
    name_nodes(m)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:
        pass
    return m, facts
