"""Graph rewrites, run as a plain ordered list. Each pass is `run(graph, options) -> bool` (changed?)
and lives in a module of its own. A pass never calls a kernel; it only rewrites the graph."""
from __future__ import annotations

from dataclasses import dataclass

from qrt import ir
from qrt.errors import ModelLoadError, QrtError


@dataclass(frozen=True)
class PassOptions:
    dynamic_quantization: bool = False
    device: str = "cpu"


# The ordered pipeline (module names under qrt.passes). Filled in as passes land.
PIPELINE: list[str] = [
    "check_params",       # 0. constant quantization parameters and conv weights checked, as the ops would
    "fold_constants",     # 1. evaluate constant subgraphs once (not Q/DQ, not exploding ones)
    "fold_weight_qdq",    # 2. weight Q offline, DQ(weight) kept as int8 + QuantParams
    "fold_batchnorm",     # 3. BN into the preceding float Conv/Gemm
    "qdq_passthrough",    # 6a. int8 through Reshape/Transpose/MaxPool/...; DQ -> Q identity dropped
    "fuse_qdq",           # 4. DQ -> Conv/ConvTranspose/MatMul/Gemm (-> Relu/Clip) (-> Q) -> integer op
    "dynamic_quant",      # 7. DynamicQuantizeLinear + MatMulInteger/ConvInteger + Cast + Mul; option
    "lower_qoperator",    # 5. QLinearConv/QLinearMatMul/ConvInteger/MatMulInteger -> fused ops
    "qdq_elementwise",    # 6b. DQ -> elementwise chain -> Q as a 256-entry table; QAdd/QMul
    "qdq_passthrough",    # again: fusion and tables expose more DQ -> Q pairs
    "lut_regions",        # 6c. any elementwise region of one 8-bit tensor -> one (per-channel) table
    "cleanup",            # dead code, leftover constant DQ -> float, reasons
]


def run_pipeline(graph: ir.Graph, *, optimize: bool = True, dynamic_quantization: bool = False,
                 device: str = "cpu") -> list[dict]:
    """Rewrite `graph` in place; return the lowering report (one entry per source node)."""
    import importlib

    source = list(graph.source_nodes) or [(n.name, n.op_type) for n in graph.nodes]
    opts = PassOptions(dynamic_quantization, device)
    if optimize:
        for modname in PIPELINE:
            try:
                importlib.import_module(f"qrt.passes.{modname}").run(graph, opts)
            except QrtError:
                raise
            except Exception as e:  # a pass tripping over a malformed graph: say so, never a raw trace
                raise ModelLoadError(
                    f"{graph.source}: the optimising pass '{modname}' could not handle this model "
                    f"({type(e).__name__}: {e}); InferenceSession(..., optimize=False) runs it as "
                    "written") from e
    from qrt.report import build_report
    return build_report(source, graph)
