"""The device side of the RAW protocol: a drop-in for ``raw_server.py``.

::

    from seedlink_fast.raw import Channel, Streamer
    streamer = Streamer([Channel(1, 100, "little", "int32")], port=65535)
    streamer.start()
    streamer.feed_data(1, datetime.datetime.utcnow(), 100, samples)
    streamer.stop()

Two ways to deliver the samples:

* ``mode="pull"`` (default, as the original): a TCP server that any number
  of raw plugins (RAW 1.0, 1.1 or 2.0) connect to.  Each gets what is fed
  while it is connected; nothing is kept for absent plugins.
* ``mode="push"``: connects to a seedlink-fast raw ingest port
  (``docs/raw-push.md``), keeps every packet until the server acknowledges
  it and re-sends the rest after a reconnect, so outages lose nothing as
  long as the buffer holds.

The network side runs in a daemon thread with its own event loop: it dies
with the process, so it can never keep the port after the program is killed
(the original's child process could).  ``feed_data`` converts the samples to
wire bytes in the caller's thread and only hands them over; it never waits
for the network.
"""
import asyncio
import collections
import heapq
import logging
import operator
import re
import threading
import time

import numpy as np

from .protocol import (
    MAX_LINE, MAX_SAMPLES, PUSH_VERSION, VERSIONS, ChannelSpec, datetime_to_us,
    header_size, pack_header)

__all__ = ["Channel", "Streamer"]

log = logging.getLogger("seedlink_fast.raw.streamer")

_SIZE_TYPES = {1: "int8", 2: "int16", 4: "int32"}     # v1.0's sampsize argument
_WRITE_BATCH = 1 << 20        # bytes joined into one socket write
_HIGH_WATER = 4 << 20         # transport buffer before we wait for the socket
_HANDSHAKE_TIMEOUT = 60.0     # seconds a plugin may take to say START
_CONNECT_TIMEOUT = 10.0
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 10.0
_DROP_LOG_INTERVAL = 10.0     # seconds between overflow warnings


class Channel(ChannelSpec):
    """One device channel: ``Channel(id, samprate, endianness, samptype)``.

    ``samptype`` is ``int8``, ``int16``, ``int32``, ``float32`` or
    ``float64``; an int there is raw_server.py v1.0's ``sampsize`` in bytes
    (1, 2, 4 for the integer types).  ``samprate`` is an integer in Hz (an
    integral float such as ``100.0`` is accepted: the original sent it as
    ``100.0``, which the plugin refuses).  ``endianness`` is ``big`` or
    ``little``, typically ``sys.byteorder``.  Ids go up to 2**32-1, but RAW
    2.0 and push only carry 0..65535.
    """

    __slots__ = ()

    def __init__(self, id, samprate, endianness, samptype=None, *, sampsize=None):
        if samptype is None:
            samptype = sampsize
        if isinstance(samptype, int) and not isinstance(samptype, bool):
            if samptype not in _SIZE_TYPES:
                raise ValueError("sample size %r bytes: expected 1, 2 or 4" % (samptype,))
            samptype = _SIZE_TYPES[samptype]
        if not isinstance(samptype, str):
            raise TypeError("samptype must be a type name such as 'int32' (or a size "
                            "of 1, 2 or 4 bytes), not %r" % (samptype,))
        if isinstance(samprate, float) and samprate.is_integer():
            samprate = int(samprate)
        if not isinstance(samprate, int):
            samprate = operator.index(samprate)    # numpy integers; rejects 0.5
        super().__init__(operator.index(id), samprate, endianness, samptype, "RAW 1.1")

    @property
    def samprate(self):
        return self.rate

    @property
    def sampsize(self):
        return self.dtype.itemsize

    def __repr__(self):
        return "Channel(%d, %d, %r, %r)" % (self.id, self.rate, self.endianness, self.samptype)


