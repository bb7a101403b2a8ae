"""Tensor/shape ops: Constant, Identity, Cast, Shape, Reshape, Flatten, Transpose, Concat, Split,
Slice, Squeeze, Unsqueeze, Gather, Expand, Size, Range, ConstantOfShape, EyeLike, Tile, GatherElements, GatherND, ScatterND, ScatterElements,
TopK, ArgMax, ArgMin, CumSum, Trilu, OneHot, NonZero, DepthToSpace, SpaceToDepth, Dropout.

Shape-only ops (Reshape, Flatten, Transpose, Slice, Split, Squeeze, Unsqueeze, Identity) return views
of their input; none writes into an input (the scatters write into a copy). Bad attribute or shape
values raise ValueError naming the problem; out-of-range indices (Gather, GatherElements, GatherND,
ScatterND, ScatterElements) raise IndexError naming the index, the axis and its size.
"""
import math

import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401

# int4/uint4 (and the out-of-scope bfloat16/float8) live in ml_dtypes, which onnx requires; it is
# imported on first need (see _load_ml_dtypes: the import alone takes 0.7-1 s)
ml_dtypes = None


# --------------------------------------------------------------------------------------------
# helpers

def _ints(v, what):
    """A 1-D int tensor (or list) as a list of Python ints."""
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got {a.dtype}")
    if a.ndim > 1:
        raise ValueError(f"{what} must be 1-D, got shape {list(a.shape)}")
    return [int(i) for i in a.reshape(-1)]


def _norm_axis(axis, rank, op, what="axis"):
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ValueError(f"{op}: {what} {axis} is out of range for rank {rank} "
                         f"(valid: {-rank}..{rank - 1})")
    return axis + rank if axis < 0 else axis


def _norm_axes(axes, rank, op):
    out = [_norm_axis(a, rank, op) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: axes {list(axes)} repeat an axis")
    return out


# --------------------------------------------------------------------------------------------
# Constant, Identity

def _constant(value, sparse_value, value_float, value_floats, value_int, value_ints,
              value_string, value_strings):
    given = {k: v for k, v in (("value", value), ("sparse_value", sparse_value),
                               ("value_float", value_float), ("value_floats", value_floats),
                               ("value_int", value_int), ("value_ints", value_ints),
                               ("value_string", value_string), ("value_strings", value_strings))
             if v is not None}
    if len(given) != 1:
        raise ValueError("Constant: exactly one value attribute must be set, got "
                         f"{sorted(given) or 'none'}")
    (name, v), = given.items()
    if name == "value":
        arr = np.asarray(v)
    elif name == "value_float":
        arr = np.array(v, dtype=np.float32)
    elif name == "value_floats":
        arr = np.array(v, dtype=np.float32).reshape(-1)
    elif name == "value_int":
        arr = np.array(v, dtype=np.int64)
    elif name == "value_ints":
        arr = np.array(v, dtype=np.int64).reshape(-1)
    elif name == "sparse_value":
        raise ValueError("Constant: sparse_value is not supported (dense constants only)")
    else:
        raise ValueError(f"Constant: {name} (string tensors) is not supported")
    # A view: the attribute's array stays untouched and the session copies it before handing out.
    return arr.view()


_CONST_ATTRS = {k: None for k in ("value", "sparse_value", "value_float", "value_floats",
                                  "value_int", "value_ints", "value_string", "value_strings")}


@register("Constant", since=1, attrs={"value": REQUIRED})
def constant_1(*, value):
    return _constant(value, None, None, None, None, None, None, None)


@register("Constant", since=11, attrs={"value": None, "sparse_value": None})
def constant_11(*, value, sparse_value):
    return _constant(value, sparse_value, None, None, None, None, None, None)


@register("Constant", since=12, attrs=_CONST_ATTRS)  # value_float(s)/int(s)/string(s) added
def constant_12(*, value, sparse_value, value_float, value_floats, value_int, value_ints,
                value_string, value_strings):
    return _constant(value, sparse_value, value_float, value_floats, value_int, value_ints,
                     value_string, value_strings)


@register("Identity", since=1)  # later versions only widened the types (sequences, optionals)
def identity(x):
    return x.view() if isinstance(x, np.ndarray) else x


# --------------------------------------------------------------------------------------------
# Cast

_ELEM_TYPES = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8),
    4: np.dtype(np.uint16), 5: np.dtype(np.int16), 6: np.dtype(np.int32),
    7: np.dtype(np.int64), 9: np.dtype(np.bool_), 10: np.dtype(np.float16),
    11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64),
}
_FLOAT8 = {}


def _load_ml_dtypes() -> None:
    global ml_dtypes
    if ml_dtypes is not None:
        return
    try:
        import ml_dtypes as mld
    except ImportError:  # pragma: no cover
        return
    ml_dtypes = mld
    _ELEM_TYPES[16] = np.dtype(mld.bfloat16)
    _ELEM_TYPES[21] = np.dtype(mld.uint4)
    _ELEM_TYPES[22] = np.dtype(mld.int4)
    for code, name in ((17, "float8_e4m3fn"), (18, "float8_e4m3fnuz"), (19, "float8_e5m2"),
                       (20, "float8_e5m2fnuz")):
        if hasattr(mld, name):
            _ELEM_TYPES[code] = _FLOAT8[code] = np.dtype(getattr(mld, name))


_TYPE_NAMES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
               8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
               14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN",
               18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4",
               22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2"}


