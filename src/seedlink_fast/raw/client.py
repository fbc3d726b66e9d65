"""The plugin role of the RAW protocol: connect to a device, negotiate, read.

A device runs ``raw_server.py`` (any of RAW 1.0, 1.1, 2.0) or our own
endpoint; :class:`RawClient` is the TCP client that the C++ ``raw_plugin``
used to be, as an asyncio task::

    client = RawClient("127.0.0.1", 65535, [1, 2, 3], on_packet=handle)
    task = asyncio.ensure_future(client.run())
    ...
    client.stop()
    await task

Differences from the original plugin, all on purpose:

* ``version="auto"`` probes ``RAW 2.0``, ``RAW 1.1``, ``RAW 1.0`` on
  successive connections (a device closes without a word on a version it
  does not speak), then keeps the version that worked;
* a silent link is never dropped unless ``idle_timeout`` > 0 (the original
  dropped it after 90 s);
* reconnects back off from ``reconnect_delay`` doubling up to
  ``reconnect_max`` (the original slept a fixed 60 s), and the delay goes
  back to the start after a session that delivered data;
* every bad answer gets a message saying what was wrong (``last_error``
  and the log), and nothing but cancellation escapes :meth:`RawClient.run`.

The binary phase runs in ``data_received``: each chunk the loop reads goes
straight into a :class:`~.protocol.PacketSplitter`, no extra task per read.
"""
import asyncio
import logging
import time

from .protocol import VERSIONS, ChannelSpec, MAX_LINE, PacketSplitter, RawProtocolError

__all__ = ["RawClient", "HANDSHAKE_TIMEOUT"]

log = logging.getLogger("seedlink_fast.raw.client")

HANDSHAKE_TIMEOUT = 10.0     # s, connect + whole text phase


def _normalize_version(version):
    """``"auto"`` -> all versions newest first; ``"2.0"``/``"RAW 2.0"`` -> that one."""
    text = str(version).strip()
    if text.lower() == "auto":
        return list(VERSIONS)
    if not text.upper().startswith("RAW "):
        text = "RAW " + text
    text = "RAW " + text[4:].strip()
    if text not in VERSIONS:
        raise ValueError("unknown RAW version %r (expected auto, %s)"
                         % (version, ", ".join(v[4:] for v in VERSIONS)))
    return [text]


class _VersionRefused(Exception):
    """The device did not echo our version line: try another one."""


class _Link(asyncio.Protocol):
    """One TCP connection: LF lines during the handshake, then packets."""

    def __init__(self, on_packets):
        self._on_packets = on_packets
        self.transport = None
        self.splitter = None
        self.reason = None             # why we closed it, if we did
        self.eof = False
        self.last_rx = time.monotonic()
        self.closed = asyncio.get_running_loop().create_future()
        self._text = bytearray()
        self._waiter = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.last_rx = time.monotonic()
        if self.splitter is not None:
            self._feed(data)
            return
        self._text += data
        if b"\n" in data or len(self._text) > MAX_LINE:
            # enough for the next line (or an error): hold the rest in the
            # socket until the handshake asks for more
            self.transport.pause_reading()
        self._wake()

    def eof_received(self):
        self.eof = True
        self._wake()
        return False                   # close the transport

    def connection_lost(self, exc):
        self.eof = True
        if exc is not None and self.reason is None:
            self.reason = "connection lost: %s" % (exc,)
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)

    def _wake(self):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- text phase -------------------------------------------------------------------

    def send_lines(self, *lines):
        self.transport.write("".join(line + "\n" for line in lines).encode("ascii"))

    async def readline(self):
        """The next LF-terminated line (a trailing CR is dropped too).
        Raises EOFError at the end of the stream, RawProtocolError for a
        line over MAX_LINE bytes."""
        while True:
            end = self._text.find(b"\n", 0, MAX_LINE + 1)
            if end >= 0:
                line = bytes(self._text[:end])
                del self._text[:end + 1]
                return line.rstrip(b"\r").decode("ascii", "replace")
            if len(self._text) > MAX_LINE:
                raise RawProtocolError("handshake line longer than %d bytes: %r..."
                                       % (MAX_LINE, bytes(self._text[:40])))
            if self.eof:
                raise EOFError()
            self._waiter = asyncio.get_running_loop().create_future()
            self.transport.resume_reading()
            await self._waiter

    def start_packets(self, splitter):
        """Switch to the binary phase; bytes already read go first."""
        self.splitter = splitter
        pending = bytes(self._text)
        self._text = bytearray()
        self.last_rx = time.monotonic()
        if pending:
            self._feed(pending)
        if not self.transport.is_closing():
            self.transport.resume_reading()

    # -- binary phase -------------------------------------------------------------------

    def _feed(self, data):
        try:
            packets = self.splitter.feed(data)
            if packets:
                self._on_packets(packets)
        except RawProtocolError as exc:
            # complete packets before the bad one, if the splitter hands them over
            good = getattr(exc, "packets", None)
            if good:
                try:
                    self._on_packets(good)
                except Exception:
                    log.exception("packet handler failed")
            self.close(str(exc))
        except Exception as exc:  # a callback failed: end this session, keep running
            log.exception("packet handler failed")
            self.close("packet handler failed: %r" % (exc,))

    def close(self, reason):
        if self.reason is None:
            self.reason = reason
        if self.transport is not None:
            self.transport.abort()