class _Packet:
    """One fed packet: its wire payload, and what framing and acknowledgement need."""

    __slots__ = ("cid", "us", "end_us", "quality", "count", "payload", "seq", "dead",
                 "_h18", "_h19")

    def __init__(self, cid, us, rate, quality, count, payload):
        self.cid = cid
        self.us = us
        # time of the last sample, rounded down to whole µs like the server's
        self.end_us = us + ((count - 1) * 1_000_000) // rate
        self.quality = quality
        self.count = count
        self.payload = payload
        self.seq = 0            # feed order, set by the network thread
        self.dead = False       # acknowledged or dropped: skip it if still queued
        self._h18 = self._h19 = None

    def header(self, size):
        """The header in RAW 2.0 (18 bytes) or RAW 1.x (19 bytes) framing,
        packed once however many plugins get it."""
        if size == 18:
            if self._h18 is None:
                self._h18 = pack_header("RAW 2.0", self.us, self.quality, self.cid, self.count)
            return self._h18
        if self._h19 is None:
            self._h19 = pack_header("RAW 1.1", self.us, self.quality, self.cid, self.count)
        return self._h19


class _ChannelStats:
    __slots__ = ("packets", "samples", "dropped_packets", "dropped_samples", "acked_us")

    def __init__(self):
        self.packets = self.samples = 0
        self.dropped_packets = self.dropped_samples = 0
        self.acked_us = None

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__slots__}


class _Drops:
    """Counts packets thrown away on overflow and warns, at most every few seconds."""

    def __init__(self, what, stats):
        self.what = what
        self.stats = stats
        self.total = 0
        self._unlogged = 0
        self._logged_at = None

    def note(self, packets):
        for pkt in packets:
            st = self.stats[pkt.cid]
            st.dropped_packets += 1
            st.dropped_samples += pkt.count
        self.total += len(packets)
        self._unlogged += len(packets)
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= _DROP_LOG_INTERVAL:
            log.warning("%s: buffer full, dropped the %d oldest packets (%d so far)",
                        self.what, self._unlogged, self.total)
            self._logged_at = now
            self._unlogged = 0


def _drop_oldest(queue, nbytes, limit):
    """Pop the oldest packets of a deque holding nbytes of payload until it
    fits limit (the newest always stays); returns (nbytes, dropped)."""
    dropped = []
    while nbytes > limit and len(queue) > 1:
        old = queue.popleft()
        nbytes -= len(old.payload)
        dropped.append(old)
    return nbytes, dropped


class _Outbox:
    """Packets waiting for one connection; written in large batches so the
    socket sees few, big writes."""

    def __init__(self, header_size, limit=None):
        self.size = header_size
        self.limit = limit          # bytes; None: the caller bounds it
        self.queue = collections.deque()
        self.bytes = 0
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()     # set: everything handed to the socket
        self.idle.set()

    def put(self, packets):
        """Queue packets; returns those dropped (oldest first) to stay in the limit."""
        queue = self.queue
        for pkt in packets:
            queue.append(pkt)
            self.bytes += len(pkt.payload)
        dropped = []
        if self.limit is not None:
            self.bytes, dropped = _drop_oldest(queue, self.bytes, self.limit)
        if packets:
            self.idle.clear()
            self.wakeup.set()
        return dropped

    async def pump(self, writer):
        """Write queued packets until cancelled or the connection fails."""
        queue = self.queue
        size = self.size
        while True:
            if not queue:
                self.idle.set()
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            batch = []
            nbytes = 0
            while queue and nbytes < _WRITE_BATCH:
                pkt = queue.popleft()
                self.bytes -= len(pkt.payload)
                if not pkt.dead:
                    batch.append(pkt.header(size))
                    batch.append(pkt.payload)
                    nbytes += len(pkt.payload)
            if batch:
                writer.writelines(batch)
                await writer.drain()


async def _finish(connections, timeout):
    """Close each (outbox, writer) once its packets are written, aborting
    those still busy after `timeout` seconds; returns how many were."""
    async def finish(outbox, writer):
        await outbox.idle.wait()
        writer.close()
        await writer.wait_closed()

    tasks = [asyncio.ensure_future(finish(*conn)) for conn in connections]
    if not tasks:
        return 0
    _, busy = await asyncio.wait(tasks, timeout=timeout)
    for (_, writer), task in zip(connections, tasks):
        if task in busy:
            task.cancel()
            writer.transport.abort()
        elif task.exception() is not None:
            log.debug("closing %s: %r", _peer_name(writer), task.exception())
    return len(busy)


