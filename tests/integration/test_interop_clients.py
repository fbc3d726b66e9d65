"""Real clients nobody here wrote, against a running server: ObsPy's
EasySeedLinkClient and its TIME-window Client, and the PyPI seedlink-client."""
import threading
import time

import pytest

from seedlink_fast import mseed


def _stored(server, channel, first_seq=0):
    """The records the server stores for XX.TEST channel, fetched raw."""
    with server.client(timeout=30) as c:
        assert c.command("STATION TEST XX") == "OK"
        assert c.command("SELECT %s.D" % channel) == "OK"
        assert c.command("FETCH %06X" % first_seq) == "OK"
        c.send("END")
        data = c.read_packets_until_end()
    return [data[i + 8:i + 520] for i in range(0, len(data), 520)]


def test_obspy_easyseedlink_streams_the_stored_records(server):
    easy = pytest.importorskip("obspy.clients.seedlink.easyseedlink")
    expected = _stored(server, "LHZ", first_seq=1)
    got = []

    class Client(easy.EasySeedLinkClient):
        def on_data(self, trace):
            got.append(trace)

    client = Client("127.0.0.1:%d" % server.port, autoconnect=False)
    client.conn.timeout = 30          # ObsPy 1.5.1 fails to connect with its default None
    client.connect()
    client.select_stream("XX", "TEST", "LHZ")
    # ObsPy starts with the next new record; resume after sequence 0 instead
    # (ObsPy then sends DATA 000001)
    client.conn.streams[0].seqnum = 0
    runner = threading.Thread(target=client.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while len(got) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.conn.terminate()
    runner.join(15)
    assert len(got) == len(expected)
    for trace, raw in zip(got, expected):
        rec = mseed.unpack(raw)[0]
        assert trace.stats.starttime.ns == rec.starttime_ns
        assert list(trace.data) == list(rec.samples)


def test_obspy_get_waveforms_time_window(server):
    basic = pytest.importorskip("obspy.clients.seedlink.basic_client")
    from obspy import UTCDateTime

    client = basic.Client("127.0.0.1", server.port, timeout=20)
    t1 = UTCDateTime(2026, 11, 21, 23, 52)
    st = client.get_waveforms("XX", "TEST", "", "BHZ", t1, t1 + 60)
    assert len(st) >= 1
    st.merge()
    assert st[0].stats.starttime <= t1 + 1 and st[0].stats.endtime >= t1 + 59


def test_seedlink_client_package_dialup(server):
    sl_client = pytest.importorskip("seedlink_client")
    expected = _stored(server, "BHZ", first_seq=1)
    got = []
    with sl_client.SeedLink("127.0.0.1", server.port, timeout=20, dialup=True) as sl:
        sl.add_stream("XX_TEST", "BHZ", seqnum=0)      # resume after 0: FETCH 000001
        for packet in sl.collect(reconnect=False):
            if packet.is_info:
                continue
            got.append(packet.payload)
            if len(got) > len(expected) + 5:
                break
    assert got == expected
