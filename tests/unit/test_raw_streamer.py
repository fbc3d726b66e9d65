"""seedlink_fast.raw.Streamer, the device side: pull mode against the
reference plugin (tests/rawref_client.py), push mode against a scripted
ingest peer speaking docs/raw-push.md.  127.0.0.1 only; every wait is
bounded."""
import datetime
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from seedlink_fast.raw import Channel, Streamer
from seedlink_fast.raw.protocol import MAX_SAMPLES

from loadgen import wait_until
from rawref_client import Closed, RefClient, Wire, decode_mseed, to_mseed

UTC = datetime.timezone.utc
# a leap year's last second, with microseconds: yday 366 and a year change
T0 = datetime.datetime(2024, 12, 31, 23, 59, 59, 999_123)
T0_US = 1735689599_999_123
TYPES = ("int8", "int16", "int32", "float32", "float64")
RANGES = {"int8": (-128, 127), "int16": (-32768, 32767),
          # Steim2 holds 30-bit differences: keep int32 samples within it
          "int32": (-2 ** 27, 2 ** 27)}


def signal(samptype, n, rng):
    if samptype.startswith("float"):
        return rng.normal(0, 1000, n).astype(samptype)
    low, high = RANGES[samptype]
    values = rng.integers(low, high, n, endpoint=True)
    values[:2] = low, high
    return values


def all_channels(version):
    """Channel id -> Channel, every type (RAW 1.0: integers) in both byte orders."""
    channels = {}
    for samptype in TYPES[:3] if version == "RAW 1.0" else TYPES:
        for endianness in ("big", "little"):
            cid = len(channels) + 1
            channels[cid] = Channel(cid, 100 * cid, endianness, samptype)
    return channels


