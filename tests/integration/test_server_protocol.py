"""SeedLink 3 protocol behaviour of a running server, compared with the real
daemon's captured answers where they apply."""
import time

import pytest

from conftest import SHARED
from seedlink_fast import mseed

CAPTURES = SHARED / "reference" / "captures"


def test_hello_and_cat_match_the_daemon(server):
    with server.client() as c:
        c.send("HELLO")
        first, second = c.read_line(), c.read_line()
        captured = (CAPTURES / "hello_response.bin").read_bytes().split(b"\r\n")
        assert first.split(" :: ")[0] == captured[0].decode()
        assert first.endswith(":: SLPROTO:3.1 CAP EXTREPLY NSWILDCARD BATCH")
        assert second == captured[1].decode()
        c.send("CAT")
        assert c.read_exact(len(b"XX TEST  Test station\nEND")) == \
            (CAPTURES / "cat_response.bin").read_bytes()


def test_station_select_data_end(server):
    with server.client() as c:
        assert c.command("STATION NONE XX") == "ERROR"
        assert c.command("HELLO") == "ERROR"            # after a failed STATION
        assert c.command("STATION TEST XX") == "OK"
        assert c.command("SELECT bhz") == "ERROR"       # selectors are upper case
        assert c.command("SELECT BHZ.D") == "OK"
        assert c.command("FETCH 000000") == "OK"
        c.send("END")
        data = c.read_packets_until_end()
    records = mseed.unpack(b"".join(data[i + 8:i + 520] for i in range(0, len(data), 520)))
    assert records and {r.channel for r in records} == {"BHZ"}
    seqs = [int(data[i + 2:i + 8], 16) for i in range(0, len(data), 520)]
    assert seqs == sorted(seqs)


def test_pipelined_commands_are_all_answered(server):
    with server.client() as c:
        c.sock.sendall(b"STATION TEST XX\r\nSELECT LHZ\r\nFETCH 000000\r\nEND\r\n")
        assert [c.read_line() for _ in range(3)] == ["OK", "OK", "OK"]
        data = c.read_packets_until_end()
    assert data and all(data[i + 15 + 8:i + 18 + 8] == b"LHZ" for i in range(0, len(data), 520))


def test_data_resumes_at_sequence_and_fetch_ends(server):
    with server.client() as c:
        assert c.command("STATION TEST XX") == "OK"
        assert c.command("FETCH 000005") == "OK"
        c.send("END")
        data = c.read_packets_until_end()
    assert data[:8] == b"SL000005"


def test_info_levels(server):
    with server.client() as c:
        for level in ("ID", "CAPABILITIES", "STATIONS", "STREAMS", "GAPS", "CONNECTIONS", "ALL"):
            xml, channel = c.info(level)
            assert channel == "INF" and xml.startswith('<?xml version="1.0"?>\n<seedlink ')
        xml, channel = c.info("BOGUS")
        assert channel == "ERR"
        assert c.command("INFO") == "ERROR"
        xml, _ = c.info("STATIONS")
        assert 'name="TEST" network="XX" description="Test station"' in xml


def test_batch_suppresses_replies(server):
    with server.client() as c:
        assert c.command("BATCH") == "OK"
        c.sock.sendall(b"STATION TEST XX\r\nSELECT LOG.L\r\nFETCH 000000\r\nEND\r\n")
        data = c.read_packets_until_end()
    assert data[:2] == b"SL" and data[8 + 15:8 + 18] == b"LOG"


def test_wildcard_station_and_extreply(server):
    with server.client() as c:
        assert c.command("CAPABILITIES EXTREPLY") == "OK"
        assert c.command("STATION T?S* X*") == "OK"
        reply = c.command("SELECT lower")
        assert reply.startswith("ERROR")


def test_bad_input_is_contained(server):
    with server.client() as c:
        c.sock.sendall(b"\xff\xfegarbage\r\n")
        assert c.read_line().startswith("ERROR")
        c.sock.sendall(b"CAT\x00this part of the read is dropped\r\n")
        c.sock.sendall(b"\r\n")
        # CAT answered, the NUL cut the rest of that read
        assert c.read_exact(len(b"XX TEST  Test station\nEND")) == b"XX TEST  Test station\nEND"
        assert c.command("HELLO").startswith("SeedLink")
        c.read_line()
    with server.client() as c:
        c.sock.sendall(b"A" * 1100)
        with pytest.raises((EOFError, ConnectionError)):
            c.read_line()
    # the server still serves
    with server.client() as c:
        assert c.command("STATION TEST XX") == "OK"


def test_time_window(server):
    with server.client(timeout=20) as c:
        assert c.command("STATION TEST XX") == "OK"
        assert c.command("SELECT BHZ.D") == "OK"
        assert c.command("TIME 2026,11,21,23,52,00 2026,11,21,23,53,00") == "OK"
        c.send("END")
        data = c.read_packets_until_end()
    recs = mseed.unpack(b"".join(data[i + 8:i + 520] for i in range(0, len(data), 520)))
    begin = 1_795_305_120 * 10**9                  # 2026-11-21T23:52:00
    assert recs
    assert all(r.starttime_ns <= begin + 60 * 10**9 for r in recs)
    assert all(r.starttime_ns + r.num_samples * 5 * 10**7 >= begin for r in recs)


def test_request_log_names_each_command(server):
    # request_log is on by default: every command is logged (with the
    # station for station-level commands), after its reply went out
    with server.client() as c:
        assert c.command("STATION TEST XX") == "OK"
        assert c.command("SELECT BHZ.D") == "OK"
        assert c.command("STATION NONE XX") == "ERROR"
    log = ""
    for _ in range(50):                   # the server writes its log lines as it goes
        log = server.log_path.read_text()
        if "STATION NONE XX" in log:
            break
        time.sleep(0.1)
    lines = [line for line in log.splitlines() if ": STATION " in line or ": SELECT " in line]
    assert any(line.endswith(": STATION TEST XX") for line in lines), lines
    assert any(line.endswith("XX.TEST : SELECT BHZ.D") for line in lines), lines
    assert any(line.endswith(": STATION NONE XX") for line in lines), lines
