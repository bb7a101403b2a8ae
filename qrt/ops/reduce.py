"""Reductions: ReduceMean.

Opset < 18 takes `axes` as an attribute (absent: reduce every axis); opset 18 takes it as an
optional input, and an empty/absent `axes` reduces every axis unless `noop_with_empty_axes=1`,
which makes the op an identity. float16 accumulates in float32; integer means truncate toward zero.
"""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401


def _axes(axes, rank):
    out = []
    for a in axes:
        a = int(a)
        if not -rank <= a < rank:
            raise ValueError(f"ReduceMean: axis {a} is out of range for rank {rank} "
                             f"(valid: {-rank}..{rank - 1})")
        out.append(a + rank if a < 0 else a)
    if len(set(out)) != len(out):
        raise ValueError(f"ReduceMean: axes {list(axes)} repeat an axis")
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