def elem_dtype(to):
    """numpy dtype of an ONNX TensorProto element type code; ValueError when qrt does not run it."""
    if 16 <= int(to) <= 22:
        _load_ml_dtypes()
    dt = _ELEM_TYPES.get(int(to))
    if dt is None:
        raise ValueError(f"Cast: target type {_TYPE_NAMES.get(int(to), int(to))} "
                         f"(code {int(to)}) is not supported")
    return dt


def cast(x, to, saturate=1):
    dt = elem_dtype(to)
    if x.dtype == dt:
        return x.view()
    with np.errstate(invalid="ignore", over="ignore"):
        if int(to) in _FLOAT8 and saturate and x.dtype.kind == "f":
            # Saturating float8 cast: out-of-range values and +-inf go to +-max; NaN stays NaN.
            big = float(ml_dtypes.finfo(dt).max)
            x = np.clip(x.astype(np.float32), -big, big)
        # Float -> integer truncates toward zero (C semantics; NaN and out-of-range are undefined
        # by the spec); integer -> narrower integer keeps the low bits; x != 0 -> True for bool.
        return x.astype(dt)


@register("Cast", since=6, attrs={"to": REQUIRED})
def cast_6(x, *, to):
    return cast(x, to)


@register("Cast", since=19, attrs={"to": REQUIRED, "saturate": 1})  # saturate: float8 only
def cast_19(x, *, to, saturate):
    return cast(x, to, saturate)


@register("Cast", since=24, attrs={"to": REQUIRED, "saturate": 1, "round_mode": "up"})
def cast_24(x, *, to, saturate, round_mode):
    # round_mode only concerns FLOAT8E8M0, which qrt does not run; the value is still checked.
    if round_mode not in ("up", "down", "nearest"):
        raise ValueError(f"Cast: round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}")
    return cast(x, to, saturate)


# --------------------------------------------------------------------------------------------
# Shape, Reshape, Flatten, Transpose

@register("Shape", since=1)
def shape_1(x):
    return np.array(x.shape, dtype=np.int64)


@register("Shape", since=15, attrs={"start": 0, "end": None})
def shape_15(x, *, start, end):
    r = x.ndim

    def clamp(i):
        i = i + r if i < 0 else i
        return min(max(i, 0), r)

    s = clamp(int(start))
    e = r if end is None else clamp(int(end))
    return np.array(x.shape[s:e], dtype=np.int64)


def reshape_target(in_shape, shape, allowzero=0, op="Reshape"):
    """The output shape of Reshape(data of `in_shape`, shape) as a tuple of ints."""
    shape = _ints(shape, f"{op}: shape")
    size = math.prod(in_shape)
    if shape.count(-1) > 1:
        raise ValueError(f"{op}: shape {shape} has more than one -1 (at most one dimension can "
                         "be inferred)")
    if allowzero and 0 in shape and -1 in shape:
        raise ValueError(f"{op}: shape {shape} has both 0 and -1, which allowzero=1 forbids")
    out = []
    for i, s in enumerate(shape):
        if s < -1:
            raise ValueError(f"{op}: shape {shape} has negative dimension {s} (only -1 is allowed)")
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise ValueError(f"{op}: shape {shape} copies dimension {i} (0), but the input "
                                 f"has rank {len(in_shape)}")
            s = in_shape[i]
        out.append(s)
    if -1 in out:
        k = out.index(-1)
        known = math.prod(d for j, d in enumerate(out) if j != k)
        if known == 0 or size % known:
            raise ValueError(f"{op}: cannot reshape input of shape {list(in_shape)} ({size} "
                             f"elements) to {shape}: the -1 dimension cannot be inferred")
        out[k] = size // known
    elif math.prod(out) != size:
        raise ValueError(f"{op}: cannot reshape input of shape {list(in_shape)} ({size} elements) "
                         f"to {shape} ({math.prod(out)} elements)")
    return tuple(out)


@register("Reshape", since=5)
def reshape_5(data, shape):
    return data.reshape(reshape_target(data.shape, shape, 0))


@register("Reshape", since=14, attrs={"allowzero": 0})
def reshape_14(data, shape, *, allowzero):
    return data.reshape(reshape_target(data.shape, shape, allowzero))


@register("Flatten", since=1, attrs={"axis": 1})  # 11 allowed negative axis; same rule
def flatten(x, *, axis):
    r = x.ndim
    if not -r <= axis <= r:
        raise ValueError(f"Flatten: axis {axis} is out of range for rank {r} (valid: {-r}..{r})")
    a = axis + r if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))


@register("Transpose", since=1, attrs={"perm": None})
def transpose(x, *, perm):
    if perm is None:
        return x.transpose()
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"Transpose: perm {perm} is not a permutation of the {x.ndim} axes")
    return x.transpose(perm)


# --------------------------------------------------------------------------------------------
# Concat, Split

@register("Concat", since=4, attrs={"axis": REQUIRED})
def concat(*inputs, axis):
    arrs = [x for x in inputs if x is not None]
    if not arrs:
        raise ValueError("Concat: no inputs")
    r = arrs[0].ndim
    if r == 0:
        raise ValueError("Concat: inputs must have rank >= 1")
    a = _norm_axis(axis, r, "Concat")
    for x in arrs[1:]:
        if x.ndim != r:
            raise ValueError(f"Concat: inputs have different ranks ({r} and {x.ndim})")
        if x.dtype != arrs[0].dtype:
            raise ValueError(f"Concat: inputs have different types ({arrs[0].dtype} and "
                             f"{x.dtype})")
    return np.concatenate(arrs, axis=a)


