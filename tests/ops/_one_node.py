"""One-node models for the op tests: numpy dtypes to ONNX element types, and a builder."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

NP2ONNX = {np.dtype(k): v for k, v in {
    np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE,
    np.float16: TensorProto.FLOAT16, np.int8: TensorProto.INT8, np.int16: TensorProto.INT16,
    np.int32: TensorProto.INT32, np.int64: TensorProto.INT64, np.uint8: TensorProto.UINT8,
    np.uint16: TensorProto.UINT16, np.uint32: TensorProto.UINT32,
    np.uint64: TensorProto.UINT64, np.bool_: TensorProto.BOOL}.items()}


def one_node_model(op, feeds, consts=None, attrs=None, opset=18, n_out=1, input_order=None):
    """One `op` node named 'the_node'. `feeds` become graph inputs, `consts` initializers;
    `input_order` lists the node's inputs ("" for an omitted one), default feeds then consts."""
    consts = consts or {}
    names = input_order or list(feeds) + list(consts)
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name="the_node", **(attrs or {}))
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, NP2ONNX[v.dtype], list(v.shape))
         for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m
