"""Reliability of a running ``seedlink-fast serve``: crashes during ingest,
slow and misbehaving clients, garbage input, connection limits, ACLs, the
lockfile and signals (docs/seedlink-reference.md §2.2, §3.1, §5.1, §5.5).

Everything runs on loopback (clients may bind other 127.0.0.x source
addresses to look like different hosts); every wait is bounded.  The
data comes from ``loadgen.py`` plugins writing tagged miniSEED records, so
the bytes stored under each sequence number tell which plugin run made them.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from loadgen import (PACKET, RECORD, StreamReader, command, connect, end_seq, fetch_all,
                     info, is_loadgen, kill_strays, make_ini, make_record, plugin_cmd,
                     plugin_runs, poison_record, record_tag, recv_quiet, recv_until,
                     segment_records, set_linger_rst, split_packets, vmrss_kb, wait_end_seq,
                     wait_until)
from serverproc import ServerProcess, free_port

SOFTWARE = b"SeedLink v3.3 (2024.020)"
UNTRUSTED = "127.0.0.2"          # another loopback source address = another host


@pytest.fixture
def servers(tmp_path):
    """start(ini, port) -> ServerProcess, each in its own work dir (own log);
    all stopped (SIGTERM, then SIGKILL) and stray plugins killed afterwards."""
    made = []

    def start(ini, port):
        wd = tmp_path / ("run%d" % len(made))
        wd.mkdir()
        srv = ServerProcess(ini, port, wd)
        made.append(srv)
        return srv

    yield start
    for srv in made:
        if srv.proc.poll() is None:
            srv.stop(timeout=10)
        if not srv.log.closed:
            srv.log.close()
    for pid_file in tmp_path.glob("*.pids"):
        kill_strays(pid_file)


def log_text(srv):
    if not srv.log.closed:
        srv.log.flush()
    return srv.log_path.read_text(errors="replace")


def assert_log_clean(srv):
    """No traceback / internal error in the server log."""
    text = log_text(srv)
    # client request lines echo what clients sent; they do not count
    request = re.compile(r"seedlink-fast: \d+\.\d+\.\d+\.\d+:\d+ : ")
    bad = [line for line in text.splitlines() if not request.search(line)
           and re.search(r"Traceback|internal error|Fatal error|Exception|Error:", line)]
    assert not bad, "server log has errors:\n" + "\n".join(bad[:20])


def hello_ok(port, source=None, description=b"Reliability Org"):
    s = connect(port, source=source, timeout=5)
    try:
        s.sendall(b"HELLO\r\n")
        buf, _ = recv_until(s, lambda b: b.count(b"\r\n") >= 2, timeout=5)
    finally:
        s.close()
    lines = buf.split(b"\r\n")
    assert len(lines) == 3 and lines[2] == b"", buf
    assert lines[0].split(b" :: ")[0] == SOFTWARE, buf
    assert lines[1] == description, buf
    return True


def kill9(srv):
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    srv.log.close()


def tags(records):
    return [record_tag(r) for r in records]


# ---------------------------------------------------------------------------
# 1. kill -9 during steady ingest

def test_kill9_during_ingest_keeps_delivered_records_and_numbering(tmp_path, servers):
    port = free_port()
    pids = tmp_path / "crash.pids"
    cmd = plugin_cmd("XX.CRASH", "CRASH", count=6000, rate=400, pid_file=pids)
    ini = make_ini(tmp_path, port, plugins=[("crash", cmd, "start_retry = 1")],
                   stations=[("XX.CRASH", "")], segsize=50, segments=400, buffers=64)
    srv = servers(ini, port)
    reader = StreamReader(port, "CRASH", "XX", start="000000", max_seconds=20)
    assert reader.wait_count(400, 10) >= 400, "client saw too few records before the kill"
    kill9(srv)
    reader.join(5)
    assert not reader.is_alive() and reader.eof, "client not disconnected by the kill"
    assert reader.error is None
    reader.stop()
    seen = reader.snapshot()
    assert [s for s, _ in seen] == list(range(len(seen)))

    (pid1, run1), = plugin_runs(pids)
    # the plugin does not outlive the server (PR_SET_PDEATHSIG) and keep a
    # writer behind that nobody reads
    assert wait_until(lambda: not is_loadgen(pid1), 5), "plugin survived kill -9 of the server"

    # every record a client saw is on disk, at its sequence number
    disk = segment_records(str(tmp_path / "buffer" / "XX.CRASH"))
    k = len(disk)
    assert sorted(disk) == list(range(k))
    assert k >= len(seen)
    for seq, rec in seen:
        assert disk[seq] == rec, "record %06X seen by the client differs on disk" % seq
    assert tags(disk[p] for p in range(k)) == [(run1, i) for i in range(k)]

    # restart with the same configuration; a new plugin run continues
    srv2 = servers(ini, port)
    assert wait_end_seq(port, "CRASH", k + 100, 10) >= k + 100
    runs = plugin_runs(pids)
    assert len(runs) == 2 and runs[1][1] != run1
    run2 = runs[1][1]
    fetched = fetch_all(port, "CRASH", "XX", seen[0][0])
    fseqs = [s for s, _ in fetched]
    assert fseqs == list(range(len(fetched))), "sequence numbers not consecutive after restart"
    for seq, rec in seen:
        assert fetched[seq][1] == rec, "record %06X changed across the crash" % seq
    assert [r for _, r in fetched[:k]] == [disk[p] for p in range(k)]
    # no number reused: run 2 starts exactly after the last stored record of run 1
    assert tags(r for _, r in fetched[k:]) == [(run2, i) for i in range(len(fetched) - k)]

    # a client resuming after the last record it saw misses nothing
    last = seen[-1][0]
    resume = StreamReader(port, "CRASH", "XX", start="%06X" % (last + 1), max_seconds=20)
    try:
        want = len(fetched) - (last + 1) + 50
        resume.wait_count(want, 10)
    finally:
        resume.stop()
    got = resume.snapshot()
    assert len(got) >= want
    assert [s for s, _ in got] == list(range(last + 1, last + 1 + len(got)))
    for seq, rec in got[:len(fetched) - (last + 1)]:
        assert rec == fetched[seq][1]
    assert tags(r for _, r in got[k - (last + 1):]) == \
        [(run2, i) for i in range(len(got) - (k - (last + 1)))]
    assert_log_clean(srv2)


def test_torn_trailing_record_is_dropped_and_numbering_continues(tmp_path, servers):
    port = free_port()
    pids = tmp_path / "torn.pids"
    cmd = plugin_cmd("XX.TORN", "TORN", count=300, rate=0, pid_file=pids)
    ini = make_ini(tmp_path, port, plugins=[("torn", cmd, "start_retry = 1")],
                   stations=[("XX.TORN", "")], segsize=40, segments=50, buffers=20)
    srv = servers(ini, port)
    assert wait_end_seq(port, "TORN", 300, 10) == 300
    kill9(srv)
    (pid1, run1), = plugin_runs(pids)
    station = tmp_path / "buffer" / "XX.TORN"
    disk = segment_records(str(station))
    assert sorted(disk) == list(range(300))
    # tear the newest record: the crash hit the middle of its write()
    seg_dir = station / "segments"
    newest = max(seg_dir.iterdir(), key=lambda p: int(p.name, 16))
    size = newest.stat().st_size
    assert size % RECORD == 0 and size >= RECORD
    os.truncate(newest, size - 200)

    srv2 = servers(ini, port)
    text = log_text(srv2)
    assert "torn record" in text, text
    assert wait_end_seq(port, "TORN", 299 + 300, 10) == 299 + 300
    assert newest.stat().st_size % RECORD == 0
    fetched = fetch_all(port, "TORN", "XX", 0)
    assert [s for s, _ in fetched] == list(range(599))
    assert [r for _, r in fetched[:299]] == [disk[p] for p in range(299)]
    run2 = plugin_runs(pids)[1][1]
    # the torn record's number goes to the first record of the new run, no gap
    assert tags(r for _, r in fetched[299:]) == [(run2, i) for i in range(300)]
    assert_log_clean(srv2)


def test_kill9_across_the_sequence_wrap_with_rotation(tmp_path, servers):
    """A buffer whose running count passes 2**24 while segments rotate out:
    numbering, resume and crash recovery work modulo 2**24."""
    port = free_port()
    pids = tmp_path / "wrap.pids"
    station = tmp_path / "buffer" / "XX.WRAP"
    (station / "segments").mkdir(parents=True)
    start = (1 << 24) - 30                    # positions start.. have seqs FFFFE2..
    old_run = 0xABC
    with open(station / "segments" / ("%016X" % start), "wb") as fh:
        for pos in range(start, start + 30):
            fh.write(make_record("XX", "WRAP", old_run, pos))
    cmd = plugin_cmd("XX.WRAP", "WRAP", count=6000, rate=400, pid_file=pids)
    ini = make_ini(tmp_path, port, plugins=[("wrap", cmd, "start_retry = 1")],
                   stations=[("XX.WRAP", "")], segsize=50, segments=6, buffers=40)
    srv = servers(ini, port)
    reader = StreamReader(port, "WRAP", "XX", start="FFFFF0", max_seconds=20)
    assert reader.wait_count(500, 10) >= 500
    kill9(srv)
    reader.join(5)
    reader.stop()
    seen = reader.snapshot()
    seqs = [q for q, _ in seen]
    assert seqs == [(0xFFFFF0 + i) % (1 << 24) for i in range(len(seen))]
    assert tags(r for _, r in seen[:16]) == [(old_run, start + 14 + i) for i in range(16)]
    run1 = plugin_runs(pids)[0][1]
    assert tags(r for _, r in seen[16:]) == [(run1, i) for i in range(len(seen) - 16)]

    disk = segment_records(str(station))
    names = sorted(int(p.name, 16) for p in (station / "segments").iterdir())
    assert len(names) <= 6 and names[-1] > (1 << 24), "segment names must not wrap"
    positions = sorted(disk)
    assert positions == list(range(positions[0], positions[-1] + 1))
    for q, rec in seen:
        pos = q + (1 << 24) if q < 0x800000 else q
        if pos in disk:
            assert disk[pos] == rec

    srv2 = servers(ini, port)
    nxt = positions[-1] + 1
    assert wait_end_seq(port, "WRAP", (nxt + 50) % (1 << 24), 10) >= (nxt + 50) % (1 << 24)
    last = seqs[-1]
    resume = StreamReader(port, "WRAP", "XX", start="%06X" % ((last + 1) % (1 << 24)),
                          max_seconds=20)
    try:
        want = nxt - (last + (1 << 24)) - 1 + 50
        resume.wait_count(want, 10)
    finally:
        resume.stop()
    got = resume.snapshot()
    assert len(got) >= want
    assert [q for q, _ in got] == [(last + 1 + i) % (1 << 24) for i in range(len(got))]
    stored = nxt - (last + (1 << 24)) - 1                 # stored before the kill, unseen
    for i, (q, rec) in enumerate(got[:stored]):
        assert rec == disk[q + (1 << 24)]
    run2 = plugin_runs(pids)[1][1]
    assert tags(r for _, r in got[stored:]) == [(run2, i) for i in range(len(got) - stored)]
    assert_log_clean(srv2)


def test_odd_plugin_record_keeps_disk_and_numbering_consistent(tmp_path, servers):
    """A plugin record whose blockette chain points at the last bytes of the
    record (SeisComP stores it verbatim; it is just not deliverable) must not
    make the station's numbering and its segment files disagree, neither
    while running nor across a restart."""
    port = free_port()
    pids = tmp_path / "odd.pids"
    cmd = plugin_cmd("XX.ODD", "ODD", count=300, rate=0, pid_file=pids, poison_at=100)
    ini = make_ini(tmp_path, port, plugins=[("odd", cmd, "start_retry = 1")],
                   stations=[("XX.ODD", "")], segsize=100, segments=20, buffers=50)
    srv = servers(ini, port)
    assert wait_end_seq(port, "ODD", 100, 10) >= 100
    srv.wait_settled(stable=1.5, timeout=15)
    station = str(tmp_path / "buffer" / "XX.ODD")
    disk = segment_records(station)
    numbered = end_seq(port, "ODD")
    run1 = plugin_runs(pids)[0][1]
    assert tags(disk[p] for p in range(100)) == [(run1, i) for i in range(100)]
    assert len(disk) == numbered, \
        "segment files hold %d records but the server numbers %d" % (len(disk), numbered)
    fetched = fetch_all(port, "ODD", "XX", 0)
    wrong = [q for q, r in fetched if disk.get(q) != r]
    assert not wrong, "served records differ from the disk at %s" % wrong[:10]
    assert srv.stop() == 0
    srv2 = servers(ini, port)
    assert fetch_all(port, "ODD", "XX", 0)[:len(fetched)] == fetched
    assert srv2.proc.poll() is None


def test_crash_recovery_index_rebuild_survives_an_odd_record(tmp_path, servers):
    """After a crash (no buffer.xml) the stream index is rebuilt from every
    record on disk; an odd record there (see poison_record) must not keep the
    server from starting."""
    port = free_port()
    station = tmp_path / "buffer" / "XX.ODD"
    (station / "segments").mkdir(parents=True)
    recs = [make_record("XX", "ODD", 0xABC, i) for i in range(20)]
    recs[7] = poison_record(recs[7])
    (station / "segments" / ("%016X" % 0)).write_bytes(b"".join(recs))
    cmd = plugin_cmd("XX.ODD", "ODD", count=10, rate=0, pid_file=tmp_path / "odd2.pids")
    ini = make_ini(tmp_path, port, plugins=[("odd", cmd, "start_retry = 0")],
                   stations=[("XX.ODD", "")], segsize=100, segments=20, buffers=50)
    srv = servers(ini, port)
    assert wait_end_seq(port, "ODD", 30, 10) == 30
    fetched = fetch_all(port, "ODD", "XX", 0)
    assert [r for _, r in fetched[:7]] == recs[:7] and [r for _, r in fetched[7:19]] == recs[8:]
    assert srv.proc.poll() is None


# ---------------------------------------------------------------------------
# 2. slow readers

def test_slow_readers_do_not_hold_back_a_fast_client_and_memory_stays_bounded(
        tmp_path, servers):
    n = 50000
    port = free_port()
    go, done = tmp_path / "go", tmp_path / "done"
    cmd = plugin_cmd("XX.LOAD", "LOAD", count=n, rate=0, wait_file=go, done_file=done,
                     pid_file=tmp_path / "load.pids")
    ini = make_ini(tmp_path, port, plugins=[("load", cmd, "start_retry = 0")],
                   stations=[("XX.LOAD", "")], segsize=1000, segments=60, buffers=1000)
    srv = servers(ini, port)
    stalled = []
    try:
        for _ in range(4):                  # clients that stop reading at once
            s = connect(port, rcvbuf=4096)
            assert command(s, "STATION LOAD XX") == "OK"
            assert command(s, "DATA 000000") == "OK"
            s.sendall(b"END\r\n")
            stalled.append(s)
        # and one that keeps reading, very slowly (2 kB every 10 ms)
        trickle = connect(port, rcvbuf=4096)
        stalled.append(trickle)
        assert command(trickle, "STATION LOAD XX") == "OK"
        assert command(trickle, "DATA 000000") == "OK"
        trickle.sendall(b"END\r\n")
        trickled = bytearray()
        stop_trickle = threading.Event()

        def trickle_reader():
            for _ in range(6000):               # <= 60 s
                if stop_trickle.wait(0.01):
                    return
                try:
                    trickle.settimeout(0.01)
                    trickled.extend(trickle.recv(2048))
                except socket.timeout:
                    pass
                except OSError:
                    return

        slow_thread = threading.Thread(target=trickle_reader, daemon=True)
        slow_thread.start()
        fast = StreamReader(port, "LOAD", "XX", start="000000", max_seconds=60)
        time.sleep(0.3)
        rss0 = vmrss_kb(srv.proc.pid)
        go.touch()
        fast.wait_count(n, 40)
        rss1 = vmrss_kb(srv.proc.pid)
        fast.stop()
        got = fast.packets
        assert fast.error is None
        assert len(got) == n, "fast client got %d of %d records" % (len(got), n)
        assert [s for s, _, _ in got] == list(range(n))
        run = record_tag(got[0][1])[0]
        assert all(record_tag(r) == (run, q) for q, r, _ in got[::101])
        finished = float(done.read_text())
        lag = got[-1][2] - finished
        assert lag < 3.0, "fast client got the last record %.1f s after the plugin sent it" % lag
        growth_mb = (rss1 - rss0) / 1024
        print("slow readers: lag %.2f s, RSS %d -> %d kB" % (lag, rss0, rss1))
        # 26 MB were pushed to each of 4 stalled clients; only the socket
        # buffers and a bounded per-client backlog may stay in memory
        assert growth_mb < 40, "server RSS grew by %.0f MB" % growth_mb

        stop_trickle.set()
        slow_thread.join(5)
        k = len(trickled) - len(trickled) % PACKET
        assert k >= PACKET
        assert [q for q, _ in split_packets(bytes(trickled[:k]))] == list(range(k // PACKET))

        # a stalled client that starts reading again gets everything, in order
        s = stalled[0]
        buf, eof = recv_until(s, lambda b: len(b) >= n * PACKET, timeout=30)
        assert not eof
        packets = split_packets(buf[:n * PACKET])
        assert [q for q, _ in packets] == list(range(n))
        assert all(r == got[q][1] for q, r in packets[::997])
        assert hello_ok(port)
    finally:
        for s in stalled:
            s.close()
    assert_log_clean(srv)


def test_lapped_slow_reader_skips_ahead_with_intact_records(tmp_path, servers):
    """A reader that falls out of a small buffer jumps ahead (SeisComP: no
    disconnect, silent gap) and never gets a record under a wrong number."""
    n = 20000
    port = free_port()
    go, done = tmp_path / "go", tmp_path / "done"
    cmd = plugin_cmd("XX.LAP", "LAP", count=n, rate=0, wait_file=go, done_file=done,
                     pid_file=tmp_path / "lap.pids")
    ini = make_ini(tmp_path, port, plugins=[("lap", cmd, "start_retry = 0")],
                   stations=[("XX.LAP", "")], segsize=100, segments=3, buffers=50)
    srv = servers(ini, port)
    slow = connect(port, rcvbuf=4096)
    try:
        assert command(slow, "STATION LAP XX") == "OK"
        assert command(slow, "DATA 000000") == "OK"
        slow.sendall(b"END\r\n")
        fast = StreamReader(port, "LAP", "XX", start="000000", max_seconds=30)
        go.touch()
        fast.wait_count(n, 20)
        fast.stop()
        assert [q for q, _, _ in fast.packets] == list(range(n))
        assert wait_until(done.exists, 5)
        buf, eof = recv_quiet(slow, quiet=1.0, timeout=20)
        assert not eof, "lapped reader was disconnected"
        assert len(buf) % PACKET == 0
        got = split_packets(buf)
    finally:
        slow.close()
    run = plugin_runs(tmp_path / "lap.pids")[0][1]
    seqs = [q for q, _ in got]
    assert seqs == sorted(set(seqs)), "lapped reader got records out of order or twice"
    assert seqs[-1] == n - 1, "lapped reader did not catch up to the newest record"
    assert seqs[0] == 0 and len(seqs) < n, "reader was not lapped (test too weak)"
    bad = [q for q, r in got if record_tag(r) != (run, q)]
    assert not bad, "records under wrong sequence numbers: %s" % bad[:10]
    assert_log_clean(srv)


def test_pipelined_command_flood_from_a_non_reader_is_bounded(tmp_path, servers):
    """A client that pipelines many INFO requests and never reads must neither
    make the server buffer the answers without bound nor stall other clients
    (SeisComP keeps a single reply slot per connection)."""
    port = free_port()
    srv = servers(_bulk_ini(tmp_path, port), port)
    assert wait_end_seq(port, "BULK", 2000, 10) == 2000
    time.sleep(0.2)
    rss0 = vmrss_kb(srv.proc.pid)
    flood = connect(port, rcvbuf=4096)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    payload = b"INFO STREAMS\r\n" * 100000            # 1.4 MB of requests
    sent = [0]

    def sender():
        view = memoryview(payload)
        flood.settimeout(6)
        try:
            while view:
                k = flood.send(view)
                view = view[k:]
                sent[0] += k
        except OSError:
            pass

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    latencies, rss = [], [rss0]
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline:
            t = time.monotonic()
            try:
                hello_ok(port)                # 5 s reply timeout
            except (AssertionError, OSError):
                pass
            latencies.append(time.monotonic() - t)
            rss.append(vmrss_kb(srv.proc.pid))
            time.sleep(0.1)
    finally:
        flood.close()
        thread.join(10)
    growth_mb = (max(rss) - rss0) / 1024
    print("flood: sent %d bytes, max HELLO latency %.2f s, RSS +%.0f MB"
          % (sent[0], max(latencies), growth_mb))
    # SeisComP reads at most 1024 bytes of commands per client and loop turn;
    # a quarter of a second is a generous bound for "promptly"
    assert max(latencies) < 0.25, "HELLO took %.2f s during another client's flood" % max(
        latencies)
    assert growth_mb < 40, "server RSS grew by %.0f MB buffering answers" % growth_mb
    assert srv.proc.poll() is None


# ---------------------------------------------------------------------------
# 3. garbage input and abrupt disconnects

def _bulk_ini(tmp_path, port, extra="", tick=False):
    plugins = [("bulk", plugin_cmd("XX.BULK", "BULK", count=2000, rate=0,
                                   pid_file=tmp_path / "bulk.pids"), "start_retry = 0")]
    stations = [("XX.BULK", "")]
    if tick:
        plugins.append(("tick", plugin_cmd("XX.TICK", "TICK", count=3000, rate=100,
                                           pid_file=tmp_path / "tick.pids"), "start_retry = 0"))
        stations.append(("XX.TICK", ""))
    return make_ini(tmp_path, port, plugins=plugins, stations=stations, extra=extra,
                    segsize=500, segments=20, buffers=200)


def test_malformed_and_oversized_commands(tmp_path, servers):
    port = free_port()
    srv = servers(_bulk_ini(tmp_path, port), port)
    assert wait_end_seq(port, "BULK", 2000, 10) == 2000
    s = connect(port)
    try:
        for line in (b"\xff\xfe\xfd\xfc", b"\x01\x02\x03 \x04", b"\x1b[2J\x1b[H", b"HELLO\tX",
                     b"HELLO X", b"CAT X", b"BYE X", b"DATA ZZZZZZ", b"DATA 1000000",
                     b"FETCH -1", b"DATA 0 2026,01,01,00,00,00 x y", b"TIME 2026",
                     b"TIME 2026,13,01,00,00,00", b"TIME 2026,1,2,0,0,0 2026,1,1,0,0,0",
                     b"INFO", b"INFO A B", b"SELECT A B", b"SELECT bhz", b"SELECT BH*",
                     b"STATION", b"STATION A B C", b"BATCH X", b"END X",
                     b"\xc3\xa9\xe2\x82\xac", b"X" * 1023):
            s.sendall(line + b"\r\n")
            buf, eof = recv_until(s, lambda b: b"\r\n" in b, timeout=5)
            assert buf == b"ERROR\r\n", (line[:40], buf[:80], eof)
        s.sendall(b"HELLO\r\n")
        buf, _ = recv_until(s, lambda b: b.count(b"\r\n") >= 2, timeout=5)
        assert buf.startswith(SOFTWARE)
        assert command(s, "STATION " + "A" * 900) == "ERROR"
        assert command(s, "STATION BULK XX") == "OK"
        assert command(s, "SELECT " + "?" * 300) == "ERROR"
        assert command(s, "FETCH 0007CF") == "OK"
        s.sendall(b"END\r\n")
        buf, eof = recv_until(s, lambda b: b.endswith(b"END"), timeout=5)
        assert buf[:8] == b"SL0007CF" and len(buf) == PACKET + 3
    finally:
        s.close()

    # a line without terminator longer than 1023 bytes, split over reads: closed, no reply
    s = connect(port)
    try:
        s.sendall(b"A" * 600)
        time.sleep(0.05)
        s.sendall(b"B" * 600)
        buf, eof = recv_until(s, lambda b: False, timeout=3)
        assert eof and buf == b""
    finally:
        s.close()
    # binary garbage with NULs and no line ends at all, then a clean HELLO elsewhere
    s = connect(port)
    try:
        s.sendall(bytes(range(256)) * 2)
        buf, eof = recv_quiet(s, quiet=0.3, timeout=3)
        assert all(part in (b"", b"ERROR") for part in buf.split(b"\r\n")), buf[:100]
    finally:
        s.close()
    assert hello_ok(port)
    assert srv.proc.poll() is None
    assert_log_clean(srv)


def test_overlong_command_line_closes_even_when_terminated(tmp_path, servers):
    """SeisComP reads commands into a 1024-byte buffer and closes the
    connection as soon as it is full without a line end (§2.1): a 1024-char
    command line is never answered, however the bytes arrive."""
    port = free_port()
    srv = servers(_bulk_ini(tmp_path, port), port)
    for size in (1024, 5000, 200000):
        s = connect(port)
        try:
            try:
                s.sendall(b"C" * size + b"\r\n")
            except (ConnectionResetError, BrokenPipeError):
                pass
            buf, eof = recv_until(s, lambda b: False, timeout=3)
            assert buf == b"" and eof, "a %d-byte command line got %r (eof=%s)" % (
                size, buf[:40], eof)
        finally:
            s.close()
    assert hello_ok(port)
    assert srv.proc.poll() is None


def _connections(port):
    s = connect(port)
    try:
        xml, channel = info(s, "CONNECTIONS")
    finally:
        s.close()
    assert channel == "INF"
    return set(re.findall(r'<connection host="([^"]+)" port="(\d+)"', xml))


def test_abrupt_disconnects_leave_other_clients_and_no_leaks(tmp_path, servers):
    port = free_port()
    srv = servers(_bulk_ini(tmp_path, port, tick=True), port)
    assert wait_end_seq(port, "BULK", 2000, 10) == 2000
    bystander = StreamReader(port, "TICK", "XX", start="", max_seconds=40)
    try:
        assert bystander.wait_count(20, 5) >= 20
        half_closed_output = []
        for i in range(12):
            # RST in the middle of a large FETCH
            s = connect(port)
            assert command(s, "STATION BULK XX") == "OK"
            assert command(s, "FETCH 000000") == "OK"
            s.sendall(b"END\r\n")
            buf, eof = recv_until(s, lambda b: len(b) >= PACKET, timeout=5)
            assert buf[:8] == b"SL000000" and not eof
            set_linger_rst(s)
            s.close()
            # RST while the server's send buffer for us is full
            s = connect(port, rcvbuf=2048)
            assert command(s, "STATION BULK XX") == "OK"
            assert command(s, "DATA ALL") == "OK"
            s.sendall(b"END\r\n")
            time.sleep(0.05)
            set_linger_rst(s)
            s.close()
            # RST in the middle of a command line
            s = connect(port)
            s.sendall(b"STATION BU")
            set_linger_rst(s)
            s.close()
            # connect and leave without a word
            connect(port).close()
            # half-close after the request: valid bytes only, then the server closes
            s = connect(port)
            s.sendall(b"STATION BULK XX\r\nFETCH 0007C0\r\nEND\r\n")
            s.shutdown(socket.SHUT_WR)
            buf, eof = recv_until(s, lambda b: False, timeout=5)
            s.close()
            assert eof, "server kept a half-closed connection open"
            half_closed_output.append(buf)
            # half-close during realtime streaming of a live station
            s = connect(port)
            assert command(s, "STATION TICK XX") == "OK"
            assert command(s, "DATA") == "OK"
            s.sendall(b"END\r\n")
            s.shutdown(socket.SHUT_WR)
            buf, eof = recv_until(s, lambda b: False, timeout=5)
            s.close()
            assert eof, "server kept streaming to a half-closed connection"
            split_packets(buf[:len(buf) // PACKET * PACKET])        # data packets only
        for buf in half_closed_output:
            # nothing, or a prefix of "OK OK <packets> END"
            assert buf == b"OK\r\nOK\r\n"[:len(buf)] or buf.startswith(b"OK\r\nOK\r\nSL"), buf[:40]
        count_before = bystander.count()
        time.sleep(0.5)
        assert bystander.count() >= count_before + 20, "bystander stalled"
        assert srv.proc.poll() is None
        assert hello_ok(port)
        # every abandoned session is gone: only the bystander and the INFO client
        mine = {("127.0.0.1", str(bystander.sock.getsockname()[1]))}
        leaked = wait_until(lambda: len(_connections(port) - mine) <= 1, 5)
        assert leaked, "sessions left behind: %s" % (_connections(port) - mine)
    finally:
        bystander.stop()
    got = bystander.snapshot()
    assert bystander.error is None and not bystander.eof
    first = got[0][0]
    assert [s for s, _ in got] == list(range(first, first + len(got)))
    assert_log_clean(srv)


# -- fuzzing the command parser ------------------------------------------------

_HELLO_RE = re.compile(rb"SeedLink v3\.3 \(2024\.020\)(?: :: [A-Za-z0-9:. ]+)?\r\n"
                       rb"(Reliability Org|Station BULK)\r\n")
_EXT_ERROR_RE = re.compile(rb"ERROR\r[A-Z_]+ [^\r\n]*\r\n")


def _parse_replies(data, cat):
    """Split what the server sent into protocol elements; AssertionError on
    anything else.  Returns (elements, incomplete tail)."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        rest = data[i:i + 1100]
        if rest.startswith(b"OK\r\n"):
            out.append("OK")
            i += 4
        elif rest.startswith(b"ERROR\r\n"):
            out.append("ERROR")
            i += 7
        elif _EXT_ERROR_RE.match(rest):
            m = _EXT_ERROR_RE.match(rest)
            out.append("ERROR")
            i += m.end()
        elif _HELLO_RE.match(rest):
            out.append("HELLO")
            i += _HELLO_RE.match(rest).end()
        elif rest.startswith(cat):
            out.append("CAT")
            i += len(cat)
        elif rest.startswith(b"SLINFO"):
            if n - i < PACKET:
                return out, data[i:]
            pk = data[i:i + PACKET]
            assert pk[6:8] in (b" *", b"  "), pk[:8]
            assert pk[8 + 15:8 + 18] in (b"INF", b"ERR"), pk[8:40]
            out.append("SLINFO" + ("+" if pk[6:8] == b" *" else "") + pk[23:26].decode())
            i += PACKET
        elif rest.startswith(b"SL"):
            if n - i < PACKET:
                assert re.match(rb"SL[0-9A-F]{0,6}\Z", rest[:8]) or \
                    re.match(rb"SL[0-9A-F]{6}", rest), rest[:8]
                return out, data[i:]
            pk = data[i:i + PACKET]
            assert re.match(rb"SL[0-9A-F]{6}\Z", pk[:8]), pk[:8]
            assert pk[8 + 8:8 + 13] == b"BULK ", pk[8:30]
            out.append("DATA")
            i += PACKET
        elif rest.startswith(b"END"):
            out.append("END")
            i += 3
        else:
            raise AssertionError("unexpected bytes from the server at %d: %r" % (i, rest[:60]))
    return out, b""


