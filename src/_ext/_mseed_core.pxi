# miniSEED 2 record header core, shared by the kernels that `include` it.
#
# Writes the 48-byte fixed header, blockette 1000 and (optionally) blockette
# 1001 exactly as SeisComP's seedlink does: start times are rounded to the
# nearest 0.1 ms (add 50 us, then split), and the remainder minus 50 goes into
# blockette 1001's microsecond field.  Times are int64 microseconds since the
# epoch here; the Python layer converts from nanoseconds at the edge.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, int16_t
from libc.string cimport memset, memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING


cdef enum:
    MSEED_FSDH_LEN = 48
    MSEED_DATA_OFFSET = 64


ctypedef struct mseed_time_t:
    int year
    int doy          # day of year, 1..366
    int hour
    int minute
    int second
    int usec


ctypedef struct mseed_hdr_t:
    char station[5]     # space padded
    char location[2]
    char channel[3]
    char network[2]
    int16_t rate_factor
    int16_t rate_mult
    int encoding        # 10 Steim1, 11 Steim2, 0 ASCII
    int reclen_exp      # 9 for 512-byte records
    int timing_quality  # < 0: no blockette 1001
    int usec_correction # us, written as 0.0001 s units


cdef extern from *:
    """
    /* floor division for int64, independent of Cython's cdivision setting */
    static inline int64_t sl_floordiv64(int64_t a, int64_t b) {
        int64_t q = a / b;
        if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
        return q;
    }
    /* C's div(): quotient truncated toward zero */
    static inline int sl_cdiv(int a, int b) { return a / b; }
    """
    int64_t _floordiv "sl_floordiv64"(int64_t a, int64_t b) noexcept nogil
    int _cdiv "sl_cdiv"(int a, int b) noexcept nogil


cdef int64_t _days_from_civil(int64_t y) noexcept nogil:
    # days since 1970-01-01 of January 1st of year y
    cdef int64_t yy = y - 1          # January counts in the previous March-based year
    cdef int64_t era = _floordiv(yy, 400)
    cdef int64_t yoe = yy - era * 400
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + 306
    return era * 146097 + doe - 719468


