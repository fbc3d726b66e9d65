"""Parser for the byte stream a SeedLink plugin writes to file descriptor 63.

Wire format (SeisComP ``libs/plugin/plugin.h``, interface version 3), in the
host's native byte order: a 60-byte header ::

    int32 packtype; char station[10]; char channel[10];
    int32 year, yday, hour, minute, second, usec;
    int32 usec_correction; int32 timing_quality; int32 data_size;

followed by a payload whose length depends on the packet type:

====  ==============  ===============================================
type  name            payload
====  ==============  ===============================================
8     RAW_DATA_TIME   ``data_size`` int32 samples, time in the header
9     RAW_DATA        ``data_size`` int32 samples, continuing in time
10    RAW_DATA_GAP    none; ``data_size`` = number of missing samples
11    RAW_DATA_FLUSH  none
12    LOG             ``data_size`` bytes of text
13    MSEED           ``data_size`` bytes, must be 512
====  ==============  ===============================================

Validation follows SeisComP's ``seedlink.cc`` (``Plugin::read_helper`` and
``IOHandler``) in the same order:

1. As soon as a header is complete the payload length is computed
   (``4 * data_size`` for types 8/9, ``data_size`` for 12/13, 0 for every
   other type, known or not).  A payload length above
   ``PLUGIN_MAX_DATA_BYTES`` (4000) or below zero is "invalid data size".
   The limit is the same 4000 *bytes* for every type, i.e. at most 1000
   samples for raw data, 4000 bytes of log text (the server later keeps only
   448 of them) and 4000 bytes for miniSEED (which then fails step 3).
   Types 10/11 and unknown types have no payload, so their ``data_size`` is
   never checked (a negative gap length passes).  SeisComP computes
   ``data_size << 2`` in a 32-bit int, so raw sizes of 2**30 and above wrap
   around; this parser uses exact arithmetic and rejects them.
2. After the payload: a type outside 8..13 is "invalid data type".
3. A type-13 packet whose ``data_size`` is not 512 is "unsupported Mini-SEED
   packet size".

After an error of kind 1 the stream cannot be re-synchronised: SeisComP stops
reading the pipe.  After kinds 2 and 3 the bad packet has been consumed
completely and SeisComP *keeps reading* (it only sends SIGTERM to the
plugin), so packets already in the pipe behind the bad one are still
processed.  :meth:`PluginStreamParser.resume` allows emulating that.
"""

import enum
import struct

import numpy as np

from .errors import PluginProtocolError

__all__ = [
    "PluginPacketType", "RAW_DATA_TIME", "RAW_DATA", "RAW_DATA_GAP",
    "RAW_DATA_FLUSH", "LOG", "MSEED",
    "HEADER_SIZE", "PLUGIN_MAX_DATA_BYTES", "PLUGIN_MAX_SAMPLES",
    "PLUGIN_MAX_MSG_SIZE", "PLUGIN_MSEED_SIZE", "PLUGIN_SIDLEN", "PLUGIN_CIDLEN",
    "PluginPacket", "PluginStreamError", "PluginStreamParser",
    "encode_header", "payload_length", "ptime_to_ns", "iter_plugin_file",
]


class PluginPacketType(enum.IntEnum):
    """Values of the ``packtype`` header field."""

    RAW_DATA_TIME = 8
    RAW_DATA = 9
    RAW_DATA_GAP = 10
    RAW_DATA_FLUSH = 11
    LOG = 12
    MSEED = 13


RAW_DATA_TIME = PluginPacketType.RAW_DATA_TIME
RAW_DATA = PluginPacketType.RAW_DATA
RAW_DATA_GAP = PluginPacketType.RAW_DATA_GAP
RAW_DATA_FLUSH = PluginPacketType.RAW_DATA_FLUSH
LOG = PluginPacketType.LOG
MSEED = PluginPacketType.MSEED

# Limits from plugin.h.
PLUGIN_MAX_DATA_BYTES = 4000     # largest payload the server accepts, any type
PLUGIN_MAX_SAMPLES = PLUGIN_MAX_DATA_BYTES // 4
PLUGIN_MAX_MSG_SIZE = 448        # log text kept by the server / library buffer
PLUGIN_MSEED_SIZE = 512          # the only miniSEED record length accepted
PLUGIN_SIDLEN = 10               # station field width
PLUGIN_CIDLEN = 10               # channel field width

