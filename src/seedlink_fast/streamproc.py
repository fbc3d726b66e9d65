"""The stream processor: plugin packets -> FIR trees -> records, per station.

This module decides (which tree serves which station and channel, what to
log, what the options mean); ``seedlink_fast._ext.sproc`` moves the samples.
Records are produced exactly as SeisComP's seedlink produces them, in the
same order per station, which is also their sequence order.

One deliberate difference: ``shutdown()`` flushes every encoder, so the
partial record of every stream is kept.  SeisComP loses them (it does not
flush station-level stream processors when it stops).  Pass
``flush_on_shutdown=False`` for SeisComP's behaviour.

Stations with ``backfill_buffer > 0`` hold back late data as SeisComP does
(``seedlink_fast.backfill``); at shutdown their held data is committed as
SeisComP commits it (plugin-level procs and miniSEED input), and, when
encoders are flushed at shutdown, also that of station-level procs, which
SeisComP leaves pending.
"""
import logging
import os

from ._ext import sproc as _kernel
from .backfill import MseedBackfill, RawBackfill
from .firfile import default_filters_path, load_filters
from .streamsxml import load_streams, resolve_proc

log = logging.getLogger("seedlink_fast.streamproc")

__all__ = ["StationOutput", "StreamProcessor", "build_tree_input"]


def _iso_us(sec, usec):
    import datetime

    stamp = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=sec, microseconds=usec)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")


class StationOutput:
    """Where one station's records go, in order.

    ``records`` is a plain list of 512-byte ``bytes``; the owner drains it
    (the server stores them, ``replay`` writes them to a file).
    """

    def __init__(self, config):
        self.config = config
        self.key = config.key
        self.name = config.name
        self.network = config.network
        self.records = []
        self.log_sequence = 0
        # miniSEED backfilling (None: records are stored as they come)
        self.mseed_backfill = (MseedBackfill(self, config.backfill_buffer)
                               if config.backfill_buffer > 0 else None)
        # what the packet engine calls per miniSEED packet: the record is
        # stored as it is, or held back to fill a gap when the station
        # backfills (a bound method, no Python frame: the latency path)
        self.mseed_sink = (self.records.append if self.mseed_backfill is None
                           else self.mseed_backfill.send)

    def log(self, sec, usec, text):
        """A LOG packet: one ASCII record timestamped with the packet time."""
        record = _kernel.write_log_record(self.network, self.name, sec * 1000000 + usec, text,
                                    self.log_sequence)
        self.log_sequence = (self.log_sequence + 1) % 1000000
        self.records.append(record)

    def time_gap(self, channel, gap_us, explicit):
        log.warning("%s : %s time gap %.6g seconds (%s)", self.key, channel, gap_us / 1e6,
                    "explicit" if explicit else "detected")


def build_tree_input(station, resolved, level, thresholds):
    """A TreeInput for one input of a resolved proc (streamsxml.ResolvedInput)."""
    inp = resolved.input
    nodes = [dict(parent=-1, taps=None, decimation=1, gain=1.0, shift=0.0,
                  in_rate=(inp.rate_num, inp.rate_den), out_rate=None, stream=None,
                  location=inp.location, level=level)]

    def add(node, parent, parent_rate):
        fir = node.filter
        nodes.append(dict(
            parent=parent,
            taps=None if fir is None else fir.taps,
            decimation=1 if fir is None else fir.decimation,
            gain=1.0 if fir is None else fir.gain,
            shift=0.0 if fir is None else fir.shift,
            in_rate=(parent_rate.numerator, parent_rate.denominator),
            out_rate=(node.rate.numerator, node.rate.denominator),
            stream=node.channel, location=node.location, level=level))
        me = len(nodes) - 1
        for child in node.children:
            add(child, me, node.rate)

    for top in resolved.nodes:
        add(top, 0, inp.rate)
    warn, flush, reset = thresholds
    return _kernel.TreeInput(inp.name, station, nodes, inp.rate_num, inp.rate_den,
                             gap_warn=warn, gap_flush=flush, gap_reset=reset)


