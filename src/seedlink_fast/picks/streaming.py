"""The streaming client: keep a bounded buffer of the real-time SeedLink
streams that picks need and finish each pick as soon as its window is in.

* Subscriptions follow the picks: the first pick on a station/location/band
  subscribes it (``SELECT LLBB?.D``, every component of the band, so the
  Z/N/E vs Z/1/2 choice can be made from what arrives; with an inventory
  the exact channels).  A changed subscription reconnects (after a short
  pause that collects a burst of picks); stations already streaming resume
  with ``DATA <next seq>``, new or changed ones start with ``TIME <now -
  buffer_length>`` (backfill, then real time).  Disconnects reconnect with
  back-off (1 s doubling to 30 s), resuming the same way.
* The buffer keeps per stream the records of the last ``buffer_length``
  seconds (by the stream's own newest data time, so a stalled stream does
  not make the others grow) and at most ``buffer_bytes`` in all (the
  oldest records of the biggest stream go first).  Records are unique by
  (stream, start time): re-sent and backfilled records are not doubled.
* A new pick takes the buffered records of its window at once; records
  arriving later are added to every pending pick they overlap.  The pick
  is complete when every component covers the window (same rules as the
  polling client).
* With an ``archive`` (FDSN or SDS URL): a pick whose window starts
  before ``now - buffer_length`` is fetched from it at once, and a pick
  still incomplete ``archive_delay`` seconds after its window end gets its
  missing pieces from it (again every ``archive_delay`` seconds).  Fetches
  run in a worker thread; the streaming loop never waits for them.
"""
import concurrent.futures
import logging
import queue
import select
import socket
import time

from .client import PickClient
from .model import NS, seedlink_time
from .recordstream import open_archive, parse_url
from .seedlink import SeedLinkConnection, SeedLinkError, selector_for
from .window import RecordSet, split_records

__all__ = ["StreamingClient"]

log = logging.getLogger("seedlink_fast.picks")

_RESUBSCRIBE_PAUSE = 0.3    # seconds to collect a burst of picks before reconnecting
_TRIM_INTERVAL = 5.0
_BACKOFF_MIN, _BACKOFF_MAX = 1.0, 30.0


