"""``seedlink-fast raw-plugin``: a drop-in for SED's C++ ``raw_plugin``.

Seedlink starts it (``plugin ... cmd = "seedlink-fast raw-plugin -s HOST
-p PORT -c NET.STA -m MAP"``, the template's line with our command); it
connects to a RAW device, packs 512-byte miniSEED records and writes them to
seedlink through file descriptor 63 with ``send_mseed``.

Same flags and channel-map syntax as the original (``-s -p -c -m -e -r
-D``; the extra last argument seedlink appends is ignored).  What differs:

* records **span packets**: a packet never forces a record out; only a time
  break (a packet starting more than half a sample period away from the
  predicted next-sample time) or ``--flush-idle`` seconds without data for
  a channel (and disconnects and shutdown) close a partial record.  The
  original flushed every packet into its own records;
* ``-r`` is the *first* reconnect delay (default 0.5 s, the original slept a
  fixed 60 s); it doubles up to ``--reconnect-max`` (30 s) and resets after
  a session that delivered data;
* RAW version probing (``--version-raw auto``), no idle drop unless
  ``--idle-timeout`` is given, signed int8 everywhere, floats into integer
  encodings rounded (half to even, clipped, NaN -> 0) instead of truncated;
* sequence numbers continue per channel across reconnects;
* a record's blockette 1001 timing quality is the lowest of the packets
  it holds samples of (RAW 1.x: 100).

``--output FILE`` (``-`` for stdout) writes the fd-63 byte stream to a file
instead, for tests and for ``seedlink-fast replay``.
"""
import argparse
import asyncio
import collections
import logging
import os
import signal
import sys
import time

import numpy as np

from .._ext import mseed as _kernel
from ..mseed import RecordPacker
from ..plugin import PLUGIN_FD, PluginWriter
from .client import RawClient
from .protocol import parse_channel_map, to_int32

__all__ = ["add_subparser", "run", "PlainPacker", "ChannelPacker", "ENCODINGS"]

log = logging.getLogger("seedlink_fast.raw.plugin")

RECORD_LENGTH = 512
_DATA_OFFSET = 64
_NS = 1_000_000_000

# name -> (SEED encoding code, sample dtype fed to the packer, big-endian wire dtype)
ENCODINGS = {
    "STEIM1": (10, np.int32, None),
    "STEIM2": (11, np.int32, None),
    "INT16": (1, np.int32, ">i2"),
    "INT32": (3, np.int32, ">i4"),
    "FLOAT32": (4, np.float32, ">f4"),
    "FLOAT64": (5, np.float64, ">f8"),
}


