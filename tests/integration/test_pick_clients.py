"""Pick clients end to end against a real ``seedlink-fast serve`` process.

XX.TEST (plugin, stream100 tree: BH 20 Hz, LH, VH from 2026-11-21T23:50
for 10 minutes) for windows in the past; XX.LIVE (raw push, 00.HH? at
100 Hz) fed during the test for a window reaching into the future, a gap
and a dead component.  Every window is checked against the server's own
records: the files hold exactly the records overlapping the window, and
the samples equal the server's samples cut to the window.
"""
import contextlib
import datetime
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import SHARED
from seedlink_fast import mseed
from seedlink_fast.picks import (
    FileSource, PollingClient, StreamingClient, format_time, split_records, write_sds)
from seedlink_fast.picks.model import NS
from seedlink_fast.raw import Channel, Streamer
from serverproc import ServerProcess, free_port, make_station_ini
from slclient import SLClient
from test_raw_ingest import fetch_all

T0 = 1_795_305_000 * NS                 # 2026-11-21T23:50:00Z, start of XX.TEST
BEFORE, AFTER = 20, 40
PICK_OFFSETS = [(60, "BHZ", "P"), (130.5, "BHN", "S"), (300.25, "BHZ", "P"),
                (420, "BHE", "S"), (530, "BHZ", "P")]
SCML_NS = "http://geofon.gfz.de/ns/seiscomp-schema/0.14"
QML_BED = "http://quakeml.org/xmlns/bed/1.2"


def buffer_age():
    """A streaming buffer long enough to reach back to T0 (the data are
    replayed with fixed 2026-11-21 times)."""
    return time.time() - T0 / NS + 900


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip("../shared not available")
    tmp = tmp_path_factory.mktemp("pickserver")
    port, raw_port = free_port(), free_port()
    ini = make_station_ini(tmp, port, extra="raw_ingest_port = %d\nraw_idle_flush = 0.2\n"
                           % raw_port)
    ini.write_text(ini.read_text() + '\nstation LIVE network = XX\n'
                   '   raw_channels = "00.HHZ:1,00.HHN:2,00.HHE:3"\n')
    srv = ServerProcess(ini, port, tmp)
    srv.raw_port = raw_port
    try:
        srv.wait_settled()
        yield srv
    finally:
        srv.stop()


def fetch_station(srv, sta):
    """Every stored record of XX.sta by stream (FETCH, dial-up)."""
    out = {}
    for rec in split_records(b"".join(fetch_all(srv, sta))):
        out.setdefault(rec.stream, []).append(rec)
    return out


@pytest.fixture(scope="module")
def records(server):
    out = fetch_station(server, "TEST")
    assert {"XX.TEST..BHZ", "XX.TEST..BHN", "XX.TEST..BHE"} <= set(out)
    return out


def expected(records, sid, ws, we):
    """The server's records overlapping [ws, we] and its samples in it."""
    recs = [r for r in records[sid] if r.end_ns >= ws and r.start_ns <= we]
    times, values = [], []
    for rec in mseed.unpack(b"".join(r.raw for r in recs)):
        t = rec.starttime_ns + np.round(np.arange(rec.num_samples) * 1e9
                                        / rec.sample_rate).astype(np.int64)
        times.append(t)
        values.append(rec.samples)
    t, v = np.concatenate(times), np.concatenate(values)
    keep = (t >= ws) & (t <= we)
    return [r.raw for r in recs], int(t[keep][0]), v[keep]


def check_result(result, records):
    assert result.complete, result.missing()
    for sid, comp in result.components.items():
        raws, start, samples = expected(records, sid, result.start_ns, result.end_ns)
        assert comp.records == raws, sid
        assert comp.start_ns == start
        np.testing.assert_array_equal(comp.samples, samples)


def check_directory(path, pick_time, comps, records):
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "complete", summary
    ws, we = pick_time - BEFORE * NS, pick_time + AFTER * NS
    assert summary["window"]["start"] == format_time(ws)
    for comp in comps:
        sid = "XX.TEST.." + comp
        raws, _, samples = expected(records, sid, ws, we)
        assert (path / ("%s.mseed" % sid)).read_bytes() == b"".join(raws)
        assert summary["components"][sid]["samples"] == len(samples)
        assert summary["components"][sid]["gaps"] == []
    assert b"<pick publicID=" in (path / "pick.xml").read_bytes()


