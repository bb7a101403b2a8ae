"""Recurrent ops: RNN, GRU, LSTM (ONNX formulas, every attribute and optional input/output).

Shapes (layout 0): X [seq, batch, input], W [dirs, G*hidden, input], R [dirs, G*hidden, hidden],
B [dirs, 2*G*hidden], sequence_lens [batch], initial_h/initial_c [dirs, batch, hidden],
P [dirs, 3*hidden]; Y [seq, dirs, batch, hidden], Y_h/Y_c [dirs, batch, hidden]. layout 1 (opset
14) puts batch first: X [batch, seq, input], initial/Y_h/Y_c [batch, dirs, hidden],
Y [batch, seq, dirs, hidden].

Gate order in W/R/B: RNN [i], GRU [z, r, h], LSTM [i, o, f, c]; LSTM peepholes P [i, o, f].
A batch entry with sequence_lens[b] < seq stops early: its Y rows past the end are 0 and its
Y_h/Y_c are the state after its last step (reverse direction: it starts at step len-1).
Arithmetic runs in float64 and the outputs take X's type.
"""
from __future__ import annotations

import numpy as np

from qrt.ops.registry import register

# name -> (uses alpha, uses beta, default alpha, default beta, f(x, alpha, beta))
_ACTIVATIONS = {
    "relu": (False, False, 0.0, 0.0, lambda x, a, b: np.maximum(x, 0)),
    "tanh": (False, False, 0.0, 0.0, lambda x, a, b: np.tanh(x)),
    "sigmoid": (False, False, 0.0, 0.0, lambda x, a, b: 0.5 * (1 + np.tanh(0.5 * x))),
    "affine": (True, True, 1.0, 0.0, lambda x, a, b: a * x + b),
    "leakyrelu": (True, False, 0.01, 0.0, lambda x, a, b: np.where(x < 0, a * x, x)),
    "thresholdedrelu": (True, False, 1.0, 0.0, lambda x, a, b: np.where(x > a, x, 0.0)),
    "scaledtanh": (True, True, 1.0, 1.0, lambda x, a, b: a * np.tanh(b * x)),
    "hardsigmoid": (True, True, 0.2, 0.5, lambda x, a, b: np.clip(a * x + b, 0, 1)),
    "elu": (True, False, 1.0, 0.0, lambda x, a, b: np.where(x < 0, a * np.expm1(np.minimum(x, 0)),
                                                            x)),
    "softsign": (False, False, 0.0, 0.0, lambda x, a, b: x / (1 + np.abs(x))),
    "softplus": (False, False, 0.0, 0.0, lambda x, a, b: np.logaddexp(0, x)),
}


def _activation_funcs(op, names, alphas, betas, per_dir, dirs, defaults):
    """One list of `per_dir` callables per direction. alpha/beta values are consumed in the
    order of the activation list, by the functions that take them (as onnxruntime does)."""
    names = list(defaults) * dirs if names is None else list(names)
    if len(names) != per_dir * dirs:
        raise ValueError(f"{op}: activations {names} must list {per_dir} function(s) per "
                         f"direction ({per_dir * dirs} in all)")
    alphas = list(alphas or [])
    betas = list(betas or [])
    funcs = []
    for name in names:
        key = str(name).lower()
        if key not in _ACTIVATIONS:
            raise ValueError(f"{op}: unknown activation {name!r} (known: "
                             f"{', '.join(sorted(_ACTIVATIONS))})")
        ua, ub, da, db, f = _ACTIVATIONS[key]
        a = alphas.pop(0) if ua and alphas else da
        b = betas.pop(0) if ub and betas else db
        funcs.append(lambda x, f=f, a=float(a), b=float(b): f(x, a, b))
    return [funcs[d * per_dir:(d + 1) * per_dir] for d in range(dirs)]


