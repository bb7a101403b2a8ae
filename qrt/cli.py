"""The `qrt` command line: run, inspect, demo, bench, warmup (+ quantize, compare).

    qrt demo [--threads N]
    qrt run MODEL [--input NAME=FILE.npy ...] [--threads N] [--seed S] [--save DIR]
    qrt inspect MODEL [--json]
    qrt bench MODEL [--threads N] [--batch B] [--warmup W] [--runs R] [--compare-onnxruntime]
    qrt warmup MODEL [--threads N]
    qrt quantize ... / qrt compare ...     (from qrt.quantization.cli, when present)

Exit codes: 0 success; 2 usage error or bad input (missing/malformed model, bad --input, ...),
reported as one line on stderr, never a traceback; 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import numpy as np

PROG = "qrt"


class CliError(Exception):
    """A user error detected by the CLI itself (bad --input spec, ...): exit code 2."""


# -- helpers ---------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


def _fmt_shape(shape) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _dtype_name(dtype) -> str:
    return "?" if dtype is None else np.dtype(dtype).name


def _json_shape(shape):
    return None if shape is None else [d if isinstance(d, (int, str)) else None for d in shape]


def _session(model: str, threads: int | None = None, **kw):
    import qrt

    return qrt.InferenceSession(model, threads=threads, **kw)


def _load_npy(name: str, path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise CliError(f"--input {name}={path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"--input {name}={path}: is a directory, not a .npy file")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # ValueError / OSError / pickle refusal / truncated file
        raise CliError(f"--input {name}={path}: not a readable .npy file ({e})") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        keys = list(arr.keys())
        if len(keys) != 1:
            raise CliError(f"--input {name}={path}: an .npz file must hold exactly one array "
                           f"(it holds {keys})")
        arr = arr[keys[0]]
    return arr


def parse_input_specs(specs: list[str] | None, sess) -> dict[str, np.ndarray]:
    """`NAME=FILE.npy` specs -> feeds. Names are checked against the model's inputs."""
    feeds: dict[str, np.ndarray] = {}
    known = [a.name for a in sess.get_inputs()]
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise CliError(f"bad --input {spec!r}: expected NAME=FILE.npy (the model's inputs: "
                           f"{', '.join(known)})")
        if name not in known:
            raise CliError(f"bad --input {spec!r}: the model has no input '{name}' (its inputs: "
                           f"{', '.join(known)})")
        if name in feeds:
            raise CliError(f"bad --input {spec!r}: input '{name}' given twice")
        feeds[name] = _load_npy(name, path)
    return feeds


def random_feed(arg, rng: np.random.Generator, batch: int | None = None) -> np.ndarray:
    """A random array of an input's declared type and shape: symbolic or unknown dims become 1
    (the first one becomes `batch` when given); floats ~ N(0, 1), integers in [0, 10), bools."""
    if arg.shape is None:
        raise CliError(f"input '{arg.name}' has an unknown rank: pass it with --input "
                       f"{arg.name}=FILE.npy")
    shape = []
    for axis, d in enumerate(arg.shape):
        if isinstance(d, int):
            if axis == 0 and batch is not None and d != batch:
                raise CliError(f"--batch {batch}: input '{arg.name}' has a fixed batch dimension "
                               f"of {d} (shape {_fmt_shape(arg.shape)})")
            shape.append(d)
        else:
            shape.append(batch if (axis == 0 and batch is not None) else 1)
    dtype = np.dtype(arg.dtype) if arg.dtype is not None else np.dtype(np.float32)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(size=shape).astype(dtype)
    raise CliError(f"input '{arg.name}' has type {arg.type}: pass it with --input "
                   f"{arg.name}=FILE.npy")


def make_feeds(sess, specs, seed: int = 0, batch: int | None = None) -> dict[str, np.ndarray]:
    feeds = parse_input_specs(specs, sess)
    rng = np.random.default_rng(seed)
    for arg in sess.get_inputs():
        if arg.name not in feeds:
            feeds[arg.name] = random_feed(arg, rng, batch)
    return feeds


