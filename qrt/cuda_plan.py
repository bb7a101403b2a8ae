"""GPU execution plan for InferenceSession(device="cuda").

After the pass pipeline (the same passes as on the CPU) every node of the graph is placed:
- on the GPU when a numba.cuda kernel takes it: qrt.QConv (implicit GEMM, depthwise), qrt.QGemm,
  QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, qrt.QLut, qrt.QGlobalAveragePool,
  MaxPool on 8-bit data; and the shape-only ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity)
  when their data is already on the device, where they are free (a view of the same memory);
- on the CPU otherwise, running the op's CPU implementation (resolved through qrt.ops, as Plan
  does), with the reason recorded for the lowering report.

Values live where their producer ran. A transfer step is inserted only where a value crosses: once
per value and direction, just before its first reader on the other side; graph outputs made on the
device are copied back at the end. Weights, epilogues and constant quantization parameters are
uploaded once, here, when the plan is built.

Numerics: the kernels keep the CPU's numerics contract bit for bit (kernels/cuda/_kernels.py) and
every GPU op below builds its epilogue with the CPU op's own `qrt.ops.fused.make_epilogue`, so
outputs equal device="cpu" outputs exactly.

A GPU op that meets an input it cannot take at run time (a dtype, a rank, a per-axis length that
does not fit: cases the CPU op either handles differently or reports as an error) runs the CPU op
for that call, copying what that needs: the result, or the error, is then the CPU's.

Thread safety: every call has its own value slots and its own CUDA stream; what was uploaded at
build time is only read. Under the CUDA simulator, which cannot run two kernels at once in a
process, calls (of every session) take turns.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from qrt import ir
from qrt.errors import NodeExecutionError, QrtError
from qrt.ops import NodeContext, resolve

CUDA, CPU = "cuda", "cpu"
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))
_F32 = np.dtype(np.float32)
# ONNX element types a QuantizeLinear `output_dtype` may name for the int8 kernels
_ONNX_INT8 = {2: np.dtype(np.uint8), 3: np.dtype(np.int8)}


class _NoGpu(Exception):
    """Build time: the reason a node stays on the CPU."""


class _HostFallback(Exception):
    """Run time: this call's inputs are for the CPU op (it computes them, or raises its error)."""


# ---------------------------------------------------------------------------------------------
# GPU ops: one object per node, holding what was uploaded for it
# ---------------------------------------------------------------------------------------------

class _GpuOp:
    """dev_in: per node input, CUDA (read on the device), CPU (read on the host: small per-call
    parameters) or None (a constant uploaded at build; the host copy is passed along only for a
    run-time fallback). dev_out: per output, where the op leaves it."""

    kernel = ""

    def __init__(self, node: ir.Node, dev_in, dev_out):
        self.dev_in = tuple(dev_in) + (None,) * (len(node.inputs) - len(dev_in))
        self.dev_out = tuple(dev_out)

    def run(self, api, args, stream):  # pragma: no cover - abstract
        raise NotImplementedError

    def per_call_uploads(self, node) -> list[dict]:
        """Parameters the op itself copies to the device on every call (for the report)."""
        return []


def _const(graph: ir.Graph, name: str, what: str, optional: bool = False):
    if not name:
        if optional:
            return None
        raise _NoGpu(f"{what} is missing")
    arr = graph.initializers.get(name)
    if arr is None:
        raise _NoGpu(f"{what} '{name}' is not a constant")
    return np.asarray(arr)


def _differs(v, default) -> bool:
    if default is None:
        return v is not None
    try:
        return not bool(np.all(np.asarray(v) == np.asarray(default)))
    except Exception:
        return True


def _check_attrs(node, kw, defaults, handled):
    """Refuse a node that sets an attribute this GPU op does not implement (one added to the CPU
    op later, say): it then runs on the CPU instead of silently ignoring the attribute."""
    for a in node.attrs:
        if a in kw and a not in handled and _differs(node.attrs[a], defaults.get(a)):
            raise _NoGpu(f"attribute '{a}' has no GPU implementation")


def _declared_dtype(graph: ir.Graph, name: str):
    """The dtype the graph declares for a value (inferred from the source model), or None."""
    t = graph.value_info.get(name)
    if t is None:
        t = next((u for u in list(graph.inputs) + list(graph.outputs) if u.name == name), None)
    return None if t is None or t.dtype is None or t.kind != "tensor" else np.dtype(t.dtype)


def _require_dtype(graph, name, allowed, what):
    """Refuse at build time a declared dtype the kernel cannot take (an undeclared one is checked
    per call, where the GPU op hands such a call to the CPU op)."""
    dt = _declared_dtype(graph, name)
    if dt is not None and dt not in allowed:
        raise _NoGpu(f"{dt} {what} (the CUDA kernel takes {'/'.join(a.name for a in allowed)})")


def _inputs(node, n):
    return list(node.inputs) + [""] * (n - len(node.inputs))


