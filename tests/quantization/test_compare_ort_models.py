"""`qrt compare` on a model quantized by onnxruntime (PP-OCR classifier, quant_pre_process +
quantize_static): onnxruntime drops the Relu/Clip after a Conv/Add and lets the output
QuantizeLinear clip instead, and fuses MatMul + Add into Gemm, so a quantized node may write an FP32
tensor name with a different meaning (pre-ReLU values under a post-ReLU name). The per-layer local
numbers must still mean "this layer alone": checked against a subgraph cut out of the quantized
model with onnx's extractor and run in onnxruntime."""
import numpy as np
import onnx
import pytest

from qrt.quantization import compare_models
from qrt.quantization.compare import LOCAL_NOTE
from tests.quantization.real_models import (ort_quantized, ort_session, pages, real_model_path)

pytest.importorskip("onnxruntime.quantization")

# Local error leaves out what earlier layers did, so it should not be worse than the cumulative
# error at the same tensor; 1 dB of slack for upstream errors that happen to cancel this layer's.
LOCAL_VS_CUMULATIVE_DB = 1.0
# qrt (grafted local model) vs onnxruntime (extracted subgraph) on the same float QDQ math.
SAME_MATH_DB = 0.05


@pytest.fixture(scope="module")
def report():
    src = real_model_path("cls")
    if src is None:
        pytest.skip("ppocr_cls.onnx not fetched: run `python models/fetch_real_models.py`")
    q = ort_quantized("cls", "minmax", preprocess=True)
    feeds = pages("cls", 6, 2000)
    return src, q, feeds, compare_models(src, q, feeds)


def test_local_numbers_are_not_worse_than_cumulative(report):
    _, _, _, rep = report
    both = [r for r in rep.layers if r.local_sqnr_db is not None and r.sqnr_db is not None]
    assert len(both) > 40
    bad = [(r.layer, r.tensor, r.sqnr_db, r.local_sqnr_db) for r in both
           if r.local_sqnr_db < r.sqnr_db - LOCAL_VS_CUMULATIVE_DB]
    assert not bad, bad[:5]


def test_dropped_relu_is_measured_after_the_output_qdq(report):
    src, q, feeds, rep = report
    # Conv@1 -> Relu in FP32; onnxruntime's Conv@1 writes `relu_0.tmp_0` itself (pre-ReLU values)
    qm = onnx.load(q)
    prod = {o: n for n in qm.graph.node for o in n.output}
    assert prod["relu_0.tmp_0"].op_type == "Conv"
    row = next(r for r in rep.layers if r.tensor == "relu_0.tmp_0")
    assert row.local_note and "Relu" in row.local_note
    assert LOCAL_NOTE in rep.to_text() and row.local_sqnr_db > 20
    # independent value: cut hardswish_0.tmp_0 -> ... -> DQ(relu_0.tmp_0) out of the quantized
    # model, feed it the FP32 model's own hardswish_0.tmp_0, compare with FP32 relu_0.tmp_0
    sub = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(qm)).extract_model(["hardswish_0.tmp_0"],
                                                 ["relu_0.tmp_0_DequantizeLinear_Output"])
    f = onnx.load(src)
    for name in ("hardswish_0.tmp_0", "relu_0.tmp_0"):
        f.graph.output.append(onnx.ValueInfoProto(name=name))
    fs, ss = ort_session(f, optimize=False), ort_session(sub, optimize=False)
    sig = noise = 0.0
    for feed in feeds:
        x, ref = fs.run(["hardswish_0.tmp_0", "relu_0.tmp_0"], feed)
        got = ss.run(None, {"hardswish_0.tmp_0": x})[0]
        sig += float(np.sum(ref.astype(np.float64) ** 2))
        noise += float(np.sum((ref.astype(np.float64) - got) ** 2))
    assert row.local_sqnr_db == pytest.approx(10 * np.log10(sig / noise), abs=SAME_MATH_DB)


def test_worst_layer_is_the_saturating_one(report):
    """The classifier's logits are quantized on the range of 4 calibration pages and clip on
    others: that layer (MatMul fused into Gemm by onnxruntime) has the worst local error."""
    _, _, _, rep = report
    worst = rep.worst(1)[0]
    assert worst.tensor == "linear_1.tmp_1" and worst.saturated > 0 and worst.local_note
