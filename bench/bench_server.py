#!/usr/bin/env python3
"""End-to-end benchmark of the ``seedlink-fast serve`` SeedLink server:
fan-out, latency, handshake and idle connections, against the targets and
the SeisComP seedlink 3.3 / ringserver 4.5.3 anchors measured on this kind
of machine (shared/docs/seiscomp-perf.md, seedlink4.md §4).

The benchmark starts the server itself (a subprocess on 127.0.0.1 with a
fresh buffer directory and RLIMIT_NOFILE raised to the hard limit), records
its CPU time (utime + stime from /proc/<pid>/stat, all threads) and its
peak RSS (VmHWM), and runs these phases against it, in this order:

ingest   The server's plugin ``cat``s a prepared plugin byte stream of
         --records type-13 packets (512-byte Steim2 records of one station,
         XX.FAN, packed by seedlink_fast.mseed and framed as
         PluginWriter.send_mseed frames them; built once and cached) to
         fd 63.  Timed from the start of ``cat`` until INFO STATIONS shows
         end_seq == --records; then end_seq must stay put.  Segments are
         sized so that every record is kept (segsize 10000 x enough
         segments); the memory ring (--buffers) is smaller, so most
         fan-out reads come from the segment files.
fanout   N = 1, 10, 100 SeedLink 3 clients in separate worker processes
         (--workers, each holding N/workers connections): each sends
         ``STATION FAN XX`` and ``DATA 000000`` (one reply each), then all
         are released together by a barrier and send ``END``.  A client
         reads until it has its expected count (every record, or for large N
         --fanout-budget / N records, like SeisComP's N=100 runs), checking
         the SL framing and sequence continuity on every read, then closes.
         Clock: release -> last record of the last client.  Reports the
         aggregate records/s, per-client min/median/max records/s, server
         CPU us per record delivered.
latency  A second plugin (server_load.py latency-plugin) writes one 512-byte
         record every 1/--latency-rate s to fd 63, its CLOCK_MONOTONIC write
         time embedded in the record's unused last 8 bytes; K real-time
         clients (``STATION LAT XX``, ``DATA``, ``END``) take receipt time -
         write time.  The first 10 records are reported separately (a
         start-up stall shows there).
handshake  Fresh connection per round; reply time of HELLO, ``STATION FAN
         XX`` -> OK and DATA -> OK, with no other connection and then with
         --idle idle connections open.
idle     A holder process (its own raised fd limit) opens --idle connections
         one by one, each answering HELLO; RSS delta per connection; then
         it fills the server's ``connections`` limit (--idle + 20) and
         opens one more, which must be closed promptly by the server
         without a reply; after closing all, the server's descriptor count
         must return to where it was.

Every loop is bounded in count and time.  All traffic is on 127.0.0.1.
A default run takes about 2-3 minutes (plus ~10 s the first time, to build
the 572 MB plugin stream in --cache-dir); --quick about 25 s.  The machine
may be shared: each run reports the CPU load of processes outside the
benchmark ("foreign load"), and a noisy fan-out run is redone (--tries).
A latency "floor" run sends the same plugin records through the plainest
Python relay instead of the server, to show what the machine itself costs.

Usage:
  python bench/bench_server.py [--quick] [--json FILE] [--markdown]
                               [--records N] [--clients 1,10,100]
                               [--profile DIR]   # py-spy each fan-out run
"""

import argparse
import json
import multiprocessing as mp
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
try:
    import seedlink_fast
except ImportError:                        # run without an install / PYTHONPATH=src
    sys.path.insert(0, os.path.join(REPO, "src"))
    import seedlink_fast

import _util  # noqa: E402
import server_load as sl  # noqa: E402

FAN_STATION = "XX.FAN"
LAT_STATION = "XX.LAT"
LIMIT_MARGIN = 20                          # connections limit = idle + this

