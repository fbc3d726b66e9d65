"""Tests of seedlink_fast.plugin_stream (parser of the fd 63 plugin byte stream)."""

import datetime
import json
import os
import random
import struct
import sys
from collections import Counter

import numpy as np
import pytest

from seedlink_fast.errors import PluginProtocolError
from seedlink_fast.plugin_stream import (
    HEADER_SIZE, LOG, MSEED, RAW_DATA, RAW_DATA_FLUSH, RAW_DATA_GAP, RAW_DATA_TIME,
    PluginPacketType, PluginStreamError, PluginStreamParser, iter_plugin_file,
    ptime_to_ns)

GOLDEN = "/work/shared/reference/golden"
CASES = ["stream100_steim2", "highrate_4000", "mseed_passthrough"]
needs_golden = pytest.mark.skipif(not os.path.isdir(GOLDEN),
                                  reason="golden vectors not available")

if os.path.isdir(GOLDEN) and GOLDEN not in sys.path:
    sys.path.insert(0, GOLDEN)

HDR = struct.Struct("<i10s10s6iiii")  # independent of the module's own struct


def header(ptype, size, sta=b"XX.TEST", cha=b"Z", pt=(2024, 1, 0, 0, 0, 0),
           corr=0, tq=100):
    return HDR.pack(ptype, sta, cha, *pt, corr, tq, size)


def raw_packet(nsamples, ptype=8, first=0, **kw):
    return header(ptype, nsamples, **kw) + np.arange(
        first, first + nsamples, dtype="<i4").tobytes()


def mseed_packet(size=512, fill=b"R"):
    return header(13, size, cha=b"", pt=(0,) * 6, tq=0) + fill * size


def log_packet(text):
    return header(12, len(text), cha=b"") + text


def case_bytes(case):
    with open(os.path.join(GOLDEN, case, "input.plugin"), "rb") as f:
        return f.read()


def as_tuple(p):
    """Everything a packet carries, comparable with ==."""
    return (int(p.type), p.station, p.channel, tuple(p.ptime), p.usec_correction,
            p.timing_quality, p.data_size, p.samples.tobytes(), bytes(p.payload))


def feed_in_pieces(data, sizes):
    parser = PluginStreamParser()
    out = []
    pos = 0
    for n in sizes:
        out.extend(parser.feed(data[pos:pos + n]))
        pos += n
    out.extend(parser.feed(data[pos:]))
    assert parser.error is None
    assert parser.buffered == 0
    return out


# -- golden inputs ------------------------------------------------------------

@needs_golden
@pytest.mark.parametrize("case", CASES)
def test_golden_packet_counts_match_summary(case):
    with open(os.path.join(GOLDEN, case, "input_summary.json")) as f:
        summary = json.load(f)
    packets = list(iter_plugin_file(os.path.join(GOLDEN, case, "input.plugin")))
    counts = Counter(int(p.type) for p in packets)
    expected = {int(k): v for k, v in summary["packets"].items()}
    assert {t: counts.get(t, 0) for t in expected} == expected
    assert sum(counts.values()) == sum(expected.values())
    assert {p.station for p in packets} == {summary["station"]}
    if "samples_per_channel" in summary:
        for cha, (lo, hi) in summary["minmax"].items():
            s = np.concatenate([p.samples for p in packets if p.channel == cha])
            assert len(s) == summary["samples_per_channel"]
            assert (s.min(), s.max()) == (lo, hi)


@needs_golden
@pytest.mark.parametrize("case", ["highrate_4000", "mseed_passthrough"])
def test_golden_matches_reference_parser(case):
    import golden_common
    data = case_bytes(case)
    ours = PluginStreamParser().feed(data)
    theirs = list(golden_common.parse_plugin_stream(data))
    assert len(ours) == len(theirs)
    for p, (ptype, sta, cha, pt, corr, tq, size, payload) in zip(ours, theirs):
        assert (int(p.type), p.station, p.channel, tuple(p.ptime),
                p.usec_correction, p.timing_quality, p.data_size) == \
            (ptype, sta, cha, tuple(pt), corr, tq, size)
        if ptype in (8, 9):
            assert p.samples.tobytes() == payload
        else:
            assert bytes(p.payload) == payload


