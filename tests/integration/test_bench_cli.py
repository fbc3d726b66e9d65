"""``seedlink-fast bench`` against our own server on 127.0.0.1, tiny counts.

Consistency checks: every client gets exactly the records the server holds
for the selection, with strictly increasing, contiguous sequence numbers."""
import json
import re

import pytest

from seedlink_fast.cli import main

ROOT_SCENARIOS = __import__("pathlib").Path(__file__).resolve().parents[2] / "bench" / "scenarios"


def held(server, station="XX.TEST"):
    """(begin_seq, end_seq) of a station from INFO STATIONS."""
    with server.client() as c:
        xml = c.info("STATIONS")[0]
    net, sta = station.split(".")
    m = re.search(r'<station name="%s" network="%s"[^>]*begin_seq="([0-9A-F]+)"'
                  r'[^>]*end_seq="([0-9A-F]+)"' % (sta, net), xml)
    return int(m.group(1), 16), int(m.group(2), 16)


def bench(tmp_path, *argv):
    out = tmp_path / "bench.json"
    rc = main(["bench", *argv, "--json", str(out), "-q"])
    return rc, json.loads(out.read_text())


def test_fanout_counts_every_record_once(server, tmp_path, capsys):
    begin, end = held(server)
    assert end - begin > 50
    rc, rep = bench(tmp_path, "fanout", "--seedlink", "127.0.0.1:%d" % server.port,
                    "--clients", "1,3", "--station", "XX.TEST", "--start", "ALL",
                    "--repeat", "2", "--warmup", "1", "--duration", "10",
                    "--server-pid", str(server.proc.pid), "--markdown")
    assert rc == 0, rep
    assert rep["ok"] and rep["scenario"] == "fanout"
    assert rep["environment"]["cpu_count"] and rep["parameters"]["start"] == "ALL"
    assert [e["clients"] for e in rep["results"]] == [1, 3]
    for entry in rep["results"]:
        assert len(entry["warmup"]) == 1 and len(entry["runs"]) == 2
        for run in entry["warmup"] + entry["runs"]:
            n = entry["clients"]
            assert run["expected_per_client"] == end - begin
            assert run["records_per_client_min"] == run["records_per_client_max"] == end - begin
            assert run["records_total"] == n * (end - begin)
            assert run["bytes_total"] == run["records_total"] * 520
            assert run["complete_clients"] == n
            # strictly increasing and contiguous: first..last with nothing else
            assert (run["first_seq"], run["last_seq"]) == (begin, end - 1)
            assert run["gaps"] == 0 and run["repeats"] == 0 and not run["client_errors"]
            assert run["records_per_s"] > 0 and run["server_cpu_s"] >= 0
        assert entry["summary"]["records_per_s"]["min"] <= \
            entry["summary"]["records_per_s"]["median"] <= entry["summary"]["records_per_s"]["max"]
    table = capsys.readouterr().out
    assert "| server | N | records_per_s" in table and "127.0.0.1:%d" % server.port in table


def test_fanout_start_seq_and_records_limit(server, tmp_path):
    begin, end = held(server)
    start = begin + 10
    rc, rep = bench(tmp_path, "fanout", "--seedlink", "127.0.0.1:%d" % server.port,
                    "--clients", "2", "--station", "XX.TEST", "--start", "%06X" % start,
                    "--repeat", "1", "--warmup", "0", "--duration", "10")
    assert rc == 0, rep
    run = rep["results"][0]["runs"][0]
    assert run["handshake"][-1] == "FETCH %06X" % start
    assert run["records_total"] == 2 * (end - start)
    assert (run["first_seq"], run["last_seq"]) == (start, end - 1) and run["gaps"] == 0
    rc, rep = bench(tmp_path, "fanout", "--seedlink", "127.0.0.1:%d" % server.port,
                    "--clients", "2", "--start", "begin", "--records", "20",
                    "--repeat", "1", "--warmup", "0", "--duration", "10")
    assert rc == 0, rep
    run = rep["results"][0]["runs"][0]
    assert run["records_per_client_min"] == run["records_per_client_max"] == 20
    assert (run["first_seq"], run["last_seq"]) == (begin, begin + 19)