@pytest.fixture
def streamer():
    """streamer(channels, **kw) -> a started pull Streamer on a free port; stopped afterwards."""
    made = []

    def make(channels, **kw):
        s = Streamer(channels, port=0, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


# -- pull --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["RAW 1.0", "RAW 1.1", "RAW 2.0"])
def test_pull_every_type_and_byte_order(streamer, version):
    pymseed = pytest.importorskip("pymseed")
    channels = all_channels(version)
    s = streamer(list(channels.values()))
    client = RefClient(s.port, version, list(channels))
    assert client.channels == {cid: (ch.rate, ch.endianness, ch.samptype)
                               for cid, ch in channels.items()}
    rng = np.random.default_rng(7)
    fed = []
    for cid, ch in channels.items():
        start = T0.replace(tzinfo=UTC) if cid % 2 else T0     # aware and naive UTC
        for k in range(3):
            values = signal(ch.samptype, 50 + k, rng)
            samptime = start + datetime.timedelta(seconds=k)
            s.feed_data(cid, samptime, 40 + k, values)
            fed.append((cid, T0_US + k * 1_000_000, 40 + k, values))
    got = client.read_packets(len(fed))
    client.close()
    for (cid, us, quality, values), (gcid, gus, gquality, samples) in zip(fed, got):
        assert (gcid, gus) == (cid, us)
        assert gquality == (quality if version == "RAW 2.0" else 100)
        assert samples.dtype == channels[cid].dtype
        np.testing.assert_array_equal(samples, values)
    # the original plugin's miniSEED: same samples, start times and quality
    records = decode_mseed(to_mseed(got, client.channels))
    assert len(records) == len(fed)
    for (cid, us, quality, values), (sourceid, start_ns, samples, gquality) in zip(fed, records):
        assert sourceid == pymseed.nslc2sourceid("XX", "TEST", "00",
                                                 "HH" + chr(ord("A") + cid))
        assert start_ns == us * 1000
        assert gquality == (quality if version == "RAW 2.0" else 100)
        np.testing.assert_array_equal(samples, values.astype(samples.dtype))


def test_v10_api_sampsize_and_three_argument_feed(streamer):
    ch = Channel(70000, 4000, "little", 1)         # v1.0: sampsize 1 -> int8
    assert (ch.samptype, ch.sampsize, ch.samprate) == ("int8", 1, 4000)
    assert Channel(1, 100.0, "big", sampsize=2).samptype == "int16"
    s = streamer([ch])
    client = RefClient(s.port, "RAW 1.0", [70000])
    s.feed_data(70000, T0, [-1, -128, 5])
    [(cid, us, quality, samples)] = client.read_packets(1)
    assert (cid, us, quality, samples.tolist()) == (70000, T0_US, 100, [-1, -128, 5])


def test_several_clients_get_the_same_data(streamer):
    s = streamer([Channel(3, 200, "big", "int16"), Channel(4, 50, "little", "float64")])
    clients = [RefClient(s.port, version, [3, 4]) for version in ("RAW 2.0", "RAW 1.1", "RAW 2.0")]
    only3 = RefClient(s.port, "RAW 1.0", [3])
    assert wait_until(lambda: len(s.stats()["clients"]) == 4, 3.0)
    for k in range(5):
        s.feed_data(3, T0 + datetime.timedelta(seconds=k), 100, np.arange(k, k + 200))
        s.feed_data(4, T0 + datetime.timedelta(seconds=k), 100, np.linspace(0, 1, 50))
    first = [(cid, us, q, x.tolist()) for cid, us, q, x in clients[0].read_packets(10)]
    for client in clients[1:]:
        got = [(cid, us, 100, x.tolist()) for cid, us, _, x in client.read_packets(10)]
        assert got == first
    assert [p[0] for p in only3.read_packets(5)] == [3] * 5
    stats = s.stats()
    assert stats["channels"][3]["packets"] == 5 and stats["channels"][3]["samples"] == 1000
    assert stats["overflow_packets"] == 0


def exchange(port, lines, timeout=3.0):
    """Send lines to the device and return all it sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall("".join(line + "\n" for line in lines).encode())
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return received
            received += data
    raise AssertionError("device did not close; it sent %r" % received)


def test_refusals_close_the_connection_and_serving_goes_on(streamer):
    s = streamer([Channel(1, 100, "big", "int32"), Channel(2, 100, "big", "float32")])
    assert exchange(s.port, ["RAW 3.0"]) == b""
    assert exchange(s.port, ["raw 2.0", "CHANNEL", "1"]) == b""
    assert exchange(s.port, ["RAW 2.0 PUSH"]) == b""
    assert exchange(s.port, ["RAW 2.0", "CHANNEL", "9"]) == b"RAW 2.0\n"
    assert exchange(s.port, ["RAW 2.0", "CHANNEL", "x"]) == b"RAW 2.0\n"
    assert exchange(s.port, ["RAW 1.0", "CHANNEL", "2"]) == b"RAW 1.0\n"
    assert exchange(s.port, ["RAW 1.1", "START"]) == b"RAW 1.1\n"
    answer = (b"RAW 1.1\nSAMPLING RATE\n100\nSAMPLE ENDIANNESS\nbig\nSAMPLE TYPE\nfloat32\n")
    assert exchange(s.port, ["RAW 1.1", "CHANNEL", "2", "HELLO"]) == answer
    client = RefClient(s.port, "RAW 1.0", [1])
    s.feed_data(1, T0, [1, 2, 3])
    assert client.read_packets(1)[0][3].tolist() == [1, 2, 3]


def test_client_byte_ends_session(streamer):
    s = streamer([Channel(1, 100, "big", "int32")])
    client = RefClient(s.port, "RAW 2.0", [1])
    assert wait_until(lambda: len(s.stats()["clients"]) == 1, 3.0)
    client.send_line("x")
    assert wait_until(lambda: not s.stats()["clients"], 3.0)
    with pytest.raises(Closed):
        client.read_packets(1)


def test_slow_client_drops_oldest_and_stop_flushes(streamer):
    s = streamer([Channel(1, 1000, "little", "int32")], queue_bytes=1 << 20)
    stalled = RefClient(s.port, "RAW 2.0", [1])       # never reads
    assert wait_until(lambda: len(s.stats()["clients"]) == 1, 3.0)
    block = np.zeros(100_000, dtype=np.int32)
    for k in range(100):                                # 40 MB, far beyond the buffers
        s.feed_data(1, T0 + datetime.timedelta(seconds=100 * k), 100, block)
    assert wait_until(lambda: s.stats()["overflow_packets"] > 0, 3.0)
    stalled.close()
    reader = RefClient(s.port, "RAW 2.0", [1])
    assert wait_until(lambda: len(s.stats()["clients"]) == 1, 3.0)
    for k in range(20):
        s.feed_data(1, T0 + datetime.timedelta(seconds=k), 100, [k])
    s.stop()                                             # writes all 20 before closing
    assert [x[3][0] for x in reader.read_packets(20)] == list(range(20))
    with pytest.raises(Closed):
        reader.read_packets(1)


def test_inbox_is_bounded_while_the_network_thread_is_stalled(streamer):
    # the device loop must neither block nor grow without bound when the
    # network thread falls behind: the hand-over queue drops its oldest
    s = streamer([Channel(1, 1000, "little", "int32")], queue_bytes=40_000)
    s._loop.call_soon_threadsafe(time.sleep, 1.0)       # stall the network thread
    time.sleep(0.1)
    t0 = time.monotonic()
    for k in range(100):                                # 4 kB each: room for 10
        s.feed_data(1, T0 + datetime.timedelta(seconds=k), np.full(1000, k))
    assert time.monotonic() - t0 < 0.5                  # never waited for the stall
    assert len(s._inbox) == 10
    stats = s.stats()
    assert stats["overflow_packets"] == 90
    assert stats["channels"][1]["dropped_samples"] == 90_000
    assert stats["channels"][1]["packets"] == 100
    # after the stall the hand-over goes on
    assert wait_until(lambda: not s._inbox, 3.0)
    s.feed_data(1, T0 + datetime.timedelta(seconds=100), np.full(1000, 100))
    assert wait_until(lambda: not s._inbox, 3.0)
    assert s.stats()["overflow_packets"] == 90


def test_port_in_use_is_a_clear_oserror():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1:%d" % port):
            Streamer([Channel(1, 100, "big", "int8")], port=port).start()


def test_killed_parent_frees_the_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from seedlink_fast.raw import Channel, Streamer
        Streamer([Channel(1, 100, "big", "int16")], port=%d).start()
        print("ready", flush=True)
        time.sleep(30)
    """ % port)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.kill()                                    # SIGKILL: no clean-up runs
        child.wait(5)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()

    def bindable():
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    assert wait_until(bindable, 5.0)


