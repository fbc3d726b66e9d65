"""Raw ingest benchmark: a Streamer device process pushes int32 samples to
``seedlink-fast serve`` over loopback; the server packs pass-through Steim2
records into its disk buffer while one real-time SeedLink client receives
them.

Scenarios (each repeated, interleaved with the peer, medians reported):

* ``realtime-16x1M``: 16 channels x 1 MHz int32, paced in real time. The
  target: it keeps up with no loss, the server using under one core.
  Headroom = 1 / (server cores used).
* ``max-16x1M``: the same channels fed as fast as the device can: the
  sustained ingest rate (samples/s from the first packet to the last
  acknowledgement). Headroom = rate / 16 M samples/s.
* ``max-100x4k``: 100 channels x 4 kHz, fed as fast as possible.

No loss is checked twice: the device's data is all acknowledged (so stored),
and the real-time client counts every sample (from the record headers).

Peer, same run: the original design's per-packet work, i.e. libmseed
(pymseed) packing every packet into its own records with a flush. That is
only the packing, without the pipe or the server, so the ratio is
conservative.

Usage: python bench/bench_raw_ingest.py [--quick] [--reps N] [--json FILE]
"""
import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _util import OtherLoad  # noqa: E402
from server_load import proc_cpu_s  # noqa: E402

T0 = datetime.datetime(2026, 1, 1)
TARGET = 16_000_000          # samples/s


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def signal_block(rate, seed):
    """One second of a plausible digitizer signal: a random walk with small
    steps (Steim2 packs 4-5 samples per word), as int32."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.integers(-60, 61, rate)).astype(np.int32)


# -- the device process -------------------------------------------------------------

def device_main(args):
    """Push `seconds` of data on `nchan` channels; report JSON on stdout."""
    from seedlink_fast.raw import Channel, Streamer

    rate, nchan = args.rate, args.channels
    packet = max(1, rate * args.packet_ms // 1000)
    blocks = [signal_block(rate, k) for k in range(min(nchan, 4))]
    streamer = Streamer([Channel(k + 1, rate, "little", "int32") for k in range(nchan)],
                        "127.0.0.1", args.raw_port, mode="push", station="XX.BENCH",
                        buffer_bytes=1 << 30, flush_timeout=30.0).start()
    cpu0 = time.process_time()
    start = time.perf_counter()
    fed = 0
    for second in range(args.seconds):
        for i in range(0, rate, packet):
            if args.paced:
                due = start + second + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            when = T0 + datetime.timedelta(seconds=second, microseconds=i * 1_000_000 // rate)
            for k in range(nchan):
                chunk = blocks[k % len(blocks)][i:i + packet]
                streamer.feed_data(k + 1, when, 100, chunk)
                fed += len(chunk)
    fed_done = time.perf_counter()
    # the last sample's time: everything is stored once it is acknowledged
    epoch_us = int((T0 - datetime.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    last_us = epoch_us + ((args.seconds * rate - 1) * 1_000_000) // rate
    deadline = time.perf_counter() + args.timeout
    acked = False
    while time.perf_counter() < deadline:
        chans = streamer.stats()["channels"]
        if all(ch["acked_us"] == last_us for ch in chans.values()):
            acked = True
            break
        time.sleep(0.01)
    end = time.perf_counter()
    stats = streamer.stats()
    streamer.stop()
    print(json.dumps(dict(fed=fed, wall=end - start, feed_wall=fed_done - start,
                          acked=acked, device_cpu=time.process_time() - cpu0,
                          overflow=stats["overflow_packets"])), flush=True)


# -- the real-time SeedLink client ---------------------------------------------------

class RealtimeClient(threading.Thread):
    """Streams XX.BENCH from the next record on; counts samples from the
    record headers (no decoding: the client must not be the bottleneck)."""

    def __init__(self, port, expect, timeout):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.expect = expect
        self.timeout = timeout
        self.samples = 0
        self.records = 0
        for line in (b"STATION BENCH XX", b"DATA"):
            self.sock.sendall(line + b"\r\n")
            assert self._line() == b"OK"
        self.sock.sendall(b"END\r\n")

    def _line(self):
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += self.sock.recv(1)
        return buf.strip()

    def run(self):
        deadline = time.monotonic() + self.timeout
        buf = bytearray()
        self.sock.settimeout(1.0)
        while self.samples < self.expect and time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                break
            buf += chunk
            n = len(buf) // 520
            if n:
                frames = np.frombuffer(bytes(buf[:n * 520]), dtype=np.uint8).reshape(n, 520)
                counts = frames[:, 38].astype(np.int64) * 256 + frames[:, 39]
                self.samples += int(counts.sum())
                self.records += n
                del buf[:n * 520]
        self.sock.close()


# -- the server ------------------------------------------------------------------------

def write_ini(work, port, raw_port, nchan):
    channels = ",".join("00.C%02d:%d" % (k, k + 1) for k in range(nchan))
    path = os.path.join(work, "seedlink.ini")
    with open(path, "w") as fh:
        fh.write("""[seedlink]
