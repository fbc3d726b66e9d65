#!/usr/bin/env python3
"""Load generators and measuring clients for ``bench/bench_server.py``.

Everything here talks to a server on 127.0.0.1 only, and every loop is
bounded in count and in time.  The pieces:

* :func:`build_fanout_stream` -- a plugin byte stream (fd 63 protocol) of N
  type-13 packets, each one 512-byte Steim2 record of one station, packed
  with ``seedlink_fast.mseed`` and framed with ``seedlink_fast.plugin``;
  cached on disk, because it is large (572 bytes per record).
* :func:`latency_plugin_main` -- a SeedLink plugin (run by the server with
  its pipe on fd 63): on each command read from a FIFO it sends COUNT
  records at RATE/s, each with its ``CLOCK_MONOTONIC`` write time (ns)
  embedded in the last 8 bytes of the record, which are unused Steim2
  frame space (a 100-sample record fills 2 of its 7 frames).
* :func:`fanout_worker` -- a client process holding several SeedLink v3
  connections (``STATION``/``DATA 000000``/``END``), released together by a
  barrier, counting bytes and checking framing and sequence continuity.
* :func:`latency_receiver` -- a real-time client (``DATA`` without a
  sequence number) timing each record's receipt against its embedded write
  time.
* :class:`IdleHolder` -- a process (with its own raised fd limit) that opens
  and holds idle connections on request.
* /proc helpers for the server's CPU time, RSS and descriptors.

Run as a script only as the latency plugin::

    server_load.py latency-plugin --fifo PATH --station NET.STA
"""

import argparse
import io
import os
import resource
import selectors
import socket
import statistics
import struct
import sys
import time

from seedlink_fast.benchtool.proto import command, read_lines

HOST = "127.0.0.1"
RECLEN = 512
PACKET = 8 + RECLEN                     # SeedLink 3 packet: "SLxxxxxx" + record
SEQ_MOD = 1 << 24
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STAMP = struct.Struct(">Q")              # write time, last 8 bytes of a latency record
STAMP_AT = RECLEN - STAMP.size
T0_NS = 1_780_000_000_000_000_000        # 2026-05-28: start time of the synthetic data


# ---------------------------------------------------------------------------
# /proc: the server's CPU time, memory and descriptors
# ---------------------------------------------------------------------------

def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), seconds; None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid, key):
    """A ``/proc/<pid>/status`` value in kB (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_rss_bytes(pid):
    """Current resident set size from ``/proc/<pid>/statm`` (cheap), bytes."""
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return None


def proc_fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def machine_cpu_ticks():
    """(total, idle) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return sum(vals), vals[3] + vals[4]


def busy_pct(t0, t1):
    total, idle = t1[0] - t0[0], t1[1] - t0[1]
    return round(100.0 * (total - idle) / total, 1) if total > 0 else None


def foreign_cpu_ticks():
    """{pid: utime+stime ticks} of every process outside this process group
    (the driver, its workers, the server and its plugins share one group)."""
    mine = os.getpgid(0)
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        try:
            # own group; kernel threads (kthreadd's children) do our loopback softirq work
            if int(fields[2]) == mine or int(fields[1]) == 2 or entry == "2":
                continue
            out[int(entry)] = int(fields[11]) + int(fields[12])
        except (IndexError, ValueError):
            continue
    return out


class ForeignLoad:
    """CPU used by processes outside this benchmark over a block, % of one CPU."""

    def __enter__(self):
        self.t0, self.s0 = time.monotonic(), foreign_cpu_ticks()
        self.percent = None
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        s1 = foreign_cpu_ticks()
        used = sum(t - self.s0.get(pid, 0) for pid, t in s1.items())
        self.percent = round(100.0 * used / CLK_TCK / wall, 1) if wall > 0 else None
        return False


def wait_quiet(max_other=10.0, max_wait=10.0, probe=0.5):
    """Wait (bounded) until foreign processes use <= max_other % of one CPU."""
    start = time.monotonic()
    while True:
        with ForeignLoad() as load:
            time.sleep(probe)
        if load.percent <= max_other or time.monotonic() - start + probe > max_wait:
            return load.percent


