"""The seedlink_raw_plugin wire protocol (RAW 1.0, 1.1 and 2.0), both ends.

Byte layout (``docs/raw-push.md`` and the research note): a text handshake
of LF-terminated lines, then binary packets with a big-endian header

* RAW 1.0/1.1, 19 bytes: year u16, yday u16, hour u8, minute u8, second u8,
  usec u32, channel id u32, sample count u32;
* RAW 2.0, 18 bytes: the same time fields, timing quality u8, channel id u16,
  sample count u32;

followed by the samples in the channel's negotiated type and byte order.

This module holds only the pure parts: versions, sample types, headers,
times, the channel-map syntax and a streaming packet splitter.  Sockets live
in ``client``, ``ingest`` and ``streamer``.
"""
import calendar
import datetime
import re
import struct

import numpy as np

from ..errors import SeedLinkError

__all__ = [
    "RawProtocolError", "VERSIONS", "PUSH_VERSION", "MAX_SAMPLES", "MAX_RATE",
    "SAMPLE_TYPES", "ChannelSpec", "MapEntry", "header_size", "sample_dtype",
    "pack_header", "time_fields", "fields_to_us", "datetime_to_us", "us_to_datetime",
    "PacketSplitter", "parse_channel_map", "parse_address", "to_int32", "format_us",
]

VERSIONS = ("RAW 2.0", "RAW 1.1", "RAW 1.0")     # newest first: the probing order
PUSH_VERSION = "RAW 2.0 PUSH"                    # our push handshake (docs/raw-push.md)
MAX_SAMPLES = 1_000_000      # per packet ("1 s at 1 MHz"), the plugin's limit
MAX_RATE = 1_000_000         # Hz
MAX_LINE = 256               # bytes per handshake line

# sample type -> item size; RAW 1.0 knows only the integer types
SAMPLE_TYPES = {"int8": 1, "int16": 2, "int32": 4, "float32": 4, "float64": 8}
_V10_TYPES = ("int8", "int16", "int32")
_KIND = {"int8": "i1", "int16": "i2", "int32": "i4", "float32": "f4", "float64": "f8"}

_HDR19 = struct.Struct(">HHBBBIII")
_HDR18 = struct.Struct(">HHBBBIBHI")
_US = 1_000_000
_INT32_MIN, _INT32_MAX = -2 ** 31, 2 ** 31 - 1


class RawProtocolError(SeedLinkError, ValueError):
    """A peer broke the RAW protocol; the message says how."""


def header_size(version):
    """18 for RAW 2.0 (and push), 19 for RAW 1.0/1.1."""
    if version.startswith("RAW 2."):
        return 18
    if version in ("RAW 1.0", "RAW 1.1"):
        return 19
    raise RawProtocolError("unknown RAW version %r" % version)


def sample_dtype(samptype, endianness):
    """The numpy dtype of a channel's samples on the wire."""
    if samptype not in SAMPLE_TYPES:
        raise RawProtocolError("unknown sample type %r (expected one of %s)"
                               % (samptype, ", ".join(SAMPLE_TYPES)))
    if endianness not in ("big", "little"):
        raise RawProtocolError("unknown sample endianness %r (expected big or little)"
                               % (endianness,))
    return np.dtype((">" if endianness == "big" else "<") + _KIND[samptype])