# "=" is native byte order with standard sizes and no padding; the C struct has
# no padding either (the int32 after the two char[10] fields lands on offset 24).
_HEADER = struct.Struct("=i10s10s6iiii")
HEADER_SIZE = _HEADER.size
assert HEADER_SIZE == 60

_SAMPLE_DTYPE = np.dtype("=i4")
_TYPE_BY_VALUE = {int(t): t for t in PluginPacketType}
_EMPTY_SAMPLES = np.empty(0, dtype=_SAMPLE_DTYPE)
_EMPTY_SAMPLES.flags.writeable = False


class PluginStreamError(PluginProtocolError):
    """A packet broke the plugin protocol.

    Attributes:
        reason: the message without the location, e.g. ``"invalid data size (1001)"``.
        offset: stream offset of the bad packet's header (bytes since the start
            or the last :meth:`PluginStreamParser.reset`).
        packtype, data_size: the bad packet's header fields.
        framing_intact: True when the bad packet was consumed completely and the
            bytes behind it are still packet-aligned (invalid type, miniSEED
            size); False after an invalid data size, where the payload length
            is unknown.
    """

    def __init__(self, reason, offset, packtype, data_size, framing_intact):
        self.reason = reason
        self.offset = offset
        self.packtype = packtype
        self.data_size = data_size
        self.framing_intact = framing_intact
        super().__init__("%s at stream offset %d" % (reason, offset))


class PluginPacket:
    """One packet from the plugin pipe.

    Attributes:
        type: packet type (a :class:`PluginPacketType`, compares equal to int).
        station: station key, up to 10 characters (C string semantics: cut at
            the first NUL; bytes decoded as Latin-1 so nothing is lost).
        channel: input (channel) name, same rules; empty for most log/miniSEED.
        ptime: ``(year, yday, hour, minute, second, usec)`` exactly as sent;
            all zero for packet types that carry no time.
        usec_correction, timing_quality: header fields as sent (for type 13
            ``send_mseed2`` stores a sequence number in ``timing_quality``).
        data_size: header field: samples (8/9), missing samples (10),
            bytes (12/13), whatever the plugin put there (11).
        samples: read-only int32 array for types 8/9 (a view into the bytes
            that were fed, so it keeps that chunk alive); empty otherwise.
        payload: the payload bytes for types 12/13; ``b""`` otherwise.
    """

    __slots__ = ("type", "station", "channel", "ptime", "usec_correction",
                 "timing_quality", "data_size", "samples", "payload")

    def __init__(self, type, station, channel, ptime, usec_correction,
                 timing_quality, data_size, samples=_EMPTY_SAMPLES, payload=b""):
        self.type = type
        self.station = station
        self.channel = channel
        self.ptime = ptime
        self.usec_correction = usec_correction
        self.timing_quality = timing_quality
        self.data_size = data_size
        self.samples = samples
        self.payload = payload

    def time_ns(self):
        """The header time as integer nanoseconds since 1970 (see :func:`ptime_to_ns`)."""
        return ptime_to_ns(self.ptime)

    def to_bytes(self):
        """Serialise back to the wire format (header + payload)."""
        head = encode_header(self.type, self.station, self.channel, self.ptime,
                             self.usec_correction, self.timing_quality,
                             self.data_size)
        if self.type in (RAW_DATA_TIME, RAW_DATA):
            return head + np.asarray(self.samples, dtype=_SAMPLE_DTYPE).tobytes()
        return head + bytes(self.payload)

    def __repr__(self):
        return ("PluginPacket(type=%s, station=%r, channel=%r, ptime=%r, "
                "usec_correction=%d, timing_quality=%d, data_size=%d)"
                % (getattr(self.type, "name", self.type), self.station,
                   self.channel, self.ptime, self.usec_correction,
                   self.timing_quality, self.data_size))


def _c_string(field):
    # std::string(char *) stops at the first NUL; the field is at most 10 bytes.
    end = field.find(b"\0")
    if end >= 0:
        field = field[:end]
    return field.decode("latin-1")


def _field_bytes(name, width):
    """strncpy() semantics: bytes up to the first NUL, at most `width` of them."""
    if isinstance(name, str):
        name = name.encode("latin-1")
    else:
        name = bytes(name)
    end = name.find(b"\0")
    if end >= 0:
        name = name[:end]
    return name[:width]


