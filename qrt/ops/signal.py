"""Signal processing: HannWindow, HammingWindow, BlackmanWindow, DFT (opset 17 and 20 forms),
STFT, MelWeightMatrix.

Complex values are real tensors with a trailing axis of 2 (real, imaginary); a real signal may
have a trailing axis of 1. Transforms run in numpy.fft at the input's precision (float16 as float32) and return the input's
type.
"""
from __future__ import annotations

import numpy as np

from qrt.ops.registry import register
from qrt.ops.tensor import elem_dtype


def _int_scalar(v, op, name):
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{op}: {name} must be an integer scalar, got {a.dtype} of shape "
                         f"{list(a.shape)}")
    return int(a.reshape(-1)[0])


def _out_dtype(op, output_datatype):
    try:
        dt = elem_dtype(output_datatype)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from None
    return dt


# --------------------------------------------------------------------------------------------
# windows

def _window(op, size, output_datatype, periodic, terms):
    n = _int_scalar(size, op, "size")
    if n < 0:
        raise ValueError(f"{op}: size must be >= 0, got {n}")
    dt = _out_dtype(op, output_datatype)
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.zeros(n)
        for coef, mult in terms:
            y = y + coef * np.cos(k * (2 * np.pi * mult) / denom)
    return y.astype(dt)


_WINDOW_ATTRS = {"output_datatype": 1, "periodic": 1}


@register("HannWindow", since=17, attrs=dict(_WINDOW_ATTRS))
def hann_window(size, *, output_datatype, periodic):
    """0.5 - 0.5 cos(2 pi n / N), N = size (periodic) or size - 1."""
    return _window("HannWindow", size, output_datatype, periodic, [(0.5, 0), (-0.5, 1)])


@register("HammingWindow", since=17, attrs=dict(_WINDOW_ATTRS))
def hamming_window(size, *, output_datatype, periodic):
    """25/46 - 21/46 cos(2 pi n / N)."""
    a = 25.0 / 46.0
    return _window("HammingWindow", size, output_datatype, periodic, [(a, 0), (-(1 - a), 1)])


@register("BlackmanWindow", since=17, attrs=dict(_WINDOW_ATTRS))
def blackman_window(size, *, output_datatype, periodic):
    """0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)."""
    return _window("BlackmanWindow", size, output_datatype, periodic,
                   [(0.42, 0), (-0.5, 1), (0.08, 2)])


# --------------------------------------------------------------------------------------------
# DFT

def _as_complex(x, op):
    if x.dtype.kind != "f":
        raise ValueError(f"{op}: input must be floating point, got {x.dtype}")
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise ValueError(f"{op}: input's last axis must be 1 (real) or 2 (complex), got shape "
                         f"{list(x.shape)}")
    # float32 stays float32 (numpy.fft computes complex64 for it, as the ONNX test data does)
    xf = x.astype(np.float32 if x.dtype.itemsize <= 4 else np.float64)
    if x.shape[-1] == 1:
        return xf[..., 0]
    z = np.empty(xf.shape[:-1], np.complex64 if xf.dtype == np.float32 else np.complex128)
    z.real = xf[..., 0]
    z.imag = xf[..., 1]
    return z


def _ri(z):
    return np.stack([z.real, z.imag], axis=-1)