@needs_golden
def test_golden_to_bytes_reproduces_stream():
    data = case_bytes("mseed_passthrough")
    packets = PluginStreamParser().feed(data)
    assert b"".join(p.to_bytes() for p in packets) == data


@needs_golden
def test_random_splits_equal_one_shot():
    data = case_bytes("highrate_4000")
    one_shot = [as_tuple(p) for p in PluginStreamParser().feed(data)]
    rng = random.Random(20240229)
    # 1-byte feeds over a prefix of several packets, then random chunk sizes.
    sizes = [1] * 10000
    total = sum(sizes)
    while total < len(data):
        n = rng.choice([rng.randint(1, 70), rng.randint(1, 9000), rng.randint(1, 200000)])
        sizes.append(n)
        total += n
    pieces = [as_tuple(p) for p in feed_in_pieces(data, sizes)]
    assert pieces == one_shot


@needs_golden
def test_random_splits_mseed_case_byte_by_byte():
    data = case_bytes("mseed_passthrough")
    one_shot = [as_tuple(p) for p in PluginStreamParser().feed(data)]
    assert [as_tuple(p) for p in feed_in_pieces(data, [1] * len(data))] == one_shot
    rng = random.Random(13)
    sizes = [rng.randint(1, 700) for _ in range(200)]
    assert [as_tuple(p) for p in feed_in_pieces(data, sizes)] == one_shot


@needs_golden
def test_iter_plugin_file_small_chunks_equal_one_shot():
    path = os.path.join(GOLDEN, "mseed_passthrough", "input.plugin")
    a = [as_tuple(p) for p in iter_plugin_file(path, chunk_size=333)]
    b = [as_tuple(p) for p in PluginStreamParser().feed(case_bytes("mseed_passthrough"))]
    assert a == b


# -- packet contents ------------------------------------------------------------

def test_packet_fields_and_payloads():
    data = (raw_packet(3, ptype=8, first=-1, corr=-250, tq=-1, pt=(2023, 365, 23, 59, 60, 5))
            + raw_packet(2, ptype=9, first=7, pt=(0,) * 6, corr=0, tq=0)
            + header(10, 40, corr=12, tq=80, pt=(0,) * 6)
            + header(11, 0, pt=(0,) * 6, tq=0)
            + log_packet(b"hello\r\n")
            + mseed_packet())
    pkts = PluginStreamParser().feed(data)
    assert [p.type for p in pkts] == [RAW_DATA_TIME, RAW_DATA, RAW_DATA_GAP,
                                      RAW_DATA_FLUSH, LOG, MSEED]
    assert isinstance(pkts[0].type, PluginPacketType)
    p = pkts[0]
    assert (p.station, p.channel, p.ptime) == ("XX.TEST", "Z", (2023, 365, 23, 59, 60, 5))
    assert (p.usec_correction, p.timing_quality, p.data_size) == (-250, -1, 3)
    assert p.samples.dtype == np.int32 and p.samples.tolist() == [-1, 0, 1]
    assert pkts[1].samples.tolist() == [7, 8]
    assert pkts[2].data_size == 40 and pkts[2].samples.size == 0
    assert (pkts[2].usec_correction, pkts[2].timing_quality) == (12, 80)
    assert pkts[4].payload == b"hello\r\n" and pkts[4].channel == ""
    assert pkts[5].payload == b"R" * 512


def test_samples_are_readonly_views_immune_to_caller_buffer_changes():
    buf = bytearray(raw_packet(4, first=100))
    (p,) = PluginStreamParser().feed(buf)
    buf[HEADER_SIZE:HEADER_SIZE + 4] = b"\xff\xff\xff\xff"
    assert p.samples.tolist() == [100, 101, 102, 103]
    with pytest.raises(ValueError):
        p.samples[0] = 1