class PlainPacker:
    """Uncompressed 512-byte records (INT16, INT32, FLOAT32, FLOAT64): the
    fixed header, blockettes 1000 and 1001 from the Cython header writer,
    big-endian samples from offset 64.

    The same streaming contract as :class:`~seedlink_fast.mseed.RecordPacker`:
    ``feed`` returns the records it completed, ``flush`` the partial one,
    ``set_time(ns)`` re-anchors the clock at the next sample.
    """

    def __init__(self, network, station, location, channel, rate, encoding, *,
                 starttime_ns=0, sequence_number=1, timing_quality=100):
        code, self._in_dtype, wire = ENCODINGS[encoding]
        if wire is None:
            raise ValueError("%s is not an uncompressed encoding" % encoding)
        self._wire = np.dtype(wire)
        self._names = (network, station, location, channel)
        self._code = code
        self.rate = int(rate)
        _kernel.rate_factor_multiplier(self.rate, 1)      # raises for an unwritable rate
        self.per_record = (RECORD_LENGTH - _DATA_OFFSET) // self._wire.itemsize
        self.sequence_number = sequence_number % 1000000
        self.timing_quality = timing_quality
        self.clipped = 0                # INT16 samples clipped to the int16 range
        self._pending = np.empty(0, self._in_dtype)
        self._anchor_ns = int(starttime_ns)
        self._anchor_index = 0
        self._index = 0                 # stream index of the first pending sample

    @property
    def samples_buffered(self):
        return len(self._pending)

    @property
    def next_starttime_ns(self):
        return self._time_of(self._index + len(self._pending))

    def _time_of(self, index):
        return self._anchor_ns + (index - self._anchor_index) * _NS // self.rate

    def set_time(self, starttime_ns):
        self._anchor_ns = int(starttime_ns)
        self._anchor_index = self._index + len(self._pending)

    def feed(self, samples):
        samples = np.asarray(samples, dtype=self._in_dtype)
        buf = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        full = len(buf) // self.per_record * self.per_record
        records = self._records(buf[:full])
        self._pending = buf[full:].copy()
        return records

    def flush(self):
        records = self._records(self._pending)
        self._pending = np.empty(0, self._in_dtype)
        return records

    def _records(self, samples):
        """Records of `samples` (whole records, but for a flushed tail)."""
        if not len(samples):
            return []
        if self._code == 1:
            lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
            outside = int(np.count_nonzero((samples < lo) | (samples > hi)))
            if outside:
                self.clipped += outside
                samples = np.clip(samples, lo, hi)
        data = samples.astype(self._wire).tobytes()     # one conversion per feed
        size = self._wire.itemsize
        step = self.per_record * size
        records = []
        for off in range(0, len(data), step):
            part = data[off:off + step]
            count = len(part) // size
            rec = bytearray(RECORD_LENGTH)
            _kernel.write_header(rec, *self._names, self.sequence_number,
                                 self._time_of(self._index) // 1000, count, self.rate, 1,
                                 self._code, self.timing_quality)
            rec[_DATA_OFFSET:_DATA_OFFSET + len(part)] = part
            records.append(bytes(rec))
            self._index += count
            self.sequence_number = (self.sequence_number + 1) % 1000000
        return records


class ChannelPacker:
    """One channel's continuous packing: a packer created at the first
    packet, re-anchored at time breaks, flushed when told.

    ``add(time_us, quality, samples)`` returns the records completed; the
    samples must already be in the encoding's sample type.
    """

    def __init__(self, network, station, location, channel, encoding):
        self.names = (network, station, location, channel)
        self.encoding = encoding
        self.rate = None
        self.packer = None
        self.sequence_number = 1        # of the next record, kept across packers
        self.last_data = time.monotonic()
        self._marks = collections.deque()   # (stream index, quality) where quality changes
        self._fed = 0                   # samples fed to the current packer
        self._emitted = 0               # samples in records already returned

    @property
    def id(self):
        return "%s.%s.%s.%s" % self.names

    def set_rate(self, rate):
        """A (re)negotiated rate; returns the records flushed if it changed."""
        if rate == self.rate:
            return []
        records = self.flush()
        self.packer = None
        self.rate = rate
        return records

    def add(self, time_us, quality, samples):
        self.last_data = time.monotonic()
        if not len(samples):
            return []
        time_ns = time_us * 1000
        records = []
        if self.packer is None:
            self.packer = self._new_packer(time_ns, quality)
            self._fed = self._emitted = 0
            self._marks.clear()
        elif abs(time_ns - self.packer.next_starttime_ns) * 2 * self.rate > _NS:
            # more than half a sample period off the prediction: a time break
            records = self.flush()
            self.packer.set_time(time_ns)
        if not self._marks or self._marks[-1][1] != quality:
            self._marks.append((self._fed, quality))
        self._fed += len(samples)
        return records + self._stamp(self.packer.feed(samples))

    def flush(self):
        if self.packer is None:
            return []
        return self._stamp(self.packer.flush())

    def _new_packer(self, time_ns, quality):
        if self.encoding.startswith("STEIM"):
            return RecordPacker(*self.names, self.rate, encoding=self.encoding.lower(),
                                record_length=RECORD_LENGTH, timing_quality=quality,
                                starttime_ns=time_ns, sequence_number=self.sequence_number)
        return PlainPacker(*self.names, self.rate, self.encoding, starttime_ns=time_ns,
                           sequence_number=self.sequence_number, timing_quality=quality)

    def _stamp(self, records):
        """Give each record the lowest timing quality of the packets its
        samples came from (byte 60, blockette 1001)."""
        self.sequence_number = self.packer.sequence_number
        marks = self._marks
        out = []
        for rec in records:
            end = self._emitted + ((rec[30] << 8) | rec[31])
            while len(marks) > 1 and marks[1][0] <= self._emitted:
                marks.popleft()
            quality = min(q for start, q in marks if start < end) if marks else rec[60]
            if quality != rec[60]:
                patched = bytearray(rec)
                patched[60] = quality
                rec = bytes(patched)
            self._emitted = end
            out.append(rec)
        return out