organization = bench
filebase = "%s"
port = %d
encoding = steim2
segments = 10
segsize = 10000
buffers = 1000
raw_ingest_port = %d
raw_idle_flush = 0.1
station BENCH network = XX
   raw_channels = "%s"
""" % (os.path.join(work, "buffer"), port, raw_port, channels))
    return path


def run_once(name, nchan, rate, seconds, paced, packet_ms):
    work = tempfile.mkdtemp(prefix="bench-raw-")
    port, raw_port = free_port(), free_port()
    ini = write_ini(work, port, raw_port, nchan)
    log = open(os.path.join(work, "server.log"), "wb")
    server = subprocess.Popen([sys.executable, "-m", "seedlink_fast", "serve", "-f", ini,
                               "--bind", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.05)
        expect = nchan * rate * seconds
        client = RealtimeClient(port, expect, timeout=seconds * 20 + 60)
        client.start()
        cpu0 = proc_cpu_s(server.pid)
        t_outer = time.perf_counter()
        with OtherLoad() as load:
            out = subprocess.run(
                [sys.executable, __file__, "--device", "--raw-port", str(raw_port),
                 "--channels", str(nchan), "--rate", str(rate), "--seconds", str(seconds),
                 "--packet-ms", str(packet_ms), "--timeout", str(seconds * 20 + 30)]
                + (["--paced"] if paced else []),
                capture_output=True, text=True, timeout=seconds * 30 + 120)
        server_cpu = proc_cpu_s(server.pid) - cpu0
        t_outer = time.perf_counter() - t_outer
        client.join(30)
        if out.returncode != 0:
            raise RuntimeError("device failed: %s" % out.stderr[-2000:])
        dev = json.loads(out.stdout.strip().splitlines()[-1])
        return dict(scenario=name, channels=nchan, rate=rate, seconds=seconds, paced=paced,
                    fed=dev["fed"], wall=dev["wall"], acked=dev["acked"],
                    received=client.samples, records=client.records,
                    lost=dev["fed"] - client.samples, overflow=dev["overflow"],
                    samples_per_s=dev["fed"] / dev["wall"],
                    # paced runs: from the last sample due to it stored
                    ack_lag=dev["wall"] - dev["feed_wall"],
                    server_cores=server_cpu / dev["wall"],
                    device_cores=dev["device_cpu"] / dev["wall"],
                    # everything but the server and the device (and this client)
                    other_cpu_pct=max(0.0, load.percent - 100.0 * (
                        server_cpu + dev["device_cpu"]) / t_outer))
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        subprocess.run(["rm", "-rf", work])


def run_peer(nchan, rate, seconds, packet_ms):
    """libmseed packing every packet into its own flushed records."""
    from pymseed import DataEncoding, MS3Record

    packet = max(1, rate * packet_ms // 1000)
    block = signal_block(rate, 0)
    msr = MS3Record(reclen=512, encoding=DataEncoding.STEIM2)
    msr.sourceid = "FDSN:XX_BENCH_00_C_0_0"
    msr.set_starttime_str("2026-01-01T00:00:00Z")
    msr.samprate = rate
    msr.formatversion = 2
    start = time.perf_counter()
    n = 0
    for _ in range(seconds):
        for i in range(0, rate, packet):
            chunk = block[i:i + packet]
            for _k in range(nchan):
                for _rec in msr.generate(chunk, "i"):
                    pass
                n += len(chunk)
    return n / (time.perf_counter() - start)


SCENARIOS = {
    # name: (channels, rate, seconds, paced, packet ms)
    "realtime-16x1M": (16, 1_000_000, 10, True, 50),
    "max-16x1M": (16, 1_000_000, 10, False, 50),
    "max-100x4k": (100, 4000, 40, False, 100),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raw-port", type=int)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--rate", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--packet-ms", type=int, default=50)
    ap.add_argument("--paced", action="store_true")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    ap.add_argument("--only", default=None, help="comma-separated scenario names")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.device:
        return device_main(args)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    results = []
    peers = []
    for rep in range(args.reps):
        for name in names:
            nchan, rate, seconds, paced, packet_ms = SCENARIOS[name]
            if args.quick:
                seconds = max(1, seconds // 5)
            r = run_once(name, nchan, rate, seconds, paced, packet_ms)
            r["rep"] = rep
            results.append(r)
            print("%-15s rep %d: %6.2f M samples/s  ack lag %.2f s  server %.2f cores  "
                  "device %.2f cores  lost %d  acked %s  other %.0f%%" % (
                      name, rep, r["samples_per_s"] / 1e6, r["ack_lag"], r["server_cores"],
                      r["device_cores"], r["lost"], r["acked"], r["other_cpu_pct"] or 0),
                  flush=True)
        # the peer, interleaved with our runs
        peer = run_peer(16, 1_000_000, 1 if args.quick else 2, 50)
        peers.append(peer)
        print("peer libmseed per-packet pack: %.2f M samples/s" % (peer / 1e6), flush=True)
    summary = {}
    peer_med = statistics.median(peers)
    for name in names:
        runs = [r for r in results if r["scenario"] == name]
        rate = statistics.median(r["samples_per_s"] for r in runs)
        cores = statistics.median(r["server_cores"] for r in runs)
        ok = all(r["lost"] == 0 and r["acked"] for r in runs)
        nchan, chan_rate, _, paced, _ = SCENARIOS[name]
        # real time: how many such loads one core would carry; max: the
        # sustained rate over the scenario's real-time rate
        headroom = (1 / cores if cores else float("inf")) if paced else rate / (nchan * chan_rate)
        summary[name] = dict(samples_per_s=rate, server_cores=cores, no_loss=ok,
                             headroom=headroom, vs_peer=None if paced else rate / peer_med,
                             min=min(r["samples_per_s"] for r in runs),
                             max=max(r["samples_per_s"] for r in runs))
    print("\n| scenario | samples/s (median) | min..max | server cores | no loss | headroom "
          "| vs libmseed per-packet packing |")
    print("|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        print("| %s | %.2f M | %.2f..%.2f M | %.2f | %s | %.2fx | %s |" % (
            name, s["samples_per_s"] / 1e6, s["min"] / 1e6, s["max"] / 1e6,
            s["server_cores"], "yes" if s["no_loss"] else "NO", s["headroom"],
            "-" if s["vs_peer"] is None else "%.2fx" % s["vs_peer"]))
    print("peer (libmseed per-packet packing, 16 x 1 MHz, 50 ms packets): %.2f M samples/s"
          % (peer_med / 1e6))
    rt = summary.get("realtime-16x1M")
    if rt:
        verdict = rt["no_loss"] and rt["server_cores"] < 1.0
        print("target 16 x 1 MHz real time, no loss, server < 1 core: %s"
              % ("PASS" if verdict else "MISS"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(results=results, peer=peers, summary=summary), fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
