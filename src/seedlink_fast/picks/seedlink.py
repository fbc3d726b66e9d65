"""A small blocking SeedLink 3 client, enough for the pick clients: multi-
station handshake (``STATION``/``SELECT``/``DATA``|``TIME``/``END``) and
packet reading with deadlines.  Works with any SeedLink 3 server.

``SeedLinkDialup`` fetches time windows the dial-up way: ``TIME begin end``
per station, then it reads until the server says ``END``, until every
requested stream has a record reaching its window end (it then closes the
connection itself), until no packet came for ``idle`` seconds, or until
``timeout``; whatever arrived is kept (partial windows are fine, the
clients retry the missing parts later).  This matters because a SeedLink
server keeps a ``TIME`` window open until data *after* its end arrives,
which for a dead stream is never.  SeedLink 3 ``TIME`` has whole seconds:
the begin is floored and the end raised to the next whole second.
"""
import logging
import socket
import time

from .model import seedlink_time
from .window import split_records

__all__ = ["SeedLinkConnection", "SeedLinkDialup", "SeedLinkError", "selector_for"]

log = logging.getLogger("seedlink_fast.picks")

PACKET = 520            # "SL" + 6 hex digits + 512-byte record
_MAX_LINE = 4096


class SeedLinkError(OSError):
    """The server refused the handshake or broke the protocol."""


def selector_for(location, channel):
    """The SELECT argument for one stream.  An empty location cannot be
    written in SeedLink 3 (``BHZ.D`` matches every location); the clients
    drop records of other locations themselves."""
    return "%s%s.D" % (location, channel) if location else "%s.D" % channel


class SeedLinkConnection:
    """One connection.  ``subscribe()`` sends the handshake; ``read()``
    returns ``("data", seq, record)``, ``("end", None, None)`` for the
    server's END, or None when the deadline passed.  EOFError when the
    server closes, SeedLinkError for garbage."""

    def __init__(self, host, port, timeout=10.0):
        self.address = (host, port)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = bytearray()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        if not chunk:
            raise EOFError("server %s:%d closed the connection" % self.address)
        self.buf += chunk
        return True

    def receive(self):
        """One recv() into the buffer (for a socket select() found
        readable); EOFError when the server closed."""
        self.sock.settimeout(self.timeout)
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("server %s:%d closed the connection" % self.address)
        self.buf += chunk

    def _line(self):
        deadline = time.monotonic() + self.timeout
        while b"\r\n" not in self.buf:
            if len(self.buf) > _MAX_LINE:
                raise SeedLinkError("no line end in the server's reply")
            if not self._fill(deadline):
                raise SeedLinkError("no reply from %s:%d within %g s"
                                    % (self.address + (self.timeout,)))
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf = bytearray(rest)
        return line.decode("latin-1")

    def command(self, line):
        """Send one command and return the reply line."""
        self.sock.settimeout(self.timeout)
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        return self._line()

    def subscribe(self, stations):
        """Handshake for ``[(net, sta, [selectors], start)]``: `start` is the
        command that starts the station (``DATA``, ``DATA 00012A``, ``TIME
        ...``).  Returns the stations the server refused (each logged)."""
        refused = []
        for net, sta, selectors, start in stations:
            reply = self.command("STATION %s %s" % (sta, net))
            if not reply.startswith("OK"):
                log.warning("SeedLink %s:%d refused station %s.%s: %s",
                            *(self.address + (net, sta, reply)))
                refused.append((net, sta))
                continue
            for sel in selectors:
                reply = self.command("SELECT %s" % sel)
                if not reply.startswith("OK"):
                    log.warning("SeedLink %s:%d refused SELECT %s for %s.%s: %s",
                                *(self.address + (sel, net, sta, reply)))
            reply = self.command(start)
            if not reply.startswith("OK"):
                log.warning("SeedLink %s:%d refused %r for %s.%s: %s",
                            *(self.address + (start, net, sta, reply)))
                refused.append((net, sta))
        self.sock.sendall(b"END\r\n")
        return refused

    def read(self, deadline):
        """The next packet (see class docs) or None at `deadline` (monotonic;
        a deadline in the past returns only what is already buffered)."""
        buf = self.buf
        while True:
            if buf[:2] == b"SL":
                if len(buf) >= PACKET:
                    head = bytes(buf[2:8])
                    record = bytes(buf[8:PACKET])
                    del buf[:PACKET]
                    if head[:4] == b"INFO":
                        continue
                    try:
                        return "data", int(head, 16), record
                    except ValueError:
                        raise SeedLinkError("bad packet header %r" % head) from None
            elif buf[:3] == b"END":
                del buf[:3]
                return "end", None, None
            elif buf[:5] == b"ERROR":
                raise SeedLinkError("server error: %s" % bytes(buf[:80]).decode("latin-1"))
            elif len(buf) >= 5 or (buf and buf[:1] not in (b"S", b"E")):
                raise SeedLinkError("not a SeedLink packet: %r" % bytes(buf[:16]))
            if not self._fill(deadline):
                return None


