"""qrt's internal fused integer ops (domain 'qrt'), produced by the passes (qrt/passes/).

Every op here takes integer activations (uint8/int8) as they flow through the graph and constant
integer weights, and runs the integer kernels of `qrt.kernels.qlinear`. Quantization parameters that
are constant live in attributes; activation parameters that are only known per call (dynamic
quantization) arrive as inputs.

Numerics (DESIGN.md, numerics contract):
- products of (x - zx)(w - zw) accumulate exactly in int32 (K above `ref.max_exact_k()` is split
  into chunks whose int32 sums are added in int64, so nothing overflows);
- bias is int32 at scale sx*sw[n];
- integer output: saturate(round_half_even(float32(acc + bias) * float32(sx*sw[n]/sy)) + zy),
  clamped to [lo, hi] (fused ReLU/Clip in the quantized domain);
- float output: float32(acc + bias) * float32(sx*sw[n]) (+ float bias for dynamic quantization),
  clamped to [lo_f, hi_f].
- QAdd/QMul: float32 rescale of the integer operands, then round half even; at most 1 step away from
  DequantizeLinear -> float Add/Mul -> QuantizeLinear (the two float32 roundings of that path against
  the one of this). QLut is exact (the table is the float chain evaluated on every code).
"""
from __future__ import annotations

import math

import numpy as np

from qrt.kernels import qlinear as _ql
from qrt.kernels import ref as _ref
from qrt.ops.quant import _conv_geometry
from qrt.ops.registry import register

_EPI_ATTRS = {
    "x_scale": None, "x_zp": 0, "w_scale": None, "out_dtype": "uint8", "multiplier": None,
    "scale": None, "y_zp": 0, "lo": None, "hi": None, "lo_f": None, "hi_f": None,
    "kernel": "", "state": None,
    # A 8-bit output may go through a lookup table before it is stored (a following qrt.QLut
    # folded in by passes/lut_regions.py): (256,) or (M, 256) per output channel, indexed by
    # code - post_lo.
    "post_table": None, "post_lo": 0,
}


def _np_dtype(name):
    return np.dtype(name)


def _state(state):
    return state if state is not None else {}


def _zp_scalar(zp) -> int:
    return int(np.asarray(zp).reshape(-1)[0]) if zp is not None else 0


