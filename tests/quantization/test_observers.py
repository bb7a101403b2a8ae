"""Observers against brute-force references on small data."""
import numpy as np
import pytest

from qrt.quantization.observers import (Histogram, MinMaxObserver, MovingAverageObserver,
                                        TensorObserver, auto_range, entropy_range,
                                        histogram_mse, kl_divergence_curve, mse_range,
                                        percentile_range)
from qrt.quantization.params import fake_quant, qparams, quantize_weight, dequantize_weight


def _stream(seed=0, n=12):
    rng = np.random.default_rng(seed)
    # growing, shifting ranges force several re-binnings
    return [rng.standard_normal(500) * (1 + k) + 0.5 * k for k in range(n)]


def test_histogram_rebinning_is_exact():
    h = Histogram(256)
    data = _stream()
    for x in data:
        h.update(x)
    d = np.concatenate(data)
    ref, _ = np.histogram(d, bins=h.edges())
    assert h.total == d.size
    assert np.array_equal(ref, h.counts)
    f = h.folded()
    ref_abs, _ = np.histogram(np.abs(d), bins=np.arange(len(f) + 1) * h.width)
    assert np.array_equal(ref_abs, f)


def test_histogram_zero_batches_then_data():
    h = Histogram(64)
    h.update(np.zeros(10))
    h.update(np.array([1.0, 2.0]))
    assert h.total == 12 and h.zeros == 10


def test_minmax_and_moving_average():
    data = _stream()
    mm, ma = MinMaxObserver(), MovingAverageObserver(0.01)
    for x in data:
        mm.update(x)
        ma.update(x)
    d = np.concatenate(data)
    assert mm.range() == (d.min(), d.max())
    lo, hi = data[0].min(), data[0].max()
    for x in data[1:]:
        lo += 0.01 * (x.min() - lo)
        hi += 0.01 * (x.max() - hi)
    assert np.allclose(ma.range(), (lo, hi))


@pytest.mark.parametrize("p", [90.0, 99.0, 99.9])
def test_percentile_vs_numpy(p):
    h = Histogram(512)
    data = _stream(1)
    for x in data:
        h.update(x)
    d = np.concatenate(data)
    lo, hi = percentile_range(h, p, symmetric=False)
    assert abs(lo - np.percentile(d, 100 - p)) <= h.width
    assert abs(hi - np.percentile(d, p)) <= h.width
    slo, shi = percentile_range(h, p, symmetric=True)
    assert abs(shi - np.percentile(np.abs(d), p)) <= h.width and slo == -shi


def _raw_mse(d, lo, hi, qtype, sym):
    s, z = qparams(lo, hi, qtype, sym)
    return float(np.mean((fake_quant(d, s, z, qtype) - d) ** 2))


@pytest.mark.parametrize("qtype,sym", [("uint8", False), ("int8", True), ("int8", False)])
def test_mse_vs_exhaustive_grid(qtype, sym):
    rng = np.random.default_rng(2)
    d = np.concatenate([rng.laplace(size=4000), rng.laplace(size=20) * 8]).astype(np.float32)
    if qtype == "uint8":
        d = np.abs(d) * np.sign(d + 0.8)  # skewed
    h = Histogram(2048)
    h.update(d)
    lo, hi = mse_range(h, qtype, sym)
    got = _raw_mse(d, lo, hi, qtype, sym)
    # exhaustive search of clip ranges on the raw data
    best = np.inf
    grid = np.linspace(0.02, 1.0, 50)
    for a in grid:
        for b in (grid if not sym else [None]):
            cl, ch = (d.min() * a, d.max() * b) if b is not None else (-np.abs(d).max() * a,
                                                                       np.abs(d).max() * a)
            best = min(best, _raw_mse(d, cl, ch, qtype, sym))
    assert got <= best * 1.05 + 1e-12
    # and far better than plain min/max on these heavy tails
    assert got <= _raw_mse(d, d.min(), d.max(), qtype, sym)
    # the histogram estimate tracks the real error
    assert histogram_mse(h, lo, hi, qtype, sym) == pytest.approx(got, rel=0.25)


