"""qrt as an ONNX backend (`onnx.backend.base.Backend`), so ONNX's own test runner and any tool
written against that interface can drive it:

    import onnx.backend.test, qrt.backend
    tests = onnx.backend.test.BackendTest(qrt.backend, __name__)
    globals().update(tests.test_cases)

`prepare(model, device="CPU", optimize=True, threads=None)` returns a rep whose `run(inputs)` takes
the inputs as a list (in the model's input order) or a dict, and returns a namedtuple of outputs.
`run_node` wraps a single NodeProto in a model typed from its inputs and runs it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, namedtupledict

from qrt.session import InferenceSession

_OPTIONS = ("optimize", "threads", "device", "dynamic_quantization")


def _device(device: str) -> str:
    d = str(device).upper().split(":")[0]
    if d not in ("CPU", "CUDA"):
        raise ValueError(f"qrt.backend: unknown device {device!r} (CPU or CUDA)")
    return d.lower()


class QrtRep(BackendRep):
    """A prepared model: an InferenceSession plus the input order of `run(list)`."""

    def __init__(self, session: InferenceSession):
        self.session = session
        self._inputs = [i.name for i in session.get_inputs()]
        self._outputs = [o.name for o in session.get_outputs()]

    def run(self, inputs: Any, **kwargs) -> tuple:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) > len(self._inputs):
                raise ValueError(f"qrt.backend: {len(inputs)} inputs given, the model takes "
                                 f"{len(self._inputs)} ({self._inputs})")
            feeds = dict(zip(self._inputs, inputs))
        outs = self.session.run(None, feeds)
        return namedtupledict("Outputs", self._outputs)(*outs)


class QrtBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        try:
            cls.prepare(model, device, **kwargs)
            return True
        except Exception:
            return False

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> QrtRep:
        opts = {k: v for k, v in kwargs.items() if k in _OPTIONS}
        opts.setdefault("device", _device(device))
        return QrtRep(InferenceSession(model, **opts))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs, device: str = "CPU", outputs_info=None,
                 **kwargs) -> tuple:
        if isinstance(inputs, dict):
            named = dict(inputs)
        else:
            present = [n for n in node.input if n]
            named = dict(zip(present, inputs))
        ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype),
                                             list(np.shape(v))) for n, v in named.items()]
        outs = []
        for k, name in enumerate(o for o in node.output if o):
            if outputs_info is not None and k < len(outputs_info):
                dt, shape = outputs_info[k]
                outs.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), list(shape)))
            else:
                outs.append(onnx.ValueInfoProto(name=name))
        opset = int(kwargs.pop("opset_version", 0) or min(onnx.defs.onnx_opset_version(), 28))
        graph = helper.make_graph([node], "qrt_run_node", ins, outs)
        imports = [helper.make_opsetid("", opset)]
        if node.domain and node.domain not in ("", "ai.onnx"):
            imports.append(helper.make_opsetid(node.domain, 1))
        model = helper.make_model(graph, opset_imports=imports)
        return cls.run_model(model, [np.asarray(named[i.name]) for i in ins], device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        d = str(device).upper().split(":")[0]
        if d == "CPU":
            return True
        if d == "CUDA":
            try:
                from qrt import cuda_device
                return bool(cuda_device.available())
            except Exception:
                return False
        return False


prepare = QrtBackend.prepare
run_model = QrtBackend.run_model
run_node = QrtBackend.run_node
supports_device = QrtBackend.supports_device
is_compatible = QrtBackend.is_compatible
