"""End to end against the real daemon's captures: start ``seedlink-fast
serve`` with a golden case's seedlink.ini, let its plugin cat input.plugin to
fd 63, fetch every record and compare every byte of the SeedLink stream."""
import re

import pytest

from conftest import golden_case
from serverproc import free_port, golden_server_ini


def _strip_root(xml):
    return re.sub(r' (started|software)="[^"]*"', "", xml)


@pytest.mark.parametrize("case,station", [("stream100_steim2", ("GOLD", "XX")),
                                          ("highrate_4000", ("FAST", "XX")),
                                          ("mseed_passthrough", ("PASS", "XX"))])
def test_golden_end_to_end(case, station, tmp_path, start_server):
    case_dir = golden_case(case)
    port = free_port()
    server = start_server(golden_server_ini(case, tmp_path, port), port)
    server.wait_settled()
    with server.client(timeout=30) as c:
        assert c.command("STATION %s %s" % station) == "OK"
        assert c.command("FETCH 000000") == "OK"
        c.send("END")
        got = c.read_packets_until_end()
    expected = (case_dir / "expected.sl").read_bytes()
    assert len(got) == len(expected)
    for i in range(0, len(expected), 520):
        assert got[i:i + 520] == expected[i:i + 520], "packet %d differs" % (i // 520)
    with server.client() as c:
        xml, channel = c.info("STREAMS")
    assert channel == "INF"
    assert _strip_root(xml) == _strip_root((case_dir / "expected_info_streams.xml").read_text())
    assert server.stop() == 0
    key = "XX." + station[0]
    written = (tmp_path / "buffer" / key / "buffer.xml").read_text()
    assert written == (case_dir / ("buffer_%s.xml" % key)).read_text()
