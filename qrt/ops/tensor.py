"""Tensor/shape ops: Constant, Identity, Cast, Shape, Reshape, Flatten, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze, Gather, Expand.

Shape-only ops (Reshape, Flatten, Transpose, Slice, Split, Squeeze, Unsqueeze, Identity) return views
of their input; none writes into an input. Bad attribute or shape values raise ValueError naming the
problem; Gather's out-of-range indices raise IndexError.
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
