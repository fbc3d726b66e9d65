# Steim1/Steim2 frame codec: one-shot entry points over the shared core.
# Records with headers are built by the mseed kernel; this module works on
# bare frames (the data area of records), for tests and for tools that need
# the frames alone.

include "_steim_core.pxi"

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdlib cimport malloc, free

import numpy as np
cimport numpy as cnp

cnp.import_array()


def encode(const int32_t[::1] samples, int level=2, int nframes=7, int prev_sample=0,
           bint flush=True):
    """Pack samples into Steim data areas of nframes 64-byte frames.

    Returns (data, records, clamped): data is the concatenated big-endian
    frames of every record, records a list of (first_index, nsamples,
    nframes_used), clamped the number of Steim2 differences clamped.
    The packing is SeisComP's (see _steim_core.pxi).
    """
    cdef steim_enc_t *enc = <steim_enc_t *>malloc(sizeof(steim_enc_t))
    cdef Py_ssize_t n = samples.shape[0], maxrec, nrec = 0, i
    cdef uint8_t *out
    cdef steim_rec_t *info
    if enc is NULL:
        raise MemoryError()
    if steim_enc_init(enc, level, nframes, prev_sample) < 0:
        free(enc)
        raise ValueError("level must be 1 or 2 and nframes 1..%d" % STEIM_MAX_FRAMES)
    maxrec = steim_max_records(nframes, n)
    out = <uint8_t *>malloc(maxrec * nframes * 64)
    info = <steim_rec_t *>malloc(maxrec * sizeof(steim_rec_t))
    try:
        if out is NULL or info is NULL:
            raise MemoryError()
        with nogil:
            if n:
                nrec = steim_enc_push(enc, &samples[0], n, out, info)
            if flush:
                nrec += steim_enc_flush(enc, out + nrec * nframes * 64, info + nrec)
        data = PyBytes_FromStringAndSize(<char *>out, nrec * nframes * 64)
        records = [(info[i].first_index, info[i].nsamples, info[i].nframes) for i in range(nrec)]
        return data, records, enc.nclamped
    finally:
        free(out)
        free(info)
        free(enc)


def decode(const uint8_t[::1] data, Py_ssize_t nsamples, int level=2):
    """Decode nsamples from Steim frames (big-endian); checks Xn.

    Raises ValueError when the frames are corrupt.
    """
    cdef int nframes = <int>(data.shape[0] // 64)
    cdef cnp.ndarray out = np.empty(nsamples, dtype=np.int32)
    cdef Py_ssize_t got
    if level not in (1, 2):
        raise ValueError("level must be 1 or 2")
    if nsamples < 0:
        raise ValueError("nsamples must be >= 0")
    if nsamples == 0:
        return out
    with nogil:
        got = steim_decode(&data[0], nframes, level, nsamples,
                           <int32_t *>cnp.PyArray_DATA(out), 1)
    if got == STEIM_ERR_SHORT:
        raise ValueError("Steim frames hold fewer than %d samples" % nsamples)
    if got == STEIM_ERR_XN:
        raise ValueError("Steim integrity check failed: last sample differs from Xn")
    if got == STEIM_ERR_CODE:
        raise ValueError("invalid Steim2 sub-code")
    return out