def pick_list(prefix):
    return [("%s%d" % (prefix, i), T0 + int(off * NS), cha, phase)
            for i, (off, cha, phase) in enumerate(PICK_OFFSETS)]


def write_scml(path, picks):
    items = "".join(
        '<pick publicID="%s"><time><value>%s</value></time>'
        '<waveformID networkCode="XX" stationCode="TEST" channelCode="%s"/>'
        '<phaseHint>%s</phaseHint><evaluationMode>automatic</evaluationMode></pick>'
        % (pid, format_time(t), cha, phase) for pid, t, cha, phase in picks)
    path.write_text('<?xml version="1.0"?><seiscomp xmlns="%s" version="0.14">'
                    "<EventParameters>%s</EventParameters></seiscomp>" % (SCML_NS, items))
    return path


def write_quakeml(path, picks):
    items = "".join(
        '<pick publicID="smi:test/%s"><time><value>%s</value></time>'
        '<waveformID networkCode="XX" stationCode="TEST" locationCode="" channelCode="%s"/>'
        "<phaseHint>%s</phaseHint></pick>" % (pid, format_time(t), cha, phase)
        for pid, t, cha, phase in picks)
    path.write_text('<?xml version="1.0"?><q:quakeml xmlns:q="http://quakeml.org/xmlns/'
                    'quakeml/1.2" xmlns="%s"><eventParameters publicID="smi:test/ep">'
                    '<event publicID="smi:test/ev">%s</event></eventParameters></q:quakeml>'
                    % (QML_BED, items))
    return path


def json_line(pid, t, cha, phase="P"):
    return json.dumps({"publicID": pid, "time": format_time(t), "phaseHint": phase,
                       "waveformID": {"networkCode": "XX", "stationCode": "TEST",
                                      "locationCode": "", "channelCode": cha}})


def common(tmp_path, results, **kw):
    opts = dict(before=BEFORE, after=AFTER, expire=20, status_interval=0,
                output=str(tmp_path / "out"), on_window=results.append)
    opts.update(kw)
    return opts


# -- windows in the past --------------------------------------------------------------

def test_polling_seedlink_dialup_from_scml(server, records, tmp_path):
    results = []
    client = PollingClient("slink://127.0.0.1:%d?idle=1" % server.port, timeout=20,
                           **common(tmp_path, results))
    picks = pick_list("scml")
    client.add_source(FileSource(write_scml(tmp_path / "picks.xml", picks)))
    counts = client.run()                   # a finite source: returns when all are done
    assert counts["complete"] == len(picks) and len(results) == len(picks)
    for res in results:
        check_result(res, records)
    for pid, t, cha, _ in picks:
        check_directory(tmp_path / "out" / pid, t, ["BHZ", "BHN", "BHE"], records)


def test_polling_sds_from_quakeml(records, tmp_path):
    write_sds(tmp_path / "sds", [r for recs in records.values() for r in recs])
    results = []
    client = PollingClient("sdsarchive://%s" % (tmp_path / "sds"), **common(tmp_path, results))
    picks = pick_list("qml")
    client.add_source(FileSource(write_quakeml(tmp_path / "picks.qml", picks)))
    counts = client.run()
    assert counts["complete"] == len(picks)
    for res in results:
        check_result(res, records)
    for pid, t, cha, _ in picks:
        check_directory(tmp_path / "out" / ("smi_test_" + pid), t, ["BHZ", "BHN", "BHE"],
                        records)


