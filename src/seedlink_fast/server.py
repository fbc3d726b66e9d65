"""The SeedLink server: stations and their buffers, plugins feeding the
stream processor, and the listening socket.

One event loop (uvloop when importable) runs everything.  Plugin bytes go
through the stream processor; its records are appended to the station
buffers (disk first, then memory) and go to the clients waiting on that
station in the same callback: written at once to a real-time client that
is at the newest record, through its pump otherwise.  Records are framed
once (``SL`` header + record) and the same bytes go to every client.

Order on the real-time path, and why: the record is written to its segment
file before any client can see it (a client never holds a sequence number
that a crash could hand out again, see buffer.py), then framed and sent;
the stream index and other bookkeeping come after the sends.  Between
records the process sleeps, so this path runs with cold caches: every
Python frame and object on it costs microseconds, which is why it is kept
short.
"""
import asyncio
import errno
import fcntl
import logging
import os
import signal
import time
from bisect import bisect_right

from . import info as infodoc
from ._ext.packets import frame_records
from .records import location_channel
from .buffer import StationBuffer
from .inifile import parse_ip_acl
from .buffer import SEQ_MOD
from .info import SOFTWARE
from .session import SeedLinkProtocol, SessionLimits
from .selectors import station_pattern_matches
from .streamproc import StreamProcessor

log = logging.getLogger("seedlink_fast.server")



def _ip_int(ip):
    try:
        a, b, c, d = (int(x) for x in ip.split("."))
        return (a << 24) | (b << 16) | (c << 8) | d
    except ValueError:
        return None


class IPACL:
    """SeisComP's IP access list: empty means everyone."""

    def __init__(self, entries):
        self.rules = []
        for entry in entries or []:
            for item in entry.replace(",", " ").split():
                self.rules.append(parse_ip_acl(item))

    def allows(self, ip):
        if not self.rules:
            return True
        addr = _ip_int(ip)
        if addr is None:
            return False
        return any((addr ^ rule_ip) & mask == 0 for rule_ip, mask in self.rules)


def _keys(data, kinds):
    """Stream keys (location, channel, type) of framed packets; None for a
    record SeisComP never delivers."""
    keys = []
    for i, kind in enumerate(kinds):
        if kind == 0:
            keys.append(None)
        else:
            keys.append(location_channel(data, i * 520 + 8) + (chr(kind),))
    return keys


class PacketBlock:
    """Consecutive records framed once (``SL`` header + record, in C) and
    joined: what every client at these positions is sent.  Stream keys are
    worked out only when a client with selectors or a window asks."""

    __slots__ = ("start", "count", "data", "kinds", "all_deliverable", "_keys")

    def __init__(self, start, records):
        self.start = start
        self.count = len(records)
        self.data, self.kinds = frame_records(start, records)
        self.all_deliverable = self.kinds.find(b"\0") < 0
        self._keys = None

    @property
    def keys(self):
        if self._keys is None:
            self._keys = _keys(self.data, self.kinds)
        return self._keys


