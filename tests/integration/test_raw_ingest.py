"""Raw ingest end to end: devices feed a real ``seedlink-fast serve`` process
(push through the ingest port, or pulled by the server from a device), and
real SeedLink clients get records that decode to exactly the fed samples."""
import datetime
import os
import socket
import struct
import time

import numpy as np
import pytest

from seedlink_fast import mseed
from seedlink_fast.raw import Channel, Streamer
from serverproc import ServerProcess, free_port

T0 = datetime.datetime(2026, 11, 22, 1, 0, 0)
US = 1_000_000


def write_ini(tmp_path, port, raw_port, stations, extra=""):
    ini = tmp_path / "seedlink.ini"
    ini.write_text("""[seedlink]
organization = "Raw test"
filebase = "%s"
port = %d
encoding = steim2
stream_check = enabled
window_extraction = enabled
window_extraction_trusted = enabled
info = streams
segments = 20
segsize = 1000
raw_ingest_port = %d
raw_idle_flush = 0.3
%s
%s
""" % (tmp_path / "buffer", port, raw_port, extra, stations))
    return ini


def station(name, channels, source=None):
    text = 'station %s network = XX\n   raw_channels = "%s"\n' % (name, channels)
    if source:
        text += '   raw_source = "%s"\n   raw_reconnect = 0.05\n' % source
    return text


@pytest.fixture
def ports():
    return free_port(), free_port()


def feed(streamer, cid, data, rate, packet, start=T0, quality=100):
    """Feed `data` in packets of `packet` samples, contiguous from `start`."""
    for i in range(0, len(data), packet):
        when = start + datetime.timedelta(microseconds=i * US // rate)
        streamer.feed_data(cid, when, quality, data[i:i + packet])


def wait_acked(streamer, last_us, timeout=20.0):
    """Until every channel is acknowledged up to its last fed sample."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        acked = {cid: ch["acked_us"] for cid, ch in streamer.stats()["channels"].items()}
        if all(acked.get(cid) == us for cid, us in last_us.items()):
            return
        time.sleep(0.05)
    raise AssertionError("not acknowledged: %s, want %s" % (streamer.stats(), last_us))


def fetch_all(srv, sta):
    """Every stored record of XX.sta, fetched with FETCH (dial-up)."""
    with srv.client(timeout=30) as c:
        assert c.command("STATION %s XX" % sta) == "OK"
        assert c.command("FETCH 000000") == "OK"
        c.send("END")
        data = c.read_packets_until_end()
    return [data[i + 8:i + 520] for i in range(0, len(data), 520)]


def by_channel(records):
    out = {}
    for rec in mseed.unpack(b"".join(records)):
        if rec.sample_rate:
            out.setdefault(rec.channel, []).append(rec)
    return out


def check_contiguous(records, start_us, rate, expected):
    """Records hold exactly `expected`, each starting where the last ended."""
    count = 0
    for rec in records:
        want = start_us + count * US // rate
        assert abs(rec.starttime_ns // 1000 - want) <= 1, (rec, count)
        count += rec.num_samples
    got = np.concatenate([r.samples for r in records])
    assert len(got) == len(expected)
    np.testing.assert_array_equal(got, expected)


def us(dt):
    return int((dt - datetime.datetime(1970, 1, 1)).total_seconds()) * US + dt.microsecond


# -- push -------------------------------------------------------------------------------

@pytest.mark.parametrize("rate, packet", [(4000, 400), (250_000, 25_000)])
def test_push_reaches_obspy_exactly(tmp_path, ports, rate, packet):
    """A Streamer pushes int8 (incl. negative) and int32; ObsPy's SeedLink
    client gets records decoding to exactly the fed samples and times."""
    basic = pytest.importorskip("obspy.clients.seedlink.basic_client")
    from obspy import UTCDateTime

    port, raw_port = ports
    ini = write_ini(tmp_path, port, raw_port, station("PUSH", "00.FHZ:1,00.JHZ:2,"))
    srv = ServerProcess(ini, port, tmp_path)
    rng = np.random.default_rng(1)
    seconds = 3
    small = rng.integers(-128, 128, 4000 * seconds).astype(np.int8)
    big = np.cumsum(rng.integers(-3000, 3000, rate * seconds)).astype(np.int32)
    streamer = Streamer([Channel(1, 4000, "little", "int8"), Channel(2, rate, "big", "int32")],
                        "127.0.0.1", raw_port, mode="push", station="XX.PUSH").start()
    try:
        feed(streamer, 1, small, 4000, 100)
        feed(streamer, 2, big, rate, packet)
        wait_acked(streamer, {1: us(T0) + (len(small) - 1) * US // 4000,
                              2: us(T0) + (len(big) - 1) * US // rate})
        client = basic.Client("127.0.0.1", port, timeout=20)
        for cha, data, r in (("FHZ", small, 4000), ("JHZ", big, rate)):
            # a window inside the stored data (SeedLink 3 TIME has whole
            # seconds), so the server ends it at once
            st = client.get_waveforms("XX", "PUSH", "00", cha, UTCDateTime(T0),
                                      UTCDateTime(T0) + seconds - 1)
            st.merge(method=-1)
            assert len(st) == 1, st
            assert st[0].stats.starttime == UTCDateTime(T0)
            assert st[0].stats.sampling_rate == r
            n = len(st[0].data)
            assert n >= r * (seconds - 1)
            np.testing.assert_array_equal(st[0].data, data[:n].astype(np.int32))
        # records span packets: far fewer records than packets
        records = by_channel(fetch_all(srv, "PUSH"))
        assert len(records["FHZ"]) < len(small) // 100 // 2
    finally:
        streamer.stop()
        srv.stop()


def test_push_survives_kill_9(tmp_path, ports):
    """kill -9 of the server in the middle of a push stream: the device keeps
    what was not acknowledged, re-sends it to the restarted server, and the
    stored data has no gap and no duplicate."""
    port, raw_port = ports
    ini = write_ini(tmp_path, port, raw_port, station("KILL", "00.FHZ:1,"))
    srv = ServerProcess(ini, port, tmp_path)
    rate, packet = 4000, 200
    data = np.cumsum(np.random.default_rng(2).integers(-500, 500, rate * 6)).astype(np.int32)
    streamer = Streamer([Channel(1, rate, "little", "int32")], "127.0.0.1", raw_port,
                        mode="push", station="XX.KILL").start()
    try:
        third = len(data) // 3
        feed(streamer, 1, data[:third], rate, packet)
        deadline = time.monotonic() + 10
        while streamer.stats()["channels"][1]["acked_us"] is None:
            assert time.monotonic() < deadline, "nothing acknowledged"
            time.sleep(0.02)
        srv.kill()                                   # SIGKILL: no flush, no goodbye
        start = T0 + datetime.timedelta(microseconds=third * US // rate)
        feed(streamer, 1, data[third:2 * third], rate, packet, start=start)   # server down
        srv = ServerProcess(ini, port, tmp_path)
        start = T0 + datetime.timedelta(microseconds=2 * third * US // rate)
        feed(streamer, 1, data[2 * third:], rate, packet, start=start)
        wait_acked(streamer, {1: us(T0) + (len(data) - 1) * US // rate})
        records = by_channel(fetch_all(srv, "KILL"))["FHZ"]
        check_contiguous(records, us(T0), rate, data)
    finally:
        streamer.stop()
        srv.stop()


def _handshake(port, lines):
    """Send handshake lines; return the server's answers until it closes or
    the last line was answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = sock.makefile("rb")
    answers = []
    for line in lines:
        sock.sendall(line.encode() + b"\n")
        answer = f.readline().decode().strip()
        answers.append(answer)
        if not answer or answer.startswith("ERROR"):
            break
    return sock, f, answers


def _header(when_us, cid, count, quality=100):
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=when_us)
    return struct.pack(">HHBBBIBHI", t.year, t.timetuple().tm_yday, t.hour, t.minute,
                       t.second, t.microsecond, quality, cid, count)