def test_fanout_next_is_bounded(server, tmp_path):
    # real time: no new records arrive, so the run ends at --duration, clean
    rc, rep = bench(tmp_path, "fanout", "--seedlink", "127.0.0.1:%d" % server.port,
                    "--clients", "2", "--station", "XX.TEST", "--start", "next",
                    "--repeat", "1", "--warmup", "0", "--duration", "1")
    assert rc == 0, rep
    run = rep["results"][0]["runs"][0]
    assert run["handshake"][-1] == "DATA" and run["records_total"] == 0
    assert run["complete_clients"] == 2


def test_handshake_and_idle(server, tmp_path):
    addr = "127.0.0.1:%d" % server.port
    rc, rep = bench(tmp_path, "handshake", "--seedlink", addr, "--clients", "2",
                    "--rounds", "10", "--repeat", "2", "--warmup", "0", "--station", "XX.TEST")
    assert rc == 0, rep
    for run in rep["results"][0]["runs"]:
        assert run["rounds"] == run["rounds_planned"] == 20 and run["failures"] == 0
        for cmd in ("HELLO", "STATION", "FETCH"):
            assert 0 < run["%s_ms_median" % cmd] <= run["%s_ms_p99" % cmd] <= \
                run["%s_ms_max" % cmd] < 5000
    rc, rep = bench(tmp_path, "idle", "--seedlink", addr, "--clients", "50", "--repeat", "1",
                    "--server-pid", str(server.proc.pid))
    assert rc == 0, rep
    run = rep["results"][0]["runs"][0]
    assert run["held"] == 50 and run["failures"] == 0 and run["probed_alive"] == 10
    assert run["fresh_after_close"] == "ok" and "server_kb_per_connection" in run


def test_compare_same_server_twice(server, tmp_path, capsys):
    addr = "127.0.0.1:%d" % server.port
    rc, rep = bench(tmp_path, "handshake", "--compare", "%s,%s" % (addr, addr),
                    "--clients", "1", "--rounds", "30", "--repeat", "3", "--warmup", "1",
                    "--station", "XX.TEST", "--markdown")
    assert rc == 0, rep
    first, second = rep["results"]
    assert len(first["runs"]) == len(second["runs"]) == 3
    ratio = second["ratio_to_first"]["rounds_per_s"]["median"]
    assert 0.33 < ratio < 3.0, ratio
    assert "Ratios" in capsys.readouterr().out
    rc, rep = bench(tmp_path, "fanout", "--compare", "%s,%s" % (addr, addr), "--clients", "2",
                    "--repeat", "1", "--warmup", "0", "--station", "XX.TEST")
    assert rc == 0, rep
    assert rep["results"][0]["runs"][0]["records_total"] == \
        rep["results"][1]["runs"][0]["records_total"]


def test_toml_scenarios(server, tmp_path):
    addr = "127.0.0.1:%d" % server.port
    for name in ("fanout-10", "handshake", "idle-1000"):
        assert (ROOT_SCENARIOS / ("%s.toml" % name)).is_file()
    # the shipped file, with small overrides from the command line
    rc, rep = bench(tmp_path, str(ROOT_SCENARIOS / "fanout-10.toml"), "--seedlink", addr,
                    "--clients", "2", "--repeat", "1", "--warmup", "0")
    assert rc == 0, rep
    assert rep["parameters"]["file"].endswith("fanout-10.toml")
    assert rep["results"][0]["runs"][0]["complete_clients"] == 2
    own = tmp_path / "mine.toml"
    own.write_text('scenario = "idle"\nclients = [20]\nrepeat = 1\n')
    rc, rep = bench(tmp_path, str(own), "--seedlink", addr)
    assert rc == 0 and rep["results"][0]["runs"][0]["held"] == 20