async def _read_line(reader):
    """One LF-terminated text line without its LF (a CR before it is
    tolerated); EOFError when the peer closed."""
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise EOFError("connection closed")
    return line[:-1].rstrip(b"\r").decode("ascii", "replace")


def _send_lines(writer, lines):
    writer.write(("\n".join(lines) + "\n").encode("ascii"))


def _peer_name(writer):
    peer = writer.get_extra_info("peername")
    return "%s:%s" % peer[:2] if peer else "?"


# -- pull: a raw_server.py for raw plugins --------------------------------------------

class _PullClient:
    """One plugin connection: handshake (raw-protocol.md §1.3), then stream."""

    def __init__(self, server, reader, writer):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = _peer_name(writer)
        self.version = None
        self.channels = set()
        self.outbox = None
        self.drops = None

    async def run(self):
        self.server.sessions.add(self)
        try:
            try:
                started = await asyncio.wait_for(self._handshake(), _HANDSHAKE_TIMEOUT)
            except (EOFError, OSError, ValueError, asyncio.TimeoutError) as exc:
                log.info("plugin %s: handshake failed (%s)", self.peer,
                         exc or type(exc).__name__)
                started = False
            if started:
                await self._stream()
        finally:
            self.server.sessions.discard(self)
            self.server.clients.discard(self)
            self.writer.close()

    async def _stream(self):
        self.writer.transport.set_write_buffer_limits(high=_HIGH_WATER)
        log.info("plugin %s: %s, streaming channels %s", self.peer, self.version,
                 ",".join(map(str, sorted(self.channels))))
        pump = asyncio.ensure_future(self.outbox.pump(self.writer))
        # the plugin never talks after START: any byte or EOF ends the session
        watch = asyncio.ensure_future(self.reader.read(1))
        try:
            done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.cancel()
            watch.cancel()
        if self.server.closing:
            log.info("plugin %s: closed, the streamer stops", self.peer)
        elif pump in done:
            log.info("plugin %s: connection lost (%s)", self.peer, pump.exception())
        else:
            log.info("plugin %s: ended the session", self.peer)

    async def _handshake(self):
        version = await _read_line(self.reader)
        if version not in VERSIONS:
            log.warning("plugin %s: unsupported version line %r, closing", self.peer, version)
            return False
        self.version = version
        _send_lines(self.writer, [version])
        while True:
            command = await _read_line(self.reader)
            if command == "CHANNEL":
                spec = self._channel(await _read_line(self.reader))
                if spec is None:
                    return False
                self.channels.add(spec.id)
                _send_lines(self.writer, spec.answer_lines())
            elif command == "START":
                if not self.channels:
                    log.warning("plugin %s: START without any CHANNEL, closing", self.peer)
                    return False
                self.outbox = _Outbox(header_size(version), self.server.queue_bytes)
                self.drops = _Drops("plugin %s" % self.peer, self.server.stats)
                # registered before STARTING: data fed once the plugin has
                # seen it reaches the plugin
                self.server.clients.add(self)
                _send_lines(self.writer, ["STARTING"])
                return True
            else:
                log.warning("plugin %s: unexpected command %r, closing", self.peer, command)
                return False

    def _channel(self, text):
        """The channel a plugin asked for, or None (logged) if it cannot have it."""
        spec = None
        if text.isascii() and text.isdigit():
            spec = self.server.channels.get(int(text))
        if spec is None:
            log.warning("plugin %s: unknown channel %r, closing", self.peer, text)
        elif self.version == "RAW 1.0" and spec.samptype.startswith("float"):
            log.warning("plugin %s: channel %d is %s, which RAW 1.0 cannot carry; closing",
                        self.peer, spec.id, spec.samptype)
            spec = None
        elif self.version == "RAW 2.0" and spec.id > 0xFFFF:
            log.warning("plugin %s: channel id %d does not fit RAW 2.0; closing",
                        self.peer, spec.id)
            spec = None
        return spec

    def add(self, packets):
        mine = [pkt for pkt in packets if pkt.cid in self.channels]
        if mine:
            dropped = self.outbox.put(mine)
            if dropped:
                self.drops.note(dropped)

    def info(self):
        return {"peer": self.peer, "version": self.version,
                "channels": sorted(self.channels), "queued_bytes": self.outbox.bytes,
                "dropped_packets": self.drops.total}