def run_checked(sess, feeds, specs):
    """sess.run, with a hint when it fails on random inputs whose symbolic dims were set to 1 (a
    CNN with symbolic H and W fails its pools at 1x1): the user should give real inputs."""
    from qrt.errors import QrtError

    try:
        return sess.run(None, feeds)
    except QrtError as e:
        given = {spec.split("=", 1)[0] for spec in specs or []}
        symbolic = [i.name for i in sess.get_inputs() if i.name not in given
                    and any(not isinstance(d, int) for d in (i.shape or [])[1:])]
        if not symbolic:
            raise
        raise CliError(f"{_one_line(e)} (random inputs: the symbolic dimensions of {symbolic} "
                       "were set to 1; pass real ones with --input NAME=FILE.npy)") from e


def summarize(arr: np.ndarray, first: int = 6) -> str:
    a = np.asarray(arr)
    if a.size == 0:
        return "(empty)"
    v = a.astype(np.float64) if (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.number)) \
        else None
    if v is None:
        return f"first {a.reshape(-1)[:first].tolist()}"
    flat = a.reshape(-1)[:first]
    if np.issubdtype(a.dtype, np.floating):
        head = ", ".join(f"{x:.6g}" for x in flat.tolist())
    else:
        head = ", ".join(str(x) for x in flat.tolist())
    more = ", ..." if a.size > first else ""
    return (f"min {v.min():.6g}  max {v.max():.6g}  mean {v.mean():.6g}  "
            f"first [{head}{more}]")


def _percentiles(ns: list[int]) -> dict:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()), "runs": int(ms.size)}


# -- qrt run ---------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    sess = _session(args.model, args.threads)
    feeds = make_feeds(sess, args.input, seed=args.seed)
    for name, x in feeds.items():
        print(f"input  {name}: shape {list(x.shape)} {x.dtype.name}")
    t0 = time.perf_counter()
    outs = run_checked(sess, feeds, args.input)
    dt = time.perf_counter() - t0
    if args.save:
        if os.path.exists(args.save) and not os.path.isdir(args.save):
            raise CliError(f"--save {args.save}: exists and is not a folder")
        os.makedirs(args.save, exist_ok=True)
    for arg, out in zip(sess.get_outputs(), outs):
        out = np.asarray(out)
        print(f"output {arg.name}: shape {list(out.shape)} {out.dtype.name}  {summarize(out)}")
        if args.save:
            safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in arg.name) or "output"
            np.save(os.path.join(args.save, safe + ".npy"), out)
    print(f"ran in {dt * 1e3:.2f} ms (first run, including any kernel compilation)")
    return 0


# -- qrt inspect -----------------------------------------------------------------------------------
def inspect_model(model: str, device: str = "cpu") -> dict:
    """Everything `qrt inspect` shows, as a JSON-ready dict. With device="cuda", each node also
    says where it runs (`device`, `device_reason`, `device_kernel`) and which copies it needs."""
    from qrt import onnx_import

    sess = _session(model, 1, device=device)
    source = onnx_import.load_graph(model)  # the graph as written, before the passes
    vi = dict(source.value_info)
    report = {e["name"]: e for e in sess.lowering_report()}

    def tinfo(name: str) -> dict:
        if name in source.initializers:
            a = source.initializers[name]
            return {"name": name, "dtype": a.dtype.name, "shape": list(a.shape),
                    "initializer": True}
        t = vi.get(name)
        if t is None:
            return {"name": name, "dtype": None, "shape": None}
        return {"name": name, "dtype": None if t.dtype is None else np.dtype(t.dtype).name,
                "shape": _json_shape(t.shape)}

    nodes = []
    for n in source.nodes:
        e = report.get(n.name, {})
        nodes.append({
            "name": n.name, "op_type": n.op_type, "domain": n.domain,
            "precision": e.get("precision"), "kernel": e.get("kernel"),
            "reason": e.get("reason", ""),
            "inputs": [tinfo(i) if i else {"name": "", "dtype": None, "shape": None}
                       for i in n.inputs],
            "outputs": [tinfo(o) for o in n.outputs if o],
        })
        for k in ("device", "device_reason", "device_kernel", "transfers"):
            if e.get(k) is not None:  # folded nodes run nowhere
                nodes[-1][k] = e[k]
    hist = Counter((f"{n.domain}." if n.domain else "") + n.op_type for n in source.nodes)
    precisions = Counter(n["precision"] for n in nodes)
    return {
        "model": model,
        "device": device,
        "opsets": {(k or "ai.onnx"): v for k, v in source.opsets.items()},
        "inputs": [{"name": a.name, "dtype": _dtype_name(a.dtype), "shape": _json_shape(a.shape)}
                   for a in sess.get_inputs()],
        "outputs": [{"name": a.name, "dtype": _dtype_name(a.dtype), "shape": _json_shape(a.shape)}
                    for a in sess.get_outputs()],
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
        "precision_histogram": dict(precisions),
        "num_nodes": len(nodes),
        "num_initializers": len(source.initializers),
        "parameters": int(sum(a.size for a in source.initializers.values())),
        "nodes": nodes,
        "summary": sess.lowering_report().summary(),
    }