class ChannelSpec:
    """What a device says about one channel: id, integer rate (Hz), byte
    order and sample type."""

    __slots__ = ("id", "rate", "endianness", "samptype", "dtype")

    def __init__(self, id, rate, endianness, samptype, version="RAW 2.0"):
        max_id = 0xFFFF if version.startswith("RAW 2.") else 0xFFFFFFFF
        if not isinstance(id, int) or not 0 <= id <= max_id:
            raise RawProtocolError("channel id %r out of range 0..%d" % (id, max_id))
        if not isinstance(rate, int) or not 1 <= rate <= MAX_RATE:
            raise RawProtocolError("sample rate %r must be an integer from 1 to %d Hz"
                                   % (rate, MAX_RATE))
        if version == "RAW 1.0" and samptype not in _V10_TYPES:
            raise RawProtocolError("RAW 1.0 has no sample type %s" % samptype)
        self.id = id
        self.rate = rate
        self.endianness = endianness
        self.samptype = samptype
        self.dtype = sample_dtype(samptype, endianness)

    def answer_lines(self):
        """The six lines a device answers to ``CHANNEL id``."""
        return ["SAMPLING RATE", str(self.rate), "SAMPLE ENDIANNESS", self.endianness,
                "SAMPLE TYPE", self.samptype]

    @classmethod
    def from_answer(cls, id, lines, version):
        """Parse the six answer lines; a clear error for anything else."""
        if len(lines) != 6:
            raise RawProtocolError("channel %d: expected 6 answer lines, got %d" % (id, len(lines)))
        labels = (lines[0], lines[2], lines[4])
        if labels != ("SAMPLING RATE", "SAMPLE ENDIANNESS", "SAMPLE TYPE"):
            raise RawProtocolError("channel %d: unexpected answer %r" % (id, lines))
        if not lines[1].isdigit():
            raise RawProtocolError("channel %d: sampling rate %r is not a decimal integer"
                                   % (id, lines[1]))
        return cls(id, int(lines[1]), lines[3], lines[5], version)

    def __repr__(self):
        return "ChannelSpec(%d, %d Hz, %s, %s)" % (self.id, self.rate, self.endianness,
                                                    self.samptype)


# -- times ----------------------------------------------------------------------------

def time_fields(us):
    """(year, yday, hour, minute, second, usec) of epoch microseconds (UTC)."""
    seconds, usec = divmod(us, _US)
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    return (t.year, t.timetuple().tm_yday, t.hour, t.minute, t.second, usec)


def fields_to_us(year, yday, hour, minute, second, usec):
    """Epoch microseconds of header time fields (no leap seconds)."""
    days = calendar.timegm((year, 1, 1, 0, 0, 0)) // 86400 + yday - 1
    return ((days * 24 + hour) * 60 + minute) * 60 * _US + second * _US + usec


def datetime_to_us(dt):
    """Epoch microseconds of a UTC datetime.  Naive means UTC; an aware one
    must be UTC (offset 0): the RAW wire carries UTC fields, and the original
    sent local fields of non-UTC datetimes unnoticed."""
    if not isinstance(dt, datetime.datetime):
        raise TypeError("samptime must be a datetime.datetime, not %s" % type(dt).__name__)
    if dt.tzinfo is not None:
        offset = dt.utcoffset()
        if offset is None or offset != datetime.timedelta(0):
            raise ValueError("samptime %s is not UTC (offset %s); pass naive UTC or an "
                             "aware datetime in UTC" % (dt.isoformat(), offset))
        dt = dt.replace(tzinfo=None)
    seconds = calendar.timegm(dt.timetuple())
    return seconds * _US + dt.microsecond


def us_to_datetime(us):
    """Naive UTC datetime of epoch microseconds."""
    return datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us)