def _clusters(windows, join_ns):
    """Merge (t0, t1, (loc, cha)) windows of one station whose spans are closer
    than join_ns; returns [(t0, t1, {(loc, cha)})]."""
    out = []
    for t0, t1, sid in sorted(windows):
        if out and t0 - out[-1][1] <= join_ns:
            last = out[-1]
            out[-1] = (last[0], max(last[1], t1), last[2] | {sid})
        else:
            out.append((t0, t1, {sid}))
    return out


class SeedLinkDialup:
    """Fetch windows from a SeedLink 3 server with ``TIME begin end`` (see
    module docs).  ``fetch(requests)`` takes ``[(net, sta, loc, cha, t0,
    t1)]`` (ns) and returns the data records (``Rec``) received."""

    def __init__(self, host, port, timeout=30.0, idle=2.0, join=600.0):
        self.host, self.port = host, port
        self.timeout = timeout          # whole exchange, seconds
        self.idle = idle                # no packet this long after the handshake: done
        self.join_ns = int(join * 1e9)  # windows of a station closer than this share a TIME

    def __repr__(self):
        return "slink://%s:%d" % (self.host, self.port)

    def fetch(self, requests):
        by_station = {}
        for net, sta, loc, cha, t0, t1 in requests:
            by_station.setdefault((net, sta), []).append((t0, t1, (loc, cha)))
        clusters = {key: _clusters(w, self.join_ns) for key, w in by_station.items()}
        out = []
        # one connection per round; round i takes the i-th cluster of each station
        for i in range(max((len(c) for c in clusters.values()), default=0)):
            batch = {key: c[i] for key, c in clusters.items() if i < len(c)}
            out.extend(self._fetch_batch(batch))
        return out

    def _fetch_batch(self, batch):
        stations, wanted = [], {}
        for (net, sta), (t0, t1, streams) in sorted(batch.items()):
            selectors = sorted({selector_for(loc, cha) for loc, cha in streams})
            stations.append((net, sta, selectors, "TIME %s %s" % (
                seedlink_time(t0), seedlink_time(t1 + 1, round_up=True))))
            for loc, cha in streams:
                wanted["%s.%s.%s.%s" % (net, sta, loc, cha)] = t1
        out = []
        reached = set()
        deadline = time.monotonic() + self.timeout
        with SeedLinkConnection(self.host, self.port, timeout=min(self.timeout, 10.0)) as conn:
            conn.subscribe(stations)
            while len(reached) < len(wanted):
                now = time.monotonic()
                if now >= deadline:
                    log.info("%r: timeout after %g s, keeping what arrived", self, self.timeout)
                    break
                try:
                    item = conn.read(min(deadline, now + self.idle))
                except EOFError:
                    break
                except OSError as exc:      # includes SeedLinkError: keep what arrived
                    log.warning("%r: %s", self, exc)
                    break
                if item is None or item[0] == "end":
                    break
                for rec in split_records(item[2]):
                    end = wanted.get(rec.stream)
                    if end is None:
                        continue        # another location than asked for
                    out.append(rec)
                    if rec.end_ns + rec.dt_ns >= end:
                        reached.add(rec.stream)
        return out