def _convert(samples, encoding):
    """Wire samples -> the encoding's sample type."""
    if ENCODINGS[encoding][1] is np.int32:
        return to_int32(samples)
    return samples.astype(ENCODINGS[encoding][1])


class RawPlugin:
    """Glue: RawClient packets -> ChannelPackers -> send_mseed."""

    def __init__(self, args, entries, writer):
        self.station_key = args.station
        self.network, self.station = args.station.split(".")
        self.encoding = args.encoding
        self.flush_idle = args.flush_idle
        self.writer = writer
        self.status = 0
        self.channels = {e.id: ChannelPacker(self.network, self.station, e.location, e.channel,
                                             self.encoding) for e in entries}
        self._unusable = set()          # channel ids whose rate cannot be written
        self.client = RawClient(
            args.host, args.port, list(self.channels), version=args.version_raw,
            idle_timeout=args.idle_timeout, reconnect_delay=args.reconnect_delay,
            reconnect_max=args.reconnect_max, name=self.station_key,
            on_packet=self.on_packet, on_session=self.on_session,
            on_disconnect=self.on_disconnect)

    def on_session(self, version, specs):
        self._unusable.clear()
        for cid, spec in specs.items():
            channel = self.channels[cid]
            self._send(channel.set_rate(spec.rate))
            try:
                _kernel.rate_factor_multiplier(spec.rate, 1)
            except ValueError as exc:
                log.error("%s: channel %d (%s): %s; its data is dropped", self.station_key,
                          cid, channel.id, exc)
                self._unusable.add(cid)

    def on_packet(self, spec, time_us, quality, samples):
        if spec.id in self._unusable:
            return
        channel = self.channels[spec.id]
        self._send(channel.add(time_us, quality, _convert(samples, self.encoding)))

    def on_disconnect(self, reason):
        self.flush_all()

    def flush_all(self):
        for channel in self.channels.values():
            self._send(channel.flush())

    def flush_idle_channels(self):
        now = time.monotonic()
        for channel in self.channels.values():
            if now - channel.last_data >= self.flush_idle:
                self._send(channel.flush())

    def _send(self, records):
        if self.status:
            return
        try:
            for rec in records:
                self.writer.send_mseed(self.station_key, rec)
        except OSError as exc:
            log.error("%s: cannot write to seedlink: %s; exiting", self.station_key, exc)
            self.status = 1
            self.client.stop()

    async def run(self):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        flusher = loop.create_task(self._idle_flusher())
        try:
            await self.client.run()
        finally:
            flusher.cancel()
        self.flush_all()
        for channel in self.channels.values():
            packer = channel.packer
            if isinstance(packer, PlainPacker) and packer.clipped:
                log.warning("%s: %d samples clipped to the INT16 range", channel.id,
                            packer.clipped)
        return self.status

    def _on_signal(self, sig):
        log.info("%s: %s, flushing and exiting", self.station_key, signal.Signals(sig).name)
        self.client.stop()

    async def _idle_flusher(self):
        if self.flush_idle <= 0:
            return
        period = min(1.0, self.flush_idle / 2)
        while True:
            await asyncio.sleep(period)
            self.flush_idle_channels()


# -- command line ---------------------------------------------------------------------------

def _encoding(text):
    name = text.upper()
    if name not in ENCODINGS:
        raise argparse.ArgumentTypeError("unknown encoding %r (expected %s)"
                                         % (text, ", ".join(ENCODINGS)))
    return name