def format_us(us):
    """ISO 8601 text of epoch microseconds, for messages."""
    return us_to_datetime(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pack_header(version, us, quality, channel_id, count):
    """The binary packet header for a packet whose first sample is at `us`."""
    year, yday, hour, minute, second, usec = time_fields(us)
    if header_size(version) == 18:
        return _HDR18.pack(year, yday, hour, minute, second, usec, quality, channel_id, count)
    return _HDR19.pack(year, yday, hour, minute, second, usec, channel_id, count)


# -- the binary phase -------------------------------------------------------------------

class PacketSplitter:
    """Splits a binary RAW byte stream into packets, coping with any split.

    ``feed(data)`` returns a list of ``(spec, time_us, quality, samples)``,
    samples being a read-only numpy view in the channel's wire dtype.
    Quality is the header byte for RAW 2.0, 100 for RAW 1.x (what the
    original plugin writes).  A packet for a channel that was not
    negotiated, a count over ``MAX_SAMPLES`` or impossible time fields raise
    RawProtocolError: the stream cannot be trusted after that.  The error's
    ``packets`` holds the complete packets before the bad one.
    """

    def __init__(self, version, channels):
        self.version = version
        self.size = header_size(version)
        self.channels = dict(channels)           # id -> ChannelSpec
        self._buf = bytearray()
        self.packets = 0
        self.samples = 0

    @property
    def buffered(self):
        """Bytes of an incomplete packet held back."""
        return len(self._buf)

    def feed(self, data):
        buf = self._buf
        buf += data
        out = []
        off = 0
        n = len(buf)
        size = self.size
        view = memoryview(buf)
        try:
            while n - off >= size:
                if size == 18:
                    (year, yday, hour, minute, second, usec, quality, cid,
                     count) = _HDR18.unpack_from(buf, off)
                else:
                    (year, yday, hour, minute, second, usec, cid,
                     count) = _HDR19.unpack_from(buf, off)
                    quality = 100
                spec = self.channels.get(cid)
                if spec is None:
                    raise RawProtocolError("packet for channel %d, which was not negotiated"
                                           % cid)
                if count > MAX_SAMPLES:
                    raise RawProtocolError("channel %d: packet of %d samples (limit %d)"
                                           % (cid, count, MAX_SAMPLES))
                if not (1 <= yday <= 366 and hour < 24 and minute < 60 and second < 61
                        and usec < _US and 1900 <= year <= 9999):
                    raise RawProtocolError(
                        "channel %d: invalid packet time %04d.%03d %02d:%02d:%02d.%06d"
                        % (cid, year, yday, hour, minute, second, usec))
                end = off + size + count * spec.dtype.itemsize
                if end > n:
                    break
                samples = np.frombuffer(bytes(view[off + size:end]), dtype=spec.dtype)
                us = fields_to_us(year, yday, hour, minute, second, usec)
                out.append((spec, us, quality, samples))
                self.packets += 1
                self.samples += count
                off = end
        except RawProtocolError as exc:
            exc.packets = out           # the good packets before the bad one
            raise
        finally:
            view.release()
            del buf[:off]
        return out


# -- samples --------------------------------------------------------------------------

def to_int32(samples):
    """Samples as native int32 for the Steim encoders.

    Integers widen exactly (int8 is signed everywhere).  Floats are rounded
    to the nearest integer (ties to even), clipped to the int32 range, and
    NaN becomes 0: the original plugin truncated toward zero through a C++
    cast, which biases small signals.
    """
    kind = samples.dtype.kind
    if kind in "iu":
        return samples.astype(np.int32)
    values = np.rint(samples.astype(np.float64))
    np.clip(values, _INT32_MIN, _INT32_MAX, out=values)
    values[np.isnan(values)] = 0
    return values.astype(np.int32)


def parse_address(text, default_port=65535):
    """(host, port) of ``HOST:PORT`` or ``HOST``; ValueError when malformed."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = port, str(default_port)
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("bad address %r (expected HOST:PORT)" % text)
    return host, int(port)


# -- the plugin's channel map ------------------------------------------------------------

class MapEntry:
    """One ``LOC.CHA:ID`` (or ``INPUT:ID``) item of a channel map.

    ``input`` is set instead of location/channel when the name has no dot:
    it names an ``input`` of the station's streams.xml proc, so the channel
    runs through that decimation tree."""

    __slots__ = ("id", "location", "channel", "input")

    def __init__(self, id, location=None, channel=None, input=None):
        self.id = id
        self.location = location
        self.channel = channel
        self.input = input

    @property
    def name(self):
        return self.input if self.input is not None else "%s.%s" % (self.location, self.channel)

    def __repr__(self):
        return "MapEntry(%d, %r)" % (self.id, self.name)


_MAP_ITEM = re.compile(r"^(?:([A-Za-z0-9]{0,2})\.([A-Za-z0-9]{1,3})|([A-Za-z0-9_]{1,10})):(\d+)$")


def parse_channel_map(text):
    """Parse ``LOC.CHA:ID,...`` (empty LOC allowed, trailing comma accepted),
    the raw plugin's ``-m`` syntax.  Items without a dot name a proc input.
    Raises ValueError naming the bad item."""
    entries = []
    seen = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        m = _MAP_ITEM.match(item)
        if m is None:
            raise ValueError("bad channel map item %r (expected LOC.CHA:ID, e.g. 00.HHZ:1)"
                             % item)
        cid = int(m.group(4))
        if cid > 0xFFFFFFFF:
            raise ValueError("channel map item %r: id out of range" % item)
        if cid in seen:
            raise ValueError("channel map item %r: id %d listed twice" % (item, cid))
        seen.add(cid)
        if m.group(3) is not None:
            entries.append(MapEntry(cid, input=m.group(3)))
        else:
            entries.append(MapEntry(cid, m.group(1), m.group(2)))
    if not entries:
        raise ValueError("empty channel map %r" % text)
    return entries
