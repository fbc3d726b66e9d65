"""The raw ingest port: devices push RAW 2.0 packets (docs/raw-push.md).

One :class:`PushSession` per device connection.  The handshake names a
station and its channels; only stations with a ``raw_channels`` map and no
``raw_source`` accept pushes, and only for their mapped ids, so a device can
never write into another station's streams.  Data packets go straight into
the station's :class:`~seedlink_fast.raw.feed.StationFeed`; after the
records they complete are stored, the session acknowledges them.
"""
import asyncio
import logging
import time

from .protocol import (MAX_LINE, PUSH_VERSION, ChannelSpec, PacketSplitter, RawProtocolError)

log = logging.getLogger("seedlink_fast.raw.ingest")

__all__ = ["PushSession"]

HANDSHAKE_TIMEOUT = 30.0     # seconds from connect to START
ACK_INTERVAL = 0.2           # seconds between acknowledgement rounds


class PushSession(asyncio.Protocol):
    """One pushing device."""

    def __init__(self, server):
        self.server = server
        self.transport = None
        self.peer = ("?", 0)
        self.feed = None              # StationFeed once the station is known
        self.specs = {}               # id -> ChannelSpec
        self.splitter = None          # set by START
        self.lines = bytearray()
        self.stage = "version"
        self.closed = False
        self.acked = {}               # id -> last acknowledged time
        self._last_ack = 0.0
        self._timer = None

    # -- connection ----------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.peer = transport.get_extra_info("peername") or ("?", 0)
        self.server.push_sessions.add(self)
        self._timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT,
                                                            self._handshake_expired)

    def connection_lost(self, exc):
        self.closed = True
        self.server.push_sessions.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.feed is not None and self.feed.session is self:
            self.feed.session = None
            log.info("%s:%d : push for %s ended", self.peer[0], self.peer[1], self.feed.key)

    def _handshake_expired(self):
        if self.splitter is None and not self.closed:
            self.refuse("no START within %d s" % HANDSHAKE_TIMEOUT)

    def refuse(self, reason):
        """ERROR line, log, close: affects this connection only."""
        log.warning("%s:%d : raw ingest: %s", self.peer[0], self.peer[1], reason)
        if not self.closed and self.transport is not None:
            self.transport.write(b"ERROR %s\n" % reason.encode("ascii", "replace"))
            self.transport.close()
        self.closed = True

    def _send(self, line):
        self.transport.write(line.encode("ascii") + b"\n")

    # -- input ------------------------------------------------------------------------

    def data_received(self, data):
        if self.closed:
            return
        try:
            if self.splitter is None:
                data = self._handshake(data)
                if self.splitter is None or not data:
                    return
            for spec, time_us, quality, samples in self.splitter.feed(data):
                self.feed.feed(spec, time_us, quality, samples)
        except RawProtocolError as exc:
            try:
                for spec, time_us, quality, samples in getattr(exc, "packets", ()):
                    self.feed.feed(spec, time_us, quality, samples)
            except RawProtocolError:
                pass
            self.server.store_pending()
            self.refuse(str(exc))
            return
        self.server.store_pending()
        now = time.monotonic()
        if now - self._last_ack >= ACK_INTERVAL:
            self.send_acks(now)

    def _handshake(self, data):
        """Consume handshake lines; return the bytes after START."""
        self.lines += data
        while self.splitter is None and not self.closed:
            end = self.lines.find(b"\n")
            if end < 0:
                if len(self.lines) > MAX_LINE:
                    raise RawProtocolError("handshake line longer than %d bytes" % MAX_LINE)
                return b""
            line = self.lines[:end].decode("ascii", "replace").rstrip("\r")
            del self.lines[:end + 1]
            self._line(line)
        rest = bytes(self.lines)
        self.lines = bytearray()
        return rest

    def _line(self, line):
        words = line.split()
        if self.stage == "version":
            if line != PUSH_VERSION:
                raise RawProtocolError("expected %r, got %r" % (PUSH_VERSION, line[:64]))
            self._send(PUSH_VERSION)
            self.stage = "station"
        elif self.stage == "station":
            if len(words) != 2 or words[0] != "STATION":
                raise RawProtocolError("expected STATION NET.STA, got %r" % line[:64])
            self.feed = self.server.push_feed(words[1])
            if self.feed is None:
                raise RawProtocolError("station %s does not accept raw pushes" % words[1][:32])
            self._send("OK")
            self.stage = "channels"
        elif words and words[0] == "CHANNEL":
            if len(words) != 5 or not words[1].isdigit() or not words[2].isdigit():
                raise RawProtocolError("expected CHANNEL <id> <rate> <endianness> <type>, "
                                       "got %r" % line[:64])
            spec = ChannelSpec(int(words[1]), int(words[2]), words[3], words[4], "RAW 2.0")
            resume = self.feed.open_channel(spec)
            self.specs[spec.id] = spec
            self._send("OK %s" % ("-" if resume is None else resume))
        elif line == "START":
            if not self.specs:
                raise RawProtocolError("START before any CHANNEL")
            old = self.feed.session
            if old is not None and old is not self and not old.closed:
                log.info("%s:%d : a new connection takes over %s", old.peer[0], old.peer[1],
                         self.feed.key)
                old.refuse("replaced by a new connection for %s" % self.feed.key)
            self.feed.session = self
            self.splitter = PacketSplitter("RAW 2.0", self.specs)
            self._send("STARTING")
            log.info("%s:%d : push for %s started (%d channels)", self.peer[0], self.peer[1],
                     self.feed.key, len(self.specs))
        else:
            raise RawProtocolError("unexpected line %r" % line[:64])

    # -- acknowledgements --------------------------------------------------------------

    def send_acks(self, now=None):
        """ACK every channel whose stored position moved."""
        if self.closed or self.feed is None or self.splitter is None:
            return
        self._last_ack = time.monotonic() if now is None else now
        lines = []
        for cid, stored in self.feed.stored().items():
            if cid in self.specs and self.acked.get(cid) != stored:
                self.acked[cid] = stored
                lines.append(b"ACK %d %d\n" % (cid, stored))
        if lines:
            self.transport.write(b"".join(lines))
