"""Pick sources: where picks come from.

=====================  =====================================================
``picks.xml``          an SCML (any 0.x) or QuakeML file, read once (finite)
``picks.jsonl``        a JSON-lines file, read once (finite)
a directory            watched: new and changed ``*.xml``, ``*.jsonl``,
                       ``*.json`` files are read (polling size and mtime)
``-``                  JSON lines on stdin (finite: ends at end of input)
``tcp://HOST:PORT``    the client listens; any number of senders (up to
                       ``max_connections``) write JSON lines
=====================  =====================================================

Each source runs in a daemon thread (a file is read at start) and hands
picks to ``client.add_pick``; bad picks are reported through
``client.bad_pick`` and skipped.  A JSON line holds one pick object or a
list of them::

    {"publicID": "Pick/1", "time": "2026-11-21T23:55:00.12Z",
     "waveformID": {"networkCode": "XX", "stationCode": "TEST",
                    "locationCode": "", "channelCode": "BHZ"},
     "phaseHint": "P", "evaluationMode": "automatic", "uncertainty": 0.05}

``waveformID`` may also be ``"XX.TEST..BHZ"``, and ``time`` SCML-JSON's
``{"value": ..., "uncertainty": ...}``.
"""
import collections
import logging
import os
import socket
import sys
import threading

from .parse import parse_file

__all__ = ["PickSource", "FileSource", "DirectorySource", "LineSource", "TcpSource",
           "open_pick_source"]

log = logging.getLogger("seedlink_fast.picks")

MAX_LINE = 1 << 20          # bytes; a longer JSON line is skipped
_SUFFIXES = (".xml", ".jsonl", ".json")


class PickSource:
    """Base: ``start(client)``, ``stop()``; ``finite`` sources set ``done``
    once every pick they will ever give has been handed over."""

    finite = False

    def __init__(self):
        self.done = False
        self.client = None
        self._stopped = threading.Event()
        self._thread = None

    def start(self, client):
        self.client = client
        self._thread = threading.Thread(target=self._guarded, name=type(self).__name__,
                                        daemon=True)
        self._thread.start()

    def _guarded(self):
        try:
            self.run()
        except Exception:       # a broken source must not take the client down
            log.exception("%r failed", self)
        finally:
            self.done = True
            if self.client is not None:
                self.client.notify()

    def run(self):
        raise NotImplementedError

    def stop(self):
        self._stopped.set()

    def _give(self, picks, errors, where):
        for message in errors:
            self.client.bad_pick("%s: %s" % (where, message))
        for pick in picks:
            self.client.add_pick(pick)


class FileSource(PickSource):
    """One SCML/QuakeML or JSON-lines file."""

    finite = True

    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def __repr__(self):
        return "FileSource(%r)" % self.path

    def run(self):
        try:
            picks, errors = parse_file(self.path)
        except OSError as exc:
            self.client.bad_pick("%s: %s" % (self.path, exc))
            return
        log.info("%s: %d pick(s)%s", self.path, len(picks),
                 ", %d bad" % len(errors) if errors else "")
        self._give(picks, errors, self.path)