# -- feed_data and Channel validation ---------------------------------------------------

def test_feed_data_validation():
    s = Streamer([Channel(1, 100, "big", "int8"), Channel(2, 100, "big", "float32")], port=0)
    with pytest.raises(ValueError, match="unknown channel id 5"):
        s.feed_data(5, T0, [1])
    with pytest.raises(ValueError, match="timing_quality 101 out of range"):
        s.feed_data(1, T0, 101, [1])
    with pytest.raises(ValueError, match="not UTC"):
        s.feed_data(1, T0.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=2))), [1])
    with pytest.raises(TypeError, match="datetime"):
        s.feed_data(1, 1700000000, [1])
    with pytest.raises(ValueError, match="must be 1-D"):
        s.feed_data(1, T0, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"from -1 to 300 do not fit int8 \(-128\.\.127\)"):
        s.feed_data(1, T0, [-1, 300])
    with pytest.raises(ValueError, match="do not fit int8"):
        s.feed_data(1, T0, [1.0, np.nan])
    with pytest.raises(ValueError, match="at most %d" % MAX_SAMPLES):
        s.feed_data(2, T0, np.zeros(MAX_SAMPLES + 1))
    with pytest.raises(TypeError, match="must be numbers"):
        s.feed_data(1, T0, ["a"])
    s.feed_data(1, T0, np.array([1.9, -128.0, 127.0]))     # in range floats truncate, as v1.1
    s.feed_data(2, T0, np.zeros(MAX_SAMPLES))
    assert s.stats()["channels"][2]["samples"] == MAX_SAMPLES
    s.stop()
    with pytest.raises(RuntimeError, match="after stop"):
        s.feed_data(1, T0, [1])


def test_channel_and_streamer_validation():
    with pytest.raises(ValueError, match="sample size 3"):
        Channel(1, 100, "big", 3)
    with pytest.raises(ValueError, match="endianness"):
        Channel(1, 100, "middle", "int8")
    with pytest.raises(ValueError, match="sample type"):
        Channel(1, 100, "big", "int64")
    with pytest.raises(TypeError):
        Channel(1, 0.5, "big", "int8")
    with pytest.raises(ValueError, match="twice"):
        Streamer([Channel(1, 100, "big", "int8")] * 2)
    with pytest.raises(ValueError, match="NET.STA"):
        Streamer([Channel(1, 100, "big", "int8")], mode="push", station="STA")
    with pytest.raises(ValueError, match="0..65535"):
        Streamer([Channel(70000, 100, "big", "int8")], mode="push", station="XX.STA")


# -- push --------------------------------------------------------------------------------

