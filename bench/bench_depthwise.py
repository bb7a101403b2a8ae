"""int8 depthwise conv: the kernels of kernels/cpu/depthwise.py vs the previous kernel
(common.depthwise, the per-plane int32 padded copy), on the depthwise convs of PP-OCR cls.

    python bench/bench_depthwise.py [--repeats N] [--path avx2|portable|vnni] [--threads N]
    python bench/bench_depthwise.py --model int8.onnx [--input-shape 1,3,48,192]

With --model, the depthwise calls of one qrt run of that (quantized) model are captured and timed
as they are (its weights, epilogues, zero points, activations) instead of the table below.

Shapes: the 11 QConv nodes with group > 1 of PP-OCR cls (.cache/real-models/ppocr_cls.onnx)
quantized by onnxruntime's quantize_static (QDQ, QUInt8 activations, QInt8 per-channel weights; see
bench/compare_onnxruntime.py `_ort_quantize`), batch 1, input (1, 3, 48, 192): found by hooking
qlinear.depthwise_conv during a qrt run. u8 activations, per-channel s8 weights, u8 output
requantized with per-channel multipliers (mode 1).

Per shape, old and new run interleaved (old, new, old, new, ...) so machine noise hits both alike;
the table shows the median wall time per call (time.perf_counter) through the public entry
qlinear.depthwise_conv (new) and the previous wrapper (old, reproduced below), Python overhead
included, plus min. Both are checked bit-exact against ref.depthwise_conv_ref first.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from qrt.kernels import qlinear as ql
from qrt.kernels import ref, threading_ctl

# (input shape, kernel, strides, pads, x zero point, y zero point) of PP-OCR cls, in call order
PPOCR_CLS = [
    ((1, 8, 24, 96), (3, 3), (2, 1), (1, 1, 1, 1), 0, 153),
    ((1, 24, 12, 96), (3, 3), (2, 1), (1, 1, 1, 1), 0, 153),
    ((1, 32, 6, 96), (3, 3), (1, 1), (1, 1, 1, 1), 0, 137),
    ((1, 32, 6, 96), (5, 5), (2, 1), (2, 2, 2, 2), 0, 105),
    ((1, 88, 3, 96), (5, 5), (1, 1), (2, 2, 2, 2), 0, 126),
    ((1, 88, 3, 96), (5, 5), (1, 1), (2, 2, 2, 2), 0, 122),
    ((1, 40, 3, 96), (5, 5), (1, 1), (2, 2, 2, 2), 0, 101),
    ((1, 48, 3, 96), (5, 5), (1, 1), (2, 2, 2, 2), 0, 130),
    ((1, 104, 3, 96), (5, 5), (2, 1), (2, 2, 2, 2), 0, 128),
    ((1, 200, 2, 96), (5, 5), (1, 1), (2, 2, 2, 2), 0, 97),
    ((1, 200, 2, 96), (5, 5), (1, 1), (2, 2, 2, 2), 0, 102),
]


def old_depthwise_conv(x, x_zero_point, pcw, ep, strides, pads, dilations, threads=1):
    """The wrapper and kernel this work replaced (qlinear.depthwise_conv before it): per call the
    epilogue arrays are rebuilt, per plane an int32 padded copy. None if common.depthwise is
    gone."""
    from qrt.kernels.cpu import common
    if not hasattr(common, "depthwise"):
        return None
    kernel = pcw.kernel_shape
    strides, pads, dilations, out_sp = ql._geometry(x.shape[2:], kernel, strides, pads, dilations)
    n, c = x.shape[:2]
    k2, s2, p2, d2, sp2 = ql._as_2d(kernel, strides, pads, dilations, x.shape[2:])
    o2 = ql._geometry(sp2, k2, s2, p2, d2)[3]
    x4 = np.ascontiguousarray(x).reshape((n, c) + sp2).view(np.uint8)
    mode, bias, mult, zpf, lof, hif = ql._ep_args(ep, c)
    out, oq, of, oi = ql._alloc_out(ep, (n, c, o2[0] * o2[1]))
    za = int(np.asarray(x_zero_point).reshape(()))
    i64 = np.int64
    with threading_ctl.num_threads(threads):
        common.depthwise(x4, x.dtype == np.int8, i64(za), pcw.dw, i64(k2[0]), i64(k2[1]),
                         i64(s2[0]), i64(s2[1]), i64(p2[0]), i64(p2[1]), i64(p2[2]), i64(p2[3]),
                         i64(d2[0]), i64(d2[1]), i64(o2[0]), i64(o2[1]), i64(mode), bias, mult, zpf,
                         lof, hif, oq, of, oi)
    return out.reshape((n, c) + out_sp)


def case(shape, kernel, zx, zy, path, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    w = rng.integers(-127, 128, (c, 1) + kernel).astype(np.int8)
    pcw = ql.pack_conv_weight(w, np.zeros(c, np.int32), c, path=path)
    ep = ql.Epilogue(np.uint8, bias=rng.integers(-3000, 3000, c).astype(np.int32),
                     multiplier=(rng.random(c) * 2e-3 + 1e-4).astype(np.float32),
                     out_zero_point=zy)
    return x, w, pcw, ep


def capture(model: str, input_shape: tuple) -> list:
    """(label, x, zx, pcw, ep, strides, pads, dilations, want) of each depthwise call in one qrt run
    of `model` on a random float input (the first graph input), `want` from the reference twin."""
    import qrt
    calls = []
    real = ql.depthwise_conv

    def hook(x, zx, pcw, ep=None, strides=None, pads=None, dilations=None, threads=1):
        calls.append((x.copy(), zx, pcw, ep, strides, pads, dilations))
        return real(x, zx, pcw, ep, strides, pads, dilations, threads)

    sess = qrt.InferenceSession(model, threads=1)
    feed = {sess.get_inputs()[0].name:
            np.random.default_rng(0).uniform(-1, 1, input_shape).astype(np.float32)}
    ql.depthwise_conv = hook
    try:
        sess.run(None, feed)
    finally:
        ql.depthwise_conv = real
    out = []
    for x, zx, pcw, ep, st, pd, dl in calls:
        want = ref.depthwise_conv_ref(x, zx, pcw.w, pcw.zero_point, ep, st, pd, dl)
        label = (x.shape, pcw.kernel_shape, tuple(st or ()))
        out.append((label, x, zx, pcw, ep, st, pd, dl, want))
    return out


def synthetic(path: str) -> list:
    out = []
    for shape, kernel, strides, pads, zx, zy in PPOCR_CLS:
        x, w, pcw, ep = case(shape, kernel, zx, zy, path)
        want = ref.depthwise_conv_ref(x, zx, w, 0, ep, strides, pads, (1, 1))
        out.append(((shape, kernel, strides), x, zx, pcw, ep, strides, pads, (1, 1), want))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--path", default=None, help="CPU kernel path (default: this CPU's best)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", help="capture the depthwise calls of this quantized ONNX model")
    ap.add_argument("--input-shape", default="1,3,48,192")
    args = ap.parse_args(argv)
    from qrt.kernels.cpu import resolve
    path = resolve(args.path)
    if args.model:
        cases = capture(args.model, tuple(int(v) for v in args.input_shape.split(",")))
        path = cases[0][3].kernel if cases else path
    else:
        cases = synthetic(path)
    print(f"path {path}, threads {args.threads}, {args.repeats} interleaved calls per kernel; "
          f"times in microseconds per call (median, min)")
    print(f"{'input':>18} {'kernel':>6} {'stride':>6} {'MACs':>8} | {'old med':>8} "
          f"{'old min':>8} | {'new med':>8} {'new min':>8} | {'speedup':>7}")
    tot_old = tot_new = 0.0
    for (shape, kernel, strides), x, zx, pcw, ep, st, pd, dl, want in cases:
        def new():
            return ql.depthwise_conv(x, zx, pcw, ep, st, pd, dl, args.threads)

        def old():
            return old_depthwise_conv(x, zx, pcw, ep, st, pd, dl, args.threads)

        np.testing.assert_array_equal(new(), want)
        has_old = old() is not None
        if has_old:
            np.testing.assert_array_equal(old(), want)
        t_old, t_new = [], []
        for _ in range(args.repeats):
            if has_old:
                t0 = time.perf_counter()
                old()
                t_old.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            new()
            t_new.append(time.perf_counter() - t0)
        macs = int(np.prod(want.shape[1:])) * int(np.prod(kernel))
        nm, nn = np.median(t_new) * 1e6, np.min(t_new) * 1e6
        om, on = (np.median(t_old) * 1e6, np.min(t_old) * 1e6) if has_old else (np.nan, np.nan)
        tot_old += om
        tot_new += nm
        print(f"{str(tuple(shape)):>18} {'x'.join(map(str, kernel)):>6} "
              f"{','.join(map(str, strides)):>6} {macs:>8} | {om:8.1f} {on:8.1f} | "
              f"{nm:8.1f} {nn:8.1f} | {om / nm:6.1f}x")
    print(f"{'total (sum of medians)':>42} | {tot_old:8.1f} {'':>8} | {tot_new:8.1f} {'':>8} | "
          f"{tot_old / tot_new:6.1f}x")


if __name__ == "__main__":
    main()