class DirectorySource(PickSource):
    """Watch a directory (not recursive) for pick files.

    A file is read when its size and mtime were the same at two scans in a
    row (so half-written files are not read); a changed file is read again
    (updates of pending picks apply, picks already finished are ignored).
    JSON-lines files that only grew are read from where the last read
    stopped.  Names starting with ``.`` and other suffixes are ignored.  At
    most ``max_files`` files are remembered (the oldest are forgotten).
    """

    def __init__(self, path, interval=1.0, max_files=100_000):
        super().__init__()
        self.path = str(path)
        self.interval = interval
        self.max_files = max_files
        self.seen = collections.OrderedDict()   # name -> (mtime_ns, size, read offset)
        self.candidates = {}                    # name -> (mtime_ns, size) at the last scan

    def __repr__(self):
        return "DirectorySource(%r)" % self.path

    def scan(self):
        """One scan: read what is new, changed and settled."""
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            log.warning("%s: %s", self.path, exc)
            return
        candidates = {}
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if name.startswith(".") or not name.endswith(_SUFFIXES):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if not entry.is_file():
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            known = self.seen.get(name)
            if known is not None and known[:2] == stamp:
                continue
            if self.candidates.get(name) != stamp:
                candidates[name] = stamp        # changed since the last scan: wait
                continue
            self._read(name, stamp, known)
        self.candidates = candidates

    def _read(self, name, stamp, known):
        full = os.path.join(self.path, name)
        offset = 0
        if name.endswith(".jsonl") and known is not None and stamp[1] > known[1]:
            offset = known[2]
        try:
            if offset:
                with open(full, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(stamp[1] - offset)
                cut = data.rfind(b"\n") + 1
                offset += cut
                for line in data[:cut].splitlines():
                    self.client.add_pick(line)
            else:
                picks, errors = parse_file(full)
                self._give(picks, errors, full)
                if name.endswith(".jsonl"):
                    with open(full, "rb") as fh:
                        data = fh.read(stamp[1])
                    offset = data.rfind(b"\n") + 1
                log.info("%s: %d pick(s)%s", full, len(picks),
                         ", %d bad" % len(errors) if errors else "")
        except OSError as exc:
            log.warning("%s: %s", full, exc)
        self.seen[name] = stamp + (offset,)
        self.seen.move_to_end(name)
        while len(self.seen) > self.max_files:
            self.seen.popitem(last=False)

    def run(self):
        while not self._stopped.is_set():
            self.scan()
            self._stopped.wait(self.interval)


class LineSource(PickSource):
    """JSON lines from a binary file object (stdin by default); finite."""

    finite = True

    def __init__(self, stream=None, name="stdin"):
        super().__init__()
        self.stream = stream
        self.name = name

    def __repr__(self):
        return "LineSource(%s)" % self.name

    def run(self):
        stream = self.stream if self.stream is not None else sys.stdin.buffer
        _read_lines(stream, self.client, self.name, self._stopped)


def _read_lines(stream, client, where, stopped):
    number = 0
    while not stopped.is_set():
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            client.bad_pick("%s line %d: longer than %d bytes" % (where, number, MAX_LINE))
            while line and not line.endswith(b"\n"):    # skip the rest of it
                line = stream.readline(MAX_LINE + 1)
            continue
        client.add_pick(line)


class TcpSource(PickSource):
    """Listen on HOST:PORT for JSON lines (port 0: a free port, see
    ``port`` after start).  Senders connect, write lines and disconnect
    when they like; at most ``max_connections`` at once (more are closed
    at once)."""

    def __init__(self, host="127.0.0.1", port=0, max_connections=32):
        super().__init__()
        self.host = host
        self.max_connections = max_connections
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.port = self.sock.getsockname()[1]
        self._conns = set()
        self._lock = threading.Lock()

    def __repr__(self):
        return "TcpSource(tcp://%s:%d)" % (self.host, self.port)

    def run(self):
        log.info("listening for JSON-line picks on tcp://%s:%d", self.host, self.port)
        self.sock.settimeout(0.5)
        while not self._stopped.is_set():
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                if len(self._conns) >= self.max_connections:
                    log.warning("pick feed: refusing %s:%d, %d connections open",
                                peer[0], peer[1], len(self._conns))
                    conn.close()
                    continue
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True,
                             name="pick-feed").start()

    def _serve(self, conn, peer):
        where = "tcp %s:%d" % peer[:2]
        log.info("pick feed: %s connected", where)
        try:
            with conn, conn.makefile("rb") as stream:
                _read_lines(stream, self.client, where, self._stopped)
        except OSError as exc:
            log.info("pick feed: %s: %s", where, exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
        log.info("pick feed: %s disconnected", where)

    def stop(self):
        super().stop()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def open_pick_source(spec, interval=1.0):
    """A source for the command line's ``--picks`` (see module docs)."""
    spec = str(spec)
    if spec == "-":
        return LineSource()
    if spec.startswith("tcp://"):
        host, sep, port = spec[len("tcp://"):].rstrip("/").rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError("want tcp://HOST:PORT, not %r" % spec)
        return TcpSource(host.strip("[]") or "0.0.0.0", int(port))
    if os.path.isdir(spec):
        return DirectorySource(spec, interval=interval)
    if not os.path.exists(spec):
        raise ValueError("pick source %r: no such file or directory" % spec)
    return FileSource(spec)