def _epilogue_int64(acc, ep: _ql.Epilogue):
    """The epilogue for accumulators that were summed in int64 (K split into chunks)."""
    if ep.bias is not None:
        acc = acc + ep.bias.astype(np.int64)
    if np.dtype(ep.out_dtype) == np.float32:
        y = acc.astype(np.float32) * np.asarray(ep.scale, np.float32)
        if ep.lo_f is not None or ep.hi_f is not None:
            y = np.clip(y, ep.lo_f, ep.hi_f)
        return y
    if np.dtype(ep.out_dtype) == np.int32:
        return np.clip(acc, -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
    y = np.rint(acc.astype(np.float32) * np.asarray(ep.multiplier, np.float32))
    y = y + np.float32(ep.out_zero_point)
    qlo, qhi = _ref.qrange(ep.out_dtype)
    lo = qlo if ep.lo is None else max(ep.lo, qlo)
    hi = qhi if ep.hi is None else min(ep.hi, qhi)
    return np.clip(y, lo, hi).astype(ep.out_dtype)


def linear(a, a_zp: int, w2d, w_zp, ep: _ql.Epilogue, state: dict, key, threads: int = 1):
    """(M, K) integer activations x (N, K) constant weights through the packed kernel, with the
    weight packed once (cached in `state`). K beyond `max_exact_k` is split into chunks."""
    k = w2d.shape[1]
    kmax = _ref.max_exact_k()
    if k <= kmax:
        pw = state.get(key)
        if pw is None:
            pw = state[key] = _ql.pack_weight(w2d, w_zp)
        if np.dtype(ep.out_dtype) == np.int32:
            acc = _ql.qgemm_i32(a, a_zp, pw, threads)
            if ep.bias is not None:
                acc = (acc.astype(np.int64) + ep.bias).clip(-(2 ** 31), 2 ** 31 - 1).astype(np.int32)
            return acc
        return _ql.qlinear(a, a_zp, pw, ep, threads)
    pws = state.get((key, "split"))
    if pws is None:
        pws = state[(key, "split")] = [
            (s, min(s + kmax, k), _ql.pack_weight(np.ascontiguousarray(w2d[:, s:s + kmax]), w_zp))
            for s in range(0, k, kmax)]
    acc = None
    for s, e, pw in pws:
        part = _ql.qgemm_i32(np.ascontiguousarray(a[:, s:e]), a_zp, pw, threads).astype(np.int64)
        acc = part if acc is None else acc + part
    return _epilogue_int64(acc, ep)


def make_epilogue(n, out_dtype, bias, x_scale, x_zp_unused, w_scale, multiplier, scale, y_zp, lo, hi,
                  lo_f, hi_f, dyn_scale=None):
    dt = _np_dtype(out_dtype)
    if dt == np.float32:
        if dyn_scale is not None:
            sc = (np.float32(dyn_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
        else:
            sc = np.asarray(scale, np.float32)
        return _ql.Epilogue(np.float32, bias=bias, scale=np.broadcast_to(sc, (n,)), lo_f=lo_f,
                            hi_f=hi_f)
    if dt == np.int32:
        return _ql.Epilogue(np.int32, bias=bias)
    if dyn_scale is not None:
        raise ValueError("dynamic activation quantization needs a float output")
    return _ql.Epilogue(dt.type, bias=bias, multiplier=np.broadcast_to(
        np.asarray(multiplier, np.float32), (n,)), out_zero_point=int(y_zp), lo=lo, hi=hi)


@register("QGemm", domain="qrt", since=1, ctx=True, attrs=dict(_EPI_ATTRS))
def qgemm(x, w, w_zp, bias=None, x_scale_in=None, x_zp_in=None, bias_f=None, *, x_scale, x_zp,
          w_scale, out_dtype, multiplier, scale, y_zp, lo, hi, lo_f, hi_f, kernel, state, ctx,
          post_table=None, post_lo=0):
    """y[..., N] = x[..., K] (integer, per-tensor params) x w (N, K) integer constant."""
    if state is None:
        state = {}
    fast = state.get(("fast", x.shape, x.dtype))
    if fast is None and x_scale_in is None:
        fast = state[("fast", x.shape, x.dtype)] = _prepare_fast_gemm(
            state, x, w, w_zp, bias, x_scale, x_zp, w_scale, out_dtype, multiplier, scale, y_zp,
            lo, hi, lo_f, hi_f, bias_f, post_table, post_lo, ctx)
    if fast:
        return _run_fast_gemm(fast, x)
    n, k = w.shape
    lead = x.shape[:-1]
    a = np.ascontiguousarray(x.reshape(-1, k))
    dyn = x_scale_in is not None
    if dyn:
        a_zp = _zp_scalar(x_zp_in)
        ep = make_epilogue(n, out_dtype, bias, x_scale, None, w_scale, multiplier, scale, y_zp, lo,
                           hi, *((None, None) if bias_f is not None else (lo_f, hi_f)),
                           dyn_scale=np.asarray(x_scale_in).reshape(-1)[0])
    else:
        a_zp = int(x_zp)
        ep = state.get("ep")
        if ep is None:  # constant: built once per node
            ep = state["ep"] = make_epilogue(
                n, out_dtype, bias, x_scale, None, w_scale, multiplier, scale, y_zp, lo, hi,
                *((None, None) if bias_f is not None else (lo_f, hi_f)))
    y = linear(a, a_zp, w, w_zp, ep, state, "w", _threads_for(a.shape[0] * n * k, ctx.threads))
    if bias_f is not None:
        y = y + bias_f
        if lo_f is not None or hi_f is not None:
            y = np.clip(y, lo_f, hi_f)
    if post_table is not None:
        y = _post_table(y, post_table, post_lo, axis=-1)
    return y.reshape(lead + (n,))


_D2U, _D2F, _D2I = (np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.float32),
                    np.zeros((1, 1), np.int32))
_U8 = np.dtype(np.uint8)


def _as_u8(x, shape):
    """x as a C-contiguous uint8 view of `shape` (no new view objects when it already is one:
    each reshape/view costs ~0.3 us, a tenth of a small layer's call)."""
    if x.dtype == _U8 and x.shape == shape and x.flags.c_contiguous:
        return x
    return np.ascontiguousarray(x).reshape(shape).view(np.uint8)


def _u8_result(out, out_dt, out_shape):
    if out_dt == _U8 and out.shape == out_shape:
        return out
    return out.view(out_dt).reshape(out_shape)


def _run_fast_gemm(fast, x):
    fn, head, shape2, out2, out_shape, out_dt, slot = fast
    a8 = _as_u8(x, shape2)
    if slot == 0:
        out = np.empty(out2, np.uint8)
        fn(a8, *head, out, _D2F, _D2I)
        return _u8_result(out, out_dt, out_shape)
    out = np.empty(out2, np.float32)
    fn(a8, *head, _D2U, out, _D2I)
    return out.reshape(out_shape)


def _bind_fused(op, run_fast):
    """A plan step for a fused integer op (QGemm/QConv) with its attributes bound once: the call
    then costs a dict lookup plus the kernel when the per-input-shape fast call is ready (the
    plan's keyword passing of ~25 attributes alone took ~1.3 us a call)."""
    def bind(**kw):
        if kw.get("state") is None:
            kw["state"] = {}
        state = kw["state"]

        def step(x, w, w_zp, bias=None, x_scale_in=None, x_zp_in=None, bias_f=None):
            fast = state.get(("fast", x.shape, x.dtype))
            if fast and x_scale_in is None:
                return run_fast(fast, x)
            return op(x, w, w_zp, bias, x_scale_in, x_zp_in, bias_f, **kw)
        step.__wrapped__ = op
        return step
    op.bind_step = bind
    return op


def _table_args(post_table, post_lo, n):
    """(per-channel table as (n, 256) raw bytes, index flip, output dtype or None) of a folded
    QLut for the one-call kernels; an empty table when there is none."""
    if post_table is None:
        return _NO_TABLE, np.uint8(0), None
    t = np.asarray(post_table)
    table = np.ascontiguousarray(np.broadcast_to(t.reshape(-1, 256), (n, 256))).view(np.uint8)
    return table, np.uint8(128 if post_lo else 0), t.dtype


def _entry_for(fn, x_ndim, head, slot):
    """compiled_entry of a one-call kernel fn(x8, *head, out_q, out_f, out_i): x8 an x_ndim uint8
    array, outputs 2-D (linear) or 3-D (conv); slot 0: the 8-bit output is written, 1: float32."""
    od = 2 if x_ndim == 2 else 3
    dummies = (_D2U, _D2F, _D2I) if od == 2 else (_D3U, _D3F, _D3I)
    outs = tuple(np.empty((1,) * od, d.dtype) if i == slot else d for i, d in enumerate(dummies))
    from qrt.kernels import cpu as _cpu
    return _cpu.compiled_entry(fn, (np.empty((1,) * x_ndim, np.uint8),) + head + outs)


def _prepare_fast_gemm(state, x, w, w_zp, bias, x_scale, x_zp, w_scale, out_dtype, multiplier,
                       scale, y_zp, lo, hi, lo_f, hi_f, bias_f, post_table, post_lo, ctx):
    """QGemm's per-input-shape call, like `_prepare_fast_conv`: one Numba call (pack A, GEMM,
    epilogue, table) on the avx2 or vnni path. False when the general route is needed."""
    from qrt.kernels import cpu as _cpu
    from qrt.kernels.cpu import common
    n, k = w.shape
    dt = np.dtype(out_dtype)
    if (bias_f is not None or x.dtype not in _INT8 or x.ndim < 1 or x.shape[-1] != k
            or k > _ref.max_exact_k() // 4 * 4 or _cpu.resolve(None) not in ("avx2", "vnni")
            or dt not in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.float32))
            or (post_table is not None and dt == np.dtype(np.float32))):
        return False
    pw = state.get("w")
    if pw is None:
        pw = state["w"] = _ql.pack_weight(w, w_zp)
    path = pw.kernel
    if path not in ("avx2", "vnni") or "b" not in pw.data:
        return False
    ep = state.get("ep")
    if ep is None:
        ep = state["ep"] = make_epilogue(n, out_dtype, bias, x_scale, None, w_scale, multiplier,
                                         scale, y_zp, lo, hi, lo_f, hi_f)
    mode, bs, mult, zpf, lof, hif = _ql._ep_args(ep, n)
    m = math.prod(x.shape[:-1])
    b = pw.data["b"]
    threads = _threads_for(m * n * k, ctx.threads)
    mb, npb, kc = _ql._blocking(path, m, b.shape[0], threads)
    table, flip, tdt = _table_args(post_table, post_lo, n)
    out_dt = dt if tdt is None else tdt
    kp = np.int64(common.round_up(max(k, 1), common.KALIGN))
    mode = _ql.register_epilogue_mode(mode, bs, k)
    tail = (np.int64(n), np.int64(mb), np.int64(npb), np.int64(kc), np.int64(mode), bs, mult, zpf,
            lof, hif, table, flip, threads > 1)
    if path == "vnni":
        fn, head = _vnni_head("linear_2d_fn", pw, x.dtype, x_zp, kp, tail)
    else:
        fn, head = _cpu.backend("avx2").linear_2d, (x.dtype == np.int8, np.int64(int(x_zp)), kp,
                                                    b) + tail
    slot = 1 if dt == np.dtype(np.float32) else 0
    return (_entry_for(fn, 2, head, slot), head, (m, k), (m, n), x.shape[:-1] + (n,), out_dt, slot)


def _vnni_head(which, pw, x_dtype, x_zp, first, tail):
    """(one-call vnni kernel, its leading arguments): the activation zero point shifted like the
    activations (s8 + 128) and the per-column exactness correction for it, computed once."""
    from qrt.kernels import cpu as _cpu
    v = _cpu.backend("vnni")
    signed = x_dtype == np.int8
    za = int(x_zp) + (128 if signed else 0)
    colcorr = v.column_correction(pw.data["colsum"], pw.data["zw"], za, pw.k)
    if which == "conv_nchw_fn":
        first = first.copy()
        first[0] = za
    return getattr(v, which)(), (signed, first, pw.data["b"], pw.data["zw"], colcorr) + tail


def _post_table(y, table, lo, axis):
    """The folded QLut of a fused op's 8-bit output; per-channel tables index `axis`."""
    t = np.asarray(table)
    if t.ndim == 1 or axis == 1:  # qlut's per-channel tables index axis 1
        return qlut(y, table=t, in_lo=lo, kernel="")
    yi = y.astype(np.int32) - lo
    shape = [1] * y.ndim
    shape[axis] = t.shape[0]
    return t[np.arange(t.shape[0]).reshape(shape), yi]


def _resolve_pads(x_shape, kernel, strides, dilations, pads, auto_pad):
    nd = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * nd)
        for i in range(nd):
            size = x_shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + nd] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    return list(pads) if pads else [0] * (2 * nd)