def _split_parts(x, axis, split, n_outputs, op="Split"):
    a = _norm_axis(axis, x.ndim, op)
    sizes = [int(s) for s in split]
    if len(sizes) != n_outputs:
        raise ValueError(f"{op}: split {sizes} gives {len(sizes)} parts, but the node has "
                         f"{n_outputs} outputs")
    if any(s < 0 for s in sizes) or sum(sizes) != x.shape[a]:
        raise ValueError(f"{op}: split {sizes} does not add up to dimension {a} of size "
                         f"{x.shape[a]}")
    out, pos = [], 0
    idx = [slice(None)] * x.ndim
    for s in sizes:
        idx[a] = slice(pos, pos + s)
        out.append(x[tuple(idx)])
        pos += s
    return tuple(out)


def _equal_split(x, axis, n, op="Split"):
    d = x.shape[_norm_axis(axis, x.ndim, op)]
    if n < 1:
        raise ValueError(f"{op}: cannot split into {n} parts")
    if d % n:
        raise ValueError(f"{op}: dimension {axis} of size {d} cannot be split into {n} equal "
                         "parts")
    return [d // n] * n


@register("Split", since=2, attrs={"axis": 0, "split": None}, ctx=True)
def split_2(x, *, axis, split, ctx):
    if split is None:
        split = _equal_split(x, axis, ctx.n_outputs)
    return _split_parts(x, axis, split, ctx.n_outputs)


@register("Split", since=13, attrs={"axis": 0}, ctx=True)  # split moved to an optional input
def split_13(x, split=None, *, axis, ctx):
    if split is None or split.size == 0:
        sizes = _equal_split(x, axis, ctx.n_outputs)
    else:
        sizes = _ints(split, "Split: split")
    return _split_parts(x, axis, sizes, ctx.n_outputs)


@register("Split", since=18, attrs={"axis": 0, "num_outputs": None}, ctx=True)
def split_18(x, split=None, *, axis, num_outputs, ctx):
    if split is not None and num_outputs is not None:
        raise ValueError("Split: set either the 'split' input or the 'num_outputs' attribute, "
                         "not both")
    if split is not None:
        return _split_parts(x, axis, _ints(split, "Split: split"), ctx.n_outputs)
    n = ctx.n_outputs if num_outputs is None else int(num_outputs)
    if n < 1:
        raise ValueError(f"Split: num_outputs must be >= 1, got {n}")
    if n != ctx.n_outputs:
        raise ValueError(f"Split: num_outputs={n} but the node has {ctx.n_outputs} outputs")
    d = x.shape[_norm_axis(axis, x.ndim, "Split")]
    # Opset 18: chunks of ceil(d / n); the last one takes what is left (may be smaller).
    chunk = -(-d // n)
    sizes = [chunk] * (n - 1) + [d - chunk * (n - 1)]
    if sizes[-1] < 0:
        raise ValueError(f"Split: dimension {axis} of size {d} cannot be split into {n} parts")
    return _split_parts(x, axis, sizes, n)


# --------------------------------------------------------------------------------------------
# Slice

def slice_index(shape, starts, ends, axes=None, steps=None, op="Slice"):
    """The tuple of Python slices that ONNX Slice takes (clamping as the spec says)."""
    starts = _ints(starts, f"{op}: starts")
    ends = _ints(ends, f"{op}: ends")
    r = len(shape)
    if len(starts) != len(ends):
        raise ValueError(f"{op}: starts ({len(starts)}) and ends ({len(ends)}) differ in length")
    axes = list(range(len(starts))) if axes is None else _ints(axes, f"{op}: axes")
    steps = [1] * len(starts) if steps is None else _ints(steps, f"{op}: steps")
    if len(axes) != len(starts) or len(steps) != len(starts):
        raise ValueError(f"{op}: starts, ends, axes and steps must have the same length, got "
                         f"{len(starts)}, {len(ends)}, {len(axes)}, {len(steps)}")
    axes = _norm_axes(axes, r, op)
    idx = [slice(None)] * r
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = shape[a]
        if st == 0:
            raise ValueError(f"{op}: step for axis {a} is 0")
        if s < 0:
            s += d
        if e < 0:
            e += d
        if st > 0:
            s = min(max(s, 0), d)
            e = min(max(e, 0), d)
            idx[a] = slice(s, e, st)
        else:
            s = min(max(s, 0), d - 1)
            e = min(max(e, -1), d - 1)
            idx[a] = slice(s, None if e < 0 else e, st) if d > 0 else slice(0, 0)
    return tuple(idx)


@register("Slice", since=10)
def slice_10(data, starts, ends, axes=None, steps=None):
    return data[slice_index(data.shape, starts, ends, axes, steps)]


# --------------------------------------------------------------------------------------------
# Squeeze, Unsqueeze

def _squeeze(x, axes):
    if axes is None or len(axes) == 0:
        return x.reshape(tuple(d for d in x.shape if d != 1))
    ax = _norm_axes(axes, x.ndim, "Squeeze")
    for a in ax:
        if x.shape[a] != 1:
            raise ValueError(f"Squeeze: axis {a} has size {x.shape[a]}, not 1 (input shape "
                             f"{list(x.shape)})")
    return x.reshape(tuple(d for i, d in enumerate(x.shape) if i not in ax))


@register("Squeeze", since=1, attrs={"axes": None})
def squeeze_1(x, *, axes):
    return _squeeze(x, axes)


@register("Squeeze", since=13)  # axes moved to an optional input
def squeeze_13(x, axes=None):
    return _squeeze(x, None if axes is None else _ints(axes, "Squeeze: axes"))


def _unsqueeze(x, axes):
    axes = list(axes)
    r = x.ndim + len(axes)
    ax = _norm_axes(axes, r, "Unsqueeze")
    shape = iter(x.shape)
    return x.reshape(tuple(1 if i in ax else next(shape) for i in range(r)))


@register("Unsqueeze", since=1, attrs={"axes": REQUIRED})
def unsqueeze_1(x, *, axes):
    return _unsqueeze(x, axes)


@register("Unsqueeze", since=13)  # axes moved to a required input
def unsqueeze_13(x, axes):
    return _unsqueeze(x, _ints(axes, "Unsqueeze: axes"))


# --------------------------------------------------------------------------------------------
# Gather, Expand

@register("Gather", since=1, attrs={"axis": 0})  # 11: negative indices documented; 13: bfloat16
def gather(data, indices, *, axis):
    if data.ndim == 0:
        raise ValueError("Gather: data must have rank >= 1")
    a = _norm_axis(axis, data.ndim, "Gather")
    if indices.dtype.kind not in "iu":
        raise ValueError(f"Gather: indices must be int32 or int64, got {indices.dtype}")
    n = data.shape[a]
    idx = indices.astype(np.int64, copy=False)
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -n or hi >= n:
            bad = lo if lo < -n else hi
            raise IndexError(f"Gather: index {bad} is out of range for axis {a} of size {n} "
                             f"(valid: {-n}..{n - 1})")
        if lo < 0:
            idx = np.where(idx < 0, idx + n, idx)
    return np.take(data, idx, axis=a)


@register("Expand", since=8)
def expand(x, shape):
    target = _ints(shape, "Expand: shape")
    if any(d < 0 for d in target):
        raise ValueError(f"Expand: shape {target} has a negative dimension")
    try:
        out_shape = np.broadcast_shapes(x.shape, tuple(target))
    except ValueError:
        raise ValueError(f"Expand: input shape {list(x.shape)} cannot be broadcast to "
                         f"{target}") from None
    return np.array(np.broadcast_to(x, out_shape))


# --------------------------------------------------------------------------------------------
# Size, Range, ConstantOfShape, EyeLike, Tile

@register("Size", since=1)  # later versions only widened the types
def size(x):
    return np.array(x.size, dtype=np.int64)


def _scalar_value(v, op, what):
    a = np.asarray(v)
    if a.size != 1:
        raise ValueError(f"{op}: {what} must be a scalar, got shape {list(a.shape)}")
    return a.reshape(())


_STASH = {1: np.dtype(np.float32), 11: np.dtype(np.float64)}


def _range(start, limit, delta, compute=None):
    """start + i * delta for i < max(ceil((limit - start) / delta), 0), each element computed
    directly (no running sum): integers exactly (wrapping to the type), floats in `compute`
    (float64 by default, as onnx.reference does) and rounded once to the input type."""
    s, lim, d = (_scalar_value(v, "Range", n) for v, n in ((start, "start"), (limit, "limit"),
                                                           (delta, "delta")))
    dt = s.dtype
    if lim.dtype != dt or d.dtype != dt:
        raise ValueError(f"Range: start, limit and delta must share one type, got {dt}, "
                         f"{lim.dtype}, {d.dtype}")
    if dt.kind in "iu":
        s, lim, d = int(s), int(lim), int(d)
        if d == 0:
            raise ValueError("Range: delta is 0")
        n = max(-((s - lim) // d), 0)  # ceil((lim - s) / d) in exact integer arithmetic
        return (np.arange(n, dtype=np.int64) * d + s).astype(dt)
    if dt.kind != "f":
        raise ValueError(f"Range: unsupported element type {dt}")
    ct = compute or np.dtype(np.float64)
    s, lim, d = ct.type(s), ct.type(lim), ct.type(d)
    if not (np.isfinite(s) and np.isfinite(lim) and np.isfinite(d)):
        raise ValueError(f"Range: start, limit and delta must be finite, got {s}, {lim}, {d}")
    if d == 0:
        raise ValueError("Range: delta is 0")
    n = max(int(np.ceil((lim - s) / d)), 0)
    return (s + np.arange(n, dtype=ct) * d).astype(dt)


@register("Range", since=11)
def range_11(start, limit, delta):
    return _range(start, limit, delta, np.dtype(np.float32) if start.dtype == np.float16 else None)


@register("Range", since=27, attrs={"stash_type": 1})
def range_27(start, limit, delta, *, stash_type):
    compute = None
    if start.dtype == np.float16:  # stash_type only concerns float16/bfloat16
        compute = _STASH.get(int(stash_type))
        if compute is None:
            raise ValueError(f"Range: stash_type must be 1 (FLOAT) or 11 (DOUBLE), got "
                             f"{stash_type}")
    return _range(start, limit, delta, compute)


@register("ConstantOfShape", since=9, attrs={"value": None})  # 20+: more value types
def constant_of_shape(shape, *, value):
    """A tensor of `shape` filled with the one-element `value` (default float32 0)."""
    dims = _ints(shape, "ConstantOfShape: shape")
    if any(d < 0 for d in dims):
        raise ValueError(f"ConstantOfShape: shape {dims} has a negative dimension")
    v = np.zeros((), np.float32) if value is None else np.asarray(value)
    if v.size != 1:
        raise ValueError(f"ConstantOfShape: value must hold one element, got shape "
                         f"{list(v.shape)}")
    return np.full(dims, v.reshape(()), dtype=v.dtype)


@register("EyeLike", since=9, attrs={"dtype": None, "k": 0})  # 22: bfloat16
def eye_like(x, *, dtype, k):
    """Ones on diagonal k of a 2-D tensor shaped like x; type `dtype` or else x's type."""
    if x.ndim != 2:
        raise ValueError(f"EyeLike: input must be 2-D, got shape {list(x.shape)}")
    if dtype is None:
        dt = x.dtype
    else:
        try:
            dt = elem_dtype(dtype)
        except ValueError:
            raise ValueError(f"EyeLike: dtype {_TYPE_NAMES.get(int(dtype), dtype)} is not "
                             "supported") from None
    return np.eye(x.shape[0], x.shape[1], k=int(k), dtype=dt)


@register("Tile", since=6)  # 13: bfloat16
def tile(x, repeats):
    reps = _ints(repeats, "Tile: repeats")
    if len(reps) != x.ndim:
        raise ValueError(f"Tile: repeats {reps} has {len(reps)} values, the input has rank "
                         f"{x.ndim}")
    if any(r < 0 for r in reps):
        raise ValueError(f"Tile: repeats {reps} has a negative value")
    return np.array(np.tile(x, reps)) if reps else x.copy()


# --------------------------------------------------------------------------------------------
# GatherElements, GatherND, ScatterND, ScatterElements

def _index_array(indices, n, op, what="index", axis=None):
    """int64 copy of `indices` with negatives counted from the end of a dimension of size n;
    IndexError naming the first value outside [-n, n)."""
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{op}: indices must be int32 or int64, got {indices.dtype}")
    idx = indices.astype(np.int64)
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -n or hi >= n:
            bad = lo if lo < -n else hi
            where = f" for axis {axis}" if axis is not None else ""
            raise IndexError(f"{op}: {what} {bad} is out of range{where} of size {n} "
                             f"(valid: {-n}..{n - 1})")
        if lo < 0:
            idx[idx < 0] += n
    return idx


@register("GatherElements", since=11, attrs={"axis": 0})  # 13: bfloat16
def gather_elements(data, indices, *, axis):
    """out[i][j][k] = data[indices[i][j][k]][j][k] (axis 0); out has indices' shape, whose other
    dimensions may be smaller than data's."""
    if data.ndim == 0:
        raise ValueError("GatherElements: data must have rank >= 1")
    if indices.ndim != data.ndim:
        raise ValueError(f"GatherElements: indices rank {indices.ndim} differs from data rank "
                         f"{data.ndim}")
    a = _norm_axis(axis, data.ndim, "GatherElements")
    for i, (di, ii) in enumerate(zip(data.shape, indices.shape)):
        if i != a and ii > di:
            raise ValueError(f"GatherElements: indices shape {list(indices.shape)} exceeds data "
                             f"shape {list(data.shape)} on axis {i}")
    idx = _index_array(indices, data.shape[a], "GatherElements", axis=a)
    sub = data[tuple(slice(None) if i == a else slice(0, s) for i, s in enumerate(idx.shape))]
    return np.take_along_axis(sub, idx, axis=a)


def _gather_nd(data, indices, batch_dims):
    b, r, q = int(batch_dims), data.ndim, indices.ndim
    if r < 1 or q < 1:
        raise ValueError(f"GatherND: data and indices need rank >= 1, got {r} and {q}")
    if not 0 <= b < min(q, r):
        raise ValueError(f"GatherND: batch_dims={b} must be in 0..{min(q, r) - 1} for data rank "
                         f"{r} and indices rank {q}")
    if data.shape[:b] != indices.shape[:b]:
        raise ValueError(f"GatherND: the first {b} (batch) dimensions of data "
                         f"{list(data.shape)} and indices {list(indices.shape)} differ")
    k = indices.shape[-1]
    if not 1 <= k <= r - b:
        raise ValueError(f"GatherND: indices.shape[-1]={k} must be in 1..{r - b} (data rank {r}, "
                         f"batch_dims {b})")
    if indices.dtype.kind not in "iu":
        raise ValueError(f"GatherND: indices must be int64, got {indices.dtype}")
    idx = indices.astype(np.int64)
    cols = []
    for j in range(k):
        n = data.shape[b + j]
        cols.append(_index_array(idx[..., j], n, "GatherND", axis=b + j))
    batch = math.prod(data.shape[:b])
    m = math.prod(indices.shape[b:-1])
    d2 = data.reshape((batch,) + data.shape[b:])
    sel = (np.arange(batch, dtype=np.int64)[:, None],) + tuple(c.reshape(batch, m) for c in cols)
    res = d2[sel]  # (batch, m) + data.shape[b + k:]
    return res.reshape(indices.shape[:-1] + data.shape[b + k:])


@register("GatherND", since=11)
def gather_nd_11(data, indices):
    return _gather_nd(data, indices, 0)


@register("GatherND", since=12, attrs={"batch_dims": 0})  # 13: bfloat16
def gather_nd_12(data, indices, *, batch_dims):
    return _gather_nd(data, indices, batch_dims)


_SCATTER_UFUNCS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(op, reduction, allowed):
    if reduction not in allowed:
        raise ValueError(f"{op}: reduction must be one of {', '.join(allowed)}, got "
                         f"{reduction!r}")
    return _SCATTER_UFUNCS.get(reduction)


def _scatter(op, data, index, updates, ufunc):
    """A copy of data with updates written (ufunc None) or combined at `index`; with a ufunc,
    repeated indices all apply (ufunc.at), without one the last write wins."""
    if updates.dtype != data.dtype:
        raise ValueError(f"{op}: updates type {updates.dtype} differs from data type {data.dtype}")
    out = data.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        if ufunc is None:
            out[index] = updates
        else:
            ufunc.at(out, index, updates)
    return out


def _scatter_nd(data, indices, updates, reduction, allowed):
    op = "ScatterND"
    ufunc = _reduction(op, reduction, allowed)
    r, q = data.ndim, indices.ndim
    if r < 1 or q < 1:
        raise ValueError(f"{op}: data and indices need rank >= 1, got {r} and {q}")
    k = indices.shape[-1]
    if not 1 <= k <= r:
        raise ValueError(f"{op}: indices.shape[-1]={k} must be in 1..{r} (data rank {r})")
    want = indices.shape[:-1] + data.shape[k:]
    if updates.shape != want:
        raise ValueError(f"{op}: updates shape {list(updates.shape)} must be indices.shape[:-1] "
                         f"+ data.shape[{k}:] = {list(want)}")
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{op}: indices must be int64, got {indices.dtype}")
    index = tuple(_index_array(indices[..., j], data.shape[j], op, axis=j) for j in range(k))
    return _scatter(op, data, index, updates, ufunc)


@register("ScatterND", since=11)  # 13: bfloat16
def scatter_nd_11(data, indices, updates):
    return _scatter_nd(data, indices, updates, "none", ("none",))


@register("ScatterND", since=16, attrs={"reduction": "none"})
def scatter_nd_16(data, indices, updates, *, reduction):
    return _scatter_nd(data, indices, updates, reduction, ("none", "add", "mul"))


@register("ScatterND", since=18, attrs={"reduction": "none"})
def scatter_nd_18(data, indices, updates, *, reduction):
    return _scatter_nd(data, indices, updates, reduction, ("none", "add", "mul", "max", "min"))


def _scatter_elements(data, indices, updates, axis, reduction, allowed):
    op = "ScatterElements"
    ufunc = _reduction(op, reduction, allowed)
    if data.ndim == 0:
        raise ValueError(f"{op}: data must have rank >= 1")
    if indices.ndim != data.ndim:
        raise ValueError(f"{op}: indices rank {indices.ndim} differs from data rank {data.ndim}")
    if updates.shape != indices.shape:
        raise ValueError(f"{op}: updates shape {list(updates.shape)} differs from indices shape "
                         f"{list(indices.shape)}")
    a = _norm_axis(axis, data.ndim, op)
    for i, (di, ii) in enumerate(zip(data.shape, indices.shape)):
        if i != a and ii > di:
            raise ValueError(f"{op}: indices shape {list(indices.shape)} exceeds data shape "
                             f"{list(data.shape)} on axis {i}")
    idx = _index_array(indices, data.shape[a], op, axis=a)
    grid = np.indices(idx.shape, sparse=True)
    index = tuple(idx if i == a else g for i, g in enumerate(grid))
    return _scatter(op, data, index, updates, ufunc)


@register("ScatterElements", since=11, attrs={"axis": 0})  # 13: bfloat16
def scatter_elements_11(data, indices, updates, *, axis):
    return _scatter_elements(data, indices, updates, axis, "none", ("none",))


@register("ScatterElements", since=16, attrs={"axis": 0, "reduction": "none"})
def scatter_elements_16(data, indices, updates, *, axis, reduction):
    return _scatter_elements(data, indices, updates, axis, reduction, ("none", "add", "mul"))


@register("ScatterElements", since=18, attrs={"axis": 0, "reduction": "none"})
def scatter_elements_18(data, indices, updates, *, axis, reduction):
    return _scatter_elements(data, indices, updates, axis, reduction,
                             ("none", "add", "mul", "max", "min"))


# --------------------------------------------------------------------------------------------
# TopK, ArgMax, ArgMin

def _top_k(x, k, axis, largest, op="TopK"):
    """(values, int64 indices) of the k largest/smallest along axis, always sorted; equal values
    keep the lower index first. NaN counts as larger than every number."""
    if x.ndim == 0:
        raise ValueError(f"{op}: input must have rank >= 1")
    a = _norm_axis(axis, x.ndim, op)
    n = x.shape[a]
    if k < 0:
        raise ValueError(f"{op}: k={k} is negative")
    if k > n:
        raise ValueError(f"{op}: k={k} is larger than axis {a} of size {n} (input shape "
                         f"{list(x.shape)})")
    xm = np.moveaxis(x, a, -1)
    if largest:
        # A stable ascending sort of the reversed axis, read backwards: descending values,
        # equal values in increasing original index.
        order = np.argsort(xm[..., ::-1], axis=-1, kind="stable")[..., ::-1][..., :k]
        idx = (n - 1) - order
    else:
        idx = np.argsort(xm, axis=-1, kind="stable")[..., :k]
    vals = np.take_along_axis(xm, idx, axis=-1)
    return (np.ascontiguousarray(np.moveaxis(vals, -1, a)),
            np.ascontiguousarray(np.moveaxis(idx, -1, a)).astype(np.int64, copy=False))


@register("TopK", since=1, attrs={"k": REQUIRED, "axis": -1})
def top_k_1(x, *, k, axis):
    return _top_k(x, int(k), axis, True)


def _k_input(k):
    k = np.asarray(k)
    if k.size != 1 or k.dtype.kind not in "iu":
        raise ValueError(f"TopK: K must be a one-element int64 tensor, got {k.dtype} of shape "
                         f"{list(k.shape)}")
    return int(k.reshape(()))


@register("TopK", since=10, attrs={"axis": -1})  # K moved to an input
def top_k_10(x, k, *, axis):
    return _top_k(x, _k_input(k), axis, True)


@register("TopK", since=11, attrs={"axis": -1, "largest": 1, "sorted": 1})  # 24: bfloat16
def top_k_11(x, k, *, axis, largest, sorted):  # noqa: A002 (ONNX attribute name)
    # sorted=0 leaves the order unspecified: the sorted order is one valid answer.
    return _top_k(x, _k_input(k), axis, bool(largest))


def _arg_extreme(op, x, axis, keepdims, select_last_index, largest):
    """int64 index of the first (or, select_last_index, last) max/min along axis."""
    if x.ndim == 0:
        raise ValueError(f"{op}: input must have rank >= 1")
    a = _norm_axis(axis, x.ndim, op)
    n = x.shape[a]
    if n == 0:
        raise ValueError(f"{op}: axis {a} is empty (input shape {list(x.shape)})")
    f = np.argmax if largest else np.argmin
    if select_last_index:
        i = (n - 1) - f(np.flip(x, a), axis=a)
    else:
        i = f(x, axis=a)
    i = np.asarray(i, dtype=np.int64)
    return np.expand_dims(i, a) if keepdims else i


@register("ArgMax", since=1, attrs={"axis": 0, "keepdims": 1})  # 11: negative axis
def arg_max_1(x, *, axis, keepdims):
    return _arg_extreme("ArgMax", x, axis, keepdims, 0, True)


@register("ArgMax", since=12, attrs={"axis": 0, "keepdims": 1, "select_last_index": 0})
def arg_max_12(x, *, axis, keepdims, select_last_index):
    return _arg_extreme("ArgMax", x, axis, keepdims, select_last_index, True)


@register("ArgMin", since=1, attrs={"axis": 0, "keepdims": 1})
def arg_min_1(x, *, axis, keepdims):
    return _arg_extreme("ArgMin", x, axis, keepdims, 0, False)


@register("ArgMin", since=12, attrs={"axis": 0, "keepdims": 1, "select_last_index": 0})
def arg_min_12(x, *, axis, keepdims, select_last_index):
    return _arg_extreme("ArgMin", x, axis, keepdims, select_last_index, False)


# --------------------------------------------------------------------------------------------
# CumSum, Trilu, OneHot, NonZero

@register("CumSum", since=11, attrs={"exclusive": 0, "reverse": 0})  # 14: float16/bfloat16
def cumsum(x, axis, *, exclusive, reverse):
    """Running sum along `axis` (a scalar input); exclusive leaves out the element itself,
    reverse sums from the end. Integers wrap in their type; float16 accumulates in float32."""
    return _cumulative(x, axis, exclusive, reverse, "CumSum", np.cumsum, 0)


@register("CumProd", since=26, attrs={"exclusive": 0, "reverse": 0})
def cumprod(x, axis, *, exclusive, reverse):
    """Running product along `axis`, as CumSum (exclusive starts from 1)."""
    return _cumulative(x, axis, exclusive, reverse, "CumProd", np.cumprod, 1)


def _cumulative(x, axis, exclusive, reverse, op, scan, identity):
    if x.ndim == 0:
        raise ValueError(f"{op}: input must have rank >= 1")
    if np.asarray(axis).dtype.kind not in "iu":
        raise ValueError(f"{op}: axis must be int32 or int64, got {np.asarray(axis).dtype}")
    a = _norm_axis(int(_scalar_value(axis, op, "axis")), x.ndim, op)
    if x.dtype == np.bool_ or x.dtype.kind not in "iuf":
        raise ValueError(f"{op}: unsupported element type {x.dtype}")
    acc = np.float32 if x.dtype == np.float16 else x.dtype
    xs = np.flip(x, a) if reverse else x
    with np.errstate(over="ignore"):
        c = scan(xs, axis=a, dtype=acc)
    if exclusive:
        shifted = np.full_like(c, identity)
        dst = [slice(None)] * x.ndim
        src = [slice(None)] * x.ndim
        dst[a], src[a] = slice(1, None), slice(None, -1)
        shifted[tuple(dst)] = c[tuple(src)]
        c = shifted
    if reverse:
        c = np.flip(c, a)
    return np.ascontiguousarray(c).astype(x.dtype, copy=False)


@register("Trilu", since=14, attrs={"upper": 1})
def trilu(x, k=None, *, upper):
    """Upper (triu) or lower (tril) triangle of the last two dimensions, from diagonal k."""
    if x.ndim < 2:
        raise ValueError(f"Trilu: input must have rank >= 2, got shape {list(x.shape)}")
    kk = 0
    if k is not None:
        if np.asarray(k).dtype.kind not in "iu":
            raise ValueError(f"Trilu: k must be int64, got {np.asarray(k).dtype}")
        kk = int(_scalar_value(k, "Trilu", "k"))
    return np.triu(x, kk) if upper else np.tril(x, kk)


def _one_hot(indices, depth, values, axis, wrap_negative):
    r = indices.ndim
    if not -r - 1 <= axis <= r:
        raise ValueError(f"OneHot: axis {axis} is out of range for indices of rank {r} "
                         f"(valid: {-r - 1}..{r})")
    a = axis + r + 1 if axis < 0 else axis
    d = _scalar_value(depth, "OneHot", "depth")
    if d.dtype.kind not in "iuf" or d.dtype == np.bool_:
        raise ValueError(f"OneHot: depth must be numeric, got {d.dtype}")
    n = int(d)
    if n < 1:
        raise ValueError(f"OneHot: depth must be positive, got {d}")
    values = np.asarray(values)
    if values.size != 2:
        raise ValueError(f"OneHot: values must hold [off_value, on_value], got shape "
                         f"{list(values.shape)}")
    off, on = values.reshape(-1)
    if indices.dtype == np.bool_ or indices.dtype.kind not in "iuf":
        raise ValueError(f"OneHot: indices must be numeric, got {indices.dtype}")
    with np.errstate(invalid="ignore"):
        idx = indices.astype(np.int64)  # float indices truncate toward zero
    if wrap_negative:
        idx = np.where(idx < 0, idx + n, idx)
    # out-of-range indices match no position: all off_value, as the spec says
    targets = np.arange(n, dtype=np.int64).reshape((1,) * a + (n,) + (1,) * (r - a))
    hit = np.expand_dims(idx, a) == targets
    return np.where(hit, on, off).astype(values.dtype, copy=False)


@register("OneHot", since=9, attrs={"axis": -1})
def one_hot_9(indices, depth, values, *, axis):
    return _one_hot(indices, depth, values, axis, False)


@register("OneHot", since=11, attrs={"axis": -1})  # negative indices count from depth
def one_hot_11(indices, depth, values, *, axis):
    return _one_hot(indices, depth, values, axis, True)


@register("NonZero", since=9)  # 13: bfloat16
def non_zero(x):
    """int64 [rank, count] indices of the non-zero elements, in row-major order."""
    if x.ndim == 0:
        return np.zeros((0, int(x != 0)), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


# --------------------------------------------------------------------------------------------
# DepthToSpace, SpaceToDepth

def _block_check(op, x, blocksize):
    if x.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D [N, C, H, W], got shape {list(x.shape)}")
    bs = int(blocksize)
    if bs < 1:
        raise ValueError(f"{op}: blocksize must be >= 1, got {bs}")
    return bs


def _fresh(r, x):
    """r, copied where it is a view of x (blocksize 1 moves nothing): these ops make copies."""
    return r.copy() if np.shares_memory(r, x) else r


def _depth_to_space(x, blocksize, mode):
    bs = _block_check("DepthToSpace", x, blocksize)
    b, c, h, w = x.shape
    if c % (bs * bs):
        raise ValueError(f"DepthToSpace: channels {c} are not divisible by blocksize^2 = "
                         f"{bs * bs}")
    if mode == "DCR":
        t = x.reshape(b, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    elif mode == "CRD":
        t = x.reshape(b, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        raise ValueError(f"DepthToSpace: mode must be 'DCR' or 'CRD', got {mode!r}")
    return _fresh(t.reshape(b, c // (bs * bs), h * bs, w * bs), x)


@register("DepthToSpace", since=1, attrs={"blocksize": REQUIRED})
def depth_to_space_1(x, *, blocksize):
    return _depth_to_space(x, blocksize, "DCR")


@register("DepthToSpace", since=11, attrs={"blocksize": REQUIRED, "mode": "DCR"})
def depth_to_space_11(x, *, blocksize, mode):
    return _depth_to_space(x, blocksize, mode)


def _space_to_depth(x, blocksize, mode):
    bs = _block_check("SpaceToDepth", x, blocksize)
    b, c, h, w = x.shape
    if h % bs or w % bs:
        raise ValueError(f"SpaceToDepth: height {h} and width {w} must be divisible by "
                         f"blocksize {bs}")
    t = x.reshape(b, c, h // bs, bs, w // bs, bs)
    if mode == "DCR":
        t = t.transpose(0, 3, 5, 1, 2, 4)
    elif mode == "CRD":
        t = t.transpose(0, 1, 3, 5, 2, 4)
    else:
        raise ValueError(f"SpaceToDepth: mode must be 'DCR' or 'CRD', got {mode!r}")
    return _fresh(t.reshape(b, c * bs * bs, h // bs, w // bs), x)


@register("SpaceToDepth", since=1, attrs={"blocksize": REQUIRED})
def space_to_depth_1(x, *, blocksize):
    return _space_to_depth(x, blocksize, "DCR")


@register("SpaceToDepth", since=28, attrs={"blocksize": REQUIRED, "mode": "DCR"})
def space_to_depth_28(x, *, blocksize, mode):
    return _space_to_depth(x, blocksize, mode)


# --------------------------------------------------------------------------------------------
# Dropout (inference)

def _dropout(x, ratio, training, seed, n_outputs, mask_dtype):
    """Inference (training false or ratio 0): output = a copy of x, mask all true. Training:
    mask = uniform[0, 1) >= ratio drawn from numpy's RandomState(seed), as onnx.reference does,
    output = x * mask / (1 - ratio)."""
    r = float(_scalar_value(ratio, "Dropout", "ratio")) if ratio is not None else 0.5
    if not 0 <= r < 1:
        raise ValueError(f"Dropout: ratio must be in [0, 1), got {r}")
    if training and r > 0:
        if x.dtype.kind != "f":
            raise ValueError(f"Dropout: input must be floating-point, got {x.dtype}")
        rnd = np.random.RandomState(None if seed is None else int(seed))
        mask = rnd.uniform(0, 1.0, x.shape) >= r
        y = (mask * x * (1.0 / (1.0 - r))).astype(x.dtype, copy=False)
    else:
        y = x.copy()
        mask = np.ones(x.shape, dtype=bool)
    if n_outputs <= 1:
        return y
    return y, mask.astype(mask_dtype, copy=False)


@register("Dropout", since=7, attrs={"ratio": 0.5}, ctx=True)  # mask of the input's type
def dropout_7(x, *, ratio, ctx):
    return _dropout(x, None, False, None, ctx.n_outputs, x.dtype)


@register("Dropout", since=10, attrs={"ratio": 0.5}, ctx=True)  # bool mask
def dropout_10(x, *, ratio, ctx):
    return _dropout(x, None, False, None, ctx.n_outputs, np.bool_)


@register("Dropout", since=12, attrs={"seed": None}, ctx=True)  # ratio, training_mode inputs
def dropout_12(x, ratio=None, training_mode=None, *, seed, ctx):
    training = False
    if training_mode is not None:
        training = bool(_scalar_value(training_mode, "Dropout", "training_mode"))
    return _dropout(x, ratio, training, seed, ctx.n_outputs, np.bool_)
