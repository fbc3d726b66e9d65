"""The part both pick clients share: pick intake, pending requests, window
completion, expiry, output and the run loop.

Rules (docs/pick-clients.md has the long form):

* Window: ``[pick - before, pick + after]`` (defaults 120 s and 240 s).
* A pick is *finished* when its window is complete (``complete``) or when
  it expires (``expired``): ``expire`` seconds (default 1800) after the
  later of the moment the pick arrived and the window end (wall clock), so
  a real-time pick gets the same grace after its window closes as an old
  pick gets after its arrival.
* Duplicate publicIDs: a pick that differs from a *pending* one with its ID
  replaces it (new window and components; records already fetched for
  streams it keeps are reused); an identical one is ignored; any pick with
  the ID of a *finished* one is ignored (the last ``remember`` IDs are
  kept), so a completed window is never fetched twice.
* At most ``max_pending`` picks wait; one more gives up the one closest to
  its expiry (reported as expired, reason "too many pending picks").
* A bad pick (unparseable, missing fields) is logged and counted, never
  fatal; so is an exception in an ``on_window`` callback.
"""
import collections
import logging
import queue
import threading
import time

from .components import ComponentResolver
from .model import NS, Pick, PickError, PickFilter, format_time
from .parse import parse_json_line, pick_from_dict
from .results import ComponentResult, DirectoryOutput, WindowResult
from .window import RecordSet, assess, missing_intervals, trim

__all__ = ["PickClient", "Request"]

log = logging.getLogger("seedlink_fast.picks")


class Request:
    """A pending pick: its window, components and the records held so far."""

    def __init__(self, pick, before_ns, after_ns, components, alternates, received,
                 expire, stores=None):
        self.pick = pick
        self.ws = pick.time_ns - before_ns
        self.we = pick.time_ns + after_ns
        sid = "%s.%s.%s." % (pick.network, pick.station, pick.location)
        self.components = [sid + c for c in components]
        self.alternates = [sid + c for c in alternates] if alternates else None
        self.received = received
        self.deadline = max(received, self.we / NS) + expire
        self.stores = {}
        for s in self.streams:
            self.stores[s] = (stores or {}).get(s) or RecordSet(s)
        self.attempts = 0
        self.last_attempt = None        # wall clock of the last fetch
        self.fetching = False           # an archive fetch is in flight
        self.alternates_tried = False

    @property
    def id(self):
        return self.pick.public_id

    @property
    def streams(self):
        """Every stream whose records this request takes."""
        return self.components + [s for s in self.alternates or () if s not in self.components]

    def add(self, rec):
        """Keep `rec` if it is of one of our streams and overlaps the window."""
        store = self.stores.get(rec.stream)
        if store is None or rec.end_ns < self.ws or rec.start_ns > self.we:
            return False
        return store.add(rec)

    def coverage(self, tolerance):
        """{component: Coverage}."""
        return {sid: assess(self.stores[sid].overlapping(self.ws, self.we), self.ws, self.we,
                            tolerance)
                for sid in self.components}

    def missing(self, tolerance):
        """[(net, sta, loc, cha, t0, t1)] still to fetch."""
        out = []
        for sid, cov in self.coverage(tolerance).items():
            codes = tuple(sid.split("."))
            out.extend(codes + span for span in missing_intervals(cov, self.ws, self.we))
        return out

    def horizontals(self):
        """(first choice, alternative) horizontal streams, for the switch."""
        if not self.alternates:
            return [], []
        return ([s for s in self.components if s not in self.alternates],
                [s for s in self.alternates if s not in self.components])

    def switch_components(self):
        """Use the alternative components when the first choice's
        horizontals have no record at all but the alternative's have;
        returns whether it switched."""
        first, other = self.horizontals()
        if not other or any(len(self.stores[s]) for s in first):
            return False
        if not any(len(self.stores[s]) for s in other):
            return False
        log.info("pick %s: %s have no data but %s do: using those", self.id,
                 ",".join(first), ",".join(other))
        self.components, self.alternates = self.alternates, None
        return True


def _call(callback, result):
    try:
        callback(result)
    except Exception:   # a broken consumer must not stop the client
        log.exception("on_window callback %r failed for pick %s", callback, result.pick.public_id)