class _Network:
    """What both network sides take from their Streamer."""

    def __init__(self, streamer):
        self.host = streamer.host
        self.port = streamer.port
        self.channels = streamer.channels       # id -> Channel
        self.stats = streamer._stats            # id -> _ChannelStats


class _PullServer(_Network):
    def __init__(self, streamer):
        super().__init__(streamer)
        self.queue_bytes = streamer.queue_bytes
        self.sessions = set()       # every connection
        self.clients = set()        # those past START, which get data
        self.server = None
        self.closing = False

    async def open(self):
        try:
            self.server = await asyncio.start_server(
                lambda r, w: _PullClient(self, r, w).run(), self.host, self.port,
                limit=4 * MAX_LINE)
        except OSError as exc:
            raise OSError(exc.errno, "raw streamer cannot listen on %s:%d: %s"
                          % (self.host, self.port, exc.strerror or exc)) from exc
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("raw streamer listening on %s:%d", self.host, self.port)

    def add(self, packets):
        for client in list(self.clients):
            client.add(packets)

    async def close(self, timeout):
        self.closing = True
        self.server.close()
        for session in self.sessions - self.clients:
            session.writer.close()      # still in the handshake: nothing to flush
        await _finish([(c.outbox, c.writer) for c in self.clients], timeout)
        await self.server.wait_closed()


# -- push: to a seedlink-fast raw ingest port ------------------------------------------

class _Refused(Exception):
    """The server answered ERROR."""


