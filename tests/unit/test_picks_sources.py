"""Data URLs, the SDS and FDSN sources (FDSN against a stub HTTP server on
127.0.0.1), and the pick sources (file, directory, lines, TCP)."""
import http.server
import json
import os
import socket
import threading
import time

import pytest

from seedlink_fast.picks import (
    DirectorySource, FdsnDataselect, LineSource, SdsArchive, TcpSource, open_archive,
    open_pick_source, parse_url, write_sds)
from seedlink_fast.picks.model import NS
from seedlink_fast.picks.recordstream import sds_path
from seedlink_fast.picks.seedlink import SeedLinkDialup
from test_picks_window import T0, make_records

PICK = {"publicID": "p1", "time": "2026-11-21T23:55:00Z", "waveformID": "XX.TEST..BHZ"}


@pytest.mark.parametrize("url, kind, endpoint", [
    ("fdsnws://127.0.0.1:8080", "fdsn", "http://127.0.0.1:8080/fdsnws/dataselect/1/query"),
    ("fdsnws://host", "fdsn", "http://host:80/fdsnws/dataselect/1/query"),
    ("fdsnwss://host", "fdsn", "https://host:443/fdsnws/dataselect/1/query"),
    ("fdsnws://host:8080/eida", "fdsn", "http://host:8080/eida/fdsnws/dataselect/1/query"),
    ("fdsnws://host/fdsnws/dataselect/1/", "fdsn", "http://host:80/fdsnws/dataselect/1/query"),
    ("http://h:9/fdsnws/dataselect/1/queryauth", "fdsn",
     "http://h:9/fdsnws/dataselect/1/queryauth"),
    ("https://service.example.org", "fdsn",
     "https://service.example.org:443/fdsnws/dataselect/1/query"),
    ("slink://127.0.0.1:18000", "slink", None),
])
def test_parse_url(url, kind, endpoint):
    spec = parse_url(url)
    assert spec.kind == kind and spec.endpoint == endpoint


def test_parse_url_others(monkeypatch):
    spec = parse_url("slink://geofon?timeout=5&idle=1")
    assert (spec.host, spec.port, spec.option("timeout", 30), spec.option("idle", 2)) == (
        "geofon", 18000, 5.0, 1.0)
    assert parse_url("slink://:18001").host == "localhost"
    assert parse_url("sdsarchive:///a/b,/c").roots == ["/a/b", "/c"]
    assert parse_url("sdsarchive://rel/dir").roots == ["rel/dir"]
    monkeypatch.setenv("SEISCOMP_ROOT", "/sc")
    assert parse_url("sdsarchive://").roots == ["/sc/var/lib/archive"]
    for bad in ("caps://x", "/plain/path", "slink://host:notaport"):
        with pytest.raises(ValueError):
            parse_url(bad)
    assert isinstance(open_archive("slink://h:1?timeout=3"), SeedLinkDialup)
    assert open_archive("fdsnws://h?method=get").method == "get"


def test_sds_round_trip_across_midnight(tmp_path):
    # 20 Hz from 23:50 for 20 minutes: the files of two days
    recs, data = make_records(24000, rate=20, start=T0)
    paths = write_sds(tmp_path, recs)
    assert [os.path.basename(p) for p in paths] == ["XX.TEST..BHZ.D.2026.325",
                                                     "XX.TEST..BHZ.D.2026.326"]
    assert paths[0] == sds_path(tmp_path, "XX", "TEST", "", "BHZ", 2026, 325)
    sds = SdsArchive([str(tmp_path / "missing"), str(tmp_path)])
    ws, we = T0 + 590 * NS, T0 + 630 * NS             # 23:59:50 .. 00:00:30
    got = sds.fetch([("XX", "TEST", "", "BHZ", ws, we)])
    want = [r for r in recs if r.end_ns >= ws and r.start_ns <= we]
    assert [r.raw for r in got] == [r.raw for r in want]
    assert sds.fetch([("XX", "TEST", "", "BHN", ws, we)]) == []
    # the index is cached and rebuilt when a file changes
    assert len(sds._cache) == 2          # the two existing day files
    more, _ = make_records(200, rate=20, start=T0 + 1200 * NS, seed=2)
    write_sds(tmp_path, more)
    got = sds.fetch([("XX", "TEST", "", "BHZ", T0 + 1200 * NS, T0 + 1205 * NS)])
    assert [r.raw for r in got] == [more[0].raw]


