"""onnxruntime's attention-family contrib ops (domain com.microsoft), as its transformer optimizer
writes them into BERT/GPT-2 models and quantize_dynamic then quantizes them: Attention, QAttention,
EmbedLayerNormalization and QEmbedLayerNormalization. Semantics follow onnxruntime's CPU kernels
(checked against them by the tests):

- Attention: QKV = input x weights + bias (weights' columns are Q | K | V, each split into
  num_heads heads of consecutive columns), scores = scale * Q K^T + mask (+ attention_bias),
  softmax in float32 over the total (past + new) sequence, times V, heads concatenated again.
  mask_index is additive: a masked key gets `mask_filter_value` (-10000 by default) added, not -inf,
  so a row whose keys are all masked is the softmax of its plain scores, as in onnxruntime. The
  shapes: (B) key lengths, (2B) key ends then starts, (B, T) raw 0/1 mask (> 0 keeps), (B, S, T),
  and (B, 1)/(1, 1), a broadcast stand-in for no mask. `unidirectional` sets the keys after
  past + s of query s to float32's lowest (excluded outright), as onnxruntime does. past is
  (2, B, heads, P, head_size); present is past with this step's K and V appended.
- QAttention: the same with QKV = ((input - input_zp) x (weight - weight_zp)), an exact integer
  GEMM, scaled by input_scale * weight_scale (weight scale and zero point per tensor or per
  column) in float32, + bias.
- EmbedLayerNormalization: word[input_ids] + position[position_ids or s] (+ segment[segment_ids]),
  layer-normalized (a segment_embedding without segment_ids adds its row 0 everywhere, as in
  onnxruntime); mask_index counts the mask's ones per batch row (0 without a mask);
  embedding_sum is the sum before the norm. QEmbedLayerNormalization dequantizes its tables first.

What onnxruntime's CPU kernels refuse is refused too: the 4-D Megatron mask, do_rotary,
past_present_share_buffer with a past, past together with attention_bias. Every index (token,
segment, position) is checked against its table: out of range raises instead of reading garbage.
"""
from __future__ import annotations

import math

import numpy as np

from qrt.ops.ort_contrib import _layer_norm_last
from qrt.ops.quant import check_scale
from qrt.ops.registry import REQUIRED, register

MS = "com.microsoft"
_F32 = np.float32
_LOWEST = np.finfo(np.float32).min


def _shape(a) -> list:
    return list(np.shape(a))


def _need(x, op: str, what: str):
    if x is None:
        raise ValueError(f"{op}: input '{what}' is required")
    return x


def _check_int(a, op: str, what: str):
    if a is not None and np.asarray(a).dtype.kind not in "iu":
        raise ValueError(f"{op}: {what} must be an integer tensor, got {np.asarray(a).dtype}")


def _qkv_sizes(op: str, x, n_cols: int, bias, num_heads: int, qkv_hidden_sizes):
    """(q_hidden, v_hidden) from the weights' column count and qkv_hidden_sizes."""
    if x.ndim != 3:
        raise ValueError(f"{op}: input must be 3-D (batch, sequence, hidden), got shape "
                         f"{_shape(x)}")
    if num_heads <= 0:
        raise ValueError(f"{op}: num_heads must be positive, got {num_heads}")
    if qkv_hidden_sizes:
        sizes = [int(v) for v in qkv_hidden_sizes]
        if len(sizes) != 3:
            raise ValueError(f"{op}: qkv_hidden_sizes must have 3 elements, got {sizes}")
        if sizes[0] != sizes[1]:
            raise ValueError(f"{op}: qkv_hidden_sizes {sizes}: the Q and K sizes must be equal")
        if sum(sizes) != n_cols:
            raise ValueError(f"{op}: qkv_hidden_sizes {sizes} add up to {sum(sizes)}, but the "
                             f"weights have {n_cols} columns")
    else:
        if n_cols % 3:
            raise ValueError(f"{op}: the weights' {n_cols} columns are not 3 equal Q/K/V parts")
        sizes = [n_cols // 3] * 3
    if any(s <= 0 or s % num_heads for s in sizes):
        raise ValueError(f"{op}: the Q/K/V hidden sizes {sizes} must be positive multiples of "
                         f"num_heads={num_heads}")
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != n_cols):
        raise ValueError(f"{op}: bias has shape {_shape(bias)}; expected [{n_cols}] (the weights' "
                         "column count)")
    return sizes[0], sizes[2]


