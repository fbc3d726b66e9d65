"""Pure-Python reference model of the miniSEED 2 records SeisComP seedlink builds.

Test oracle for the header written by ``MSEEDFormat`` (SeisComP
``apps/seedlink/mseed.cc``/``mseed.h``) for stream-processor data records and
for ``LOG`` records.  Layout of a 512-byte record (all integers big-endian):

====== ==== ===============================================================
offset size field
====== ==== ===============================================================
0      6    sequence number, ASCII ``%06d`` (per output stream, mod 10**6)
6      1    data quality indicator ``D``
7      1    reserved, a space
8      5    station, space padded (longer names truncated)
13     2    location, space padded
15     3    channel, space padded
18     2    network, space padded
20     10   BTIME: year u16, day-of-year u16, hour, minute, second u8,
            unused u8 (0), fraction u16 (units of 0.1 ms)
30     2    number of samples u16
32     2    sample rate factor i16
34     2    sample rate multiplier i16
36     3    activity, I/O and data quality flags: all 0
39     1    number of blockettes: 2 with blockette 1001, else 1
40     4    time correction i32 (units of 0.1 ms)
44     2    beginning of data: 64
46     2    first blockette: 48
48     8    blockette 1000: type 1000, next (56 with 1001, else 0),
            encoding (10 Steim1, 11 Steim2, 0 ASCII), word order 1,
            record length exponent (9), reserved 0
56     8    blockette 1001 (only if timing quality >= 0): type 1001, next 0,
            timing quality (int8), µs (int8), reserved 0, frame count
64     448  data area (Steim frames or LOG text), zero filled
====== ==== ===============================================================

Everything not listed is zero (SeisComP clears the whole buffer first).

Start time (``MSEED_ROUND_TENTH_MILLISEC`` is compiled in): the record's
start time plus 50 µs is converted to year/day/h/m/s/µs; ``fraction`` is
that µs // 100 and blockette 1001's µs is ``(that µs % 100) - 50``, so the
field ranges over -50..+49 and BTIME + µs is the exact start time.  LOG
records carry the same rounded BTIME but have no blockette 1001.

Sample rate ``N/D`` (as configured, not reduced): 0/0 if either is 0 (LOG);
``(N/D, 1)`` if D divides N; ``(-D/N, 1)`` if N divides D; else ``(-D, N)``.

Time correction: ``usec_correction`` ±50 (sign of the correction, +50 for 0)
divided by 100 with C truncation, i.e. rounded half away from zero; the
"time correction applied" activity bit stays 0.

Times are handled as integer µs since 1970-01-01 UTC without leap seconds.
"""

from __future__ import annotations

import datetime as _dt
import struct
from typing import Dict, Optional, Tuple

__all__ = [
    "HEADER_BYTES",
    "DATA_OFFSET",
    "build_record",
    "build_log_record",
    "parse_record",
    "btime_to_us",
    "sample_rate_fields",
    "rate_from_fields",
    "record_start_us",
    "LOG_MAX_TEXT",
]

HEADER_BYTES = 48
BLOCKETTE_1000_OFFSET = 48
BLOCKETTE_1001_OFFSET = 56
DATA_OFFSET = 64
LOG_MAX_TEXT = 448          # PLUGIN_MAX_MSG_SIZE: text beyond this is cut

_EPOCH = _dt.datetime(1970, 1, 1)
_US_PER_DAY = 86_400_000_000

# Fixed section of the data header, without the BTIME fields unpacked.
_FSDH = struct.Struct(">6scc5s2s3s2sHHBBBBHHhhBBBBiHH")
_BLK1000 = struct.Struct(">HHBBBB")
_BLK1001 = struct.Struct(">HHbbBB")


def _c_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, like C's ``div``/``/``."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _pad(text: str, width: int) -> bytes:
    """strncpy + space padding as in ``MSEEDFormat::get_buffer``."""
    raw = text.encode("ascii")[:width]
    # strncpy stops at a NUL; SeisComP then pads from the string length.
    raw = raw.split(b"\0", 1)[0]
    return raw + b" " * (width - len(raw))


def _split_time(us: int) -> Tuple[int, int, int, int, int, int]:
    """µs since epoch -> (year, day of year, hour, minute, second, µs)."""
    days, rem = divmod(us, _US_PER_DAY)
    date = _EPOCH + _dt.timedelta(days=days)
    secs, usec = divmod(rem, 1_000_000)
    hour, secs = divmod(secs, 3600)
    minute, second = divmod(secs, 60)
    return date.year, date.timetuple().tm_yday, hour, minute, second, usec


