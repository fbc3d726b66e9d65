"""WebSocket (RFC 6455 subset, as SeisComP has it) with a real client
library nobody here wrote: the PyPI ``websocket-client``."""
import pytest

from serverproc import free_port, make_station_ini

ws_client = pytest.importorskip("websocket")


@pytest.fixture
def ws_server(tmp_path, start_server, shared_dir):
    port = free_port()
    srv = start_server(make_station_ini(tmp_path, port, extra="websocket = enabled"), port)
    srv.wait_settled()
    return srv


def _fetch_raw(server, channel):
    with server.client(timeout=30) as c:
        assert c.command("STATION TEST XX") == "OK"
        assert c.command("SELECT %s" % channel) == "OK"
        assert c.command("FETCH 000000") == "OK"
        c.send("END")
        return c.read_packets_until_end()


def test_websocket_session_gets_the_same_packets(ws_server):
    expected = _fetch_raw(ws_server, "LHZ")
    ws = ws_client.create_connection("ws://127.0.0.1:%d/" % ws_server.port, timeout=20,
                                     subprotocols=["seedlink3.1"])
    try:
        ws.send("HELLO")
        hello = ws.recv()
        assert hello.startswith(b"SeedLink v3.3") and hello.endswith(b"Test Org\r\n")
        for command in ("STATION TEST XX", "SELECT LHZ", "FETCH 000000"):
            ws.send(command)
            assert ws.recv() == b"OK\r\n"
        ws.send("END")
        frames = []
        while True:
            message = ws.recv()
            if message == b"END":
                break
            assert len(message) == 520            # one packet per frame
            frames.append(message)
        assert b"".join(frames) == expected
        ws.send("INFO ID")
        info = ws.recv()
        assert info[:8] == b"SLINFO  " and len(info) == 520
    finally:
        ws.close()


def test_websocket_not_allowed_is_an_unknown_command(server):
    with server.client() as c:
        c.send("GET / HTTP/1.1")
        assert c.read_line() == "ERROR"