def test_bad_push_input_is_refused_and_others_go_on(tmp_path, ports):
    port, raw_port = ports
    ini = write_ini(tmp_path, port, raw_port,
                    station("GOOD", "00.FHZ:1,") + station("OTHER", "00.FHZ:1,"))
    srv = ServerProcess(ini, port, tmp_path)
    rate = 1000
    data = np.arange(rate * 3, dtype=np.int32) % 97 - 48
    good = Streamer([Channel(1, rate, "little", "int32")], "127.0.0.1", raw_port,
                    mode="push", station="XX.GOOD").start()
    try:
        feed(good, 1, data[:rate], rate, 100)
        base = ["RAW 2.0 PUSH", "STATION XX.OTHER"]
        cases = [
            (["RAW 1.0"], "expected"),
            (["RAW 2.0 PUSH", "STATION XX.NOPE"], "does not accept"),
            (base + ["CHANNEL 7 100 little int32"], "not in the channel map"),
            (base + ["CHANNEL 1 100 little int12"], "unknown sample type"),
            (base + ["CHANNEL 1 100.5 little int32"], "expected CHANNEL"),
            (base + ["START"], "START before any CHANNEL"),
        ]
        for lines, message in cases:
            sock, f, answers = _handshake(raw_port, lines)
            assert answers[-1].startswith("ERROR") and message in answers[-1], answers
            assert f.read() == b""                    # and closed
            sock.close()
        # after START: a count over the limit, then an unknown channel id
        for head in (_header(us(T0), 1, 1_000_001), _header(us(T0), 5, 10)):
            sock, f, answers = _handshake(raw_port, base + ["CHANNEL 1 1000 little int32",
                                                            "START"])
            assert answers[-1] == "STARTING"
            sock.sendall(head + b"\0" * 40)
            rest = f.read().decode()
            assert "ERROR" in rest and ("limit" in rest or "not negotiated" in rest), rest
            sock.close()
        # a truncated packet, then the device vanishes: the complete one is kept
        sock, f, answers = _handshake(raw_port, base + ["CHANNEL 1 1000 little int32",
                                                        "START"])
        sock.sendall(_header(us(T0), 1, 5) + np.arange(5, dtype="<i4").tobytes()
                     + _header(us(T0) + 5000, 1, 100) + b"\0" * 17)
        sock.close()
        # the good device went on all along
        start = T0 + datetime.timedelta(seconds=1)
        feed(good, 1, data[rate:], rate, 100, start=start)
        wait_acked(good, {1: us(T0) + (len(data) - 1) * US // rate})
        check_contiguous(by_channel(fetch_all(srv, "GOOD"))["FHZ"], us(T0), rate, data)
        deadline = time.monotonic() + 10
        while True:
            other = by_channel(fetch_all(srv, "OTHER")).get("FHZ", [])
            if other or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check_contiguous(other, us(T0), 1000, np.arange(5, dtype=np.int32))
        with pytest.raises(ValueError, match="not UTC"):
            good.feed_data(1, T0.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
                           data[:10])
    finally:
        good.stop()
        srv.stop()


# -- pull: the server connects to devices -----------------------------------------------

@pytest.mark.parametrize("version", ["RAW 1.0", "RAW 2.0"])
def test_server_pulls_from_a_reference_device(tmp_path, ports, version):
    """A station whose raw_source is a device speaking the original protocol
    (written in the tests from the byte layout); auto version probing finds
    RAW 1.0 too."""
    from rawref_device import Chan, RefDevice, packet

    rate = 100
    data = {1: np.arange(-300, 300, dtype=np.int16), 2: np.arange(-128, 128).astype(np.int8)}
    pkts = []
    for i in range(0, 600, 50):
        when = T0 + datetime.timedelta(microseconds=i * US // rate)
        pkts.append(packet(1, when, data[1][i:i + 50]))
    for i in range(0, 256, 64):
        when = T0 + datetime.timedelta(microseconds=i * US // 400)
        pkts.append(packet(2, when, data[2][i:i + 64]))
    channels = {1: Chan(rate, "big", "int16"), 2: Chan(400, "little", "int8")}
    with RefDevice(version, channels, pkts) as device:
        port, raw_port = ports
        ini = write_ini(tmp_path, port, raw_port,
                        station("PULL", "00.HHZ:1,00.EHZ:2,", "127.0.0.1:%d" % device.port))
        srv = ServerProcess(ini, port, tmp_path)
        try:
            deadline = time.monotonic() + 15
            while True:
                records = by_channel(fetch_all(srv, "PULL"))
                total = {c: sum(r.num_samples for r in records.get(c, [])) for c in
                         ("HHZ", "EHZ")}
                if total == {"HHZ": 600, "EHZ": 256} or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            check_contiguous(records["HHZ"], us(T0), 100, data[1].astype(np.int32))
            check_contiguous(records["EHZ"], us(T0), 400, data[2].astype(np.int32))
            assert device.version_lines[-1] == version
        finally:
            srv.stop()


def test_push_into_a_decimation_tree(tmp_path, ports):
    """A map item without a dot feeds the station proc's input: the 100 Hz
    samples come out unchanged on the tree's pass-through stream and
    decimated on BHZ; acknowledgements cover what the finished records hold."""
    import seedlink_fast

    streams = os.path.join(os.path.dirname(seedlink_fast.__file__), "data", "demo-streams.xml")
    port, raw_port = ports
    ini = write_ini(tmp_path, port, raw_port,
                    station("TREE", "Z:1,") + '   proc = "stream100"\n',
                    extra='streams = "%s"' % streams)
    srv = ServerProcess(ini, port, tmp_path)
    rate = 100
    data = (np.sin(np.arange(rate * 120) / 7.0) * 5000).astype(np.int32)
    streamer = Streamer([Channel(1, rate, "big", "int32")], "127.0.0.1", raw_port,
                        mode="push", station="XX.TREE").start()
    try:
        feed(streamer, 1, data, rate, 100)
        deadline = time.monotonic() + 20
        while True:
            records = by_channel(fetch_all(srv, "TREE"))
            got = sum(r.num_samples for r in records.get("HHZ", []))
            if got == len(data) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check_contiguous(records["HHZ"], us(T0), rate, data)
        # FS2D5: 100 Hz -> 20 Hz, less the filter's delay
        assert sum(r.num_samples for r in records["BHZ"]) > 120 * 20 * 0.9
        acked = streamer.stats()["channels"][1]["acked_us"]
        assert acked is not None and us(T0) < acked <= us(T0) + (len(data) - 1) * US // rate
    finally:
        streamer.stop()
        srv.stop()