class StreamingClient(PickClient):
    """``StreamingClient(data, archive=None, buffer_length=3600,
    buffer_bytes=512 MiB, archive_delay=30, timeout=30, **common)``: `data`
    is a ``slink://`` URL; `archive` a URL or an object with ``fetch``.
    The other keywords are PickClient's."""

    kind = "streaming"

    def __init__(self, data, *, archive=None, buffer_length=3600.0, buffer_bytes=512 << 20,
                 archive_delay=30.0, timeout=30.0, **common):
        super().__init__(**common)
        spec = parse_url(data)
        if spec.kind != "slink":
            raise ValueError("the streaming client needs a slink:// URL, not %r" % data)
        self.host, self.port = spec.host, spec.port
        self.timeout = spec.option("timeout", timeout)
        self.archive = open_archive(archive, timeout=timeout) if isinstance(archive, str) \
            else archive
        self.buffer_length_ns = int(buffer_length * NS)
        self.buffer_length = float(buffer_length)
        self.buffer_bytes = int(buffer_bytes)
        self.archive_delay = float(archive_delay)
        self.buffer = {}            # stream id -> RecordSet
        self.watch = {}             # stream id -> {publicID: Request}
        self.selectors = {}         # (net, sta) -> set of selectors wanted
        self.subscribed = {}        # (net, sta) -> selectors of the current connection
        self.seq = {}               # (net, sta) -> last sequence number received
        self.conn = None
        self._resubscribe_at = None
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN
        self._last_trim = 0.0
        self._executor = None
        self._fetched = queue.Queue()    # (request, records or exception) from workers
        self.nbytes = 0
        self.npackets = 0
        self._wake_r = self._wake_w = None     # socket pair: wakes select() in _wait

    def describe(self):
        return "slink://%s:%d" % (self.host, self.port)

    # -- pick side ------------------------------------------------------------------------

    def _selector(self, sid):
        net, sta, loc, cha = sid.split(".")
        if self.resolver.epochs is None:
            return selector_for(loc, cha[:2] + "?")     # the whole band: Z/N/E and Z/1/2
        return selector_for(loc, cha)

    def _on_request(self, req):
        for sid in req.streams:
            self.watch.setdefault(sid, {})[req.id] = req
            key = tuple(sid.split(".")[:2])
            wanted = self.selectors.setdefault(key, set())
            sel = self._selector(sid)
            if sel not in wanted:
                wanted.add(sel)
                if self._resubscribe_at is None:
                    self._resubscribe_at = time.monotonic() + _RESUBSCRIBE_PAUSE
            buffered = self.buffer.get(sid)
            if buffered is not None:
                for rec in buffered.overlapping(req.ws, req.we):
                    req.stores[sid].add(rec)
        if req.ws < (time.time() - self.buffer_length) * NS:
            if self.archive is not None:
                self._archive_fetch(req, whole=True)
            else:
                log.info("pick %s: window starts before the %g s buffer and there is no "
                         "archive; it may expire", req.id, self.buffer_length)
        self._try(req)

    def _forget(self, req):
        for sid in req.stores:      # every stream it ever watched, also before a switch
            watchers = self.watch.get(sid)
            if watchers is not None:
                watchers.pop(req.id, None)
                if not watchers:
                    del self.watch[sid]

    def _on_switch(self, req):
        self._forget(req)
        for sid in req.streams:
            self.watch.setdefault(sid, {})[req.id] = req

    def _reached(self, req, sid):
        """The newest sample time seen for a stream: in the pick's records
        or in the buffer (a record after the window end counts too)."""
        ends = [s.latest_end for s in (req.stores[sid], self.buffer.get(sid))
                if s is not None and s.latest_end is not None]
        return max(ends) if ends else None

    def _try(self, req):
        """Check `req` once every component has data within a second of its
        window end (a component without any data does not hold the check up
        when the alternative components might apply)."""
        for sid in req.components:
            end = self._reached(req, sid)
            if end is None and req.alternates:
                continue
            if end is None or end < req.we - NS:
                return False
        return self.check(req)

    # -- archive ------------------------------------------------------------------------

    def _archive_fetch(self, req, whole=False):
        if req.fetching:
            return
        wanted = ([tuple(s.split(".")) + (req.ws, req.we) for s in req.streams] if whole
                  else req.missing(self.tolerance))
        if not wanted:
            return
        req.fetching = True
        req.last_attempt = time.time()
        req.attempts += 1
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="pick-archive")
        future = self._executor.submit(self.archive.fetch, wanted)
        future.add_done_callback(lambda f, r=req: self._archived(r, f))

    def _archived(self, req, future):
        # worker thread: only hand over
        try:
            result = future.result()
        except Exception as exc:
            result = exc
        self._fetched.put((req, result))
        self.notify()

    def _drain_archive(self):
        while True:
            try:
                req, result = self._fetched.get_nowait()
            except queue.Empty:
                return
            req.fetching = False
            if isinstance(result, Exception):
                log.warning("%r: archive fetch for pick %s failed: %s", self.archive, req.id,
                            result)
                self.count("fetch_errors")
                continue
            self.count("fetches")
            if req.id not in self.pending or self.pending[req.id] is not req:
                continue
            for rec in result:
                req.add(rec)
            self._try(req)

    def _archive_due(self, now):
        if self.archive is None:
            return
        for req in list(self.pending.values()):
            if req.fetching or now < req.we / NS + self.archive_delay:
                continue
            if req.last_attempt is None or now - req.last_attempt >= self.archive_delay:
                self._archive_fetch(req)

    # -- SeedLink side --------------------------------------------------------------------

    def _connect(self):
        stations = []
        begin = time.time() - self.buffer_length
        for key in sorted(self.selectors):
            net, sta = key
            selectors = sorted(self.selectors[key])
            if key in self.seq and self.subscribed.get(key) == set(selectors):
                start = "DATA %06X" % ((self.seq[key] + 1) & 0xFFFFFF)
            else:
                start = "TIME %s" % seedlink_time(int(begin * NS))
                self.seq.pop(key, None)
            stations.append((net, sta, selectors, start))
        conn = SeedLinkConnection(self.host, self.port, timeout=min(self.timeout, 10.0))
        try:
            refused = conn.subscribe(stations)
        except (OSError, EOFError):
            conn.close()
            raise
        self.subscribed = {(n, s): set(sel) for n, s, sel, _ in stations
                           if (n, s) not in refused}
        log.info("SeedLink %s:%d: streaming %d station(s)", self.host, self.port,
                 len(self.subscribed))
        self.conn = conn

    def _ensure_connection(self):
        mono = time.monotonic()
        if self._resubscribe_at is not None and mono >= self._resubscribe_at:
            self._resubscribe_at = None
            self._disconnect()
            self._retry_at = 0.0
        if self.conn is not None or not self.selectors or mono < self._retry_at:
            return
        try:
            self._connect()
        except (OSError, EOFError) as exc:
            log.warning("SeedLink %s:%d: %s; retrying in %g s", self.host, self.port, exc,
                        self._backoff)
            self._retry_at = mono + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)

    def _disconnect(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def notify(self):
        super().notify()
        wake = self._wake_w
        if wake is not None:
            try:
                wake.send(b"!")
            except OSError:
                pass        # full (a wake-up is pending) or closed

    def _wait(self, timeout):
        """Read packets for up to `timeout` s; return early when notified
        (new picks, archive results, stop)."""
        deadline = time.monotonic() + timeout
        while not self._wake.is_set():
            try:
                item = self.conn.read(0) if self.conn is not None else None
                if item is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    waiting = [self._wake_r] + ([self.conn.sock] if self.conn else [])
                    ready = select.select(waiting, [], [], remaining)[0]
                    if self.conn is not None and self.conn.sock in ready:
                        self.conn.receive()
                    continue
            except (OSError, EOFError, SeedLinkError) as exc:
                log.warning("SeedLink %s:%d: %s; reconnecting in %g s", self.host, self.port,
                            exc, self._backoff)
                self._disconnect()
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
                return
            if item[0] == "end":
                log.warning("SeedLink %s:%d ended the stream; reconnecting", self.host,
                            self.port)
                self._disconnect()
                return
            self._backoff = _BACKOFF_MIN
            self._on_record(item[1], item[2])
        self._wake.clear()
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _on_record(self, seq, raw):
        self.npackets += 1
        for rec in split_records(raw):
            key = tuple(rec.stream.split(".")[:2])
            self.seq[key] = seq
            store = self.buffer.get(rec.stream)
            if store is None:
                store = self.buffer[rec.stream] = RecordSet(rec.stream)
            if not store.add(rec):
                continue
            self.nbytes += len(rec.raw)
            for req in list(self.watch.get(rec.stream, {}).values()):
                req.add(rec)
                if rec.end_ns + NS >= req.we:   # this stream has reached the window end
                    self._try(req)

    def _trim(self):
        for store in self.buffer.values():
            if store.latest_end is not None:
                self.nbytes -= store.drop_before(store.latest_end - self.buffer_length_ns)
        while self.nbytes > self.buffer_bytes:
            biggest = max(self.buffer.values(), key=lambda s: s.nbytes)
            freed = biggest.drop_oldest()
            if not freed:
                break
            self.nbytes -= freed

    # -- loop hooks -----------------------------------------------------------------------

    def _step(self, now):
        self._drain_archive()
        self._ensure_connection()
        self._archive_due(now)
        if time.monotonic() - self._last_trim >= _TRIM_INTERVAL:
            self._last_trim = time.monotonic()
            self._trim()
        return 0.2

    def _setup(self):
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def _teardown(self):
        self._disconnect()
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_r = self._wake_w = None
        wake_r.close()
        wake_w.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _status_extra(self):
        return ", %d streams buffered (%.1f MiB), %d packets, %s" % (
            len(self.buffer), self.nbytes / 2**20, self.npackets,
            "connected" if self.conn is not None else "not connected")
