"""quantize_dynamic's integer format: what onnxruntime's quantize_dynamic writes, standard ONNX that
any runtime runs as integer math.

For each Conv / MatMul / Gemm with a constant float weight (the weight on the right):

    x -> DynamicQuantizeLinear -> (x_q uint8, x_scale, x_zero_point)      one per distinct input
    ConvInteger | MatMulInteger(x_q, W_q, x_zero_point, W_zero_point) -> int32
      -> Cast(float) -> Mul(x_scale * W_scale) [-> Add(bias)]            -> the original output

- W_q int8, per output channel where the op allows it: MatMulInteger takes a zero point per column
  (1-D, [N]); ConvInteger's weight zero point is one scalar in onnxruntime, so Conv weights are
  symmetric (zero point 0) with per-channel scales, which live in the Mul ([C, 1, ...] against the
  NCHW output). Gemm: the weight is stored transposed when transB=1; alpha joins the scales, beta
  the bias.
- Saturation safety (as quantize_static): an int8 weight whose u8 x s8 products, summed in pairs in
  int16 by x86 kernels without VNNI, could saturate is stored as uint8 + 128 (zero point 128).
- Skipped (left float, with the reason in the result): ConvTranspose (no integer op), Gemm with
  transA=1, MatMul weights of rank other than 2, excluded nodes.

qrt lowers the pattern to fused integer kernels (qrt/passes/dynamic_quant.py).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qrt.quantization.params import (dequantize_weight, np_dtype, pairs_overflow_int16,
                                     quantize_weight)
from qrt.quantization.qdq import _Names, _attr


def _sqnr(ref: np.ndarray, err: np.ndarray) -> float:
    from qrt.quantization.qdq import _sqnr as s
    return s(ref, err)


def write_integer(model: onnx.ModelProto, exclude: dict, *, per_channel: bool, weight_type: str,
                  symmetric_weights: bool, saturation_safe: bool,
                  metadata: dict | None = None):
    """Rewrite `model` (a copy). Returns (model, quantized node names, weight facts,
    {node: why it stays float})."""
    if weight_type not in ("int8", "uint8"):
        raise ValueError(f"the integer dynamic format takes int8 or uint8 weights, not "
                         f"{weight_type!r} (MatMulInteger/ConvInteger are 8-bit): use "
                         "format='weight_only'")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = _Names(m)
    inits = {t.name: t for t in g.initializer}
    new_inits: list = []
    dql: dict[str, tuple] = {}  # float input -> (x_q, x_scale, x_zero_point)
    out_nodes: list = []
    quantized, skipped, wfacts = [], {}, {}

    def const(arr, base):
        name = names(base)
        new_inits.append(numpy_helper.from_array(arr, name))
        return name

    for node in g.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or node.domain not in ("", "ai.onnx"):
            out_nodes.append(node)
            continue
        if node.name in exclude:
            out_nodes.append(node)
            continue
        ins = list(node.input)
        why = None
        x = ins[0]
        w_init = inits.get(ins[1]) if len(ins) > 1 else None
        if op == "ConvTranspose":
            why = "ConvTranspose has no integer ONNX op"
        elif w_init is None or w_init.data_type != onnx.TensorProto.FLOAT:
            why = "weight is not a constant float tensor"
        elif not x or x in inits:
            why = "input is constant"
        elif op == "Gemm" and _attr(node, "transA", 0):
            why = "Gemm with transA=1"
        elif op == "MatMul" and len(w_init.dims) != 2:
            why = f"MatMul weight of rank {len(w_init.dims)}"
        if why:
            skipped[node.name] = why
            out_nodes.append(node)
            continue
        w = numpy_helper.to_array(w_init).astype(np.float32)
        scale_mul = 1.0
        bias = None
        if op == "Gemm":
            if _attr(node, "transB", 0):
                w = np.ascontiguousarray(w.T)
            scale_mul = float(_attr(node, "alpha", 1.0))
            if len(ins) > 2 and ins[2]:
                c = inits.get(ins[2])
                if c is None:
                    skipped[node.name] = "Gemm bias C is not constant"
                    out_nodes.append(node)
                    continue
                bias = numpy_helper.to_array(c).astype(np.float32) * float(_attr(node, "beta", 1.0))
        elif op == "Conv" and len(ins) > 2 and ins[2]:
            b = inits.get(ins[2])
            if b is None:
                skipped[node.name] = "Conv bias is not constant"
                out_nodes.append(node)
                continue
            # [1, C, 1, ...] against the [N, C, ...] output (what onnxruntime writes too)
            bias = numpy_helper.to_array(b).astype(np.float32).reshape(
                (1, -1) + (1,) * (w.ndim - 2))
        # weight: Conv [C, Cin/g, k...] per channel along 0 (symmetric: ConvInteger's zero point is
        # one scalar in onnxruntime); MatMul/Gemm [K, N] per column
        conv = op == "Conv"
        axis = (0 if conv else 1) if per_channel else None
        sym = symmetric_weights or (conv and per_channel)
        qv, s, z = quantize_weight(w, weight_type, sym, axis)
        wtype = weight_type
        if saturation_safe and weight_type == "int8" and pairs_overflow_int16(qv, 0 if conv else 1):
            qv, z, wtype = qv + 128, np.asarray(z) + 128, "uint8"
        wd = np_dtype(wtype)
        s = np.asarray(s, np.float32)
        z = np.asarray(z)
        wq_name = const(qv.astype(wd), f"{ins[1]}_quantized")
        if conv:
            zp = z.reshape(-1)[:1].reshape(()) if np.all(z == z.reshape(-1)[0]) else None
            if zp is None:  # cannot happen: per-channel Conv weights are symmetric
                raise AssertionError("per-channel ConvInteger zero points")
            wz_name = const(zp.astype(wd), f"{ins[1]}_zero_point")
            s_out = (s * scale_mul).reshape((-1,) + (1,) * (w.ndim - 2)) if s.ndim else \
                (s * scale_mul).reshape(())
        else:
            n = qv.shape[1]
            wz_name = const(np.broadcast_to(z.reshape(-1), (n,)).astype(wd).copy(),
                            f"{ins[1]}_zero_point")
            s_out = (s * scale_mul).reshape(-1) if s.ndim else (s * scale_mul).reshape(())
        ws_name = const(s_out.astype(np.float32), f"{ins[1]}_scale")
        err = w - dequantize_weight(qv, s, z, axis if s.ndim else None)
        wfacts[ins[1]] = {"axis": axis if s.ndim else None, "block_size": None, "type": wtype,
                          "sqnr_db": _sqnr(w, err), "max_abs_error": float(np.abs(err).max())}
        if x not in dql:
            xq, xs, xz = names(f"{x}_quantized"), names(f"{x}_scale"), names(f"{x}_zero_point")
            out_nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xz],
                                              name=names(f"{x}_DynamicQuantizeLinear")))
            dql[x] = (xq, xs, xz)
        xq, xs, xz = dql[x]
        base = node.name or node.output[0]
        acc, f, scaled = names(f"{base}_int32"), names(f"{base}_float"), names(f"{base}_scales")
        y = node.output[0]
        mul_out = y if bias is None else names(f"{base}_scaled")
        if conv:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            out_nodes.append(helper.make_node("ConvInteger", [xq, wq_name, xz, wz_name], [acc],
                                              name=names(f"{base}_ConvInteger"), **attrs))
        else:
            out_nodes.append(helper.make_node("MatMulInteger", [xq, wq_name, xz, wz_name], [acc],
                                              name=names(f"{base}_MatMulInteger")))
        out_nodes += [
            helper.make_node("Mul", [xs, ws_name], [scaled], name=names(f"{base}_scales_Mul")),
            helper.make_node("Cast", [acc], [f], name=names(f"{base}_Cast"),
                             to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [f, scaled], [mul_out], name=names(f"{base}_Mul")),
        ]
        if bias is not None:
            b_name = const(bias.astype(np.float32), f"{base}_bias")
            out_nodes.append(helper.make_node("Add", [mul_out, b_name], [y],
                                              name=names(f"{base}_bias_Add")))
        quantized.append(node.name)
    del g.node[:]
    g.node.extend(out_nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    ginit = {t.name for t in g.initializer}
    keep_inputs = [i for i in g.input if i.name not in ginit or i.name in used]
    del g.input[:]
    g.input.extend(keep_inputs)
    del g.value_info[:]
    for k, v in (metadata or {}).items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:
        pass
    return m, quantized, wfacts, skipped