def _depthwise_i32(x, x_zp, w, w_zp, strides, pads, dilations):
    """Exact int32 depthwise accumulation (one input channel per group, multiplier 1):
    returns (N * out_spatial, C) int32 and the output spatial shape."""
    nd = w.ndim - 2
    n, c = x.shape[:2]
    kernel = w.shape[2:]
    pad_width = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)]
    xp = np.pad(x.astype(np.int32) - np.int32(x_zp), pad_width)
    out_sp = tuple((xp.shape[2 + i] - (dilations[i] * (kernel[i] - 1) + 1)) // strides[i] + 1
                   for i in range(nd))
    wz = w.astype(np.int32) - np.asarray(w_zp, np.int32).reshape(-1)[:, None].reshape(
        (-1,) + (1,) * (w.ndim - 1))
    acc = np.zeros((n, c) + out_sp, np.int32)
    for kidx in np.ndindex(*kernel):
        sl = tuple(slice(kidx[i] * dilations[i], kidx[i] * dilations[i]
                         + strides[i] * (out_sp[i] - 1) + 1, strides[i]) for i in range(nd))
        tap = wz[(slice(None), 0) + kidx].reshape((1, c) + (1,) * nd)
        acc += xp[(slice(None), slice(None)) + sl] * tap
    perm = (0,) + tuple(range(2, 2 + nd)) + (1,)
    return np.ascontiguousarray(acc.transpose(perm)).reshape(-1, c), out_sp


_CONV_ATTRS = dict(_EPI_ATTRS, kernel_shape=None, strides=None, pads=None, dilations=None, group=1,
                   auto_pad="NOTSET")


def _threads_for(macs: int, threads: int) -> int:
    """Parallel kernels only for work that pays for the fork/join: below `_PAR_MIN_MACS` the call
    runs on one thread. Each parallel launch costs microseconds on idle cores, and on shared cores
    (CI, 2 cores) a launch waits for a descheduled worker: PP-OCR cls at batch 8 took 3.5x longer
    with 2 threads than with 1 when every conv above 2M MACs went parallel. Results never depend
    on the thread count."""
    return threads if threads > 1 and macs >= _PAR_MIN_MACS else 1


_PAR_MIN_MACS = 1 << 24


def _conv_prepared(state, x_shape, w, w_zp, group, strides, pads, dilations, auto_pad):
    """Per input shape: (strides, pads, dilations, out_sp, macs) and the packed conv weight
    (once per node). None when the fast kernels cannot take it (K beyond max_exact_k)."""
    key = ("geom", x_shape)
    g = state.get(key)
    if g is not None:
        return g
    nd = w.ndim - 2
    kshape = tuple(w.shape[2:])
    st = tuple(strides or (1,) * nd)
    dl = tuple(dilations or (1,) * nd)
    pd = tuple(_resolve_pads(x_shape, kshape, st, dl, pads, auto_pad))
    out_sp = tuple((x_shape[2 + i] + pd[i] + pd[i + nd] - (dl[i] * (kshape[i] - 1) + 1)) // st[i] + 1
                   for i in range(nd))
    m = w.shape[0]
    pcw = state.get("pcw")
    if pcw is None and "pcw" not in state:
        k = int(np.prod(w.shape[1:]))
        pcw = None
        if k <= _ref.max_exact_k() // 4 * 4 and hasattr(_ql, "pack_conv_weight"):
            wzp = np.broadcast_to(np.asarray(w_zp, np.int32).reshape(-1), (m,))
            pcw = _ql.pack_conv_weight(w, wzp, group)
        state["pcw"] = pcw
    macs = x_shape[0] * m * int(np.prod(out_sp)) * int(np.prod(w.shape[1:]))
    pointwise = (pcw is not None and group == 1 and all(v == 1 for v in kshape + st)
                 and not any(pd))
    g = state[key] = (st, pd, dl, out_sp, macs, pcw, pointwise)
    return g


@register("QConv", domain="qrt", since=1, ctx=True, attrs=_CONV_ATTRS)
def qconv(x, w, w_zp, bias=None, x_scale_in=None, x_zp_in=None, bias_f=None, *, x_scale, x_zp,
          w_scale, out_dtype, multiplier, scale, y_zp, lo, hi, lo_f, hi_f, kernel, state,
          kernel_shape, strides, pads, dilations, group, auto_pad, post_table, post_lo, ctx):
    """Integer Conv: x (N, C, *spatial) u8/s8, w (M, C/group, *k) s8/u8 constant."""
    if state is None:
        state = {}
    if ("fits", x.shape) not in state:  # once per input shape: the reference conv's checks
        _conv_geometry(x.shape, w.shape, auto_pad, dilations, group, kernel_shape, pads, strides,
                       "Conv")
        state[("fits", x.shape)] = True
    fast = state.get(("fast", x.shape, x.dtype))
    if fast is None and x_scale_in is None:
        fast = state[("fast", x.shape, x.dtype)] = _prepare_fast_conv(
            state, x, w, w_zp, bias, x_scale, x_zp, w_scale, out_dtype, multiplier, scale, y_zp,
            lo, hi, lo_f, hi_f, strides, pads, dilations, group, auto_pad, bias_f, post_table,
            post_lo, ctx)
    if fast:
        return _run_fast_conv(fast, x)
    y = _qconv_any(x, w, w_zp, bias, x_scale_in, x_zp_in, bias_f, x_scale, x_zp, w_scale, out_dtype,
                   multiplier, scale, y_zp, lo, hi, lo_f, hi_f, state, strides, pads, dilations,
                   group, auto_pad, ctx)
    if post_table is not None:
        y = _post_table(y, post_table, post_lo, axis=1)
    return y


_D3 = {np.dtype(np.uint8): np.zeros((1, 1, 1), np.uint8),
       np.dtype(np.float32): np.zeros((1, 1, 1), np.float32),
       np.dtype(np.int32): np.zeros((1, 1, 1), np.int32)}
_D3U, _D3F, _D3I = (_D3[np.dtype(t)] for t in (np.uint8, np.float32, np.int32))
_NO_TABLE = np.zeros((0, 256), np.uint8)