def _mask_bias(op: str, mask, batch: int, seq: int, past: int, filt: float, causal: bool):
    """The additive mask, float32 (batch, seq, total), or None when nothing is masked."""
    total = past + seq
    add = None
    if mask is not None:
        _check_int(mask, op, "mask_index")
        m = np.asarray(mask)
        if m.ndim == 1:
            if m.shape[0] not in (batch, 2 * batch):
                raise ValueError(f"{op}: a 1-D mask_index must have batch ({batch}) or 2*batch "
                                 f"({2 * batch}) elements, got shape {_shape(m)}")
            end = m[:batch].astype(np.int64)
            if (end < 0).any():
                raise ValueError(f"{op}: mask_index end positions must be non-negative, got "
                                 f"{end.tolist()}")
            pos = np.arange(total)
            off = pos[None, :] >= end[:, None]
            if m.shape[0] == 2 * batch:
                start = np.minimum(m[batch:].astype(np.int64), total)
                off |= pos[None, :] < start[:, None]
            keep = ~off[:, None, :]
        elif m.ndim == 2:
            if m.shape == (batch, total):
                keep = (m > 0)[:, None, :]
            elif m.shape[1] == 1 and m.shape[0] in (1, batch):  # broadcast stand-in: no mask
                keep = None
            else:
                raise ValueError(f"{op}: a 2-D mask_index must be [batch, total_sequence] = "
                                 f"[{batch}, {total}] (or [{batch} or 1, 1]), got {_shape(m)}")
        elif m.ndim == 3:
            if m.shape != (batch, seq, total):
                raise ValueError(f"{op}: a 3-D mask_index must be [batch, sequence, "
                                 f"total_sequence] = [{batch}, {seq}, {total}], got {_shape(m)}")
            keep = m > 0
        elif m.ndim == 4:
            raise ValueError(f"{op}: the 4-D (Megatron) mask_index {_shape(m)} is not supported "
                             "(onnxruntime's CPU kernel refuses it too)")
        else:
            raise ValueError(f"{op}: mask_index must be 1-D, 2-D or 3-D, got shape {_shape(m)}")
        if keep is not None:
            add = np.where(np.broadcast_to(keep, (batch, seq, total)), _F32(0), _F32(filt))
    if causal and seq > 1:
        future = np.arange(total)[None, :] > (past + np.arange(seq))[:, None]
        if add is None:
            add = np.zeros((batch, seq, total), _F32)
        add = np.where(future[None], _LOWEST, add).astype(_F32)
    return add


def _heads(t, batch: int, seq: int, num_heads: int):
    return t.reshape(batch, seq, num_heads, -1).transpose(0, 2, 1, 3)


def _attend(op: str, qkv, q_hidden: int, v_hidden: int, mask, past, attention_bias, *, num_heads,
            unidirectional, scale, mask_filter_value, want_present: bool):
    """Multi-head attention of a (B, S, q+k+v) float32 QKV; returns (output, present or None)."""
    batch, seq = qkv.shape[:2]
    q = _heads(qkv[..., :q_hidden], batch, seq, num_heads)
    k = _heads(qkv[..., q_hidden:2 * q_hidden], batch, seq, num_heads)
    v = _heads(qkv[..., 2 * q_hidden:], batch, seq, num_heads)
    head = q_hidden // num_heads
    n_past = 0
    if past is not None:
        if attention_bias is not None:
            raise ValueError(f"{op}: past and attention_bias together are not supported "
                             "(onnxruntime's CPU kernel refuses them too)")
        if q_hidden != v_hidden:
            raise ValueError(f"{op}: past needs equal K and V hidden sizes, got {q_hidden} and "
                             f"{v_hidden}")
        want = (2, batch, num_heads, head)
        if past.ndim != 5 or (past.shape[0], past.shape[1], past.shape[2], past.shape[4]) != want:
            raise ValueError(f"{op}: past has shape {_shape(past)}; expected [2, {batch}, "
                             f"{num_heads}, past_sequence, {head}]")
        if not want_present:
            raise ValueError(f"{op}: a past input needs the present output")
        n_past = past.shape[3]
        p = past.astype(_F32, copy=False)
        k = np.concatenate([p[0], k], axis=2)
        v = np.concatenate([p[1], v], axis=2)
    present = None
    if want_present:
        if q_hidden != v_hidden:
            raise ValueError(f"{op}: the present output needs equal K and V hidden sizes, got "
                             f"{q_hidden} and {v_hidden}")
        present = np.stack([k, v])
    total = n_past + seq
    add = _mask_bias(op, mask, batch, seq, n_past, mask_filter_value, bool(unidirectional))
    alpha = _F32(scale) if scale != 0 else _F32(1 / math.sqrt(head))
    with np.errstate(over="ignore"):
        scores = np.matmul(q, k.transpose(0, 1, 3, 2))
        scores *= alpha
        if add is not None:
            scores += add[:, None]
        if attention_bias is not None:
            ab = attention_bias
            if (ab.ndim != 4 or ab.shape[0] not in (1, batch) or ab.shape[1] not in (1, num_heads)
                    or ab.shape[2:] != (seq, total)):
                raise ValueError(f"{op}: attention_bias has shape {_shape(ab)}; expected "
                                 f"[{batch} or 1, {num_heads} or 1, {seq}, {total}]")
            scores += ab.astype(_F32, copy=False)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    out = np.matmul(scores, v)  # (B, N, S, Hv)
    out = out.transpose(0, 2, 1, 3).reshape(batch, seq, v_hidden)
    return out, present