class PickClient:
    """Base of PollingClient and StreamingClient (see module docs).

    Feed picks with ``add_pick`` (thread-safe: a Pick, a dict in the JSON
    form or a JSON line) or ``add_source``; ``run()`` loops until
    ``stop()``, or -- with ``until_idle`` (default: when every source is
    finite) -- until the sources are exhausted and no pick is pending.
    """

    kind = "pick"

    def __init__(self, *, before=120.0, after=240.0, expire=1800.0, tolerance=1.5,
                 max_pending=1000, inventory=None, pick_filter=None, output=None,
                 on_window=None, status_interval=60.0, remember=100_000):
        if before < 0 or after < 0 or before + after <= 0:
            raise ValueError("the window needs before + after > 0")
        if tolerance < 1.0:
            raise ValueError("tolerance must be at least 1 sample")
        self.before, self.after = float(before), float(after)
        self.before_ns, self.after_ns = int(before * NS), int(after * NS)
        self.expire = float(expire)
        self.tolerance = float(tolerance)
        self.max_pending = int(max_pending)
        self.resolver = (inventory if isinstance(inventory, ComponentResolver)
                         else ComponentResolver(inventory))
        self.pick_filter = pick_filter or PickFilter()
        self.callbacks = []
        if output is not None:
            self.callbacks.append(output if callable(output) else DirectoryOutput(output))
        if on_window is not None:
            self.callbacks.append(on_window)
        self.status_interval = status_interval
        self.remember = remember
        self.sources = []
        self.pending = collections.OrderedDict()     # publicID -> Request
        self.finished = collections.OrderedDict()    # publicID -> status
        self.report = collections.deque(maxlen=remember)   # (id, status, missing)
        self.counts = collections.Counter()
        self._counts_lock = threading.Lock()
        self._queue = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_status = None
        self.started = None

    # -- intake (any thread) ------------------------------------------------------------

    def add_pick(self, pick):
        """Queue a pick (Pick, dict or JSON line); bad ones are logged and
        counted.  Returns the number of picks queued."""
        if isinstance(pick, Pick):
            picks = [pick]
        else:
            try:
                if isinstance(pick, dict):
                    picks = [pick_from_dict(pick)]
                elif isinstance(pick, (str, bytes)):
                    text = pick.decode("utf-8", "replace") if isinstance(pick, bytes) else pick
                    picks, errors = parse_json_line(text)
                    for message in errors:
                        self.bad_pick(message)
                else:
                    raise PickError("not a pick: %r" % (pick,))
            except PickError as exc:
                self.bad_pick(str(exc))
                return 0
        for p in picks:
            self._queue.put(p)
        if picks:
            self.notify()
        return len(picks)

    def bad_pick(self, message):
        log.warning("skipping a bad pick: %s", message)
        self.count("bad")

    def count(self, what, n=1):
        with self._counts_lock:
            self.counts[what] += n

    def add_source(self, source):
        """Register a pick source (see ``sources``); started by run()."""
        self.sources.append(source)
        if self.started is not None:
            self._start_sources()

    def _start_sources(self):
        for source in self.sources:
            if source.client is None:
                source.start(self)

    def stop(self):
        """Make run() return (from any thread or a signal handler)."""
        self._stop.set()
        self.notify()

    def notify(self):
        """Wake the loop (any thread): picks or results are waiting."""
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------

    def run(self, until_idle=None):
        """Process picks until stop() (see class docs); returns the counts."""
        if until_idle is None:
            until_idle = bool(self.sources) and all(s.finite for s in self.sources)
        self.started = time.time()
        self._next_status = time.monotonic() + self.status_interval
        self._start_sources()
        try:
            self._setup()
            while not self._stop.is_set():
                sources_done = all(s.done for s in self.sources)
                self._drain()
                now = time.time()
                wait = min(self._step(now), 1.0)
                self._expire(time.time())
                self._status()
                if until_idle and sources_done and self._queue.empty() and not self.pending:
                    break
                self._wait(max(wait, 0.0))
        finally:
            for source in self.sources:
                source.stop()
            self._teardown()
        return dict(self.counts)

    def _wait(self, timeout):
        self._wake.wait(timeout)
        self._wake.clear()

    def _drain(self):
        while True:
            try:
                pick = self._queue.get_nowait()
            except queue.Empty:
                return
            self._accept(pick)

    def _accept(self, pick):
        reason = self.pick_filter.reason(pick)
        if reason:
            log.debug("pick %s not used: %s", pick.public_id, reason)
            self.count("filtered")
            return
        pid = pick.public_id
        if pid in self.finished:
            log.info("pick %s: already finished (%s), duplicate ignored", pid, self.finished[pid])
            self.count("duplicate")
            return
        old = self.pending.get(pid)
        if old is not None and old.pick == pick:
            self.count("duplicate")
            return
        comps, alts = self.resolver.resolve(pick.network, pick.station, pick.location,
                                            pick.channel, pick.time_ns)
        req = Request(pick, self.before_ns, self.after_ns, comps, alts, time.time(),
                      self.expire, stores=old.stores if old is not None else None)
        if old is not None:
            log.info("pick %s updated: window %s..%s", pid, format_time(req.ws),
                     format_time(req.we))
            self.count("updated")
            self._forget(old)
            del self.pending[pid]
        else:
            self.count("received")
            if len(self.pending) >= self.max_pending:
                oldest = min(self.pending.values(), key=lambda r: r.deadline)
                self._finish(oldest, "expired", "too many pending picks (max %d)"
                             % self.max_pending)
        self.pending[pid] = req
        log.debug("pick %s: %s window %s..%s", pid, ",".join(req.components),
                  format_time(req.ws), format_time(req.we))
        self._on_request(req)

    def _expire(self, now):
        for req in [r for r in self.pending.values() if r.deadline <= now]:
            self._finish(req, "expired", "no complete window %g s after %s" % (
                self.expire, "its end" if req.we / NS > req.received else "the pick arrived"))

    def check(self, req):
        """Finish `req` if its window is complete; returns whether it did."""
        if req.switch_components():
            self._on_switch(req)
        if all(c.complete for c in req.coverage(self.tolerance).values()):
            self._finish(req, "complete")
            return True
        return False

    def _finish(self, req, status, reason=None):
        components = {}
        for sid in req.components:
            recs = req.stores[sid].overlapping(req.ws, req.we)
            components[sid] = ComponentResult(
                sid, [r.raw for r in recs], assess(recs, req.ws, req.we, self.tolerance),
                trim(recs, req.ws, req.we, self.tolerance))
        result = WindowResult(req.pick, req.ws, req.we, status, components, reason=reason,
                              attempts=req.attempts, received=req.received,
                              source=self.describe(), before=self.before, after=self.after)
        self.pending.pop(req.id, None)
        self._forget(req)
        self.finished[req.id] = status
        while len(self.finished) > self.remember:
            self.finished.popitem(last=False)
        self.count(status)
        missing = result.missing()
        self.report.append((req.id, status, missing))
        if status == "complete":
            log.info("pick %s: window complete (%s)", req.id, ", ".join(components))
        else:
            log.warning("pick %s: %s, %s; missing: %s", req.id, status, reason,
                        "; ".join(missing) or "nothing")
        for callback in self.callbacks:
            _call(callback, result)
        return result

    def _status(self):
        if not self.status_interval or time.monotonic() < self._next_status:
            return
        self._next_status = time.monotonic() + self.status_interval
        log.info("%s", self.status_line())

    def status_line(self):
        c = self.counts
        return ("%s pick client: %d pending, %d complete, %d expired, %d bad, %d duplicate, "
                "%d filtered%s" % (self.kind, len(self.pending), c["complete"], c["expired"],
                                   c["bad"], c["duplicate"], c["filtered"], self._status_extra()))

    def pending_report(self):
        """One line per pending pick: ID and what it still misses."""
        lines = []
        for req in self.pending.values():
            cov = req.coverage(self.tolerance)
            what = []
            for sid, c in cov.items():
                if not c.has_data:
                    what.append("%s no data" % sid)
                elif not c.complete:
                    what.append("%s %d gap(s)" % (sid, len(c.gaps)))
            lines.append("%s %s..%s: %s" % (req.id, format_time(req.ws), format_time(req.we),
                                            "; ".join(what) or "complete, not yet checked"))
        return lines

    # -- hooks for the two clients --------------------------------------------------------

    def describe(self):
        return self.kind

    def _setup(self):
        pass

    def _teardown(self):
        pass

    def _step(self, now):
        """Do the client's work; return how long it may wait (s)."""
        return 1.0

    def _on_request(self, req):
        pass

    def _on_switch(self, req):
        pass

    def _forget(self, req):
        pass

    def _status_extra(self):
        return ""