class _Dataselect(http.server.BaseHTTPRequestHandler):
    records = b""
    seen = []

    def _answer(self, body):
        if not body:
            self.send_response(204)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.fdsn.mseed")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        text = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.seen.append(("POST", self.path, text))
        if "BAD" in text:
            self.send_error(400, "bad request")
            return
        self._answer(self.records if "BHZ" in text else b"")

    def do_GET(self):
        self.seen.append(("GET", self.path, ""))
        self._answer(self.records if "cha=BHZ" in self.path else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def dataselect():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dataselect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Dataselect.seen = []
    yield server
    server.shutdown()
    server.server_close()


def test_fdsn_post_and_get(dataselect):
    recs, _ = make_records(3000)
    _Dataselect.records = b"".join(r.raw for r in recs)
    port = dataselect.server_address[1]
    fdsn = open_archive("fdsnws://127.0.0.1:%d" % port, timeout=5)
    assert isinstance(fdsn, FdsnDataselect)
    req = [("XX", "TEST", "", "BHZ", T0, T0 + 10 * NS), ("XX", "TEST", "", "BHN", T0, T0 + NS)]
    got = fdsn.fetch(req)
    assert [r.raw for r in got] == [r.raw for r in recs]
    method, path, body = _Dataselect.seen[-1]
    assert (method, path) == ("POST", "/fdsnws/dataselect/1/query")
    assert body.splitlines() == [
        "XX TEST -- BHZ 2026-11-21T23:50:00.000000 2026-11-21T23:50:10.000000",
        "XX TEST -- BHN 2026-11-21T23:50:00.000000 2026-11-21T23:50:01.000000"]
    fdsn = open_archive("http://127.0.0.1:%d/fdsnws/dataselect/1/query?method=get" % port)
    assert len(fdsn.fetch(req)) == len(recs)
    assert [s[0] for s in _Dataselect.seen[-2:]] == ["GET", "GET"]
    assert "loc=--" in _Dataselect.seen[-1][1]
    with pytest.raises(OSError, match="HTTP 400"):
        open_archive("fdsnws://127.0.0.1:%d" % port).fetch([("BAD", "X", "", "BHZ", 0, NS)])


def test_fdsn_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        open_archive("fdsnws://127.0.0.1:%d" % port, timeout=2).fetch(
            [("XX", "TEST", "", "BHZ", 0, NS)])


class Sink:
    """Stands in for a client: collects what sources hand over."""

    def __init__(self):
        self.picks, self.bad = [], []

    def notify(self):
        pass

    def add_pick(self, pick):
        from seedlink_fast.picks import parse_json_line

        if isinstance(pick, (bytes, str)):
            text = pick.decode() if isinstance(pick, bytes) else pick
            picks, errors = parse_json_line(text)
            self.bad.extend(errors)
            self.picks.extend(picks)
        else:
            self.picks.append(pick)

    def bad_pick(self, message):
        self.bad.append(message)


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    raise AssertionError("condition not met")


def test_directory_source_reads_settled_files(tmp_path):
    sink = Sink()
    src = DirectorySource(tmp_path, interval=0.05)
    src.client = sink
    (tmp_path / "a.jsonl").write_text(json.dumps(PICK) + "\n")
    (tmp_path / ".hidden.jsonl").write_text(json.dumps(PICK) + "\n")
    (tmp_path / "ignored.txt").write_text("x")
    src.scan()
    assert sink.picks == []                       # seen once: not settled yet
    src.scan()
    assert [p.public_id for p in sink.picks] == ["p1"]
    src.scan()
    assert len(sink.picks) == 1                   # unchanged: not read again
    # a JSON-lines file that grows is read from where it stopped
    with open(tmp_path / "a.jsonl", "a") as fh:
        fh.write(json.dumps(dict(PICK, publicID="p2")) + "\nbroken\n")
    src.scan()
    src.scan()
    assert [p.public_id for p in sink.picks] == ["p1", "p2"] and len(sink.bad) == 1
    (tmp_path / "b.xml").write_text("<seiscomp><EventParameters><pick")
    src.scan()
    src.scan()
    assert "not well-formed" in sink.bad[-1]


def test_line_and_tcp_sources(tmp_path):
    import io

    sink = Sink()
    src = LineSource(io.BytesIO(b"%s\n{bad\n" % json.dumps(PICK).encode()))
    src.start(sink)
    wait_for(lambda: src.done)
    assert len(sink.picks) == 1 and len(sink.bad) == 1

    sink = Sink()
    tcp = open_pick_source("tcp://127.0.0.1:0")
    assert isinstance(tcp, TcpSource) and tcp.port
    tcp.start(sink)
    try:
        for n in range(2):
            with socket.create_connection(("127.0.0.1", tcp.port), timeout=5) as s:
                s.sendall(json.dumps(dict(PICK, publicID="t%d" % n)).encode() + b"\n")
                s.sendall(b'{"publicID": "x"}\n')
        wait_for(lambda: len(sink.picks) == 2 and len(sink.bad) == 2)
        assert not tcp.done and not tcp.finite
    finally:
        tcp.stop()


def test_open_pick_source(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(PICK))
    assert open_pick_source(str(path)).finite
    assert isinstance(open_pick_source(str(tmp_path)), DirectorySource)
    assert isinstance(open_pick_source("-"), LineSource)
    with pytest.raises(ValueError):
        open_pick_source(str(tmp_path / "nothing.xml"))
    with pytest.raises(ValueError):
        open_pick_source("tcp://nohost")
