# SeedLink 3 packet framing: the per-record work of the fan-out path in C.
#
# A block of stored records is framed once ("SL" + 6 hex digits + record)
# and classified once (record type, or "never delivered"); every client at
# those positions is then sent slices of the same bytes.

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, int64_t, int16_t, uint16_t
from libc.string cimport memcpy

cdef enum:
    RECORD = 512
    PACKET = 520
    MAX_HEADER = 512            # blockettes must start within the record


cdef const char *HEX = b"0123456789ABCDEF"


cdef inline int _u16(const uint8_t *p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef uint8_t record_kind(const uint8_t *rec) noexcept nogil:
    """The record type letter (D E C T L O) as SeisComP classifies it from
    the big-endian header and blockette chain, or 0 for a record it never
    delivers (first byte NUL, or type not determinable)."""
    cdef int nsamp, fact, off, btype, guard = 0, has_2000 = 0
    if rec[0] == 0:
        return 0
    nsamp = _u16(rec + 30)
    fact = <int16_t>_u16(rec + 32)
    off = <int16_t>_u16(rec + 46)
    while guard < 64:
        if off < 0 or off > MAX_HEADER or off + 4 > RECORD:
            return 0
        btype = _u16(rec + off)
        if 200 <= btype <= 299:
            return 69          # E
        if 300 <= btype <= 399:
            return 67          # C
        if 500 <= btype <= 599:
            return 84          # T
        if btype == 2000:
            has_2000 = 1
        off = _u16(rec + off + 2)
        if off == 0:
            break
        guard += 1
    else:
        return 0               # a loop in the chain
    if fact == 0:
        if nsamp != 0:
            return 76          # L
        if has_2000:
            return 79          # O
    return 68                  # D


def frame_records(int64_t start, list records):
    """Frame records stored from position `start` on.

    Returns (packets, kinds): packets is one bytes object of 520 bytes per
    record (``SL`` + sequence as 6 upper-case hex digits + the record), kinds
    one byte per record, the type letter or 0 for never delivered.
    Raises ValueError for a record that is not 512 bytes.
    """
    cdef Py_ssize_t n = len(records), i
    cdef bytes packets = PyBytes_FromStringAndSize(NULL, n * PACKET)
    cdef bytes kinds = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *out = <uint8_t *>PyBytes_AS_STRING(packets)
    cdef uint8_t *kind = <uint8_t *>PyBytes_AS_STRING(kinds)
    cdef unsigned int seq
    cdef int d
    cdef object rec
    for i in range(n):
        rec = records[i]
        if not isinstance(rec, bytes) or PyBytes_GET_SIZE(rec) != RECORD:
            raise ValueError("record %d is not 512 bytes" % i)
        seq = <unsigned int>((start + i) & 0xFFFFFF)
        out[0] = 83            # S
        out[1] = 76            # L
        for d in range(6):
            out[7 - d] = HEX[seq & 15]
            seq >>= 4
        memcpy(out + 8, PyBytes_AS_STRING(rec), RECORD)
        kind[i] = record_kind(out + 8)
        out += PACKET
    return packets, kinds
