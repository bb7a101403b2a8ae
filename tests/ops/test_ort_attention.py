"""onnxruntime's attention-family contrib ops (qrt/ops/ort_attention.py) against onnxruntime's CPU
kernels: Attention, QAttention, EmbedLayerNormalization, QEmbedLayerNormalization, and a tiny BERT
fused by onnxruntime's transformer optimizer and then quantized by quantize_dynamic.

FLOAT_TOL: both compute in float32 with their own GEMM summation orders and exp; a few ulp of the
values involved.
MASKED_ROW_TOL: a query whose keys are all masked keeps its plain scores shifted by
mask_filter_value (-10000, onnxruntime's additive mask); float32's spacing near 10000 is ~1e-3,
so an ulp of difference in a score can move the shifted value by that much before the softmax.
QUANT_COS: the quantized model's DynamicQuantizeLinear/MatMulInteger steps round the same way in
both, but onnxruntime's u8s8 GEMM on CPUs without VNNI saturates pairs of products to int16
(qrt's integer GEMM is exact), so outputs agree in direction, not bit for bit.
QAttention's unit tests keep int8 weights within [-64, 63] so onnxruntime's GEMM cannot
saturate there and the comparison is exact up to FLOAT_TOL."""
from __future__ import annotations

import collections

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import qrt

ort = pytest.importorskip("onnxruntime")

MS = "com.microsoft"
FLOAT_TOL = 2e-5
MASKED_ROW_TOL = 2e-3
QUANT_COS = 0.999

_DT = {np.float32: TensorProto.FLOAT, np.int32: TensorProto.INT32, np.uint8: TensorProto.UINT8,
       np.int8: TensorProto.INT8, np.int64: TensorProto.INT64}


def _model(op, ins, outs, attrs, inits=(), name="n"):
    """ins: (name, array or None) pairs, None for an omitted optional input; names listed in
    `inits` become initializers, the others graph inputs."""
    names = [n if a is not None else "" for n, a in ins]
    while names and not names[-1]:
        names.pop()
    node = helper.make_node(op, names, list(outs), name=name, domain=MS, **attrs)
    gin = [helper.make_tensor_value_info(n, _DT[a.dtype.type], list(a.shape))
           for n, a in ins if a is not None and n not in inits]
    gout = [helper.make_empty_tensor_value_info(o) for o in outs if o]
    consts = [numpy_helper.from_array(a, n) for n, a in ins if n in inits and a is not None]
    g = helper.make_graph([node], "g", gin, gout, consts)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    feeds = {n: a for n, a in ins if a is not None and n not in inits}
    return m.SerializeToString(), feeds


def _check(op, ins, outs, attrs, inits=(), tol=FLOAT_TOL):
    m, feeds = _model(op, ins, outs, attrs, inits)
    want = ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feeds)
    for optimize in (True, False):
        got = qrt.InferenceSession(m, threads=1, optimize=optimize).run(None, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
            if w.dtype.kind in "iu":
                np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()))


def _raises(op, ins, outs, attrs, match, inits=()):
    m, feeds = _model(op, ins, outs, attrs, inits)
    with pytest.raises(qrt.errors.QrtError, match=match):
        qrt.InferenceSession(m, threads=1).run(None, feeds)


# ---------------------------------------------------------------- Attention

def _attention_inputs(rng, b, s, d, cols, mask=None, past=None, bias=None, with_bias=True):
    x = rng.normal(size=(b, s, d)).astype(np.float32)
    w = rng.normal(0, 0.5, (d, cols)).astype(np.float32)
    bb = rng.normal(size=cols).astype(np.float32) if with_bias else None
    return [("x", x), ("w", w), ("b", bb), ("mask", mask), ("past", past), ("bias", bias)]


