"""Calibration observers. They stream: each keeps running statistics (min/max, a fixed-size
histogram), never the activations themselves.

- `MinMaxObserver`: running min / max.
- `MovingAverageObserver`: exponential moving average of per-batch min / max (constant 0.01, as
  onnxruntime's `moving_average` calibration).
- `Histogram`: `num_bins` bins of equal width on a grid anchored at 0 (bin k covers
  [k*w, (k+1)*w)). When data falls outside the window, the width doubles (pairs of bins merge, exactly,
  because the grid stays anchored at 0) until the window covers old and new data. Folding it onto
  |x| is exact too, which the symmetric methods use.
- range functions on a histogram: `percentile_range`, `mse_range` (clipping range minimising the
  quantize-dequantize error estimated on the histogram), `entropy_range` (TensorRT-style KL
  divergence search over thresholds that clip at most 1% of the values), `auto_range` (the candidate with the lowest histogram-estimated MSE).

Every method ends in (rmin, rmax); `qrt.quantization.params.qparams` turns that into scale / zero
point, the same for all methods.
"""
from __future__ import annotations

import math

import numpy as np

from qrt.quantization.params import qparams, qrange

METHODS = ("minmax", "moving_average", "percentile", "mse", "entropy", "auto")
HISTOGRAM_METHODS = ("percentile", "mse", "entropy", "auto")


class MinMaxObserver:
    def __init__(self):
        self.min = math.inf
        self.max = -math.inf
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        self.min = min(self.min, float(np.min(x)))
        self.max = max(self.max, float(np.max(x)))
        self.count += x.size

    def range(self) -> tuple[float, float]:
        if self.count == 0:
            return 0.0, 0.0
        return self.min, self.max


class MovingAverageObserver(MinMaxObserver):
    def __init__(self, averaging_constant: float = 0.01):
        super().__init__()
        self.c = averaging_constant

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        lo, hi = float(np.min(x)), float(np.max(x))
        if self.count == 0:
            self.min, self.max = lo, hi
        else:
            self.min += self.c * (lo - self.min)
            self.max += self.c * (hi - self.max)
        self.count += x.size


