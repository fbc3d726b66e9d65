"""``latency``: the time from a record entering the server to its receipt
by K real-time clients (``STATION``, ``DATA`` without a sequence number,
``END``), at a steady rate.

The feeds, and what "entering the server" is for each:

plugin (default; any server that runs plugins: ours, SeisComP)
    The feeder plugin writes one 512-byte record per period to fd 63, its
    CLOCK_MONOTONIC write time in the record's last 8 bytes.
raw (ours only: the raw ingest port)
    The harness pushes one packet per period that fills exactly one record
    (see :mod:`.rawpush`) and notes the send time of each.
datalink (ringserver)
    The harness WRITEs one stamped record per period.

latency = receipt time (taken right after the client's ``recv``) - send
time, on one machine's monotonic clock.  Both ends are Python processes:
the figures include a few tens of µs of Python on either side.
"""
import random
import selectors
import socket
import statistics
import time

from .datalink import DataLinkWriter, frame, stream_id, write_header
from .feeder import STAMP, STAMP_AT, PluginFeed, pace, record_tag, stamped_records
from .procfs import CpuMeter
from .proto import PACKET, command, handshake_plan
from .rawpush import probe_tag, send_probes
from .scenarios import _collect, _ctx, _split, percentile


def parse_feed(text):
    """'plugin:FIFO' -> ("plugin", FIFO); 'raw:HOST:PORT' / 'datalink:HOST:PORT'
    -> (kind, (host, port)).  ValueError otherwise."""
    kind, _, rest = (text or "").partition(":")
    if kind == "plugin" and rest:
        return kind, rest
    if kind in ("raw", "datalink") and rest:
        host, _, port = rest.rpartition(":")
        return kind, (host or "127.0.0.1", int(port))
    raise ValueError("--feed must be plugin:FIFO, raw:HOST:PORT or datalink:HOST:PORT, "
                     "not %r" % text)


def _receiver(wid, addr, nconns, plan, mode, params, barrier, queue):
    """Real-time clients: (connection, tag, stamp or None, receipt ns) per record."""
    got, errors, socks = [], [], []
    try:
        for _ in range(nconns):
            sock = socket.create_connection(addr, timeout=params["timeout"])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for line, nlines in plan:
                command(sock, line, nlines, params["timeout"])
            sock.sendall(b"END\r\n")
            sock.setblocking(False)
            socks.append(sock)
        barrier.wait(timeout=params["timeout"] + 30)
        sel = selectors.DefaultSelector()
        bufs = [bytearray() for _ in socks]
        counts = [0] * len(socks)
        for k, sock in enumerate(socks):
            sel.register(sock, selectors.EVENT_READ, k)
        expect, active = params["expect"], len(socks)
        deadline = time.monotonic() + params["max_seconds"]
        mono, unpack = time.monotonic_ns, STAMP.unpack_from
        while active and time.monotonic() < deadline:
            for key, _ in sel.select(0.2):
                k = key.data
                try:
                    chunk = socks[k].recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    chunk, errors = b"", errors + [repr(exc)]
                now = mono()
                if not chunk:
                    errors.append("connection %d closed after %d records" % (k, counts[k]))
                    sel.unregister(socks[k])
                    active -= 1
                    continue
                buf = bufs[k]
                buf += chunk
                lo = 0
                while len(buf) - lo >= PACKET:
                    if buf[lo:lo + 2] != b"SL":
                        raise ConnectionError("lost framing: %r" % bytes(buf[lo:lo + 8]))
                    rec = buf[lo + 8:lo + PACKET]
                    if mode == "stamp":
                        got.append((k, record_tag(rec), unpack(rec, STAMP_AT)[0], now))
                    else:
                        got.append((k, probe_tag(rec), None, now))
                    counts[k] += 1
                    lo += PACKET
                del buf[:lo]
                if counts[k] >= expect:
                    sel.unregister(socks[k])
                    active -= 1
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.append("%s: %s" % (type(exc).__name__, exc))
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass
    for sock in socks:
        sock.close()
    queue.put({"worker": wid, "conns": nconns, "got": got, "errors": errors})


def _feed_datalink(addr, station, count, rate, tag0, timeout):
    """Stamped records by DataLink WRITE; returns None (stamps are in the records)."""
    writer = DataLinkWriter(addr, timeout=timeout)
    try:
        net, sta = station.split(".")
        sid = stream_id(net, sta, "00", "HHZ", writer.proto)
        start_us = time.time_ns() // 1000
        period_us = 1e6 / rate
        records = stamped_records(station, count, rate, tag0, start_ns=start_us * 1000)
        t0 = time.monotonic() + 0.02
        for i, rec in enumerate(records):
            us = start_us + int(i * period_us)
            head = write_header(sid, us, us + int(period_us * 0.99), len(rec))
            pace(t0 + i / rate)
            STAMP.pack_into(rec, STAMP_AT, time.monotonic_ns())
            writer.send_raw(frame(head, rec))
    finally:
        writer.close()