# Targets and anchors (shared/docs/seiscomp-perf.md headline and §2-4;
# seedlink4.md §4.4 for ringserver).  SeisComP fan-out is from disk
# segments (buffers = 100); its N=100 ran 100,000 records per client.
ANCHORS = {
    "ingest": ("0.34 M rec/s (plugin type 13)", "0.69 M rec/s (DataLink, warm)"),
    "fanout1": ("0.43 M rec/s, 2.2 µs/rec", "0.20 M rec/s, 4.8 µs/rec"),
    "fanout10": ("0.28 M (disk) / 0.40 M (mem) rec/s, 2.5-3.2 µs/rec", "0.88 M rec/s, 1.7 µs/rec"),
    "fanout100": ("0.23 M (disk) / 0.27 M (mem) rec/s, 3.7-4.2 µs/rec", "0.89 M rec/s, 1.6 µs/rec"),
    "latency": ("median 0.28 ms, p99 0.6 ms", "median 501 ms, p99 991 ms"),
    "stall": ("41 ms stall (records #0-#3)", "—"),
    "handshake0": ("14 µs median, p99 0.20 ms", "—"),
    "handshake_idle": ("0.10 ms median with 500 idle", "—"),
    "idle": ("1017 (FD_SETSIZE), rejected clients hang", "MaxClients"),
}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind((sl.HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------

INI = """\
[seedlink]
organization = "seedlink-fast benchmark"
network = XX
filebase = "{filebase}"
port = {port}
encoding = steim2
trusted = 127.0.0.0/8
info = streams
info_trusted = all
window_extraction = enabled
window_extraction_trusted = enabled
request_log = {request_log}
stream_check = enabled
connections = {connections}
connections_per_ip = 0
buffers = {buffers}
segments = {segments}
segsize = {segsize}

plugin fanfeed cmd = "sleep 1; date +%s.%N > {work}/cat_start; cat {stream} >&63; date +%s.%N > {work}/cat_end; exec sleep 3600 #"
             start_retry = 0
             shutdown_wait = 5

plugin latfeed cmd = "exec {python} {server_load} latency-plugin --fifo {fifo} --station {lat} #"
             start_retry = 0
             shutdown_wait = 5

station XX.FAN description = "fan-out benchmark"
             name = "FAN"
             network = "XX"

station XX.LAT description = "latency benchmark"
             name = "LAT"
             network = "XX"
             segments = 10
             segsize = 1000
"""


class Server:
    """``seedlink-fast serve`` on 127.0.0.1 with a generated seedlink.ini."""

    def __init__(self, work, stream_path, records, buffers, connections, request_log,
                 server_cmd=None):
        self.work = work
        self.port = free_port()
        self.fifo = os.path.join(work, "latency.fifo")
        os.mkfifo(self.fifo)
        segsize = 10000
        segments = max(2, -(-records // segsize) + 2)
        self.ini = os.path.join(work, "seedlink.ini")
        with open(self.ini, "w") as f:
            f.write(INI.format(
                filebase=os.path.join(work, "buffer"), port=self.port, work=work,
                request_log="enabled" if request_log else "disabled",
                connections=connections, buffers=buffers, segments=segments, segsize=segsize,
                stream=stream_path, python=sys.executable,
                server_load=os.path.join(HERE, "server_load.py"), fifo=self.fifo,
                lat=LAT_STATION))
        self.log_path = os.path.join(work, "server.log")
        self.logf = open(self.log_path, "wb")
        self.nofile = None

        def preexec():
            sl.raise_nofile()

        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        cmd = list(server_cmd or [sys.executable, "-m", "seedlink_fast"])
        self.proc = subprocess.Popen(
            cmd + ["serve", "-f", self.ini, "--bind", sl.HOST],
            stdout=self.logf, stderr=subprocess.STDOUT, cwd=work, env=env, preexec_fn=preexec)
        self.pid = self.proc.pid
        self._wait_listening()
        with open("/proc/%d/limits" % self.pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    self.nofile = int(line.split()[3])

    def _wait_listening(self, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited (%s):\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection((sl.HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server not listening after %.0f s:\n%s" % (timeout, self.log_tail()))

    def alive(self):
        return self.proc.poll() is None

    def cpu(self):
        return sl.proc_cpu_s(self.pid)

    def rss(self):
        return sl.proc_rss_bytes(self.pid)

    def hwm_kb(self):
        return sl.proc_status_kb(self.pid, "VmHWM")

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def log_problems(self, limit=20):
        """Lines of the server log that report errors, warnings or tracebacks."""
        out = []
        with open(self.log_path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                low = line.lower()
                if ("error" in low or "warning" in low or "traceback" in low or "exception" in low
                        or "too many" in low):
                    out.append(line)
        expected = [line for line in out if "too many connections" in line]
        out = [line for line in out if "too many connections" not in line]
        counts = {}
        for line in out:
            key = line.split(": ", 1)[-1][:60]
            counts[key] = counts.get(key, 0) + 1
        return {"lines": len(out), "examples": out[:limit], "kinds": counts,
                "expected_too_many_connections": len(expected)}

    def stop(self, timeout=30.0):
        t = time.monotonic()
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = "killed after %.0f s" % timeout
                self.proc.wait(5)
        self.logf.close()
        return {"returncode": rc, "stop_seconds": round(time.monotonic() - t, 3)}


def wait_ingest(server, records, timeout):
    """Wait for the cat to start, then until FAN's end_seq == records and
    stays there; returns the ingest measurements."""
    start_file = os.path.join(server.work, "cat_start")
    end = time.monotonic() + timeout
    while not os.path.exists(start_file):
        if time.monotonic() > end or not server.alive():
            raise RuntimeError("fan-out feed never started:\n" + server.log_tail())
        time.sleep(0.005)
    cpu0 = server.cpu()
    t_seen = None
    last = None
    while time.monotonic() < end:
        if not server.alive():
            raise RuntimeError("server died during ingest:\n" + server.log_tail())
        st = sl.info_stations_end_seq(server.port)
        last = st.get(("XX", "FAN"))
        if last and last[1] == records % sl.SEQ_MOD:
            t_seen = time.time()
            break
        time.sleep(0.05)
    if t_seen is None:
        raise RuntimeError("ingest incomplete after %.0f s: INFO says %s" % (timeout, last))
    cpu1 = server.cpu()
    with open(start_file) as f:
        t_cat0 = float(f.read())
    # settled: end_seq unchanged for 1 s
    time.sleep(1.0)
    again = sl.info_stations_end_seq(server.port).get(("XX", "FAN"))
    secs = t_seen - t_cat0
    return {"records": records, "seconds": round(secs, 3),
            "records_per_s": round(records / secs), "server_cpu_s": round(cpu1 - cpu0, 3),
            "server_cpu_us_per_record": round(1e6 * (cpu1 - cpu0) / records, 3),
            "begin_seq": last[0], "end_seq": last[1], "settled": again == last,
            "note": "cat start -> INFO end_seq reached (polled every 50 ms)"}


# ---------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------

class Profiler:
    """Optional ``py-spy record`` of the server during a phase (raw stacks)."""

    def __init__(self, outdir, pid):
        self.outdir = outdir
        self.pid = pid
        self.exe = shutil.which("py-spy") if outdir else None
        self.proc = None

    def start(self, name):
        if not self.exe:
            return
        self.path = os.path.join(self.outdir, name + ".txt")
        self.proc = subprocess.Popen(
            [self.exe, "record", "--pid", str(self.pid), "--format", "raw", "--rate", "200",
             "--nonblocking", "-o", self.path, "--duration", "600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self):
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        return top_frames(self.path)


def top_frames(path, n=15):
    """Self and inclusive sample shares per function (lines merged) from
    py-spy raw output; frames present in every sample are left out."""
    self_n, incl_n, total = {}, {}, 0
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None

    def fn(frame):
        name, _, where = frame.partition(" (")
        return "%s (%s)" % (name, where.rsplit(":", 1)[0]) if where else name

    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        total += c
        frames = [fn(f) for f in stack.split(";")]
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + c
        for fr in set(frames):
            incl_n[fr] = incl_n.get(fr, 0) + c
    if not total:
        return None
    incl_n = {k: v for k, v in incl_n.items() if v < 0.98 * total}
    pct = lambda d: [(k, round(100.0 * v / total, 1))          # noqa: E731
                     for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]
    return {"samples": total, "file": path, "self": pct(self_n), "inclusive": pct(incl_n)}


def run_fanout(server, nclients, expect, workers, max_seconds, profiler=None):
    ctx = mp.get_context("fork")
    nw = max(1, min(nclients, workers))
    split = [nclients // nw + (1 if i < nclients % nw else 0) for i in range(nw)]
    barrier = ctx.Barrier(nw + 1)
    q = ctx.Queue()
    procs = [ctx.Process(target=sl.fanout_worker,
                         args=(w, server.port, split[w], FAN_STATION, "000000", expect, barrier, q,
                               max_seconds))
             for w in range(nw)]
    for p in procs:
        p.start()
    if profiler:
        profiler.start("fanout-%d" % nclients)
    try:
        barrier.wait(timeout=180)
    except Exception:                                   # noqa: BLE001 - a worker failed
        pass
    cpu0, m0 = server.cpu(), sl.machine_cpu_ticks()
    results = []
    with sl.ForeignLoad() as other:
        for _ in procs:
            try:
                results.append(q.get(timeout=max_seconds + 60))
            except Exception:                           # noqa: BLE001
                break
    cpu1, m1 = server.cpu(), sl.machine_cpu_ticks()
    prof = profiler.stop() if profiler else None
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
    errors = [r["error"] for r in results if "error" in r]
    conns = [c for r in results for c in r.get("conns", [])]
    out = {"clients": nclients, "workers": nw, "expect_per_client": expect}
    if errors or len(conns) != nclients:
        out["error"] = errors or ["%d of %d clients reported" % (len(conns), nclients)]
        return out
    t_rel = min(r["t_release"] for r in results)
    rel_of = {}
    for r in results:
        for c in r["conns"]:
            rel_of[id(c)] = r["t_release"]
    t_end = max((c["t_last"] for c in conns if c["t_last"]), default=t_rel)
    span = max(t_end - t_rel, 1e-9)
    total = sum(c["records"] for c in conns)
    per_client = sorted(c["records"] / max(c["t_last"] - rel_of[id(c)], 1e-9)
                        for c in conns if c["t_last"])
    cpu = cpu1 - cpu0
    out.update({
        "records_total": total,
        "complete_clients": sum(1 for c in conns if c["records"] >= expect and not c["error"]),
        "seconds": round(span, 3),
        "agg_records_per_s": round(total / span),
        "agg_MB_per_s": round(total * sl.PACKET / span / 1e6, 1),
        "per_client_records_per_s": {"min": round(per_client[0]), "median": round(statistics.median(per_client)),
                                     "max": round(per_client[-1])} if per_client else None,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_pct": round(100 * cpu / span, 1),
        "server_cpu_us_per_record": round(1e6 * cpu / total, 3) if total else None,
        "client_cpu_s": round(sum(r.get("cpu_s", 0) for r in results), 2),
        "machine_busy_pct": sl.busy_pct(m0, m1),
        "foreign_cpu_pct": other.percent,
        "framing_checks": sum(c["checks"] for c in conns),
        "first_seq": min((c["first_seq"] for c in conns if c["first_seq"] is not None), default=None),
        "client_errors": sorted({c["error"] for c in conns if c["error"]})[:5],
        "handshake_ms_median": statistics.median(r["handshake_ms_median"] for r in results),
        "server_rss_MB": round(server.rss() / 1e6, 1),
    })
    if prof:
        out["profile"] = prof
    return out


def start_receivers(ctx, port, clients, count, queue, max_s):
    """`clients` real-time receiver processes of LAT_STATION on port, each
    past its END (they report to queue)."""
    readies, procs = [], []
    for _ in range(clients):
        ev = ctx.Event()
        p = ctx.Process(target=sl.latency_receiver,
                        args=(port, LAT_STATION, count, ev, queue, max_s))
        p.start()
        procs.append(p)
        readies.append(ev)
    for ev in readies:
        ev.wait(20)
    time.sleep(0.5)                       # the ENDs have been handled
    return procs


def run_latency(server, clients, count, rate, base, profiler=None):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    max_s = count / rate + 30
    procs = start_receivers(ctx, server.port, clients, count, q, max_s)
    if profiler:
        profiler.start("latency-%d" % clients)
    cpu0 = server.cpu()
    t0 = time.monotonic()
    with sl.ForeignLoad() as other:
        sl.latency_command(server.fifo, count, rate, base)
        results = []
        for _ in procs:
            try:
                results.append(q.get(timeout=max_s + 30))
            except Exception:             # noqa: BLE001
                break
    wall = time.monotonic() - t0
    cpu1 = server.cpu()
    prof = profiler.stop() if profiler else None
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
    out = latency_summary(results, base)
    out.update({"clients": clients, "rate": rate, "count": count, "foreign_cpu_pct": other.percent,
                "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 2),
                "server_cpu_us_per_record": round(1e6 * (cpu1 - cpu0) / count, 1)})
    if prof:
        out["profile"] = prof
    return out


def latency_summary(results, base):
    lat_all, first, rest = [], [], []
    errors = []
    received = []
    for r in results:
        if r["error"]:
            errors.append(r["error"])
        received.append(len(r["got"]))
        for tag, ns in r["got"]:
            idx = (tag - base) % 1_000_000
            ms = ns / 1e6
            lat_all.append(ms)
            (first if idx < 10 else rest).append(ms)
    worst = sorted(((ns / 1e6, (tag - base) % 1_000_000) for r in results for tag, ns in r["got"]),
                   reverse=True)[:5]
    first10 = [[round(ns / 1e6, 3) for tag, ns in r["got"] if (tag - base) % 1_000_000 < 10]
               for r in results]
    return {"received_per_client": received, "errors": errors[:3],
            "all": sl.summarize_ms(lat_all), "first10": sl.summarize_ms(first),
            "after_first10": sl.summarize_ms(rest), "first10_ms_per_client": first10[:10],
            "worst5_ms_index": [[round(a, 3), b] for a, b in worst]}


def run_latency_floor(work, clients, count, rate, base):
    """Same plugin, same receivers, the plainest Python relay instead of the
    server (see server_load.floor_relay): what this machine gives at best."""
    ctx = mp.get_context("fork")
    fifo = os.path.join(work, "floor.fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    r_fd, w_fd = os.pipe()
    plugin = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "server_load.py"), "latency-plugin", "--fifo", fifo,
         "--station", LAT_STATION, "--fd", str(w_fd), "--max-runs", "1",
         "--max-seconds", str(count / rate + 60)],
        pass_fds=(w_fd,), env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    os.close(w_fd)
    lsock = socket.socket()
    lsock.bind((sl.HOST, 0))
    lsock.listen(clients + 4)
    port = lsock.getsockname()[1]
    q = ctx.Queue()
    max_s = count / rate + 30
    relay = ctx.Process(target=sl.floor_relay, args=(lsock, r_fd, count, max_s, q, clients))
    relay.start()
    procs = [relay] + start_receivers(ctx, port, clients, count, q, max_s)
    results, relay_err = [], None
    try:
        with sl.ForeignLoad() as other:
            sl.latency_command(fifo, count, rate, base)
            for _ in range(clients + 1):
                r = q.get(timeout=count / rate + 60)
                if "relay_error" in r:
                    relay_err = r["relay_error"]
                else:
                    results.append(r)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
        plugin.terminate()
        plugin.wait(10)
        os.close(r_fd)
        lsock.close()
    out = latency_summary(results, base)
    out.update({"clients": clients, "rate": rate, "count": count, "relay_error": relay_err,
                "foreign_cpu_pct": other.percent})
    return out


def run_idle(server, nidle, limit, rounds, station):
    out = {"target": nidle, "connections_limit": limit}
    holder = sl.IdleHolder(server.port)
    try:
        time.sleep(0.3)
        fds0, rss0 = sl.proc_fd_count(server.pid), server.rss()
        r = holder.call("open", nidle, 120.0, 30, timeout=180)
        time.sleep(0.5)
        rss1, fds1 = server.rss(), sl.proc_fd_count(server.pid)
        out.update({"opened": r["opened"], "open_seconds": r["seconds"], "open_failures": r["failures"],
                    "open_failure_kinds": r["failure_kinds"],
                    "rss_delta_MB": round((rss1 - rss0) / 1e6, 2),
                    "bytes_per_connection": round((rss1 - rss0) / max(r["opened"], 1)),
                    "server_fds_before": fds0, "server_fds_held": fds1})
        out["recheck"] = holder.call("recheck")
        out["handshake_with_idle"] = sl.handshake_times(server.port, station, rounds)
        probe = holder.call("probe_limit", limit - r["held"] + 5)
        out["limit_probe"] = probe
        refused = probe.get("refused") or {}
        out["over_limit_closed_cleanly"] = (
            r["held"] + probe["extra_accepted"] == limit
            and refused.get("how") in ("eof", "reset") and refused.get("ms", 1e9) < 1000
            and not refused.get("reply"))
        holder.call("close")
        deadline = time.monotonic() + 10
        fds2 = sl.proc_fd_count(server.pid)
        while fds2 is not None and fds2 > fds0 + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            fds2 = sl.proc_fd_count(server.pid)
        out["server_fds_after_close"] = fds2
        out["fd_leak"] = (fds2 - fds0) if fds2 is not None and fds0 is not None else None
        s, how = sl._open_verified(server.port, 2.0)
        out["fresh_connection_after_close"] = how
        if s is not None:
            s.close()
        out["rss_after_close_MB"] = round(server.rss() / 1e6, 1)
    finally:
        holder.stop()
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def fmt_m(v):
    if v is None:
        return "—"
    return "%.3f M" % (v / 1e6) if v >= 100_000 else "%.1f k" % (v / 1e3)


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def markdown(rep):
    rows = []
    ing = rep.get("ingest")
    if ing:
        rows.append(("ingest %d records (plugin type 13, cat → fd 63)" % ing["records"],
                     "%s rec/s, %.2f µs CPU/rec" % (fmt_m(ing["records_per_s"]), ing["server_cpu_us_per_record"]),
                     "—", "info") + ANCHORS["ingest"])
    for key, f in rep.get("fanout", {}).items():
        n = f["clients"]
        if "error" in f:
            rows.append(("fan-out N=%d" % n, "ERROR: %s" % f["error"], "", "MISS", "", ""))
            continue
        agg = f["agg_records_per_s"]
        us = f["server_cpu_us_per_record"]
        pc = f["per_client_records_per_s"]
        done = "%d/%d complete" % (f["complete_clients"], n)
        if n == 1:
            target, ok = "≥ 0.9 M rec/s", agg >= 0.9e6
        else:
            target, ok = "≥ 1.8 M rec/s and ≤ 0.5 µs/rec", agg >= 1.8e6 and us <= 0.5
        anchors = ANCHORS.get("fanout%d" % n, ("—", "—"))
        rows.append(("fan-out N=%d × %s rec" % (n, "{:,}".format(f["expect_per_client"])),
                     "%s rec/s agg (%.0f MB/s); per client min/med/max %s/%s/%s; %.2f µs CPU/rec, "
                     "server %.0f%% CPU; %s; foreign load %s%%" % (
                         fmt_m(agg), f["agg_MB_per_s"], fmt_m(pc["min"]), fmt_m(pc["median"]),
                         fmt_m(pc["max"]), us, f["server_cpu_pct"], done, f["foreign_cpu_pct"]),
                     target, verdict(ok)) + anchors)
    for lat in rep.get("latency", []):
        a, f10 = lat["all"], lat["first10"]
        k = lat["clients"]
        if not a.get("n"):
            rows.append(("latency K=%d" % k, "ERROR: %s" % lat["errors"], "", "MISS", "", ""))
            continue
        # the anchors and the target are for one client (seiscomp-perf.md §3);
        # for more, the floor relay with as many clients is the yardstick
        ok = a["median_ms"] <= 0.3 and a["p99_ms"] <= 0.6
        rows.append(("latency K=%d, %g rec/s × %d" % (k, lat["rate"], lat["count"]),
                     "median %.3f ms, p90 %.3f, p99 %.3f, max %.3f (%d of %d received); "
                     "%.0f µs server CPU/rec; foreign load %s%%"
                     % (a["median_ms"], a["p90_ms"], a["p99_ms"], a["max_ms"], a["n"],
                        lat["count"] * k, lat["server_cpu_us_per_record"],
                        lat["foreign_cpu_pct"]),
                     "median ≤ 0.3 ms, p99 ≤ 0.6 ms" if k == 1 else "— (anchors are for 1 client)",
                     verdict(ok) if k == 1 else "info") + ANCHORS["latency"])
        ok = f10.get("n") and f10["max_ms"] <= 2.0
        rows.append(("latency K=%d, first 10 records" % k,
                     "median %.3f ms, max %.3f ms" % (f10["median_ms"], f10["max_ms"]) if f10.get("n") else "none",
                     "no stall (max ≤ 2 ms)", verdict(bool(ok))) + ANCHORS["stall"])
        fl = lat.get("floor")
        if fl and fl["all"].get("n"):
            f = fl["all"]
            rows.append(("latency floor K=%d: same plugin and clients, plain blocking relay "
                         "instead of the server" % k,
                         "median %.3f ms, p90 %.3f, p99 %.3f, max %.3f; server − floor: "
                         "median +%.3f ms"
                         % (f["median_ms"], f["p90_ms"], f["p99_ms"], f["max_ms"],
                            a["median_ms"] - f["median_ms"]),
                         "—", "calibration", "(had an extra `cat` hop)", "—"))
    hs = rep.get("handshake0")
    if hs and hs["STATION"].get("n"):
        s = hs["STATION"]
        rows.append(("STATION → OK, 0 idle", "median %.3f ms, p99 %.3f ms (n=%d)" % (s["median_ms"], s["p99_ms"], s["n"]),
                     "—", "info") + ANCHORS["handshake0"])
    idle = rep.get("idle")
    if idle:
        hs = idle.get("handshake_with_idle")
        if hs and hs["STATION"].get("n"):
            s = hs["STATION"]
            rows.append(("STATION → OK, %d idle" % idle["opened"],
                         "median %.3f ms, p99 %.3f ms (n=%d)" % (s["median_ms"], s["p99_ms"], s["n"]),
                         "median ≤ 0.1 ms with 10,000 idle",
                         verdict(s["median_ms"] <= 0.1 if idle["opened"] >= 10000 else None))
                        + ANCHORS["handshake_idle"])
        rows.append(("idle connections held (HELLO answered)",
                     "%d of %d in %.1f s; %.1f kB RSS per connection; first/last 5 still answer: %d/%d"
                     % (idle["opened"], idle["target"], idle["open_seconds"],
                        idle["bytes_per_connection"] / 1e3, idle["recheck"]["ok"], idle["recheck"]["checked"]),
                     "%d" % idle["target"], verdict(idle["opened"] >= idle["target"]
                                                     and idle["recheck"]["ok"] == idle["recheck"]["checked"]))
                    + ANCHORS["idle"])
        ref = idle["limit_probe"].get("refused") or {}
        rows.append(("connection beyond `connections = %d`" % idle["connections_limit"],
                     "accepted %d, next one: %s after %s ms, reply %r; fd leak %s"
                     % (idle["limit_probe"]["held"], ref.get("how"), ref.get("ms"), ref.get("reply", ""),
                        idle["fd_leak"]),
                     "closed cleanly, no fd leak",
                     verdict(idle["over_limit_closed_cleanly"] and (idle["fd_leak"] or 0) <= 2))
                    + ("hangs, leaks an fd", "—"))
    srv = rep.get("server", {})
    if srv:
        rows.append(("server peak RSS (VmHWM)", "%.0f MB (after ingest %.0f MB)" % (
            (srv.get("peak_rss_kB") or 0) * 1024 / 1e6, srv.get("rss_after_ingest_MB") or 0), "—", "info",
                     "590 MB with buffers = 10000", "—"))
    lines = ["| measure | seedlink-fast | target | verdict | SeisComP 3.3 | ringserver 4.5.3 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="100k records, 1 M-record fan-out budget, 3 s latency, 1000 idle (~25 s)")
    ap.add_argument("--records", type=int, default=None, help="buffered records (default 1,000,000)")
    ap.add_argument("--clients", default="1,10,100", help="fan-out client counts")
    ap.add_argument("--fanout-budget", type=int, default=None,
                    help="records per fan-out run over all clients; a client expects "
                         "min(records, budget / N) (default 10,000,000; 1,000,000 with --quick)")
    ap.add_argument("--fanout-max-seconds", type=float, default=None,
                    help="time limit of one fan-out run (default 75; 20 with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="fan-out client processes (default 2)")
    ap.add_argument("--buffers", type=int, default=10000,
                    help="memory ring per station (seedlink.ini buffers; default 10000)")
    ap.add_argument("--latency-clients", default=None, help="K values (default 1,10; 1,4 with --quick)")
    ap.add_argument("--latency-rate", type=float, default=100.0)
    ap.add_argument("--latency-count", type=int, default=None,
                    help="records per latency run (default 2000 = 20 s; 300 with --quick)")
    ap.add_argument("--no-latency-floor", action="store_true",
                    help="skip the calibration run through a plain Python relay")
    ap.add_argument("--idle", type=int, default=None, help="idle connections (default 10000; 1000 with --quick)")
    ap.add_argument("--handshake-rounds", type=int, default=None, help="default 300; 100 with --quick")
    ap.add_argument("--no-request-log", action="store_true", help="request_log = disabled")
    ap.add_argument("--phases", default="fanout,latency,handshake,idle")
    ap.add_argument("--server-cmd", default=None,
                    help="command that runs the seedlink-fast CLI (default: 'PYTHON -m "
                         "seedlink_fast'); 'serve -f INI --bind 127.0.0.1' is appended")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "seedlink-fast-bench-cache"))
    ap.add_argument("--work-dir", default=None, help="keep the server's files here (default: a temp dir, removed)")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="run py-spy record on the server during each fan-out and latency run "
                         "(raw stacks in DIR; top frames in the JSON); slows the server a little")
    ap.add_argument("--max-other", type=float, default=15.0,
                    help="before each fan-out run wait (<= 10 s) until foreign load is below this %%")
    ap.add_argument("--tries", type=int, default=2,
                    help="redo a fan-out run whose foreign load exceeded --max-other, keep the "
                         "quietest (default 2 tries)")
    ap.add_argument("--json", default=None, help="write the full results here")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown results table")
    args = ap.parse_args(argv)

    q = args.quick
    records = args.records or (100_000 if q else 1_000_000)
    budget = args.fanout_budget or (1_000_000 if q else 10_000_000)
    fan_max = args.fanout_max_seconds or (20.0 if q else 75.0)
    lat_clients = [int(x) for x in (args.latency_clients or ("1,4" if q else "1,10")).split(",") if x]
    lat_count = args.latency_count or (300 if q else 2000)
    nidle = args.idle if args.idle is not None else (1000 if q else 10000)
    rounds = args.handshake_rounds or (100 if q else 300)
    phases = set(args.phases.split(","))
    limit = nidle + LIMIT_MARGIN

    t_start = time.monotonic()
    rep = {"config": {"records": records, "clients": args.clients, "fanout_budget": budget,
                      "fanout_max_seconds": fan_max, "workers": args.workers,
                      "buffers": args.buffers, "latency_clients": lat_clients,
                      "latency_rate": args.latency_rate, "latency_count": lat_count,
                      "idle": nidle, "connections_limit": limit, "handshake_rounds": rounds,
                      "request_log": not args.no_request_log, "quick": q},
           "environment": _util.environment(REPO, {"seedlink_fast": seedlink_fast.__version__})}
    try:
        import uvloop
        rep["environment"]["uvloop"] = uvloop.__version__
    except ImportError:
        rep["environment"]["uvloop"] = None

    os.makedirs(args.cache_dir, exist_ok=True)
    stream = sl.build_fanout_stream(os.path.join(args.cache_dir, "fan-%d.plugin" % records),
                                    records, station=FAN_STATION, log=log)
    sl.raise_nofile()
    work = args.work_dir or tempfile.mkdtemp(prefix="slf-bench-")
    os.makedirs(work, exist_ok=True)
    server = None
    try:
        log("starting server in %s" % work)
        server = Server(work, stream, records, args.buffers, limit, not args.no_request_log,
                        server_cmd=shlex.split(args.server_cmd) if args.server_cmd else None)
        rep["server"] = {"pid": server.pid, "port": server.port, "nofile": server.nofile,
                         "rss_start_MB": round(server.rss() / 1e6, 1)}
        log("server pid %d port %d (fd limit %s); ingesting %d records" % (
            server.pid, server.port, server.nofile, records))
        rep["ingest"] = wait_ingest(server, records, timeout=120 if q else 300)
        rep["server"]["rss_after_ingest_MB"] = round(server.rss() / 1e6, 1)
        c0 = server.cpu()
        time.sleep(2.0)
        rep["server"]["idle_cpu_pct"] = round(100 * (server.cpu() - c0) / 2.0, 2)
        log("ingest: %s" % json.dumps(rep["ingest"]))
        profiler = Profiler(args.profile, server.pid) if args.profile else None
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            if not profiler.exe:
                log("py-spy not found: no profile")

        if "fanout" in phases:
            rep["fanout"] = {}
            for n in [int(x) for x in args.clients.split(",") if x]:
                expect = max(1, min(records, budget // n))
                tries = []
                for attempt in range(max(1, args.tries)):
                    load = sl.wait_quiet(args.max_other, 10.0)
                    log("fan-out N=%d, %d records each (foreign load %.1f%%)" % (n, expect, load))
                    r = run_fanout(server, n, expect, args.workers, fan_max,
                                   profiler if attempt == 0 else None)
                    tries.append(r)
                    if "error" in r or (r["foreign_cpu_pct"] or 0) <= args.max_other:
                        break
                    log("  foreign load %.1f%% during the run: again" % r["foreign_cpu_pct"])
                r = min(tries, key=lambda x: x.get("foreign_cpu_pct") or 0)
                r["tries"] = len(tries)
                r["tries_agg_records_per_s"] = [t.get("agg_records_per_s") for t in tries]
                rep["fanout"][str(n)] = r
                log("  " + json.dumps({k: r.get(k) for k in (
                    "agg_records_per_s", "per_client_records_per_s", "server_cpu_us_per_record",
                    "server_cpu_pct", "seconds", "complete_clients", "client_errors", "error")}))
                if not server.alive():
                    raise RuntimeError("server died during fan-out:\n" + server.log_tail())

        if "latency" in phases:
            rep["latency"] = []
            for i, k in enumerate(lat_clients):
                log("latency: %d client(s), %d records at %g/s" % (k, lat_count, args.latency_rate))
                r = run_latency(server, k, lat_count, args.latency_rate, base=(i + 1) * 100_000,
                                profiler=profiler)
                rep["latency"].append(r)
                log("  all %s; first10 %s; errors %s" % (r["all"], r["first10"], r["errors"]))
                if not args.no_latency_floor:
                    log("latency floor: plain relay, %d client(s), %d records" % (k, lat_count))
                    r["floor"] = run_latency_floor(work, k, lat_count, args.latency_rate,
                                                   base=900_000 - (i + 1) * 10_000)
                    log("  all %s; first10 %s" % (r["floor"]["all"], r["floor"]["first10"]))

        if "handshake" in phases:
            log("handshake, no idle connections: %d rounds" % rounds)
            rep["handshake0"] = sl.handshake_times(server.port, FAN_STATION, rounds)
            log("  STATION %s" % rep["handshake0"]["STATION"])

        if "idle" in phases and nidle:
            log("idle: opening %d connections (limit %d)" % (nidle, limit))
            rep["idle"] = run_idle(server, nidle, limit, rounds, FAN_STATION)
            log("  " + json.dumps({k: v for k, v in rep["idle"].items() if k != "handshake_with_idle"}))
            log("  STATION with idle: %s" % rep["idle"]["handshake_with_idle"]["STATION"])

        rep["server"]["peak_rss_kB"] = server.hwm_kb()
        rep["server"]["cpu_total_s"] = server.cpu()
    finally:
        if server is not None:
            rep.setdefault("server", {}).update(server.stop())
            rep["server"]["log_problems"] = server.log_problems()
            rep["server"]["log"] = server.log_path
        if not args.work_dir:
            # keep the log next to the JSON if asked, drop the buffer
            if args.json and server is not None:
                shutil.copy(server.log_path, args.json + ".server.log")
                rep["server"]["log"] = args.json + ".server.log"
            shutil.rmtree(work, ignore_errors=True)
    rep["total_seconds"] = round(time.monotonic() - t_start, 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1, default=str)
            f.write("\n")
    if args.markdown:
        print(markdown(rep))
    else:
        print(json.dumps({k: rep[k] for k in ("ingest", "fanout", "latency", "handshake0", "idle")
                          if k in rep}, indent=1, default=str))
    log("done in %.0f s; server exit %s; %d problem lines in its log" % (
        rep["total_seconds"], rep["server"].get("returncode"),
        rep["server"].get("log_problems", {}).get("lines", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
