"""Plain reference model of SeisComP seedlink's FIR decimation (the test oracle).

SeisComP (apps/seedlink/filterimpl.h, FilterImpl::apply) computes each output
of a node as

    double acc = 0;
    for (int i = 0; i < len; ++i) acc += *(p++) * points[i] * gain;

over the full tap list (zero-phase filters: stored half, centre tap for odd
length, stored half mirrored; minimum-phase "...M" filters: file order), with
p at the oldest sample of the window; the first window is the first L
samples after start/reset and each output advances the window by D.  C's
``*`` is left associative, so each term is ``(x * c) * gain``.

This model keeps the whole input since the last reset and recomputes the
outputs with an explicit loop over the taps in ascending order; every
operation is one IEEE double multiply or add (numpy ufuncs across the
outputs, or Python floats in :func:`fir_scalar`), so nothing is fused or
reassociated.  It is deliberately simple and slow.
"""
from __future__ import annotations

import numpy as np

__all__ = ["FirRef", "fir_outputs", "fir_scalar", "expand_taps", "load_fir_file", "CascadeRef"]


def fir_outputs(x, taps, decimation, gain=1.0):
    """All outputs of one stage over the complete input ``x`` (numpy model).

    out[k] = sum over i ascending of (x[k*D + i] * taps[i]) * gain, from 0.0.
    """
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(taps, dtype=np.float64)
    L, D = len(c), int(decimation)
    g = float(gain)
    if len(x) < L:
        return np.zeros(0)
    nout = (len(x) - L) // D + 1
    acc = np.zeros(nout)
    with np.errstate(all="ignore"):               # inf/NaN inputs are allowed
        for i in range(L):
            xi = x[i:i + (nout - 1) * D + 1:D]    # x[k*D + i] for k = 0..nout-1
            term = xi * c[i]
            term = term * g
            acc = acc + term
    return acc


def fir_scalar(x, taps, decimation, gain=1.0):
    """Same as :func:`fir_outputs`, one Python float operation at a time."""
    x = [float(v) for v in x]
    c = [float(v) for v in taps]
    L, D, g = len(c), int(decimation), float(gain)
    out = []
    k = 0
    while k * D + L <= len(x):
        acc = 0.0
        for i in range(L):
            acc += x[k * D + i] * c[i] * g          # (x * c) * g, as in C
        out.append(acc)
        k += 1
    return np.array(out, dtype=np.float64)


class FirRef:
    """Streaming twin of ``FirDecimator``: same API, keeps all input."""

    def __init__(self, taps, decimation, gain=1.0):
        self.taps = np.asarray(taps, dtype=np.float64).copy()
        self.decimation = int(decimation)
        self.gain = float(gain)
        self.length = len(self.taps)
        self.reset()

    def reset(self):
        self._x = np.zeros(0)      # every sample since the last reset
        self._done = 0             # outputs already returned

    def process(self, x):
        self._x = np.concatenate([self._x, np.asarray(x, dtype=np.float64)])
        out = fir_outputs(self._x, self.taps, self.decimation, self.gain)
        new = out[self._done:]
        self._done = len(out)
        return new

    @property
    def pending(self):
        """samples after the start of the next window (SeisComP cbuf.used(inp))"""
        return len(self._x) - self._done * self.decimation


class CascadeRef:
    """Chain of FirRef stages, each fed the previous one's untruncated output."""

    def __init__(self, stages):
        self.stages = [FirRef(*s) for s in stages]

    def process(self, x):
        outs = []
        y = x
        for st in self.stages:
            y = st.process(y)
            outs.append(y)
        return outs


def expand_taps(name, coeffs, length):
    """Full tap list of a filters.fir entry (see the module docstring)."""
    coeffs = [float(v) for v in coeffs]
    if name.endswith("M"):
        if len(coeffs) != length:
            raise ValueError(f"{name}: {len(coeffs)} coefficients, expected {length}")
        return np.array(coeffs)
    half = length // 2 + length % 2
    if len(coeffs) != half:
        raise ValueError(f"{name}: {len(coeffs)} coefficients, expected {half}")
    mirror = coeffs[:length // 2][::-1]
    return np.array(coeffs + mirror)


def load_fir_file(path):
    """Minimal filters.fir reader: {name: (full_taps, decimation, gain)}.

    Format (seedlink-reference 4.2): line 1 count; per filter four lines
    (name, length, gain, decimation; first token of each line counts) and
    then the coefficients as whitespace-separated floats in any layout.
    """
    with open(path) as f:
        lines = f.read().splitlines()
    pos = 0

    def first_token():
        nonlocal pos
        while not lines[pos].split():
            pos += 1
        tok = lines[pos].split()[0]
        pos += 1
        return tok

    count = int(first_token())
    out = {}
    for _ in range(count):
        name = first_token()
        length = int(first_token())
        gain = float(first_token())
        dec = int(first_token())
        need = length if name.endswith("M") else length // 2 + length % 2
        vals = []
        while len(vals) < need:
            toks = lines[pos].split()
            pos += 1
            vals.extend(toks)
        if len(vals) != need:
            raise ValueError(f"{name}: coefficient line overruns the filter")
        out.setdefault(name, (expand_taps(name, vals, length), dec, gain))
    return out
