# miniSEED 2 kernels: the streaming record packer and the record decoder.
#
# Python decides (names, rates, when to flush); this module moves samples and
# bytes.  One call per chunk of samples or per buffer of records, never per
# sample.

include "_steim_core.pxi"
include "_mseed_core.pxi"

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.bytearray cimport PyByteArray_Resize, PyByteArray_AS_STRING
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
from libc.stdint cimport int8_t

import numpy as np
cimport numpy as cnp

cnp.import_array()

ENCODING_ASCII = 0
ENCODING_INT16 = 1
ENCODING_INT32 = 3
ENCODING_FLOAT32 = 4
ENCODING_FLOAT64 = 5
ENCODING_STEIM1 = 10
ENCODING_STEIM2 = 11


cdef extern from *:
    """
    /* anchor + offset samples at num/den Hz, in ns, exact (128-bit) */
    static inline int64_t sl_time_of(int64_t anchor_ns, int64_t offset, int num, int den) {
        __int128 t = (__int128)offset * 1000000000 * den;
        __int128 q = t / num;
        if ((t % num != 0) && (t < 0)) q -= 1;     /* floor */
        return anchor_ns + (int64_t)q;
    }
    """
    int64_t sl_time_of(int64_t anchor_ns, int64_t offset, int num, int den) noexcept nogil


cdef enum:
    FEED_SLICE = 65536          # samples encoded per scratch refill