def raise_nofile(want=None):
    """Raise RLIMIT_NOFILE to `want` (default: the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(hard, max(soft, want))
    if hard == resource.RLIM_INFINITY and want is None:
        target = 1 << 20
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


from seedlink_fast.benchtool.scenarios import percentile  # noqa: E402  (one definition)


def summarize_ms(values_ms):
    """{n, min, median, p90, p99, max} of a list of milliseconds (rounded)."""
    v = sorted(values_ms)
    if not v:
        return {"n": 0}
    r = lambda x: round(x, 4)           # noqa: E731
    return {"n": len(v), "min_ms": r(v[0]), "median_ms": r(statistics.median(v)),
            "p90_ms": r(percentile(v, 90)), "p99_ms": r(percentile(v, 99)), "max_ms": r(v[-1])}


# ---------------------------------------------------------------------------
# Data: the fan-out plugin stream, the latency records
# ---------------------------------------------------------------------------

def plugin_mseed_header(station):
    """The 60-byte type-13 header ``PluginWriter.send_mseed`` writes for `station`."""
    from seedlink_fast.plugin import PluginWriter

    out = io.BytesIO()
    PluginWriter(out).send_mseed(station, bytes(RECLEN))
    data = out.getvalue()
    assert len(data) == 60 + RECLEN, len(data)
    return data[:60]


def build_fanout_stream(path, count, station="XX.FAN", channel="HHZ", seed=1, log=None):
    """Write `count` type-13 plugin packets (one station, 512-byte Steim2
    records of a 100 Hz random walk, continuous in time) to `path`.

    Reuses an existing file of the right size.  Returns the path."""
    import numpy as np

    from seedlink_fast.mseed import RecordPacker

    header = plugin_mseed_header(station)
    size = count * (len(header) + RECLEN)
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    net, sta = station.split(".")
    t = time.monotonic()
    rng = np.random.default_rng(seed)
    packer = RecordPacker(net, sta, "00", channel, 100, encoding="steim2",
                          starttime_ns=T0_NS)
    hdr = np.frombuffer(header, dtype=np.uint8)
    tmp = path + ".tmp"
    written = 0
    level = 0.0
    with open(tmp, "wb") as fh:
        while written < count:
            steps = rng.normal(0.0, 150.0, 1 << 22)
            steps[0] += level
            walk = np.cumsum(steps)
            level = float(walk[-1])
            recs = packer.feed(walk.astype(np.int32))
            recs = recs[:count - written]
            if not recs:
                continue
            block = np.empty((len(recs), len(header) + RECLEN), dtype=np.uint8)
            block[:, :len(header)] = hdr
            block[:, len(header):] = np.frombuffer(b"".join(recs), dtype=np.uint8).reshape(-1, RECLEN)
            fh.write(block.tobytes())
            written += len(recs)
    os.replace(tmp, path)
    if log:
        log("built %s: %d records in %.1f s" % (path, count, time.monotonic() - t))
    return path


def latency_records(count, base, station="XX.LAT", channel="HHZ", seed=2):
    """`count` records of 100 samples at 10 kHz (10 ms each, consecutive in
    time), the miniSEED sequence field set to base+i (decimal, mod 1e6);
    the last 8 bytes are free for the write time."""
    import numpy as np

    from seedlink_fast.mseed import pack

    net, sta = station.split(".")
    rng = np.random.default_rng(seed + base)
    data = np.cumsum(rng.normal(0, 50, count * 100)).astype(np.int32)
    out = []
    for i in range(count):
        rec = bytearray(pack(data[i * 100:(i + 1) * 100], network=net, station=sta,
                             location="00", channel=channel,
                             starttime_ns=T0_NS + (base + i) * 10_000_000, sample_rate=10000))
        if len(rec) != RECLEN or any(rec[STAMP_AT:]):
            raise RuntimeError("latency record has no free tail")
        rec[0:6] = b"%06d" % ((base + i) % 1_000_000)
        out.append(rec)
    return out


# ---------------------------------------------------------------------------
# The latency plugin (runs under the server, writes to fd 63)
# ---------------------------------------------------------------------------

def latency_plugin_main(argv):
    ap = argparse.ArgumentParser(prog="server_load.py latency-plugin")
    ap.add_argument("--fifo", required=True, help="command FIFO: 'run COUNT RATE BASE' | 'quit'")
    ap.add_argument("--station", default="XX.LAT")
    ap.add_argument("--fd", type=int, default=63)
    ap.add_argument("--max-runs", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=1800.0, help="lifetime bound")
    args = ap.parse_args(argv)
    header = bytes(plugin_mseed_header(args.station))
    born = time.monotonic()
    for _ in range(args.max_runs):
        if time.monotonic() - born > args.max_seconds:
            break
        fd = os.open(args.fifo, os.O_RDONLY)       # blocks until the driver writes
        try:
            cmd = b""
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                cmd += chunk
        finally:
            os.close(fd)
        words = cmd.decode().split()
        if not words or words[0] != "run":
            break
        count, rate, base = int(words[1]), float(words[2]), int(words[3])
        count = min(count, 100_000)
        recs = latency_records(count, base, station=args.station)
        period = 1.0 / rate
        out = args.fd
        pack_into = STAMP.pack_into
        mono = time.monotonic_ns
        t0 = time.monotonic() + 0.05
        deadline = t0 + count * period * 2 + 30
        for i, rec in enumerate(recs):
            target = t0 + i * period
            while True:
                left = target - time.monotonic()
                if left <= 0:
                    break
                time.sleep(left if left < 0.002 else left - 0.001)
            pkt = bytearray(header)
            pkt += rec
            pack_into(pkt, len(header) + STAMP_AT, mono())
            os.write(out, pkt)                    # 572 bytes < PIPE_BUF: one atomic write
            if time.monotonic() > deadline:
                break
    # stay alive (the server would log the exit); bounded
    time.sleep(max(0.0, min(3600.0, args.max_seconds - (time.monotonic() - born))))
    return 0


def latency_command(fifo, count, rate, base, timeout=10.0):
    """Tell the latency plugin to start a run (opening the FIFO blocks until
    the plugin reads it; bounded by a non-blocking open with retries)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:                           # ENXIO: no reader yet
            if time.monotonic() > deadline:
                raise TimeoutError("latency plugin is not reading its FIFO")
            time.sleep(0.01)
    try:
        os.set_blocking(fd, True)
        os.write(fd, b"run %d %g %d\n" % (count, rate, base))
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# SeedLink v3 client pieces
# ---------------------------------------------------------------------------