class StreamProcessor:
    """Runs one plugin's packet stream for the stations of a seedlink.ini.

    Raw channels are routed to the plugin's ``proc`` first (one instance per
    station and plugin), then to the station's, as SeisComP does.
    """

    def __init__(self, config, plugin=None, filters=None, streams=None,
                 flush_on_shutdown=True):
        self.config = config
        self.plugin = plugin
        self.flush_on_shutdown = flush_on_shutdown
        g = config.globals
        self.filters = filters
        self.procs = streams
        if self.procs is None and g.streams:
            if self.filters is None:
                self.filters = load_filters(g.filters or [default_filters_path()])
            self.procs = load_streams(g.streams, self.filters)
        self.procs = self.procs or {}
        self.stations = {}
        for st in config.stations:
            self.stations[st.key] = StationOutput(st)
        self.trees = {}            # (station key, input name, plugin or None) -> TreeInput
        self._warned = set()
        self._resolved = {}        # proc name -> {input name: ResolvedInput}
        self.engine = self.new_engine(plugin)

    def new_engine(self, plugin=None):
        """A packet engine for one plugin's byte stream.  Engines share the
        stations, their LOG streams and station-level trees, as SeisComP's
        plugins share a station; a plugin-level proc is instantiated per
        (station, plugin)."""
        return _kernel.PacketEngine(lambda key, channel: self._resolve(plugin, key, channel),
                                    self._station)

    # -- callbacks of the packet engine (once per new key) --------------------

    def _station(self, key):
        out = self.stations.get(key)
        if out is None and key not in self._warned:
            self._warned.add(key)
            log.warning("station %s is not configured", key)
        return out

    def proc_inputs(self, proc_name):
        """{input name: ResolvedInput} of a proc ({} when it is unknown)."""
        # resolved once per proc, not once per new station and channel
        resolved = self._resolved.get(proc_name)
        if resolved is None:
            proc = self.procs.get(proc_name)
            resolved = self._resolved[proc_name] = (
                resolve_proc(proc, self.filters) if proc is not None else {})
        return resolved

    def _resolve(self, plugin, key, channel):
        out = self._station(key)
        if out is None:
            return None
        st = out.config
        plugin_proc = plugin.proc if plugin is not None else None
        for proc_name, owner in ((plugin_proc, plugin.name if plugin else None), (st.proc, None)):
            if not proc_name:
                continue
            tree = self.trees.get((key, channel, owner))
            if tree is not None:
                return tree
            resolved = self.proc_inputs(proc_name).get(channel)
            if resolved is not None:
                level = 2 if st.encoding == "steim2" else 1
                tree = build_tree_input(out, resolved, level,
                                        (st.proc_gap_warn, st.proc_gap_flush, st.proc_gap_reset))
                if st.backfill_buffer > 0:
                    tree.backfill = RawBackfill(tree, st.backfill_buffer, key)
                self.trees[(key, channel, owner)] = tree
                return tree
        if not st.proc and not plugin_proc:
            log.warning("%s: raw data ignored (no stream processor)", key)
        else:
            log.warning("%s: channel %s ignored", key, channel)
        return None

    def station_tree(self, key, input_name):
        """The station-level tree of a station's proc input (None if none);
        in-process sources feed it like a plugin channel of that name."""
        return self._resolve(None, key, input_name)

    def pass_through_tree(self, key, name, location, channel, rate):
        """A tree with one unfiltered output stream LOC.CHA at an integer
        rate, for samples that need no decimation (raw device channels);
        flushed at shutdown like every other tree."""
        out = self.stations[key]
        st = out.config
        level = 2 if st.encoding == "steim2" else 1
        root = dict(parent=-1, taps=None, decimation=1, gain=1.0, shift=0.0,
                    in_rate=(rate, 1), out_rate=None, stream=None, location=location,
                    level=level)
        node = dict(root, parent=0, out_rate=(rate, 1), stream=channel)
        tree = _kernel.TreeInput(name, out, [root, node], rate, 1, gap_warn=st.proc_gap_warn,
                                 gap_flush=st.proc_gap_flush, gap_reset=st.proc_gap_reset)
        self.trees[(key, "raw:" + name, None)] = tree
        return tree

    # -- input -----------------------------------------------------------------

    def feed(self, data):
        """Handle the packets in a chunk of the plugin byte stream (any split)."""
        self.engine.feed(data)

    def shutdown(self):
        """Orderly end: flush every encoder (unless disabled), inputs of each
        station in name order as SeisComP's flush does.

        For a station that backfills, held data is committed too, in
        SeisComP's order: per plugin-level proc (plugin name order) the held
        packets of its inputs (input name order), then its encoder flushes;
        then the held miniSEED records (location+channel order); then, only
        when encoders are flushed, the station-level proc the same way
        (SeisComP neither commits nor flushes that one).  Held data of
        plugin-level procs and miniSEED input is committed even with
        ``flush_on_shutdown=False``, as in SeisComP."""
        trees = {}
        for (key, channel, owner), tree in self.trees.items():
            trees.setdefault(key, []).append((channel, owner, tree))
        for key, out in self.stations.items():
            mine = trees.get(key, [])
            if out.mseed_backfill is not None:
                self._shutdown_backfilled(out, mine)
            elif self.flush_on_shutdown:
                for _, _, tree in sorted(mine, key=lambda t: (t[0], t[1] or "")):
                    tree.flush()

    def _shutdown_backfilled(self, out, trees):
        def run(group, flush):
            group = sorted(group, key=lambda t: t[0])
            for _, _, tree in group:
                if tree.backfill is not None:
                    tree.backfill.commit_pending()
            if flush:
                for _, _, tree in group:
                    tree.flush()

        for owner in sorted({owner for _, owner, _ in trees if owner is not None}):
            run([t for t in trees if t[1] == owner], self.flush_on_shutdown)
        out.mseed_backfill.commit_pending()
        if self.flush_on_shutdown:
            run([t for t in trees if t[1] is None], True)

    def drain(self):
        """Take the records produced since the last drain: {station key: [bytes]}."""
        out = {}
        for key, st in self.stations.items():
            if st.records:
                out[key] = st.records[:]
                del st.records[:]        # the kernels hold this very list
        return out


def replay_file(config, input_path, outdir, *, plugin=None, chunk_size=1 << 20,
                flush_on_shutdown=True):
    """Run a plugin byte stream through the stream processor; write
    ``OUTDIR/<station key>.mseed`` per station with records.  Returns
    {station key: record count}.  A protocol error stops the input (as
    SeisComP stops the plugin) but every record made before it is written,
    and the error is re-raised after writing."""
    proc = StreamProcessor(config, plugin=plugin, flush_on_shutdown=flush_on_shutdown)
    error = None
    with open(input_path, "rb") as fh:
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                break
            try:
                proc.feed(chunk)
            except Exception as exc:     # protocol errors end this plugin's stream
                error = exc
                break
    if proc.engine.buffered and error is None:
        log.warning("input ends inside a packet (%d bytes dropped)", proc.engine.buffered)
    proc.shutdown()
    os.makedirs(outdir, exist_ok=True)
    counts = {}
    for key, st in proc.stations.items():
        if not st.records:
            continue
        with open(os.path.join(outdir, key + ".mseed"), "wb") as fh:
            fh.write(b"".join(st.records))
        counts[key] = len(st.records)
    if error is not None:
        raise error
    return counts