@pytest.mark.parametrize("argv", [
    ["nosuch", "--seedlink", "127.0.0.1:1"],
    ["fanout"],
    ["fanout", "--seedlink", "127.0.0.1:1", "--protocol", "4"],
    ["fanout", "--seedlink", "127.0.0.1:1", "--start", "xyz"],
    ["fanout", "--compare", "127.0.0.1:1,127.0.0.1:2", "--server-pid", "1"],
])
def test_bad_arguments(argv, capsys):
    assert main(["bench", *argv]) == 2
    assert "seedlink-fast bench:" in capsys.readouterr().err


# -- latency, ingest, servers the harness starts, plots, DataLink, the suite --

import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from seedlink_fast import mseed  # noqa: E402
from seedlink_fast.benchtool import datalink, ingest, latency, report, servers  # noqa: E402
from seedlink_fast.benchtool.feeder import STAMP, STAMP_AT  # noqa: E402

ROOT = ROOT_SCENARIOS.parent.parent


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def bench_server(tmp_path):
    """Our server on the harness's own seedlink.ini (feeder plugin, raw port)."""
    from serverproc import ServerProcess

    work = tmp_path / "bench-server"
    values = servers.write_setup(str(work))
    srv = ServerProcess(values["ini"], values["port"], work)
    srv.values = values
    srv.addr = "127.0.0.1:%d" % values["port"]
    yield srv
    srv.stop()


def _check_latency_runs(rep, count):
    for entry in rep["results"]:
        for run in entry["runs"]:
            k = entry["clients"]
            assert run["received"] == run["expected"] == count * k
            assert run["lost"] == 0 and run["duplicates"] == 0 and run["foreign"] == 0
            assert len(run["latencies_us"]) == count * k
            assert 0 < run["min_ms"] <= run["median_ms"] <= run["p90_ms"] <= run["p99_ms"] \
                <= run["max_ms"] < 1000
            assert run.get("server_cpu_s", 0) >= 0


def test_latency_plugin_feed(bench_server, tmp_path, capsys):
    rc, rep = bench(tmp_path, "latency", "--seedlink", bench_server.addr,
                    "--feed", "plugin:%s" % bench_server.values["fifo"], "--clients", "1,2",
                    "--count", "40", "--rate", "200", "--repeat", "1", "--warmup", "0",
                    "--server-pid", str(bench_server.proc.pid), "--markdown")
    assert rc == 0, rep
    assert rep["ok"] and [e["clients"] for e in rep["results"]] == [1, 2]
    assert rep["results"][0]["runs"][0]["station"] == "XX.LAT"
    _check_latency_runs(rep, 40)
    out = capsys.readouterr().out
    assert "| server | N | received | lost" in out and "median_ms" in out


def test_latency_raw_port(bench_server, tmp_path):
    rc, rep = bench(tmp_path, "latency", "--seedlink", bench_server.addr,
                    "--raw-port", str(bench_server.values["raw_port"]), "--count", "40",
                    "--rate", "200", "--repeat", "2", "--warmup", "0")
    assert rc == 0, rep
    run = rep["results"][0]["runs"][0]
    assert run["feed"] == "raw" and run["station"] == "XX.RAWL"
    _check_latency_runs(rep, 40)
    # a probe fills a record: it is sent at once, not after the idle flush (0.2 s)
    assert rep["results"][0]["summary"]["median_ms"]["max"] < 100