def test_streaming_cli_jsonl_on_stdin(server, records, tmp_path):
    """The command line, batch use: JSON lines on stdin (with a malformed
    line, a duplicate and an update), exit 0 once every pick is done."""
    picks = pick_list("j")
    lines = [json_line(pid, t, cha, phase) for pid, t, cha, phase in picks]
    lines.insert(2, "{this is not json")
    lines.insert(3, lines[0])                                  # exact duplicate
    lines.append(json_line("upd", T0 + 200 * NS, "BHZ"))
    lines.append(json_line("upd", T0 + 240 * NS, "BHZ"))       # update while pending...
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "seedlink_fast", "pick-client", "streaming", "--picks", "-",
         "--data", "slink://127.0.0.1:%d" % server.port, "-o", str(out), "--before",
         str(BEFORE), "--after", str(AFTER), "--expire", "20", "--buffer",
         "%d" % buffer_age(), "--status", "1"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "%d complete, 0 expired; 1 bad, 1 duplicate" % (len(picks) + 1) in proc.stdout
    assert "skipping a bad pick" in proc.stderr
    for pid, t, cha, _ in picks:
        check_directory(out / pid, t, ["BHZ", "BHN", "BHE"], records)
    # ...or a duplicate of the finished pick: either way the last one counts or is ignored
    summary = json.loads((out / "upd" / "summary.json").read_text())
    assert summary["pick"]["time"] in (format_time(T0 + 200 * NS), format_time(T0 + 240 * NS))


def test_streaming_archive_for_picks_older_than_the_buffer(server, records, tmp_path):
    """A one-minute buffer cannot hold 2026-11-21 23:50: those windows come
    from the archive (SDS here), fetched in a worker thread."""
    write_sds(tmp_path / "sds", [r for recs in records.values() for r in recs])
    results = []
    client = StreamingClient("slink://127.0.0.1:%d" % server.port,
                             archive="sdsarchive://%s" % (tmp_path / "sds"), buffer_length=60,
                             **common(tmp_path, results))
    for pid, t, cha, phase in pick_list("arch"):
        client.add_pick(json_line(pid, t, cha, phase))
    counts = client.run(until_idle=True)
    assert counts["complete"] == len(PICK_OFFSETS) and counts["fetches"] == len(PICK_OFFSETS)
    for res in results:
        check_result(res, records)


def test_cli_tcp_feed_and_interrupt(server, tmp_path):
    """Picks over TCP; Ctrl-C stops cleanly and lists what is pending."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "seedlink_fast", "pick-client", "polling", "--picks",
         "tcp://127.0.0.1:0", "--data", "slink://127.0.0.1:%d?idle=0.3" % server.port,
         "-o", str(tmp_path / "out"), "--before", "20", "--after", "40", "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal, also when the tests run in the background (where
        # SIGINT is ignored, and a child would keep ignoring it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening for picks on tcp://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall((json_line("tcp-ok", T0 + 100 * NS, "BHZ") + "\n"
                          + json_line("tcp-dead", T0 + 100 * NS, "BHZ").replace(
                              '"TEST"', '"NONE"') + "\n").encode())
        deadline = time.monotonic() + 20
        while not (tmp_path / "out" / "tcp-ok" / "summary.json").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "1 pick(s) finished" in out and "stopped with 1 pick(s) pending:" in out
    assert "tcp-dead" in out and "XX.NONE..BHZ no data" in out


@pytest.mark.skipif(importlib.util.find_spec("seedlink_fast.fdsnws") is None,
                    reason="the FDSN dataselect endpoint (seedlink_fast.fdsnws) is not there")
def test_polling_fdsn(tmp_path, start_server):
    if not SHARED.is_dir():
        pytest.skip("../shared not available")
    port, http_port = free_port(), free_port()
    srv = start_server(make_station_ini(tmp_path, port, extra="http_port = %d\n" % http_port),
                       port)
    srv.wait_settled()
    recs = fetch_station(srv, "TEST")
    for method in ("post", "get"):
        results = []
        client = PollingClient("fdsnws://127.0.0.1:%d?method=%s" % (http_port, method),
                               **common(tmp_path / method, results))
        for pid, t, cha, phase in pick_list(method):
            client.add_pick(json_line(pid, t, cha, phase))
        counts = client.run(until_idle=True)
        assert counts["complete"] == len(PICK_OFFSETS), (method, counts)
        for res in results:
            check_result(res, recs)


# -- live data: a window into the future, a gap, a dead component -------------------------

class LiveFeed:
    """Push 100 Hz HHZ/HHN/HHE to XX.LIVE; remembers what was fed and when."""

    RATE = 100

    def __init__(self, raw_port):
        self.streamer = Streamer([Channel(i, self.RATE, "little", "int32") for i in (1, 2, 3)],
                                 "127.0.0.1", raw_port, mode="push", station="XX.LIVE")
        self.fed = {c: {} for c in "ZNE"}      # comp -> {sample time ns: value}
        self.fed_at = []                       # (last sample time ns, wall clock)
        self.rng = np.random.default_rng(11)

    def feed(self, comp, start_ns, count):
        values = self.rng.integers(-2**27, 2**27, count).astype(np.int32)
        when = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=start_ns // 1000)
        self.streamer.feed_data(" ZNE".index(comp), when, 100, values)
        step = NS // self.RATE
        self.fed[comp].update(zip(range(start_ns, start_ns + count * step, step),
                                  values.tolist()))

    def realtime(self, start_ns, mark_ns, finished, timeout):
        """Feed Z, N and E from `start_ns` on in 0.1 s packets, in real time,
        until `finished()` or `timeout` seconds; returns the wall-clock time
        at which the sample at `mark_ns` had been fed (None: never)."""
        step = NS // self.RATE
        t, marked = start_ns, None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not finished():
            while t + 10 * step <= time.time() * NS:
                for comp in "ZNE":
                    self.feed(comp, t, 10)
                t += 10 * step
                if marked is None and t > mark_ns:
                    marked = time.time()
            time.sleep(0.005)
        return marked

    def samples(self, comp, ws, we):
        times = sorted(t for t in self.fed[comp] if ws <= t <= we)
        return times[0], np.array([self.fed[comp][t] for t in times], dtype=np.int32)


class ArrivalWatch:
    """A plain SeedLink client (tests/integration/slclient.py) in a thread:
    when did each stream's first record reaching `end` arrive?"""

    def __init__(self, port, end):
        self.end, self.arrived = end, {}
        self.client = SLClient(port, timeout=20)
        for line in ("STATION LIVE XX", "SELECT 00HH?.D", "DATA"):
            assert self.client.command(line) == "OK"
        self.client.send("END")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while len(self.arrived) < 3:
                rec = split_records(self.client.read_exact(520)[8:])
                if rec and rec[0].end_ns >= self.end:
                    self.arrived.setdefault(rec[0].stream, time.time())
        except (OSError, EOFError):
            pass

    def close(self):
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)     # wakes the reading thread
        except OSError:
            pass
        self.client.close()
        self.thread.join(5)