def _prepare(op, gates, x, w, r, b, seq_lens, init, layout, direction, hidden_size,
             extra_inits=()):
    """Checks shapes, normalises to layout 0, returns
    (X [T, B, I] float64, W, R, Wb, Rb, lens [B], initial states [dirs, B, H] list, dirs, H)."""
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"{op}: direction must be forward, reverse or bidirectional, got "
                         f"{direction!r}")
    if layout not in (0, 1):
        raise ValueError(f"{op}: layout must be 0 or 1, got {layout}")
    dirs = 2 if direction == "bidirectional" else 1
    for name, v in (("X", x), ("W", w), ("R", r)):
        if v.ndim != 3:
            raise ValueError(f"{op}: {name} must be 3-D, got shape {list(v.shape)}")
        if v.dtype.kind != "f":
            raise ValueError(f"{op}: {name} must be floating point, got {v.dtype}")
    xs = x if layout == 0 else np.swapaxes(x, 0, 1)
    t_n, b_n, i_n = xs.shape
    if w.shape[0] != dirs or r.shape[0] != dirs:
        raise ValueError(f"{op}: W and R must have {dirs} direction(s) for direction="
                         f"{direction}, got {w.shape[0]} and {r.shape[0]}")
    if w.shape[1] % gates:
        raise ValueError(f"{op}: W's dimension 1 ({w.shape[1]}) is not {gates} * hidden_size")
    h_n = w.shape[1] // gates
    if hidden_size is not None and int(hidden_size) != h_n:
        raise ValueError(f"{op}: hidden_size {hidden_size} disagrees with W of shape "
                         f"{list(w.shape)} ({gates} gates)")
    if w.shape[2] != i_n:
        raise ValueError(f"{op}: W of shape {list(w.shape)} does not match input size {i_n}")
    if r.shape != (dirs, gates * h_n, h_n):
        raise ValueError(f"{op}: R must have shape {[dirs, gates * h_n, h_n]}, got "
                         f"{list(r.shape)}")
    if b is None:
        wb = np.zeros((dirs, gates * h_n))
        rb = np.zeros((dirs, gates * h_n))
    else:
        if b.shape != (dirs, 2 * gates * h_n):
            raise ValueError(f"{op}: B must have shape {[dirs, 2 * gates * h_n]}, got "
                             f"{list(b.shape)}")
        bf = b.astype(np.float64)
        wb, rb = bf[:, :gates * h_n], bf[:, gates * h_n:]
    if seq_lens is None:
        lens = np.full(b_n, t_n, dtype=np.int64)
    else:
        if seq_lens.dtype.kind not in "iu" or seq_lens.shape != (b_n,):
            raise ValueError(f"{op}: sequence_lens must be an integer tensor of shape [{b_n}], "
                             f"got {seq_lens.dtype} {list(seq_lens.shape)}")
        lens = seq_lens.astype(np.int64)
        if lens.size and (lens.min() < 0 or lens.max() > t_n):
            raise ValueError(f"{op}: sequence_lens {lens.tolist()} must be in [0, {t_n}]")
    states = []
    for name, v in (("initial_h", init),) + tuple(extra_inits):
        if v is None:
            states.append(np.zeros((dirs, b_n, h_n)))
            continue
        want = (dirs, b_n, h_n) if layout == 0 else (b_n, dirs, h_n)
        if v.shape != want:
            raise ValueError(f"{op}: {name} must have shape {list(want)}, got {list(v.shape)}")
        v = v if layout == 0 else np.swapaxes(v, 0, 1)
        states.append(v.astype(np.float64))
    return (xs.astype(np.float64), w.astype(np.float64), r.astype(np.float64), wb, rb, lens,
            states, dirs, h_n)


def _outputs(x, ys, finals, layout, n_outputs):
    """ys: per direction [T, B, H]; finals: list of per-direction [B, H] lists (h, c)."""
    y = np.stack(ys, axis=1)  # [T, dirs, B, H]
    states = [np.stack(f, axis=0) for f in finals]  # [dirs, B, H]
    if layout == 1:
        y = np.transpose(y, (2, 0, 1, 3))
        states = [np.swapaxes(s, 0, 1) for s in states]
    out = (y,) + tuple(states)
    return tuple(np.ascontiguousarray(o).astype(x.dtype) for o in out)[:max(1, n_outputs)]


def _clipper(op, clip):
    if clip is None:
        return lambda v: v
    c = float(clip)
    if not c > 0:
        raise ValueError(f"{op}: clip must be positive, got {clip}")
    return lambda v: np.clip(v, -c, c)