def encode_header(packtype, station, channel, ptime, usec_correction,
                  timing_quality, data_size):
    """Build a 60-byte packet header in native byte order.

    ``station``/``channel`` (str or bytes) are copied like C ``strncpy`` into
    10-byte fields: cut at an embedded NUL, silently truncated to 10 bytes,
    NUL-padded (a 10-byte name has no terminating NUL).  ``ptime`` is a
    6-tuple of ints or None (all zero).  Raises ValueError if a number does
    not fit in an int32.
    """
    if ptime is None:
        ptime = (0, 0, 0, 0, 0, 0)
    try:
        return _HEADER.pack(int(packtype), _field_bytes(station, PLUGIN_SIDLEN),
                            _field_bytes(channel, PLUGIN_CIDLEN), *ptime,
                            usec_correction, timing_quality, data_size)
    except struct.error as exc:
        raise ValueError("cannot encode plugin packet header: %s" % exc) from None


def payload_length(packtype, data_size):
    """Payload bytes that follow a header, as SeisComP computes them (may be invalid)."""
    if packtype == RAW_DATA_TIME or packtype == RAW_DATA:
        return data_size * 4
    if packtype == LOG or packtype == MSEED:
        return data_size
    return 0


def _days_before_year(year):
    """Days from 1970-01-01 to January 1st of `year` (proleptic Gregorian)."""
    y = year - 1
    return 365 * y + y // 4 - y // 100 + y // 400 - 719162


def ptime_to_ns(ptime):
    """Integer nanoseconds since 1970 for ``(year, yday, hour, minute, second, usec)``.

    Plain linear arithmetic, no leap seconds: second 60 (a leap second as
    libplugin allows it) simply carries into the next minute, and other
    out-of-range fields (usec >= 10**6, negative usec from
    ``send_raw_depoch`` with a negative epoch, ...) carry the same way.
    The result fits in an int64 for years 1678..2261.
    """
    year, yday, hour, minute, second, usec = ptime
    days = _days_before_year(year) + yday - 1
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    return seconds * 1000000000 + usec * 1000