def btime_to_us(year: int, doy: int, hour: int, minute: int, second: int, fract: int) -> int:
    """BTIME fields -> µs since epoch (fract in 0.1 ms units)."""
    days = (_dt.datetime(year, 1, 1) - _EPOCH).days + doy - 1
    return (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000 + fract * 100


def sample_rate_fields(rate_num: int, rate_den: int) -> Tuple[int, int]:
    """SeisComP's (factor, multiplier) for a rate ``rate_num/rate_den``."""
    if rate_num == 0 or rate_den == 0:
        return 0, 0
    if rate_num % rate_den == 0:
        return rate_num // rate_den, 1
    if rate_den % rate_num == 0:
        return -(rate_den // rate_num), 1
    return -rate_den, rate_num


def rate_from_fields(factor: int, multiplier: int) -> Tuple[int, int]:
    """Inverse of :func:`sample_rate_fields`: (factor, mult) -> (num, den)."""
    if factor == 0 or multiplier == 0:
        return 0, 0
    num, den = 1, 1
    if factor > 0:
        num *= factor
    else:
        den *= -factor
    if multiplier > 0:
        num *= multiplier
    else:
        den *= -multiplier
    return num, den


def _reclen_exponent(record_length: int) -> int:
    exp = record_length.bit_length() - 1
    if record_length <= DATA_OFFSET or (1 << exp) != record_length:
        raise ValueError("record length must be a power of two > 64")
    return exp


def build_record(
    data_area: bytes,
    *,
    seq: int,
    station: str,
    location: str,
    channel: str,
    network: str,
    start_us: int,
    nsamples: int,
    rate_num: int,
    rate_den: int,
    encoding: int,
    timing_quality: Optional[int] = None,
    usec_correction: int = 0,
    nframes: int = 0,
    record_length: int = 512,
) -> bytes:
    """Assemble one record exactly as SeisComP's ``MSEEDFormat`` does.

    ``data_area`` is placed at offset 64 and zero padded (it may be shorter
    than ``record_length - 64``).  ``timing_quality`` None or negative means
    no blockette 1001.
    """
    exp = _reclen_exponent(record_length)
    room = record_length - DATA_OFFSET
    if len(data_area) > room:
        raise ValueError("data area of %d bytes exceeds %d" % (len(data_area), room))

    with_1001 = timing_quality is not None and timing_quality >= 0
    year, doy, hour, minute, second, usec = _split_time(int(start_us) + 50)
    fract, rem = divmod(usec, 100)
    factor, multiplier = sample_rate_fields(rate_num, rate_den)
    time_correct = _c_div(usec_correction + (-50 if usec_correction < 0 else 50), 100)

    header = _FSDH.pack(
        b"%06d" % (seq % 1_000_000),
        b"D",
        b" ",
        _pad(station, 5),
        _pad(location, 2),
        _pad(channel, 3),
        _pad(network, 2),
        year, doy, hour, minute, second, 0, fract,
        nsamples & 0xFFFF,
        factor, multiplier,
        0, 0, 0,                        # activity, I/O, data quality flags
        2 if with_1001 else 1,
        time_correct,
        DATA_OFFSET,
        HEADER_BYTES,
    )
    blk1000 = _BLK1000.pack(
        1000, BLOCKETTE_1001_OFFSET if with_1001 else 0, encoding, 1, exp, 0)
    if with_1001:
        # int8_t fields in C: store the low byte of the quality.
        tq = timing_quality & 0xFF
        tq = tq - 256 if tq > 127 else tq
        blk1001 = _BLK1001.pack(1001, 0, tq, rem - 50, 0, nframes & 0xFF)
    else:
        blk1001 = bytes(8)

    record = header + blk1000 + blk1001 + bytes(data_area)
    return record + bytes(record_length - len(record))


def build_log_record(
    text, seq: int, station: str, network: str, start_us: int, record_length: int = 512
) -> bytes:
    """A ``LOG`` record: ASCII text, no blockette 1001, rate 0/0.

    ``text`` (str or bytes) is cut to 448 bytes; ``num_samples`` is its
    length.  Location blank, time correction 0.
    """
    raw = text.encode("latin-1") if isinstance(text, str) else bytes(text)
    raw = raw[:LOG_MAX_TEXT]
    return build_record(
        raw,
        seq=seq,
        station=station,
        location="",
        channel="LOG",
        network=network,
        start_us=start_us,
        nsamples=len(raw),
        rate_num=0,
        rate_den=0,
        encoding=0,
        timing_quality=None,
        usec_correction=0,
        nframes=0,
        record_length=record_length,
    )


def parse_record(rec: bytes) -> Dict[str, object]:
    """Decode all header fields of a SeisComP-style record into a dict.

    Keys: ``seq`` (str), ``seq_int``, ``quality``, ``reserved``, ``station``,
    ``location``, ``channel``, ``network`` (stripped), the raw padded
    ``*_raw`` byte fields, ``year``, ``doy``, ``hour``, ``minute``,
    ``second``, ``btime_unused``, ``fract``, ``nsamples``, ``rate_factor``,
    ``rate_multiplier``, ``rate_num``, ``rate_den``, ``activity_flags``,
    ``io_flags``, ``dq_flags``, ``num_blockettes``, ``time_correct``,
    ``begin_data``, ``begin_blockette``, ``blockettes`` (list of
    ``(type, offset)``), ``b1000`` / ``b1001`` (dicts or None),
    ``encoding``, ``record_length``, ``timing_quality`` (None without 1001),
    ``usec`` (1001 µs, 0 without 1001), ``nframes`` (None without 1001),
    ``btime_us`` and ``start_us`` (= BTIME + 1001 µs), ``data`` (bytes
    from ``begin_data`` to the end).
    """
    if len(rec) < DATA_OFFSET:
        raise ValueError("record too short")
    f = _FSDH.unpack_from(rec, 0)
    (seq, quality, reserved, sta, loc, cha, net,
     year, doy, hour, minute, second, unused, fract,
     nsamples, factor, multiplier, act, io, dq, nblk,
     time_correct, begin_data, begin_blockette) = f
    out: Dict[str, object] = {
        "seq": seq.decode("ascii", "replace"),
        "quality": quality.decode("ascii", "replace"),
        "reserved": reserved,
        "station_raw": sta, "location_raw": loc, "channel_raw": cha, "network_raw": net,
        "station": sta.decode("ascii", "replace").strip(),
        "location": loc.decode("ascii", "replace").strip(),
        "channel": cha.decode("ascii", "replace").strip(),
        "network": net.decode("ascii", "replace").strip(),
        "year": year, "doy": doy, "hour": hour, "minute": minute, "second": second,
        "btime_unused": unused, "fract": fract,
        "nsamples": nsamples,
        "rate_factor": factor, "rate_multiplier": multiplier,
        "activity_flags": act, "io_flags": io, "dq_flags": dq,
        "num_blockettes": nblk,
        "time_correct": time_correct,
        "begin_data": begin_data,
        "begin_blockette": begin_blockette,
    }
    try:
        out["seq_int"] = int(out["seq"])
    except ValueError:
        out["seq_int"] = None
    out["rate_num"], out["rate_den"] = rate_from_fields(factor, multiplier)

    blockettes = []
    b1000 = b1001 = None
    offset = begin_blockette
    seen = set()
    while offset and offset + 4 <= len(rec) and offset not in seen and len(blockettes) < nblk:
        seen.add(offset)
        btype, nxt = struct.unpack_from(">HH", rec, offset)
        blockettes.append((btype, offset))
        if btype == 1000 and offset + 8 <= len(rec):
            _, _, enc, order, exp, res = _BLK1000.unpack_from(rec, offset)
            b1000 = {"offset": offset, "next": nxt, "encoding": enc,
                     "word_order": order, "reclen_exp": exp, "reserved": res}
        elif btype == 1001 and offset + 8 <= len(rec):
            _, _, tq, usec, res, frames = _BLK1001.unpack_from(rec, offset)
            b1001 = {"offset": offset, "next": nxt, "timing_quality": tq,
                     "usec": usec, "reserved": res, "frame_count": frames}
        offset = nxt
    out["blockettes"] = blockettes
    out["b1000"] = b1000
    out["b1001"] = b1001
    out["encoding"] = b1000["encoding"] if b1000 else None
    out["record_length"] = (1 << b1000["reclen_exp"]) if b1000 else len(rec)
    out["timing_quality"] = b1001["timing_quality"] if b1001 else None
    out["usec"] = b1001["usec"] if b1001 else 0
    out["nframes"] = b1001["frame_count"] if b1001 else None
    btime = btime_to_us(year, doy, hour, minute, second, fract)
    out["btime_us"] = btime
    out["start_us"] = btime + out["usec"]
    out["data"] = bytes(rec[begin_data:])
    return out


def record_start_us(rec: bytes) -> int:
    """Start time of a record in µs since epoch (BTIME + blockette 1001 µs)."""
    return parse_record(rec)["start_us"]  # type: ignore[return-value]