def info_stations_end_seq(port, timeout=5.0):
    """{(net, sta): (begin_seq, end_seq)} from INFO STATIONS (SLINFO records)."""
    import re

    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        s.sendall(b"INFO STATIONS\r\n")
        xml = b""
        buf = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while len(buf) < PACKET:
                d = s.recv(65536)
                if not d:
                    raise ConnectionError("EOF during INFO")
                buf += d
            pkt, buf = buf[:PACKET], buf[PACKET:]
            if pkt[:6] != b"SLINFO":
                raise ConnectionError("not an INFO packet: %r" % pkt[:8])
            rec = pkt[8:]
            nsamp = int.from_bytes(rec[30:32], "big")
            xml += rec[64:64 + nsamp]
            if pkt[6:8] != b" *":
                break
    finally:
        s.close()
    out = {}
    for m in re.finditer(rb'<station name="([^"]*)" network="([^"]*)"[^>]*?begin_seq="([0-9A-F]+)"'
                         rb'[^>]*?end_seq="([0-9A-F]+)"', xml):
        out[(m.group(2).decode(), m.group(1).decode())] = (int(m.group(3), 16), int(m.group(4), 16))
    return out


class FanConn:
    """One fan-out client connection; it only counts and checks framing."""

    __slots__ = ("sock", "bytes", "records", "first_seq", "t_first", "t_last", "done",
                 "error", "limit", "checks")

    def __init__(self, limit):
        self.sock = None
        self.bytes = 0
        self.records = 0
        self.first_seq = None
        self.t_first = self.t_last = None
        self.done = False
        self.error = None
        self.limit = limit
        self.checks = 0