def _dft(x, dft_length, axis, inverse, onesided, op="DFT"):
    sig = _as_complex(x, op)
    r = x.ndim
    if not -r <= axis < r - 1 and not (axis < 0 and -r <= axis <= -2):
        raise ValueError(f"{op}: axis {axis} is out of range for a rank-{r} input (the last "
                         "axis holds the real/imaginary parts)")
    a = axis % r
    if a == r - 1:
        raise ValueError(f"{op}: axis {axis} is the real/imaginary axis")
    if onesided and inverse and x.shape[-1] != 2:
        raise ValueError(f"{op}: an inverse one-sided transform takes a complex input")
    if onesided and not inverse and x.shape[-1] != 1:
        raise ValueError(f"{op}: onesided=1 needs a real input (last axis of size 1)")
    if dft_length is None:
        n = 2 * (x.shape[a] - 1) if (inverse and onesided) else x.shape[a]
    else:
        n = _int_scalar(dft_length, op, "dft_length")
    if n <= 0:
        raise ValueError(f"{op}: dft_length must be positive, got {n}")
    if inverse:
        if onesided:  # one-sided spectrum -> real signal of length n (last axis 1)
            out = np.fft.irfft(sig, n=n, axis=a)[..., None]
        else:
            out = _ri(np.fft.ifft(sig, n=n, axis=a))
    else:
        z = np.fft.fft(sig, n=n, axis=a)
        if onesided:
            z = np.take(z, np.arange(n // 2 + 1), axis=a)
        out = _ri(z)
    return out.astype(x.dtype)


@register("DFT", since=17, attrs={"axis": 1, "inverse": 0, "onesided": 0})
def dft_17(x, dft_length=None, *, axis, inverse, onesided):
    """Opset 17: axis is an attribute (default 1)."""
    return _dft(x, dft_length, int(axis), inverse, onesided)


@register("DFT", since=20, attrs={"inverse": 0, "onesided": 0})
def dft_20(x, dft_length=None, axis=None, *, inverse, onesided):
    """Opset 20: axis moved to an optional scalar input (default -2)."""
    a = -2 if axis is None else _int_scalar(axis, "DFT", "axis")
    if dft_length is not None and np.asarray(dft_length).size == 0:
        dft_length = None
    return _dft(x, dft_length, a, inverse, onesided)


# --------------------------------------------------------------------------------------------
# STFT

@register("STFT", since=17, attrs={"onesided": 1})
def stft(signal, frame_step, window=None, frame_length=None, *, onesided):
    """[batch, length, 1|2] -> [batch, frames, bins, 2]; frames = 1 + (length - frame_length) //
    frame_step, each frame multiplied by the window and transformed (bins = frame_length // 2 + 1
    when onesided)."""
    op = "STFT"
    if signal.ndim != 3:
        raise ValueError(f"{op}: signal must be [batch, length, 1 or 2], got shape "
                         f"{list(signal.shape)}")
    sig = _as_complex(signal, op)  # [B, L]
    step = _int_scalar(frame_step, op, "frame_step")
    if step <= 0:
        raise ValueError(f"{op}: frame_step must be positive, got {step}")
    if window is not None and window.ndim != 1:
        raise ValueError(f"{op}: window must be 1-D, got shape {list(window.shape)}")
    if frame_length is not None:
        flen = _int_scalar(frame_length, op, "frame_length")
        if window is not None and window.shape[0] != flen:
            raise ValueError(f"{op}: window has {window.shape[0]} values but frame_length is "
                             f"{flen}")
    elif window is not None:
        flen = window.shape[0]
    else:
        flen = signal.shape[1]
    if not 0 < flen <= signal.shape[1]:
        raise ValueError(f"{op}: frame_length {flen} must be in [1, {signal.shape[1]}]")
    if onesided and signal.shape[-1] != 1:
        raise ValueError(f"{op}: onesided=1 needs a real signal (last axis of size 1)")
    w = np.ones(flen) if window is None else window.astype(np.float64)
    n_frames = 1 + (signal.shape[1] - flen) // step
    idx = np.arange(n_frames)[:, None] * step + np.arange(flen)[None, :]
    frames = sig[:, idx] * w  # [B, F, flen]
    z = np.fft.fft(frames, n=flen, axis=-1)
    if onesided:
        z = z[..., :flen // 2 + 1]
    return _ri(z).astype(signal.dtype)


# --------------------------------------------------------------------------------------------
# MelWeightMatrix

@register("MelWeightMatrix", since=17, attrs={"output_datatype": 1})
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz,
                      upper_edge_hertz, *, output_datatype):
    """[dft_length // 2 + 1, num_mel_bins] triangular filters, equally spaced on the mel scale
    between the two edges (the arithmetic of ONNX's reference, bin edges floored)."""
    op = "MelWeightMatrix"
    n_mel = _int_scalar(num_mel_bins, op, "num_mel_bins")
    n_dft = _int_scalar(dft_length, op, "dft_length")
    rate = _int_scalar(sample_rate, op, "sample_rate")
    for name, v in (("lower_edge_hertz", lower_edge_hertz), ("upper_edge_hertz",
                                                               upper_edge_hertz)):
        if np.asarray(v).size != 1 or np.asarray(v).dtype.kind != "f":
            raise ValueError(f"{op}: {name} must be a float scalar")
    lo = np.asarray(lower_edge_hertz).reshape(())
    hi = np.asarray(upper_edge_hertz).reshape(())
    if n_mel <= 0 or n_dft <= 0 or rate <= 0:
        raise ValueError(f"{op}: num_mel_bins ({n_mel}), dft_length ({n_dft}) and sample_rate "
                         f"({rate}) must be positive")
    if not 0 <= float(lo) < float(hi) <= rate / 2:
        raise ValueError(f"{op}: need 0 <= lower_edge_hertz ({float(lo)}) < upper_edge_hertz "
                         f"({float(hi)}) <= sample_rate / 2 ({rate / 2})")
    dt = _out_dtype(op, output_datatype)
    n_spec = n_dft // 2 + 1
    bins = np.arange(0, n_mel + 2)
    low_mel = 2595 * np.log1p(lo / 700) / np.log(10)
    high_mel = 2595 * np.log1p(hi / 700) / np.log(10)
    mel_step = (high_mel - low_mel) / bins.shape[0]
    freq = bins * mel_step + low_mel
    freq = 700 * np.expm1(freq / 2595 * np.log(10))
    freq = (((n_dft + 1) * freq) // rate).astype(np.int64)
    out = np.zeros((n_spec, n_mel))
    for i in range(n_mel):
        left, center, right = int(freq[i]), int(freq[i + 1]), int(freq[i + 2])
        if center - left == 0:
            if 0 <= center < n_spec:
                out[center, i] = 1
        else:
            j = np.arange(left, center + 1)
            keep = (j >= 0) & (j < n_spec)
            out[j[keep], i] = (j[keep] - left) / (center - left)
        if right - center > 0:
            j = np.arange(center, right)
            keep = (j >= 0) & (j < n_spec)
            out[j[keep], i] = (right - j[keep]) / (right - center)
    return out.astype(dt)
