"""``seedlink-fast demo``: the server with a live synthetic device.

It runs the server on 127.0.0.1:18000 with the embedded default
configuration plus one station, XX.DEMO, whose samples come from a
synthetic digitizer (a :class:`seedlink_fast.raw.Streamer` in push mode)
through the raw ingest port.  The channels mirror the original raw_server
test program: every second each channel gets one sine period, and now and
then an "event" doubles its amplitude.

* channel 1: 100 Hz int16 -> the ``stream100`` tree (HHZ, BHZ, LHZ, VHZ)
* channel 2: 4 kHz int8   -> 00.FHZ
* channel 3: high rate int32 (200 kHz unless ``--rate``) -> 00.JHZ

Ctrl-C stops the device, then the server (which flushes every record).
"""
import asyncio
import datetime
import logging
import os
import random
import sys
import threading
import time

import numpy as np

from . import mseed
from .inifile import StationConfig
from .serve import default_config
from .streamsxml import load_streams

log = logging.getLogger("seedlink_fast.demo")

STATION = "DEMO"
NETWORK = "XX"
EVENT_CHANCE = 1 / 50       # per channel and second, as in the original test program


def _config(data_dir, rate):
    config = default_config()
    g = config.globals
    g.organization = "seedlink-fast demo"
    g.filebase = os.path.abspath(data_dir)
    g.streams = [os.path.join(os.path.dirname(__file__), "data", "demo-streams.xml")]
    g.raw_idle_flush = 2.0
    st = StationConfig(key="%s_%s" % (NETWORK, STATION), name=STATION, network=NETWORK,
                       description="synthetic digitizer (%d Hz top rate)" % rate,
                       proc="stream100", encoding="steim2", stream_check=True,
                       segments=10, segsize=1000, buffers=1000,
                       raw_channels="Z:1,00.FHZ:2,00.JHZ:3", raw_idle_flush=2.0)
    config.stations.append(st)
    return config


class Device(threading.Thread):
    """The synthetic digitizer: one second of samples per channel per second."""

    def __init__(self, streamer, channels, seconds=None):
        super().__init__(name="demo-device", daemon=True)
        self.streamer = streamer
        self.channels = channels           # [(id, rate, dtype, amplitude)]
        self.seconds = seconds
        self.stop_event = threading.Event()
        self.periods = {cid: np.sin(2 * np.pi * np.arange(rate) / rate)
                        for cid, rate, _, _ in channels}
        self.sent = 0

    def run(self):
        # second k is fed once it is over, as a digitizer would
        start = (datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
                 - datetime.timedelta(seconds=1))
        k = 0
        while not self.stop_event.is_set() and (self.seconds is None or k < self.seconds):
            stamp = start + datetime.timedelta(seconds=k)
            for cid, rate, dtype, amplitude in self.channels:
                gain = 2 * amplitude if random.random() < EVENT_CHANCE else amplitude
                samples = (self.periods[cid] * gain).astype(dtype)
                self.streamer.feed_data(cid, stamp, 100, samples)
                self.sent += rate
            k += 1
            # sleep until the next second's data exists
            wait = (start + datetime.timedelta(seconds=k + 1)
                    - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
            if wait > 0:
                self.stop_event.wait(wait)


def _how_to_connect(port):
    return "\n".join([
        "seedlink-fast demo: server on 127.0.0.1:%d, station %s.%s" % (port, NETWORK, STATION),
        "  ObsPy:",
        "    from obspy.clients.seedlink.basic_client import Client",
        "    from obspy import UTCDateTime as T",
        "    st = Client('127.0.0.1', %d, timeout=10).get_waveforms("
        "'%s', '%s', '*', 'BHZ', T() - 60, T() - 10)" % (port, NETWORK, STATION),
        "  slinktool:  slinktool -S %s_%s:FHZ -p 127.0.0.1:%d" % (NETWORK, STATION, port),
        "  Ctrl-C stops everything.",
    ])


def _newest_end_us(station):
    """End time of the newest stored data record (for the latency figure)."""
    pos = station.next_position - 1
    if pos < station.oldest_position:
        return None
    try:
        rec = mseed.unpack(station.buffer.read(pos), decode=False)[0]
    except (ValueError, TypeError):
        return None
    return rec.endtime_ns // 1000


async def _status(server, device, interval=1.0):
    station = server.by_key["%s_%s" % (NETWORK, STATION)]
    last = station.next_position
    while True:
        await asyncio.sleep(interval)
        now = station.next_position
        end = _newest_end_us(station)
        latency = "-" if end is None else "%.2f s" % (time.time() - end / 1e6)
        line = "records/s %7.0f | records %9d | clients %3d | samples fed %12d | latency %s" % (
            (now - last) / interval, now, len(server.clients), device.sent, latency)
        last = now
        if sys.stdout.isatty():
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)


def run(args):
    from .raw import Channel, Streamer
    from .server import Server

    logging.getLogger().setLevel(logging.WARNING if not args.verbose else logging.INFO)
    config = _config(args.data_dir, args.rate)
    load_streams(config.globals.streams)          # fail early on a broken install
    server = Server(config, bind="127.0.0.1", port=args.port, raw_port=args.raw_port)
    channels = [(1, 100, np.int16, 60), (2, 4000, np.int8, 60), (3, args.rate, np.int32, 60)]

    async def main():
        await server.start()
        streamer = Streamer(
            [Channel(cid, rate, sys.byteorder, np.dtype(dtype).name)
             for cid, rate, dtype, _ in channels],
            "127.0.0.1", server.raw_port, mode="push", station="%s.%s" % (NETWORK, STATION))
        streamer.start()
        device = Device(streamer, channels, seconds=args.seconds)
        device.start()
        print(_how_to_connect(server.port), flush=True)
        server.install_signal_handlers()
        status = asyncio.get_running_loop().create_task(_status(server, device))
        done = asyncio.get_running_loop().run_in_executor(None, device.join)
        stop = asyncio.ensure_future(server._stopping.wait())
        await asyncio.wait([done, stop], return_when=asyncio.FIRST_COMPLETED)
        device.stop_event.set()
        status.cancel()
        # the device's unacknowledged data goes in before the server stops
        await asyncio.get_running_loop().run_in_executor(None, streamer.stop)
        print("\nstopping", flush=True)
        await server.stop()

    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        (uvloop.run if uvloop is not None else asyncio.run)(main())
    except (RuntimeError, OSError) as exc:
        print("seedlink-fast demo: %s" % exc, file=sys.stderr)
        return 1
    return 0


def add_subparser(sub):
    p = sub.add_parser("demo", help="run the server with a live synthetic raw device",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=18000, help="SeedLink port (default 18000)")
    p.add_argument("--raw-port", type=int, default=0,
                   help="raw ingest port (default: any free port)")
    p.add_argument("--rate", type=int, default=200000,
                   help="sample rate of the high-rate channel in Hz (default 200000)")
    p.add_argument("--seconds", type=int, default=None,
                   help="stop after this many seconds of data (default: run until Ctrl-C)")
    p.add_argument("--data-dir", default="seedlink-demo-data",
                   help="buffer directory (default ./seedlink-demo-data)")
    p.add_argument("-v", "--verbose", action="store_true", help="log server events")
    p.set_defaults(func=run)