def fanout_worker(wid, port, nconns, station, start_hex, expect, barrier, queue, max_seconds,
                  use_fetch=False, rcvbuf=0):
    """A client process: open `nconns` connections, handshake each
    (STATION sta net / DATA start / -> OK each), wait on the barrier, send
    END to all, then read until each has `expect` records (and close it),
    or until `max_seconds`.

    Checks on every chunk, O(1): the first packet boundary that falls in the
    chunk must start with 'SL' and carry the sequence number first_seq +
    records-so-far (mod 2^24): any lost, repeated or torn packet shows."""
    result = {"worker": wid, "conns": []}
    conns = []
    try:
        raise_nofile(nconns + 64)
        sta, net = station.split(".")[1], station.split(".")[0]
        t_hs = []
        for _ in range(nconns):
            c = FanConn(expect)
            s = socket.create_connection((HOST, port), timeout=20)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            t = time.monotonic()
            command(s, "STATION %s %s" % (sta, net))
            command(s, "%s %s" % ("FETCH" if use_fetch else "DATA", start_hex))
            t_hs.append(time.monotonic() - t)
            c.sock = s
            conns.append(c)
        result["handshake_ms_median"] = round(1e3 * statistics.median(t_hs), 3)
        barrier.wait(timeout=120)
        t_release = time.monotonic()
        sel = selectors.EpollSelector()
        for c in conns:
            c.sock.setblocking(False)
            c.sock.sendall(b"END\r\n")
            sel.register(c.sock, selectors.EVENT_READ, c)
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        active = len(conns)
        deadline = t_release + max_seconds
        mono = time.monotonic
        while active:
            now = mono()
            if now > deadline:
                break
            for key, _ in sel.select(0.5):
                c = key.data
                try:
                    n = c.sock.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    n = -1
                    c.error = repr(exc)
                if n <= 0:
                    if n == 0 and c.records < c.limit:
                        c.error = c.error or "EOF after %d records" % c.records
                    c.done = True
                else:
                    off = c.bytes % PACKET
                    p0 = (PACKET - off) % PACKET
                    if p0 + 8 <= n:
                        if buf[p0:p0 + 2] != b"SL":
                            c.error = "lost framing after %d bytes: %r" % (c.bytes + p0, bytes(buf[p0:p0 + 8]))
                            c.done = True
                        else:
                            seq = int(buf[p0 + 2:p0 + 8], 16)
                            k = (c.bytes + p0) // PACKET
                            if c.first_seq is None:
                                c.first_seq = seq
                                c.t_first = mono()
                            elif (c.first_seq + k) % SEQ_MOD != seq:
                                c.error = "sequence %06X at packet %d, expected %06X" % (
                                    seq, k, (c.first_seq + k) % SEQ_MOD)
                                c.done = True
                            c.checks += 1
                    c.bytes += n
                    c.records = c.bytes // PACKET
                    if c.records >= c.limit:
                        c.t_last = mono()
                        c.done = True
                if c.done:
                    active -= 1
                    sel.unregister(c.sock)
                    c.sock.close()
                    if c.t_last is None and c.records:
                        c.t_last = mono()
        t_end = mono()
        for c in conns:
            if not c.done:
                c.t_last = t_end if c.records else None
                c.error = c.error or "time limit (%d of %d records)" % (c.records, c.limit)
                try:
                    c.sock.close()
                except OSError:
                    pass
            result["conns"].append({"records": c.records, "bytes": c.bytes,
                                    "first_seq": c.first_seq, "t_first": c.t_first,
                                    "t_last": c.t_last, "error": c.error, "checks": c.checks})
        result["t_release"] = t_release
        ru = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = ru.ru_utime + ru.ru_stime
    except Exception as exc:                     # noqa: BLE001 - reported to the driver
        result["error"] = repr(exc)
        try:
            barrier.abort()
        except Exception:                        # noqa: BLE001
            pass
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass
    queue.put(result)