class Peer:
    """A scripted raw ingest port: accepts one connection at a time and
    plays the server side of docs/raw-push.md."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(5.0)
        self.port = self.sock.getsockname()[1]
        self.conn = None

    def accept(self, resume=None, refuse_station=None):
        """Accept and answer the handshake; `resume` maps id -> time_us.
        Returns (lines received, Wire) or (lines, None) after a refusal."""
        conn, _ = self.sock.accept()
        conn.settimeout(5.0)
        self.conn = conn
        wire = Wire(conn, "RAW 2.0")
        lines = [wire.read_line()]
        wire.send_line(lines[0])
        lines.append(wire.read_line())
        if refuse_station:
            wire.send_line("ERROR " + refuse_station)
            conn.close()
            return lines, None
        wire.send_line("OK")
        while True:
            line = wire.read_line()
            lines.append(line)
            if line == "START":
                wire.send_line("STARTING")
                return lines, wire
            _, cid, rate, endianness, samptype = line.split()
            wire.channels[int(cid)] = (int(rate), endianness, samptype)
            us = (resume or {}).get(int(cid))
            wire.send_line("OK %s" % ("-" if us is None else us))

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.sock.close()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def seconds(k):
    return T0 + datetime.timedelta(seconds=k)


def test_push_resends_unacknowledged_after_reconnect(peer):
    channels = [Channel(1, 10, "little", "int32"), Channel(2, 3, "big", "float64")]
    s = Streamer(channels, port=peer.port, mode="push", station="XX.TEST")
    for k in range(4):                  # 1 s packets; fed before start(): kept
        s.feed_data(1, seconds(k), 90, np.arange(10) + 10 * k)
    s.feed_data(2, seconds(0), [0.5, 1.5])      # ends at T0 + 333333 µs
    with s:
        lines, wire = peer.accept()
        assert lines == ["RAW 2.0 PUSH", "STATION XX.TEST", "CHANNEL 1 10 little int32",
                         "CHANNEL 2 3 big float64", "START"]
        got = wire.read_packets(5)
        assert [(cid, us, q) for cid, us, q, _ in got] == (
            [(1, T0_US + k * 1_000_000, 90) for k in range(4)] + [(2, T0_US, 100)])
        assert got[3][3].tolist() == list(range(30, 40))
        # packet 0 ends at +0.9 s: ACK of +0.9 s forgets it, not packet 1
        wire.send_line("ACK 1 %d" % (T0_US + 900_000))
        wire.send_line("ACK 2 %d" % (T0_US + 333_332))      # one µs short: kept
        assert wait_until(lambda: s.stats()["unacked_packets"] == 4, 3.0)
        assert s.stats()["channels"][1]["acked_us"] == T0_US + 900_000
        assert s.stats()["connected"]
        peer.conn.close()                                   # the link drops
        s.feed_data(1, seconds(4), 90, np.arange(10) + 40)
        lines, wire = peer.accept(resume={1: T0_US + 2_900_000})
        got = wire.read_packets(3)
        # packets 1 and 2 end at or before the resume time; the rest in feed order
        assert [(cid, us) for cid, us, _, _ in got] == [
            (1, T0_US + 3_000_000), (2, T0_US), (1, T0_US + 4_000_000)]
        wire.send_line("ACK 2 %d" % (T0_US + 333_333))
        assert wait_until(lambda: s.stats()["unacked_packets"] == 2, 3.0)
        stats = s.stats()
        assert stats["connections"] == 2 and stats["overflow_packets"] == 0
        s.feed_data(1, seconds(5), 90, np.arange(10))
    assert wire.read_packets(1)[0][1] == T0_US + 5_000_000     # stop() flushed it


def test_push_refusal_is_surfaced_and_retried(peer, caplog):
    s = Streamer([Channel(1, 10, "little", "int32")], port=peer.port, mode="push",
                 station="XX.NOPE")
    with s:
        lines, _ = peer.accept(refuse_station="unknown station XX.NOPE")
        assert lines == ["RAW 2.0 PUSH", "STATION XX.NOPE"]
        assert wait_until(lambda: s.last_error is not None, 3.0)
        assert "unknown station XX.NOPE" in s.last_error
        assert s.stats()["last_error"] == s.last_error
        s.feed_data(1, seconds(0), [7])
        lines, wire = peer.accept()                 # the retry, after 0.5 s
        assert wire.read_packets(1)[0][3].tolist() == [7]
    assert any(r.levelname == "ERROR" and "unknown station" in r.getMessage()
               for r in caplog.records)


def test_push_buffer_overflow_drops_oldest(peer):
    s = Streamer([Channel(1, 1000, "little", "int32")], port=peer.port, mode="push",
                 station="XX.TEST", buffer_bytes=40_000)
    for k in range(30):                     # 4 kB each: room for the last 10
        s.feed_data(1, seconds(k), np.full(1000, k))
    with s:
        _, wire = peer.accept()
        got = wire.read_packets(10)
        assert [x[3][0] for x in got] == list(range(20, 30))
        stats = s.stats()
        assert stats["overflow_packets"] == 20
        assert stats["channels"][1]["dropped_samples"] == 20_000
        assert stats["unacked_bytes"] == 40_000
