"""Streaming FIR decimator, bit-identical to SeisComP seedlink's filters.

Output k of a stage is ``sum_{i=0}^{L-1} (x[k*D + i] * taps[i]) * gain``,
accumulated in double from 0.0 in ascending i (SeisComP's
``FilterImpl::apply``); ``x[k*D]`` is the oldest sample of window k and the
first window is the first L samples after construction or :meth:`reset`.
The arithmetic lives in ``_fir_core.pxi``, shared with the stream processor.
"""

cimport numpy as cnp
import operator

import numpy as np
from libc.math cimport isfinite
from libc.stdint cimport int32_t

include "_fir_core.pxi"

cnp.import_array()

_KERNEL_LEVELS = {
    "scalar": FIR_KERNEL_SCALAR,
    "vec128": FIR_KERNEL_VEC128,
    "avx2": FIR_KERNEL_AVX2,
    "avx512": FIR_KERNEL_AVX512,
}
_KERNEL_NAMES = {v: k for k, v in _KERNEL_LEVELS.items()}

cdef enum:
    # inputs at least this long are filtered with the GIL released
    NOGIL_MIN = 16384


def available_kernels():
    """Names of the kernel levels this machine can run, slowest first.

    All levels give bit-identical results; ``FirDecimator(kernel=...)`` picks
    one (tests use this to cover every path), the default is the fastest.
    """
    return [name for name, level in _KERNEL_LEVELS.items() if fir_kernel_supported(level)]