def _print_inspect(info: dict) -> None:
    opsets = ", ".join(f"{k} {v}" for k, v in info["opsets"].items())
    print(f"model: {info['model']}  ({info['num_nodes']} nodes, {info['parameters']} parameters in "
          f"{info['num_initializers']} initializers; opsets: {opsets})")
    for kind in ("inputs", "outputs"):
        print(f"{kind}:")
        for a in info[kind]:
            print(f"  {a['name']}: {a['dtype']} {_fmt_shape(a['shape'])}")
    print("ops: " + ", ".join(f"{k} x{v}" for k, v in info["op_histogram"].items()))
    print("lowering: " + info["summary"])
    if not info["nodes"]:
        return
    print("nodes:")

    def io(ts):
        return ", ".join(f"{_fmt_shape(t['shape'])}" + ("w" if t.get("initializer") else "")
                         for t in ts if t["name"])

    wname = max(len(n["name"]) for n in info["nodes"])
    wop = max(len(n["op_type"]) for n in info["nodes"])
    for n in info["nodes"]:
        why = f"  ({n['reason']})" if n.get("reason") else ""
        where = ""
        if "device" in n:
            where = f"[{n['device']}] "
            if n.get("device_reason"):
                why += f"  (on {n['device']}: {n['device_reason']})"
            if n.get("transfers"):
                why += f"  copies: {len(n['transfers'])}"
        print(f"  {n['name']:<{wname}}  {n['op_type']:<{wop}}  {where}{n['precision'] or '?':<6} "
              f"{n['kernel'] or '?'}  {io(n['inputs'])} -> {io(n['outputs'])}{why}")
    print("(shapes from ONNX shape inference: ? = unknown; 'w' marks an initializer)")


def cmd_inspect(args) -> int:
    info = inspect_model(args.model, device=args.device)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_inspect(info)
    return 0


# -- qrt demo --------------------------------------------------------------------------------------
def _data_file(name: str):
    """A context manager giving a filesystem path to a shipped file of qrt.data."""
    from importlib import resources

    return resources.as_file(resources.files("qrt.data").joinpath(name))


def _time_runs(fn, n: int) -> list[int]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return out