def add_subparser(sub):
    p = sub.add_parser(
        "raw-plugin", help="SeedLink plugin for RAW devices (drop-in for raw_plugin)",
        description="Connect to a RAW 1.0/1.1/2.0 device (raw_server.py), pack its packets "
                    "into 512-byte miniSEED records continuously across packets and hand "
                    "them to seedlink on fd 63.")
    p.add_argument("-s", dest="host", required=True, metavar="HOST", help="device address")
    p.add_argument("-p", dest="port", required=True, type=int, metavar="PORT",
                   help="device port")
    p.add_argument("-c", dest="station", required=True, metavar="NET.STA",
                   help="network and station codes, also the seedlink station id")
    p.add_argument("-m", dest="channel_map", required=True, metavar="MAP",
                   help="channel map LOC.CHA:ID,... (LOC may be empty: .HHZ:3)")
    p.add_argument("-e", dest="encoding", default="STEIM2", type=_encoding,
                   metavar="ENCODING",
                   help="STEIM2 (default), STEIM1, INT16, INT32, FLOAT32 or FLOAT64")
    p.add_argument("-r", dest="reconnect_delay", type=float, default=0.5, metavar="SECONDS",
                   help="first reconnect delay, doubling up to --reconnect-max "
                        "(default 0.5; the original slept a fixed 60)")
    p.add_argument("-D", dest="daemon", action="store_true", help="log to syslog")
    p.add_argument("--reconnect-max", type=float, default=30.0, metavar="SECONDS",
                   help="longest reconnect delay (default 30)")
    p.add_argument("--version-raw", default="auto", choices=["auto", "2.0", "1.1", "1.0"],
                   help="RAW protocol version (default auto: probe 2.0, 1.1, 1.0)")
    p.add_argument("--idle-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="drop and reopen a link silent this long (default 0: never)")
    p.add_argument("--flush-idle", type=float, default=10.0, metavar="SECONDS",
                   help="close a channel's partial record after this long without data "
                        "(default 10; 0: only at time breaks, disconnects and exit)")
    p.add_argument("--output", metavar="FILE",
                   help="write the fd-63 stream to FILE ('-': stdout) instead of fd 63")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # seedlink appends the plugin's name as the last word; ignored, as by the original
    p.add_argument("source_id", nargs="?", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _fail(message):
    print("seedlink-fast raw-plugin: %s" % message, file=sys.stderr)
    return 2


def _open_output(target):
    """(writer, file to close or None) for --output, or fd 63."""
    if target is None:
        try:
            os.fstat(PLUGIN_FD)
        except OSError:
            raise OSError("fd %d is not open: run me from seedlink, or pass --output FILE"
                          % PLUGIN_FD) from None
        return PluginWriter(PLUGIN_FD), None
    if target == "-":
        return PluginWriter(sys.stdout.buffer), None
    fh = open(target, "wb")
    return PluginWriter(fh), fh


def run(args):
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.daemon:
        # SysLogHandler only fails at the first message without /dev/log
        if os.path.exists("/dev/log"):
            from ..serve import _log_to_syslog

            _log_to_syslog()
        else:
            log.warning("-D: no /dev/log, logging to stderr")
    if args.station.count(".") != 1 or not all(args.station.split(".")):
        return _fail("-c must be NET.STA, got %r" % args.station)
    if args.port <= 0:
        return _fail("-p must be a port number > 0, got %d" % args.port)
    try:
        entries = parse_channel_map(args.channel_map)
    except ValueError as exc:
        return _fail("-m: %s" % exc)
    inputs = [e.name for e in entries if e.input is not None]
    if inputs:
        return _fail("-m: %s: items need LOC.CHA:ID (proc inputs are for the server's "
                     "own raw sources, not for this plugin)" % ", ".join(inputs))
    try:
        writer, fh = _open_output(args.output)
    except OSError as exc:
        return _fail(str(exc))
    try:
        plugin = RawPlugin(args, entries, writer)
    except ValueError as exc:
        return _fail(str(exc))
    log.info("%s: %s:%d, channels %s, %s records", args.station, args.host, args.port,
             ", ".join("%s:%d" % (e.name, e.id) for e in entries), args.encoding)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(plugin.run())
        return uvloop.run(plugin.run())
    finally:
        if fh is not None:
            fh.close()