def _rows_pay(m: int, p: int, k: int) -> bool:
    """Whether the channels-as-rows GEMM (6-channel x 16-position tiles, whole-row stores) beats
    positions-as-rows (6-position x 16-channel tiles, byte stores) for m channels, p positions,
    K = k: it does (1.15-1.75x on ResNet's 3x3 and 1x1 shapes) unless there are few positions,
    its tiles are emptier and K is long enough for the multiply-adds to outweigh the stores
    (PP-OCR rec's 1x3 convs over 20 positions, K = 2880: 2.9x slower as rows)."""
    def fill(rows, cols):
        return rows / (-(-rows // 6) * 6) * cols / (-(-cols // 16) * 16)
    return p >= 64 or k <= 256 or fill(m, p) >= fill(p, m)


def _prepare_fast_conv(state, x, w, w_zp, bias, x_scale, x_zp, w_scale, out_dtype, multiplier,
                       scale, y_zp, lo, hi, lo_f, hi_f, strides, pads, dilations, group, auto_pad,
                       bias_f, post_table, post_lo, ctx):
    """Everything a group-1 conv on the avx2 or vnni path needs per call, computed once per input
    shape: the call is then one Numba function (im2col, GEMM, epilogue into NCHW, table). False
    when this conv takes the general route."""
    from qrt.kernels import cpu as _cpu
    from qrt.kernels.cpu import common
    if bias_f is not None or x.dtype not in _INT8 or w.ndim not in (3, 4):
        return False
    st, pd, dl, out_sp, macs, pcw, pointwise = _conv_prepared(state, x.shape, w, w_zp, group,
                                                              strides, pads, dilations, auto_pad)
    if pcw is not None and pcw.depthwise:
        return _prepare_fast_depthwise(state, x, w, bias, x_scale, x_zp, w_scale, out_dtype,
                                       multiplier, scale, y_zp, lo, hi, lo_f, hi_f, st, pd, dl,
                                       pcw, macs, post_table, post_lo, ctx)
    if group != 1 or pcw is None or pcw.kernel not in ("avx2", "vnni"):
        return False
    dt = np.dtype(out_dtype)
    if dt not in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.float32)):
        return False
    m = w.shape[0]
    ep = state.get("ep")
    if ep is None:
        ep = state["ep"] = make_epilogue(m, out_dtype, bias, x_scale, None, w_scale, multiplier,
                                         scale, y_zp, lo, hi, lo_f, hi_f)
    mode, bs, mult, zpf, lof, hif = _ql._ep_args(ep, m)
    pw = pcw.groups[0]
    b = pw.data["b"]
    nd = w.ndim - 2
    if nd == 1:
        k2, s2, d2 = (1,) + tuple(w.shape[2:]), (1,) + tuple(st), (1,) + tuple(dl)
        p2 = (0, pd[0], 0, pd[1])
        o2 = (1,) + tuple(out_sp)
    else:
        k2, s2, d2, p2, o2 = tuple(w.shape[2:]), tuple(st), tuple(dl), tuple(pd), tuple(out_sp)
    n, c = x.shape[:2]
    p = o2[0] * o2[1]
    threads = _threads_for(macs, ctx.threads)
    # channels as rows (avx2, 8-bit out): each output row is NCHW-contiguous, so whole panels
    # store as vectors; positions as rows needs a transposed byte-by-byte store. Below one panel
    # of positions (SE-block 1x1 maps) the positions-as-rows form wastes less of the tile.
    mode = _ql.register_epilogue_mode(mode, bs, pw.k)
    rows = (pcw.kernel == "avx2" and mode == 1 and p >= common.NR
            and _cpu.backend("avx2").FUSED_REQUANT and _rows_pay(m, p, pw.k))
    if rows:
        b = state.get("w_rows")
        if b is None:
            zw = np.broadcast_to(np.asarray(w_zp).reshape(-1), (m,))
            b = state["w_rows"] = common.pack_b_i16(np.asarray(w).reshape(m, -1), zw,
                                                    _cpu.backend("avx2").MR)
        mb, npb, kc = _ql._blocking(pcw.kernel, m, -(-p // common.NR), threads)
    else:
        mb, npb, kc = _ql._blocking(pcw.kernel, p, b.shape[0], threads)
    geo = np.array([int(x_zp), k2[0], k2[1], s2[0], s2[1], p2[0], p2[1], d2[0], d2[1], o2[0], o2[1],
                    common.round_up(max(pw.k, 1), common.KALIGN), int(pointwise), int(rows)],
                   np.int64)
    if post_table is not None and dt == np.dtype(np.float32):
        return False
    table, flip, tdt = _table_args(post_table, post_lo, m)
    x4shape = (n, c) + ((1,) + tuple(x.shape[2:]) if nd == 1 else tuple(x.shape[2:]))
    out_dt = dt if tdt is None else tdt
    slot = 0 if dt != np.dtype(np.float32) else 1
    tail = (np.int64(m), np.int64(mb), np.int64(npb), np.int64(kc), np.int64(mode), bs, mult, zpf,
            lof, hif, table, flip, threads > 1)
    if pcw.kernel == "vnni":
        fn, head = _vnni_head("conv_nchw_fn", pw, x.dtype, x_zp, geo, tail)
    else:
        av = _cpu.backend("avx2")
        fn, head = (av.conv_nchw_rows if rows else av.conv_nchw), (x.dtype == np.int8, geo, b) + tail
    return (_entry_for(fn, 4, head, slot), head, x4shape, (n, m, p), (n, m) + tuple(out_sp), out_dt,
            slot)


_bind_fused(qgemm, _run_fast_gemm)


def _prepare_fast_depthwise(state, x, w, bias, x_scale, x_zp, w_scale, out_dtype, multiplier,
                            scale, y_zp, lo, hi, lo_f, hi_f, st, pd, dl, pcw, macs, post_table,
                            post_lo, ctx):
    """`_prepare_fast_conv` for a depthwise conv on an AVX2 CPU: one Numba call (the kernel over
    every plane, then the folded table), in the same calling form as the group-1 conv (whose
    Python route took about as long as a small layer's arithmetic). False for the general route."""
    from qrt.kernels import cpu as _cpu
    from qrt.kernels.cpu import depthwise as dwk
    dt = np.dtype(out_dtype)
    if (pcw.kernel not in ("avx2", "vnni") or _cpu.missing_features("avx2")
            or dt not in (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.float32))
            or (post_table is not None and dt == np.dtype(np.float32))):
        return False
    m = w.shape[0]
    ep = state.get("ep")
    if ep is None:
        ep = state["ep"] = make_epilogue(m, out_dtype, bias, x_scale, None, w_scale, multiplier,
                                         scale, y_zp, lo, hi, lo_f, hi_f)
    g, e, _ = _ql.depthwise_prepared(x, int(x_zp), pcw, ep, st, pd, dl)
    if g is False or g[0] is not dwk.depthwise_avx2:
        return False
    _, fn_par, wk, geo, shape4, shape_k, shape_out, _, _, _ = g
    _, bs, mult, epf, _ = e
    n, c = shape_k[:2]
    threads = _threads_for(macs, ctx.threads)
    nchunks = min(n * c, threads) if threads > 1 and fn_par is not None else 1
    table, flip, tdt = _table_args(post_table, post_lo, m)
    out_dt = dt if tdt is None else tdt
    head = (wk, geo, bs, mult, epf, table, flip, np.int64(nchunks))
    slot = 1 if dt == np.dtype(np.float32) else 0
    fn = _entry_for(dwk.depthwise_avx2_nchw, 4, head, slot)
    x4 = shape4 if shape4 is not None else x.shape
    out_shape = shape_out if shape_out is not None else shape_k
    return (fn, head, x4, (n, c, shape_k[2] * shape_k[3]), out_shape, out_dt, slot)


def _run_fast_conv(fast, x):
    fn, head, x4shape, out3, out_shape, out_dt, slot = fast
    x8 = _as_u8(x, x4shape)
    if slot == 0:
        out = np.empty(out3, np.uint8)
        fn(x8, *head, out, _D3F, _D3I)
        return _u8_result(out, out_dt, out_shape)
    out = np.empty(out3, np.float32)
    fn(x8, *head, _D3U, out, _D3I)
    return out.reshape(out_shape)


_bind_fused(qconv, _run_fast_conv)


def _qconv_any(x, w, w_zp, bias, x_scale_in, x_zp_in, bias_f, x_scale, x_zp, w_scale, out_dtype,
               multiplier, scale, y_zp, lo, hi, lo_f, hi_f, state, strides, pads, dilations, group,
               auto_pad, ctx):
    st, pd, dl, out_sp, macs, pcw, pointwise = _conv_prepared(state, x.shape, w, w_zp, group,
                                                              strides, pads, dilations, auto_pad)
    if pcw is None:
        return _qconv_generic(x, w, w_zp, bias, x_scale_in, x_zp_in, bias_f, x_scale, x_zp, w_scale,
                              out_dtype, multiplier, scale, y_zp, lo, hi, lo_f, hi_f, state,
                              strides, pads, dilations, group, auto_pad, ctx)
    m = w.shape[0]
    nd = w.ndim - 2
    dyn = x_scale_in is not None
    threads = _threads_for(macs, ctx.threads)
    if dyn:
        a_zp = _zp_scalar(x_zp_in)
        ep = make_epilogue(m, out_dtype, bias, x_scale, None, w_scale, multiplier, scale, y_zp, lo,
                           hi, *((None, None) if bias_f is not None else (lo_f, hi_f)),
                           dyn_scale=np.asarray(x_scale_in).reshape(-1)[0])
    else:
        a_zp = int(x_zp)
        ep = state.get("ep")
        if ep is None:
            ep = state["ep"] = make_epilogue(
                m, out_dtype, bias, x_scale, None, w_scale, multiplier, scale, y_zp, lo, hi,
                *((None, None) if bias_f is not None else (lo_f, hi_f)))
    if np.dtype(ep.out_dtype) == np.int32:
        y = _ql.qconv(x, a_zp, pcw, None, st, pd, dl, threads)
        if ep.bias is not None:
            y = (y.astype(np.int64) + np.asarray(ep.bias, np.int64).reshape((1, m) + (1,) * nd)
                 ).clip(-(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        return y
    if pointwise and not pcw.depthwise:
        # 1x1, stride 1, no padding: the conv is one GEMM over (N*spatial, C); a numpy transpose
        # is cheaper than the im2col kernel here (same packed weight, same epilogue: bit-exact).
        n, c = x.shape[:2]
        sp = x.shape[2:]
        a = np.ascontiguousarray(x.reshape(n, c, -1).transpose(0, 2, 1)).reshape(-1, c)
        y = _ql.qlinear(a, a_zp, pcw.groups[0], ep, threads)
        y = np.ascontiguousarray(y.reshape(n, -1, m).transpose(0, 2, 1)).reshape((n, m) + sp)
    else:
        y = _ql.qconv(x, a_zp, pcw, ep, st, pd, dl, threads)
    if bias_f is not None:
        y = y + np.asarray(bias_f, np.float32).reshape((1, m) + (1,) * nd)
        if lo_f is not None or hi_f is not None:
            y = np.clip(y, lo_f, hi_f)
    return y


def _qconv_generic(x, w, w_zp, bias, x_scale_in, x_zp_in, bias_f, x_scale, x_zp, w_scale,
                   out_dtype, multiplier, scale, y_zp, lo, hi, lo_f, hi_f, state, strides, pads,
                   dilations, group, auto_pad, ctx):
    """numpy im2col + `linear` (K split into exact chunks) / shifted-tap depthwise: any K."""
    nd = w.ndim - 2
    kshape = tuple(w.shape[2:])
    strides = tuple(strides or (1,) * nd)
    dilations = tuple(dilations or (1,) * nd)
    pads = _resolve_pads(x.shape, kshape, strides, dilations, pads, auto_pad)
    m = w.shape[0]
    n, c = x.shape[:2]
    dyn = x_scale_in is not None
    a_zp = _zp_scalar(x_zp_in) if dyn else int(x_zp)
    wzp = np.broadcast_to(np.asarray(w_zp, np.int32).reshape(-1), (m,))
    ep = make_epilogue(m, out_dtype, bias, x_scale, None, w_scale, multiplier, scale, y_zp, lo, hi,
                       *((None, None) if bias_f is not None else (lo_f, hi_f)),
                       dyn_scale=np.asarray(x_scale_in).reshape(-1)[0] if dyn else None)
    cg, mg = c // group, m // group
    if group > 1 and cg == 1 and mg == 1:
        acc, out_sp = _depthwise_i32(x, a_zp, w, wzp, strides, pads, dilations)
        y = _ql.apply_epilogue(acc, ep) if np.dtype(ep.out_dtype) != np.int32 else acc
    else:
        if group == 1:
            cols, out_sp = _ref.im2col(x, kshape, strides, pads, dilations, pad_value=a_zp)
            y = linear(cols, a_zp, w.reshape(m, -1), wzp, ep, state, "w", ctx.threads)
        else:
            parts = []
            for g in range(group):
                cols, out_sp = _ref.im2col(np.ascontiguousarray(x[:, g * cg:(g + 1) * cg]), kshape,
                                           strides, pads, dilations, pad_value=a_zp)
                sl = slice(g * mg, (g + 1) * mg)
                epg = _ql.Epilogue(
                    ep.out_dtype, None if ep.bias is None else ep.bias[sl],
                    None if ep.multiplier is None else ep.multiplier[sl], ep.out_zero_point,
                    ep.lo, ep.hi, None if ep.scale is None else ep.scale[sl], ep.lo_f, ep.hi_f)
                parts.append(linear(cols, a_zp, w[sl].reshape(mg, -1), wzp[sl], epg, state,
                                    ("w", g), ctx.threads))
            y = np.concatenate(parts, axis=1)
    y = y.reshape((n,) + tuple(out_sp) + (m,))
    y = np.ascontiguousarray(np.moveaxis(y, -1, 1))
    if bias_f is not None:
        y = y + np.asarray(bias_f, np.float32).reshape((1, m) + (1,) * nd)
        if lo_f is not None or hi_f is not None:
            y = np.clip(y, lo_f, hi_f)
    return y


_CT_ATTRS = dict(_CONV_ATTRS, output_padding=None, output_shape=None)


@register("QConvTranspose", domain="qrt", since=1, ctx=True, attrs=_CT_ATTRS)
def qconv_transpose(x, w, w_zp, bias=None, x_scale_in=None, x_zp_in=None, bias_f=None, *, x_scale,
                    x_zp, w_scale, out_dtype, multiplier, scale, y_zp, lo, hi, lo_f, hi_f, kernel,
                    state, kernel_shape, strides, pads, dilations, group, auto_pad, output_padding,
                    output_shape, ctx, post_table=None, post_lo=0):
    """Integer ConvTranspose: w (C, M/group, *k). Exact int32 products scattered (col2im) into the
    output, then the same epilogue as QConv."""
    nd = w.ndim - 2
    kshape = tuple(w.shape[2:])
    strides = tuple(strides or (1,) * nd)
    dilations = tuple(dilations or (1,) * nd)
    output_padding = tuple(output_padding or (0,) * nd)
    n, c = x.shape[:2]
    mg = w.shape[1]
    m = mg * group
    cg = c // group
    in_sp = x.shape[2:]
    full = tuple((in_sp[i] - 1) * strides[i] + dilations[i] * (kshape[i] - 1) + 1 for i in range(nd))
    if output_shape:
        out_sp = tuple(output_shape[-nd:])
        total = [strides[i] * (in_sp[i] - 1) + output_padding[i]
                 + ((kshape[i] - 1) * dilations[i] + 1) - out_sp[i] for i in range(nd)]
        if auto_pad == "SAME_UPPER":
            pb = [t // 2 for t in total]
        else:
            pb = [t - t // 2 for t in total]
    else:
        p = list(pads) if pads else [0] * (2 * nd)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out_sp = tuple(in_sp[i] * strides[i] for i in range(nd))
            total = [strides[i] * (in_sp[i] - 1) + output_padding[i]
                     + ((kshape[i] - 1) * dilations[i] + 1) - out_sp[i] for i in range(nd)]
            pb = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        else:
            pb = p[:nd]
            out_sp = tuple(full[i] + output_padding[i] - p[i] - p[i + nd] for i in range(nd))
    a_zp = _zp_scalar(x_zp_in) if x_scale_in is not None else int(x_zp)
    wzp = np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (m,))
    xa = x.astype(np.int64) - a_zp
    big = tuple(max(full[i] + output_padding[i], pb[i] + out_sp[i]) for i in range(nd))
    acc = np.zeros((n, m) + big, np.int64)
    for g in range(group):
        xg = xa[:, g * cg:(g + 1) * cg].reshape(n, cg, -1)  # (N, Cg, HW)
        wg = (w[g * cg:(g + 1) * cg].astype(np.int64) - wzp[g * mg:(g + 1) * mg].reshape(
            (1, mg) + (1,) * nd)).reshape(cg, -1)  # (Cg, Mg*k)
        cols = np.einsum("nci,cj->nij", xg, wg).reshape((n,) + tuple(in_sp) + (mg,) + kshape)
        for kidx in np.ndindex(*kshape):
            sl = tuple(slice(kidx[i] * dilations[i], kidx[i] * dilations[i]
                             + strides[i] * (in_sp[i] - 1) + 1, strides[i]) for i in range(nd))
            tap = cols[(Ellipsis,) + kidx]  # (N, in..., Mg)
            acc[(slice(None), slice(g * mg, (g + 1) * mg)) + sl] += np.moveaxis(tap, -1, 1)
    acc = acc[(slice(None), slice(None)) + tuple(slice(pb[i], pb[i] + out_sp[i]) for i in range(nd))]
    acc2 = np.ascontiguousarray(np.moveaxis(acc, 1, -1)).reshape(-1, m)
    ep = make_epilogue(m, out_dtype, bias, x_scale, None, w_scale, multiplier, scale, y_zp, lo, hi,
                       lo_f, hi_f, dyn_scale=np.asarray(x_scale_in).reshape(-1)[0]
                       if x_scale_in is not None else None)
    y = _epilogue_int64(acc2, ep)
    y = np.ascontiguousarray(np.moveaxis(y.reshape((n,) + tuple(out_sp) + (m,)), -1, 1))
    if bias_f is not None:
        y = y + np.asarray(bias_f, np.float32).reshape((1, m) + (1,) * nd)
    if post_table is not None:
        y = _post_table(y, post_table, post_lo, axis=1)
    return y


@register("QMatMulAct", domain="qrt", since=1, ctx=True, attrs={
    "a_scale": None, "a_zp": 0, "b_scale": None, "b_zp": 0, "out_dtype": "uint8", "multiplier": None,
    "scale": None, "y_zp": 0, "lo": None, "hi": None, "lo_f": None, "hi_f": None, "kernel": ""})
def qmatmul_act(a, b, *, a_scale, a_zp, b_scale, b_zp, out_dtype, multiplier, scale, y_zp, lo, hi,
                lo_f, hi_f, kernel, ctx):
    """MatMul of two integer activations (per-tensor params), numpy-style batch broadcasting."""
    if b.ndim == 1 or a.ndim == 1:
        a2 = a if a.ndim > 1 else a[None, :]
        b2 = b if b.ndim > 1 else b[:, None]
        y = qmatmul_act(a2, b2, a_scale=a_scale, a_zp=a_zp, b_scale=b_scale, b_zp=b_zp,
                        out_dtype=out_dtype, multiplier=multiplier, scale=scale, y_zp=y_zp, lo=lo,
                        hi=hi, lo_f=lo_f, hi_f=hi_f, kernel=kernel, ctx=ctx)
        if a.ndim == 1:
            y = y[..., 0, :]
        if b.ndim == 1:
            y = y[..., 0]
        return y
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    ab = np.broadcast_to(a, batch + a.shape[-2:])
    bb = np.broadcast_to(b, batch + b.shape[-2:])
    mm, nn = a.shape[-2], b.shape[-1]
    ep = make_epilogue(nn, out_dtype, None, None, None, None, multiplier, scale, y_zp, lo, hi, lo_f,
                       hi_f)
    kk = a.shape[-1]
    odt = np.dtype(out_dtype)
    packed = _packed_qmatmul_call(odt, ab, bb, int(a_zp), int(b_zp), _ql._ep_args(ep, nn),
                                  ctx.threads if ctx is not None else 1)
    if packed is not None:
        return _run_packed_qmatmul(ab, bb, odt, packed)
    if _small_qmatmul(odt, ab, bb):
        # Small attention-sized products: one Numba pass (exact int32 sums, shared epilogue);
        # larger ones go through BLAS below.
        return _run_small_qmatmul(ab, bb, np.int32(a_zp), np.int32(b_zp), odt,
                                  _ql._ep_args(ep, nn))
    if np.dtype(out_dtype) in (np.uint8, np.int8, np.float32) and kk <= _ref.max_exact_k():
        # Exact integer sums through float64 BLAS (|sum| <= K * 255 * 255 < 2**53, so every
        # product and partial sum is exact), one batched call instead of packing B per batch
        # index; then the same epilogue kernel the packed GEMM runs (bit-exact twins).
        af = ab.astype(np.float64)
        af -= np.float64(a_zp)
        bf = bb.astype(np.float64)
        bf -= np.float64(b_zp)
        acc = np.matmul(af, bf).astype(np.int32)
        y = _ql.apply_epilogue(acc.reshape(-1, nn), ep)
        return y.reshape(batch + (mm, nn))
    out = np.empty(batch + (mm, nn), np.dtype(out_dtype))
    for idx in np.ndindex(*batch):
        pw = _ql.pack_weight(np.ascontiguousarray(bb[idx].T), b_zp)
        out[idx] = _ql.qlinear(np.ascontiguousarray(ab[idx]), int(a_zp), pw, ep, ctx.threads)
    return out


def _small_qmatmul(odt, a, b) -> bool:
    """a (..., M, K) x b (..., K, N) with the same batch dims, 8-bit, small enough for the one
    Numba pass (`qmatmul_batched`), with an 8-bit or float32 output."""
    if not ((odt in _INT8 or odt == np.float32) and a.dtype in _INT8 and b.dtype in _INT8
            and a.ndim >= 2 and a.ndim == b.ndim and a.shape[:-2] == b.shape[:-2]):
        return False
    mm, kk = a.shape[-2:]
    return (b.shape[-2] == kk and kk <= _ref.max_exact_k()
            and mm * b.shape[-1] * kk * max(1, math.prod(a.shape[:-2])) < (1 << 22))


# Below this many multiply-adds the one Numba pass (qmatmul_batched) beats packing both operands
_PACKED_QMATMUL_MIN_MACS = 1 << 15


def _packed_qmatmul_call(odt, a, b, za, zb, ep_args, threads):
    """(compiled entry, leading arguments, trailing arguments) of avx2.qmatmul_rows for an 8-bit
    a (..., M, K) x b (..., K, N) with an 8-bit output on an AVX2 CPU (the avx2 or vnni path):
    both operands packed per call, then the register-epilogue GEMM. None when it does not apply
    (float output, other dtypes, broadcast batch dims, tiny products, another kernel path)."""
    from qrt.kernels import cpu as _cpu
    if not (odt in _INT8 and a.dtype in _INT8 and b.dtype in _INT8 and a.ndim >= 2
            and a.ndim == b.ndim and a.shape[:-2] == b.shape[:-2]):
        return None
    mm, kk = a.shape[-2:]
    nn = b.shape[-1]
    batch = max(1, math.prod(a.shape[:-2]))
    macs = mm * nn * kk * batch
    mode, bias, mult, zpf, lof, hif = ep_args
    if (b.shape[-2] != kk or kk > _ref.max_exact_k() or macs < _PACKED_QMATMUL_MIN_MACS
            or mode != 1 or mm * nn * batch == 0 or _cpu.resolve(None) not in ("avx2", "vnni")
            or _cpu.missing_features("avx2") or np.any(bias[:nn]) or np.any(mult[:nn] != mult[0])):
        return None
    from qrt.kernels.cpu import common
    av = _cpu.backend("avx2")
    threads = _threads_for(macs, threads)
    kp = common.round_up(max(kk, 1), common.KALIGN)
    mb, npb, kc = _ql._blocking("avx2", mm, -(-nn // common.NR), 1)
    rows = -(-mm // 64) * 64  # per-row epilogue vectors, readable past M
    head = (a.dtype == np.int8, b.dtype == np.int8, np.int64(za), np.int64(zb), np.int64(kp),
            np.int64(mb), np.int64(npb), np.int64(kc), np.zeros(rows, np.int32),
            np.full(rows, mult[0], np.float32), zpf, lof, hif)
    fn = av.qmatmul_rows if threads > 1 and batch > 1 else av.qmatmul_rows_serial
    shapes = ((batch, mm, kk), (batch, kk, nn), (batch, mm, nn))
    dummy = [np.empty(sh, np.uint8) for sh in shapes]
    entry = _cpu.compiled_entry(fn, (dummy[0], dummy[1]) + head + (dummy[2],))
    return entry, head, shapes


def _run_packed_qmatmul(a, b, odt, call):
    entry, head, (sa, sb, so) = call
    out = np.empty(a.shape[:-2] + so[1:], odt)
    entry(np.ascontiguousarray(a).view(np.uint8).reshape(sa),
          np.ascontiguousarray(b).view(np.uint8).reshape(sb), *head,
          out.view(np.uint8).reshape(so))
    return out


def _run_small_qmatmul(a, b, za, zb, odt, ep_args):
    mode, bias, mult, zpf, lof, hif = ep_args
    mm, kk = a.shape[-2:]
    nn = b.shape[-1]
    out = np.empty(a.shape[:-2] + (mm, nn), odt)
    o3 = out.reshape((-1, mm, nn))
    a3 = np.ascontiguousarray(a).reshape((-1, mm, kk))
    b3 = np.ascontiguousarray(b).reshape((-1, kk, nn))
    if odt == np.float32:
        _float_ops().qmatmul_batched(a3, b3, za, zb, mode, bias, mult, zpf, lof, hif,
                                     _D3U, o3)
    else:
        _float_ops().qmatmul_batched(a3, b3, za, zb, mode, bias, mult, zpf, lof, hif,
                                     o3.view(np.uint8), _D3F)
    return out


def _bind_qmatmul_act(**kw):
    """Plan step of QMatMulAct: the attention-sized case straight to the Numba pass with its
    epilogue vectors made once per output width; everything else through the op (same kernel,
    same epilogue: bit-identical)."""
    odt = np.dtype(kw["out_dtype"])
    za, zb = np.int32(kw["a_zp"]), np.int32(kw["b_zp"])
    eps: dict = {}
    packed: dict = {}
    threads = kw["ctx"].threads if kw.get("ctx") is not None else 1

    def step(a, b):
        key = (a.shape, a.dtype, b.shape, b.dtype)
        call = packed.get(key, False)
        if call is False:
            nn = b.shape[-1]
            ep = make_epilogue(nn, kw["out_dtype"], None, None, None, None, kw["multiplier"],
                               kw["scale"], kw["y_zp"], kw["lo"], kw["hi"], kw["lo_f"],
                               kw["hi_f"])
            call = _packed_qmatmul_call(odt, a, b, int(za), int(zb), _ql._ep_args(ep, nn),
                                        threads)
            if len(packed) < 64:
                packed[key] = call
        if call is not None:
            return _run_packed_qmatmul(a, b, odt, call)
        if _small_qmatmul(odt, a, b):
            nn = b.shape[-1]
            args = eps.get(nn)
            if args is None:
                ep = make_epilogue(nn, kw["out_dtype"], None, None, None, None, kw["multiplier"],
                                   kw["scale"], kw["y_zp"], kw["lo"], kw["hi"], kw["lo_f"],
                                   kw["hi_f"])
                args = eps[nn] = _ql._ep_args(ep, nn)
            return _run_small_qmatmul(a, b, za, zb, odt, args)
        return qmatmul_act(a, b, **kw)
    step.__wrapped__ = qmatmul_act
    return step


qmatmul_act.bind_step = _bind_qmatmul_act


@register("QLut", domain="qrt", since=1, attrs={"table": None, "in_lo": 0, "kernel": ""})
def qlut(x, *, table, in_lo, kernel):
    """y = table[x - qmin(x)]: a whole DQ -> float chain -> Q of one input, precomputed per code.
    A (C, 256) table is per channel (axis 1 of x)."""
    fast = x.ndim and x.dtype == (np.uint8 if in_lo == 0 else np.int8) and table.shape[-1] == 256
    if table.ndim == 2:
        c = table.shape[0]
        if x.ndim < 2 or x.shape[1] != c:
            raise ValueError(f"per-channel table for {c} channels, input shape {list(x.shape)}")
        if not fast:
            ch = np.arange(c).reshape((1, c) + (1,) * (x.ndim - 2))
            return table[ch, x.astype(np.int32) - in_lo]
        shape3 = (x.shape[0], c, -1)
    elif fast and table.ndim == 1:
        shape3 = (1, 1, -1)  # one table for every value: a single "channel"
    else:
        return table[x.astype(np.int32) - in_lo]
    # x - (-128) for int8 codes is the byte with its top bit flipped
    flip = np.uint8(128 if in_lo else 0)
    xc = np.ascontiguousarray(x)
    x3 = xc.reshape(shape3).view(np.uint8)
    tables = np.ascontiguousarray(table).reshape(-1, 256)
    out = np.empty(xc.shape, table.dtype)
    o3 = out.reshape(x3.shape)
    lut = _lut_avx2() if table.dtype in _INT8 else None
    if lut is not None:
        lut(x3, flip, tables.view(np.uint8), o3.view(np.uint8))
    else:
        _float_ops().lut8_channels(x3, flip, tables, o3)
    return out


_BIN_ATTRS = {"a_scale": None, "a_zp": 0, "b_scale": None, "b_zp": 0, "y_scale": None, "y_zp": 0,
              "out_dtype": "uint8", "kernel": ""}
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))
_fo = None


_LUT_AVX2: list = []


def _lut_avx2():
    """common.lut_rows_avx2 (vpshufb lookups) on a CPU with AVX2, else None; decided once."""
    if not _LUT_AVX2:
        from qrt.kernels import cpu as _cpu
        fn = None
        if not _cpu.missing_features("avx2"):
            from qrt.kernels.cpu import common
            fn = common.lut_rows_avx2
        _LUT_AVX2.append(fn)
    return _LUT_AVX2[0]


def _float_ops():
    global _fo
    if _fo is None:
        from qrt.kernels.cpu import float_ops
        _fo = float_ops
    return _fo


def _saturate(y, y_zp, out_dtype):
    lo, hi = _ref.qrange(out_dtype)
    return np.clip(y + np.float32(y_zp), lo, hi).astype(out_dtype)


def _binary_fast(flat, quad, chan, a, b, out_dtype, consts):
    """Run the Numba twin of QAdd/QMul when the operands are 8-bit and the broadcast is simple
    (same shape, a one-element side, a per-channel side (N|1, C, 1, ...), or rank <= 4); None
    otherwise (numpy path). The caller puts the larger operand first."""
    odt = np.dtype(out_dtype)
    if a.dtype not in _INT8 or b.dtype not in _INT8 or odt not in _INT8:
        return None
    lo, hi = _ref.qrange(odt)
    tail = consts + (np.float32(lo), np.float32(hi))
    if a.shape == b.shape or b.size == 1 and b.ndim <= a.ndim:
        out = np.empty(a.shape, odt)
        flat(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
             out.reshape(-1), *tail)
        return out
    if (a.ndim >= 3 and b.ndim == a.ndim and b.shape[1] == a.shape[1]
            and b.shape[0] in (1, a.shape[0]) and b.size == b.shape[0] * b.shape[1]):
        out = np.empty(a.shape, odt)
        n, c = a.shape[:2]
        chan(np.ascontiguousarray(a).reshape(n, c, -1), np.ascontiguousarray(b).reshape(-1, c),
             out.reshape(n, c, -1), *tail)
        return out
    geo = _BROADCAST.get((a.shape, b.shape))
    if geo is None:
        geo = _broadcast_geometry(a.shape, b.shape)
    if not geo:
        return None
    shape, s4, a4, b4 = geo
    out = np.empty(s4, odt)
    quad(np.ascontiguousarray(a).reshape(a4), np.ascontiguousarray(b).reshape(b4), out, *tail)
    return out.reshape(shape)


_BROADCAST: dict = {}  # (a shape, b shape) -> _broadcast_geometry: shapes repeat run to run


def _broadcast_geometry(sa, sb):
    """(out shape, and out/a/b shapes padded to 4-D) of a broadcast of rank <= 4, else False."""
    shape = np.broadcast_shapes(sa, sb)  # raises the usual error for shapes that do not broadcast
    if len(shape) > 4:
        geo = False
    else:
        def pad(s):
            return (1,) * (4 - len(s)) + tuple(s)
        geo = (shape, pad(shape), pad(sa), pad(sb))
    if len(_BROADCAST) > 4096:  # shapes that vary without end (dynamic dims) must not grow it
        _BROADCAST.clear()
    _BROADCAST[(sa, sb)] = geo
    return geo


def _qadd_consts(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, **_):
    """QAdd's kernel constants (za, zb, ma, mb, zy), and the same for swapped operands."""
    ma = np.float32(np.float64(a_scale) / np.float64(y_scale))
    mb = np.float32(np.float64(b_scale) / np.float64(y_scale))
    za, zb, zy = np.int32(a_zp), np.int32(b_zp), np.float32(y_zp)
    return (za, zb, ma, mb, zy), (zb, za, mb, ma, zy)


def _qmul_consts(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, **_):
    """QMul's kernel constants (za, zb, m, zy), and the same for swapped operands."""
    m = np.float32(np.float64(a_scale) * np.float64(b_scale) / np.float64(y_scale))
    za, zb, zy = np.int32(a_zp), np.int32(b_zp), np.float32(y_zp)
    return (za, zb, m, zy), (zb, za, m, zy)


def _larger_first(a, b, consts, swapped):
    """The operands with the larger one first (both ops commute exactly), with their constants."""
    if a.size < b.size and a.ndim <= b.ndim:
        return b, a, swapped
    return a, b, consts


@register("QAdd", domain="qrt", since=1, attrs=dict(_BIN_ATTRS))
def qadd(a, b, *, a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, out_dtype, kernel):
    """y = sat(rint(float32(sa/sy) * (a - za) + float32(sb/sy) * (b - zb)) + zy). At most one step
    from the float path (DQ, Add, Q)."""
    a, b, c = _larger_first(a, b, *_qadd_consts(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp))
    fo = _float_ops()
    y = _binary_fast(fo.qadd_flat, fo.qadd_4d, fo.qadd_chan, a, b, out_dtype, c)
    if y is not None:
        return y
    za, zb, ma, mb, _ = c
    va = (a.astype(np.int32) - za).astype(np.float32) * ma
    vb = (b.astype(np.int32) - zb).astype(np.float32) * mb
    return _saturate(np.rint(va + vb), y_zp, out_dtype)


@register("QMul", domain="qrt", since=1, attrs=dict(_BIN_ATTRS))
def qmul(a, b, *, a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, out_dtype, kernel):
    """y = sat(rint(float32((a - za)(b - zb)) * float32(sa*sb/sy)) + zy): the product is exact in
    int32 and float32 (|.| <= 65025); at most one step from the float path."""
    a, b, c = _larger_first(a, b, *_qmul_consts(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp))
    fo = _float_ops()
    y = _binary_fast(fo.qmul_flat, fo.qmul_4d, fo.qmul_chan, a, b, out_dtype, c)
    if y is not None:
        return y
    za, zb, m, _ = c
    p = (a.astype(np.int32) - za) * (b.astype(np.int32) - zb)
    return _saturate(np.rint(p.astype(np.float32) * m), y_zp, out_dtype)


def _bind_binary(op, flat, quad, chan, consts_of):
    """Plan step of QAdd/QMul with the float constants of its attributes computed once (they cost
    more than the Numba pass on small tensors); the same arithmetic as the op."""
    def bind(**kw):
        consts, swapped = consts_of(**kw)
        fo = _float_ops()
        kernels = (getattr(fo, flat), getattr(fo, quad), getattr(fo, chan))
        out_dtype = kw["out_dtype"]

        def step(a, b):
            x, z, c = _larger_first(a, b, consts, swapped)
            y = _binary_fast(*kernels, x, z, out_dtype, c)
            return y if y is not None else op(a, b, **kw)
        step.__wrapped__ = op
        return step
    op.bind_step = bind
    return op


_bind_binary(qadd, "qadd_flat", "qadd_4d", "qadd_chan", _qadd_consts)
_bind_binary(qmul, "qmul_flat", "qmul_4d", "qmul_chan", _qmul_consts)


@register("QGlobalAveragePool", domain="qrt", since=1, attrs={
    "x_scale": None, "x_zp": 0, "y_scale": None, "y_zp": 0, "out_dtype": "uint8", "kernel": ""})
def qglobal_average_pool(x, *, x_scale, x_zp, y_scale, y_zp, out_dtype, kernel):
    """y[n, c] = sat(rint(sum(x[n, c] - zx) * sx / (sy * HW)) + zy): exact int32 sums, one rounding
    (float64 rescale). At most 1 step from DQ -> GlobalAveragePool -> Q."""
    if x.ndim < 3 or x.dtype not in _INT8:
        raise ValueError(f"QGlobalAveragePool takes (N, C, ...) 8-bit input, got {x.dtype}"
                         f"{list(x.shape)}")
    odt = np.dtype(out_dtype)
    return _qgap_run(x, _qgap_call(x.shape, x_scale, x_zp, y_scale, y_zp, odt), odt)


def _qgap_call(shape, x_scale, x_zp, y_scale, y_zp, odt):
    """(input as (N, C, HW), output shape, kernel arguments) of a pool over an input `shape`."""
    n, c = shape[:2]
    hw = math.prod(shape[2:])  # math.prod: np.prod on a shape tuple costs microseconds
    m = float(x_scale) / (float(y_scale) * max(hw, 1))  # Python floats are float64
    lo, hi = _ref.qrange(odt)
    return ((n, c, hw), (n, c) + (1,) * (len(shape) - 2),
            (np.int64(x_zp), m, float(y_zp), float(lo), float(hi)))


def _qgap_run(x, call, odt):
    s3, out_shape, args = call
    out = np.empty(s3[:2], np.uint8)
    _float_ops().qglobal_avg(np.ascontiguousarray(x).reshape(s3), *args, out)
    return out.view(odt).reshape(out_shape)


def _bind_qgap(**kw):
    """Plan step of QGlobalAveragePool: per input shape and dtype, the kernel's arguments are
    worked out once (their Python cost was most of a small pool's call); the same arithmetic."""
    calls: dict = {}
    odt = np.dtype(kw["out_dtype"])

    def step(x):
        call = calls.get((x.shape, x.dtype))
        if call is None:
            if x.ndim < 3 or x.dtype not in _INT8 or len(calls) > 64:
                return qglobal_average_pool(x, **kw)
            call = calls[(x.shape, x.dtype)] = _qgap_call(x.shape, kw["x_scale"], kw["x_zp"],
                                                          kw["y_scale"], kw["y_zp"], odt)
        return _qgap_run(x, call, odt)
    step.__wrapped__ = qglobal_average_pool
    return step


qglobal_average_pool.bind_step = _bind_qgap