class Station:
    """A station: its buffer, the framed packets clients share, and the
    clients waiting for new records."""

    BLOCK = 256                  # records per shared framed block
    CACHED_BLOCKS = 64           # blocks kept (about 8.5 MB)

    def __init__(self, config, filebase, min_ring=0):
        self.config = config
        self.key = config.key
        self.name = config.name
        self.network = config.network
        self.description = config.description
        self.access = IPACL(config.access)
        self.buffer = StationBuffer(config, filebase, min_ring=min_ring)
        self.waiters = set()
        self._blocks = {}            # block number -> PacketBlock (complete blocks only)
        # the newest records as appended, each append framed once: every
        # PacketBlock that reaches into the incomplete newest block
        self._tail = []
        self._tail_starts = []
        self._tail_end = 0

    def open(self):
        self.buffer.open()
        self._reset_tail()

    def _reset_tail(self):
        nxt = self.buffer.next_position
        self._tail, self._tail_starts, self._tail_end = [], [], nxt
        start = max(nxt - nxt % self.BLOCK, self.buffer.oldest_position)
        if start < nxt:
            records = self.buffer.read_range(start, nxt - start)
            if len(records) == nxt - start:     # else a hole: block() has nothing there
                self._tail = [PacketBlock(start, records)]
                self._tail_starts = [start]

    def _extend_tail(self, first, records):
        """The PacketBlock of records just stored at first (None if the tail
        had to be rebuilt).  PacketBlocks that lie wholly in complete
        BLOCK-record blocks leave the tail (block() rebuilds those)."""
        if first != self._tail_end:
            self._reset_tail()
            return None
        blk = PacketBlock(first, records)
        self._tail.append(blk)
        self._tail_starts.append(first)
        self._tail_end = end = first + blk.count
        boundary = end - end % self.BLOCK
        if end == boundary:                 # the newest block is complete
            self._tail, self._tail_starts = [], []
        elif first < boundary:              # a block was completed
            drop = bisect_right(self._tail_starts, boundary) - 1
            del self._tail[:drop]
            del self._tail_starts[:drop]
        return blk

    @property
    def next_position(self):
        return self.buffer.next_position

    @property
    def oldest_position(self):
        return self.buffer.oldest_position

    def append_many(self, records):
        """Store records (on disk before any client sees them), hand them to
        the waiting clients, then update the stream index: only INFO and
        time windows read it, so it need not delay the clients."""
        if not records:
            return self.buffer.next_position
        first = self.buffer.append_many(records, defer_index=True)
        try:
            blk = self._extend_tail(first, records)
            for client in list(self.waiters):
                client.deliver(self.key, blk)
        finally:
            self.buffer.index_pending()
        return first

    def block(self, position):
        """The PacketBlock holding position, or None when position is not
        readable (a hole, gone, or not stored yet)."""
        if self._tail_starts and position >= self._tail_starts[0]:
            if position >= self._tail_end:
                return None
            return self._tail[bisect_right(self._tail_starts, position) - 1]
        number = position // self.BLOCK
        blk = self._blocks.get(number)
        if blk is not None and blk.start <= position:
            return blk
        end = (number + 1) * self.BLOCK
        if end > self.buffer.next_position:
            return None
        # the block's first records may be gone already: start where we can
        start = max(number * self.BLOCK, self.buffer.oldest_position, position)
        records = self.buffer.read_range(start, end - start)
        if len(records) != end - start:
            return None                     # a hole: the caller resumes past it
        blk = PacketBlock(start, records)
        if len(self._blocks) >= self.CACHED_BLOCKS:
            self._blocks.pop(next(iter(self._blocks)))      # oldest inserted
        self._blocks[number] = blk
        return blk

    def position_for_time(self, begin_us, sub):
        return self.buffer.position_for_time(begin_us, sub.selectors.matches)

    def has_stream_reaching(self, end_us, sub):
        """False when the window ends before every matching indexed stream."""
        return self.buffer.time_cmp(end_us, sub.selectors.matches) != -1


