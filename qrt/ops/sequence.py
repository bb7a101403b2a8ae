"""Sequence and optional ops. A sequence value is a Python list of arrays, an optional value is its
element (an array or a list) or None. Ops never modify a list they are given (a plan may hold one
across calls): each returns a new one.

Errors are ValueErrors: the plan reports them with the node's name and input shapes.

Ops returning a sequence or an optional return it in a 1-tuple, so that a list is never taken for
several outputs (and None never for "no output").
"""
from __future__ import annotations

import numpy as np

from qrt.ops.registry import REQUIRED, register


def _describe(x) -> str:
    if x is None:
        return "None (an empty optional)"
    if isinstance(x, np.ndarray):
        return f"a tensor {x.dtype}{list(x.shape)}"
    return type(x).__name__


def _seq(x, what="input 0"):
    if not isinstance(x, list):
        raise ValueError(f"{what} must be a sequence, got {_describe(x)}")
    return x


def _position(p, n, hi, what="position"):
    if not isinstance(p, (np.ndarray, np.generic)) or np.asarray(p).size != 1 \
            or np.asarray(p).dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer scalar, got {_describe(p)}")
    k = int(np.asarray(p).reshape(()))
    if not -n <= k <= hi:
        raise ValueError(f"{what} {k} is out of range [{-n}, {hi}] for a sequence of {n}")
    return k + n if k < 0 else k


def _same_dtype(items, what):
    dts = {np.asarray(t).dtype for t in items}
    if len(dts) > 1:
        raise ValueError(f"{what}: the tensors of a sequence must share one element type, "
                                 f"got {sorted(d.name for d in dts)}")


@register("SequenceEmpty", since=11, attrs={"dtype": None})
def sequence_empty(*, dtype):
    return ([],)


@register("SequenceConstruct", since=11)
def sequence_construct(*inputs):
    for j, x in enumerate(inputs):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"input {j} must be a tensor, got {_describe(x)}")
    _same_dtype(inputs, "SequenceConstruct")
    return (list(inputs),)


@register("SequenceInsert", since=11)
def sequence_insert(seq, tensor, position=None):
    seq = _seq(seq)
    if not isinstance(tensor, np.ndarray):
        raise ValueError(f"input 1 must be a tensor, got {_describe(tensor)}")
    if seq:
        _same_dtype([seq[0], tensor], "SequenceInsert")
    k = len(seq) if position is None else _position(position, len(seq), len(seq))
    return (seq[:k] + [tensor] + seq[k:],)


@register("SequenceAt", since=11)
def sequence_at(seq, position):
    seq = _seq(seq)
    return seq[_position(position, len(seq), len(seq) - 1)]


@register("SequenceErase", since=11)
def sequence_erase(seq, position=None):
    seq = _seq(seq)
    if not seq:
        raise ValueError("cannot erase from an empty sequence")
    k = len(seq) - 1 if position is None else _position(position, len(seq), len(seq) - 1)
    return (seq[:k] + seq[k + 1:],)


@register("SequenceLength", since=11)
def sequence_length(seq):
    return np.array(len(_seq(seq)), dtype=np.int64)


@register("SplitToSequence", since=11, attrs={"axis": 0, "keepdims": 1})
def split_to_sequence(x, split=None, *, axis, keepdims):
    if not isinstance(x, np.ndarray):
        raise ValueError(f"input 0 must be a tensor, got {_describe(x)}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    dim = x.shape[axis]
    if split is None:
        parts = [x[(slice(None),) * axis + (i,)] for i in range(dim)] if not keepdims else \
            [x[(slice(None),) * axis + (slice(i, i + 1),)] for i in range(dim)]
        return (parts,)
    split = np.asarray(split)
    if split.ndim == 0:
        size = int(split)
        if size <= 0:
            raise ValueError(f"split must be positive, got {size}")
        sizes = [size] * (dim // size) + ([dim % size] if dim % size else [])
    elif split.ndim == 1:
        sizes = [int(s) for s in split]
        if any(s < 0 for s in sizes) or sum(sizes) != dim:
            raise ValueError(f"split {sizes} does not add up to dimension {axis}'s size "
                                     f"{dim}")
    else:
        raise ValueError(f"split must be a scalar or 1-D, got shape {list(split.shape)}")
    parts, start = [], 0
    for s in sizes:
        parts.append(x[(slice(None),) * axis + (slice(start, start + s),)])
        start += s
    return (parts,)


@register("ConcatFromSequence", since=11, attrs={"axis": REQUIRED, "new_axis": 0})
def concat_from_sequence(seq, *, axis, new_axis):
    seq = _seq(seq)
    if not seq:
        raise ValueError("cannot concatenate an empty sequence")
    _same_dtype(seq, "ConcatFromSequence")  # numpy would promote a mixed sequence silently
    rank = np.ndim(seq[0])
    top = rank + 1 if new_axis else rank
    if not -top <= axis < top:
        raise ValueError(f"axis {axis} is out of range for rank {rank}"
                                 + (" with new_axis=1" if new_axis else ""))
    try:
        return np.stack(seq, axis=axis) if new_axis else np.concatenate(seq, axis=axis)
    except ValueError as e:
        raise ValueError(
            f"the sequence's tensors do not fit together ({[list(np.shape(t)) for t in seq]}): "
            f"{e}") from e


# ------------------------------------------------------------------------------------ Optional


@register("Optional", since=15, attrs={"type": None})
def optional(x=None, *, type):
    return (x,)


@register("OptionalHasElement", since=15)
def optional_has_element(x=None):
    return np.array(x is not None)


@register("OptionalGetElement", since=15)
def optional_get_element(x):
    if x is None:
        raise ValueError("the optional input is empty")
    return (x,)