class _Pusher(_Network):
    """Keeps fed packets until acknowledged; (re)connects and sends them
    (docs/raw-push.md)."""

    def __init__(self, streamer):
        super().__init__(streamer)
        self.station = streamer.station
        self.limit = streamer.buffer_bytes
        self.pending = {cid: collections.deque() for cid in self.channels}   # unacked, by time
        self.pending_count = 0
        self.pending_bytes = 0
        self.drops = _Drops("push buffer", self.stats)
        self.outbox = None          # set while a connection is streaming
        self.writer = None
        self.closing = False
        self.connected = False
        self.connections = 0
        self.last_error = None
        self.task = None

    async def open(self):
        self.task = asyncio.ensure_future(self._run())

    def add(self, packets):
        for pkt in packets:
            self.pending[pkt.cid].append(pkt)
            self.pending_count += 1
            self.pending_bytes += len(pkt.payload)
        dropped = []
        while self.pending_bytes > self.limit and self.pending_count > 1:
            dropped.append(self._pop(min((q for q in self.pending.values() if q),
                                         key=lambda q: q[0].seq)))
        if dropped:
            self.drops.note(dropped)
        if self.outbox is not None:
            self.outbox.put(packets)

    def _pop(self, queue):
        pkt = queue.popleft()
        pkt.dead = True
        self.pending_count -= 1
        self.pending_bytes -= len(pkt.payload)
        return pkt

    def _acked(self, cid, us):
        """The server has everything of channel `cid` up to `us`."""
        st = self.stats[cid]
        if st.acked_us is None or us > st.acked_us:
            st.acked_us = us
        queue = self.pending[cid]
        while queue and queue[0].end_us <= us:
            self._pop(queue)

    async def _run(self):
        delay = _BACKOFF_MIN
        while True:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=4 * MAX_LINE),
                    _CONNECT_TIMEOUT)
                await asyncio.wait_for(self._handshake(reader, writer), _HANDSHAKE_TIMEOUT)
                delay = _BACKOFF_MIN
                await self._stream(reader, writer)
            except (_Refused, OSError, EOFError, ValueError, asyncio.TimeoutError) as exc:
                if self.closing:
                    return
                self._failed(exc, delay)
            finally:
                self.outbox = None
                self.connected = False
                if writer is not None:
                    writer.close()
            await asyncio.sleep(delay)
            delay = min(2 * delay, _BACKOFF_MAX)

    def _failed(self, exc, delay):
        """Log a failed connection: refusals always at ERROR (a config to
        fix), network trouble at WARNING unless it repeats."""
        if isinstance(exc, _Refused):
            self.last_error = str(exc)
            log.error("push to %s:%d: %s; retrying in %.1f s", self.host, self.port, exc, delay)
            return
        text = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
        level = logging.DEBUG if text == self.last_error else logging.WARNING
        self.last_error = text
        log.log(level, "push to %s:%d: %s; retrying in %.1f s", self.host, self.port, text, delay)

    async def _ask(self, reader, writer, line, answer):
        """Send one handshake line; the reply must match the regex `answer`."""
        _send_lines(writer, [line])
        reply = await _read_line(reader)
        if reply.startswith("ERROR"):
            raise _Refused("server refused %r: %s" % (line, reply))
        match = re.fullmatch(answer, reply)
        if match is None:
            raise ValueError("unexpected answer %r to %r" % (reply, line))
        return match

    async def _handshake(self, reader, writer):
        await self._ask(reader, writer, PUSH_VERSION, re.escape(PUSH_VERSION))
        await self._ask(reader, writer, "STATION " + self.station, "OK")
        for spec in self.channels.values():
            match = await self._ask(
                reader, writer, "CHANNEL %d %d %s %s" % (spec.id, spec.rate, spec.endianness,
                                                         spec.samptype), r"OK (-|\d+)")
            if match.group(1) != "-":
                self._acked(spec.id, int(match.group(1)))
        await self._ask(reader, writer, "START", "STARTING")

    async def _stream(self, reader, writer):
        # everything unacknowledged, in feed order, then whatever comes next
        self.outbox = _Outbox(18)
        self.writer = writer
        self.outbox.put(list(heapq.merge(*self.pending.values(),
                                         key=operator.attrgetter("seq"))))
        self.connected = True
        self.connections += 1
        writer.transport.set_write_buffer_limits(high=_HIGH_WATER)
        log.info("pushing to %s:%d as %s (%d unacknowledged packets to send)",
                 self.host, self.port, self.station, len(self.outbox.queue))
        pump = asyncio.ensure_future(self.outbox.pump(writer))
        acks = asyncio.ensure_future(self._read_acks(reader))
        try:
            done, _ = await asyncio.wait({pump, acks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.cancel()
            acks.cancel()
        for task in done:
            task.result()

    async def _read_acks(self, reader):
        while True:
            line = await _read_line(reader)
            words = line.split()
            if line.startswith("ERROR"):
                raise _Refused("server: %s" % line)
            if len(words) == 3 and words[0] == "ACK" and words[2].isdigit():
                cid = int(words[1]) if words[1].isdigit() else None
                if cid in self.pending:
                    self._acked(cid, int(words[2]))
                    continue
            log.warning("push to %s:%d: ignoring unexpected line %r",
                        self.host, self.port, line)

    async def close(self, timeout):
        self.closing = True
        if self.outbox is not None:
            queued = len(self.outbox.queue)
            if await _finish([(self.outbox, self.writer)], timeout):
                log.warning("push: stopped before %d queued packets were sent", queued)
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        if self.pending_count:
            log.info("push: stopping with %d packets not acknowledged yet "
                     "(the server re-requests nothing; they are lost if it lacks them)",
                     self.pending_count)

    def info(self):
        return {"connected": self.connected, "connections": self.connections,
                "unacked_packets": self.pending_count, "unacked_bytes": self.pending_bytes,
                "last_error": self.last_error}


# -- the public object ----------------------------------------------------------------

def _new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Streamer:
    """Serve (pull) or push the samples of `channels`.

    ``Streamer(channels, host="127.0.0.1", port=65535)`` is raw_server.py's
    signature; pull mode listens on host:port (port 0 picks a free one, see
    :attr:`port`).  Push mode (``mode="push"``, ``station="NET.STA"``)
    connects to host:port instead.

    ``queue_bytes`` bounds what waits for one slow plugin (pull),
    ``buffer_bytes`` what waits for acknowledgement (push); the same limit
    bounds what waits for the network thread, should it fall behind.  On
    overflow the oldest packets are dropped and counted in :meth:`stats`;
    ``feed_data`` never waits for the network.  ``stop()``
    waits at most ``flush_timeout`` seconds for queued data to be written.
    """

    def __init__(self, channels, host="127.0.0.1", port=65535, *, mode="pull", station=None,
                 queue_bytes=64 << 20, buffer_bytes=256 << 20, flush_timeout=2.0):
        self.channels = {}
        for ch in channels:
            if not isinstance(ch, ChannelSpec):
                raise TypeError("channels must be Channel objects, not %r" % (ch,))
            if ch.id in self.channels:
                raise ValueError("channel id %d listed twice" % ch.id)
            self.channels[ch.id] = ch
        if not self.channels:
            raise ValueError("a Streamer needs at least one channel")
        if mode not in ("pull", "push"):
            raise ValueError("mode must be 'pull' or 'push', not %r" % (mode,))
        if mode == "push":
            if not isinstance(station, str) or not re.fullmatch(r"[^.\s]+\.[^.\s]+", station):
                raise ValueError("push mode needs station='NET.STA', not %r" % (station,))
            wide = [cid for cid in self.channels if cid > 0xFFFF]
            if wide:
                raise ValueError("push carries channel ids 0..65535 only, not %s" % wide)
        if not 0 <= port <= 65535:
            raise ValueError("port %r out of range" % (port,))
        self.host = host
        self.port = port
        self.mode = mode
        self.station = station
        self.queue_bytes = queue_bytes
        self.buffer_bytes = buffer_bytes
        self.flush_timeout = flush_timeout
        self._stats = {cid: _ChannelStats() for cid in self.channels}
        self._inbox = collections.deque()   # fed packets for the network thread
        # the inbox is bounded too (by the same limit as what it feeds), in
        # case the network thread falls behind the device loop; its drops
        # are counted apart, under the lock, as feeding threads make them
        self._inbox_lock = threading.Lock()
        self._inbox_bytes = 0
        self._inbox_limit = queue_bytes if mode == "pull" else buffer_bytes
        self._inbox_drops = _Drops("raw streamer: network thread behind",
                                   {cid: _ChannelStats() for cid in self.channels})
        self._wakeup_pending = False
        self._seq = 0
        self._loop = None
        self._thread = None
        self._net = None
        self._stopped = False

    # -- life cycle --

    def start(self):
        """Start the network thread; in pull mode the port is bound on return
        (OSError if it cannot be)."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("Streamer.start() called twice; create a new Streamer")
        self._net = _PullServer(self) if self.mode == "pull" else _Pusher(self)
        ready = threading.Event()
        failure = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure),
                                        name="raw-streamer", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        if self.mode == "pull":
            self.port = self._net.port
        return self

    def _run(self, ready, failure):
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._net.open())
        except BaseException as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        self._loop = loop
        loop.call_soon(self._dispatch)      # whatever was fed before start()
        ready.set()
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def stop(self):
        """Write what is queued (at most ``flush_timeout`` seconds), close
        every connection and end the network thread."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is None:
            return
        loop = self._loop
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            done.result(self.flush_timeout + 5.0)
        except Exception as exc:    # a shutdown problem must not hide the caller's
            log.warning("raw streamer: unclean shutdown: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5.0)

    async def _shutdown(self):
        self._dispatch()
        await self._net.close(self.flush_timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- data --

    def feed_data(self, channel_id, samptime, timing_quality=None, samples=None):
        """Send samples of one channel, the first one taken at `samptime`.

        ``feed_data(id, samptime, samples)`` (v1.x) or ``feed_data(id,
        samptime, timing_quality, samples)`` (v2.x; quality 0..100, default
        100).  `samptime` is a naive UTC or an aware UTC datetime; `samples`
        any 1-D array-like of at most 1,000,000 values, converted to the
        channel's type and byte order (floats into integer channels are
        truncated, as the original did; values that do not fit raise).

        Raises ValueError (unknown channel, bad quality, non-UTC time,
        samples that do not fit), TypeError (wrong argument types) and
        RuntimeError after :meth:`stop`.
        """
        if samples is None:
            if timing_quality is None:
                raise TypeError("feed_data() needs samples")
            samples, timing_quality = timing_quality, 100
        if self._stopped:
            raise RuntimeError("feed_data() after stop()")
        spec = self.channels.get(channel_id)
        if spec is None:
            raise ValueError("unknown channel id %r (this Streamer has %s)"
                             % (channel_id, ", ".join(map(str, self.channels))))
        quality = operator.index(timing_quality)
        if not 0 <= quality <= 100:
            raise ValueError("timing_quality %d out of range 0..100" % quality)
        us = datetime_to_us(samptime)
        payload, count = _to_wire(spec, samples)
        if count == 0:
            return
        st = self._stats[spec.id]
        st.packets += 1
        st.samples += count
        if self.mode == "pull" and self._loop is None:
            return      # nobody can be connected yet
        pkt = _Packet(spec.id, us, spec.rate, quality, count, payload)
        with self._inbox_lock:
            inbox = self._inbox
            inbox.append(pkt)
            self._inbox_bytes += len(payload)
            if self._inbox_bytes > self._inbox_limit:
                self._inbox_bytes, dropped = _drop_oldest(inbox, self._inbox_bytes,
                                                          self._inbox_limit)
                if dropped:
                    self._inbox_drops.note(dropped)
        # one wake-up per burst, not per packet: the network thread clears the
        # flag before it empties the inbox, so nothing appended is missed
        loop = self._loop
        if loop is not None and not self._wakeup_pending:
            self._wakeup_pending = True
            try:
                loop.call_soon_threadsafe(self._dispatch)
            except RuntimeError:
                pass    # the loop is closing: stop() is under way

    def _dispatch(self):
        """On the network thread: hand the fed packets over."""
        self._wakeup_pending = False
        with self._inbox_lock:
            packets = list(self._inbox)
            self._inbox.clear()
            self._inbox_bytes = 0
        for pkt in packets:
            self._seq += 1
            pkt.seq = self._seq
        if packets:
            self._net.add(packets)

    # -- state --

    @property
    def last_error(self):
        """The last connection or handshake error in push mode, else None."""
        return getattr(self._net, "last_error", None)

    def stats(self):
        """Counters: per channel fed packets/samples, overflow drops, acked
        time (push); connected plugins (pull) or connection state (push)."""
        channels = {cid: st.as_dict() for cid, st in self._stats.items()}
        with self._inbox_lock:
            for cid, st in self._inbox_drops.stats.items():
                channels[cid]["dropped_packets"] += st.dropped_packets
                channels[cid]["dropped_samples"] += st.dropped_samples
        out = {
            "mode": self.mode,
            "channels": channels,
            "overflow_packets": sum(st["dropped_packets"] for st in channels.values()),
            "last_error": self.last_error,
        }
        if self.mode == "pull":
            clients = list(self._net.clients) if self._net else []
            out["clients"] = [c.info() for c in clients]
        elif self._net is not None:
            out.update(self._net.info())
        return out


def _to_wire(spec, samples):
    """(payload bytes, count) of samples in the channel's wire type, vectorised."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError("channel %d: samples must be 1-D, got shape %s" % (spec.id, arr.shape))
    if arr.dtype.kind not in "biuf":
        raise TypeError("channel %d: samples must be numbers, not %s" % (spec.id, arr.dtype))
    if len(arr) > MAX_SAMPLES:
        raise ValueError("channel %d: %d samples in one call, at most %d (split them)"
                         % (spec.id, len(arr), MAX_SAMPLES))
    dtype = spec.dtype
    if dtype.kind == "i" and len(arr) and not np.can_cast(arr.dtype, dtype, "safe"):
        info = np.iinfo(dtype)
        low, high = arr.min(), arr.max()
        if not (info.min <= low and high <= info.max):     # NaN fails both
            raise ValueError("channel %d: samples from %s to %s do not fit %s (%d..%d)"
                             % (spec.id, low, high, spec.samptype, info.min, info.max))
    return arr.astype(dtype, copy=False).tobytes(), len(arr)
