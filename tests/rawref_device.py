"""A reference RAW device (the ``raw_server.py`` side) for tests.

Written from the byte layout in the research note (raw-protocol.md, 1.3 and
1.4) with struct, socket and threads only; it shares no code with
``seedlink_fast.raw``.  Like the originals it accepts only its own version
line and closes without a word on anything else, closes on an unknown
channel id, answers six lines per channel and ``STARTING`` to ``START``,
then sends its packets (19-byte headers for RAW 1.x, 18-byte for RAW 2.0).

    dev = RefDevice("RAW 1.0", {1: Chan(100, "big", "int16")},
                    [packet(1, T0, [1, -2, 3])])
    with dev:
        ... connect to 127.0.0.1:dev.port ...

Everything is bounded: sockets time out, the accept loop and the session
threads end when the device stops.
"""
import datetime
import socket
import struct
import threading
import time

EPOCH = datetime.datetime(1970, 1, 1)

_TYPES = {"int8": "b", "int16": "h", "int32": "i", "float32": "f", "float64": "d"}


class Chan:
    """One channel as the device describes it.  ``rate`` is sent verbatim
    (str(rate)), so a test can make it say ``100.0``; endianness and type
    likewise."""

    def __init__(self, rate, endianness, samptype):
        self.rate = rate
        self.endianness = endianness
        self.samptype = samptype

    def encode(self, values):
        """The wire bytes of `values` in this channel's type and byte order."""
        order = ">" if self.endianness == "big" else "<"
        return struct.pack("%s%d%s" % (order, len(values), _TYPES[self.samptype]), *values)


class Packet:
    """A packet to send: header fields and already encoded samples, or
    ``raw`` bytes sent as they are (for broken streams)."""

    def __init__(self, cid, when=None, values=(), quality=100, count=None, raw=None):
        self.cid = cid
        self.when = when
        self.values = list(values)
        self.quality = quality
        self.count = count          # header count, default len(values)
        self.raw = raw

    def encode(self, version, chan):
        if self.raw is not None:
            return self.raw
        t = self.when
        yday = t.timetuple().tm_yday
        count = len(self.values) if self.count is None else self.count
        if version == "RAW 2.0":
            head = struct.pack(">HHBBBIBHI", t.year, yday, t.hour, t.minute, t.second,
                               t.microsecond, self.quality, self.cid, count)
        else:
            head = struct.pack(">HHBBBIII", t.year, yday, t.hour, t.minute, t.second,
                               t.microsecond, self.cid, count)
        return head + chan.encode(self.values)


def packet(cid, when, values, quality=100):
    return Packet(cid, when, values, quality)


def us_of(when):
    """Epoch microseconds of a naive UTC datetime."""
    delta = when - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


class RefDevice:
    """A threaded device on 127.0.0.1:0.

    Args:
        version: the one version line it accepts (``"RAW 1.0"``...).
        channels: ``{id: Chan}``.
        packets: Packets sent to every session after ``STARTING`` (each
            session gets them all, or ``sessions[i]`` for the i-th session
            when `sessions` is given).
        chunk: send the byte stream in pieces of this size (odd sizes test
            the splitter); None sends each packet with one sendall.
        after: ``"hold"`` keeps the connection open after the packets until
            the client closes it or the device stops; ``"close"`` closes.
        gap: seconds to sleep between packets.
        answers: ``{id: [six lines]}`` replacing the normal channel answer.
    """

    def __init__(self, version, channels, packets=(), *, sessions=None, chunk=None,
                 after="hold", gap=0.0, answers=None, hold_limit=30.0):
        self.version = version
        self.channels = dict(channels)
        self.packets = list(packets)
        self.sessions = sessions
        self.chunk = chunk
        self.after = after
        self.gap = gap
        self.answers = answers or {}
        self.hold_limit = hold_limit
        self.version_lines = []         # every version line received
        self.requested = []             # channel ids per started session
        self.connections = 0
        self.started = 0                # sessions that reached STARTING
        self.finished = threading.Event()   # set when a session sent all packets
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks = []
        self._threads = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self):
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for thread in self._threads:
            thread.join(5)
        self.listener.close()

    def wait_started(self, n=1, timeout=5.0):
        """Wait until n sessions reached STARTING; returns whether they did."""
        deadline = time.monotonic() + timeout
        while self.started < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.started >= n

    # -- server side --------------------------------------------------------------------

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._socks.append(conn)
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn):
        try:
            self._session(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _readline(self, conn):
        # byte by byte until LF, as the original plugin reads; bounded
        out = bytearray()
        conn.settimeout(10.0)
        while len(out) < 1024:
            b = conn.recv(1)
            if not b:
                return None
            if b == b"\n":
                return out.decode("ascii", "replace")
            out += b
        return None

    def _session(self, conn):
        line = self._readline(conn)
        if line is None:
            return
        self.version_lines.append(line)
        if line != self.version:
            return                     # like the originals: close, send nothing
        conn.sendall((self.version + "\n").encode())
        requested = []
        while True:
            line = self._readline(conn)
            if line is None:
                return
            if line == "CHANNEL":
                text = self._readline(conn)
                if text is None or not text.isdigit() or int(text) not in self.channels:
                    return             # unknown channel: close
                cid = int(text)
                chan = self.channels[cid]
                lines = self.answers.get(cid) or [
                    "SAMPLING RATE", str(chan.rate), "SAMPLE ENDIANNESS", chan.endianness,
                    "SAMPLE TYPE", chan.samptype]
                conn.sendall("".join(x + "\n" for x in lines).encode())
                requested.append(cid)
            elif line == "START":
                if not requested:
                    return
                conn.sendall(b"STARTING\n")
                break
            else:
                return
        with self._lock:
            index = self.started
            self.started += 1
            self.requested.append(requested)
        packets = self.packets
        if self.sessions is not None:
            packets = self.sessions[min(index, len(self.sessions) - 1)]
        self._send_packets(conn, packets)
        self.finished.set()
        if self.after == "hold":
            # until the client closes (any byte or EOF ends it, as since v1.1)
            conn.settimeout(0.1)
            deadline = time.monotonic() + self.hold_limit
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    conn.recv(1)
                    return
                except socket.timeout:
                    continue

    def _send_packets(self, conn, packets):
        conn.settimeout(10.0)
        pending = bytearray()
        for pkt in packets:
            chan = self.channels.get(pkt.cid) if pkt.raw is None else None
            data = pkt.encode(self.version, chan)
            if self.chunk:
                pending += data
                while len(pending) >= self.chunk:
                    conn.sendall(bytes(pending[:self.chunk]))
                    del pending[:self.chunk]
                    time.sleep(0.0005)
            else:
                conn.sendall(data)
            if self.gap:
                time.sleep(self.gap)
        if pending:
            conn.sendall(bytes(pending))