def _common_checks(op: str, do_rotary, past_present_share_buffer, past):
    if do_rotary:
        raise ValueError(f"{op}: do_rotary=1 is not supported (onnxruntime's CPU kernel refuses "
                         "it too; the model should use MultiHeadAttention + RotaryEmbedding)")
    if past_present_share_buffer and past is not None:
        raise ValueError(f"{op}: past_present_share_buffer=1 with a past input is not supported "
                         "(onnxruntime's CPU kernel does not support it either)")


def _outputs(out, present, ctx):
    if ctx.n_outputs > 1:
        return out, present
    return out


_ATTN_ATTRS = {"num_heads": REQUIRED, "unidirectional": 0, "scale": 0.0,
               "mask_filter_value": -10000.0, "do_rotary": 0, "past_present_share_buffer": 0}


@register("Attention", since=1, domain=MS, ctx=True,
          attrs=dict(_ATTN_ATTRS, qkv_hidden_sizes=None, rotary_embedding_dim=0))
def attention(x, weights, bias=None, mask_index=None, past=None, attention_bias=None,
              past_sequence_length=None, *, num_heads, unidirectional, scale, mask_filter_value,
              do_rotary, past_present_share_buffer, qkv_hidden_sizes, rotary_embedding_dim, ctx):
    op = "Attention"
    _common_checks(op, do_rotary, past_present_share_buffer, past)
    if x.dtype.kind != "f":
        raise ValueError(f"{op}: input must be float, got {x.dtype}")
    if weights.ndim != 2 or x.ndim != 3 or weights.shape[0] != x.shape[2]:
        raise ValueError(f"{op}: weights have shape {_shape(weights)}; expected [{_shape(x)[-1]}, "
                         f"q+k+v hidden] for input {_shape(x)}")
    qh, vh = _qkv_sizes(op, x, weights.shape[1], bias, num_heads, qkv_hidden_sizes)
    qkv = np.matmul(x.astype(_F32, copy=False), weights.astype(_F32, copy=False))
    if bias is not None:
        qkv += bias.astype(_F32, copy=False)
    out, present = _attend(op, qkv, qh, vh, mask_index, past, attention_bias,
                           num_heads=num_heads, unidirectional=unidirectional, scale=scale,
                           mask_filter_value=mask_filter_value,
                           want_present=ctx.n_outputs > 1)
    out = out.astype(x.dtype, copy=False)
    return _outputs(out, None if present is None else present.astype(x.dtype, copy=False), ctx)


def _zero_point(z, dtype, n_cols: int | None, op: str, what: str):
    """A zero point as int64 (scalar, or per column when n_cols is given)."""
    if z is None:
        return np.zeros((), np.int64)
    z = np.asarray(z)
    if z.dtype != dtype:
        raise ValueError(f"{op}: {what} has type {z.dtype}; expected {dtype} (its tensor's type)")
    if z.size == 1:
        return z.reshape(()).astype(np.int64)
    if n_cols is not None and z.ndim == 1 and z.shape[0] == n_cols:
        return z.astype(np.int64)
    raise ValueError(f"{op}: {what} has shape {_shape(z)}; expected a scalar"
                     + (f" or [{n_cols}]" if n_cols is not None else ""))