def _scan(t_n, lens, reverse, step, states):
    """Runs `step(t, states) -> new states` over time; entries past their length keep their
    state and write 0 to Y. Returns (Y [T, B, H], final states)."""
    b_n, h_n = states[0].shape
    y = np.zeros((t_n, b_n, h_n))
    order = range(t_n - 1, -1, -1) if reverse else range(t_n)
    for t in order:
        active = (t < lens)[:, None]
        new = step(t, states)
        states = [np.where(active, n, s) for n, s in zip(new, states)]
        y[t] = np.where(active, new[0], 0.0)
    return y, states


# --------------------------------------------------------------------------------------------
# RNN

def _rnn(x, w, r, b, seq_lens, init, *, activation_alpha, activation_beta, activations, clip,
         direction, hidden_size, layout, n_outputs):
    op = "RNN"
    xs, W, R, Wb, Rb, lens, (h0,), dirs, h_n = _prepare(
        op, 1, x, w, r, b, seq_lens, init, layout, direction, hidden_size)
    funcs = _activation_funcs(op, activations, activation_alpha, activation_beta, 1, dirs,
                              ["Tanh"])
    clp = _clipper(op, clip)
    ys, hs = [], []
    for d in range(dirs):
        xw = xs @ W[d].T + Wb[d] + Rb[d]
        f = funcs[d][0]
        rt = R[d].T

        def step(t, st, xw=xw, f=f, rt=rt):
            return [f(clp(xw[t] + st[0] @ rt))]

        reverse = direction == "reverse" or d == 1
        y, (h,) = _scan(xs.shape[0], lens, reverse, step, [h0[d]])
        ys.append(y)
        hs.append(h)
    return _outputs(x, ys, [hs], layout, n_outputs)


_RNN_ATTRS = {"activation_alpha": None, "activation_beta": None, "activations": None,
              "clip": None, "direction": "forward", "hidden_size": None}


@register("RNN", since=7, attrs=dict(_RNN_ATTRS), ctx=True)
def rnn_7(x, w, r, b=None, sequence_lens=None, initial_h=None, *, ctx, **attrs):
    return _rnn(x, w, r, b, sequence_lens, initial_h, layout=0, n_outputs=ctx.n_outputs, **attrs)


@register("RNN", since=14, attrs=dict(_RNN_ATTRS, layout=0), ctx=True)  # 22: bfloat16
def rnn_14(x, w, r, b=None, sequence_lens=None, initial_h=None, *, ctx, **attrs):
    return _rnn(x, w, r, b, sequence_lens, initial_h, n_outputs=ctx.n_outputs, **attrs)


# --------------------------------------------------------------------------------------------
# GRU

def _gru(x, w, r, b, seq_lens, init, *, activation_alpha, activation_beta, activations, clip,
         direction, hidden_size, layout, linear_before_reset, n_outputs):
    op = "GRU"
    xs, W, R, Wb, Rb, lens, (h0,), dirs, h_n = _prepare(
        op, 3, x, w, r, b, seq_lens, init, layout, direction, hidden_size)
    funcs = _activation_funcs(op, activations, activation_alpha, activation_beta, 2, dirs,
                              ["Sigmoid", "Tanh"])
    clp = _clipper(op, clip)
    H = h_n
    ys, hs = [], []
    for d in range(dirs):
        xw = xs @ W[d].T + Wb[d]  # [T, B, 3H]: z, r, h
        rz_t, rr_t, rh_t = R[d][:H].T, R[d][H:2 * H].T, R[d][2 * H:].T
        rbz, rbr, rbh = Rb[d][:H], Rb[d][H:2 * H], Rb[d][2 * H:]
        f, g = funcs[d]

        def step(t, st, xw=xw, f=f, g=g, rz_t=rz_t, rr_t=rr_t, rh_t=rh_t, rbz=rbz, rbr=rbr,
                 rbh=rbh):
            h = st[0]
            z = f(clp(xw[t][:, :H] + h @ rz_t + rbz))
            rg = f(clp(xw[t][:, H:2 * H] + h @ rr_t + rbr))
            if linear_before_reset:
                hh = g(clp(xw[t][:, 2 * H:] + rg * (h @ rh_t + rbh)))
            else:
                hh = g(clp(xw[t][:, 2 * H:] + (rg * h) @ rh_t + rbh))
            return [(1 - z) * hh + z * h]

        reverse = direction == "reverse" or d == 1
        y, (h,) = _scan(xs.shape[0], lens, reverse, step, [h0[d]])
        ys.append(y)
        hs.append(h)
    return _outputs(x, ys, [hs], layout, n_outputs)