class PluginStreamParser:
    """Incremental parser of the fd 63 byte stream.

    Feed it whatever ``read()`` returned; packets may be split anywhere.
    Complete packets come back from :meth:`feed`; the incomplete tail (less
    than one packet) is kept until the next call.  Large chunks are parsed in
    place (sample arrays are views into them); only a packet that straddles
    two chunks is copied.

    Errors: when a bad packet is found, :meth:`feed` still returns every packet
    before it and sets :attr:`error` (a :class:`PluginStreamError`, which is a
    :class:`~seedlink_fast.errors.PluginProtocolError`).  The parser is then
    dead: the next :meth:`feed` raises that error, until :meth:`reset` (new
    pipe, e.g. a restarted plugin) or :meth:`resume`.

    Example::

        parser = PluginStreamParser()
        for pkt in parser.feed(os.read(fd, 65536)):
            handle(pkt)
        if parser.error:
            log(parser.error); stop_plugin()
    """

    def __init__(self):
        self.reset()

    def reset(self):
        """Forget all state, as for a fresh pipe."""
        self.error = None
        self._pending = bytearray()   # start of a packet split across feeds
        self._offset = 0              # stream offset of the first unparsed byte
        self._error_resume_pos = 0    # where in the fed chunk parsing may resume

    @property
    def buffered(self):
        """Bytes of an incomplete packet waiting for more data."""
        return len(self._pending)

    @property
    def offset(self):
        """Stream bytes consumed by complete (or rejected) packets so far."""
        return self._offset

    def feed(self, data):
        """Parse `data` (bytes-like) and return the list of complete packets.

        Raises the stored :attr:`error` if the parser is already dead.
        Non-``bytes`` input is copied once so the returned sample views
        cannot change under the caller.
        """
        if self.error is not None:
            raise self.error
        if not isinstance(data, bytes):
            data = bytes(data)
        packets = []
        pos = 0
        try:
            if self._pending:
                pos = self._complete_pending(data, packets)
            if not self._pending:
                pos = self._parse_chunk(data, pos, packets)
                if pos < len(data):
                    self._pending += data[pos:]
        except PluginStreamError as exc:
            self.error = exc
            # Keep what follows a consumed bad packet so that resume() can go on.
            rest = data[self._error_resume_pos:] if exc.framing_intact else b""
            self._pending = bytearray(rest)
        return packets

    def resume(self):
        """Continue after an error that left the framing intact.

        SeisComP keeps reading a plugin's pipe after "invalid data type" or
        "unsupported Mini-SEED packet size" (it only terminates the plugin),
        so packets already queued behind the bad one are still processed.
        Clears :attr:`error`, skips the bad packet and returns the packets
        that can be parsed from the bytes already received.  Raises the error
        again if it was an "invalid data size" (no way to find the next packet).
        """
        if self.error is None:
            return []
        if not self.error.framing_intact:
            raise self.error
        self.error = None
        rest, self._pending = bytes(self._pending), bytearray()
        return self.feed(rest)

    # -- internals ---------------------------------------------------------

    def _check_header(self, fields, offset):
        """Return the payload length for a header, or raise on an invalid size."""
        packtype, data_size = fields[0], fields[11]
        nbytes = payload_length(packtype, data_size)
        if nbytes < 0 or nbytes > PLUGIN_MAX_DATA_BYTES:
            raise PluginStreamError("invalid data size (%d)" % data_size, offset,
                                    packtype, data_size, False)
        return nbytes

    def _make_packet(self, fields, buf, start, offset):
        """Build the packet whose payload starts at buf[start]; check type and size."""
        packtype, data_size = fields[0], fields[11]
        ptype = _TYPE_BY_VALUE.get(packtype)
        if ptype is None:
            raise PluginStreamError("invalid data type (%d)" % packtype, offset,
                                    packtype, data_size, True)
        if ptype == MSEED and data_size != PLUGIN_MSEED_SIZE:
            raise PluginStreamError(
                "unsupported Mini-SEED packet size (%d instead of %d)"
                % (data_size, PLUGIN_MSEED_SIZE), offset, packtype, data_size, True)
        packet = PluginPacket(ptype, _c_string(fields[1]), _c_string(fields[2]),
                              fields[3:9], fields[9], fields[10], data_size)
        if ptype == RAW_DATA_TIME or ptype == RAW_DATA:
            packet.samples = np.frombuffer(buf, _SAMPLE_DTYPE, data_size, start)
        elif ptype == LOG or ptype == MSEED:
            packet.payload = buf[start:start + data_size]
        return packet

    def _parse_chunk(self, data, pos, packets):
        """Parse whole packets from data[pos:] in place; return where the tail starts."""
        end = len(data)
        unpack = _HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            fields = unpack(data, pos)
            total = HEADER_SIZE + self._check_header(fields, self._offset)
            if end - pos < total:
                break
            try:
                packets.append(self._make_packet(fields, data, pos + HEADER_SIZE,
                                                 self._offset))
            except PluginStreamError:
                # The bad packet is consumed; resume() continues behind it.
                self._error_resume_pos = pos + total
                self._offset += total
                raise
            pos += total
            self._offset += total
        return pos

    def _complete_pending(self, data, packets):
        """Add bytes from `data` to the split packet; return how many were used."""
        pending = self._pending
        pos = 0
        if len(pending) < HEADER_SIZE:
            pos = min(HEADER_SIZE - len(pending), len(data))
            pending += data[:pos]
            if len(pending) < HEADER_SIZE:
                return pos
        fields = _HEADER.unpack_from(pending)
        total = HEADER_SIZE + self._check_header(fields, self._offset)
        take = min(total - len(pending), len(data) - pos)
        pending += data[pos:pos + take]
        pos += take
        self._error_resume_pos = pos
        if len(pending) < total:
            return pos
        buf = bytes(pending)
        pending.clear()
        try:
            packets.append(self._make_packet(fields, buf, HEADER_SIZE, self._offset))
        finally:
            # The packet was consumed even when it is rejected.
            self._offset += total
        return pos


def iter_plugin_file(path, chunk_size=1 << 20, allow_truncated=False):
    """Yield the packets of a file holding a recorded plugin stream.

    Reads `chunk_size` bytes at a time.  A protocol error is raised (as
    :class:`PluginStreamError`) after every packet before the bad one has been
    yielded.  A file ending inside a packet raises PluginProtocolError unless
    `allow_truncated` is true (SeisComP silently drops such a tail at EOF).
    """
    parser = PluginStreamParser()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            packets = parser.feed(chunk)
            yield from packets
            if parser.error is not None:
                raise parser.error
    if parser.buffered and not allow_truncated:
        raise PluginProtocolError(
            "truncated packet at end of %s: %d bytes after offset %d"
            % (path, parser.buffered, parser.offset))
