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