_GRU_ATTRS = dict(_RNN_ATTRS, linear_before_reset=0)


@register("GRU", since=7, attrs=dict(_GRU_ATTRS), ctx=True)
def gru_7(x, w, r, b=None, sequence_lens=None, initial_h=None, *, ctx, **attrs):
    return _gru(x, w, r, b, sequence_lens, initial_h, layout=0, n_outputs=ctx.n_outputs, **attrs)


@register("GRU", since=14, attrs=dict(_GRU_ATTRS, layout=0), ctx=True)  # 22: bfloat16
def gru_14(x, w, r, b=None, sequence_lens=None, initial_h=None, *, ctx, **attrs):
    return _gru(x, w, r, b, sequence_lens, initial_h, n_outputs=ctx.n_outputs, **attrs)


# --------------------------------------------------------------------------------------------
# LSTM

def _lstm(x, w, r, b, seq_lens, init_h, init_c, p, *, activation_alpha, activation_beta,
          activations, clip, direction, hidden_size, input_forget, layout, n_outputs):
    op = "LSTM"
    xs, W, R, Wb, Rb, lens, (h0, c0), dirs, h_n = _prepare(
        op, 4, x, w, r, b, seq_lens, init_h, layout, direction, hidden_size,
        extra_inits=(("initial_c", init_c),))
    funcs = _activation_funcs(op, activations, activation_alpha, activation_beta, 3, dirs,
                              ["Sigmoid", "Tanh", "Tanh"])
    H = h_n
    if p is None:
        P = np.zeros((dirs, 3 * H))
    else:
        if p.shape != (dirs, 3 * H):
            raise ValueError(f"{op}: P must have shape {[dirs, 3 * H]}, got {list(p.shape)}")
        P = p.astype(np.float64)
    clp = _clipper(op, clip)
    ys, hs, cs = [], [], []
    for d in range(dirs):
        xw = xs @ W[d].T + Wb[d] + Rb[d]  # [T, B, 4H]: i, o, f, c
        rt = R[d].T
        pi, po, pf = P[d][:H], P[d][H:2 * H], P[d][2 * H:]
        f, g, hf = funcs[d]

        def step(t, st, xw=xw, rt=rt, pi=pi, po=po, pf=pf, f=f, g=g, hf=hf):
            h, c = st
            a = xw[t] + h @ rt
            i = f(clp(a[:, :H] + pi * c))
            if input_forget:
                fg = 1 - i
            else:
                fg = f(clp(a[:, 2 * H:3 * H] + pf * c))
            cc = g(clp(a[:, 3 * H:]))
            c_new = fg * c + i * cc
            o = f(clp(a[:, H:2 * H] + po * c_new))
            return [o * hf(c_new), c_new]

        reverse = direction == "reverse" or d == 1
        y, (h, c) = _scan(xs.shape[0], lens, reverse, step, [h0[d], c0[d]])
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return _outputs(x, ys, [hs, cs], layout, n_outputs)


_LSTM_ATTRS = dict(_RNN_ATTRS, input_forget=0)


@register("LSTM", since=7, attrs=dict(_LSTM_ATTRS), ctx=True)
def lstm_7(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, ctx,
           **attrs):
    return _lstm(x, w, r, b, sequence_lens, initial_h, initial_c, p, layout=0,
                 n_outputs=ctx.n_outputs, **attrs)


@register("LSTM", since=14, attrs=dict(_LSTM_ATTRS, layout=0), ctx=True)  # 22: bfloat16
def lstm_14(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, ctx,
            **attrs):
    return _lstm(x, w, r, b, sequence_lens, initial_h, initial_c, p, n_outputs=ctx.n_outputs,
                 **attrs)