@register("QAttention", since=1, domain=MS, ctx=True, attrs=dict(_ATTN_ATTRS))
def qattention(x, weight, bias, input_scale, weight_scale, mask_index=None, input_zero_point=None,
               weight_zero_point=None, past=None, *, num_heads, unidirectional, scale,
               mask_filter_value, do_rotary, past_present_share_buffer, ctx):
    op = "QAttention"
    _common_checks(op, do_rotary, past_present_share_buffer, past)
    for a, what in ((x, "input"), (weight, "weight")):
        if a.dtype not in (np.uint8, np.int8):
            raise ValueError(f"{op}: {what} must be uint8 or int8, got {a.dtype}")
    _need(bias, op, "bias")
    if weight.ndim != 2 or x.ndim != 3 or weight.shape[0] != x.shape[2]:
        raise ValueError(f"{op}: weight has shape {_shape(weight)}; expected [{_shape(x)[-1]}, "
                         f"3*hidden] for input {_shape(x)}")
    n_cols = weight.shape[1]
    qh, vh = _qkv_sizes(op, x, n_cols, bias, num_heads, None)
    sx = check_scale(input_scale, op, "input_scale")
    sw = check_scale(weight_scale, op, "weight_scale")
    if sx.size != 1:
        raise ValueError(f"{op}: input_scale must be a scalar, got shape {_shape(sx)}")
    if sw.size != 1 and sw.shape != (n_cols,):
        raise ValueError(f"{op}: weight_scale has shape {_shape(sw)}; expected a scalar or "
                         f"[{n_cols}]")
    zx = _zero_point(input_zero_point, x.dtype, None, op, "input_zero_point")
    zw = _zero_point(weight_zero_point, weight.dtype, n_cols, op, "weight_zero_point")
    # Exact integer GEMM: |acc| < 2^53 for any realistic width, so float64 holds it exactly.
    xa = (x.astype(np.int64) - zx).astype(np.float64)
    wa = (weight.astype(np.int64) - zw).astype(np.float64)
    acc = np.matmul(xa, wa)
    sc = (_F32(sx.reshape(-1)[0]) * sw.astype(_F32).reshape(-1)).astype(_F32)
    qkv = acc.astype(_F32) * (sc if sc.size > 1 else sc[0])
    qkv += bias.astype(_F32, copy=False)
    out, present = _attend(op, qkv, qh, vh, mask_index, past, None, num_heads=num_heads,
                           unidirectional=unidirectional, scale=scale,
                           mask_filter_value=mask_filter_value, want_present=ctx.n_outputs > 1)
    dt = bias.dtype if bias.dtype.kind == "f" else _F32
    out = out.astype(dt, copy=False)
    return _outputs(out, None if present is None else present.astype(dt, copy=False), ctx)


def _lookup(op: str, table, idx, what: str, table_name: str):
    n = table.shape[0]
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        at = np.argwhere(bad)[0]
        raise ValueError(f"{op}: {what} value {int(idx[tuple(at)])} at {at.tolist()} is out of "
                         f"range for {table_name} with {n} rows")
    return table[idx]


def _embed_ln(op, input_ids, segment_ids, word, pos, seg, gamma, beta, mask, position_ids,
              epsilon, ctx):
    _check_int(input_ids, op, "input_ids")
    if input_ids.ndim != 2:
        raise ValueError(f"{op}: input_ids must be 2-D (batch, sequence), got {_shape(input_ids)}")
    batch, seq = input_ids.shape
    for t, what in ((word, "word_embedding"), (pos, "position_embedding"),
                    (seg, "segment_embedding")):
        if t is not None and t.ndim != 2:
            raise ValueError(f"{op}: {what} must be 2-D (rows, hidden), got {_shape(t)}")
    hidden = word.shape[1]
    for t, what in ((pos, "position_embedding"), (seg, "segment_embedding")):
        if t is not None and t.shape[1] != hidden:
            raise ValueError(f"{op}: {what} has shape {_shape(t)}; its hidden size must be "
                             f"{hidden} (word_embedding {_shape(word)})")
    for t, what in ((gamma, "gamma"), (beta, "beta")):
        if t.shape != (hidden,):
            raise ValueError(f"{op}: {what} has shape {_shape(t)}; expected [{hidden}]")
    for t, what in ((segment_ids, "segment_ids"), (mask, "mask")):
        if t is not None:
            _check_int(t, op, what)
            if t.shape != input_ids.shape:
                raise ValueError(f"{op}: {what} has shape {_shape(t)}; expected "
                                 f"{_shape(input_ids)} (input_ids)")
    if segment_ids is not None and seg is None:
        raise ValueError(f"{op}: segment_ids {_shape(segment_ids)} given without a "
                         "segment_embedding")
    if seg is not None and segment_ids is None:  # onnxruntime: every token is segment 0
        segment_ids = np.zeros(input_ids.shape, np.int64)
    if position_ids is not None:
        _check_int(position_ids, op, "position_ids")
        if position_ids.ndim != 2 or position_ids.shape[1] != seq or \
                position_ids.shape[0] not in (1, batch):
            raise ValueError(f"{op}: position_ids has shape {_shape(position_ids)}; expected "
                             f"[{batch} or 1, {seq}]")
        pids = np.broadcast_to(position_ids, (batch, seq))
    else:
        pids = np.broadcast_to(np.arange(seq), (batch, seq))
    s = _lookup(op, word, input_ids, "input_ids", "word_embedding").astype(_F32, copy=False)
    s = s + _lookup(op, pos, pids, "position id", "position_embedding").astype(_F32, copy=False)
    if seg is not None:
        s = s + _lookup(op, seg, segment_ids, "segment_ids", "segment_embedding").astype(_F32)
    y = _layer_norm_last(s, gamma.astype(_F32, copy=False), beta.astype(_F32, copy=False),
                         epsilon)
    if mask is None:
        mask_index = np.zeros(batch, np.int32)
    else:
        mask_index = (mask == 1).sum(axis=1).astype(np.int32)
    return y, mask_index, s