class Server:
    """Everything one ``seedlink-fast serve`` runs."""

    def __init__(self, config, *, bind="0.0.0.0", port=None, filebase=None,
                 limits=None, hello_capabilities=True, flush_on_shutdown=True,
                 raw_port=None, http_port=None):
        g = config.globals
        self.config = config
        self.bind = bind
        self.port = g.port if port is None else port
        self.raw_port = g.raw_ingest_port if raw_port is None else raw_port
        self.http_port = g.http_port if http_port is None else http_port
        self.http = None              # the FDSN dataselect server (fdsnws.py), if enabled
        self.filebase = filebase or g.filebase
        self.organization = g.organization
        self.network = g.network
        self.request_log = g.request_log
        self.seq_gap_limit = g.seq_gap_limit
        self.bytespersec = g.bytespersec
        self.limits = limits or SessionLimits()
        self.hello_capabilities = hello_capabilities
        self.trusted = IPACL(g.trusted)
        self.capabilities = infodoc.CapabilityConfig(
            info=g.info, info_trusted=g.info_trusted, window_extraction=g.window_extraction,
            window_extraction_trusted=g.window_extraction_trusted, websocket=g.websocket,
            websocket_trusted=g.websocket_trusted)
        self.started_us = int(time.time() * 1e6)
        self.clients = set()
        self.per_ip = {}
        self.processor = StreamProcessor(config, flush_on_shutdown=flush_on_shutdown)
        self.stations = []
        for st in config.stations:
            nstreams = 0
            if st.proc and st.proc in self.processor.procs:
                nstreams = self.processor.procs[st.proc].stream_count()
            self.stations.append(Station(st, self.filebase, min_ring=3 * nstreams))
        self.by_key = {s.key: s for s in self.stations}
        self._outputs = [(out.records, self.by_key[key])
                         for key, out in self.processor.stations.items() if key in self.by_key]
        self.feeds = self._raw_feeds()
        self.push_sessions = set()
        self.pull_sources = []
        self.raw_server = None
        self._store_scheduled = False
        self._raw_timer = None
        self.plugins = []
        self.server = None
        self.lock_fd = None
        self._stopping = None
        self._housekeeping = None

    # -- policy ----------------------------------------------------------------------

    def client_class(self, ip):
        """A client's class (trusted, info level, window extraction,
        WebSocket), fixed at accept time by SeisComP's rules."""
        return self.capabilities.client(self.trusted.allows(ip), ip)

    def admit(self, client):
        g = self.config.globals
        ip = client.peer[0]
        if g.connections and len(self.clients) >= g.connections:
            log.warning("%s: too many connections", ip)
            return False
        if g.connections_per_ip and self.per_ip.get(ip, 0) >= g.connections_per_ip:
            log.warning("%s: too many connections from this address", ip)
            return False
        self.clients.add(client)
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return True

    def forget(self, client):
        if client in self.clients:
            self.clients.discard(client)
            ip = client.peer[0]
            self.per_ip[ip] -= 1
            if not self.per_ip[ip]:
                del self.per_ip[ip]

    def default_station(self):
        return self.stations[0] if self.stations else None

    def find_stations(self, sta, net, ip):
        """Accessible stations matching STATION sta net (wildcards ? and *)."""
        wild = any(c in sta + net for c in "?*")
        found = []
        for st in self.stations:
            if wild:
                if not (station_pattern_matches(sta, st.name) and
                        station_pattern_matches(net, st.network)):
                    continue
            elif st.name.upper() != sta.upper() or st.network.upper() != net.upper():
                continue
            if not st.access.allows(ip):
                log.info("%s: access violation on %s", ip, st.key)
                continue
            found.append(st)
        return found

    def start_position(self, station, seq, peer):
        """Buffer position for DATA/FETCH [seq|ALL] (docs §2.6)."""
        if seq is None:
            return station.next_position
        if seq == "ALL":
            return station.oldest_position
        position = station.buffer.position_of_seq(seq)
        if position is not None:
            return position
        nxt = station.next_position
        if seq == nxt % SEQ_MOD:
            return nxt
        oldest = station.oldest_position
        log.info("%s:%d : %s packet %06X not found", peer[0], peer[1], station.key, seq)
        if (oldest % SEQ_MOD - seq) % SEQ_MOD > self.seq_gap_limit or oldest >= nxt:
            log.info("%s:%d : resuming transmission from the next packet", peer[0], peer[1])
            return nxt
        return oldest

    # -- INFO and CAT ------------------------------------------------------------------

    def cat_response(self, ip):
        return infodoc.cat_response([s for s in self.stations if s.access.allows(ip)])

    def cat_chunks(self, ip):
        return infodoc.cat_chunks([s for s in self.stations if s.access.allows(ip)])

    def info_response(self, level, client):
        """The SLINFO packets answering INFO level for a client."""
        ctx = infodoc.InfoContext(
            server=infodoc.ServerInfo(SOFTWARE, self.organization, self.started_us),
            stations=[self._info_station(st) for st in self.stations],
            capabilities=self.capabilities)
        who = self.capabilities.client(client.trusted, client.peer[0])
        return b"".join(infodoc.info_response(level, ctx, who, now_us=int(time.time() * 1e6)))

    def _info_station(self, st):
        nxt = st.next_position
        return infodoc.InfoStation(
            name=st.name, network=st.network, description=st.description,
            begin_seq=st.buffer.begin_seq, end_seq=nxt % SEQ_MOD,
            stream_check=st.config.stream_check,
            streams=st.buffer.streams if st.config.stream_check else (),
            connections=[self._info_connection(c, c.subs[st.key]) for c in self.clients
                         if st.key in c.subs],
            access=st.access.allows)

    @staticmethod
    def _info_connection(client, sub):
        window = None
        if sub.window_begin is not None:
            window = (sub.window_begin, sub.window_end)
        current = None if sub.cursor is None else sub.cursor % SEQ_MOD
        return infodoc.InfoConnection(
            host=client.peer[0], port=client.peer[1], ctime_us=client.ctime_us,
            begin_seq=sub.begin_seq, current_seq=current, sequence_gaps=sub.sequence_gaps,
            txcount=sub.txcount, begin_seq_valid=sub.begin_seq_valid, realtime=sub.realtime,
            end_of_data=sub.end_of_data, window=window, selectors=sub.selectors)

    # -- raw ingest ----------------------------------------------------------------------

    def _raw_feeds(self):
        from .raw.feed import StationFeed

        feeds = {}
        for st in self.stations:
            if st.config.raw_channels:
                feeds[st.key] = StationFeed(self, st)
        return feeds

    def push_feed(self, name):
        """The StationFeed a device may push to as NET.STA, or None."""
        net, _, sta = name.partition(".")
        for feed in self.feeds.values():
            st = feed.station
            if st.network == net and st.name == sta and not feed.config.raw_source:
                return feed
        return None

    def schedule_store(self):
        """Store new records once per loop turn, however many packets came."""
        if not self._store_scheduled:
            self._store_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_store)

    def _scheduled_store(self):
        self._store_scheduled = False
        try:
            self.store_pending()
        except OSError as exc:
            log.error("cannot store records: %s", exc)

    async def _start_raw(self):
        from .raw.ingest import PushSession
        from .raw.pull import PullSource

        loop = asyncio.get_running_loop()
        if any(not f.config.raw_source for f in self.feeds.values()):
            self.raw_server = await loop.create_server(lambda: PushSession(self), self.bind,
                                                       self.raw_port, reuse_address=True)
            self.raw_port = self.raw_server.sockets[0].getsockname()[1]
            log.info("raw ingest port %s:%d", self.bind, self.raw_port)
        for feed in self.feeds.values():
            if feed.config.raw_source:
                source = PullSource(self, feed)
                source.start()
                self.pull_sources.append(source)
        if self.feeds:
            # idle flushes checked often enough to honour short raw_idle_flush
            tick = min([0.5] + [f.config.raw_idle_flush / 4 for f in self.feeds.values()
                                if f.config.raw_idle_flush > 0])
            self._raw_timer = loop.call_later(tick, self._raw_tick, max(tick, 0.01))

    def _raw_tick(self, tick):
        self._raw_idle(time.monotonic())
        self._raw_timer = asyncio.get_running_loop().call_later(tick, self._raw_tick, tick)

    def _raw_idle(self, now):
        """Close partial records of raw channels that went quiet."""
        for feed in self.feeds.values():
            if feed.flush_idle(now, feed.config.raw_idle_flush):
                self.store_pending()
                if feed.session is not None:
                    feed.session.send_acks()

    async def _stop_raw(self):
        if self._raw_timer is not None:
            self._raw_timer.cancel()
        if self.raw_server is not None:
            self.raw_server.close()
        for session in list(self.push_sessions):
            if session.transport is not None:
                session.transport.close()
        await asyncio.gather(*(source.stop() for source in self.pull_sources))

    # -- ingest ------------------------------------------------------------------------

    def store_pending(self):
        # the processor's output lists, taken directly (no drain() dict):
        # this runs before every real-time delivery
        for pending, station in self._outputs:
            if pending:
                records = pending[:]
                del pending[:]             # the kernels hold this very list
                station.append_many(records)

    # -- lifecycle -----------------------------------------------------------------------

    def _lock(self):
        path = self.config.globals.lockfile
        if not path:
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeError("already running (lockfile %s)" % path) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self.lock_fd = fd

    async def start(self):
        os.makedirs(self.filebase, exist_ok=True)
        self._lock()
        for st in self.stations:
            st.open()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SeedLinkProtocol(self), self.bind,
                                               self.port, reuse_address=True, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        self._housekeeping = loop.call_later(1.0, self._check_clients)
        if self.http_port:
            from .fdsnws import DataselectServer

            self.http = DataselectServer(self)
            await self.http.start(self.bind, self.http_port)
            log.info("FDSN dataselect on %s:%d", self.bind, self.http.port)
        await self._start_raw()
        for pconf in self.config.plugins:
            self.plugins.append(self._make_plugin(pconf))
        for plugin in self.plugins:
            await plugin.start()
        log.info("%s started, listening on %s:%d", SOFTWARE, self.bind, self.port)

    def _check_clients(self):
        """Once a second: close clients stuck in an incomplete command line
        (slow loris) or idle without streaming for too long."""
        now = time.monotonic()
        limits = self.limits
        for client in list(self.clients):
            if client.closed or client.transport is None:
                continue
            if limits.line_timeout and client.partial_since is not None and \
                    now - client.partial_since > limits.line_timeout:
                log.info("%s:%d : incomplete command for %d s, closing", client.peer[0],
                         client.peer[1], limits.line_timeout)
                client.transport.close()
            elif limits.idle_timeout and not client.streaming and \
                    now - client.last_activity > limits.idle_timeout:
                log.info("%s:%d : idle for %d s, closing", client.peer[0], client.peer[1],
                         limits.idle_timeout)
                client.transport.close()
        self._housekeeping = asyncio.get_running_loop().call_later(1.0, self._check_clients)

    def _make_plugin(self, pconf):
        """A supervised plugin whose bytes run through its own packet engine;
        every (re)start gets a fresh engine, so a partial packet or a protocol
        error of one run never leaks into the next."""
        from .plugins import PluginProcess

        state = {"engine": None, "dead": False}

        def on_start():
            state["engine"] = self.processor.new_engine(pconf)
            state["dead"] = False

        def on_data(data):
            # plugin bytes -> stream processor -> station buffers -> clients
            # (one Python frame per step counts: this is the latency path)
            engine = state["engine"]
            if state["dead"] or engine is None:
                return
            error = None
            try:
                engine.feed(data)
            except Exception as exc:      # a protocol error ends this plugin's stream
                error = exc
            try:
                self.store_pending()
            except OSError as exc:        # disk trouble: logged, the plugin is stopped
                log.error("cannot store records: %s", exc)
                error = error or exc
            if error is not None:
                state["dead"] = True
                log.error("%s: %s", pconf.name, error)
                plugin.protocol_error(str(error))

        plugin = PluginProcess(pconf, on_data, on_start=on_start)
        return plugin

    def install_signal_handlers(self):
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.restart_plugins)

    def restart_plugins(self):
        log.info("SIGHUP: restarting plugins")
        for plugin in self.plugins:
            plugin.restart()

    async def serve_forever(self):
        self.install_signal_handlers()
        await self._stopping.wait()
        await self.stop()

    async def stop(self):
        log.info("shutting down")
        if self.http is not None:
            self.http.close()
        # all plugins get SIGTERM at once, as in SeisComP
        await asyncio.gather(*(plugin.stop() for plugin in self.plugins))
        await self._stop_raw()
        self.processor.shutdown()
        self.store_pending()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self.server is not None:
            self.server.close()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.close()
        for st in self.stations:
            st.buffer.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
