"""The harness's SeedLink plugin, and the records it and the other feeds send.

A server that runs plugins (ours, SeisComP's seedlink) starts it from
seedlink.ini; fd 63 is its pipe into the server::

    plugin benchfeed cmd = "exec PYTHON -m seedlink_fast.benchtool.feeder --fifo FIFO #"

It then waits for orders written into FIFO, one JSON object per line, and
appends one JSON line per finished order to FIFO + ".status":

``{"op": "latency", "id": ID, "station": "XX.LAT", "count": N, "rate": R, "tag0": T}``
    N records at R per second.  Record i carries the tag (T + i) mod 10^6 in
    its sequence-number field and, in its last 8 bytes (unused Steim2
    frame space), the CLOCK_MONOTONIC time in ns taken just before it is
    written to fd 63.  A receiver on the same machine takes receipt time
    minus that stamp: the time from the record entering the server to its
    delivery.
``{"op": "replay", "id": ID, "path": P, "rate": R}``
    Write the plugin stream file P (type-13 packets, see
    :func:`build_plugin_stream`) to fd 63: as fast as the server reads it
    (R = 0), or R records per second.
``{"op": "quit"}``

The status line gives the CLOCK_MONOTONIC ns of the first and the last
write (``t_start_ns``, ``t_end_ns``), the records written and an error, if
any.  The plugin is bounded: at most --max-orders orders, --max-seconds of
life; a server shutting down ends it (SIGTERM, or EPIPE on fd 63).
"""
import argparse
import io
import json
import os
import stat
import struct
import sys
import time

import numpy as np

RECLEN = 512
PLUGIN_HEADER = 60                   # type-13 plugin packet header before the record
STAMP = struct.Struct(">Q")          # the write time, in the record's last 8 bytes
STAMP_AT = RECLEN - STAMP.size
T0_NS = 1_780_000_000_000_000_000    # 2026-05-28: start of the replayed data


def plugin_header(station):
    """The 60-byte header PluginWriter.send_mseed writes before a record of `station`."""
    from ..plugin import PluginWriter

    out = io.BytesIO()
    PluginWriter(out).send_mseed(station, bytes(RECLEN))
    return out.getvalue()[:PLUGIN_HEADER]


def stamped_records(station, count, rate, tag0, start_ns=None, channel="HHZ"):
    """`count` 512-byte Steim2 records of 100 samples each, consecutive in
    time (sample rate 100 * `rate`, so one record lasts one period), the
    tag (tag0 + i) mod 10^6 in the sequence field and 8 free bytes at the end."""
    from ..mseed import pack

    net, sta = station.split(".")
    if start_ns is None:
        start_ns = time.time_ns() // 1000 * 1000
    rng = np.random.default_rng(tag0)
    data = np.cumsum(rng.integers(-40, 41, count * 100)).astype(np.int32)
    period_ns = int(round(1e9 / rate))
    out = []
    for i in range(count):
        rec = bytearray(pack(data[i * 100:(i + 1) * 100], network=net, station=sta,
                             location="00", channel=channel,
                             starttime_ns=start_ns + i * period_ns,
                             sample_rate=100.0 * rate))
        if len(rec) != RECLEN or any(rec[STAMP_AT:]):
            raise RuntimeError("a latency record needs its last 8 bytes free")
        rec[0:6] = b"%06d" % ((tag0 + i) % 1_000_000)
        out.append(rec)
    return out


def record_tag(record):
    """The tag of a record made by :func:`stamped_records` (its sequence field)."""
    return int(record[0:6])


def ingest_records(station, count, seed=1, channel="HHZ"):
    """`count` 512-byte Steim2 records of one 100 Hz stream (a random walk),
    continuous in time from T0_NS, joined into one bytes object."""
    from ..mseed import RecordPacker

    net, sta = station.split(".")
    packer = RecordPacker(net, sta, "00", channel, 100, encoding="steim2", starttime_ns=T0_NS)
    rng = np.random.default_rng(seed)
    level, out, have = 0, [], 0
    while have < count:
        steps = rng.integers(-300, 301, 1 << 20)
        steps[0] += level
        walk = np.cumsum(steps)
        level = int(walk[-1])
        recs = packer.feed(walk.astype(np.int32))[:count - have]
        out.extend(recs)
        have += len(recs)
    return b"".join(out)


def build_plugin_stream(path, station, count, seed=1):
    """Write `count` type-13 plugin packets of `station` to `path` (kept and
    reused when a file of the right size is there); returns the path."""
    size = count * (PLUGIN_HEADER + RECLEN)
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    header = np.frombuffer(plugin_header(station), dtype=np.uint8)
    records = np.frombuffer(ingest_records(station, count, seed), dtype=np.uint8)
    block = np.empty((count, PLUGIN_HEADER + RECLEN), dtype=np.uint8)
    block[:, :PLUGIN_HEADER] = header
    block[:, PLUGIN_HEADER:] = records.reshape(count, RECLEN)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as fh:
        fh.write(block.tobytes())
    os.replace(tmp, path)
    return path


# -- the plugin process ----------------------------------------------------------------