def _outs3(y, mask_index, s, ctx):
    return (y, mask_index, s)[:ctx.n_outputs] if ctx.n_outputs > 1 else y


@register("EmbedLayerNormalization", since=1, domain=MS, ctx=True,
          attrs={"epsilon": 1e-12, "mask_index_type": 1})
def embed_layer_norm(input_ids, segment_ids=None, word_embedding=None, position_embedding=None,
                     segment_embedding=None, gamma=None, beta=None, mask=None, position_ids=None,
                     *, epsilon, mask_index_type, ctx):
    op = "EmbedLayerNormalization"
    for a, what in ((word_embedding, "word_embedding"), (position_embedding, "position_embedding"),
                    (gamma, "gamma"), (beta, "beta")):
        _need(a, op, what)
    y, mi, s = _embed_ln(op, input_ids, segment_ids, word_embedding, position_embedding,
                         segment_embedding, gamma, beta, mask, position_ids, epsilon, ctx)
    dt = word_embedding.dtype if word_embedding.dtype.kind == "f" else _F32
    return _outs3(y.astype(dt, copy=False), mi, s.astype(dt, copy=False), ctx)


def _dequantize_table(op, q, scale, zp, what):
    if q.dtype not in (np.uint8, np.int8):
        raise ValueError(f"{op}: {what} must be uint8 or int8, got {q.dtype}")
    sc = check_scale(_need(scale, op, f"{what} scale"), op, f"{what}_scale")
    if sc.size != 1:
        raise ValueError(f"{op}: {what}_scale must be a scalar, got shape {_shape(sc)}")
    z = _zero_point(_need(zp, op, f"{what} zero point"), q.dtype, None, op, f"{what}_zero_point")
    return (q.astype(np.int64) - z).astype(_F32) * _F32(sc.reshape(-1)[0])


@register("QEmbedLayerNormalization", since=1, domain=MS, ctx=True, attrs={"epsilon": 1e-12})
def qembed_layer_norm(input_ids, segment_ids, word_q, pos_q, seg_q, gamma_q, beta_q, mask,
                      word_scale, pos_scale, seg_scale, gamma_scale, beta_scale, word_zp, pos_zp,
                      seg_zp=None, gamma_zp=None, beta_zp=None, *, epsilon, ctx):
    op = "QEmbedLayerNormalization"
    word = _dequantize_table(op, _need(word_q, op, "word_embedding_quant"), word_scale, word_zp,
                             "word_embedding")
    pos = _dequantize_table(op, _need(pos_q, op, "position_embedding_quant"), pos_scale, pos_zp,
                            "position_embedding")
    seg = None if seg_q is None else _dequantize_table(op, seg_q, seg_scale, seg_zp,
                                                       "segment_embedding")
    gamma = _dequantize_table(op, _need(gamma_q, op, "gamma_quant"), gamma_scale, gamma_zp,
                              "gamma")
    beta = _dequantize_table(op, _need(beta_q, op, "beta_quant"), beta_scale, beta_zp, "beta")
    y, mi, s = _embed_ln(op, input_ids, segment_ids, word, pos, seg, gamma, beta, mask, None,
                         epsilon, ctx)
    return _outs3(y, mi, s, ctx)