def test_station_and_channel_c_string_semantics():
    # A 10-char key has no NUL; an embedded NUL ends the name like in C.
    data = header(11, 0, sta=b"ABCDEFGHIJ", cha=b"HH\0junk") + header(11, 0, sta=b"", cha=b"")
    p, q = PluginStreamParser().feed(data)
    assert (p.station, p.channel) == ("ABCDEFGHIJ", "HH")
    assert (q.station, q.channel) == ("", "")


def test_negative_gap_size_is_accepted_like_seiscomp():
    (p,) = PluginStreamParser().feed(header(10, -5))
    assert p.type == RAW_DATA_GAP and p.data_size == -5


def test_limits_exactly_at_4000_bytes_are_accepted():
    data = raw_packet(1000) + log_packet(b"x" * 4000) + raw_packet(0)
    pkts = PluginStreamParser().feed(data)
    assert [p.data_size for p in pkts] == [1000, 4000, 0]


# -- errors ----------------------------------------------------------------------

@pytest.mark.parametrize("bad, message, intact", [
    (header(7, 0), "invalid data type (7)", True),
    (header(14, 0), "invalid data type (14)", True),
    (raw_packet(1001), "invalid data size (1001)", False),
    (header(9, -1), "invalid data size (-1)", False),
    (log_packet(b"y" * 4001), "invalid data size (4001)", False),
    (mseed_packet(511), "unsupported Mini-SEED packet size (511 instead of 512)", True),
    (mseed_packet(0), "unsupported Mini-SEED packet size (0 instead of 512)", True),
    # Above 4000 bytes the size check comes first, as in SeisComP.
    (mseed_packet(4096), "invalid data size (4096)", False),
])
def test_bad_packet_keeps_earlier_packets_then_parser_is_dead(bad, message, intact):
    good = raw_packet(10) + log_packet(b"before\r\n")
    parser = PluginStreamParser()
    pkts = parser.feed(good + bad + raw_packet(5))
    assert [p.type for p in pkts] == [RAW_DATA_TIME, LOG]
    err = parser.error
    assert isinstance(err, PluginStreamError) and isinstance(err, PluginProtocolError)
    assert err.reason == message and message in str(err)
    assert err.offset == len(good)
    assert err.framing_intact is intact
    with pytest.raises(PluginStreamError) as excinfo:
        parser.feed(raw_packet(1))
    assert excinfo.value is err


def test_size_error_is_raised_when_header_completes_without_payload():
    parser = PluginStreamParser()
    data = raw_packet(2) + header(8, 5000)
    for i in range(len(data)):
        parser.feed(data[i:i + 1])
        if parser.error:
            break
    assert i == len(data) - 1          # detected on the last header byte
    assert parser.error.reason == "invalid data size (5000)"


def test_error_inside_a_split_packet_keeps_packets_from_same_feed():
    parser = PluginStreamParser()
    data = raw_packet(3) + mseed_packet(300) + raw_packet(1)
    first = parser.feed(data[:HEADER_SIZE + 12 + 30])
    assert len(first) == 1 and parser.error is None
    assert parser.feed(data[HEADER_SIZE + 12 + 30:]) == []
    assert parser.error.reason.startswith("unsupported Mini-SEED packet size (300")
    assert parser.error.offset == HEADER_SIZE + 12


def test_resume_after_intact_error_continues_behind_bad_packet():
    parser = PluginStreamParser()
    data = (raw_packet(1) + header(99, 0) + raw_packet(2, ptype=9)
            + mseed_packet(511) + header(11, 0))
    pkts = parser.feed(data)
    assert len(pkts) == 1 and parser.error.reason == "invalid data type (99)"
    pkts = parser.resume()
    assert [p.type for p in pkts] == [RAW_DATA]
    assert parser.error.reason.startswith("unsupported Mini-SEED")
    assert [p.type for p in parser.resume()] == [RAW_DATA_FLUSH]
    assert parser.error is None
    assert parser.offset == len(data)