def _mask(kind, rng, b, s, total):
    if kind is None:
        return None
    if kind == "1d":  # key lengths
        return rng.integers(1, total + 1, b).astype(np.int32)
    if kind == "1d_over":  # an end past the sequence masks nothing
        return np.array([total + 3] + [total - 1] * (b - 1), np.int32)
    if kind == "2b":  # end positions, then start positions (left padding)
        return np.concatenate([np.full(b, total), rng.integers(0, total, b)]).astype(np.int32)
    if kind == "2d":  # raw 0/1 key padding mask, never all zero in a row
        m = rng.integers(0, 2, (b, total))
        m[:, -1] = 1
        return m.astype(np.int32)
    if kind == "3d":
        m = rng.integers(0, 2, (b, s, total))
        m[..., 0] = 1
        return m.astype(np.int32)
    if kind == "dummy":  # (B, 1): broadcast stand-in for no mask
        return np.ones((b, 1), np.int32)
    raise AssertionError(kind)


@pytest.mark.parametrize("b,s,d,heads,mask,past_len,uni,attrs", [
    (2, 5, 16, 4, None, 0, 0, {}),
    (1, 7, 24, 3, None, 0, 1, {}),
    (2, 5, 16, 2, "1d", 0, 0, {}),
    (2, 5, 16, 2, "1d_over", 0, 1, {}),
    (3, 4, 16, 2, "2b", 0, 0, {}),
    (2, 6, 16, 4, "2d", 0, 0, {"scale": 0.3}),
    (2, 5, 16, 2, "3d", 0, 1, {"mask_filter_value": -50.0}),
    (2, 5, 16, 2, "dummy", 0, 0, {}),
    (2, 4, 16, 2, None, 3, 0, {}),
    (2, 4, 16, 2, "2d", 3, 1, {}),
    (2, 1, 16, 4, "1d", 6, 1, {}),  # one GPT-2 decoding step
    (2, 3, 16, 2, "3d", 2, 0, {}),
])
def test_attention(b, s, d, heads, mask, past_len, uni, attrs):
    rng = np.random.default_rng(b * 100 + s * 10 + heads + past_len)
    past = (rng.normal(size=(2, b, heads, past_len, d // heads)).astype(np.float32)
            if past_len else None)
    ins = _attention_inputs(rng, b, s, d, 3 * d, _mask(mask, rng, b, s, s + past_len), past)
    outs = ["y", "present"] if past_len else ["y"]
    _check("Attention", ins, outs, dict(num_heads=heads, unidirectional=uni, **attrs),
           inits=("w", "b"))


def test_attention_present_without_past_and_no_bias():
    rng = np.random.default_rng(1)
    ins = _attention_inputs(rng, 2, 5, 16, 48, with_bias=False)
    _check("Attention", ins, ["y", "present"], dict(num_heads=2, unidirectional=1))


@pytest.mark.parametrize("shape", [(2, 4, 5, 5), (1, 4, 5, 5), (2, 1, 5, 5)])
def test_attention_bias_broadcast(shape):
    rng = np.random.default_rng(2)
    ab = rng.normal(size=shape).astype(np.float32)
    ins = _attention_inputs(rng, 2, 5, 16, 48, np.array([3, 5], np.int32), bias=ab)
    _check("Attention", ins, ["y"], dict(num_heads=4))


@pytest.mark.parametrize("sizes", [[8, 8, 16], [16, 16, 8]])
def test_attention_qkv_hidden_sizes(sizes):
    rng = np.random.default_rng(3)
    ins = _attention_inputs(rng, 2, 5, 16, sum(sizes), _mask("2d", rng, 2, 5, 5))
    _check("Attention", ins, ["y"], dict(num_heads=2, qkv_hidden_sizes=sizes))


def test_attention_pruned_heads():
    # input hidden 16, Q/K/V 12 wide (the optimizer writes this for pruned BERT heads)
    rng = np.random.default_rng(4)
    _check("Attention", _attention_inputs(rng, 2, 4, 16, 36), ["y"], dict(num_heads=3))


def test_attention_fully_masked_rows():
    rng = np.random.default_rng(5)
    # batch 0: end 0 masks every key; batch 1: start 9 >= total masks every key
    for mask in (np.array([0, 3], np.int32), np.array([4, 5, 1, 9], np.int32)):
        ins = _attention_inputs(rng, 2, 5, 16, 48, mask)
        _check("Attention", ins, ["y"], dict(num_heads=2), tol=MASKED_ROW_TOL)


# ---------------------------------------------------------------- QAttention

def _qattention_inputs(rng, b, s, d, wtype, per_column, zero_points, mask=None, past=None):
    x = rng.integers(0, 256, (b, s, d)).astype(np.uint8)
    lo, hi = (0, 256) if wtype == np.uint8 else (-64, 64)
    w = rng.integers(lo, hi, (d, 3 * d)).astype(wtype)
    bias = rng.normal(size=3 * d).astype(np.float32)
    sx = np.array(0.02, np.float32)
    sw = (rng.uniform(0.001, 0.01, 3 * d) if per_column else np.array(0.004)).astype(np.float32)
    zx = zw = None
    if zero_points:
        zx = np.array(rng.integers(0, 256), np.uint8)
        zcols = 3 * d if per_column else ()
        zw = (rng.integers(100, 156, zcols) if wtype == np.uint8
              else rng.integers(-5, 6, zcols)).astype(wtype)
    return [("x", x), ("w", w), ("bias", bias), ("sx", sx), ("sw", sw), ("mask", mask),
            ("zx", zx), ("zw", zw), ("past", past)]


@pytest.mark.parametrize("wtype,per_column,zero_points,mask,past_len,uni", [
    (np.int8, False, True, None, 0, 0),
    (np.int8, True, True, "1d", 0, 0),
    (np.uint8, False, True, "2d", 0, 1),
    (np.uint8, True, True, "3d", 0, 0),
    (np.int8, False, False, None, 0, 1),
    (np.int8, True, True, "2d", 3, 1),
    (np.uint8, False, True, None, 2, 0),
])
def test_qattention(wtype, per_column, zero_points, mask, past_len, uni):
    rng = np.random.default_rng(10 + past_len + 2 * per_column + 4 * zero_points)
    b, s, d, heads = 2, 5, 16, 2
    past = (rng.normal(size=(2, b, heads, past_len, d // heads)).astype(np.float32)
            if past_len else None)
    ins = _qattention_inputs(rng, b, s, d, wtype, per_column, zero_points,
                             _mask(mask, rng, b, s, s + past_len), past)
    outs = ["y", "present"] if past_len else ["y"]
    _check("QAttention", ins, outs, dict(num_heads=heads, unidirectional=uni),
           inits=("w", "bias", "sw", "zw"))


# ---------------------------------------------------------------- EmbedLayerNormalization

def _eln_tables(rng, hidden=8, vocab=10, max_pos=6, segments=2):
    return (rng.normal(size=(vocab, hidden)).astype(np.float32),
            rng.normal(size=(max_pos, hidden)).astype(np.float32),
            rng.normal(size=(segments, hidden)).astype(np.float32),
            rng.normal(1, 0.2, hidden).astype(np.float32),
            rng.normal(0, 0.2, hidden).astype(np.float32))


def _eln_inputs(rng, b=2, s=4, segment="ids", mask=True, position_ids=None, ids=None):
    we, pe, se, g, beta = _eln_tables(rng)
    ids = rng.integers(0, 10, (b, s)).astype(np.int32) if ids is None else ids
    seg_ids = rng.integers(0, 2, (b, s)).astype(np.int32) if segment == "ids" else None
    m = rng.integers(0, 3, (b, s)).astype(np.int32) if mask else None  # counts only the 1s
    return [("ids", ids), ("seg", seg_ids), ("we", we), ("pe", pe),
            ("se", se if segment else None), ("gamma", g), ("beta", beta), ("mask", m),
            ("pos", position_ids)]


@pytest.mark.parametrize("segment,mask,pos,n_out,attrs", [
    ("ids", True, None, 3, {}),
    ("ids", False, None, 2, {"epsilon": 1e-5}),
    (None, True, None, 2, {}),
    ("table_only", True, None, 3, {}),  # segment_embedding without segment_ids: segment 0
    ("ids", True, "full", 3, {}),
    ("ids", False, "row", 2, {}),
    ("ids", True, None, 1, {"mask_index_type": 0}),
])
def test_embed_layer_normalization(segment, mask, pos, n_out, attrs):
    rng = np.random.default_rng(20 + n_out)
    pids = None
    if pos == "full":
        pids = rng.integers(0, 6, (2, 4)).astype(np.int32)
    elif pos == "row":
        pids = rng.integers(0, 6, (1, 4)).astype(np.int32)
    ins = _eln_inputs(rng, segment=segment, mask=mask, position_ids=pids)
    _check("EmbedLayerNormalization", ins, ["y", "mask_index", "sum"][:n_out], attrs,
           inits=("we", "pe", "se", "gamma", "beta"))


def _quantized(rng, table):
    scale = np.float32((table.max() - table.min()) / 255)
    zp = np.uint8(np.clip(np.round(-table.min() / scale), 0, 255))
    q = np.clip(np.round(table / scale) + zp, 0, 255).astype(np.uint8)
    return q, np.array(scale, np.float32), np.array(zp, np.uint8)


@pytest.mark.parametrize("segment", [True, False])
def test_qembed_layer_normalization(segment):
    rng = np.random.default_rng(30 + segment)
    tables = _eln_tables(rng)
    qs = [_quantized(rng, t) for t in tables]
    names = ["we", "pe", "se", "gamma", "beta"]
    ids = rng.integers(0, 10, (2, 5)).astype(np.int32)
    seg = rng.integers(0, 2, (2, 5)).astype(np.int32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)

    def opt(k, v):
        return None if (not segment and k == 2) else v
    ins = [("ids", ids), ("seg", seg if segment else None)]
    ins += [(n, opt(k, q[0])) for k, (n, q) in enumerate(zip(names, qs))]
    ins += [("mask", mask)]
    ins += [(n + "_s", opt(k, q[1])) for k, (n, q) in enumerate(zip(names, qs))]
    ins += [(n + "_z", opt(k, q[2])) for k, (n, q) in enumerate(zip(names, qs))]
    inits = tuple(n for n, _ in ins[2:7] + ins[8:])
    _check("QEmbedLayerNormalization", ins, ["y", "mask_index"], {"epsilon": 1e-5}, inits)


# ---------------------------------------------------------------- bad inputs

def _bad_attention(**over):
    rng = np.random.default_rng(40)
    ins = dict(_attention_inputs(rng, 2, 5, 16, 48))
    ins.update(over)
    return list(ins.items())


@pytest.mark.parametrize("over,attrs,match", [
    ({"w": np.zeros((12, 48), np.float32)}, {}, r"weights have shape \[12, 48\]"),
    ({"b": np.zeros(40, np.float32)}, {}, r"bias has shape \[40\]"),
    ({"w": np.zeros((16, 40), np.float32), "b": np.zeros(40, np.float32)}, {},
     "40 columns are not 3 equal"),
    ({}, {"num_heads": 3}, "multiples of num_heads=3"),
    ({}, {"qkv_hidden_sizes": [16, 8, 24]}, "Q and K sizes must be equal"),
    ({}, {"qkv_hidden_sizes": [8, 8, 8]}, r"add up to 24, but the weights have 48"),
    ({"mask": np.array([5], np.int32)}, {}, r"1-D mask_index .* shape \[1\]"),
    ({"mask": np.array([-1, 3], np.int32)}, {}, "must be non-negative"),
    ({"mask": np.ones((2, 4), np.int32)}, {}, r"2-D mask_index .* got \[2, 4\]"),
    ({"mask": np.ones((2, 5, 4), np.int32)}, {}, r"3-D mask_index .* got \[2, 5, 4\]"),
    ({"mask": np.ones((2, 1, 8, 8), np.int32)}, {}, "4-D .*Megatron.* not supported"),
    ({"mask": np.ones((2, 5), np.float32)}, {}, "mask_index must be an integer"),
    ({"past": np.zeros((2, 2, 3, 4, 8), np.float32)}, {}, r"past has shape \[2, 2, 3, 4, 8\]"),
    ({"bias": np.zeros((2, 2, 5, 4), np.float32)}, {}, r"attention_bias has shape \[2, 2, 5, 4\]"),
    ({"past": np.zeros((2, 2, 2, 4, 8), np.float32), "bias": np.zeros((2, 2, 5, 9), np.float32)},
     {}, "past and attention_bias together"),
    ({}, {"do_rotary": 1}, "do_rotary"),
    ({"past": np.zeros((2, 2, 2, 4, 8), np.float32)}, {"past_present_share_buffer": 1},
     "past_present_share_buffer"),
])
def test_attention_bad_inputs(over, attrs, match):
    outs = ["y", "present"] if over.get("past") is not None else ["y"]
    _raises("Attention", _bad_attention(**over), outs, dict({"num_heads": 2}, **attrs),
            "n.*" + match)


def test_attention_needs_num_heads():
    m, feeds = _model("Attention", _bad_attention(), ["y"], {})
    with pytest.raises(qrt.errors.QrtError, match="num_heads"):
        qrt.InferenceSession(m, threads=1).run(None, feeds)


@pytest.mark.parametrize("over,match", [
    ({"sx": np.array(0.0, np.float32)}, "input_scale must be positive"),
    ({"sw": np.full(7, 0.01, np.float32)}, r"weight_scale has shape \[7\]"),
    ({"zw": np.zeros(5, np.int8)}, r"weight_zero_point has shape \[5\]"),
    ({"zx": np.array(3, np.int8)}, "input_zero_point has type int8"),
    ({"x": np.zeros((2, 5, 16), np.float32)}, "input must be uint8 or int8"),
])
def test_qattention_bad_inputs(over, match):
    rng = np.random.default_rng(41)
    ins = dict(_qattention_inputs(rng, 2, 5, 16, np.int8, False, True))
    ins.update(over)
    _raises("QAttention", list(ins.items()), ["y"], {"num_heads": 2}, "n.*" + match)


@pytest.mark.parametrize("what,value,match", [
    ("ids", 10, r"input_ids value 10 at \[1, 2\] is out of range for word_embedding with 10"),
    ("ids", -1, "input_ids value -1 .* out of range"),
    ("seg", 2, "segment_ids value 2 .* out of range for segment_embedding"),
    ("pos", 6, "position id value 6 .* out of range for position_embedding"),
])
def test_embed_layer_normalization_out_of_range_indices(what, value, match):
    rng = np.random.default_rng(42)
    pids = np.zeros((2, 4), np.int32) if what == "pos" else None
    ins = dict(_eln_inputs(rng, position_ids=pids))
    ins[what] = ins[what].copy()
    ins[what][1, 2] = value
    _raises("EmbedLayerNormalization", list(ins.items()), ["y", "mask_index"], {}, "n.*" + match)


def test_embed_layer_normalization_sequence_longer_than_positions():
    rng = np.random.default_rng(43)
    ins = _eln_inputs(rng, s=8, mask=False, segment=None)  # position table has 6 rows
    _raises("EmbedLayerNormalization", ins, ["y", "mask_index"], {},
            "position id value 6 .* out of range")


@pytest.mark.parametrize("what,value,match", [
    ("gamma", np.ones(7, np.float32), r"gamma has shape \[7\]; expected \[8\]"),
    ("mask", np.ones((2, 3), np.int32), r"mask has shape \[2, 3\]"),
    ("ids", np.zeros(4, np.int32), "input_ids must be 2-D"),
    ("se", None, r"segment_ids \[2, 4\] given without a segment_embedding"),
])
def test_embed_layer_normalization_bad_shapes(what, value, match):
    rng = np.random.default_rng(44)
    ins = dict(_eln_inputs(rng))
    ins[what] = value
    _raises("EmbedLayerNormalization", list(ins.items()), ["y", "mask_index"], {}, "n.*" + match)


# ---------------------------------------------------------------- end to end

def _tiny_bert(hidden=32, heads=4, layers=2, vocab=50, max_pos=16, ffn=64):
    """A post-LN BERT encoder in the node pattern PyTorch exports (embeddings + LayerNorm, then
    layers of Q/K/V MatMul+Add+Reshape+Transpose, scaled masked softmax, output projection +
    residual + LayerNorm, erf-Gelu MLP + residual + LayerNorm)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], {}

    def w(name, *shape, s=0.1, mean=0.0):
        inits[name] = rng.normal(mean, s, shape).astype(np.float32)
        return name

    def c(name, value):
        inits[name] = np.asarray(value)
        return name

    def n(op, ins, out, **kw):
        nodes.append(helper.make_node(op, ins, [out], out, **kw))
        return out

    hd = hidden // heads
    c("axes0", np.array([0], np.int64))
    c("axes1", np.array([1], np.int64))
    c("axes2", np.array([2], np.int64))
    word = n("Gather", [w("word_embeddings", vocab, hidden, s=0.5), "input_ids"], "word")
    shape = n("Shape", ["input_ids"], "ids_shape")
    seq = n("Gather", [shape, c("i1", np.array(1, np.int64))], "seq_len", axis=0)
    rng_ = n("Range", [c("i0", np.array(0, np.int64)), seq, "i1"], "pos_range")
    pids = n("Expand", [n("Unsqueeze", [rng_, "axes0"], "pos_unsq"), shape], "pos_ids")
    pos = n("Gather", [w("position_embeddings", max_pos, hidden, s=0.5), pids], "pos")
    seg = n("Gather", [w("token_type_embeddings", 2, hidden, s=0.5), "token_type_ids"], "seg")
    emb = n("Add", [n("Add", [word, pos], "emb_add1"), seg], "emb_add2")
    x = n("LayerNormalization", [emb, w("emb_ln_w", hidden, mean=1.0), w("emb_ln_b", hidden)],
          "emb_ln", axis=-1, epsilon=1e-12)
    mask = n("Cast", [n("Unsqueeze", [n("Unsqueeze", ["attention_mask", "axes1"], "mask_u0"),
                                      "axes2"], "mask_u1")], "mask_f", to=TensorProto.FLOAT)
    mask = n("Mul", [n("Sub", [c("one", np.array(1.0, np.float32)), mask], "mask_sub"),
                     c("neg", np.array(-10000.0, np.float32))], "mask_add")
    c("shape4", np.array([0, 0, heads, hd], np.int64))
    c("shape3", np.array([0, 0, hidden], np.int64))
    for k in range(layers):
        p = f"l{k}_"

        def proj(name, perm):
            y = n("Add", [n("MatMul", [x, w(p + name + "_w", hidden, hidden)], p + name + "_mm"),
                          w(p + name + "_b", hidden)], p + name + "_add")
            return n("Transpose", [n("Reshape", [y, "shape4"], p + name + "_rs")], p + name + "_t",
                     perm=perm)
        q, kk, v = proj("q", [0, 2, 1, 3]), proj("k", [0, 2, 3, 1]), proj("v", [0, 2, 1, 3])
        root_hd = c("sqrt_hd", np.array(hd ** 0.5, np.float32))
        sc = n("Div", [n("MatMul", [q, kk], p + "qk"), root_hd], p + "qk_div")
        probs = n("Softmax", [n("Add", [sc, mask], p + "qk_mask")], p + "softmax", axis=3)
        ctx = n("Reshape", [n("Transpose", [n("MatMul", [probs, v], p + "ctx")], p + "ctx_t",
                              perm=[0, 2, 1, 3]), "shape3"], p + "ctx_rs")
        o = n("Add", [n("MatMul", [ctx, w(p + "o_w", hidden, hidden)], p + "o_mm"),
                      w(p + "o_b", hidden)], p + "o_add")
        x1 = n("LayerNormalization", [n("Add", [o, x], p + "res1"),
                                      w(p + "ln1_w", hidden, mean=1.0), w(p + "ln1_b", hidden)],
               p + "ln1", axis=-1, epsilon=1e-12)
        f = n("Add", [n("MatMul", [x1, w(p + "f1_w", hidden, ffn)], p + "f1_mm"),
                      w(p + "f1_b", ffn)], p + "f1_add")
        g = n("Add", [n("Erf", [n("Div", [f, c("sqrt2", np.array(2 ** 0.5, np.float32))],
                                  p + "g_div")], p + "g_erf"), "one"], p + "g_add")
        g = n("Mul", [n("Mul", [f, g], p + "g_mul"), c("half", np.array(0.5, np.float32))],
              p + "g_half")
        f = n("Add", [n("MatMul", [g, w(p + "f2_w", ffn, hidden)], p + "f2_mm"),
                      w(p + "f2_b", hidden)], p + "f2_add")
        x = n("LayerNormalization", [n("Add", [f, x1], p + "res2"),
                                     w(p + "ln2_w", hidden, mean=1.0), w(p + "ln2_b", hidden)],
              p + "ln2", axis=-1, epsilon=1e-12)
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ins = [helper.make_tensor_value_info(k, TensorProto.INT64, ["batch", "seq"])
           for k in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                          ["batch", "seq", hidden])]
    g = helper.make_graph(nodes, "tiny_bert", ins, outs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_tiny_bert_fused_then_quantized(tmp_path):
    import onnx
    pytest.importorskip("onnxruntime.transformers.optimizer")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    src, fused, quant = (str(tmp_path / f) for f in ("bert.onnx", "fused.onnx", "quant.onnx"))
    onnx.save(_tiny_bert(), src)
    options = FusionOptions("bert")
    options.enable_shape_inference = False  # symbolic shape inference needs sympy; not needed here
    opt = optimize_model(src, model_type="bert", num_heads=4, hidden_size=32, opt_level=0,
                         optimization_options=options)
    ops = collections.Counter(n.op_type for n in opt.model.graph.node if n.domain == MS)
    assert ops["Attention"] == 2 and ops["EmbedLayerNormalization"] == 1, ops
    assert ops["SkipLayerNormalization"] == 4 and ops["BiasGelu"] + ops["FastGelu"] == 2, ops
    opt.save_model_to_file(fused)

    rng = np.random.default_rng(7)
    feeds = {"input_ids": rng.integers(0, 50, (2, 7)).astype(np.int64),
             "attention_mask": np.array([[1] * 7, [1] * 4 + [0] * 3], np.int64),
             "token_type_ids": np.array([[0] * 4 + [1] * 3] * 2, np.int64)}
    ref = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    want = ort.InferenceSession(fused, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = qrt.InferenceSession(fused, threads=1).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=FLOAT_TOL, atol=FLOAT_TOL * np.abs(want).max())
    np.testing.assert_allclose(got, ref, rtol=FLOAT_TOL, atol=FLOAT_TOL * np.abs(ref).max())

    for per_channel in (False, True):
        quantize_dynamic(fused, quant, per_channel=per_channel, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
        qops = collections.Counter(n.op_type for n in onnx.load(quant).graph.node)
        assert qops["QAttention"] == 2 and qops["QEmbedLayerNormalization"] == 1, qops
        assert qops["MatMulInteger"] + qops["DynamicQuantizeMatMul"] > 0, qops
        want_q = ort.InferenceSession(quant, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        for optimize in (True, False):
            got_q = qrt.InferenceSession(quant, threads=1, optimize=optimize).run(None, feeds)[0]
            assert _cos(got_q, want_q) >= QUANT_COS, (per_channel, optimize)
            assert _cos(got_q, ref) >= QUANT_COS, (per_channel, optimize)