def run_latency(addr, feed, station, clients, count=1000, rate=100.0, server_pid=None,
                timeout=10.0, workers=None):
    """One latency run; `feed` as parse_feed returns it."""
    kind, where = feed
    mode = "probe" if kind == "raw" else "stamp"
    if kind == "raw":
        tag0 = random.randrange(1, 1 << 26)
        keys = {tag0 + i: i for i in range(count)}
    else:
        tag0 = random.randrange(0, 1_000_000)
        keys = {(tag0 + i) % 1_000_000: i for i in range(count)}
    plan = handshake_plan(station, None, "next")
    split = _split(clients, workers or min(clients, 2))
    ctx = _ctx()
    barrier, queue = ctx.Barrier(len(split) + 1), ctx.Queue()
    run_s = count / rate
    params = {"timeout": timeout, "expect": count, "max_seconds": run_s + timeout + 5}
    procs = [ctx.Process(target=_receiver, args=(w, addr, n, plan, mode, params, barrier, queue),
                         daemon=True) for w, n in enumerate(split)]
    for p in procs:
        p.start()
    out = {"clients": clients, "feed": kind, "station": station, "count": count, "rate": rate}
    try:
        barrier.wait(timeout=timeout * max(split) + 30)
    except Exception:  # noqa: BLE001 - a receiver failed; its error comes with the results
        pass
    time.sleep(0.2)                       # the servers have handled the ENDs
    cpu = CpuMeter(server_pid).start()
    sent = None
    try:
        if kind == "plugin":
            plugin = PluginFeed(where)
            status = plugin.wait(plugin.order("latency", timeout=timeout, station=station,
                                              count=count, rate=rate, tag0=tag0),
                                 run_s + timeout + 10)
            if status.get("error"):
                raise RuntimeError("feeder: %s" % status["error"])
        elif kind == "raw":
            sent = send_probes(where, station, 1, count, rate, tag0, timeout)
        else:
            _feed_datalink(where, station, count, rate, tag0, timeout)
    except (OSError, RuntimeError, ValueError) as exc:
        out["error"] = ["feed: %s: %s" % (type(exc).__name__, exc)]
        for p in procs:                   # nothing will come: do not wait for it
            p.terminate()
    results = _collect(procs, queue, 0.5 if "error" in out else params["max_seconds"] + 30)
    out.update(cpu.stop())
    errors = [e for r in results for e in r["errors"]]
    if len(results) < len(split):
        errors.append("%d of %d receivers gave no result" % (len(split) - len(results),
                                                              len(split)))
    if errors:
        out.setdefault("error", []).extend(errors[:5])
    out.update(summarize(results, keys, sent, count, clients))
    if out.get("server_cpu_s") is not None:
        out["server_cpu_us_per_record"] = round(1e6 * out["server_cpu_s"] / count, 2)
    return out


def summarize(results, keys, sent, count, clients):
    """Latency figures over every (client, record), plus loss and duplicates."""
    lat_us, first, seen = [], [], {}
    foreign = 0
    for r in results:
        base = r["worker"] * 100_000          # a client id unique over workers
        for k, tag, stamp, now in r["got"]:
            index = keys.get(tag)
            if index is None or (sent is not None and tag not in sent):
                foreign += 1                  # an earlier run's straggler
                continue
            seen[(base + k, tag)] = seen.get((base + k, tag), 0) + 1
            us = (now - (stamp if stamp is not None else sent[tag])) / 1e3
            lat_us.append(us)
            if index < 10:
                first.append(us)
    received = len(lat_us)
    lat_us.sort()
    out = {"received": received, "expected": count * clients,
           "lost": count * clients - len(seen),
           "duplicates": received - len(seen), "foreign": foreign,
           "latencies_us": [round(v, 1) for v in lat_us]}
    if lat_us:
        ms = [v / 1e3 for v in lat_us]
        out.update({"min_ms": round(ms[0], 4), "median_ms": round(statistics.median(ms), 4),
                    "p90_ms": round(percentile(ms, 90), 4), "p99_ms": round(percentile(ms, 99), 4),
                    "max_ms": round(ms[-1], 4),
                    "first10_max_ms": round(max(first) / 1e3, 4) if first else None})
    return out