class RawClient:
    """Connects to a RAW device and hands its packets to ``on_packet``.

    Args:
        host, port: the device's TCP address.
        channel_ids: the channel ids to request (ints, at least one).
        version: ``"auto"`` (probe 2.0, 1.1, 1.0) or a pinned version,
            ``"2.0"``/``"RAW 2.0"``, ``"1.1"`` or ``"1.0"``.
        idle_timeout: seconds without a byte after which the link is
            dropped and re-opened; 0 never drops a silent link.
        reconnect_delay, reconnect_max: the back-off between attempts
            starts at the first and doubles up to the second.
        name: a prefix for log lines.
        on_packet: ``on_packet(spec, time_us, quality, samples)`` per packet,
            samples a read-only numpy array in the channel's wire dtype,
            quality 100 for RAW 1.x.  Called from the event loop; an
            exception ends the session (logged), the client reconnects.
        on_session: ``on_session(version, specs)`` after each successful
            handshake, specs ``{id: ChannelSpec}``.
        on_disconnect: ``on_disconnect(reason)`` whenever a connection
            attempt or session ends, including failed connects and stop().

    Attributes: ``version`` (of the current session, else None),
    ``connected``, ``last_error`` (the last reason a session or attempt
    ended, None after stop()), ``packets`` and ``samples`` (totals).
    """

    def __init__(self, host, port, channel_ids, *, version="auto", idle_timeout=0.0,
                 reconnect_delay=0.5, reconnect_max=30.0, name="raw",
                 on_packet=None, on_session=None, on_disconnect=None):
        self.host = host
        self.port = int(port)
        self.channel_ids = [int(cid) for cid in channel_ids]
        if not self.channel_ids:
            raise ValueError("no channel ids to request")
        if len(set(self.channel_ids)) != len(self.channel_ids):
            raise ValueError("channel ids listed twice: %r" % (self.channel_ids,))
        self._versions = _normalize_version(version)
        if max(self.channel_ids) > 0xFFFF:
            # RAW 2.0 carries 16-bit ids
            self._versions = [v for v in self._versions if not v.startswith("RAW 2.")]
            if not self._versions:
                raise ValueError("RAW 2.0 channel ids are 0..65535, got %d"
                                 % max(self.channel_ids))
        if min(self.channel_ids) < 0:
            raise ValueError("negative channel id %d" % min(self.channel_ids))
        self.idle_timeout = float(idle_timeout or 0.0)
        self.reconnect_delay = max(0.0, float(reconnect_delay))
        self.reconnect_max = max(self.reconnect_delay, float(reconnect_max))
        self.handshake_timeout = HANDSHAKE_TIMEOUT
        self.name = name
        self.on_packet = on_packet
        self.on_session = on_session
        self.on_disconnect = on_disconnect
        self.version = None
        self.connected = False
        self.last_error = None
        self.packets = 0
        self.samples = 0
        self.sessions = 0              # successful handshakes
        self._vindex = 0               # the version tried next
        self._stopping = False
        self._stop_waiter = None
        self._link = None

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def stop(self):
        """End run(): closes the link, interrupts any wait.  Idempotent."""
        self._stopping = True
        if self._stop_waiter is not None and not self._stop_waiter.done():
            self._stop_waiter.set_result(None)
        if self._link is not None:
            self._link.close("stopped")

    async def run(self):
        """Connect, negotiate and read until stop(), reconnecting on every
        error.  Only cancellation escapes."""
        loop = asyncio.get_running_loop()
        self._stop_waiter = loop.create_future()
        if self._stopping:
            return
        delay = self.reconnect_delay
        refused_streak = 0
        while not self._stopping:
            attempt = loop.create_task(self._attempt())
            try:
                await asyncio.wait({attempt, self._stop_waiter},
                                   return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                attempt.cancel()
                raise
            if not attempt.done():
                attempt.cancel()
                await asyncio.wait({attempt})
            if self._stopping:
                self._ended("stopped", error=False)
                break
            try:
                reason, delivered, refused = attempt.result()
            except Exception as exc:   # a bug; the attempt logs what it knows
                log.exception("%s: session failed", self.name)
                reason, delivered, refused = "internal error: %r" % (exc,), False, False
            if delivered:
                delay = self.reconnect_delay
            refused_streak = refused_streak + 1 if refused else 0
            if refused and refused_streak % len(self._versions):
                # probing: try the next version at once
                self._ended(reason, probing=True)
                continue
            self._ended(reason, delay=delay)
            await asyncio.wait({self._stop_waiter}, timeout=delay)
            delay = min(delay * 2, self.reconnect_max)
        self._link = None

    def _ended(self, reason, error=True, delay=None, probing=False):
        self.connected = False
        self.version = None
        self.last_error = reason if error else None
        if delay is not None:
            log.warning("%s: %s: %s; reconnecting in %g s", self.name, self.address,
                        reason, delay)
        elif probing:
            log.info("%s: %s: %s; trying %s", self.name, self.address, reason,
                     self._versions[self._vindex % len(self._versions)])
        else:
            log.info("%s: %s: %s", self.name, self.address, reason)
        self._call(self.on_disconnect, reason)

    def _call(self, callback, *args):
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("%s: callback %r failed", self.name, callback)

    # -- one connection ---------------------------------------------------------------------

    async def _attempt(self):
        """One connection from connect to close; returns (reason, delivered,
        version_refused) and never raises (but for cancellation)."""
        version = self._versions[self._vindex % len(self._versions)]
        packets_before = self.packets
        link = None
        try:
            try:
                link, specs = await asyncio.wait_for(self._handshake(version),
                                                     self.handshake_timeout)
            finally:
                # _handshake keeps its link here so that a timeout can close it
                link = link or self._link
        except asyncio.TimeoutError:
            reason = "handshake (%s) timed out after %g s" % (version, self.handshake_timeout)
            return self._abandon(link, reason), False, False
        except _VersionRefused as exc:
            self._vindex += 1
            return self._abandon(link, str(exc)), False, True
        except (OSError, EOFError, RawProtocolError) as exc:
            return self._abandon(link, str(exc) or type(exc).__name__), False, False
        except asyncio.CancelledError:
            self._abandon(link, "stopped")
            raise
        except Exception as exc:   # a bug, not the device: keep running anyway
            log.exception("%s: handshake failed", self.name)
            return self._abandon(link, "internal error: %r" % (exc,)), False, False
        self.version = version
        self.connected = True
        self.sessions += 1
        log.info("%s: %s: %s session, channels %s", self.name, self.address, version,
                 ", ".join("%d (%d Hz %s %s)" % (s.id, s.rate, s.endianness, s.samptype)
                           for s in specs.values()))
        self._call(self.on_session, version, specs)
        try:
            link.start_packets(PacketSplitter(version, specs))
            await self._watch(link)
        except asyncio.CancelledError:
            self._abandon(link, "stopped")
            raise
        reason = link.reason or "connection closed by the device"
        if link.reason is None and link.splitter.buffered:
            reason = ("connection closed by the device in the middle of a packet "
                      "(%d bytes of it received)" % link.splitter.buffered)
        self._link = None
        return reason, self.packets > packets_before, False

    def _abandon(self, link, reason):
        if link is not None:
            link.close(reason)
        self._link = None
        return reason

    async def _handshake(self, version):
        """Connect and negotiate; returns (link, {id: ChannelSpec})."""
        loop = asyncio.get_running_loop()
        try:
            _, link = await loop.create_connection(lambda: _Link(self._packets),
                                                   self.host, self.port)
        except OSError as exc:
            raise OSError("cannot connect: %s" % (exc.strerror or exc)) from None
        self._link = link
        link.send_lines(version)
        try:
            answer = await link.readline()
        except EOFError:
            raise _VersionRefused("device closed the connection on version %r "
                                  "(it speaks another RAW version)" % version) from None
        if answer != version:
            raise _VersionRefused("device answered %r to version %r" % (answer[:60], version))
        specs = {}
        for cid in self.channel_ids:
            link.send_lines("CHANNEL", str(cid))
            lines = []
            try:
                for _ in range(6):
                    lines.append(await link.readline())
            except EOFError:
                if lines:
                    raise EOFError("device closed the connection after %d of 6 answer lines "
                                   "to CHANNEL %d" % (len(lines), cid)) from None
                raise EOFError("device closed the connection after CHANNEL %d (unknown "
                               "channel id?)" % cid) from None
            specs[cid] = ChannelSpec.from_answer(cid, lines, version)
        link.send_lines("START")
        try:
            answer = await link.readline()
        except EOFError:
            raise EOFError("device closed the connection after START") from None
        if answer != "STARTING":
            raise RawProtocolError("device answered %r to START (expected STARTING)"
                                   % answer[:60])
        return link, specs

    def _packets(self, packets):
        # called by the link for each chunk's complete packets
        handler = self.on_packet
        for spec, us, quality, samples in packets:
            self.packets += 1
            self.samples += len(samples)
            if handler is not None:
                handler(spec, us, quality, samples)

    async def _watch(self, link):
        """Wait for the link to close; drop it after idle_timeout of silence."""
        if self.idle_timeout <= 0:
            await link.closed
            return
        while not link.closed.done():
            remaining = link.last_rx + self.idle_timeout - time.monotonic()
            if remaining <= 0:
                link.close("no data for %g s (idle timeout)" % self.idle_timeout)
                await link.closed
                return
            await asyncio.wait({link.closed}, timeout=remaining)