def _resolve_pads(x_shape, kernel, strides, dilations, pads, auto_pad):
    """ONNX conv padding (auto_pad SAME_* depends on the input's spatial size)."""
    nd = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [0] * (2 * nd)
        for i in range(nd):
            size = x_shape[2 + i]
            o = -(-size // strides[i])
            total = max(0, (o - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - size)
            small, big = total // 2, total - total // 2
            out[i], out[i + nd] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return tuple(out)
    if auto_pad == "VALID":
        return (0,) * (2 * nd)
    return tuple(int(p) for p in pads) if pads else (0,) * (2 * nd)


def _tile(api):
    """The production tile on a GPU. The simulator runs every CUDA thread of a block as a Python
    thread, so there a 16-thread tile keeps a launch cheap (the kernels take any tile)."""
    return api.SIM_TILE if api.K.SIMULATOR else api.DEFAULT_TILE


class _Linear(_GpuOp):
    """qrt.QConv / qrt.QGemm: inputs (x, w, w_zp, bias, x_scale_in, x_zp_in, bias_f)."""

    ATTRS = ("x_scale", "x_zp", "w_scale", "out_dtype", "multiplier", "scale", "y_zp", "lo", "hi",
             "lo_f", "hi_f", "kernel", "state", "post_table", "post_lo")
    CONV_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")

    def __init__(self, graph, node, kw, defaults, api, conv: bool):
        from qrt.kernels import ref
        from qrt.ops import fused

        _check_attrs(node, kw, defaults, self.ATTRS + (self.CONV_ATTRS if conv else ()))
        x, w, wzp, bias, xs_in, xz_in, bias_f = _inputs(node, 7)
        _require_dtype(graph, x, _INT8, "activations")
        w_arr = _const(graph, w, "weight")
        wz = _const(graph, wzp, "weight zero point")
        b = _const(graph, bias, "int32 bias", optional=True)
        bf = _const(graph, bias_f, "float bias", optional=True)
        out_dtype = np.dtype(kw["out_dtype"])
        if out_dtype == np.int32:
            raise _NoGpu("int32 output (raw accumulators): the CUDA epilogue requantizes or "
                         "dequantizes only")
        if np.dtype(w_arr.dtype) not in _INT8:
            raise _NoGpu(f"{w_arr.dtype} weights (the CUDA kernels take int8/uint8)")
        if conv and w_arr.ndim not in (3, 4):
            raise _NoGpu(f"{w_arr.ndim - 2}-D convolution (the CUDA conv takes 1-D and 2-D)")
        if not conv and w_arr.ndim != 2:
            raise _NoGpu(f"weight of rank {w_arr.ndim} (expected (N, K))")
        k = int(np.prod(w_arr.shape[1:]))
        if k > ref.max_exact_k():
            raise _NoGpu(f"K={k} exceeds {ref.max_exact_k()}, the largest reduction an int32 "
                         "accumulator holds exactly; the CPU op splits it")
        self.dyn = bool(xs_in)
        if self.dyn != bool(xz_in):
            raise _NoGpu("dynamic activation scale without zero point (or the reverse)")
        self.m = int(w_arr.shape[0])
        self.w_shape = tuple(w_arr.shape)
        self.kw = kw
        self.has_bias_f = bf is not None
        self.lo_f, self.hi_f = kw["lo_f"], kw["hi_f"]
        # Exactly the CPU op's epilogue: with a float bias the clamp moves after the bias add.
        self._ep_args = (self.m, kw["out_dtype"], b, kw["x_scale"], None, kw["w_scale"],
                         kw["multiplier"], kw["scale"], kw["y_zp"], kw["lo"], kw["hi"],
                         *((None, None) if bf is not None else (self.lo_f, self.hi_f)))
        self._make_epilogue = fused.make_epilogue
        try:
            ep = fused.make_epilogue(*self._ep_args, dyn_scale=np.float32(1) if self.dyn else None)
            self.cep = api.prepare_epilogue(ep, self.m)
        except (ValueError, TypeError) as e:
            raise _NoGpu(f"epilogue not expressible on the GPU: {e}") from e
        self.cw = api.upload_weight(w_arr, np.asarray(wz, np.int32).reshape(-1))
        self.bias_f = None if bf is None else api.to_device(
            np.ascontiguousarray(np.asarray(bf, np.float32).reshape(-1)))
        if self.bias_f is not None and self.bias_f.shape[0] != self.m:
            raise _NoGpu(f"float bias of {self.bias_f.shape[0]} values for {self.m} channels")
        self.x_zp = int(kw["x_zp"])
        self.table = None
        if kw.get("post_table") is not None:  # a QLut folded into the op (passes/lut_regions)
            t = np.asarray(kw["post_table"])
            qlo = (-128 if out_dtype == np.int8 else 0) if out_dtype in _INT8 else None
            if qlo is None or int(kw["post_lo"]) != qlo or t.ndim not in (1, 2) or \
                    t.shape[-1] < 256 or (t.ndim == 2 and t.shape[0] not in (1, self.m)):
                raise _NoGpu(f"folded lookup table of shape {list(t.shape)} on a {out_dtype} "
                             f"output (post_lo={kw['post_lo']})")
            self.table = api.to_device(np.ascontiguousarray(t.reshape(-1, t.shape[-1])))
            self.table_lo = qlo
        dev_in = (CUDA, None, None, None, CPU, CPU, None)
        super().__init__(node, dev_in, (CUDA,))

    def per_call_uploads(self, node):
        if not self.dyn:
            return []
        # the epilogue's scale vector depends on the per-call activation scale
        return [{"value": f"{node.name}:epilogue_scale", "direction": "host_to_device",
                 "before": None, "shape": [self.m], "dtype": "float32", "bytes": 4 * self.m,
                 "inside": node.name}]

    def _epilogue(self, api, args, stream):
        if not self.dyn:
            return self.x_zp, self.cep
        xs, xz = args[4], args[5]
        a_zp = int(np.asarray(xz).reshape(-1)[0])
        ep = self._make_epilogue(*self._ep_args, dyn_scale=np.asarray(xs).reshape(-1)[0])
        vec = np.ascontiguousarray(np.broadcast_to(np.asarray(ep.scale, np.float32).reshape(-1),
                                                   (self.m,)))
        return a_zp, dataclasses.replace(self.cep, vec=api.to_device(vec, stream=stream))

    def _finish(self, api, y, axis, stream):
        """The CPU op's tail: float bias (+ clamp) on a float output, or the folded table on an
        8-bit one."""
        if self.bias_f is not None:
            api.channel_bias_cuda(y, self.bias_f, axis, self.lo_f, self.hi_f, stream=stream)
        if self.table is not None:
            y = api.lut_cuda(y, self.table, self.table_lo, axis=axis, stream=stream)
        return y


class _QConv(_Linear):
    def __init__(self, graph, node, kw, defaults, api):
        super().__init__(graph, node, kw, defaults, api, conv=True)
        self.group = int(kw["group"])
        nd = len(self.w_shape) - 2
        self.ks = self.w_shape[2:]
        self.strides = tuple(int(v) for v in (kw["strides"] or (1,) * nd))
        self.dilations = tuple(int(v) for v in (kw["dilations"] or (1,) * nd))
        depthwise = self.group > 1 and self.w_shape[1] == 1
        self.kernel = "cuda.depthwise_conv" if depthwise else "cuda.implicit_gemm_conv"

    def run(self, api, args, stream):
        x = args[0]
        xs = tuple(x.shape)  # (the simulator's device arrays take no negative shape index)
        ws = self.w_shape
        if (np.dtype(x.dtype) not in _INT8 or len(xs) != len(ws) or xs[1] != ws[1] * self.group
                or self.m % self.group):
            raise _HostFallback
        pads = _resolve_pads(xs, self.ks, self.strides, self.dilations, self.kw["pads"],
                             self.kw["auto_pad"])
        nd = len(self.ks)
        if any((xs[2 + i] + pads[i] + pads[i + nd] - (self.dilations[i] * (self.ks[i] - 1) + 1))
               // self.strides[i] + 1 <= 0 for i in range(nd)):
            raise _HostFallback  # empty output: the CPU op's rules apply
        a_zp, cep = self._epilogue(api, args, stream)
        y = api.qconv_cuda(x, a_zp, self.cw, cep, kernel_shape=self.ks, strides=self.strides,
                           pads=pads, dilations=self.dilations, group=self.group, stream=stream,
                           tile=_tile(api))
        return (self._finish(api, y, 1, stream),)


class _QGemm(_Linear):
    kernel = "cuda.int8_gemm"

    def __init__(self, graph, node, kw, defaults, api):
        super().__init__(graph, node, kw, defaults, api, conv=False)
        self.k = self.w_shape[1]

    def run(self, api, args, stream):
        x = args[0]
        xs = tuple(x.shape)
        if np.dtype(x.dtype) not in _INT8 or not xs or xs[-1] != self.k:
            raise _HostFallback
        lead = xs[:-1]
        a = x.reshape(math.prod(lead), self.k)
        a_zp, cep = self._epilogue(api, args, stream)
        y = api.qlinear_cuda(a, a_zp, self.cw, cep, stream=stream, tile=_tile(api))
        y = self._finish(api, y, 1, stream)
        return (y.reshape(*(lead + (self.m,))),)


def _qparams_checked(op, s, z, dtype):
    from qrt.ops.quant import check_quant_params

    if np.dtype(s.dtype) != _F32:
        raise _NoGpu(f"{s.dtype} scale (the CUDA kernel computes in float32)")
    try:
        check_quant_params(op, s, z, dtype)
    except QrtError as e:  # the CPU op raises it at run time, with its message
        raise _NoGpu(f"invalid quantization parameters ({e})") from e
    if s.size > 1 and s.ndim != 1:
        raise _NoGpu(f"scale of shape {list(s.shape)}")


class _QuantDequant(_GpuOp):
    """QuantizeLinear / DequantizeLinear: per-tensor or per-axis, int8/uint8, float32 scale."""

    def __init__(self, graph, node, kw, defaults, api, quantize: bool):
        _check_attrs(node, kw, defaults, ("axis", "block_size", "output_dtype", "precision",
                                          "saturate"))
        x, sname, zname = _inputs(node, 3)
        op = node.op_type
        s = _const(graph, sname, "scale")
        z = _const(graph, zname, "zero point", optional=True)
        if kw.get("block_size", 0):
            raise _NoGpu(f"blocked quantization (block_size={kw['block_size']})")
        if quantize:
            if kw.get("precision", 0):
                raise _NoGpu("QuantizeLinear precision attribute")
            odt = kw.get("output_dtype", 0)
            dtype = np.dtype(z.dtype) if z is not None else _ONNX_INT8.get(odt) if odt else \
                np.dtype(np.uint8)
            if dtype is None or (z is not None and odt and _ONNX_INT8.get(odt) != dtype):
                raise _NoGpu(f"output_dtype {odt}")
        else:
            if kw.get("output_dtype", 0) not in (0, 1):
                raise _NoGpu(f"output_dtype {kw['output_dtype']} (the kernel writes float32)")
            dtype = np.dtype(z.dtype) if z is not None else None
        if dtype is not None and dtype not in _INT8:
            raise _NoGpu(f"{dtype} quantized values (the CUDA kernels take int8/uint8)")
        _require_dtype(graph, x, (_F32,) if quantize else _INT8, "input")
        _qparams_checked(op, s, z, dtype if dtype is not None else np.uint8)
        self.quantize = quantize
        self.dtype = dtype
        self.channels = int(s.size)
        self.axis = int(kw.get("axis", 1))
        self.qp = api.prepare_qparams(s, z)
        self.kernel = "cuda.quantize" if quantize else "cuda.dequantize"
        super().__init__(node, (CUDA, None, None), (CUDA,))

    def run(self, api, args, stream):
        x = args[0]
        if self.quantize:
            if np.dtype(x.dtype) != _F32:
                raise _HostFallback
        elif np.dtype(x.dtype) not in _INT8 or (self.dtype is not None and x.dtype != self.dtype):
            raise _HostFallback
        axis = None
        if self.channels > 1:
            xs = tuple(x.shape)
            r = len(xs)
            if not -r <= self.axis < r or xs[self.axis] != self.channels:
                raise _HostFallback
            axis = self.axis
        if self.quantize:
            return (api.quantize_cuda(x, self.qp, None, self.dtype, axis=axis, stream=stream),)
        return (api.dequantize_cuda(x, self.qp, None, axis=axis, stream=stream),)


class _DynamicQuantize(_GpuOp):
    """DynamicQuantizeLinear: y stays on the device; scale and zero point (8 bytes) come to the
    host, where the integer ops' epilogues take them as per-call parameters."""

    kernel = "cuda.dynamic_quantize"

    def __init__(self, graph, node, kw, defaults, api):
        _check_attrs(node, kw, defaults, ())
        _require_dtype(graph, node.inputs[0], (_F32,), "input")
        super().__init__(node, (CUDA,), (CUDA, CPU, CPU))

    def run(self, api, args, stream):
        x = args[0]
        if np.dtype(x.dtype) != _F32:
            raise _HostFallback
        # scale 1.0 when the range is 0: qrt's CPU op (and onnxruntime), not ONNX's 1/255
        y, s, z = api.dynamic_quantize_cuda(x, stream=stream, zero_range_scale=1.0)
        sh = s.copy_to_host(stream=stream)
        zh = z.copy_to_host(stream=stream)
        stream.synchronize()
        return y, np.array(sh[0], np.float32), np.array(zh[0], np.uint8)


class _Lut(_GpuOp):
    """qrt.QLut: one (256,) table, or (C, 256) per channel along axis 1."""

    kernel = "cuda.lut"

    def __init__(self, graph, node, kw, defaults, api):
        _check_attrs(node, kw, defaults, ("table", "in_lo", "kernel"))
        _require_dtype(graph, node.inputs[0], _INT8, "input")
        table = kw.get("table")
        if table is None or np.ndim(table) not in (1, 2) or np.shape(table)[-1] < 256:
            raise _NoGpu("lookup table does not hold every 8-bit code")
        t = np.asarray(table)
        self.channels = 1 if t.ndim == 1 else int(t.shape[0])
        self.table = api.to_device(np.ascontiguousarray(t.reshape(-1, t.shape[-1])))
        self.in_lo = int(kw["in_lo"])
        super().__init__(node, (CUDA,), (CUDA,))

    def run(self, api, args, stream):
        x = args[0]
        xs = tuple(x.shape)
        if np.dtype(x.dtype) not in _INT8 or not xs or \
                self.in_lo != (0 if x.dtype == np.uint8 else -128) or \
                (self.channels > 1 and (len(xs) < 2 or xs[1] != self.channels)):
            raise _HostFallback
        return (api.lut_cuda(x, self.table, self.in_lo, axis=1, stream=stream),)


def _pool_out(in_sp, kernel, strides, dilations, pads, auto_pad, ceil_mode):
    """ONNX pooling geometry -> (begin pads, output spatial); None where ONNX says the output
    is empty or the attributes do not fit (the CPU op then reports it)."""
    nd = len(in_sp)
    dk = [(kernel[i] - 1) * dilations[i] + 1 for i in range(nd)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-in_sp[i] // strides[i]) for i in range(nd)]
        begin = []
        for i in range(nd):
            total = max(0, (out[i] - 1) * strides[i] + dk[i] - in_sp[i])
            begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    elif auto_pad == "VALID":
        begin = [0] * nd
        out = [(in_sp[i] - dk[i]) // strides[i] + 1 for i in range(nd)]
    elif auto_pad in ("NOTSET", ""):
        p = [int(v) for v in pads] if pads else [0] * (2 * nd)
        if len(p) != 2 * nd:
            return None
        begin, out = p[:nd], []
        for i in range(nd):
            span = in_sp[i] + p[i] + p[i + nd] - dk[i]
            o = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
            if ceil_mode and (o - 1) * strides[i] >= in_sp[i] + p[i]:
                o -= 1  # a ceil-mode window starting past the input and its begin padding
            out.append(o)
    else:
        return None
    if min(out) <= 0:
        return None
    return tuple(begin), tuple(out)


class _MaxPool(_GpuOp):
    """MaxPool of 8-bit data (int8 kept through pooling by passes/qdq_passthrough): exact."""

    kernel = "cuda.maxpool"

    def __init__(self, graph, node, kw, defaults, api):
        _check_attrs(node, kw, defaults, ("auto_pad", "ceil_mode", "dilations", "kernel_shape",
                                          "pads", "storage_order", "strides"))
        if len([o for o in node.outputs if o]) != 1 or len(node.outputs) != 1:
            raise _NoGpu("MaxPool with an Indices output")
        _require_dtype(graph, node.inputs[0], _INT8, "data")
        self.ks = tuple(int(k) for k in kw["kernel_shape"])
        nd = len(self.ks)
        if nd not in (1, 2):
            raise _NoGpu(f"{nd}-D pooling (the CUDA kernel takes 1-D and 2-D)")
        self.strides = tuple(int(v) for v in (kw.get("strides") or (1,) * nd))
        self.dilations = tuple(int(v) for v in (kw.get("dilations") or (1,) * nd))
        self.kw = kw
        super().__init__(node, (CUDA,), (CUDA,))

    def run(self, api, args, stream):
        x = args[0]
        xs = tuple(x.shape)
        nd = len(self.ks)
        if np.dtype(x.dtype) not in _INT8 or len(xs) != nd + 2 or len(self.strides) != nd or \
                len(self.dilations) != nd:
            raise _HostFallback
        geo = _pool_out(xs[2:], self.ks, self.strides, self.dilations, self.kw.get("pads"),
                        self.kw.get("auto_pad", "NOTSET"), self.kw.get("ceil_mode", 0))
        if geo is None:
            raise _HostFallback
        begin, out = geo
        # only the begin pads place the windows; the end ones only shape the output (given)
        return (api.maxpool_cuda(x, self.ks, self.strides, begin + (0,) * nd, self.dilations,
                                 out_spatial=out, stream=stream),)


class _GlobalAvg(_GpuOp):
    """qrt.QGlobalAveragePool: exact integer sums per (n, c), the CPU op's float64 rescale."""

    kernel = "cuda.global_avg"

    def __init__(self, graph, node, kw, defaults, api):
        _check_attrs(node, kw, defaults, ("x_scale", "x_zp", "y_scale", "y_zp", "out_dtype",
                                          "kernel"))
        _require_dtype(graph, node.inputs[0], _INT8, "input")
        self.out_dtype = np.dtype(kw["out_dtype"])
        if self.out_dtype not in _INT8:
            raise _NoGpu(f"{self.out_dtype} output")
        self.kw = kw
        super().__init__(node, (CUDA,), (CUDA,))

    def run(self, api, args, stream):
        x = args[0]
        xs = tuple(x.shape)
        if np.dtype(x.dtype) not in _INT8 or len(xs) < 3:
            raise _HostFallback
        hw = math.prod(xs[2:])
        kw = self.kw
        m = np.float64(kw["x_scale"]) / (np.float64(kw["y_scale"]) * max(hw, 1))  # as the CPU op
        y = api.global_avg_cuda(x, kw["x_zp"], m, kw["y_zp"], self.out_dtype, stream=stream)
        return (y.reshape(*(xs[:2] + (1,) * (len(xs) - 2))),)


class _ShapeOnly(_GpuOp):
    """Reshape / Flatten / Squeeze / Unsqueeze / Identity on a device array: the CPU op runs on a
    zero-strided host stand-in of the same shape (no memory), and its result's shape is applied to
    the device array as a view. Shape arguments stay on the host."""

    kernel = "cuda.view"

    def __init__(self, graph, node, kw, api, fn, kwargs):
        self.fn, self.kwargs = fn, kwargs
        super().__init__(node, (CUDA,) + (CPU,) * (len(node.inputs) - 1), (CUDA,))

    def run(self, api, args, stream):
        x = args[0]
        stand_in = np.broadcast_to(np.zeros((), x.dtype), tuple(x.shape))
        shape = tuple(np.shape(self.fn(stand_in, *args[1:], **self.kwargs)))
        return (x if shape == tuple(x.shape) else x.reshape(*shape),)


_SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
_LOWER: dict[tuple[str, str], Callable] = {
    ("qrt", "QConv"): _QConv,
    ("qrt", "QGemm"): _QGemm,
    ("", "QuantizeLinear"): lambda g, n, kw, d, api: _QuantDequant(g, n, kw, d, api, True),
    ("", "DequantizeLinear"): lambda g, n, kw, d, api: _QuantDequant(g, n, kw, d, api, False),
    ("", "DynamicQuantizeLinear"): _DynamicQuantize,
    ("qrt", "QLut"): _Lut,
    ("", "MaxPool"): _MaxPool,
    ("qrt", "QGlobalAveragePool"): _GlobalAvg,
}


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------

_GPU, _CPU_STEP, _H2D, _D2H = 0, 1, 2, 3
# The simulator runs one kernel at a time in the whole process: calls of every session take turns.
_SIM_LOCK = threading.Lock()


@dataclass
class CudaStep:
    kind: int  # _GPU, _CPU_STEP, _H2D, _D2H
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    node: ir.Node | None = None  # None for a transfer
    fn: Callable | None = None  # the CPU op (also a GPU op's run-time fallback)
    kwargs: dict | None = None
    op: _GpuOp | None = None
    frees: tuple[int, ...] = ()
    transfer: dict | None = None


def _describe(x) -> str:
    if x is None:
        return "None"
    if isinstance(x, np.ndarray):
        return f"{x.dtype}{list(x.shape)}"
    if hasattr(x, "copy_to_host"):
        return f"{np.dtype(x.dtype)}{list(x.shape)} on cuda"
    return type(x).__name__


def _static_info(graph: ir.Graph, name: str):
    """(shape list or None, dtype name or None, bytes or None) from what the graph declares."""
    if name in graph.initializers:
        a = graph.initializers[name]
        return list(a.shape), a.dtype.name, int(a.nbytes)
    t = graph.value_info.get(name)
    if t is None:
        for u in list(graph.inputs) + list(graph.outputs):
            if u.name == name:
                t = u
                break
    if t is None or t.kind != "tensor":
        return None, None, None
    shape = list(t.shape) if t.shape is not None else None
    dtype = None if t.dtype is None else np.dtype(t.dtype)
    nbytes = None
    if shape is not None and dtype is not None and all(isinstance(d, int) and d >= 0
                                                        for d in shape):
        nbytes = int(math.prod(shape)) * dtype.itemsize
    return shape, (None if dtype is None else dtype.name), nbytes


class CudaPlan:
    """Same interface as qrt.plan.Plan: `execute(feeds, names, observer=None, profile=None)`."""

    def __init__(self, graph: ir.Graph, threads: int = 1):
        from qrt.kernels.cuda import api
        from qrt.kernels.cuda import _kernels as K

        self._api = api
        self.graph = graph
        self.threads = threads
        self.slot: dict[tuple[str, str], int] = {}
        base: dict[int, Any] = {}
        where: dict[str, set] = {}  # value -> devices holding it at this point of the plan
        for t in graph.inputs:
            self._slot(t.name, CPU)
            where[t.name] = {CPU}
        for name, arr in graph.initializers.items():
            base[self._slot(name, CPU)] = arr
            where[name] = {CPU}
        self.steps: list[CudaStep] = []
        self.node_info: dict[int, dict] = {}  # id(node) -> device facts for the report
        self.transfers: list[dict] = []
        self.uploaded: list[str] = []  # constants copied to the device once, at build

        producer: dict[str, ir.Node] = {}

        def bring(name, dev, reader):
            if dev in where.setdefault(name, set()):
                return
            if name in graph.initializers and dev == CUDA:  # once, now; not per call
                base[self._slot(name, CUDA)] = api.to_device(graph.initializers[name])
                self.uploaded.append(name)
            else:
                shape, dtype, nbytes = _static_info(graph, name)
                t = {"value": name, "direction": "host_to_device" if dev == CUDA
                     else "device_to_host",
                     "before": (reader.name or reader.label()) if reader is not None else None,
                     "shape": shape, "dtype": dtype, "bytes": nbytes}
                src = self.slot[(name, CPU if dev == CUDA else CUDA)]
                self.steps.append(CudaStep(_H2D if dev == CUDA else _D2H, (src,),
                                           (self._slot(name, dev),), transfer=t))
                self.transfers.append(t)
                owner = reader if reader is not None else producer.get(name)
                if owner is not None:  # a graph output is listed with the node that made it
                    self.node_info[id(owner)]["transfers"].append(t)
            where[name].add(dev)

        for node in graph.nodes:
            opdef = resolve(node.op_type, node.domain, graph.opset(node.domain))
            if opdef is None:  # passes may only emit registered ops
                raise RuntimeError(f"no implementation bound for {node.label()}")
            kwargs = {a: node.attrs.get(a, d) for a, d in opdef.attrs.items()}
            if opdef.wants_ctx:
                kwargs["ctx"] = NodeContext(node.name, node.op_type, len(node.outputs), threads)
            op, reason = self._lower(node, kwargs, where, opdef)
            info = {"device": CUDA if op else CPU, "reason": reason,
                    "kernel": op.kernel if op else "", "transfers": []}
            self.node_info[id(node)] = info
            dev_in = op.dev_in if op else (CPU,) * len(node.inputs)
            dev_out = op.dev_out if op else (CPU,) * len(node.outputs)
            ins = []
            for name, dev in zip(node.inputs, dev_in):
                if not name:
                    ins.append(-1)
                    continue
                dev = dev or CPU  # a constant the op uploaded: the host copy serves a fallback
                bring(name, dev, node)
                ins.append(self.slot[(name, dev)])
            outs = []
            for name, dev in zip(node.outputs, dev_out):
                if name:
                    outs.append(self._slot(name, dev))
                    where[name] = {dev}
                    producer[name] = node
                else:
                    outs.append(-1)
            if op is not None:
                for t in op.per_call_uploads(node):
                    self.transfers.append(t)
                    info["transfers"].append(t)
                if CPU in dev_out:
                    # outputs the op brings to the host itself (DynamicQuantizeLinear's params)
                    for name, dev in zip(node.outputs, dev_out):
                        if name and dev == CPU:
                            shape, dtype, _ = _static_info(graph, name)
                            t = {"value": name, "direction": "device_to_host", "before": None,
                                 "shape": [], "dtype": dtype, "bytes": 4, "inside": node.name}
                            self.transfers.append(t)
                            info["transfers"].append(t)
                self.steps.append(CudaStep(_GPU, tuple(ins), tuple(outs), node, opdef.fn, kwargs,
                                           op))
            else:
                self.steps.append(CudaStep(_CPU_STEP, tuple(ins), tuple(outs), node, opdef.fn,
                                           kwargs))
        for t in graph.outputs:
            if t.name in where and CPU not in where[t.name]:
                bring(t.name, CPU, None)
        self.base = [None] * len(self.slot)
        for s, v in base.items():
            self.base[s] = v
        self.input_slots = {t.name: self.slot[(t.name, CPU)] for t in graph.inputs}
        self.output_slots = {t.name: self.slot[(t.name, CPU)] for t in graph.outputs
                             if (t.name, CPU) in self.slot}
        self._lifetimes(set(base))
        self.step_names = [st.node.name or f"{st.node.op_type}_{k}" if st.node is not None else
                           f"{st.transfer['direction']}:{st.transfer['value']}"
                           for k, st in enumerate(self.steps)]
        self._serial = _SIM_LOCK if K.SIMULATOR else None
        self._blas = self._blas_limit()

    # -- building ---------------------------------------------------------------------------
    def _slot(self, name: str, dev: str) -> int:
        key = (name, dev)
        if key not in self.slot:
            self.slot[key] = len(self.slot)
        return self.slot[key]

    def _lower(self, node, kwargs, where, opdef):
        """(GPU op, "") or (None, why it runs on the CPU)."""
        key = (node.domain, node.op_type)
        try:
            if not node.domain and node.op_type in _SHAPE_OPS:
                data = node.inputs[0] if node.inputs else ""
                if not data or CUDA not in where.get(data, ()):
                    return None, "data is on the host (shape-only op: runs where its input is)"
                return _ShapeOnly(self.graph, node, kwargs, self._api, opdef.fn, kwargs), ""
            make = _LOWER.get(key)
            if make is None:
                return None, f"no CUDA kernel for {node.op_type}"
            return make(self.graph, node, kwargs, opdef.attrs, self._api), ""
        except _NoGpu as e:
            return None, str(e)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            # attributes or constants of a shape this lowering did not expect: the CPU op still
            # runs the node, and the report says so (a qrt bug worth reporting)
            return None, f"GPU lowering failed ({type(e).__name__}: {e})"

    def _lifetimes(self, constants: set) -> None:
        keep = set(self.output_slots.values()) | constants
        last: dict[int, int] = {}
        for k, st in enumerate(self.steps):
            for s in st.ins + st.outs:
                if s >= 0:
                    last[s] = k
        frees: dict[int, list[int]] = {}
        for s, k in last.items():
            if s not in keep:
                frees.setdefault(k, []).append(s)
        for k, st in enumerate(self.steps):
            st.frees = tuple(frees.get(k, ()))

    @staticmethod
    def _blas_limit():
        try:
            from qrt.kernels.cpu import blas_threads
        except Exception:  # pragma: no cover
            return None
        return blas_threads if blas_threads.available() else None

    # -- report -----------------------------------------------------------------------------
    def annotate(self, entries: list[dict]) -> list[dict]:
        """The lowering report's entries with the device fields added (see qrt.report)."""
        from qrt.report import add_device_fields
        return add_device_fields(entries, self.graph, self.node_info)

    # -- running ----------------------------------------------------------------------------
    def execute(self, feeds: dict[str, np.ndarray], names: list[str],
                observer: Callable[[ir.Node, list, list], None] | None = None,
                profile: dict | None = None) -> list[np.ndarray]:
        """Run every step; outputs are host numpy arrays. `observer(node, inputs, outputs)` sees
        host copies of every value (slow: each device value is copied); `profile` accumulates
        wall seconds per step (GPU steps are asynchronous: their time lands on the next step that
        waits for the device)."""
        if self._serial is not None:
            with self._serial:
                return self._execute(feeds, names, observer, profile)
        return self._execute(feeds, names, observer, profile)

    def _execute(self, feeds, names, observer, profile):
        if self._blas is None:
            return self._run(feeds, names, observer, profile)
        with self._blas.limit(1):
            return self._run(feeds, names, observer, profile)

    def _run(self, feeds, names, observer, profile):
        api = self._api
        stream = api.cuda.stream()
        vals = list(self.base)
        for name, arr in feeds.items():
            vals[self.input_slots[name]] = arr
        perf = time.perf_counter
        for k, st in enumerate(self.steps):
            t0 = perf() if profile is not None else 0.0
            kind = st.kind
            if kind == _H2D:
                x = vals[st.ins[0]]
                vals[st.outs[0]] = api.to_device(x, stream=stream)
            elif kind == _D2H:
                vals[st.outs[0]] = vals[st.ins[0]].copy_to_host(stream=stream)
                stream.synchronize()
            else:
                args = [vals[i] if i >= 0 else None for i in st.ins]
                try:
                    if kind == _GPU:
                        res = self._gpu_step(st, args, stream)
                    else:
                        res = st.fn(*args, **st.kwargs)
                except NodeExecutionError:
                    raise
                except Exception as e:
                    raise self._fail(st, args, e) from e
                self._store(vals, st.outs, res)
                if observer is not None:
                    observer(st.node, [self._host(a, stream) for a in args],
                             [self._host(vals[s], stream) if s >= 0 else None for s in st.outs])
            if profile is not None:
                key = self.step_names[k]
                profile[key] = profile.get(key, 0.0) + (perf() - t0)
            for s in st.frees:
                vals[s] = None
        stream.synchronize()
        slots = self.output_slots
        return [vals[slots[n]] for n in names]

    def _gpu_step(self, st, args, stream):
        try:
            return st.op.run(self._api, args, stream)
        except _HostFallback:
            pass
        res = st.fn(*[self._host(a, stream) for a in args], **st.kwargs)
        if not isinstance(res, tuple):
            res = (res,)
        return tuple(self._api.to_device(r, stream=stream)
                     if dev == CUDA and isinstance(r, (np.ndarray, np.generic)) else r
                     for r, dev in zip(res, st.op.dev_out))

    def _host(self, x, stream):
        if x is not None and hasattr(x, "copy_to_host"):
            h = x.copy_to_host(stream=stream)
            stream.synchronize()
            return h
        return x

    @staticmethod
    def _store(vals, outs, res):
        if len(outs) == 1:
            if outs[0] >= 0:
                vals[outs[0]] = res[0] if isinstance(res, tuple) else res
            return
        for s, r in zip(outs, res):
            if s >= 0:
                vals[s] = r

    @staticmethod
    def _fail(st, args, e):
        where = "on cuda" if st.kind == _GPU else "on cpu"
        if isinstance(e, QrtError):  # keep the specific type (e.g. InvalidQuantParamsError)
            try:
                return type(e)(f"{st.node.label()}: {e}")
            except Exception:
                pass
        shapes = ", ".join(_describe(a) for a in args)
        return NodeExecutionError(
            f"{st.node.label()} failed {where} on inputs ({shapes}): {type(e).__name__}: {e}")
