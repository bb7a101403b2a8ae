"""Loss ops that exported models sometimes keep at inference time: NegativeLogLikelihoodLoss and
SoftmaxCrossEntropyLoss (opset 12/13), with class weights, ignore_index and the none/sum/mean
reductions as the spec defines them (a weighted mean divides by the weights of the counted
targets)."""
from __future__ import annotations

import numpy as np

from qrt.ops.registry import register

_REDUCTIONS = ("none", "sum", "mean")


def _nll(logp, target, weight, reduction, ignore_index, op):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logp.ndim < 2:
        raise ValueError(f"{op}: input must be (N, C, ...), got shape {list(logp.shape)}")
    n, c = logp.shape[:2]
    if target.dtype.kind not in "iu":
        raise ValueError(f"{op}: target must be an integer tensor, got {target.dtype}")
    if target.shape != (n,) + logp.shape[2:]:
        raise ValueError(f"{op}: target shape {list(target.shape)} does not match input "
                         f"{list(logp.shape)} (expected {[n] + list(logp.shape[2:])})")
    if weight is not None and weight.shape != (c,):
        raise ValueError(f"{op}: weight must have shape [{c}], got {list(weight.shape)}")
    t = target.astype(np.int64)
    ignored = (t == ignore_index) if ignore_index is not None else np.zeros(t.shape, bool)
    bad = ~ignored & ((t < 0) | (t >= c))
    if bad.any():
        raise ValueError(f"{op}: target value {int(t[bad][0])} is outside [0, {c})")
    safe = np.where(ignored, 0, t)
    picked = np.take_along_axis(logp, np.expand_dims(safe, 1), axis=1)[:, 0]
    w = (np.ones(c, logp.dtype) if weight is None else weight.astype(logp.dtype))[safe]
    w = np.where(ignored, logp.dtype.type(0), w)
    loss = -picked * w
    if reduction == "none":
        return loss.astype(logp.dtype)
    if reduction == "sum":
        return np.asarray(loss.sum(), logp.dtype)
    if weight is None and ignore_index is None:
        return np.asarray(loss.mean(), logp.dtype)
    return np.asarray(loss.sum() / w.sum(), logp.dtype)


@register("NegativeLogLikelihoodLoss", since=12, attrs={"reduction": "mean", "ignore_index": None})
def nll_loss(x, target, weight=None, *, reduction, ignore_index):
    if x.dtype.kind != "f":
        raise ValueError(f"NegativeLogLikelihoodLoss: input must be floating point, got {x.dtype}")
    return _nll(x, target, weight, reduction, ignore_index, "NegativeLogLikelihoodLoss")


@register("SoftmaxCrossEntropyLoss", since=12, ctx=True,
          attrs={"reduction": "mean", "ignore_index": None})
def softmax_cross_entropy_loss(scores, labels, weights=None, *, reduction, ignore_index, ctx):
    op = "SoftmaxCrossEntropyLoss"
    if scores.dtype.kind != "f" or scores.ndim < 2:
        raise ValueError(f"{op}: scores must be floating point (N, C, ...), got {scores.dtype}"
                         f"{list(scores.shape)}")
    ct = np.float32 if scores.dtype == np.float16 else scores.dtype
    s = scores.astype(ct)
    m = s.max(axis=1, keepdims=True)
    logp = (s - m) - np.log(np.exp(s - m).sum(axis=1, keepdims=True))
    loss = _nll(logp, labels, None if weights is None else weights.astype(ct), reduction,
                ignore_index, op).astype(scores.dtype)
    if ctx.n_outputs > 1:
        return loss, logp.astype(scores.dtype)
    return loss