class Histogram:
    """Fixed-size histogram on a 0-anchored grid, re-binned exactly when the range grows."""

    def __init__(self, num_bins: int = 2048):
        if num_bins < 16:
            raise ValueError(f"num_bins must be >= 16, got {num_bins}")
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, np.int64)
        self.kmin = 0  # grid index of counts[0]
        self.width = 0.0  # 0 until a non-zero value has been seen
        self.pending_zeros = 0
        self.zeros = 0  # exact zeros (ReLU's spike), which quantize exactly whatever the range
        self.min = math.inf
        self.max = -math.inf

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.pending_zeros

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self.zeros += int(np.count_nonzero(x == 0.0))
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if self.width == 0.0:
            if lo == 0.0 and hi == 0.0:
                self.pending_zeros += x.size
                return
            span = max(hi, 0.0) - min(lo, 0.0)
            self.width = span / (self.num_bins - 2)
            self.kmin = int(math.floor(min(lo, 0.0) / self.width))
            self.counts[-self.kmin] += self.pending_zeros  # bin holding 0
            self.pending_zeros = 0
        klo = int(math.floor(lo / self.width))
        khi = int(math.floor(hi / self.width))
        while True:
            nz = np.nonzero(self.counts)[0]
            dlo = self.kmin + int(nz[0]) if nz.size else klo
            dhi = self.kmin + int(nz[-1]) if nz.size else khi
            if max(khi, dhi) - min(klo, dlo) + 1 <= self.num_bins:
                break
            self._double()
            klo = int(math.floor(lo / self.width))
            khi = int(math.floor(hi / self.width))
        new_kmin = min(klo, dlo)
        if new_kmin != self.kmin:
            moved = np.zeros(self.num_bins, np.int64)
            if nz.size:
                a, b = int(nz[0]), int(nz[-1]) + 1
                off = self.kmin - new_kmin
                moved[a + off:b + off] = self.counts[a:b]
            self.counts, self.kmin = moved, new_kmin
        k = np.floor(x / self.width).astype(np.int64) - self.kmin
        np.clip(k, 0, self.num_bins - 1, out=k)
        self.counts += np.bincount(k, minlength=self.num_bins)

    def _double(self) -> None:
        """Merge pairs of bins on the 0-anchored grid (exact), width doubles."""
        nz = np.nonzero(self.counts)[0]
        self.width *= 2.0
        if nz.size == 0:
            self.kmin = self.kmin // 2
            return
        new_k = np.floor_divide(nz + self.kmin, 2)
        first = int(new_k[0])
        merged = np.bincount(new_k - first, weights=self.counts[nz]).astype(np.int64)
        self.counts = np.zeros(self.num_bins, np.int64)
        self.counts[:merged.size] = merged
        self.kmin = first

    # -- views --------------------------------------------------------------------------------
    def edges(self) -> np.ndarray:
        return (np.arange(self.num_bins + 1) + self.kmin) * self.width

    def trimmed(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, left edges) over the non-empty span, pending zeros included."""
        if self.width == 0.0:
            return np.array([self.pending_zeros]), np.array([0.0])
        nz = np.nonzero(self.counts)[0]
        a, b = int(nz[0]), int(nz[-1]) + 1
        return self.counts[a:b].copy(), (np.arange(a, b) + self.kmin) * self.width

    def folded(self) -> np.ndarray:
        """Histogram of |x| on bins [k*w, (k+1)*w), k = 0.. (exact: bin -k-1 folds onto k)."""
        if self.width == 0.0:
            return np.array([self.pending_zeros], np.int64)
        idx = np.arange(self.num_bins) + self.kmin
        a = np.where(idx >= 0, idx, -idx - 1)
        out = np.bincount(a, weights=self.counts, minlength=int(a.max()) + 1).astype(np.int64)
        nz = np.nonzero(out)[0]
        return out[: int(nz[-1]) + 1] if nz.size else out[:1]


# -- range methods on a histogram ---------------------------------------------------------------

def _quantile(counts: np.ndarray, left: np.ndarray, width: float, q: float) -> float:
    cum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    # numpy's convention: the q-quantile sits at rank q*(n-1) (0-based) among the n samples;
    # sample j occupies [j, j+1) of the cumulative count.
    target = q * (cum[-1] - 1) + 0.5
    j = int(np.searchsorted(cum, target, side="left"))
    j = min(max(j, 1), len(counts))
    c0, c1 = cum[j - 1], cum[j]
    frac = 0.0 if c1 == c0 else (target - c0) / (c1 - c0)
    return float(left[j - 1] + frac * width)


def percentile_range(h: Histogram, percentile: float = 99.99, symmetric: bool = False):
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if h.width == 0.0:
        return 0.0, 0.0
    p = percentile / 100.0
    if symmetric:
        f = h.folded()
        t = _quantile(f, np.arange(len(f)) * h.width, h.width, p)
        t = min(t, max(-h.min, h.max))
        return -t, t
    counts, left = h.trimmed()
    lo = _quantile(counts, left, h.width, 1.0 - p)
    hi = _quantile(counts, left, h.width, p)
    return max(lo, h.min), min(hi, h.max)


_SUB = 4  # sub-points per bin for the error estimate (uniform density inside a bin)


def _points(h: Histogram):
    counts, left = h.trimmed()
    keep = counts > 0
    counts, left = counts[keep], left[keep]
    off = (np.arange(_SUB) + 0.5) / _SUB * h.width
    pts = (left[:, None] + off[None, :]).ravel()
    wts = np.repeat(counts.astype(np.float64) / _SUB, _SUB)
    if h.pending_zeros:
        pts = np.append(pts, 0.0)
        wts = np.append(wts, float(h.pending_zeros))
    return pts, wts


def qdq_error(pts: np.ndarray, wts: np.ndarray, lo, hi, qtype: str, symmetric: bool) -> np.ndarray:
    """Weighted sum of squared quantize-dequantize error of `pts` for each candidate range
    (lo, hi arrays of equal length). Uses the same `qparams` as the quantizer."""
    lo = np.atleast_1d(np.asarray(lo, np.float64))
    hi = np.atleast_1d(np.asarray(hi, np.float64))
    scale, zp = qparams(lo, hi, qtype, symmetric)
    qmin, qmax = qrange(qtype)
    s = scale.astype(np.float64)[:, None]
    q = np.clip(np.rint(pts[None, :] / s) + zp[:, None], qmin, qmax)
    err = (q - zp[:, None]) * s - pts[None, :]
    return (err * err) @ wts


def histogram_mse(h: Histogram, lo: float, hi: float, qtype: str, symmetric: bool) -> float:
    pts, wts = _points(h)
    tot = wts.sum()
    return float(qdq_error(pts, wts, [lo], [hi], qtype, symmetric)[0] / max(tot, 1.0))


def mse_range(h: Histogram, qtype: str = "uint8", symmetric: bool = False, steps: int = 128):
    """Clipping range that minimises the histogram-estimated quantize-dequantize MSE.

    Symmetric: exhaustive over `steps` thresholds t in (0, max|x|]. Affine: a joint search over
    shrink factors of [min, max] followed by two rounds of coordinate descent on each end."""
    if h.width == 0.0:
        return 0.0, 0.0
    pts, wts = _points(h)
    rmin, rmax = min(h.min, 0.0), max(h.max, 0.0)
    fr = np.arange(1, steps + 1) / steps
    if symmetric:
        amax = max(-rmin, rmax)
        t = amax * fr
        e = qdq_error(pts, wts, -t, t, qtype, True)
        best = t[int(np.argmin(e))]
        return float(max(-best, h.min)), float(min(best, h.max))
    e = qdq_error(pts, wts, rmin * fr, rmax * fr, qtype, False)
    k = int(np.argmin(e))
    lo, hi, best = rmin * fr[k], rmax * fr[k], e[k]
    for _ in range(2):
        if rmax > 0:
            cand = rmax * fr
            e = qdq_error(pts, wts, np.full_like(cand, lo), cand, qtype, False)
            k = int(np.argmin(e))
            if e[k] < best:
                hi, best = cand[k], e[k]
        if rmin < 0:
            cand = rmin * fr
            e = qdq_error(pts, wts, cand, np.full_like(cand, hi), qtype, False)
            k = int(np.argmin(e))
            if e[k] < best:
                lo, best = cand[k], e[k]
    return float(lo), float(hi)


def kl_divergence_curve(hist: np.ndarray, nlevels: int, start: int | None = None):
    """TensorRT's entropy calibration on a non-negative histogram: for each candidate threshold bin
    i (nlevels..len), P = hist[:i] with the outliers added to the last bin, Q = hist[:i] merged into
    `nlevels` chunks and spread back over each chunk's non-empty bins; returns (i values, KL(P||Q))."""
    hist = np.asarray(hist, np.float64)
    n = len(hist)
    start = nlevels if start is None else start
    ids = np.arange(start, n + 1)
    kls = np.empty(len(ids))
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    for j, i in enumerate(ids):
        p = hist[:i].copy()
        p[-1] += tail[i]
        base = hist[:i]
        nz = base > 0
        m = i // nlevels
        starts = np.arange(nlevels) * m
        sums = np.add.reduceat(base, starts)
        cnt = np.add.reduceat(nz.astype(np.float64), starts)
        chunk = np.minimum(np.arange(i) // m, nlevels - 1)
        q = np.where(nz, sums[chunk] / np.maximum(cnt[chunk], 1.0), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            kls[j] = np.inf
            continue
        p /= ps
        q /= qs
        mask = p > 0
        kls[j] = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
    return ids, kls


MAX_CLIPPED = 0.01  # entropy: thresholds may clip at most this fraction of the (non-zero) values
ONE_SIDED_RATIO = 0.25  # entropy: |min| <= this * max counts as one-sided data (affine types)


def entropy_range(h: Histogram, qtype: str = "uint8", symmetric: bool = False):
    """Threshold minimising KL(P||Q) on the |x| histogram, or on the positive side with the
    levels an affine range gives it when the data is (mostly) non-negative."""
    if h.width == 0.0:
        return 0.0, 0.0
    qmin, qmax = qrange(qtype)
    # Mostly non-negative data under an affine type (ReLU-like, hard-swish: min -0.375): search
    # the upper threshold on the positive side, with the levels the affine range gives it; the
    # small negative side is kept whole.
    one_sided = not symmetric and h.max > 0.0 and -h.min <= ONE_SIDED_RATIO * h.max
    if one_sided:
        neg = max(-h.min, 0.0)
        nlevels = max(2, int((qmax - qmin) * h.max / (h.max + neg)) + 1)
        idx = np.arange(h.num_bins) + h.kmin
        f = h.counts[idx >= 0].copy() if h.kmin < 0 else np.concatenate(
            [np.zeros(h.kmin, np.int64), h.counts])
        nz = np.nonzero(f)[0]
        f = f[: int(nz[-1]) + 1] if nz.size else f[:1]
    else:
        nlevels = (qmax - qmin + 1) // 2
        f = h.folded()
    f[0] -= min(h.zeros, int(f[0]))  # exact zeros cost nothing at any threshold: leave them out
    if len(f) <= nlevels:
        t = len(f) * h.width
    else:
        # KL(P||Q) does not see how far clipped values are moved: when most of the data sits away
        # from 0 (an image input's bright background), a threshold below all of it collapses P
        # into its last bin and scores KL = 0. Clipping is meant for rare outliers, so thresholds
        # that clip more than MAX_CLIPPED of the values are not candidates.
        tail = np.concatenate([np.cumsum(f[::-1])[::-1], [0]])
        ok = np.nonzero(tail <= MAX_CLIPPED * tail[0])[0]
        start = max(nlevels, int(ok[0]) if ok.size else len(f))
        if start >= len(f):
            t = len(f) * h.width
        else:
            ids, kls = kl_divergence_curve(f, nlevels, start)
            t = ids[int(np.argmin(kls))] * h.width
    if one_sided:
        return float(min(h.min, 0.0)), float(min(t, h.max))
    return float(max(-t, h.min)), float(min(t, h.max))


def auto_range(h: Histogram, qtype: str, symmetric: bool, percentile: float = 99.99):
    """Candidate (minmax, percentile, mse, entropy) with the lowest histogram-estimated MSE.
    Returns (rmin, rmax, chosen method)."""
    cands = {
        "minmax": (h.min, h.max) if h.total else (0.0, 0.0),
        "percentile": percentile_range(h, percentile, symmetric),
        "entropy": entropy_range(h, qtype, symmetric),
        "mse": mse_range(h, qtype, symmetric),
    }
    if h.width == 0.0:
        return 0.0, 0.0, "minmax"
    pts, wts = _points(h)
    names = list(cands)
    lo = [cands[n][0] for n in names]
    hi = [cands[n][1] for n in names]
    e = qdq_error(pts, wts, lo, hi, qtype, symmetric)
    k = int(np.argmin(e))
    return float(lo[k]), float(hi[k]), names[k]


class TensorObserver:
    """Everything calibration keeps about one tensor: min/max, moving-average min/max and, when a
    histogram method may be asked for, a histogram."""

    def __init__(self, histogram: bool, num_bins: int = 2048, averaging_constant: float = 0.01):
        self.minmax = MinMaxObserver()
        self.moving = MovingAverageObserver(averaging_constant)
        self.hist = Histogram(num_bins) if histogram else None
        self.dtype = None
        self.batches = 0

    def update(self, x: np.ndarray) -> None:
        if self.dtype is None:
            self.dtype = x.dtype
        if x.dtype.kind != "f":
            return
        self.batches += 1
        self.minmax.update(x)
        self.moving.update(x)
        if self.hist is not None:
            self.hist.update(x)

    def compute_range(self, method: str, qtype: str, symmetric: bool, percentile: float = 99.99):
        """(rmin, rmax, method actually used)."""
        if method == "minmax":
            return (*self.minmax.range(), method)
        if method == "moving_average":
            return (*self.moving.range(), method)
        if self.hist is None:
            raise ValueError(f"method {method!r} needs a histogram; none was collected")
        if method == "percentile":
            return (*percentile_range(self.hist, percentile, symmetric), method)
        if method == "mse":
            return (*mse_range(self.hist, qtype, symmetric), method)
        if method == "entropy":
            return (*entropy_range(self.hist, qtype, symmetric), method)
        if method == "auto":
            lo, hi, m = auto_range(self.hist, qtype, symmetric, percentile)
            return lo, hi, f"auto:{m}"
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
