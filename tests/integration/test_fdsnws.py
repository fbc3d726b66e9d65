"""FDSN dataselect over HTTP (fdsnws.py): a real server process compared
with its own SeedLink answers, and an in-process service for the limits."""
import asyncio
import io
import pathlib
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest

from conftest import SHARED
from seedlink_fast import mseed
from seedlink_fast.fdsnws import DataselectServer, HTTPLimits
from seedlink_fast.inifile import StationConfig
from seedlink_fast.server import Station

QUERY = "/fdsnws/dataselect/1/query"
NS = 10**9
T_52 = 1_795_305_120 * NS           # 2026-11-21T23:52:00, 2 minutes into the data


# -- helpers -------------------------------------------------------------------------

def http(base, path, data=None, method=None, timeout=10):
    """(status, body, headers) of one request."""
    req = urllib.request.Request(base + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def raw_exchange(port, payload, timeout=5.0, pause=None):
    """Send bytes (in parts, with a pause between them if asked); read until
    the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        parts = payload if isinstance(payload, list) else [payload]
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            s.sendall(part)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def split_records(data):
    return [data[i:i + 512] for i in range(0, len(data), 512)]


def seedlink_records(srv, selectors):
    """Every stored record of XX.TEST matching the SeedLink selectors."""
    with srv.client() as c:
        assert c.command("STATION TEST XX") == "OK"
        for sel in selectors:
            assert c.command("SELECT " + sel) == "OK"
        assert c.command("FETCH 000000") == "OK"
        c.send("END")
        data = c.read_packets_until_end()
    return [data[i + 8:i + 520] for i in range(0, len(data), 520)]


def overlapping(records, begin_ns, end_ns):
    """Records whose span [first sample, last sample + 1/rate) meets [begin, end)."""
    out = []
    for raw in records:
        r = mseed.unpack(raw, decode=False)[0]
        end = r.starttime_ns + round(r.num_samples * NS / r.sample_rate)
        if r.starttime_ns < end_ns and end > begin_ns:
            out.append(raw)
    return out


def iso(ns):
    t = time.gmtime(ns // NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%06d" % (ns % NS // 1000)


def same_traces(got, expected):
    got, expected = got.copy().sort(), expected.copy().sort()
    assert [t.id for t in got] == [t.id for t in expected]
    for a, b in zip(got, expected):
        assert a.stats.starttime == b.stats.starttime
        np.testing.assert_array_equal(a.data, b.data)


# -- a real server with http_port --------------------------------------------------------

@pytest.fixture(scope="module")
def fdsn(tmp_path_factory):
    from serverproc import ServerProcess, free_port, make_station_ini

    if not SHARED.is_dir():
        pytest.skip("../shared not available")
    tmp = tmp_path_factory.mktemp("fdsnws")
    port, http_port = free_port(), free_port()
    srv = ServerProcess(make_station_ini(tmp, port, extra="http_port = %d" % http_port),
                        port, tmp)
    try:
        srv.wait_settled()
        srv.base = "http://127.0.0.1:%d" % http_port
        srv.http_port = http_port
        yield srv
    finally:
        srv.stop()
    assert "FDSN dataselect on 127.0.0.1:%d" % http_port in srv.log_path.read_text()


def test_obspy_get_waveforms_equals_the_seedlink_records(fdsn):
    from obspy import UTCDateTime, read
    from obspy.clients.fdsn import Client

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = Client(fdsn.base, timeout=10)          # discovery reads our WADL
    assert "dataselect" in client.services
    begin, end = T_52, T_52 + 90 * NS
    t1, t2 = UTCDateTime(begin / NS), UTCDateTime(end / NS)
    raw = io.BytesIO()
    client.get_waveforms("XX", "TEST", "", "BH?", t1, t2, filename=raw)
    st = client.get_waveforms("XX", "TEST", "", "BH?", t1, t2)     # trimmed by ObsPy
    expected = overlapping(seedlink_records(fdsn, ["BH?.D"]), begin, end)
    assert len(expected) >= 6
    assert split_records(raw.getvalue()) == expected
    same_traces(st, read(io.BytesIO(b"".join(expected))).trim(t1, t2))
    assert {t.stats.channel for t in st} == {"BHZ", "BHN", "BHE"}


@pytest.mark.parametrize("params, selectors, begin, end", [
    ("net=XX&sta=TEST&loc=--&cha=BHZ", ["BHZ.D"], T_52, T_52 + 60 * NS),
    ("network=X*&station=T?ST&location=*&channel=L*", ["L??.D"], T_52, T_52 + 150 * NS),
    ("net=XX&sta=*&cha=BHN,VH?", ["BHN.D", "VH?.D"], T_52 - 30 * NS, T_52 + 1000),
    ("sta=TEST&cha=?H?", ["?H?.D"], None, None),
])
def test_get_is_the_stored_records_cut_by_record(fdsn, params, selectors, begin, end):
    query = params
    if begin is not None:
        query += "&starttime=%s&endtime=%sZ" % (iso(begin), iso(end))
    status, body, headers = http(fdsn.base, QUERY + "?" + query)
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.fdsn.mseed"
    stored = seedlink_records(fdsn, selectors)             # type D: no LOG records
    expected = stored if begin is None else overlapping(stored, begin, end)
    assert expected
    assert split_records(body) == expected


def test_date_only_and_open_times(fdsn):
    whole_day = http(fdsn.base, QUERY + "?cha=LHZ&start=2026-11-21&end=2026-11-22")
    open_end = http(fdsn.base, QUERY + "?cha=LHZ&start=2026-11-21T00:00:00Z")
    no_times = http(fdsn.base, QUERY + "?cha=LHZ")
    assert whole_day[0] == open_end[0] == no_times[0] == 200
    assert whole_day[1] == open_end[1] == no_times[1]
    assert split_records(no_times[1]) == seedlink_records(fdsn, ["LHZ.D"])


def test_post_and_obspy_bulk(fdsn):
    from obspy import UTCDateTime, read
    from obspy.clients.fdsn import Client

    w1, w2 = (T_52, T_52 + 60 * NS), (T_52 + 120 * NS, T_52 + 300 * NS)
    body = ("quality=B\nminimumlength=0.0\nlongestonly=false\n"
            "XX TEST -- BHZ %s %s\nXX TEST -- LH? %s %s\n"
            % (iso(w1[0]), iso(w1[1]), iso(w2[0]), iso(w2[1]))).encode()
    status, data, _ = http(fdsn.base, QUERY, data=body)
    assert status == 200
    bhz = overlapping(seedlink_records(fdsn, ["BHZ.D"]), *w1)
    lh = overlapping(seedlink_records(fdsn, ["LH?.D"]), *w2)
    both = seedlink_records(fdsn, ["BHZ.D", "LH?.D"])      # buffer order
    expected = [r for r in both if r in bhz or r in lh]
    assert split_records(data) == expected

    client = Client(fdsn.base, _discover_services=False, timeout=10)
    st = client.get_waveforms_bulk([
        ("XX", "TEST", "", "BHZ", UTCDateTime(w1[0] / NS), UTCDateTime(w1[1] / NS)),
        ("XX", "TEST", "", "LH?", UTCDateTime(w2[0] / NS), UTCDateTime(w2[1] / NS))])
    same_traces(st, read(io.BytesIO(b"".join(expected))))


def test_overlapping_selections_give_each_record_once(fdsn):
    body = b"XX TEST * BH? 2026-11-21T23:52:00 2026-11-21T23:54:00\n" \
           b"XX TEST * BHZ 2026-11-21T23:53:00 2026-11-21T23:55:00\n"
    status, data, _ = http(fdsn.base, QUERY, data=body)
    assert status == 200
    recs = split_records(data)
    assert len(recs) == len(set(recs))
    bhz = [r for r in recs if r[15:18] == b"BHZ"]
    assert bhz == overlapping(seedlink_records(fdsn, ["BHZ.D"]), T_52, T_52 + 180 * NS)


def test_no_data(fdsn):
    future = QUERY + "?net=XX&start=2030-01-01&end=2030-01-02"
    assert http(fdsn.base, future)[:2] == (204, b"")
    status, body, _ = http(fdsn.base, future + "&nodata=404")
    assert status == 404 and body.startswith(b"Error 404: Not Found")
    assert http(fdsn.base, QUERY + "?cha=HHZ")[0] == 204
    assert http(fdsn.base, QUERY + "?net=YY")[0] == 204
    assert http(fdsn.base, QUERY + "?cha=LOG")[0] == 204        # log records are not data
    assert http(fdsn.base, QUERY + "?cha=BHZ&quality=M")[0] == 204
    assert http(fdsn.base, QUERY + "?cha=BHZ&quality=D")[0] == 200
    body = b"XX TEST -- BHZ 2031-01-01T00:00:00 2031-01-01T01:00:00\n"
    assert http(fdsn.base, QUERY, data=body)[0] == 204


@pytest.mark.parametrize("query, message", [
    ("?cha=BHZ&start=2026-13-01", b"invalid time"),
    ("?cha=BHZ&start=yesterday", b"invalid time"),
    ("?cha=BHZ&start=2026-11-22&end=2026-11-21", b"end time must be after start time"),
    ("?cha=BHZ&foo=1", b"unknown parameter: foo"),
    ("?cha=BHZ&format=sac", b"unsupported format"),
    ("?cha=BHZ&nodata=500", b"invalid nodata"),
    ("?cha=BHZ&quality=X", b"invalid quality"),
    ("?cha=BHZ&minimumlength=-1", b"minimumlength"),
    ("?cha=BHZ&longestonly=maybe", b"invalid longestonly"),
    ("?cha=BH%20Z", b"invalid channel code"),
    ("?net=XX&network=XX", b"more than once"),
])
def test_bad_parameters_get_400(fdsn, query, message):
    status, body, headers = http(fdsn.base, QUERY + query)
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")
    assert body.startswith(b"Error 400: Bad Request\n\n") and message in body


@pytest.mark.parametrize("body, message", [
    (b"", b"no selection lines"),
    (b"XX TEST -- BHZ 2026-11-21\n", b"expected NET STA LOC CHA START END"),
    (b"XX TEST -- BHZ 2026-11-21T23:52:00 2026-11-21T23:51:00\n", b"end time must be after"),
    (b"XX TEST -- BHZ 2026-11-21 2026-11-22\nquality=B\n", b"must come before"),
    (b"station=TEST\nXX TEST -- BHZ 2026-11-21 2026-11-22\n", b"unknown parameter"),
    (b"\xff\xfe", b"not ASCII"),
])
def test_bad_post_bodies_get_400(fdsn, body, message):
    status, text, _ = http(fdsn.base, QUERY, data=body)
    assert status == 400 and message in text


def test_paths_and_methods(fdsn):
    from seedlink_fast import __version__

    assert http(fdsn.base, "/fdsnws/dataselect/1/version")[:2] == (200, b"1.1.0")
    assert http(fdsn.base, "/version")[:2] == (200, __version__.encode())
    status, text, _ = http(fdsn.base, "/fdsnws/dataselect/1/")
    assert status == 200 and b"/fdsnws/dataselect/1/query" in text
    status, wadl, headers = http(fdsn.base, "/fdsnws/dataselect/1/application.wadl")
    assert status == 200 and headers["Content-Type"] == "application/xml"
    assert b'<resources base="%s/fdsnws/dataselect/1/">' % fdsn.base.encode() in wadl
    for path in ("/", "/fdsnws/station/1/query", "/fdsnws/dataselect/1/queryauth",
                 "/fdsnws/dataselect/2/query"):
        assert http(fdsn.base, path)[0] == 404
    status, _, headers = http(fdsn.base, QUERY + "?cha=BHZ", method="PUT", data=b"x")
    assert status == 405 and headers["Allow"] == "GET, POST"
    assert http(fdsn.base, QUERY, method="DELETE")[0] == 405
    assert http(fdsn.base, "/version", data=b"x")[0] == 405
    assert http(fdsn.base, QUERY + "?cha=BHZ", data=b"XX TEST -- BHZ * *\n")[0] == 400


def test_http_10_and_expect_continue(fdsn):
    head = raw_exchange(fdsn.http_port, b"GET %s?cha=LHZ HTTP/1.0\r\n\r\n" % QUERY.encode())
    status_line, _, rest = head.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in headers             # close-delimited for 1.0
    assert split_records(body) == seedlink_records(fdsn, ["LHZ.D"])
    post = b"XX TEST -- LHZ * *\n"
    reply = raw_exchange(fdsn.http_port, [
        b"POST %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
        % (QUERY.encode(), len(post)), post], pause=0.2)
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("payload, status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /version HTTP/2.0\r\n\r\n", b"400"),
    (b"GET /ver\rsion HTTP/1.1\r\n\r\n", b"400"),
    (b"GET version HTTP/1.1\r\n\r\n", b"400"),
    (b"GET http://x/version HTTP/1.1\r\n\r\n", b"200"),
    (b"GET /version HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
    (b"GET /version HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
    (b"POST %s HTTP/1.1\r\n\r\n" % QUERY.encode(), b"411"),
    (b"POST %s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" % QUERY.encode(), b"411"),
    (b"POST %s HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" % QUERY.encode(), b"413"),
])
def test_malformed_requests_are_answered_and_closed(fdsn, payload, status):
    reply = raw_exchange(fdsn.http_port, payload)
    assert reply.startswith(b"HTTP/1.1 " + status + b" ")
    with fdsn.client() as c:                       # SeedLink does not notice
        assert c.command("STATION TEST XX") == "OK"


# -- an in-process service over real station buffers -------------------------------

class LoopThread:
    """An event loop in a thread running one DataselectServer."""

    def __init__(self, stations, limits=None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        server = type("FakeServer", (), {"stations": stations})()
        self.service = DataselectServer(server, limits)
        self.call(self.service.start("127.0.0.1", 0))
        self.port = self.service.port
        self.base = "http://127.0.0.1:%d" % self.port

    def call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connections(self):
        async def count():
            return len(self.service.connections)
        return self.call(count())

    def close(self):
        async def stop():
            self.service.close()
            await asyncio.sleep(0.05)
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def make_station(tmp_path, name, records, **config):
    settings = dict(segments=20, segsize=1000, buffers=100)
    settings.update(config)
    cfg = StationConfig(key="XX." + name, name=name, network="XX", **settings)
    st = Station(cfg, str(tmp_path))
    st.open()
    st.append_many(records)
    return st


def packed(channel, start_ns, seconds, rate=100, seed=1):
    data = np.cumsum(np.random.default_rng(seed).normal(0, 200, seconds * rate)).astype(np.int32)
    return split_records(mseed.pack(data, network="XX", station="LOC", location="",
                                    channel=channel, starttime_ns=start_ns, sample_rate=rate))


@pytest.fixture
def local(tmp_path):
    started = []

    def start(stations, limits=None):
        lt = LoopThread(stations, limits)
        started.append(lt)
        return lt

    yield start
    for lt in started:
        lt.close()
    for lt in started:
        for st in lt.service.server.stations:
            st.buffer.close()


def test_access_list_hides_stations(tmp_path, local):
    recs = packed("HHZ", T_52, 60)
    open_st = make_station(tmp_path, "OPEN", recs, stream_check=True)
    closed = make_station(tmp_path, "SHUT", recs, stream_check=True, access=["10.1.2.3"])
    lt = local([open_st, closed])
    status, body, _ = http(lt.base, QUERY + "?sta=*")
    assert status == 200 and split_records(body) == recs
    assert http(lt.base, QUERY + "?sta=SHUT")[0] == 204
    body = b"XX SHUT -- HHZ * *\nXX OPEN -- HHZ * *\n"
    assert split_records(http(lt.base, QUERY, data=body)[1]) == recs


def test_without_stream_index_the_whole_buffer_is_scanned(tmp_path, local):
    z, n = packed("HHZ", T_52, 120), packed("HHN", T_52, 120, seed=2)
    mixed = [r for pair in zip(z, n) for r in pair]
    st = make_station(tmp_path, "NOIX", mixed, stream_check=False)
    lt = local([st])
    begin, end = T_52 + 30 * NS, T_52 + 50 * NS
    status, body, _ = http(lt.base, QUERY + "?cha=HHN&start=%s&end=%s" % (iso(begin),
                                                                          iso(end)))
    assert status == 200 and split_records(body) == overlapping(n, begin, end)


def test_index_start_and_early_stop_give_the_same_records(tmp_path, local):
    recs = packed("HHZ", T_52, 600) + packed("HHZ", T_52 + 700 * NS, 300, seed=3)
    with_index = make_station(tmp_path, "IDX", recs, stream_check=True)
    lt = local([with_index])
    for begin, end in ((T_52 + 100 * NS, T_52 + 101 * NS), (T_52 + 590 * NS, T_52 + 710 * NS),
                       (T_52 - NS, T_52 + NS), (T_52 + 950 * NS, T_52 + 2000 * NS)):
        status, body, _ = http(lt.base, QUERY + "?start=%s&end=%s" % (iso(begin), iso(end)))
        assert status == 200
        assert split_records(body) == overlapping(recs, begin, end)


def test_stream_index_limits_what_is_read(tmp_path, local):
    z, n = packed("HHZ", T_52, 1200), packed("HHN", T_52, 1200, seed=5)
    mixed = [r for pair in zip(z, n) for r in pair]
    st = make_station(tmp_path, "FAST", mixed, stream_check=True, segsize=50)
    read = []
    original = st.buffer.read_range

    def counting(pos, count):
        recs = original(pos, count)
        read.append((pos, len(recs)))
        return recs

    st.buffer.read_range = counting
    lt = local([st])
    begin, end = T_52 + 600 * NS, T_52 + 630 * NS
    status, body, _ = http(lt.base, QUERY + "?cha=HHZ&start=%s&end=%s" % (iso(begin), iso(end)))
    assert status == 200 and split_records(body) == overlapping(z, begin, end)
    # started near the window (segment granularity), stopped after it
    assert read and read[0][0] > len(mixed) // 3
    assert sum(n for _, n in read) <= 256


def test_minimumlength_and_longestonly(tmp_path, local):
    first = packed("HHZ", T_52, 100)                        # 100 s
    second = packed("HHZ", T_52 + 200 * NS, 30, seed=4)     # gap, then 30 s
    st = make_station(tmp_path, "SEG", first + second, stream_check=True)
    lt = local([st])
    assert split_records(http(lt.base, QUERY + "?minimumlength=50")[1]) == first
    assert split_records(http(lt.base, QUERY + "?longestonly=true")[1]) == first
    assert split_records(http(lt.base, QUERY + "?minimumlength=10")[1]) == first + second
    assert http(lt.base, QUERY + "?minimumlength=500")[0] == 204


def test_size_limit_gives_413(tmp_path, local):
    recs = packed("HHZ", T_52, 300)
    st = make_station(tmp_path, "BIG", recs, stream_check=True)
    lt = local([st], HTTPLimits(max_bytes=20 * 512))
    status, body, _ = http(lt.base, QUERY)
    assert status == 413 and b"narrow it down" in body
    # a window small enough passes, although the scan range is larger
    status, body, _ = http(lt.base, QUERY + "?start=%s&end=%s" % (iso(T_52), iso(T_52 + 5 * NS)))
    assert status == 200 and len(body) <= 20 * 512


def test_slow_and_silent_clients_are_dropped(tmp_path, local):
    rec = packed("HHZ", T_52, 10)[0]
    st = make_station(tmp_path, "SLOW", [rec] * 40000, stream_check=False,
                      segments=50)                                        # 20 MB
    lt = local([st], HTTPLimits(request_timeout=0.5, send_timeout=0.5))
    started = time.monotonic()
    reply = raw_exchange(lt.port, b"GET /version HTTP/1.1\r\n")        # never completed
    assert reply.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", lt.port))
        s.sendall(b"GET %s HTTP/1.1\r\n\r\n" % QUERY.encode())
        time.sleep(0.2)
        assert lt.connections() == 1                  # stalled: we do not read
        deadline = time.monotonic() + 5
        while lt.connections() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lt.connections() == 0
        received = 0
        s.settimeout(5)
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 40000 * 512
    # a reader that keeps up gets everything
    status, body, _ = http(lt.base, QUERY)
    assert status == 200 and len(body) == 40000 * 512


def test_too_many_connections_get_503(tmp_path, local):
    lt = local([], HTTPLimits(max_connections=2))
    idle = [socket.create_connection(("127.0.0.1", lt.port)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while lt.connections() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert raw_exchange(lt.port, b"GET /version HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 503 ")
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5
    while lt.connections() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http(lt.base, "/version")[0] == 200


def test_docs_name_every_parameter():
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "fdsnws.md").read_text()
    for word in ("http_port", "--http-port", "minimumlength", "longestonly", "nodata", "413"):
        assert word in text