def latency_receiver(port, station, expect, ready, queue, max_seconds):
    """Real-time client: STATION / DATA (no sequence) / END; then for each
    record (receipt monotonic ns - embedded write ns, tag)."""
    got = []
    err = None
    s = None
    try:
        sta, net = station.split(".")[1], station.split(".")[0]
        s = socket.create_connection((HOST, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        command(s, "STATION %s %s" % (sta, net))
        command(s, "DATA")
        s.sendall(b"END\r\n")
        ready.set()
        buf = bytearray(1 << 16)
        mv = memoryview(buf)
        hi = 0
        end = time.monotonic() + max_seconds
        s.settimeout(0.25)
        mono = time.monotonic_ns
        unpack = STAMP.unpack_from
        while len(got) < expect and time.monotonic() < end:
            try:
                n = s.recv_into(mv[hi:])
            except socket.timeout:
                continue
            now = mono()
            if n == 0:
                err = "EOF after %d records" % len(got)
                break
            hi += n
            lo = 0
            while hi - lo >= PACKET:
                if buf[lo:lo + 2] != b"SL":
                    raise ConnectionError("lost framing: %r" % bytes(buf[lo:lo + 8]))
                rec = lo + 8
                got.append((int(buf[rec:rec + 6]), now - unpack(buf, rec + STAMP_AT)[0]))
                lo += PACKET
            if lo:
                buf[:hi - lo] = buf[lo:hi]
                hi -= lo
    except Exception as exc:                     # noqa: BLE001
        err = repr(exc)
        ready.set()
    finally:
        if s is not None:
            s.close()
    queue.put({"got": got, "error": err})


def floor_relay(listen_sock, pipe_fd, count, max_seconds, queue, clients=1):
    """The machine's latency floor for the same path: the plainest possible
    relay (blocking reads of the plugin pipe, one ``sendall`` of
    ``SL`` + sequence + record per packet to each of `clients` clients, in
    turn).  It answers OK to every command line until END, like a server in
    multi-station mode."""
    err = None
    conns = []
    try:
        listen_sock.settimeout(20)
        for _ in range(clients):
            c, _ = listen_sock.accept()
            conns.append(c)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.settimeout(20)
            _floor_handshake(c)
        end = time.monotonic() + max_seconds
        pending = b""
        sent = 0
        hdr = 60
        size = hdr + RECLEN
        while sent < count and time.monotonic() < end:
            d = os.read(pipe_fd, 65536)
            if not d:
                break
            pending += d
            while len(pending) >= size:
                packet = b"SL%06X" % (sent % SEQ_MOD) + pending[hdr:size]
                for c in conns:
                    c.sendall(packet)
                pending = pending[size:]
                sent += 1
    except Exception as exc:                     # noqa: BLE001
        err = repr(exc)
    for c in conns:
        c.close()
    queue.put({"relay_error": err})


def _floor_handshake(c):
    """OK to every command line up to END."""
    buf = b""
    while True:
        d = c.recv(4096)
        if not d:
            raise ConnectionError("client left during handshake")
        buf += d
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip() == b"END":
                return
            if line.strip():
                c.sendall(b"OK\r\n")


# ---------------------------------------------------------------------------
# Idle connections, held by a separate process
# ---------------------------------------------------------------------------

def _open_verified(port, timeout):
    """Connect and HELLO; returns (socket or None, outcome)."""
    try:
        s = socket.create_connection((HOST, port), timeout=timeout)
    except OSError as exc:
        return None, "connect:" + type(exc).__name__
    try:
        s.sendall(b"HELLO\r\n")
    except OSError as exc:
        s.close()
        return None, "send:" + type(exc).__name__
    reply, how = read_lines(s, 2, timeout)
    if how != "ok":
        s.close()
        return None, how
    return s, "ok"


def _holder_main(conn, port):
    raise_nofile()
    socks = []
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        op = msg[0]
        if op == "open":
            # ("open", count, max_seconds, max_consecutive_failures)
            _, count, max_s, max_fail = msg
            t0 = time.monotonic()
            fails, consecutive, first_fail = [], 0, None
            opened = 0
            while opened < count and time.monotonic() - t0 < max_s and consecutive < max_fail:
                s, how = _open_verified(port, 2.0)
                if s is None:
                    fails.append(how)
                    consecutive += 1
                    first_fail = len(socks) if first_fail is None else first_fail
                    continue
                consecutive = 0
                socks.append(s)
                opened += 1
            conn.send({"opened": opened, "held": len(socks), "seconds": round(time.monotonic() - t0, 3),
                       "failures": len(fails), "failure_kinds": sorted(set(fails)),
                       "first_failure_at": first_fail})
        elif op == "recheck":
            # do the first and last held connections still answer?
            ok = 0
            sample = socks[:5] + socks[-5:] if len(socks) > 10 else socks
            for s in sample:
                try:
                    s.sendall(b"HELLO\r\n")
                    ok += read_lines(s, 2, 2.0)[1] == "ok"
                except OSError:
                    pass
            conn.send({"checked": len(sample), "ok": ok})
        elif op == "probe_limit":
            # open more until one is refused; ("probe_limit", max_extra)
            _, max_extra = msg
            extra = 0
            outcome = None
            for _ in range(max_extra + 1):
                t = time.monotonic()
                try:
                    s = socket.create_connection((HOST, port), timeout=2.0)
                except OSError as exc:
                    outcome = {"how": "connect:" + type(exc).__name__,
                               "ms": round(1e3 * (time.monotonic() - t), 3)}
                    break
                try:
                    s.sendall(b"HELLO\r\n")
                except OSError:
                    pass
                reply, how = read_lines(s, 2, 2.0)
                if how == "ok":
                    socks.append(s)
                    extra += 1
                    continue
                # refused: how and how fast did the server close it?
                outcome = {"how": how, "reply": reply[:80].decode("latin-1"),
                           "ms": round(1e3 * (time.monotonic() - t), 3)}
                s.close()
                break
            conn.send({"extra_accepted": extra, "held": len(socks), "refused": outcome})
        elif op == "close":
            for s in socks:
                s.close()
            n = len(socks)
            socks = []
            conn.send({"closed": n})
        elif op == "quit":
            break
    for s in socks:
        s.close()


class IdleHolder:
    """A child process that holds idle connections (HELLO answered on each)."""

    def __init__(self, port):
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_holder_main, args=(child, port), daemon=True)
        self.proc.start()

    def call(self, *msg, timeout=120.0):
        self.conn.send(msg)
        if not self.conn.poll(timeout):
            raise TimeoutError("idle holder did not answer %s" % (msg[0],))
        return self.conn.recv()

    def stop(self):
        try:
            self.conn.send(("quit",))
        except OSError:
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def handshake_times(port, station, rounds, max_seconds=60.0):
    """Fresh connection per round: HELLO (2 lines), STATION sta net, DATA;
    reply times (send -> complete reply) per command, ms."""
    sta, net = station.split(".")[1], station.split(".")[0]
    times = {"connect": [], "HELLO": [], "STATION": [], "DATA": []}
    failures = []
    end = time.monotonic() + max_seconds
    for _ in range(rounds):
        if time.monotonic() > end:
            break
        t = time.perf_counter()
        s = socket.create_connection((HOST, port), timeout=5)
        times["connect"].append(1e3 * (time.perf_counter() - t))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for word, line, nl in (("HELLO", "HELLO", 2), ("STATION", "STATION %s %s" % (sta, net), 1),
                                   ("DATA", "DATA", 1)):
                t = time.perf_counter()
                s.sendall(line.encode() + b"\r\n")
                reply, how = read_lines(s, nl, 5.0)
                dt = 1e3 * (time.perf_counter() - t)
                if how != "ok" or (nl == 1 and not reply.startswith(b"OK")):
                    failures.append("%s: %s %r" % (line, how, reply[:40]))
                    break
                times[word].append(dt)
        finally:
            s.close()
    out = {k: summarize_ms(v) for k, v in times.items()}
    out["failures"] = len(failures)
    out["failure_examples"] = failures[:3]
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "latency-plugin":
        sys.exit(latency_plugin_main(sys.argv[2:]))
    sys.exit(__doc__)