def test_ingest_plugin_counts_every_record(bench_server, tmp_path, capsys):
    rc, rep = bench(tmp_path, "ingest", "--seedlink", bench_server.addr,
                    "--feed", "plugin:%s" % bench_server.values["fifo"], "--count", "3000",
                    "--rate", "0,20000", "--repeat", "1", "--warmup", "1",
                    "--server-pid", str(bench_server.proc.pid), "--markdown")
    assert rc == 0, rep
    assert [e["rate"] for e in rep["results"]] == [0, 20000]
    for entry in rep["results"]:
        for run in entry["warmup"] + entry["runs"]:
            assert run["records"] == run["stored"] == 3000
            assert run["received_min"] == run["received_max"] == 3000 and run["lost"] == 0
            assert run["gaps"] == 0 and run["repeats"] == 0 and run["complete_readers"] == 1
            # contiguous and strictly increasing: first..last holds exactly the records
            assert run["last_seq"] - run["first_seq"] + 1 == 3000
            # /proc counts CPU in 10 ms ticks: a short run may show none
            assert run["records_per_s"] > 0 and run["server_cpu_us_per_record"] >= 0
            assert run["server_vmhwm_kb"] > 0
    paced = rep["results"][1]["runs"][0]
    assert paced["write_seconds"] >= 0.9 * 3000 / 20000 and paced["lag_s"] < 1.0
    out = capsys.readouterr().out
    assert "| server | rate | records_per_s" in out and "kept up" in out


def test_ingest_raw_port(bench_server, tmp_path):
    rc, rep = bench(tmp_path, "ingest", "--seedlink", bench_server.addr, "--feed",
                    "raw:127.0.0.1:%d" % bench_server.values["raw_port"], "--raw-channels", "4",
                    "--sample-rate", "20000", "--data-seconds", "1", "--repeat", "1",
                    "--warmup", "0")
    assert rc == 0, rep
    run = rep["results"][0]["runs"][0]
    assert run["station"] == "XX.RAWI" and run["samples"] == 4 * 20000
    assert run["acked"] and run["samples_received_min"] == run["samples"] and run["lost"] == 0
    assert run["stored"] == run["received_min"] > 0 and run["gaps"] == run["repeats"] == 0


def test_server_cmd_starts_and_stops_the_server(tmp_path):
    rc, rep = bench(tmp_path, "latency", "--server-cmd", "ours", "--feed", "raw", "--count", "20",
                    "--rate", "200", "--repeat", "1", "--warmup", "0", "--work-dir",
                    str(tmp_path / "work"))
    assert rc == 0, rep
    (srv,) = rep["servers"]
    assert srv["kind"] == "seedlink-fast" and srv["returncode"] in (0, -15)
    assert srv["peak"]["self"] > 1000 and srv["cpu"]["self"] > 0 and srv["listen_seconds"] < 20
    with pytest.raises(ProcessLookupError):
        os.kill(srv["pid"], 0)
    run = rep["results"][0]["runs"][0]
    assert run["received"] == 20 and run["server_vmhwm_kb"] > 0 and "children_cpu_s" in run
    assert (tmp_path / "work" / "0-seedlink-fast" / "seedlink.ini").is_file()


def test_fanout_on_a_started_server_is_preloaded(tmp_path):
    rc, rep = bench(tmp_path, "fanout", "--server-cmd", "ours", "--preload", "500",
                    "--clients", "2", "--repeat", "1", "--warmup", "0")
    assert rc == 0, rep
    run = rep["results"][0]["runs"][0]
    assert run["handshake"][0] == "STATION ING XX"
    assert run["records_per_client_min"] == run["records_per_client_max"] == 500
    assert run["gaps"] == run["repeats"] == 0 and "server_cpu_us_per_record" in run