_BYE_RE = re.compile(rb"(?i)(?:^|[\r\n])[ :]*bye[ :]*(?:[\r\n]|$)")


def test_fuzz_command_lines(tmp_path, servers):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    port = free_port()
    srv = servers(_bulk_ini(tmp_path, port), port)
    assert wait_end_seq(port, "BULK", 2000, 10) == 2000
    s = connect(port)
    s.sendall(b"CAT\r\n")
    cat, _ = recv_until(s, lambda b: b.endswith(b"END"), timeout=5)
    s.close()
    assert cat == b"XX BULK  Station BULK\nEND"

    keywords = st.sampled_from([b"HELLO", b"CAT", b"BYE", b"STATION", b"SELECT", b"DATA",
                                b"FETCH", b"TIME", b"END", b"INFO", b"BATCH", b"CAPABILITIES",
                                b"GET", b"hello", b"info", b"station", b"Data", b"fetch"])
    words = st.one_of(
        st.sampled_from([b"BULK", b"XX", b"DUMMY", b"ALL", b"000000", b"0007C0", b"0007D0",
                         b"FFFFFF", b"1000000", b"0x10", b"-1", b"ID", b"STATIONS", b"STREAMS",
                         b"GAPS", b"CONNECTIONS", b"CAPABILITIES", b"HHZ", b"!HHZ", b"??HHZ.D",
                         b"D", b"LOG", b"2026,09,21,00,00,00", b"2099,12,31,23,59,61",
                         b"1900,1,1,0,0,0", b"EXTREPLY", b"?", b"*", b"B?L*", b"X*",
                         b"/ HTTP/1.1"]),
        st.binary(max_size=12))
    command_line = st.builds(
        lambda kw, args, sep: kw + b"".join(sep + a for a in args),
        keywords, st.lists(words, max_size=4), st.sampled_from([b" ", b":", b"  ", b" : "]))
    valid_line = st.sampled_from([
        b"STATION BULK XX", b"STATION BULK", b"station bulk xx", b"STATION B?LK *",
        b"SELECT", b"SELECT HHZ.D", b"SELECT !LOG", b"FETCH 0007C0", b"FETCH", b"DATA 0007F0",
        b"DATA ALL", b"DATA", b"TIME 2026,09,21,14,16,00", b"FETCH 0007CF 2026,09,21,00,00,00",
        b"END", b"END", b"HELLO", b"CAT", b"BATCH", b"INFO STREAMS", b"INFO CONNECTIONS",
        b"INFO BOGUS", b"CAPABILITIES EXTREPLY", b"BYE",
        b"STATION BULK XX\r\nFETCH 0007C8\r\nEND", b"STATION BULK XX\nDATA 0007CC\nEND"])
    line = st.one_of(valid_line, command_line, st.binary(max_size=60),
                     st.text(max_size=40).map(lambda t: t.encode("utf-8")))
    payload = st.lists(
        st.tuples(line, st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\n", b""])),
        min_size=1, max_size=8).map(lambda parts: b"".join(a + b for a, b in parts))

    stats = {"examples": 0, "elements": {}}

    terminal = ("SLINFOINF", "SLINFOERR")

    @hypothesis.settings(max_examples=300, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(payload)
    @hypothesis.example(b"STATION BULK XX\r\nFETCH 0007C8\r\nEND\r\n")
    @hypothesis.example(b"BATCH\r\nSTATION BULK XX\r\nSELECT \xff\r\nDATA 0007CC\r\nEND\r\n")
    @hypothesis.example(b"HELLO\r\nCAT\r\nINFO ALL\r\nINFO nope\r\n\x00BYE\r\n")
    @hypothesis.example(b"FETCH\r\nHELLO\r\nBYE\r\n")
    @hypothesis.example(b"\r\n\n\r:::   ::\r\n" + bytes(range(1, 256)))
    def check(data):
        stats["examples"] += 1
        # INFO answers to expect at most: the payload's and the sentinels'
        infos = len(re.findall(rb"(?i)info", data))
        s = connect(port, timeout=5)
        received = b""
        eof = False
        done = False
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(data)
            for sentinels in range(1, 4):
                # the sentinel: INFO is answered in every state (also BATCH);
                # the line end first (a separate read) in case a NUL hid ours
                time.sleep(0.002)
                try:
                    s.sendall(b"\r\n")
                    time.sleep(0.002)
                    s.sendall(b"INFO ID\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    eof = True
                    break
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and not eof:
                    s.settimeout(0.05)
                    try:
                        chunk = s.recv(1 << 16)
                        eof = not chunk
                    except socket.timeout:
                        chunk = b""
                    except (ConnectionResetError, BrokenPipeError):
                        chunk, eof = b"", True
                    received += chunk
                    elements, _ = _parse_replies(received, cat)
                    answered = sum(e in terminal for e in elements)
                    if answered >= infos + sentinels or (
                            not chunk and elements and elements[-1] in terminal):
                        done = True
                        break
                if done or eof:
                    break
            else:
                raise AssertionError("no answer to INFO ID after %r" % data[:200])
        finally:
            s.close()
        elements, _ = _parse_replies(received, cat)
        for e in elements:
            stats["elements"][e] = stats["elements"].get(e, 0) + 1
        if eof:
            assert _BYE_RE.search(data), "connection closed without BYE after %r" % data[:200]
        assert srv.proc.poll() is None, "server died on %r" % data[:200]
        assert hello_ok(port)

    check()
    print("fuzz:", stats)
    assert stats["examples"] >= 200
    for kind in ("ERROR", "OK", "HELLO", "CAT", "DATA", "END", "SLINFOERR"):
        assert stats["elements"].get(kind, 0) > 0, "fuzzing never produced %s" % kind
    assert srv.proc.poll() is None
    assert_log_clean(srv)


# ---------------------------------------------------------------------------
# 4. connection limits and access control

def _refused(port, source=None):
    """True when the server closes a new connection at once without a byte."""
    s = connect(port, source=source, timeout=3)
    try:
        buf, eof = recv_until(s, lambda b: False, timeout=2)
        return eof and buf == b""
    finally:
        s.close()


def _admitted(port, source=None):
    """An open connection that has been served (HELLO answered)."""
    s = connect(port, source=source, timeout=3)
    s.sendall(b"HELLO\r\n")
    buf, eof = recv_until(s, lambda b: b.count(b"\r\n") >= 2, timeout=3)
    if eof or not buf.startswith(SOFTWARE):
        s.close()
        return None
    return s


def test_connection_limits(tmp_path, servers):
    port = free_port()
    ini = _bulk_ini(tmp_path, port, extra="connections = 4\nconnections_per_ip = 2")
    srv = servers(ini, port)
    time.sleep(0.2)                  # wait_listening's probe connection is gone
    open_ = []
    try:
        for src in ("127.0.0.1", "127.0.0.1"):
            c = _admitted(port, src)
            assert c is not None
            open_.append(c)
        assert _refused(port, "127.0.0.1"), "3rd connection from one address admitted"
        for src in ("127.0.0.2", "127.0.0.2"):
            c = _admitted(port, src)
            assert c is not None
            open_.append(c)
        assert _refused(port, "127.0.0.2"), "per-address limit not applied to 127.0.0.2"
        assert _refused(port, "127.0.0.3"), "global limit (4) not applied"
        for _ in range(10):          # refused attempts must not use up anything
            _refused(port, "127.0.0.3")
        # a client leaves: its address gets exactly one slot back
        open_.pop(0).close()
        c = wait_until(lambda: _admitted(port, "127.0.0.1"), 5, interval=0.1)
        assert c, "slot not given back after a client left"
        open_.append(c)
        assert _refused(port, "127.0.0.3")
        # another leaves: a new address gets in, up to the global limit again
        open_.pop(1).close()
        c = wait_until(lambda: _admitted(port, "127.0.0.3"), 5, interval=0.1)
        assert c
        open_.append(c)
        assert _refused(port, "127.0.0.3")
        # the admitted ones are still served
        for c in open_:
            assert command(c, "STATION BULK XX") == "OK"
    finally:
        for c in open_:
            c.close()
    # all gone: full capacity again
    ok = wait_until(lambda: _connection_count_ok(port), 5, interval=0.1)
    assert ok
    assert srv.proc.poll() is None


def _connection_count_ok(port):
    conns = []
    try:
        for src in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3"):
            c = _admitted(port, src)
            if c is None:
                return False
            conns.append(c)
        return True
    finally:
        for c in conns:
            c.close()


def test_access_lists_and_trust_levels(tmp_path, servers):
    port = free_port()
    extra = "\n".join(["trusted = 127.0.0.1", "info = stations", "info_trusted = all",
                       "window_extraction = disabled", "window_extraction_trusted = enabled"])
    plugins = [("bulk", plugin_cmd("XX.OPEN", "OPEN", count=300, rate=0,
                                   pid_file=tmp_path / "open.pids"), "start_retry = 0")]
    ini = make_ini(tmp_path, port, plugins=plugins, extra=extra,
                   stations=[("XX.OPEN", ""), ("XX.PRIV", "access = 127.0.0.1/32")])
    srv = servers(ini, port)
    assert wait_end_seq(port, "OPEN", 300, 10) == 300
    window = "2026,09,21,00,00,00"

    # untrusted host
    s = connect(port, source=UNTRUSTED)
    try:
        xml, channel = info(s, "STATIONS")
        assert channel == "INF"
        assert 'name="OPEN"' in xml and 'name="PRIV"' not in xml
        xml, channel = info(s, "STREAMS")
        assert channel == "ERR", "untrusted client with info = stations got INFO STREAMS"
        assert "<stream " not in xml
        xml, channel = info(s, "CONNECTIONS")
        assert channel == "ERR"
        xml, channel = info(s, "CAPABILITIES")
        assert channel == "INF"
        assert "info:stations" in xml and "info:streams" not in xml
        assert "window-extraction" not in xml
        s.sendall(b"CAT\r\n")
        buf, _ = recv_until(s, lambda b: b.endswith(b"END"), timeout=5)
        assert buf == b"XX OPEN  Station OPEN\nEND"
        assert command(s, "TIME %s" % window) == "ERROR"        # uni-station mode
        assert command(s, "STATION PRIV XX") == "ERROR"
        assert command(s, "STATION OPEN XX") == "OK"
        assert command(s, "TIME %s" % window) == "ERROR"
        assert command(s, "DATA 000000 %s" % window) == "ERROR"
        assert command(s, "FETCH 000000 %s" % window) == "ERROR"
        assert command(s, "FETCH 00012B") == "OK"
        s.sendall(b"END\r\n")
        buf, _ = recv_until(s, lambda b: b.endswith(b"END"), timeout=5)
        assert buf[:8] == b"SL00012B" and len(buf) == PACKET + 3
    finally:
        s.close()

    # trusted host
    s = connect(port)
    try:
        xml, channel = info(s, "STREAMS")
        assert channel == "INF" and 'seedname="HHZ"' in xml
        xml, channel = info(s, "CAPABILITIES")
        assert "window-extraction" in xml and "info:all" in xml
        s.sendall(b"CAT\r\n")
        buf, _ = recv_until(s, lambda b: b.endswith(b"END"), timeout=5)
        assert buf == b"XX OPEN  Station OPEN\nXX PRIV  Station PRIV\nEND"
        assert command(s, "STATION PRIV XX") == "OK"
        assert command(s, "STATION OPEN XX") == "OK"
        assert command(s, "TIME %s" % window) == "OK"
        assert command(s, "DATA 000000 %s" % window) == "OK"
    finally:
        s.close()
    assert srv.proc.poll() is None
    assert_log_clean(srv)


# ---------------------------------------------------------------------------
# 5. lockfile and signals

def test_lockfile_refuses_second_server_and_sigterm_saves_buffer(tmp_path, servers):
    port = free_port()
    lock = tmp_path / "seedlink.pid"
    pids = tmp_path / "lock.pids"
    ini = make_ini(tmp_path, port, extra='lockfile = "%s"' % lock,
                   plugins=[("lock", plugin_cmd("XX.LOCK", "LOCK", count=500, rate=0,
                                                pid_file=pids), "start_retry = 0")],
                   stations=[("XX.LOCK", "")])
    srv = servers(ini, port)
    assert wait_end_seq(port, "LOCK", 500, 10) == 500
    assert lock.read_text().strip() == str(srv.proc.pid)

    second = subprocess.run(
        [sys.executable, "-m", "seedlink_fast", "serve", "-f", str(ini), "--bind", "127.0.0.1"],
        cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = second.stdout.decode(errors="replace")
    assert second.returncode == 1, out
    assert "already running" in out, out
    assert lock.read_text().strip() == str(srv.proc.pid), "second server touched the lockfile"
    assert len(plugin_runs(pids)) == 1, "second server started plugins"
    assert hello_ok(port)
    assert not (tmp_path / "buffer" / "XX.LOCK" / "buffer.xml").exists()

    (pid1, _), = plugin_runs(pids)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(15) == 0
    srv.log.close()
    assert not is_loadgen(pid1), "plugin still running after SIGTERM"
    xml = (tmp_path / "buffer" / "XX.LOCK" / "buffer.xml").read_text()
    assert re.search(r'<buffer begin_seq="000000" end_seq="0001F4" segment_count="\d+" '
                     r'stream_check="enabled"', xml), xml[:300]
    assert 'seedname="HHZ"' in xml
    assert (tmp_path / "buffer" / ".dummy" / "buffer.xml").exists()
    assert "saving disk buffer description" in log_text(srv)

    # the lock is released: a new server starts, reads buffer.xml and goes on
    srv2 = servers(ini, port)
    assert lock.read_text().strip() == str(srv2.proc.pid)
    assert end_seq(port, "LOCK") >= 500
    assert not (tmp_path / "buffer" / "XX.LOCK" / "buffer.xml").exists()
    assert_log_clean(srv2)


def test_sighup_restarts_plugins_and_data_keeps_flowing(tmp_path, servers):
    port = free_port()
    pids = tmp_path / "hup.pids"
    ini = make_ini(tmp_path, port,
                   plugins=[("hup", plugin_cmd("XX.HUP", "HUP", count=5000, rate=200,
                                               pid_file=pids), "start_retry = 0")],
                   stations=[("XX.HUP", "")])
    srv = servers(ini, port)
    reader = StreamReader(port, "HUP", "XX", start="000000", max_seconds=30)
    try:
        assert reader.wait_count(100, 10) >= 100
        (pid1, run1), = plugin_runs(pids)
        assert is_loadgen(pid1)
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(plugin_runs(pids)) >= 2, 10), "plugin not restarted"
        runs = plugin_runs(pids)
        assert len(runs) == 2
        pid2, run2 = runs[1]
        assert pid2 != pid1
        assert wait_until(lambda: not is_loadgen(pid1), 5), "old plugin still running"
        assert is_loadgen(pid2)
        # data of the new run reaches the client
        assert wait_until(lambda: any(record_tag(r)[0] == run2 for r in
                                      [p[1] for p in reader.snapshot()[-5:]]), 10)
        n = reader.count()
        assert reader.wait_count(n + 100, 5) >= n + 100
        assert srv.proc.poll() is None
    finally:
        reader.stop()
    got = reader.snapshot()
    assert [s for s, _ in got] == list(range(len(got)))
    runs_seen = [t[0] for t in tags(r for _, r in got)]
    switch = runs_seen.index(run2)
    assert set(runs_seen[:switch]) == {run1} and set(runs_seen[switch:]) == {run2}
    assert [t[1] for t in tags(r for _, r in got[switch:])] == list(range(len(got) - switch))
    assert "SIGHUP" in log_text(srv) or "restarting" in log_text(srv)
    assert_log_clean(srv)


def test_sigterm_under_load_exits_cleanly_and_buffer_xml_matches_disk(tmp_path, servers):
    port = free_port()
    pids = tmp_path / "term.pids"
    cmd = plugin_cmd("XX.TERM", "TERM", count=60000, rate=0, pid_file=pids)
    ini = make_ini(tmp_path, port, plugins=[("term", cmd, "start_retry = 0")],
                   stations=[("XX.TERM", "")], segsize=1000, segments=100, buffers=500)
    srv = servers(ini, port)
    stalled = []
    try:
        for _ in range(2):
            s = connect(port, rcvbuf=4096)
            assert command(s, "STATION TERM XX") == "OK"
            assert command(s, "DATA 000000") == "OK"
            s.sendall(b"END\r\n")
            stalled.append(s)
        reader = StreamReader(port, "TERM", "XX", start="000000", max_seconds=30)
        assert reader.wait_count(2000, 10) >= 2000
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(15) == 0
        srv.log.close()
        reader.join(5)
        assert reader.eof
    finally:
        for s in stalled:
            s.close()
    (pid1, run1), = plugin_runs(pids)
    assert not is_loadgen(pid1)
    station = tmp_path / "buffer" / "XX.TERM"
    disk = segment_records(str(station))
    k = len(disk)
    assert sorted(disk) == list(range(k))
    assert tags(disk[p] for p in range(k)) == [(run1, i) for i in range(k)]
    seen = reader.snapshot()
    assert all(disk[q] == r for q, r in seen)
    xml = (station / "buffer.xml").read_text()
    m = re.search(r'<buffer begin_seq="([0-9A-F]{6})" end_seq="([0-9A-F]{6})"', xml)
    assert m and int(m.group(2), 16) == k, (xml[:200], k)
    m = re.search(r'<stream location="" seedname="HHZ" type="D" [^>]*end_seq="([0-9A-F]{6})"',
                  xml)
    assert m and int(m.group(1), 16) == k

    srv2 = servers(ini, port)
    text = log_text(srv2)
    assert "rebuilding" not in text and "unclean" not in text, text
    assert end_seq(port, "TERM") >= k
    s = connect(port)
    try:
        streams, _ = info(s, "STREAMS")
    finally:
        s.close()
    # the stream index came back from buffer.xml
    assert re.search(r'seedname="HHZ" type="D" [^>]*begin_recno="000000" end_recno="%06d"'
                     % k, streams), streams
    assert_log_clean(srv2)


def test_repeated_sighup_under_heavy_ingest_stores_only_whole_records(tmp_path, servers):
    port = free_port()
    pids = tmp_path / "hup2.pids"
    cmd = plugin_cmd("XX.HUP", "HUP", count=100000, rate=4000, pid_file=pids)
    ini = make_ini(tmp_path, port, plugins=[("hup", cmd, "start_retry = 0")],
                   stations=[("XX.HUP", "")], segsize=1000, segments=100, buffers=500)
    srv = servers(ini, port)
    for i in range(1, 4):
        assert wait_until(lambda: len(plugin_runs(pids)) == i, 10)
        seq = end_seq(port, "HUP")
        assert wait_end_seq(port, "HUP", seq + 500, 10) >= seq + 500, "no data from run %d" % i
        srv.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: len(plugin_runs(pids)) == 4, 10)
    seq = end_seq(port, "HUP")
    assert wait_end_seq(port, "HUP", seq + 500, 10) >= seq + 500
    fetched = fetch_all(port, "HUP", "XX", 0)
    assert srv.proc.poll() is None
    assert [q for q, _ in fetched] == list(range(len(fetched)))
    runs = [r for _, r in plugin_runs(pids)]
    got = tags(r for _, r in fetched)
    assert None not in got, "a record not written by the plugin was stored"
    # per run: indices 0.. without a hole, runs in start order
    order = []
    for run, idx in got:
        if not order or order[-1][0] != run:
            order.append([run, []])
        order[-1][1].append(idx)
    assert [run for run, _ in order] == runs
    for run, idxs in order:
        assert idxs == list(range(len(idxs))), "run %x lost or repeated records" % run
    assert_log_clean(srv)