cdef class FirDecimator:
    """FirDecimator(taps, decimation, gain=1.0, *, kernel=None)

    Streaming FIR filter + decimator with SeisComP seedlink's numerics.

    Parameters
    ----------
    taps : sequence of float
        Full tap list, ``taps[i]`` weighting the i-th oldest sample of a
        window (symmetric filters already expanded; minimum-phase filters in
        file order).  1 <= len(taps) <= 1048576, all finite.
    decimation : int
        Decimation factor D, 1 <= D <= len(taps) (filters.fir requires the
        same).
    gain : float
        Multiplied into every term after the tap: ``(x * c) * gain``.
    kernel : str, optional
        Force a kernel level (see :func:`available_kernels`); default fastest.
    """

    cdef fir_stage_t st

    def __cinit__(self, taps, decimation, gain=1.0, *, kernel=None):
        cdef cnp.ndarray[cnp.float64_t, ndim=1, mode="c"] t
        cdef int rc, level
        cdef double g
        try:
            d = operator.index(decimation)
        except TypeError:
            raise ValueError(f"decimation must be an integer, got {decimation!r}") from None
        try:
            a = np.asarray(taps, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"taps must be a 1-D sequence of numbers: {e}") from None
        if a.ndim != 1:
            raise ValueError(f"taps must be 1-D, got shape {a.shape}")
        t = np.ascontiguousarray(a)
        if t.shape[0] < 1:
            raise ValueError("taps must not be empty")
        if t.shape[0] > FIR_MAX_LEN:
            raise ValueError(f"at most {FIR_MAX_LEN} taps, got {t.shape[0]}")
        if not np.isfinite(t).all():
            raise ValueError("taps must be finite")
        if d < 1 or d > t.shape[0]:
            raise ValueError(
                f"decimation must be between 1 and the number of taps ({t.shape[0]}), got {d}")
        try:
            g = float(gain)
        except (TypeError, ValueError):
            raise ValueError(f"gain must be a number, got {gain!r}") from None
        if not isfinite(g):
            raise ValueError(f"gain must be finite, got {g}")
        if kernel is None or kernel == "auto":
            level = FIR_KERNEL_AUTO
        else:
            if kernel not in _KERNEL_LEVELS:
                raise ValueError(f"unknown kernel {kernel!r}; known: {sorted(_KERNEL_LEVELS)}")
            level = _KERNEL_LEVELS[kernel]
            if not fir_kernel_supported(level):
                raise ValueError(f"kernel {kernel!r} is not supported on this machine")
        rc = fir_stage_init(&self.st, <const double*>cnp.PyArray_DATA(t),
                            <int>t.shape[0], d, g)
        if rc == FIR_ENOMEM:
            raise MemoryError("FirDecimator: out of memory")
        if rc != FIR_OK:
            raise ValueError("FirDecimator: invalid arguments")
        fir_stage_set_kernel(&self.st, level)

    def __dealloc__(self):
        fir_stage_free(&self.st)

    def process(self, x):
        """process(x) -> numpy.ndarray[float64]

        Feed the next chunk of input (1-D float64 or int32 array, or any
        object numpy turns into one) and return the outputs it completes.
        The result does not depend on how the input stream is chunked.
        """
        cdef cnp.ndarray arr
        cdef cnp.ndarray out
        cdef int typ
        cdef cnp.npy_intp n, nout
        cdef Py_ssize_t r
        cdef const void* src
        cdef double* dst
        if self.st.taps == NULL:
            raise ValueError("FirDecimator is not initialised")
        if cnp.PyArray_Check(x):
            arr = <cnp.ndarray>x
        else:
            arr = np.asarray(x)
        typ = cnp.PyArray_TYPE(arr)
        if typ != cnp.NPY_FLOAT64 and typ != cnp.NPY_INT32:
            raise TypeError(f"input must be float64 or int32, got {arr.dtype}")
        if cnp.PyArray_NDIM(arr) != 1:
            raise ValueError(f"input must be 1-D, got shape {np.shape(arr)}")
        if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISBEHAVED_RO(arr)):
            arr = np.ascontiguousarray(arr, dtype="=f8" if typ == cnp.NPY_FLOAT64 else "=i4")
        n = cnp.PyArray_DIM(arr, 0)
        nout = fir_stage_max_out(&self.st, n)
        out = cnp.PyArray_EMPTY(1, &nout, cnp.NPY_FLOAT64, 0)
        src = cnp.PyArray_DATA(arr)
        dst = <double*>cnp.PyArray_DATA(out)
        if n >= NOGIL_MIN:
            with nogil:
                r = _feed(&self.st, typ == cnp.NPY_FLOAT64, src, n, dst, nout)
        else:
            r = _feed(&self.st, typ == cnp.NPY_FLOAT64, src, n, dst, nout)
        if r != nout:
            raise RuntimeError(f"FirDecimator: kernel returned {r}, expected {nout}")
        return out

    def reset(self):
        """Drop all pending input; filtering restarts from scratch."""
        fir_stage_reset(&self.st)

    @property
    def pending(self):
        """Input samples given but not consumed yet (always < length)."""
        return fir_stage_pending(&self.st)

    @property
    def length(self):
        """Number of taps L."""
        return self.st.length

    @property
    def decimation(self):
        """Decimation factor D."""
        return self.st.decimation

    @property
    def gain(self):
        """Gain multiplied into every term."""
        return self.st.gain

    @property
    def taps(self):
        """Copy of the full tap list, oldest-sample weight first."""
        cdef cnp.npy_intp L = self.st.length
        a = cnp.PyArray_EMPTY(1, &L, cnp.NPY_FLOAT64, 0)
        if L:
            memcpy_taps(<double*>cnp.PyArray_DATA(a), self.st.taps, L)
        return a

    @property
    def kernel(self):
        """Name of the kernel level in use."""
        return _KERNEL_NAMES.get(self.st.kernel, "?")

    def max_out(self, Py_ssize_t n):
        """Number of outputs process() returns for an input of n samples now."""
        if n < 0:
            raise ValueError("n must be >= 0")
        return fir_stage_max_out(&self.st, n)

    def __repr__(self):
        return (f"FirDecimator(length={self.st.length}, decimation={self.st.decimation}, "
                f"gain={self.st.gain!r}, pending={fir_stage_pending(&self.st)}, "
                f"kernel={self.kernel!r})")


cdef inline Py_ssize_t _feed(fir_stage_t* st, bint is_double, const void* src, Py_ssize_t n,
                             double* dst, Py_ssize_t cap) noexcept nogil:
    if is_double:
        return fir_stage_process(st, <const double*>src, n, dst, cap)
    return fir_stage_process_i32(st, <const int32_t*>src, n, dst, cap)


cdef inline void memcpy_taps(double* dst, const double* src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = src[i]
