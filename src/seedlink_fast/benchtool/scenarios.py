"""The load scenarios.  Every run happens in worker processes (fork), each
bounded in connections and in time; the parent only releases them, reads
the server's CPU time from /proc and sums up."""
import multiprocessing as mp
import os
import resource
import selectors
import socket
import statistics
import time

from .procfs import CpuMeter, proc_status_kb, raise_nofile
from .proto import PACKET, SEQ_MOD, command, handshake_plan, read_lines


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def _ctx():
    return mp.get_context("fork")


def _split(n, workers):
    workers = max(1, min(n, workers))
    return [n // workers + (1 if i < n % workers else 0) for i in range(workers)]


def _collect(procs, queue, timeout):
    """One result per process (bounded); stragglers are terminated."""
    results = []
    deadline = time.monotonic() + timeout
    for _ in procs:
        try:
            results.append(queue.get(timeout=max(0.1, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - queue.Empty: a worker hung or died
            break
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
            p.join(5)
    return results


# -- fanout (and the real-time readers of ingest) --

class _Conn:
    __slots__ = ("sock", "buf", "records", "bytes", "first_seq", "last_seq", "gaps",
                 "repeats", "t_first", "t_last", "ended", "error", "done", "samples")

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.records = self.bytes = self.gaps = self.repeats = self.samples = 0
        self.first_seq = self.last_seq = None
        self.t_first = self.t_last = None
        self.ended = self.done = False
        self.error = None

    def feed(self, chunk, now, limit, sample_limit=0):
        """Parse whole SL packets; count records (and with `sample_limit`
        their samples), check the sequence numbers."""
        buf = self.buf
        buf += chunk
        lo, hi = 0, len(buf)
        last = self.last_seq
        recs = 0
        while hi - lo >= 3:
            if buf[lo:lo + 2] == b"SL":
                if hi - lo < PACKET:
                    break
                if buf[lo + 2:lo + 6] != b"INFO":
                    try:
                        seq = int(buf[lo + 2:lo + 8], 16)
                    except ValueError:
                        self.error = "bad header %r" % bytes(buf[lo:lo + 8])
                        self.done = True
                        break
                    if last is None:
                        self.first_seq = seq
                    elif seq != (last + 1) % SEQ_MOD:
                        if (seq - last) % SEQ_MOD > SEQ_MOD // 2 or seq == last:
                            self.repeats += 1
                        else:
                            self.gaps += 1
                    last = seq
                    recs += 1
                    if sample_limit:
                        self.samples += int.from_bytes(buf[lo + 38:lo + 40], "big")
                        if self.samples >= sample_limit:
                            lo += PACKET
                            self.done = True
                            break
                lo += PACKET
                if limit and self.records + recs >= limit:
                    self.done = True
                    break
            elif buf[lo:lo + 3] == b"END":
                self.ended = self.done = True
                lo += 3
                break
            else:
                self.error = "lost framing at %r" % bytes(buf[lo:lo + 16])
                self.done = True
                break
        del buf[:lo]
        if recs:
            if self.t_first is None:
                self.t_first = now
            self.t_last = now
            self.records += recs
            self.bytes += recs * PACKET
            self.last_seq = last

    def result(self):
        return {"records": self.records, "bytes": self.bytes, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "gaps": self.gaps, "repeats": self.repeats,
                "t_first": self.t_first, "t_last": self.t_last, "ended": self.ended,
                "error": self.error, "samples": self.samples}


def _fanout_worker(wid, addr, nconns, plan, params, barrier, queue):
    out = {"worker": wid, "conns": []}
    conns = []
    try:
        raise_nofile(nconns + 64)
        hs = []
        for _ in range(nconns):
            sock = socket.create_connection(addr, timeout=params["timeout"])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(_Conn(sock))
            t0 = time.monotonic()
            # one command at a time: SeisComP's seedlink keeps one pending reply
            for line, nlines in plan:
                command(sock, line, nlines, params["timeout"])
            hs.append(time.monotonic() - t0)
        out["handshake_s"] = hs
        barrier.wait(timeout=params["timeout"] + 30)
        t_start = time.monotonic()
        sel = selectors.DefaultSelector()
        for c in conns:
            c.sock.setblocking(False)
            c.sock.sendall(b"END\r\n")
            sel.register(c.sock, selectors.EVENT_READ, c)
        limit = params["limit"]
        sample_limit = params.get("sample_limit", 0)
        deadline = t_start + params["max_seconds"]
        idle = params["idle_timeout"]
        last_activity = t_start
        active = len(conns)
        while active:
            now = time.monotonic()
            if now > deadline or now - last_activity > idle:
                break
            for key, _ in sel.select(timeout=0.2):
                c = key.data
                try:
                    chunk = c.sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    c.error, c.done, chunk = repr(exc), True, b""
                now = time.monotonic()
                if chunk:
                    last_activity = now
                    c.feed(chunk, now, limit, sample_limit)
                else:
                    c.done = True
                    c.error = c.error or "closed by server"
                if c.done:
                    active -= 1
                    sel.unregister(c.sock)
                    c.sock.close()   # a finished client must not stall the server
        out["t_start"] = t_start
        out["t_stop"] = time.monotonic()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["client_cpu_s"] = ru.ru_utime + ru.ru_stime
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass
    for c in conns:
        out["conns"].append(c.result())
        try:
            c.sock.close()
        except OSError:
            pass
    queue.put(out)


class ClientGroup:
    """`clients` SeedLink clients spread over worker processes: each
    connection runs `plan` (one command at a time), then all are released
    together (END) and read until `limit` records (0: until END or idle
    for `idle_timeout` s), or `sample_limit` samples, or `duration` s."""

    def __init__(self, addr, clients, plan, *, limit=0, sample_limit=0, duration=60.0,
                 idle_timeout=5.0, timeout=10.0, workers=None):
        workers = workers or max(1, min(8, (os.cpu_count() or 2) // 2))
        self.split = _split(clients, workers)
        self.timeout = timeout
        self.wait_s = duration + idle_timeout + timeout + 30
        ctx = _ctx()
        self._barrier = ctx.Barrier(len(self.split) + 1)
        self._queue = ctx.Queue()
        params = {"limit": limit, "sample_limit": sample_limit, "max_seconds": duration,
                  "timeout": timeout, "idle_timeout": idle_timeout}
        self._procs = [ctx.Process(target=_fanout_worker,
                                   args=(w, addr, n, plan, params, self._barrier, self._queue),
                                   daemon=True) for w, n in enumerate(self.split)]
        for p in self._procs:
            p.start()

    def release(self):
        """Wait until every client is ready, then let them all go."""
        try:
            self._barrier.wait(timeout=self.timeout * max(self.split) + 60)
        except Exception:  # noqa: BLE001 - broken barrier: a worker failed
            pass

    def abort(self):
        """End the clients now (the feed failed: nothing will come)."""
        for p in self._procs:
            p.terminate()
            p.join(5)
        self.wait_s = 0.1

    def collect(self):
        """(per-worker results, errors or None)."""
        results = _collect(self._procs, self._queue, self.wait_s)
        errors = [r["error"] for r in results if "error" in r]
        if not errors and len(results) < len(self.split):
            errors = ["%d of %d workers gave no result" % (len(self.split) - len(results),
                                                            len(self.split))]
        return results, errors or None


def sequence_figures(conns):
    """Gaps, repeats and errors over client results (shared by fanout and ingest)."""
    return {
        "first_seq": min((c["first_seq"] for c in conns if c["first_seq"] is not None),
                         default=None),
        "last_seq": max((c["last_seq"] for c in conns if c["last_seq"] is not None),
                        default=None),
        "gaps": sum(c["gaps"] for c in conns),
        "repeats": sum(c["repeats"] for c in conns),
        "client_errors": [c["error"] for c in conns if c["error"]][:5],
    }


def run_fanout(addr, clients, station, start, select=None, records=0, expected=None,
               duration=60.0, workers=None, server_pid=None, timeout=10.0, idle_timeout=5.0):
    """N clients fetch the same buffered records at once.

    records: stop each client after this many (0: until the server's END).
    duration: the time bound of the transfer (and the listening time for
    ``--start next``)."""
    plan = handshake_plan(station, select, start)
    realtime = start.lower() == "next"
    group = ClientGroup(addr, clients, plan, limit=records, duration=duration,
                        idle_timeout=duration if realtime else idle_timeout,
                        timeout=timeout, workers=workers)
    group.release()
    cpu = CpuMeter(server_pid).start()
    results, errors = group.collect()
    cpu = cpu.stop()
    out = {"clients": clients, "workers": len(group.split), "handshake": [p[0] for p in plan]}
    if errors:
        out["error"] = errors
        return out
    conns = [c for r in results for c in r["conns"]]
    t_start = min(r["t_start"] for r in results)
    t_end = max([c["t_last"] for c in conns if c["t_last"]] or [t_start])
    span = max(t_end - t_start, 1e-9)
    total = sum(c["records"] for c in conns)
    per_client = sorted(c["records"] / max((c["t_last"] or t_start) - t_start, 1e-9)
                        for c in conns)
    hs = sorted(t for r in results for t in r.get("handshake_s", []))
    out.update({
        "records_total": total,
        "bytes_total": sum(c["bytes"] for c in conns),
        "records_per_client_min": min(c["records"] for c in conns),
        "records_per_client_max": max(c["records"] for c in conns),
        "expected_per_client": expected,
        # buffered modes: the server said END (or the --records limit was met)
        # and, when known, every held record arrived; real time: no error
        "complete_clients": sum(1 for c in conns if (not c["error"]) and (
            realtime or ((c["ended"] or (records and c["records"] >= records))
                         and (expected is None or c["records"] == expected)))),
        # with SELECT the sequence numbers skip the other streams: gaps expected
        "contiguous_expected": not select,
        **sequence_figures(conns),
        "seconds": round(span, 4),
        "records_per_s": round(total / span, 1),
        "MB_per_s": round(total * PACKET / span / 1e6, 3),
        "client_records_per_s_min": round(per_client[0], 1),
        "client_records_per_s_median": round(statistics.median(per_client), 1),
        "client_records_per_s_max": round(per_client[-1], 1),
        "handshake_ms_median": round(1e3 * statistics.median(hs), 3) if hs else None,
        "client_cpu_s": round(sum(r.get("client_cpu_s", 0) for r in results), 3),
    })
    out.update(cpu)
    if cpu and total:
        out["server_cpu_us_per_record"] = round(1e6 * cpu["server_cpu_s"] / total, 3)
    return out


# -- handshake --

def _handshake_worker(wid, addr, rounds, plan, params, queue):
    times = {}
    failures = []
    deadline = time.monotonic() + params["max_seconds"]
    timeout = params["timeout"]
    done = 0
    try:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            sock = socket.create_connection(addr, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times.setdefault("connect", []).append(time.monotonic() - t0)
            try:
                for line, nlines in [("HELLO", 2)] + plan:
                    t0 = time.monotonic()
                    sock.sendall(line.encode() + b"\r\n")
                    reply, how = read_lines(sock, nlines, timeout)
                    dt = time.monotonic() - t0
                    if how != "ok" or (nlines == 1 and not reply.startswith(b"OK")):
                        failures.append("%s: %s %r" % (line, how, reply[:40]))
                        break
                    times.setdefault(line.split()[0], []).append(dt)
                else:
                    done += 1
            finally:
                sock.close()
    except OSError as exc:
        failures.append(repr(exc))
    queue.put({"worker": wid, "times": times, "failures": failures, "rounds": done})


def run_handshake(addr, clients, station, start, select=None, rounds=50, duration=30.0,
                  server_pid=None, timeout=5.0):
    """`clients` processes at once, each `rounds` fresh connections of
    HELLO / STATION / [SELECT] / DATA|FETCH; reply time of every command."""
    plan = handshake_plan(station, select, start)
    ctx = _ctx()
    queue = ctx.Queue()
    params = {"max_seconds": duration, "timeout": timeout}
    procs = [ctx.Process(target=_handshake_worker, args=(w, addr, rounds, plan, params, queue),
                         daemon=True) for w in range(clients)]
    cpu = CpuMeter(server_pid).start()
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = _collect(procs, queue, duration + timeout + 30)
    span = time.monotonic() - t0
    cpu = cpu.stop()
    out = {"clients": clients, "rounds": sum(r["rounds"] for r in results),
           "rounds_planned": clients * rounds,
           "failures": sum(len(r["failures"]) for r in results),
           "failure_examples": [f for r in results for f in r["failures"]][:3],
           "seconds": round(span, 4)}
    if len(results) < clients:
        out["error"] = ["%d of %d workers gave no result" % (clients - len(results), clients)]
    merged = {}
    for r in results:
        for key, vals in r["times"].items():
            merged.setdefault(key, []).extend(vals)
    for key, vals in merged.items():
        vals.sort()
        out["%s_ms_median" % key] = round(1e3 * statistics.median(vals), 3)
        out["%s_ms_p99" % key] = round(1e3 * percentile(vals, 99), 3)
        out["%s_ms_max" % key] = round(1e3 * vals[-1], 3)
    out["rounds_per_s"] = round(out["rounds"] / span, 1) if span else None
    out.update(cpu)
    return out


# -- idle --

def _idle_worker(addr, n, params, queue):
    timeout = params["timeout"]
    pid = params.get("server_pid")
    limit = raise_nofile(n + 64)
    rss0 = proc_status_kb(pid, "VmRSS")
    socks, failures, consecutive = [], [], 0
    t0 = time.monotonic()
    for i in range(min(n, limit - 32)):
        if consecutive >= params["max_fail"] or time.monotonic() - t0 > params["max_seconds"]:
            break
        try:
            sock = socket.create_connection(addr, timeout=timeout)
            sock.sendall(b"HELLO\r\n")
            _, how = read_lines(sock, 2, timeout)
        except OSError as exc:
            failures.append("connect %s" % type(exc).__name__)
            consecutive += 1
            continue
        if how == "ok":
            socks.append(sock)
            consecutive = 0
        else:
            failures.append(how)
            consecutive += 1
            sock.close()
    t_open = time.monotonic() - t0
    time.sleep(params["hold"])
    rss1 = proc_status_kb(pid, "VmRSS")
    # are the first and the last connections still served while all are open?
    alive = 0
    probe = socks[:5] + socks[5:][-5:]
    for sock in probe:
        try:
            sock.sendall(b"HELLO\r\n")
            if read_lines(sock, 2, timeout)[1] == "ok":
                alive += 1
        except OSError:
            pass
    for sock in socks:
        sock.close()
    out = {"attempted": n, "held": len(socks), "failures": len(failures),
           "failure_kinds": sorted(set(failures)), "open_seconds": round(t_open, 3),
           "probed": len(probe), "probed_alive": alive, "nofile_limit": limit}
    if rss0 is not None and rss1 is not None:
        out["server_rss_kb_before"] = rss0
        out["server_rss_kb_held"] = rss1
        out["server_kb_per_connection"] = round((rss1 - rss0) / len(socks), 3) if socks else None
    queue.put(out)


def run_idle(addr, clients, duration=30.0, server_pid=None, timeout=2.0, hold=0.5, max_fail=20):
    """Open up to `clients` connections (each must answer HELLO) and hold them."""
    ctx = _ctx()
    queue = ctx.Queue()
    params = {"timeout": timeout, "max_seconds": duration, "hold": hold,
              "max_fail": max_fail, "server_pid": server_pid}
    proc = ctx.Process(target=_idle_worker, args=(addr, clients, params, queue), daemon=True)
    proc.start()
    results = _collect([proc], queue, duration + hold + timeout * 12 + 30)
    if not results:
        return {"attempted": clients, "error": ["idle worker gave no result"]}
    out = results[0]
    out["clients"] = clients
    # a fresh connection after all were closed must still work
    time.sleep(0.2)
    try:
        sock = socket.create_connection(addr, timeout=timeout)
        sock.sendall(b"HELLO\r\n")
        out["fresh_after_close"] = read_lines(sock, 2, timeout)[1]
        sock.close()
    except OSError as exc:
        out["fresh_after_close"] = repr(exc)
    return out