def test_resume_after_split_intact_error_and_more_data():
    parser = PluginStreamParser()
    data = mseed_packet(100) + raw_packet(4)
    assert parser.feed(data[:50]) == []
    assert parser.feed(data[50:170]) == []
    assert parser.error is not None
    assert parser.resume() == []
    (p,) = parser.feed(data[170:])
    assert p.samples.tolist() == [0, 1, 2, 3]


def test_resume_after_size_error_raises_and_reset_revives():
    parser = PluginStreamParser()
    parser.feed(raw_packet(2000))
    with pytest.raises(PluginStreamError, match="invalid data size"):
        parser.resume()
    parser.reset()
    assert parser.error is None and parser.offset == 0
    assert len(parser.feed(raw_packet(2))) == 1


def test_iter_plugin_file_yields_good_packets_then_raises(tmp_path):
    path = tmp_path / "bad.plugin"
    path.write_bytes(raw_packet(3) + raw_packet(2, ptype=9) + header(3, 0))
    seen = []
    with pytest.raises(PluginProtocolError, match="invalid data type"):
        for p in iter_plugin_file(str(path), chunk_size=7):
            seen.append(p.type)
    assert seen == [RAW_DATA_TIME, RAW_DATA]


def test_iter_plugin_file_truncated_tail(tmp_path):
    path = tmp_path / "cut.plugin"
    path.write_bytes(raw_packet(3) + raw_packet(2)[:-1])
    with pytest.raises(PluginProtocolError, match="truncated packet"):
        list(iter_plugin_file(str(path)))
    assert len(list(iter_plugin_file(str(path), allow_truncated=True))) == 1


def test_buffered_and_offset_track_partial_packet():
    parser = PluginStreamParser()
    data = raw_packet(5) + raw_packet(5)
    parser.feed(data[:100])
    assert parser.offset == HEADER_SIZE + 20 and parser.buffered == 100 - 80
    parser.feed(data[100:])
    assert parser.offset == len(data) and parser.buffered == 0


# -- time conversion ---------------------------------------------------------------

def _ns(dt):
    delta = dt - datetime.datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 10 ** 9 + delta.microseconds * 1000


@pytest.mark.parametrize("dt", [
    datetime.datetime(1970, 1, 1),
    datetime.datetime(2023, 12, 31, 23, 10, 0),
    datetime.datetime(2024, 2, 29, 12, 0, 0, 123456),
    datetime.datetime(2000, 12, 31, 23, 59, 59, 999999),
    datetime.datetime(1900, 3, 1, 1, 2, 3, 4),
    datetime.datetime(2100, 1, 1),
])
def test_ptime_to_ns_matches_datetime(dt):
    pt = (dt.year, dt.timetuple().tm_yday, dt.hour, dt.minute, dt.second, dt.microsecond)
    assert ptime_to_ns(pt) == _ns(dt)


def test_ptime_to_ns_carries_leap_second_and_overflowing_fields():
    next_year = _ns(datetime.datetime(2017, 1, 1))
    assert ptime_to_ns((2016, 366, 23, 59, 60, 0)) == next_year
    assert ptime_to_ns((2016, 366, 23, 59, 59, 1500000)) == next_year + 500000 * 1000
    assert ptime_to_ns((2016, 366, 23, 59, 59, -1)) == next_year - 10 ** 9 - 1000


def test_packet_time_ns():
    (p,) = PluginStreamParser().feed(raw_packet(1, pt=(2024, 60, 12, 0, 0, 123456)))
    assert p.time_ns() == _ns(datetime.datetime(2024, 2, 29, 12, 0, 0, 123456))