def test_compare_two_servers_interleaved(tmp_path, capsys):
    from serverproc import ServerProcess

    procs = []
    try:
        for name in ("a", "b"):
            values = servers.write_setup(str(tmp_path / name))
            srv = ServerProcess(values["ini"], values["port"], tmp_path / name)
            srv.values = values
            procs.append(srv)
        rc, rep = bench(tmp_path, "latency", "--compare",
                        ",".join("127.0.0.1:%d" % s.values["port"] for s in procs),
                        "--feed", ",".join("plugin:%s" % s.values["fifo"] for s in procs),
                        "--server-pid", ",".join(str(s.proc.pid) for s in procs),
                        "--count", "30", "--rate", "200", "--repeat", "2", "--warmup", "0",
                        "--markdown")
    finally:
        for srv in procs:
            srv.stop()
    assert rc == 0, rep
    first, second = rep["results"]
    _check_latency_runs(rep, 30)
    a1, a2 = (r["started"] for r in first["runs"])
    b1, b2 = (r["started"] for r in second["runs"])
    assert a1 < b1 < a2 < b2                                   # A B A B
    assert 0.05 < second["ratio_to_first"]["median_ms"]["median"] < 20
    assert "Ratios" in capsys.readouterr().out


@pytest.mark.skipif(not _has_matplotlib(), reason="matplotlib not installed")
def test_plots(server, bench_server, tmp_path):
    plots = tmp_path / "plots"
    rc, _ = bench(tmp_path, "fanout", "--seedlink", "127.0.0.1:%d" % server.port,
                  "--station", "XX.TEST", "--clients", "1,2", "--repeat", "1", "--warmup", "0",
                  "--plot", str(plots))
    assert rc == 0
    rc, _ = bench(tmp_path, "latency", "--seedlink", bench_server.addr, "--feed",
                  "plugin:%s" % bench_server.values["fifo"], "--count", "20", "--rate", "200",
                  "--repeat", "1", "--warmup", "0", "--plot", str(plots))
    assert rc == 0
    for name in ("fanout-throughput.png", "latency-histogram.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    files, message = report.plot({"scenario": "fanout", "results": []}, str(tmp_path))
    assert files == [] and "matplotlib is not installed" in message


def test_progress_bar(server, tmp_path, capsys):
    main(["bench", "idle", "--seedlink", "127.0.0.1:%d" % server.port, "--clients", "5",
          "--repeat", "2", "--progress", "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert "\r[" in err and "2/2" in err


# -- DataLink: a tiny acceptor speaking the protocol (no ringserver here) --

class DataLinkAcceptor(threading.Thread):
    """Accepts up to `conns` connections one after the other; answers ID,
    and WRITE with flag A (OK, or ERROR when `refuse`); keeps every WRITE."""

    def __init__(self, proto="1.1", refuse=False, conns=2):
        super().__init__(daemon=True)
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(2)
        self.lsock.settimeout(10)
        self.addr = self.lsock.getsockname()
        self.proto, self.refuse, self.conns = proto, refuse, conns
        self.writes = []
        self.ids = []

    def _exact(self, sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def run(self):
        for _ in range(self.conns):
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            sock.settimeout(10)
            try:
                for _ in range(100_000):
                    pre = self._exact(sock, 3)
                    assert pre[:2] == b"DL"
                    words = self._exact(sock, pre[2]).decode().split()
                    if words[0] == "ID":
                        self.ids.append(words[1])
                        sock.sendall(datalink.frame(
                            "ID DataLink 2024.000 :: DLPROTO:%s PACKETSIZE:512 WRITE" % self.proto))
                    elif words[0] == "WRITE":
                        self.writes.append((words, self._exact(sock, int(words[5]))))
                        if words[4] == "A":
                            msg = b"no" if self.refuse else b""
                            sock.sendall(datalink.frame("%s %d %d" % (
                                "ERROR" if self.refuse else "OK", len(self.writes), len(msg)), msg))
            except (EOFError, OSError):
                pass
            finally:
                sock.close()


def test_datalink_writer_framing():
    acc = DataLinkAcceptor(conns=4)      # writer, prepare (asks the version), ingest, latency
    acc.start()
    w = datalink.DataLinkWriter(acc.addr)
    assert (w.proto, w.can_write) == ("1.1", True) and "DataLink" in w.server_id
    assert w.write("FDSN:XX_ING_00_H_H_Z/MSEED", 10, 20, b"x" * 512, ack=True) == 1
    w.close()
    # the ingest feed: prepared WRITEs, only the last one acknowledged
    feed = ("datalink", acc.addr)
    fed = ingest.feed_once(feed, "XX.ING", 300, 0, ingest.prepare(feed, "XX.ING", 300), 5.0)
    assert fed["records"] == 300 and fed["t_end_ns"] >= fed["t_start_ns"]
    # the latency feed: stamped records, no replies asked
    t0 = time.monotonic_ns()
    latency._feed_datalink(acc.addr, "XX.LAT", 20, 500.0, 7, 5.0)
    acc.join(10)
    assert len(acc.ids) == 4 and len(acc.writes) == 1 + 300 + 20
    ing, lat = acc.writes[1:301], acc.writes[301:]
    assert [w[0][4] for w in ing] == ["N"] * 299 + ["A"]
    records = mseed.unpack(b"".join(p for _, p in ing), decode=False)
    for (words, payload), rec in zip(ing, records):
        assert words[0] == "WRITE" and words[1] == "FDSN:XX_ING_00_H_H_Z/MSEED"
        assert int(words[2]) == rec.starttime_ns // 1000 and int(words[3]) == rec.endtime_ns // 1000
        assert words[5] == "512" and len(payload) == 512
    assert [int(p[:6]) for _, p in lat] == list(range(7, 27))
    stamps = [STAMP.unpack_from(p, STAMP_AT)[0] for _, p in lat]
    assert t0 < stamps[0] < stamps[-1] < time.monotonic_ns()
    assert all(w[0][1] == "FDSN:XX_LAT_00_H_H_Z/MSEED" and w[0][4] == "N" for w in lat)


def test_datalink_refusal_and_old_protocol():
    acc = DataLinkAcceptor(proto="1.0", refuse=True, conns=1)
    acc.start()
    w = datalink.DataLinkWriter(acc.addr)
    assert w.proto == "1.0"
    assert datalink.stream_id("XX", "ING", "00", "HHZ", w.proto) == "XX_ING_00_HHZ/MSEED"
    with pytest.raises(datalink.DataLinkError):
        w.write("XX_ING_00_HHZ/MSEED", 1, 2, bytes(512), ack=True)
    w.close()
    acc.join(10)
    with pytest.raises(ValueError):
        datalink.frame("W" * 256)


# -- scenario files, arguments, the suite --

def test_new_toml_scenarios(bench_server, tmp_path):
    for name in ("latency", "ingest", "ingest-raw"):
        assert (ROOT_SCENARIOS / ("%s.toml" % name)).is_file()
    rc, rep = bench(tmp_path, str(ROOT_SCENARIOS / "latency.toml"), "--seedlink",
                    bench_server.addr, "--feed", "plugin:%s" % bench_server.values["fifo"],
                    "--clients", "1", "--count", "20", "--rate", "200", "--repeat", "1",
                    "--warmup", "0")
    assert rc == 0 and rep["results"][0]["runs"][0]["received"] == 20
    rc, rep = bench(tmp_path, str(ROOT_SCENARIOS / "ingest-raw.toml"), "--seedlink",
                    bench_server.addr, "--raw-port", str(bench_server.values["raw_port"]),
                    "--raw-channels", "2", "--sample-rate", "10000", "--data-seconds", "1",
                    "--rate", "0", "--repeat", "1", "--warmup", "0")
    assert rc == 0 and rep["results"][0]["runs"][0]["lost"] == 0


@pytest.mark.parametrize("argv", [
    ["latency", "--seedlink", "127.0.0.1:1"],                       # no feed for it
    ["latency", "--seedlink", "127.0.0.1:1", "--feed", "plugin:/x", "--rate", "0"],
    ["latency", "--server-cmd", "some-server --no-placeholders"],   # no address
    ["ingest", "--seedlink", "127.0.0.1:1", "--feed", "carrier-pigeon:1"],
    ["setup"],                                                       # needs --work-dir
])
def test_bad_new_arguments(argv, capsys):
    assert main(["bench", *argv]) == 2
    assert "seedlink-fast bench" in capsys.readouterr().err


def test_setup_writes_configs(tmp_path, capsys):
    assert main(["bench", "setup", "--work-dir", str(tmp_path / "w")]) == 0
    ini = (tmp_path / "w" / "seedlink.ini").read_text()
    assert "seedlink_fast.benchtool.feeder" in ini and 'raw_channels = "00.HHZ:1,"' in ini
    assert "DataLinkPort" in (tmp_path / "w" / "ring.conf").read_text()
    assert "seedlink-fast bench latency" in capsys.readouterr().out
    specs = servers.ServerSpec.from_args(["ours"], seiscomp="/opt/sc/seedlink",
                                         ringserver="/opt/rs/ringserver")
    assert [(s.kind, s.cmd, s.default_feed()) for s in specs] == [
        ("seedlink-fast", servers.OURS_CMD, "plugin"),
        ("seiscomp", "/opt/sc/seedlink -f {ini}", "plugin"),
        ("ringserver", "/opt/rs/ringserver {ringconf}", "datalink")]
    assert all(s.generated for s in specs)


def test_a_server_that_does_not_start(tmp_path, capsys):
    t0 = time.monotonic()
    assert main(["bench", "latency", "--seiscomp-seedlink", "/bin/false", "--work-dir",
                 str(tmp_path / "w")]) == 2
    assert "server exited (1)" in capsys.readouterr().err and time.monotonic() - t0 < 10


def _suite():
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    import suite

    return suite


def test_suite_runs_one_component(tmp_path, monkeypatch, capsys):
    suite = _suite()
    script, _, full, limits = suite.COMPONENTS["fir"]
    monkeypatch.setitem(suite.COMPONENTS, "fir", (script, [
        "--quick", "--n", "400000", "--stream-n", "100000", "--reps", "1"], full, limits))
    out = tmp_path / "suite.json"
    assert suite.main(["--quick", "--only", "fir", "--no-readme", "--json", str(out)]) == 0
    (fir,) = json.loads(out.read_text())["components"]
    assert fir["name"] == "fir" and not fir["error"]
    assert [r[2] for r in fir["rows"]] == ["PASS", "PASS", "PASS"]
    assert "| fir | D=2" in capsys.readouterr().out
    # the module entry point: python -m bench
    proc = __import__("subprocess").run([sys.executable, "-m", "bench", "--help"], cwd=str(ROOT),
                                        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--quick" in proc.stdout


def test_suite_readme_section_is_replaced(tmp_path):
    suite = _suite()
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nhand-written analysis\n")
    suite.write_readme(suite.BEGIN + "\nfirst\n" + suite.END, str(readme))
    suite.write_readme(suite.BEGIN + "\nsecond\n" + suite.END, str(readme))
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written analysis\n")
    assert "second" in text and "first" not in text and text.count(suite.BEGIN) == 1


def test_feed_failure_is_reported_at_once(bench_server, tmp_path):
    not_a_fifo = tmp_path / "plain-file"
    not_a_fifo.write_text("")
    for scenario in ("latency", "ingest"):
        t0 = time.monotonic()
        rc, rep = bench(tmp_path, scenario, "--seedlink", bench_server.addr, "--feed",
                        "plugin:%s" % not_a_fifo, "--count", "50", "--repeat", "1",
                        "--warmup", "0")
        assert rc == 1 and not rep["ok"]
        assert "is not a FIFO" in rep["results"][0]["runs"][0]["error"][0]
        assert time.monotonic() - t0 < 10
