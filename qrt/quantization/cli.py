"""`qrt quantize` and `qrt compare`. `register(subparsers)` adds both; each sets `args.func`."""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from qrt.quantization.observers import METHODS


def register(subparsers) -> None:
    q = subparsers.add_parser(
        "quantize", help="quantize an FP32 ONNX model to INT8 (QDQ ONNX, runs in onnxruntime too)",
        description="Static quantization calibrates activation ranges on --data (an .npz with one "
                    "array per model input, samples on axis 0); --dynamic needs no data.")
    q.add_argument("fp32", help="input FP32 .onnx")
    q.add_argument("int8", help="output INT8 .onnx")
    q.add_argument("--data", help=".npz calibration data (default: random inputs, with a warning)")
    q.add_argument("--method", default="minmax", choices=METHODS, help="calibration method")
    pc = q.add_mutually_exclusive_group()
    pc.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                    help="per-output-channel weight scales (default)")
    pc.add_argument("--per-tensor", dest="per_channel", action="store_false",
                    help="one scale per weight tensor")
    q.add_argument("--activation-type", default="uint8", choices=["uint8", "int8"])
    q.add_argument("--weight-type", default="int8", choices=["int8", "int4"])
    q.add_argument("--symmetric-activations", action="store_true")
    q.add_argument("--block-size", type=int, default=None,
                   help="blocked weight quantization along the input channels (opset 21)")
    q.add_argument("--percentile", type=float, default=99.99)
    q.add_argument("--dynamic", action="store_true",
                   help="no calibration: activations quantized per call (DynamicQuantizeLinear + "
                        "ConvInteger/MatMulInteger, as onnxruntime's quantize_dynamic writes)")
    q.add_argument("--dynamic-format", choices=["integer", "weight_only"], default=None,
                   help="--dynamic: integer ops (default for 8-bit weights) or int8/int4 weights + "
                        "DequantizeLinear with float activations (default for int4 / --block-size)")
    q.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="static: skip the empirical bias correction")
    q.add_argument("--no-saturation-safe", dest="saturation_safe", action="store_false",
                   help="keep int8 weights int8 even where u8 x s8 pair sums could overflow int16 "
                        "(faster u8 x s8 kernels in onnxruntime on VNNI CPUs; they saturate on "
                        "CPUs without VNNI)")
    q.add_argument("--exclude", action="append", default=[], metavar="NODE",
                   help="keep this node float (repeatable)")
    q.add_argument("--exclude-op-type", action="append", default=[], metavar="OP",
                   help="keep every node of this op type float (repeatable)")
    q.add_argument("--target-sqnr", type=float, default=None,
                   help="automatic mixed precision: keep sensitive layers float until the "
                        "outputs' SQNR (dB) reaches this")
    q.add_argument("--samples", type=int, default=16,
                   help="random calibration batches when no --data is given")
    q.add_argument("--progress", action="store_true", help="print calibration progress to stderr")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.set_defaults(func=run_quantize)

    c = subparsers.add_parser("compare", help="per-layer error of an INT8 model against its FP32 "
                                              "original (SQNR, cosine, saturation)")
    c.add_argument("fp32")
    c.add_argument("int8")
    c.add_argument("--data", help=".npz inputs (default: random inputs)")
    c.add_argument("--html", help="write a self-contained HTML report here")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_compare)


def run_quantize(args) -> int:
    from qrt.quantization import quantize_dynamic, quantize_static
    from qrt.quantization.calibrate import npz_batches, random_feeds
    from qrt.quantization.preprocess import load

    try:
        if args.dynamic:
            res = quantize_dynamic(args.fp32, args.int8, per_channel=args.per_channel,
                                   weight_type=args.weight_type, block_size=args.block_size,
                                   exclude_nodes=args.exclude, exclude_op_types=args.exclude_op_type,
                                   format=args.dynamic_format,
                                   saturation_safe=args.saturation_safe)
        else:
            model = load(args.fp32)
            if args.data:
                data = npz_batches(args.data, model)
            else:
                print("warning: no --data given: calibrating on random normal inputs; ranges (and "
                      "accuracy) will not reflect real data", file=sys.stderr)
                data = random_feeds(model, args.samples)
            res = quantize_static(
                args.fp32, args.int8, data, method=args.method, per_channel=args.per_channel,
                activation_type=args.activation_type, weight_type=args.weight_type,
                symmetric_activations=args.symmetric_activations, block_size=args.block_size,
                exclude_nodes=args.exclude, exclude_op_types=args.exclude_op_type,
                target_error=args.target_sqnr, percentile=args.percentile,
                progress=args.progress, bias_correction=args.bias_correction,
                saturation_safe=args.saturation_safe)
    except (ValueError, TypeError, OSError) as e:
        print(f"qrt quantize: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # qrt's own errors (unsupported ops, bad model)
        from qrt.errors import QrtError
        if isinstance(e, QrtError):
            print(f"qrt quantize: error: {e}", file=sys.stderr)
            return 2
        raise
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, default=str))
    else:
        print(res.summary())
    return 0


def run_compare(args) -> int:
    from qrt.quantization import compare_models
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = compare_models(args.fp32, args.int8, args.data)
    except (ValueError, TypeError, OSError) as e:
        print(f"qrt compare: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # qrt's own errors (unsupported ops, bad model)
        from qrt.errors import QrtError
        if isinstance(e, QrtError):
            print(f"qrt compare: error: {e}", file=sys.stderr)
            return 2
        raise
    if args.data is None and not args.json:
        print("note: no --data given: compared on random normal inputs", file=sys.stderr)
    if args.html:
        rep.to_html(args.html)
    if args.json:
        print(rep.to_json())
    else:
        print(rep.to_text())
        w = rep.worst(1)
        if w:
            print(f"worst layer: {w[0].layer} (local SQNR {w[0].local_sqnr_db:.2f} dB)"
                  if w[0].local_sqnr_db is not None else f"worst layer: {w[0].layer}")
        if args.html:
            print(f"report written to {args.html}")
    return 0


def main(argv=None) -> int:  # standalone entry point for debugging: python -m qrt.quantization.cli
    ap = argparse.ArgumentParser(prog="qrt")
    sub = ap.add_subparsers(dest="command", required=True)
    register(sub)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
