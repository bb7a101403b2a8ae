"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
ReduceSumSquare, ReduceLogSumExp, ReduceLogSum.

Opset < 18 (ReduceSum: < 13) takes `axes` as an attribute (absent or empty: reduce every axis);
from then on it is an optional int64 input, and an empty/absent `axes` reduces every axis unless
`noop_with_empty_axes=1`, which reduces over no axis at all: plain reductions become an identity,
composite ones keep their elementwise steps (ReduceSumSquare gives x*x, ReduceLogSum log(x),
ReduceL1 |x|). float16 accumulates in float32 and rounds once; integer sums and products wrap in
the input type like C; integer means truncate toward zero. Reducing an empty set gives the
operation's identity: 0 for sums, 1 for products, -inf / +inf (the type's lowest / highest value
for integers, False / True for bool) for Max / Min, -inf for the log-sums.
"""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401


def _axes(axes, rank, op="ReduceMean"):
    out = []
    for a in axes:
        a = int(a)
        if not -rank <= a < rank:
            raise ValueError(f"{op}: axis {a} is out of range for rank {rank} "
                             f"(valid: {-rank}..{rank - 1})")
        out.append(a + rank if a < 0 else a)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: axes {list(axes)} repeat an axis")
    return tuple(out)


_FAST = (np.dtype(np.float32), np.dtype(np.float64))


def _count(shape, ax):
    n = 1
    for a in ax:
        n *= shape[a]
    return n


def reduce_mean(x, axes, keepdims):
    """Mean over `axes` (None: all axes), keeping x's element type."""
    ax = None if axes is None else _axes(axes, x.ndim)
    kd = bool(keepdims)
    if x.dtype in _FAST and x.size:
        # np.mean's own steps (a pairwise add.reduce in x's type, then a division by the count
        # in that type), without its Python wrapper and errstate: ~8 of a small call's ~11 us
        n = x.size if ax is None else _count(x.shape, ax)
        r = np.add.reduce(x, axis=ax, keepdims=kd)
        return np.asarray(r / x.dtype.type(n)).astype(x.dtype, copy=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        if x.dtype.kind == "f":
            acc = np.float32 if x.dtype.itemsize < 4 else x.dtype
            r = np.mean(x, axis=ax, dtype=acc, keepdims=kd)
        elif x.dtype.kind in "iu":
            n = x.size if ax is None else int(np.prod([x.shape[a] for a in ax]))
            s = np.sum(x, axis=ax, dtype=np.int64 if x.dtype.kind == "i" else np.uint64,
                       keepdims=kd)
            if n == 0:
                r = np.zeros_like(s)
            elif x.dtype.kind == "i":
                r = np.where(s < 0, -((-s) // n), s // n)  # truncate toward zero
            else:
                r = s // n
        else:
            raise ValueError(f"ReduceMean: unsupported element type {x.dtype}")
    return np.asarray(r).astype(x.dtype, copy=False)


@register("ReduceMean", since=1, attrs={"axes": None, "keepdims": 1})
def reduce_mean_1(data, *, axes, keepdims):
    return reduce_mean(data, axes or None, keepdims)  # absent or empty: every axis


@register("ReduceMean", since=18, attrs={"keepdims": 1, "noop_with_empty_axes": 0})
def reduce_mean_18(data, axes=None, *, keepdims, noop_with_empty_axes):
    if axes is None or axes.size == 0:
        if noop_with_empty_axes:
            return data.view()
        return reduce_mean(data, None, keepdims)
    if axes.dtype.kind not in "iu":
        raise ValueError(f"ReduceMean: axes must be int64, got {axes.dtype}")
    return reduce_mean(data, axes.reshape(-1).tolist(), keepdims)


# --------------------------------------------------------------------------------------------
# The other reductions. Each takes (x, ax, keepdims) with ax None (every axis) or a tuple of
# normalised axes, the empty tuple meaning "no axis" (noop_with_empty_axes=1).

def _acc_dtype(op, x, allow_bool=False):
    """Accumulation type: float16 -> float32, other floats and integers their own type."""
    if x.dtype == np.bool_ and allow_bool:
        return x.dtype
    if x.dtype == np.bool_ or x.dtype.kind not in "iuf":
        raise ValueError(f"{op}: unsupported element type {x.dtype}")
    return np.dtype(np.float32) if x.dtype == np.float16 else x.dtype


def _float_dtype(x):
    """Type for the exp/log/sqrt steps: float16 -> float32, integers -> float64."""
    if x.dtype.kind == "f":
        return np.dtype(np.float32) if x.dtype.itemsize < 4 else x.dtype
    return np.dtype(np.float64)


def _out(r, x):
    """The result as an array of x's type (float -> integer truncates toward zero)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(r).astype(x.dtype, copy=False)


def _sum(x, ax, kd, op="ReduceSum"):
    acc = _acc_dtype(op, x)
    with np.errstate(over="ignore"):
        return _out(np.add.reduce(x, axis=ax, dtype=acc, keepdims=kd), x)


def _prod(x, ax, kd):
    acc = _acc_dtype("ReduceProd", x)
    with np.errstate(over="ignore", invalid="ignore"):
        return _out(np.multiply.reduce(x, axis=ax, dtype=acc, keepdims=kd), x)


def _extreme(x, ax, kd, largest):
    op = "ReduceMax" if largest else "ReduceMin"
    _acc_dtype(op, x, allow_bool=True)
    if x.dtype == np.bool_:
        init = not largest
    elif x.dtype.kind == "f":
        init = -np.inf if largest else np.inf
    else:
        info = np.iinfo(x.dtype)
        init = info.min if largest else info.max
    ufunc = np.maximum if largest else np.minimum  # NaN propagates
    return _out(ufunc.reduce(x, axis=ax, keepdims=kd, initial=init), x)


def _l1(x, ax, kd):
    acc = _acc_dtype("ReduceL1", x)
    with np.errstate(over="ignore"):
        a = np.abs(x) if x.dtype.kind != "u" else x
        return _out(np.add.reduce(a, axis=ax, dtype=acc, keepdims=kd), x)


def _sum_square(x, ax, kd, op="ReduceSumSquare"):
    acc = _acc_dtype(op, x)
    xa = x.astype(acc, copy=False)
    with np.errstate(over="ignore"):
        return np.add.reduce(xa * xa, axis=ax, keepdims=kd)


def _l2(x, ax, kd):
    s = _sum_square(x, ax, kd, "ReduceL2")
    return _out(np.sqrt(s.astype(_float_dtype(x), copy=False)), x)


def _log_sum(x, ax, kd):
    acc = _acc_dtype("ReduceLogSum", x)
    with np.errstate(over="ignore"):
        s = np.add.reduce(x, axis=ax, dtype=acc, keepdims=kd)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.log(np.asarray(s).astype(_float_dtype(x), copy=False)), x)


def _log_sum_exp(x, ax, kd):
    """log(sum(exp(x))) as m + log(sum(exp(x - m))), m the largest finite-or-not maximum (0 where
    it is infinite, so that all -inf gives -inf and a +inf gives +inf instead of NaN)."""
    _acc_dtype("ReduceLogSumExp", x)
    xf = x.astype(_float_dtype(x), copy=False)
    m = np.maximum.reduce(xf, axis=ax, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, m.dtype.type(0))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        s = np.add.reduce(np.exp(xf - m), axis=ax, keepdims=True)
        r = np.log(s) + m
    if not kd:
        r = r.reshape([d for i, d in enumerate(r.shape)
                       if not (ax is None or i in ax)])
    return _out(r, x)


def _no_int(op, fn):
    def wrapped(x, ax, kd):
        if x.dtype.kind != "f":
            raise ValueError(f"{op}: integer input {x.dtype} is not allowed from opset 28 "
                             "(cast it to a float type)")
        return fn(x, ax, kd)
    return wrapped


def _attr_axes(op, x, axes):
    return None if not axes else _axes(axes, x.ndim, op)  # absent or empty: every axis


def _input_axes(op, x, axes, noop):
    if axes is None or axes.size == 0:
        return () if noop else None
    if axes.dtype.kind not in "iu":
        raise ValueError(f"{op}: axes must be int64, got {axes.dtype}")
    if axes.ndim > 1:
        raise ValueError(f"{op}: axes must be 1-D, got shape {list(axes.shape)}")
    return _axes(axes.reshape(-1).tolist(), x.ndim, op)


def _register_reduce(op, fn, input_since, *, latest=None):
    """Register `op` twice: axes as an attribute (opset 1) and as an input (`input_since`);
    `latest` = (since, fn) adds a third version with another kernel."""

    def attr_form(data, *, axes, keepdims):
        return fn(data, _attr_axes(op, data, axes), bool(keepdims))

    def make_input_form(kernel):
        def input_form(data, axes=None, *, keepdims, noop_with_empty_axes):
            return kernel(data, _input_axes(op, data, axes, noop_with_empty_axes),
                          bool(keepdims))
        return input_form

    attr_form.__name__ = f"{op}_1"
    register(op, since=1, attrs={"axes": None, "keepdims": 1})(attr_form)
    forms = [attr_form]
    versions = [(input_since, fn)] + ([latest] if latest else [])
    for since, kernel in versions:
        f = make_input_form(kernel)
        f.__name__ = f"{op}_{since}"
        register(op, since=since, attrs={"keepdims": 1, "noop_with_empty_axes": 0})(f)
        forms.append(f)
    return forms


reduce_sum_1, reduce_sum_13 = _register_reduce("ReduceSum", _sum, 13)
reduce_max_1, reduce_max_18 = _register_reduce(
    "ReduceMax", lambda x, ax, kd: _extreme(x, ax, kd, True), 18)  # 20: bool
reduce_min_1, reduce_min_18 = _register_reduce(
    "ReduceMin", lambda x, ax, kd: _extreme(x, ax, kd, False), 18)
reduce_prod_1, reduce_prod_18 = _register_reduce("ReduceProd", _prod, 18)
reduce_l1_1, reduce_l1_18 = _register_reduce("ReduceL1", _l1, 18)
reduce_l2_1, reduce_l2_18 = _register_reduce("ReduceL2", _l2, 18)
reduce_sum_square_1, reduce_sum_square_18 = _register_reduce(
    "ReduceSumSquare", lambda x, ax, kd: _out(_sum_square(x, ax, kd), x), 18)
reduce_log_sum_exp_1, reduce_log_sum_exp_18, reduce_log_sum_exp_28 = _register_reduce(
    "ReduceLogSumExp", _log_sum_exp, 18,
    latest=(28, _no_int("ReduceLogSumExp", _log_sum_exp)))
reduce_log_sum_1, reduce_log_sum_18, reduce_log_sum_28 = _register_reduce(
    "ReduceLogSum", _log_sum, 18, latest=(28, _no_int("ReduceLogSum", _log_sum)))