cdef void mseed_split_time(int64_t us, mseed_time_t *t) noexcept nogil:
    """Split us since the epoch into year, day of year and time of day."""
    cdef int64_t days = _floordiv(us, 86400000000LL)
    cdef int64_t rem = us - days * 86400000000LL
    # civil-from-days (proleptic Gregorian), then the day of year
    cdef int64_t z = days + 719468
    cdef int64_t era = _floordiv(z, 146097)
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t y = yoe + era * 400
    cdef int64_t doy_mar = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy_mar + 2) // 153
    cdef int64_t month = mp + 3 if mp < 10 else mp - 9
    if month <= 2:
        y += 1
    cdef int64_t jan1 = _days_from_civil(y)
    t.year = <int>y
    t.doy = <int>(days - jan1 + 1)
    t.hour = <int>(rem // 3600000000LL)
    rem -= <int64_t>t.hour * 3600000000LL
    t.minute = <int>(rem // 60000000LL)
    rem -= <int64_t>t.minute * 60000000LL
    t.second = <int>(rem // 1000000LL)
    t.usec = <int>(rem - <int64_t>t.second * 1000000LL)


cdef int64_t mseed_join_time(int year, int doy, int hour, int minute, int second,
                             int64_t usec) noexcept nogil:
    """us since the epoch of a (year, day of year, h, m, s, us) time; second
    60 simply runs into the next minute, as SeisComP's arithmetic does."""
    return ((_days_from_civil(year) + doy - 1) * 86400000000LL
            + ((<int64_t>hour * 60 + minute) * 60 + second) * 1000000 + usec)


cdef inline void _put_u16(uint8_t *p, int v) noexcept nogil:
    p[0] = <uint8_t>((v >> 8) & 0xff)
    p[1] = <uint8_t>(v & 0xff)


cdef inline void _put_u32(uint8_t *p, int64_t v) noexcept nogil:
    p[0] = <uint8_t>((v >> 24) & 0xff)
    p[1] = <uint8_t>((v >> 16) & 0xff)
    p[2] = <uint8_t>((v >> 8) & 0xff)
    p[3] = <uint8_t>(v & 0xff)


cdef void mseed_write_header(uint8_t *rec, const mseed_hdr_t *h, int sequence,
                             int64_t start_us, int nsamples, int nframes) noexcept nogil:
    """Fill bytes 0..63 of a record (the caller zeroed the record and wrote
    the data from offset 64)."""
    cdef mseed_time_t t
    cdef int i, seq = sequence % 1000000LL
    cdef int rem, corr
    # sequence number as six ASCII digits
    for i in range(5, -1, -1):
        rec[i] = <uint8_t>(48 + seq % 10)
        seq //= 10
    rec[6] = 68       # 'D'
    rec[7] = 32
    for i in range(5):
        rec[8 + i] = h.station[i]
    rec[13] = h.location[0]
    rec[14] = h.location[1]
    for i in range(3):
        rec[15 + i] = h.channel[i]
    rec[18] = h.network[0]
    rec[19] = h.network[1]
    mseed_split_time(start_us + 50, &t)     # round to the nearest 0.1 ms
    _put_u16(rec + 20, t.year)
    _put_u16(rec + 22, t.doy)
    rec[24] = <uint8_t>t.hour
    rec[25] = <uint8_t>t.minute
    rec[26] = <uint8_t>t.second
    rec[27] = 0
    _put_u16(rec + 28, t.usec // 100)
    rem = t.usec % 100
    _put_u16(rec + 30, nsamples)
    _put_u16(rec + 32, <uint16_t>h.rate_factor)
    _put_u16(rec + 34, <uint16_t>h.rate_mult)
    rec[36] = 0
    rec[37] = 0
    rec[38] = 0
    rec[39] = 1
    # time correction in 0.0001 s, rounded half away from zero (C division)
    corr = h.usec_correction + (-50 if h.usec_correction < 0 else 50)
    corr = _cdiv(corr, 100)
    _put_u32(rec + 40, <uint32_t>corr)
    _put_u16(rec + 44, MSEED_DATA_OFFSET)
    _put_u16(rec + 46, MSEED_FSDH_LEN)
    # blockette 1000
    _put_u16(rec + 48, 1000)
    _put_u16(rec + 50, 0)
    rec[52] = <uint8_t>h.encoding
    rec[53] = 1
    rec[54] = <uint8_t>h.reclen_exp
    rec[55] = 0
    if h.timing_quality >= 0:
        rec[39] = 2
        _put_u16(rec + 50, 56)
        _put_u16(rec + 56, 1001)
        _put_u16(rec + 58, 0)
        rec[60] = <uint8_t>h.timing_quality
        rec[61] = <uint8_t>(<signed char>(rem - 50))
        rec[62] = 0
        rec[63] = <uint8_t>nframes


# ---------------------------------------------------------------------------
# Python-level helpers shared by the modules that include this file

def rate_factor_multiplier(int num, int den):
    """SEED sample-rate factor and multiplier for a rate of num/den Hz.

    SeisComP's rule first: D | N -> (N/D, 1); N | D -> (-D/N, 1); else
    (-D, N).  Both fields are int16, so integer rates above 32767 Hz (up to
    1 MHz digitizers) are split into factor * multiplier instead.
    Raises ValueError when the rate cannot be written.
    """
    cdef int a
    if num <= 0 or den <= 0:
        raise ValueError("sample rate must be positive, got %d/%d" % (num, den))
    if num % den == 0:
        fact, mult = num // den, 1
    elif den % num == 0:
        fact, mult = -(den // num), 1
    else:
        fact, mult = -den, num
    if -32768 <= fact <= 32767 and -32768 <= mult <= 32767:
        return fact, mult
    if num % den == 0:
        rate = num // den
        for a in range(2, 32768):
            if rate % a == 0 and rate // a <= 32767:
                return rate // a, a
    raise ValueError("sample rate %d/%d Hz cannot be written as SEED factor and multiplier"
                     % (num, den))


cdef void _fill_padded(char *dst, int width, str value):
    # space padded and cut to width, as SeisComP's strncpy + memset does
    cdef bytes raw = value.encode("ascii", "replace")
    cdef int i
    for i in range(width):
        dst[i] = raw[i] if i < len(raw) else 32


def write_log_record(str network, str station, int64_t start_us, bytes text,
                     int sequence_number=0):
    """One 512-byte ASCII LOG record, as SeisComP writes plugin log lines:
    channel LOG, blank location, encoding 0, no blockette 1001, text (at most
    448 bytes) at offset 64, num_samples = text length."""
    cdef mseed_hdr_t h
    cdef bytes rec = PyBytes_FromStringAndSize(NULL, 512)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(rec)
    cdef Py_ssize_t n = min(len(text), 448)
    _fill_padded(h.station, 5, station)
    _fill_padded(h.location, 2, "")
    _fill_padded(h.channel, 3, "LOG")
    _fill_padded(h.network, 2, network)
    h.rate_factor = 0
    h.rate_mult = 0
    h.encoding = 0
    h.reclen_exp = 9
    h.timing_quality = -1
    h.usec_correction = 0
    memset(p, 0, 512)
    memcpy(p + MSEED_DATA_OFFSET, <char *>text, n)
    mseed_write_header(p, &h, sequence_number, start_us, <int>n, 0)
    return rec