def run_in_thread(client):
    thread = threading.Thread(target=client.run, kwargs=dict(until_idle=False), daemon=True)
    thread.start()
    return thread


def test_live_window_gap_and_dead_component(server, tmp_path):
    step = NS // LiveFeed.RATE
    now = int(time.time() * 100) * step            # on the 100 Hz grid
    feed = LiveFeed(server.raw_port)
    feed.streamer.start()
    clients, threads = {}, []
    try:
        # the past: HHZ whole, HHN with a 2 s hole, HHE dead
        a0, hole0, hole1, a1 = now - 40 * NS, now - 32 * NS, now - 30 * NS, now - 20 * NS
        feed.feed("Z", a0, (a1 - a0) // step)
        feed.feed("N", a0, (hole0 - a0) // step)
        feed.feed("N", hole1, (a1 - hole1) // step)
        gap_pick = {"publicID": "gap", "time": format_time(now - 31 * NS),
                    "waveformID": "XX.LIVE.00.HHZ"}
        live_time = now + 3 * NS                    # window now+1 .. now+5 s: the future
        live_pick = {"publicID": "live", "time": format_time(live_time),
                     "waveformID": {"networkCode": "XX", "stationCode": "LIVE",
                                    "locationCode": "00", "channelCode": "HHZ"}}
        done = {}

        def note(name):
            def on_window(result):
                done[(name, result.pick.public_id)] = (time.time(), result)
            return on_window

        watch = ArrivalWatch(server.port, live_time + 2 * NS)
        opts = dict(before=2, after=2, expire=4, status_interval=0)
        clients["streaming"] = StreamingClient(
            "slink://127.0.0.1:%d" % server.port, on_window=note("streaming"), **opts)
        clients["polling"] = PollingClient(
            "slink://127.0.0.1:%d?idle=0.5" % server.port, interval=0.3, timeout=10,
            on_window=note("polling"), **opts)
        for client in clients.values():
            client.add_pick(gap_pick)
            client.add_pick(live_pick)
            threads.append(run_in_thread(client))
        # real time from a1 on, all three components, 0.1 s packets
        fed_end_at = feed.realtime(a1, live_time + 2 * NS, lambda: len(done) >= 4, 25)
        assert len(done) == 4, sorted(done)
    finally:
        for client in clients.values():
            client.stop()
        for thread in threads:
            thread.join(10)
        feed.streamer.stop()
        watch.close()

    arrived = max(watch.arrived.values())       # the window's data are at the server
    latency = {"record": arrived - fed_end_at}
    for name in ("streaming", "polling"):
        finished, gap = done[(name, "gap")]
        assert gap.status == "expired", name
        z, n, e = (gap.components["XX.LIVE.00.HH" + c] for c in "ZNE")
        assert z.complete
        assert not n.complete and len(n.gaps) == 1
        assert n.gaps[0][0] == hole0 - step and n.gaps[0][1] == hole1
        assert not e.coverage.has_data and e.records == []
        assert gap.missing()[-1] == "XX.LIVE.00.HHE: no data"

        finished, live = done[(name, "live")]
        assert live.complete, live.missing()
        for comp in "ZNE":
            part = live.components["XX.LIVE.00.HH" + comp]
            start, values = feed.samples(comp, live.start_ns, live.end_ns)
            assert part.start_ns == start
            np.testing.assert_array_equal(part.samples, values)
        latency[name] = finished - arrived
    print("\nlive window: sample at the window end fed -> its record at a SeedLink client "
          "%.3f s; record there -> window complete: streaming %.3f s, polling %.3f s"
          % (latency["record"], latency["streaming"], latency["polling"]))
    assert all(v < 10 for v in latency.values())


# -- many windows at once -----------------------------------------------------------------
# (windows per second are measured in bench/bench_pick_clients.py, which
# uses these helpers with a timing context as `around`)

def many_picks(n, prefix):
    offsets = np.linspace(25, 560, n)
    return [json_line("%s%d" % (prefix, i), T0 + int(off * NS), "BH" + "ZNE"[i % 3])
            for i, off in enumerate(offsets)]


def polling_batch(url, lines, around=contextlib.nullcontext(), **kw):
    """Hand `lines` to a new PollingClient and run it until every window is
    done (inside `around`); returns the counts and the WindowResults."""
    results = []
    opts = dict(before=20, after=20, expire=30, status_interval=0, on_window=results.append)
    opts.update(kw)
    client = PollingClient(url, **opts)
    with around:
        for line in lines:
            client.add_pick(line)
        counts = client.run(until_idle=True)
    return counts, results


def streaming_batch(url, lines, around=contextlib.nullcontext(), timeout=20):
    """A StreamingClient whose buffer one pick filled first; then `lines`,
    served from the buffer (inside `around`).  Returns the WindowResults of
    `lines` (fewer when `timeout` ran out)."""
    results = []
    client = StreamingClient(url, before=20, after=20, expire=30, status_interval=0,
                             buffer_length=buffer_age(), on_window=results.append)
    thread = run_in_thread(client)
    try:
        client.add_pick(json_line("warm", T0 + 300 * NS, "BHZ"))
        deadline = time.monotonic() + timeout
        while not results and time.monotonic() < deadline:
            time.sleep(0.01)
        with around:
            for line in lines:
                client.add_pick(line)
            while len(results) < len(lines) + 1 and time.monotonic() < deadline:
                time.sleep(0.002)
    finally:
        client.stop()
        thread.join(10)
    return results[1:]


def test_many_windows_all_complete(server, records, tmp_path):
    """A batch of overlapping windows over the 10 minutes completes on
    every path: polling over SeedLink dial-up and over SDS (one fetch for
    the batch), streaming from its buffer."""
    n = 60
    slink = "slink://127.0.0.1:%d" % server.port
    write_sds(tmp_path / "sds", [r for recs in records.values() for r in recs])
    for name, url in (("sl", slink), ("sds", "sdsarchive://%s" % (tmp_path / "sds"))):
        counts, results = polling_batch(url, many_picks(n, name))
        assert counts["complete"] == n, (name, counts)
        assert len(results) == n and all(r.complete for r in results), name
    results = streaming_batch(slink, many_picks(n, "buf"))
    assert len(results) == n and all(r.complete for r in results)
    for res in (results[0], results[-1]):
        check_result(res, records)