def _direct_kl(hist, i, nlevels):
    """TensorRT's algorithm written plainly, one bin at a time."""
    p = [float(v) for v in hist[:i]]
    p[-1] += float(sum(hist[i:]))
    m = i // nlevels
    q = [0.0] * i
    for j in range(nlevels):
        a = j * m
        b = i if j == nlevels - 1 else a + m
        nz = [k for k in range(a, b) if hist[k] > 0]
        tot = float(sum(hist[a:b]))
        for k in nz:
            q[k] = tot / len(nz)
    ps, qs = sum(p), sum(q)
    kl = 0.0
    for pk, qk in zip(p, q):
        if pk > 0:
            kl += (pk / ps) * np.log((pk / ps) / max(qk / qs, 1e-12))
    return kl


def test_entropy_vs_direct_kl():
    rng = np.random.default_rng(3)
    hist = np.histogram(np.abs(rng.standard_normal(20000)), bins=300)[0]
    ids, kls = kl_divergence_curve(hist, 32)
    direct = [_direct_kl(hist, i, 32) for i in ids]
    assert np.allclose(kls, direct, rtol=1e-9, atol=1e-12)
    # entropy_range picks the argmin threshold of that curve (symmetric data, 128 levels of int8)
    d = rng.standard_normal(50000)
    h = Histogram(1024)
    h.update(d)
    lo, hi = entropy_range(h, "int8", symmetric=True)
    f = h.folded()
    f[0] -= h.zeros
    ids, kls = kl_divergence_curve(f, 128)
    t = ids[int(np.argmin(kls))] * h.width
    assert hi == pytest.approx(min(t, d.max())) and lo == pytest.approx(max(-t, d.min()))
    assert 2.0 < hi <= d.max()


def test_auto_picks_lowest_estimated_mse():
    rng = np.random.default_rng(4)
    h = Histogram(2048)
    h.update(np.concatenate([rng.standard_normal(5000), [40.0]]))
    lo, hi, m = auto_range(h, "int8", False)
    e = histogram_mse(h, lo, hi, "int8", False)
    for other in [(h.min, h.max), percentile_range(h, 99.99), entropy_range(h, "int8")]:
        assert e <= histogram_mse(h, *other, "int8", False) + 1e-15


def test_qparams_contract():
    for qtype, sym in [("uint8", False), ("int8", False), ("int8", True), ("uint8", True),
                       ("int4", True)]:
        s, z = qparams(0.5, 3.0, qtype, sym)  # range widened to contain 0
        assert fake_quant(np.float32(0.0), s, z, qtype) == 0.0
        assert abs(fake_quant(np.float32(3.0), s, z, qtype) - 3.0) <= s / 2 + 1e-6
        if sym:
            assert int(z) == (0 if qtype.startswith("int") else 128)
    s, z = qparams(0.0, 0.0, "uint8", False)
    assert s == 1.0 and z == 0


@pytest.mark.parametrize("axis,block", [(None, None), (0, None), (1, None), (1, 4)])
def test_weight_quantization_roundtrip(axis, block):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 10, 3)).astype(np.float32)
    q, s, z = quantize_weight(w, "int8", True, axis, block)
    assert q.min() >= -128 and q.max() <= 127
    back = dequantize_weight(q, s, z, axis, block)
    step = np.max(s)
    assert np.abs(back - w).max() <= step / 2 + 1e-6


def test_tensor_observer_methods():
    obs = TensorObserver(histogram=True, num_bins=512)
    for x in _stream(6):
        obs.update(x.astype(np.float32))
    for m in ["minmax", "moving_average", "percentile", "mse", "entropy", "auto"]:
        lo, hi, used = obs.compute_range(m, "uint8", False)
        assert lo <= hi and used.split(":")[0] == m