def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def pace(due):
    """Sleep until time.monotonic() reaches `due` (short spins at the end)."""
    while True:
        left = due - time.monotonic()
        if left <= 0:
            return
        time.sleep(left - 0.0005 if left > 0.001 else 0)


def _latency(order, fd):
    from ..plugin import PluginWriter

    count = min(int(order["count"]), 100_000)
    rate = float(order["rate"])
    records = stamped_records(order["station"], count, rate, int(order["tag0"]))
    writer = PluginWriter(fd)
    station = order["station"]
    stamp, mono = STAMP.pack_into, time.monotonic_ns
    t0 = time.monotonic() + 0.02
    first = last = None
    for i, rec in enumerate(records):
        pace(t0 + i / rate)
        now = mono()
        stamp(rec, STAMP_AT, now)
        writer.send_mseed(station, rec)
        first = first or now
        last = now
    return {"records": count, "t_start_ns": first, "t_end_ns": last}


def _replay(order, fd):
    packet = PLUGIN_HEADER + RECLEN
    rate = float(order.get("rate") or 0)
    with open(order["path"], "rb") as fh:
        data = fh.read()
    if len(data) % packet:
        raise ValueError("%s is not a whole number of plugin packets" % order["path"])
    total = len(data) // packet
    view = memoryview(data)
    t_start = time.monotonic_ns()
    if rate <= 0:
        _write_all(fd, view)
    else:
        # every 2 ms, whatever is due by then (at least one record)
        t0, done = time.monotonic(), 0
        while done < total:
            due = min(total, max(done + 1, int((time.monotonic() - t0) * rate) + 1))
            _write_all(fd, view[done * packet:due * packet])
            done = due
            if done < total:
                pace(t0 + done / rate if rate < 500 else time.monotonic() + 0.002)
    return {"records": total, "t_start_ns": t_start, "t_end_ns": time.monotonic_ns()}


def _read_orders(fifo):
    """Block until a writer opens the FIFO; return the JSON orders it wrote."""
    fd = os.open(fifo, os.O_RDONLY)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return [json.loads(line) for line in b"".join(chunks).splitlines() if line.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m seedlink_fast.benchtool.feeder",
                                 description="the seedlink-fast bench plugin (fd 63)")
    ap.add_argument("--fifo", required=True, help="orders come in here (JSON lines)")
    ap.add_argument("--fd", type=int, default=63, help="the pipe to the server")
    ap.add_argument("--max-orders", type=int, default=100_000)
    ap.add_argument("--max-seconds", type=float, default=7 * 86400.0)
    args = ap.parse_args(argv)
    status = args.fifo + ".status"
    born = time.monotonic()
    handled = 0
    while handled < args.max_orders and time.monotonic() - born < args.max_seconds:
        for order in _read_orders(args.fifo):
            handled += 1
            op = order.get("op")
            if op == "quit":
                return 0
            out = {"id": order.get("id"), "op": op, "error": None}
            try:
                if op == "latency":
                    out.update(_latency(order, args.fd))
                elif op == "replay":
                    out.update(_replay(order, args.fd))
                else:
                    out["error"] = "unknown op %r" % op
            except BrokenPipeError:
                return 0                        # the server is gone
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                out["error"] = "%s: %s" % (type(exc).__name__, exc)
            with open(status, "a") as fh:
                fh.write(json.dumps(out) + "\n")
    return 0


class PluginFeed:
    """The harness's side of the feeder: orders into the FIFO, answers from
    the status file."""

    def __init__(self, fifo):
        self.fifo = fifo
        self.status = fifo + ".status"
        self._next = int(time.time() * 1000) % 1_000_000_000

    def order(self, op, timeout=10.0, **kw):
        """Send one order; returns its id.  Raises TimeoutError when no
        plugin reads the FIFO within `timeout`."""
        if not stat.S_ISFIFO(os.stat(self.fifo).st_mode):
            raise ValueError("%s is not a FIFO (the feeder plugin's, from "
                             "`seedlink-fast bench setup`?)" % self.fifo)
        self._next += 1
        line = json.dumps(dict(kw, op=op, id=self._next)).encode() + b"\n"
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:                     # ENXIO: the plugin is not reading yet
                if time.monotonic() > deadline:
                    raise TimeoutError("no plugin reads %s (is the feeder plugin in "
                                       "seedlink.ini?)" % self.fifo) from None
                time.sleep(0.01)
        try:
            os.set_blocking(fd, True)
            _write_all(fd, line)
        finally:
            os.close(fd)
        return self._next

    def wait(self, order_id, timeout):
        """The status line of order `order_id` (polled); TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.status) as fh:
                    for line in fh:
                        try:
                            doc = json.loads(line)
                        except ValueError:
                            continue            # a line still being written
                        if doc.get("id") == order_id:
                            return doc
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError("the feeder plugin did not finish order %d in %.0f s"
                           % (order_id, timeout))


def plugin_line(fifo, python=None, name="benchfeed"):
    """The seedlink.ini line that runs the feeder on `fifo`."""
    return ('plugin %s cmd = "exec %s -m seedlink_fast.benchtool.feeder --fifo %s #"\n'
            '             start_retry = 0\n             shutdown_wait = 5\n'
            % (name, python or sys.executable, fifo))


if __name__ == "__main__":
    sys.exit(main())
