"""New records from the station buffer to the clients: the framed tail
blocks, the stream index brought up to date after delivery, and real-time
clients written to at once (plain) or through the pump (selectors, behind,
paused), all in order and without loss."""
import asyncio
import random

from seedlink_fast.buffer import StationBuffer
from seedlink_fast.inifile import load_ini
from seedlink_fast.server import Server
from seedlink_fast.session import SeedLinkProtocol
from test_buffer import make_record

INI = """\
[seedlink]
filebase = "{filebase}"
stream_check = enabled

station XX.AAA description = "delivery test"
             name = "AAA"
             network = "XX"
             segsize = {segsize}
             segments = {segments}
             buffers = {buffers}
"""


def make_server(tmp_path, segsize=300, segments=5, buffers=100):
    ini = tmp_path / "seedlink.ini"
    ini.write_text(INI.format(filebase=tmp_path / "buffer", segsize=segsize, segments=segments,
                              buffers=buffers))
    server = Server(load_ini(ini))
    for st in server.stations:
        st.open()
    return server


def records(first, count):
    """count records alternating HHZ / HHN, 1 s each from first."""
    return [make_record(i % 1000000, channel="HHZ" if i % 2 == 0 else "HHN",
                        start_us=1714521600 * 10**6 + i * 10**6, rate=10, nsamp=10)
            for i in range(first, first + count)]


class Transport:
    """What SeedLinkProtocol uses of an asyncio transport; keeps the bytes."""

    def __init__(self):
        self.out = bytearray()

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 4000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        self.out += data

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass

    abort = close


def client(server, *commands):
    proto = SeedLinkProtocol(server)
    proto.connection_made(Transport())
    for line in commands:
        proto.data_received(line.encode() + b"\r\n")
    return proto


def packets(proto):
    """(sequence, record) of the data packets a client was sent."""
    out = proto.transport.out
    start = out.find(b"SL")
    got = []
    for i in range(start, len(out) - 519, 520):
        assert out[i:i + 2] == b"SL"
        got.append((int(out[i + 2:i + 8], 16), bytes(out[i + 8:i + 520])))
    return got


def test_block_holds_every_readable_position(tmp_path):
    server = make_server(tmp_path)
    station = server.stations[0]
    rng = random.Random(5)
    pos = 0
    while pos < 1400:                  # crosses blocks (256) and segments (300)
        n = rng.choice([1, 1, 1, 2, 7, 40, 255, 256, 300])
        station.append_many(records(pos, n))
        pos += n
        for p in {pos - 1, pos - n, station.oldest_position, rng.randrange(pos)}:
            if p < station.oldest_position:
                continue
            blk = station.block(p)
            assert blk is not None and blk.start <= p < blk.start + blk.count
            i = p - blk.start
            assert blk.data[i * 520:(i + 1) * 520] == \
                b"SL%06X" % p + station.buffer.read(p)
        assert station.block(pos) is None
    station.buffer.close()


def test_index_after_delivery_equals_immediate_index(tmp_path):
    server = make_server(tmp_path)
    station = server.stations[0]
    direct = StationBuffer(station.config, str(tmp_path / "direct"))
    direct.open()
    first = 0
    for n in (1, 5, 299, 2, 300, 1, 700):
        recs = records(first, n)
        station.append_many(recs)
        direct.append_many(recs)
        first += n
        assert station.buffer.buffer_xml_text() == direct.buffer_xml_text()
    assert [s.seedname for s in station.buffer.streams] == ["HHN", "HHZ"]
    station.buffer.close()
    direct.close()


def test_real_time_clients_get_every_record_once_in_order(tmp_path):
    server = make_server(tmp_path)
    station = server.stations[0]
    station.append_many(records(0, 10))

    async def run():
        plain = client(server, "STATION AAA XX", "DATA", "END")
        selected = client(server, "STATION AAA XX", "SELECT HHZ", "DATA", "END")
        behind = client(server, "STATION AAA XX", "DATA 000000", "END")
        paused = client(server, "STATION AAA XX", "DATA", "END")
        await asyncio.sleep(0)
        paused.pause_writing()
        held = len(paused.transport.out)
        first = 10
        for n in (1, 1, 3, 250, 1, 1, 600):
            station.append_many(records(first, n))
            first += n
            await asyncio.sleep(0)
            if first > 300 and paused.paused:
                assert len(paused.transport.out) == held     # back-pressure holds
                paused.resume_writing()
        for _ in range(20):
            await asyncio.sleep(0)
        return plain, selected, behind, paused, first

    plain, selected, behind, paused, end = asyncio.run(run())
    stored = {p: station.buffer.read(p) for p in range(station.oldest_position, end)}
    for proto, want in ((plain, range(10, end)), (paused, range(10, end)),
                        (behind, range(0, end)),
                        (selected, [p for p in range(10, end) if p % 2 == 0])):
        got = packets(proto)
        assert [seq for seq, _ in got] == list(want)
        assert all(rec == stored[seq] for seq, rec in got if seq in stored)
    station.buffer.close()


def test_restart_with_the_newest_block_partly_gone(tmp_path):
    """Only the last few records survive a restart (short segments, a
    small ring), fewer than the newest 256-record block: a client asking
    for the oldest gets them all at once."""
    server = make_server(tmp_path, segsize=20, segments=1, buffers=10)
    server.stations[0].append_many(records(0, 300))
    server.stations[0].buffer.close()
    server = make_server(tmp_path, segsize=20, segments=1, buffers=10)
    station = server.stations[0]
    oldest = station.oldest_position
    assert 256 < oldest < station.next_position == 300

    async def run():
        proto = client(server, "STATION AAA XX", "DATA %06X" % oldest, "END")
        await asyncio.sleep(0)
        return proto

    assert [seq for seq, _ in packets(asyncio.run(run()))] == list(range(oldest, 300))
    station.buffer.close()