cdef class RecordPacker:
    """Streaming Steim packer: feed int32 chunks, get finished records.

    State (last sample, pending differences, open frame, sequence number and
    the time anchor) lives in C fields, so chunked feeding gives exactly the
    bytes of one-shot feeding.
    """
    cdef steim_enc_t *enc
    cdef mseed_hdr_t hdr
    cdef readonly int record_length      # bytes per record (2**n, 256..65536)
    cdef readonly int sequence_number    # next record's sequence number (mod 10**6)
    cdef readonly int rate_num           # sample rate num/den Hz
    cdef readonly int rate_den
    cdef int64_t anchor_ns               # time of stream sample anchor_index (ns)
    cdef int64_t anchor_index
    cdef uint8_t *scratch
    cdef steim_rec_t *infos
    cdef Py_ssize_t scratch_records

    def __cinit__(self):
        self.enc = <steim_enc_t *>malloc(sizeof(steim_enc_t))
        if self.enc is NULL:
            raise MemoryError()
        self.scratch = NULL
        self.infos = NULL
        self.scratch_records = 0

    def __dealloc__(self):
        free(self.enc)
        free(self.scratch)
        free(self.infos)

    def __init__(self, str network, str station, str location, str channel,
                 int rate_num, int rate_den=1, *, int level=2, int record_length=512,
                 timing_quality=None, int usec_correction=0, starttime_ns=0,
                 int sequence_number=0, int prev_sample=0):
        cdef int exp = 0
        if rate_num <= 0 or rate_den <= 0:
            raise ValueError("sample rate must be positive, got %d/%d" % (rate_num, rate_den))
        while (1 << exp) < record_length:
            exp += 1
        if (1 << exp) != record_length or record_length < 128 or record_length > 4096:
            raise ValueError("record_length must be a power of two from 128 to 4096, got %d"
                             % record_length)
        if level not in (1, 2):
            raise ValueError("Steim level must be 1 or 2, got %r" % level)
        if timing_quality is not None and not (0 <= timing_quality <= 255 or timing_quality == -1):
            raise ValueError("timing_quality must be 0..100, -1 or None, got %r" % (timing_quality,))
        steim_enc_init(self.enc, level, (record_length - MSEED_DATA_OFFSET) // 64, prev_sample)
        _fill_padded(self.hdr.station, 5, station)
        _fill_padded(self.hdr.location, 2, location)
        _fill_padded(self.hdr.channel, 3, channel)
        _fill_padded(self.hdr.network, 2, network)
        fact, mult = rate_factor_multiplier(rate_num, rate_den)
        self.hdr.rate_factor = fact
        self.hdr.rate_mult = mult
        self.hdr.encoding = 11 if level == 2 else 10
        self.hdr.reclen_exp = exp
        self.hdr.timing_quality = -1 if timing_quality is None else timing_quality
        self.hdr.usec_correction = usec_correction
        self.record_length = record_length
        self.sequence_number = sequence_number % 1000000
        self.rate_num = rate_num
        self.rate_den = rate_den
        self.anchor_ns = int(starttime_ns)
        self.anchor_index = 0

    cdef int _reserve(self, Py_ssize_t nrec) except -1:
        if nrec <= self.scratch_records:
            return 0
        free(self.scratch)
        free(self.infos)
        self.scratch = <uint8_t *>malloc(nrec * self.enc.nframes * 64)
        self.infos = <steim_rec_t *>malloc(nrec * sizeof(steim_rec_t))
        if self.scratch is NULL or self.infos is NULL:
            self.scratch_records = 0
            raise MemoryError()
        self.scratch_records = nrec
        return 0

    cdef inline int64_t _time_of(self, int64_t index) noexcept nogil:
        # ns of stream sample `index`: exact rational arithmetic in 128 bits
        return sl_time_of(self.anchor_ns, index - self.anchor_index, self.rate_num, self.rate_den)

    cdef list _emit(self, Py_ssize_t nrec):
        cdef list records = []
        cdef Py_ssize_t r
        cdef bytes rec
        for r in range(nrec):
            rec = PyBytes_FromStringAndSize(NULL, self.record_length)
            self._emit_one(r, <uint8_t *>PyBytes_AS_STRING(rec))
            records.append(rec)
        return records

    cdef void _emit_one(self, Py_ssize_t r, uint8_t *p) noexcept nogil:
        cdef int datalen = self.enc.nframes * 64
        memset(p, 0, MSEED_DATA_OFFSET)
        memcpy(p + MSEED_DATA_OFFSET, self.scratch + r * datalen, datalen)
        mseed_write_header(p, &self.hdr, self.sequence_number,
                           _floordiv(self._time_of(self.infos[r].first_index), 1000),
                           self.infos[r].nsamples, self.infos[r].nframes)
        self.sequence_number = (self.sequence_number + 1) % 1000000

    def feed(self, const int32_t[::1] samples):
        """Add samples; return the list of records completed (bytes each)."""
        cdef Py_ssize_t n = samples.shape[0], done = 0, step, nrec
        cdef list out = []
        while done < n:
            # bounded slices keep the scratch area small and cache-hot
            step = min(n - done, FEED_SLICE)
            self._reserve(steim_max_records(self.enc.nframes, step))
            nrec = steim_enc_push(self.enc, &samples[done], step, self.scratch, self.infos)
            out.extend(self._emit(nrec))
            done += step
        return out

    def feed_joined(self, const int32_t[::1] samples, bint flush=False):
        """Like feed() (then flush() when asked) but returns the records
        concatenated in one bytes object, without a bytes object per record."""
        cdef Py_ssize_t n = samples.shape[0], done = 0, step, nrec, used = 0, r
        cdef bytearray out = bytearray()
        cdef uint8_t *dst
        while done < n or flush:
            if done < n:
                step = min(n - done, FEED_SLICE)
                self._reserve(steim_max_records(self.enc.nframes, step))
                nrec = steim_enc_push(self.enc, &samples[done], step, self.scratch, self.infos)
                done += step
            else:
                self._reserve(3)
                nrec = steim_enc_flush(self.enc, self.scratch, self.infos)
                flush = False
            if nrec:
                if used + nrec * self.record_length > len(out):
                    # grow geometrically: few reallocations, no per-slice copies
                    PyByteArray_Resize(out, max(used + nrec * self.record_length, 2 * len(out)))
                dst = <uint8_t *>PyByteArray_AS_STRING(out) + used
                for r in range(nrec):
                    self._emit_one(r, dst + r * self.record_length)
                used += nrec * self.record_length
        PyByteArray_Resize(out, used)
        return bytes(out)

    def flush(self):
        """Close the open record (partial, unused frames zero); return the
        records written (usually one, none if nothing is pending)."""
        self._reserve(3)
        cdef Py_ssize_t nrec = steim_enc_flush(self.enc, self.scratch, self.infos)
        return self._emit(nrec)

    def set_time(self, starttime_ns):
        """Set the time (int ns) of the next sample to be fed.  Records that
        finish later are stamped from this anchor (an open record's start
        is extrapolated back from it)."""
        self.anchor_ns = int(starttime_ns)
        self.anchor_index = self.enc.nstored

    @property
    def next_starttime_ns(self):
        """Time (int ns) of the next sample to be fed."""
        return self._time_of(self.enc.nstored)

    @property
    def last_sample(self):
        return self.enc.last_sample

    @property
    def clamped(self):
        """Number of Steim2 differences clamped to 30 bits so far (lossy)."""
        return self.enc.nclamped

    @property
    def samples_buffered(self):
        """Samples fed but not yet in a finished record."""
        return self.enc.nstored - (self.infos_done())

    cdef int64_t infos_done(self):
        # first sample index not yet in a finished record
        if self.enc.rec_open:
            return self.enc.rec_first
        return self.enc.nstored - self.enc.npend


# ---------------------------------------------------------------------------
# Decoding

class RecordDecodeError(ValueError):
    """Raised by the kernel; the Python layer adds the record's name."""


cdef inline int _u16(const uint8_t *p, int swap) noexcept nogil:
    return (p[1] << 8) | p[0] if swap else (p[0] << 8) | p[1]


cdef inline int32_t _i32(const uint8_t *p, int swap) noexcept nogil:
    if swap:
        return <int32_t>((<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0])
    return <int32_t>((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3])


cdef object _decode_data(const uint8_t *data, Py_ssize_t datalen, int encoding,
                         Py_ssize_t nsamples, int big_endian):
    # returns a numpy array, or a str error message
    cdef cnp.ndarray arr
    cdef Py_ssize_t got
    cdef int nframes
    order = ">" if big_endian else "<"
    if encoding == 10 or encoding == 11:
        arr = np.empty(nsamples, dtype=np.int32)
        nframes = <int>(datalen // 64)
        with nogil:
            got = steim_decode(data, nframes, 1 if encoding == 10 else 2, nsamples,
                               <int32_t *>cnp.PyArray_DATA(arr), big_endian)
        if got == STEIM_ERR_SHORT:
            return "Steim frames hold fewer than %d samples" % nsamples
        if got == STEIM_ERR_XN:
            return "Steim integrity check failed: last sample differs from Xn"
        if got == STEIM_ERR_CODE:
            return "invalid Steim2 sub-code"
        return arr
    width = {1: 2, 3: 4, 4: 4, 5: 8}.get(encoding)
    if width is None:
        return None
    if nsamples * width > datalen:
        return "data area of %d bytes is too short for %d samples" % (datalen, nsamples)
    dtype = {1: "i2", 3: "i4", 4: "f4", 5: "f8"}[encoding]
    raw = np.frombuffer((<char *>data)[:nsamples * width], dtype=order + dtype)
    if encoding in (1, 3):
        return raw.astype(np.int32)
    return raw.astype("=" + dtype)


ctypedef struct rec_frame_t:
    int swap                # header is little-endian
    int reclen
    int encoding            # -1: no blockette 1000
    int word_order
    int begin_data
    int nsamples
    int tq                  # blockette 1001 timing quality, -1: none
    int b_usec
    int b_frames
    int b100_pos            # offset of blockette 100's rate, 0: none


cdef int _scan_record(const uint8_t *p, Py_ssize_t avail, Py_ssize_t off, int default_reclen,
                      rec_frame_t *f) except -1:
    """Read the fixed header and the blockette chain of the record at p;
    raises ValueError when it cannot be a record."""
    cdef int year, doy, bpos, nxt, guard = 0
    # the header's byte order: pick the one giving a sane year/day
    f.swap = 0
    year = _u16(p + 20, 0)
    doy = _u16(p + 22, 0)
    if not (1900 <= year <= 2500 and 1 <= doy <= 366):
        f.swap = 1
        if not (1900 <= _u16(p + 20, 1) <= 2500 and 1 <= _u16(p + 22, 1) <= 366):
            raise ValueError("record at offset %d: no valid start time (year %d, day %d)"
                             % (off, year, doy))
    f.nsamples = _u16(p + 30, f.swap)
    f.begin_data = _u16(p + 44, f.swap)
    f.reclen = 0
    f.encoding = -1
    f.word_order = 1
    f.tq = -1
    f.b_usec = 0
    f.b_frames = -1
    f.b100_pos = 0
    bpos = _u16(p + 46, f.swap)
    while bpos and guard < 16 and bpos + 8 <= avail:
        btype = _u16(p + bpos, f.swap)
        if btype == 1000:
            f.encoding = p[bpos + 4]
            f.word_order = p[bpos + 5]
            f.reclen = (1 << p[bpos + 6]) if p[bpos + 6] < 31 else 0
        elif btype == 1001:
            f.tq = p[bpos + 4]
            f.b_usec = <int8_t>p[bpos + 5]
            f.b_frames = p[bpos + 7]
        elif btype == 100:
            f.b100_pos = bpos + 4
        nxt = _u16(p + bpos + 2, f.swap)
        if nxt != 0 and nxt <= bpos:
            break                   # a loop in the chain
        bpos = nxt
        guard += 1
    if f.reclen == 0:
        f.reclen = default_reclen
    if f.reclen < 64 or f.reclen > avail:
        raise ValueError("record at offset %d: length %d runs past the end of the data (%d bytes)"
                         % (off, f.reclen, avail))
    return 0


def parse_records(const uint8_t[::1] buf, int default_reclen=512, bint decode=True):
    """Parse every record in buf.

    Returns a list of tuples (offset, reclen, seq, quality, network, station,
    location, channel, start_us, nsamples, rate_fact, rate_mult, encoding,
    word_order, timing_quality, b1001_usec, b1001_frames, time_correction,
    flags(act, io, dq), sample_rate_b100, samples_or_error, text).
    Raises ValueError for a header that cannot be a record.
    """
    cdef Py_ssize_t off = 0, n = buf.shape[0]
    cdef const uint8_t *p
    cdef rec_frame_t f
    cdef int swap, reclen, begin_data, encoding, word_order, tq, b_usec, b_frames
    cdef int64_t start_us
    cdef list out = []
    while off < n:
        if n - off < 48:
            raise ValueError("trailing %d bytes at offset %d are not a record" % (n - off, off))
        p = &buf[off]
        _scan_record(p, n - off, off, default_reclen, &f)
        swap, reclen, begin_data = f.swap, f.reclen, f.begin_data
        encoding, word_order, tq, b_usec, b_frames = f.encoding, f.word_order, f.tq, f.b_usec, f.b_frames
        rate_b100 = None
        if f.b100_pos:
            rate_b100 = np.frombuffer((<char *>(p + f.b100_pos))[:4],
                                      dtype="<f4" if swap else ">f4")[0].item()
        start_us = mseed_join_time(_u16(p + 20, swap), _u16(p + 22, swap), p[24], p[25], p[26],
                                   <int64_t>_u16(p + 28, swap) * 100)
        nsamples = _u16(p + 30, swap)
        samples = None
        text = None
        if decode and nsamples and 0 < begin_data < reclen:
            if encoding == 0:
                text = bytes((<char *>(p + begin_data))[:min(nsamples, reclen - begin_data)])
            elif encoding >= 0:
                samples = _decode_data(p + begin_data, reclen - begin_data, encoding, nsamples,
                                       word_order == 1)
        fact = <int16_t>_u16(p + 32, swap)
        mult = <int16_t>_u16(p + 34, swap)
        out.append((off, reclen, bytes((<char *>p)[:6]), chr(p[6]),
                    bytes((<char *>p)[18:20]), bytes((<char *>p)[8:13]),
                    bytes((<char *>p)[13:15]), bytes((<char *>p)[15:18]),
                    start_us + b_usec, nsamples, fact, mult, encoding, word_order,
                    tq, b_usec, b_frames, _i32(p + 40, swap), (p[36], p[37], p[38]),
                    rate_b100, samples, text))
        off += reclen
    return out


def split_time_us(int64_t us):
    """(year, doy, hour, minute, second, usec) of us since the epoch; exposed for tests."""
    cdef mseed_time_t t
    mseed_split_time(us, &t)
    return (t.year, t.doy, t.hour, t.minute, t.second, t.usec)


def join_time_us(int year, int doy, int hour, int minute, int second, int64_t usec):
    """us since the epoch; inverse of split_time_us."""
    return mseed_join_time(year, doy, hour, minute, second, usec)


def write_header(bytearray record, str network, str station, str location, str channel,
                 int sequence_number, int64_t start_us, int nsamples, int rate_num,
                 int rate_den, int encoding, timing_quality=None, int usec_correction=0,
                 int nframes=0):
    """Write the 64-byte header of a record in place, as SeisComP does.

    The stream processor and the tests use it when the start time comes from
    elsewhere than a RecordPacker's clock.  Rate 0/0 writes factor and
    multiplier 0 (LOG records).
    """
    cdef mseed_hdr_t h
    cdef int exp = 0
    cdef int n = len(record)
    while (1 << exp) < n:
        exp += 1
    if n < 128 or (1 << exp) != n:
        raise ValueError("record length must be a power of two >= 128, got %d" % n)
    _fill_padded(h.station, 5, station)
    _fill_padded(h.location, 2, location)
    _fill_padded(h.channel, 3, channel)
    _fill_padded(h.network, 2, network)
    if rate_num == 0 and rate_den == 0:
        fact, mult = 0, 0
    else:
        fact, mult = rate_factor_multiplier(rate_num, rate_den)
    h.rate_factor = fact
    h.rate_mult = mult
    h.encoding = encoding
    h.reclen_exp = exp
    h.timing_quality = -1 if timing_quality is None else timing_quality
    h.usec_correction = usec_correction
    cdef uint8_t *p = <uint8_t *>(<char *>record)
    memset(p, 0, MSEED_DATA_OFFSET)
    mseed_write_header(p, &h, sequence_number, start_us, nsamples, nframes)


def decode_buffer(const uint8_t[::1] buf, int default_reclen=512):
    """Bulk decode: every record's samples into one contiguous int32 array.

    Returns (offsets, reclens, starts, samples, status): per record its byte
    offset and length, starts[i]:starts[i+1] its slice of `samples`
    (integer and Steim encodings only; other records get an empty slice),
    and status[i] = 0 for decoded, 1 for not decodable here (float, ASCII,
    unknown encoding: use parse_records), or a negative STEIM_ERR_* /
    -10 (data too short) for a corrupt record.  Raises ValueError when the
    buffer does not split into records.
    """
    cdef Py_ssize_t n = buf.shape[0], off = 0, nrec = 0, i, total = 0
    cdef const uint8_t *p
    cdef int reclen, enc, begin, nsamp, big
    cdef Py_ssize_t cap = n // 64 + 1
    cdef rec_frame_t *frames = <rec_frame_t *>malloc(cap * sizeof(rec_frame_t))
    cdef cnp.ndarray offsets = np.empty(cap, dtype=np.int64)
    cdef int64_t *offs = <int64_t *>cnp.PyArray_DATA(offsets)
    if frames is NULL:
        raise MemoryError()
    try:
        # pass 1: headers (record lengths, sample counts, encodings), in C
        while off < n:
            if n - off < 48:
                raise ValueError("trailing %d bytes at offset %d are not a record"
                                 % (n - off, off))
            _scan_record(&buf[off], n - off, off, default_reclen, &frames[nrec])
            if frames[nrec].encoding not in (1, 3, 10, 11):
                frames[nrec].nsamples = 0
            offs[nrec] = off
            total += frames[nrec].nsamples
            off += frames[nrec].reclen
            nrec += 1
        return _decode_frames(buf, frames, offsets[:nrec], nrec, total)
    finally:
        free(frames)


cdef tuple _decode_frames(const uint8_t[::1] buf, rec_frame_t *frames, cnp.ndarray offsets,
                          Py_ssize_t nrec, Py_ssize_t total):
    # pass 2 of decode_buffer: samples, straight into one shared array
    cdef int64_t *offs = <int64_t *>cnp.PyArray_DATA(offsets)
    cdef cnp.ndarray lengths = np.empty(nrec, dtype=np.int32)
    cdef int32_t *lens = <int32_t *>cnp.PyArray_DATA(lengths)
    cdef Py_ssize_t i, off, pos = 0, got, k
    cdef int enc, nsamp, begin, reclen, big, datalen
    cdef const uint8_t *d
    cdef cnp.ndarray samples = np.empty(total, dtype=np.int32)
    cdef cnp.ndarray starts = np.empty(nrec + 1, dtype=np.int64)
    cdef cnp.ndarray status = np.zeros(nrec, dtype=np.int8)
    cdef int32_t *out = <int32_t *>cnp.PyArray_DATA(samples)
    cdef int64_t *st = <int64_t *>cnp.PyArray_DATA(starts)
    cdef int8_t *stat = <int8_t *>cnp.PyArray_DATA(status)
    for i in range(nrec):
        st[i] = pos
        enc = frames[i].encoding
        nsamp = frames[i].nsamples
        off = offs[i]
        begin = frames[i].begin_data
        reclen = frames[i].reclen
        lens[i] = reclen
        big = frames[i].word_order == 1
        if enc not in (1, 3, 10, 11):
            stat[i] = 1
            continue
        if nsamp == 0:
            continue
        if not (0 < begin < reclen):
            stat[i] = -10
            continue
        d = &buf[off + begin]
        datalen = reclen - begin
        if enc == 10 or enc == 11:
            got = steim_decode(d, datalen // 64, 1 if enc == 10 else 2, nsamp, out + pos, big)
            if got < 0:
                stat[i] = <int8_t>got
        elif enc == 3:
            if nsamp * 4 > datalen:
                stat[i] = -10
            else:
                for k in range(nsamp):
                    out[pos + k] = <int32_t>_load_be(d + 4 * k, big)
        else:
            if nsamp * 2 > datalen:
                stat[i] = -10
            else:
                for k in range(nsamp):
                    out[pos + k] = <int16_t>_u16(d + 2 * k, 0 if big else 1)
        pos += nsamp
    st[nrec] = pos
    return offsets, lengths, starts, samples, status