def run_demo(threads: int | None = None, single_runs: int = 200, batch_runs: int = 20) -> dict:
    """Accuracy and latency of the shipped digits CNN, FP32 and INT8, on the shipped test set."""
    from contextlib import ExitStack

    import qrt

    with ExitStack() as stack:
        data = np.load(stack.enter_context(_data_file("digits_test.npz")))
        x, y = data["images"], data["labels"]
        paths = {"FP32": stack.enter_context(_data_file("digits_cnn.onnx")),
                 "INT8": stack.enter_context(_data_file("digits_cnn_int8.onnx"))}
        results = {}
        for label, path in paths.items():
            t0 = time.perf_counter()
            sess = qrt.InferenceSession(str(path), threads=threads)
            logits = sess.run(None, {"input": x})[0]  # also compiles/warms the kernels
            first_s = time.perf_counter() - t0
            pred = logits.argmax(1)
            singles = [x[i:i + 1] for i in range(min(single_runs, len(x)))]
            for xi in singles[:5]:
                sess.run(None, {"input": xi})
            it = iter(singles * (single_runs // max(1, len(singles)) + 1))
            one = _time_runs(lambda: sess.run(None, {"input": next(it)}), single_runs)
            full = _time_runs(lambda: sess.run(None, {"input": x}), batch_runs)
            results[label] = {
                "accuracy": float((pred == y).mean()), "pred": pred,
                "batch1_p50_ms": float(np.median(one)) / 1e6,
                "batch_p50_ms": float(np.median(full)) / 1e6,
                "load_and_first_run_s": first_s,
                "lowering": sess.lowering_report().summary(),
                "threads": sess.threads,
            }
    results["n"] = int(len(y))
    results["agree"] = int((results["FP32"]["pred"] == results["INT8"]["pred"]).sum())
    return results


def cmd_demo(args) -> int:
    r = run_demo(args.threads, single_runs=args.runs, batch_runs=max(3, args.runs // 10))
    n = r["n"]
    print(f"qrt demo: a small CNN on scikit-learn's 8x8 handwritten digits, {n} held-out test "
          f"images, threads={r['FP32']['threads']}")
    print(f"{'model':<6} {'accuracy':>9} {'batch 1 (p50)':>14} {f'batch {n} (p50)':>16}   "
          "lowering")
    for label in ("FP32", "INT8"):
        e = r[label]
        print(f"{label:<6} {e['accuracy'] * 100:>8.2f}% {e['batch1_p50_ms']:>11.3f} ms "
              f"{e['batch_p50_ms']:>13.3f} ms   {e['lowering']}")
    f, i = r["FP32"], r["INT8"]
    print(f"INT8 vs FP32: same prediction on {r['agree']}/{n} images; accuracy "
          f"{(i['accuracy'] - f['accuracy']) * 100:+.2f} points; speed-up "
          f"x{f['batch1_p50_ms'] / i['batch1_p50_ms']:.2f} (batch 1), "
          f"x{f['batch_p50_ms'] / i['batch_p50_ms']:.2f} (batch {n})")
    print(f"(load + first run, including kernel compilation or cache load: FP32 "
          f"{f['load_and_first_run_s']:.2f} s, INT8 {i['load_and_first_run_s']:.2f} s)")
    return 0


# -- qrt bench -------------------------------------------------------------------------------------
def _profile(sess, feeds, runs: int, top: int) -> dict:
    """Per-op-type and per-node wall time over `runs` profiled runs (the plan's profile mode: every
    step timed, so the sum is a little above a plain run's time)."""
    from qrt.kernels import threading_ctl
    plan = sess._plan
    names = sess._output_names(None)
    checked = sess._check_feeds(feeds)
    prof: dict = {}
    with threading_ctl.num_threads(sess.threads):
        for _ in range(runs):
            plan.execute(checked, names, profile=prof)
    total = sum(prof.values()) or 1e-12
    op_of = {n: st.node.op_type for n, st in zip(plan.step_names, plan.steps)}
    count: dict = {}
    for n in prof:
        count[op_of.get(n, n)] = count.get(op_of.get(n, n), 0) + 1
    by_op = [{"op": op, "nodes": count.get(op, 0), "ms": sec / runs * 1e3, "share": sec / total}
             for op, sec in plan.profile_by_op(prof).items()]
    nodes = sorted(prof.items(), key=lambda kv: -kv[1])[:top]
    return {"runs": runs, "total_ms": total / runs * 1e3, "by_op": by_op,
            "nodes": [{"node": n, "op": op_of.get(n, "?"), "ms": sec / runs * 1e3,
                       "share": sec / total} for n, sec in nodes]}


def bench(model: str, threads: int | None = None, batch: int | None = None, warmup: int = 10,
          runs: int = 100, specs=None, compare_onnxruntime: bool = False, seed: int = 0,
          profile: int = 0) -> dict:
    sess = _session(model, threads)
    feeds = make_feeds(sess, specs, seed=seed, batch=batch)
    ort_sess = None
    if compare_onnxruntime:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CliError("--compare-onnxruntime needs onnxruntime (pip install onnxruntime)") \
                from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = sess.threads
        so.inter_op_num_threads = 1
        try:
            ort_sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CliError(f"onnxruntime cannot load {model}: {str(e).splitlines()[0]}") from None
    run_checked(sess, feeds, specs)
    for _ in range(warmup):
        sess.run(None, feeds)
        if ort_sess is not None:
            ort_sess.run(None, feeds)
    t_qrt: list[int] = []
    t_ort: list[int] = []
    for r in range(runs):
        # Interleaved run by run, alternating which goes first, so drift hits both alike.
        order = [("qrt", sess, t_qrt)]
        if ort_sess is not None:
            order.append(("ort", ort_sess, t_ort))
            if r % 2:
                order.reverse()
        for _, s, acc in order:
            t0 = time.perf_counter_ns()
            s.run(None, feeds)
            acc.append(time.perf_counter_ns() - t0)
    bsz = next((int(x.shape[0]) for x in feeds.values() if x.ndim > 0), 1)
    out = {"model": model, "threads": sess.threads, "batch": bsz, "warmup": warmup,
           "inputs": {k: list(v.shape) for k, v in feeds.items()}}
    out["qrt"] = _percentiles(t_qrt)
    out["qrt"]["throughput_per_s"] = bsz * 1e3 / out["qrt"]["p50_ms"]
    if ort_sess is not None:
        import onnxruntime as ort

        out["onnxruntime"] = _percentiles(t_ort)
        out["onnxruntime"]["throughput_per_s"] = bsz * 1e3 / out["onnxruntime"]["p50_ms"]
        out["onnxruntime"]["version"] = ort.__version__
        out["qrt_over_onnxruntime_p50"] = out["qrt"]["p50_ms"] / out["onnxruntime"]["p50_ms"]
    if profile:
        out["profile"] = _profile(sess, feeds, max(1, runs // 2), profile)
    return out


def cmd_bench(args) -> int:
    r = bench(args.model, args.threads, args.batch, args.warmup, args.runs, args.input,
              args.compare_onnxruntime, args.seed, args.profile)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    shapes = ", ".join(f"{k} {v}" for k, v in r["inputs"].items())
    print(f"{r['model']}: threads={r['threads']} batch={r['batch']} ({shapes}); "
          f"{r['warmup']} warm-up + {r['qrt']['runs']} timed runs")
    print(f"{'runtime':<12} {'p50 ms':>10} {'p90 ms':>10} {'p99 ms':>10} {'mean ms':>10} "
          f"{'items/s':>11}")
    for key in ("qrt", "onnxruntime"):
        if key in r:
            e = r[key]
            print(f"{key:<12} {e['p50_ms']:>10.3f} {e['p90_ms']:>10.3f} {e['p99_ms']:>10.3f} "
                  f"{e['mean_ms']:>10.3f} {e['throughput_per_s']:>11.1f}")
    if "qrt_over_onnxruntime_p50" in r:
        print(f"qrt p50 / onnxruntime p50 = {r['qrt_over_onnxruntime_p50']:.2f} "
              f"(onnxruntime {r['onnxruntime']['version']}, runs interleaved)")
    if "profile" in r:
        pr = r["profile"]
        print(f"\nprofile: {pr['total_ms']:.3f} ms a run over {pr['runs']} runs, every node timed")
        print(f"{'op':<24} {'nodes':>6} {'ms':>9} {'share':>7}")
        for e in pr["by_op"]:
            print(f"{e['op']:<24} {e['nodes']:>6} {e['ms']:>9.3f} {e['share'] * 100:>6.1f}%")
        print(f"\n{'slowest nodes':<40} {'op':<20} {'ms':>9} {'share':>7}")
        for e in pr["nodes"]:
            print(f"{e['node'][:40]:<40} {e['op'][:20]:<20} {e['ms']:>9.3f} "
                  f"{e['share'] * 100:>6.1f}%")
    return 0


# -- qrt warmup ------------------------------------------------------------------------------------
def cmd_warmup(args) -> int:
    from qrt import graph_cache
    from qrt.errors import QrtError

    t0 = time.perf_counter()
    sess = _session(args.model, args.threads, cache_graph=True)
    t1 = time.perf_counter()
    feeds = make_feeds(sess, args.input)
    try:
        sess.run(None, feeds)
    except QrtError as e:
        given = {spec.split("=", 1)[0] for spec in args.input or []}
        symbolic = [i.name for i in sess.get_inputs() if i.name not in given
                    and any(not isinstance(d, int) for d in (i.shape or []))]
        hint = (f"; the lowered graph is cached, but the kernels were not compiled: inputs "
                f"{symbolic} have symbolic dimensions (run with 1): pass real ones with "
                f"--input NAME=FILE.npy") if symbolic else ""
        raise CliError(f"{e}{hint}") from e
    t2 = time.perf_counter()
    sess.run(None, feeds)
    t3 = time.perf_counter()
    print(f"{args.model}: loaded in {t1 - t0:.2f} s, first run {t2 - t1:.2f} s (kernels compiled "
          f"or loaded from Numba's on-disk cache), second run {(t3 - t2) * 1e3:.2f} ms; "
          f"lowered graph cached under {graph_cache.cache_dir()}")
    return 0


# -- parser ----------------------------------------------------------------------------------------
def _add_quantization_commands(sub) -> None:
    """`qrt quantize` and `qrt compare` live in qrt.quantization.cli (`register(subparsers)`).
    This is the only place the CLI knows about it."""
    try:
        from qrt.quantization.cli import register
    except ModuleNotFoundError as e:
        if e.name in ("qrt.quantization.cli", "qrt.quantization"):
            return  # not there (yet): the CLI works without it
        err = e
    except Exception as e:  # noqa: BLE001 - a broken module must not take down `qrt demo`
        err = e
    else:
        register(sub)
        return
    for name in ("quantize", "compare"):
        p = sub.add_parser(name, help=f"(unavailable: {type(err).__name__})", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args, err=err: _unavailable(args, err))


def _unavailable(args, err) -> int:
    raise CliError(f"'{args.command}' is unavailable: qrt.quantization.cli failed to import "
                   f"({type(err).__name__}: {err})")


def build_parser() -> argparse.ArgumentParser:
    import qrt

    parser = argparse.ArgumentParser(
        prog=PROG, description="qrt: a small INT8 inference runtime for ONNX models.")
    parser.add_argument("--version", action="version", version=f"qrt {qrt.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def threads_arg(p):
        p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="worker threads (default: every core this process may use)")

    def input_arg(p):
        p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                       help="feed input NAME from a .npy file (repeatable); inputs not given get "
                            "random data of the declared shape (symbolic dims -> 1)")

    p = sub.add_parser("run", help="run a model once and summarize its outputs")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    input_arg(p)
    threads_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--save", metavar="DIR", help="also save each output as DIR/NAME.npy")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="inputs, outputs, ops, shapes and how each node runs")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="show the placement of a device='cuda' session (needs numba-cuda and a "
                        "GPU, or NUMBA_ENABLE_CUDASIM=1)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="accuracy and latency of the shipped digits CNN, FP32 vs INT8")
    threads_arg(p)
    p.add_argument("--runs", type=_positive_int, default=200,
                   help="batch-1 inferences timed per model (default 200; a tenth as many, at "
                        "least 3, full-batch ones)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="latency percentiles and throughput")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    threads_arg(p)
    p.add_argument("--batch", type=_positive_int, default=None, metavar="B",
                   help="size of the (symbolic) first dimension of random inputs (default 1)")
    p.add_argument("--warmup", type=_nonneg_int, default=10, metavar="W",
                   help="untimed runs first (default 10)")
    p.add_argument("--runs", type=_positive_int, default=100, metavar="R",
                   help="timed runs (default 100)")
    input_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--compare-onnxruntime", action="store_true",
                   help="also time onnxruntime on the same model and inputs, run by run")
    p.add_argument("--profile", type=_nonneg_int, nargs="?", const=15, default=0, metavar="N",
                   help="also time every node (half as many runs) and print the time per op type "
                        "and the N slowest nodes (default 15)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("warmup", help="load and run once, filling Numba's on-disk kernel cache "
                       "and qrt's cache of the lowered graph (fast start in a new process)")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    threads_arg(p)
    input_arg(p)
    p.set_defaults(func=cmd_warmup)

    _add_quantization_commands(sub)
    return parser


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = text.splitlines()
    return lines[0] + (" ..." if len(lines) > 1 else "")


def main(argv=None) -> int:
    from qrt.errors import QrtError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help / --version (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        rc = args.func(args)
    except (CliError, QrtError) as e:
        print(f"{PROG} {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"{PROG} {args.command}: error: {e.filename or e}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `qrt inspect big.onnx | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    sys.exit(main())
