"""Tests of seedlink_fast.plugin (the plugin-side sending API)."""

import datetime
import fcntl
import io
import os
import struct
import sys
import threading
import time

import numpy as np
import pytest

from seedlink_fast import plugin
from seedlink_fast.plugin import PluginWriter
from seedlink_fast.plugin_stream import (
    LOG, MSEED, RAW_DATA, RAW_DATA_FLUSH, RAW_DATA_GAP, RAW_DATA_TIME,
    PluginStreamParser)

GOLDEN = "/work/shared/reference/golden"
needs_golden = pytest.mark.skipif(not os.path.isdir(GOLDEN),
                                  reason="golden vectors not available")
if os.path.isdir(GOLDEN) and GOLDEN not in sys.path:
    sys.path.insert(0, GOLDEN)

PT = (2024, 60, 12, 0, 0, 123456)


def written(fn):
    """Call fn(writer) on a BytesIO writer; return (result, parsed packets, raw bytes)."""
    buf = io.BytesIO()
    result = fn(PluginWriter(buf))
    data = buf.getvalue()
    parser = PluginStreamParser()
    packets = parser.feed(data)
    assert parser.error is None and parser.buffered == 0
    return result, packets, data


# -- byte-exact against golden_common's writer (the oracle) ----------------------

@needs_golden
def test_bytes_equal_golden_common_writer():
    import golden_common as g
    us = g.us_of(2024, 2, 29, 12, 0, 0, 123456)
    pt = g.ptime(us)
    rec = bytes(range(256)) * 2
    ref = g.PluginStream()
    ref.raw_time("XX.FAST", "Z", us, np.arange(1000) - 500, corr=-7, tq=90)
    ref.raw("XX.FAST", "Z", [1, 2, 3])
    ref.gap("XX.FAST", "Z", 250, corr=3, tq=40)
    ref.flush("XX.FAST", "Z")
    ref.log("XX.FAST", us, "status ok\r\n")
    ref.mseed("XX.FAST", rec)
    ref.mseed("XX.FAST", rec, cha="HHZ")

    buf = io.BytesIO()
    w = PluginWriter(buf)
    w.send_raw3("XX.FAST", "Z", pt, -7, 90, np.arange(1000) - 500)
    w.send_raw3("XX.FAST", "Z", None, 0, 0, [1, 2, 3])
    w.send_raw3("XX.FAST", "Z", None, 3, 40, None, 250)
    w.send_flush3("XX.FAST", "Z")
    w.send_log3("XX.FAST", pt, "status %s", "ok")
    w.send_mseed("XX.FAST", rec)
    w.send_mseed2("XX.FAST", "HHZ", 0, rec)
    assert buf.getvalue() == ref.data()


@needs_golden
@pytest.mark.parametrize("case", ["stream100_steim2", "highrate_4000", "mseed_passthrough"])
def test_reencoding_golden_input_with_writer_is_byte_identical(case):
    with open(os.path.join(GOLDEN, case, "input.plugin"), "rb") as f:
        data = f.read()
    buf = io.BytesIO()
    w = PluginWriter(buf)
    for p in PluginStreamParser().feed(data):
        if p.type == RAW_DATA_TIME:
            w.send_raw3(p.station, p.channel, p.ptime, p.usec_correction,
                        p.timing_quality, p.samples)
        elif p.type == RAW_DATA:
            w.send_raw3(p.station, p.channel, None, 0, 0, p.samples)
        elif p.type == RAW_DATA_FLUSH:
            w.send_flush3(p.station, p.channel)
        elif p.type == LOG:
            w.send_log3(p.station, p.ptime, p.payload)
        elif p.type == MSEED:
            w.send_mseed2(p.station, p.channel, p.timing_quality, p.payload)
        else:
            raise AssertionError("unexpected packet type %r" % p.type)
    assert buf.getvalue() == data


# -- send_raw3 ------------------------------------------------------------------

def test_chunking_at_1000_samples():
    samples = np.arange(2500, dtype=np.int32) * 3 - 1000
    result, pkts, _ = written(lambda w: w.send_raw3("GE.APE", "BHZ", PT, 250, 80, samples))
    assert result == 4 * 2500
    assert [(p.type, p.data_size) for p in pkts] == [
        (RAW_DATA_TIME, 1000), (RAW_DATA, 1000), (RAW_DATA, 500)]
    first, rest = pkts[0], pkts[1:]
    assert (first.ptime, first.usec_correction, first.timing_quality) == (PT, 250, 80)
    for p in rest:
        assert (p.ptime, p.usec_correction, p.timing_quality) == ((0,) * 6, 0, 0)
    assert np.array_equal(np.concatenate([p.samples for p in pkts]), samples)
    assert all((p.station, p.channel) == ("GE.APE", "BHZ") for p in pkts)


@pytest.mark.parametrize("n, sizes", [(1, [1]), (999, [999]), (1000, [1000]),
                                      (1001, [1000, 1]), (3000, [1000, 1000, 1000])])
def test_chunk_boundaries(n, sizes):
    _, pkts, _ = written(lambda w: w.send_raw3("S", "C", PT, 0, 100, np.ones(n, np.int32)))
    assert [p.data_size for p in pkts] == sizes
    assert [p.type for p in pkts] == [RAW_DATA_TIME] + [RAW_DATA] * (len(sizes) - 1)


def test_no_time_gives_only_type_9():
    result, pkts, _ = written(lambda w: w.send_raw3("S", "C", None, 5, 5, range(1500)))
    assert result == 6000
    assert [p.type for p in pkts] == [RAW_DATA, RAW_DATA]
    assert all(p.usec_correction == 0 and p.timing_quality == 0 for p in pkts)


def test_n_selects_a_prefix_of_the_data():
    _, pkts, _ = written(lambda w: w.send_raw3("S", "C", PT, 0, 0, [5, 6, 7, 8], 2))
    assert [p.samples.tolist() for p in pkts] == [[5, 6]]
    with pytest.raises(ValueError):
        PluginWriter(io.BytesIO()).send_raw3("S", "C", PT, 0, 0, [1, 2], 3)


@pytest.mark.parametrize("data", [None, [], [1, 2, 3]])
def test_zero_samples_with_time_is_a_time_mark(data):
    result, pkts, _ = written(lambda w: w.send_raw3("S", "C", PT, -40, 55, data, 0))
    assert result == 0
    (p,) = pkts
    assert (p.type, p.data_size, p.ptime, p.usec_correction, p.timing_quality) == \
        (RAW_DATA_TIME, 0, PT, -40, 55)


def test_zero_samples_without_time_sends_nothing():
    result, pkts, data = written(lambda w: w.send_raw3("S", "C", None, 0, 0, []))
    assert (result, pkts, data) == (0, [], b"")


def test_gap_packet():
    result, pkts, data = written(lambda w: w.send_raw3("S", "C", PT, 12, 34, None, 77))
    assert result == 0 and len(data) == 60
    (p,) = pkts
    assert (p.type, p.data_size, p.ptime, p.usec_correction, p.timing_quality) == \
        (RAW_DATA_GAP, 77, (0,) * 6, 12, 34)


def test_gap_needs_a_count():
    with pytest.raises(ValueError):
        PluginWriter(io.BytesIO()).send_raw3("S", "C", None, 0, 0, None)


def test_datetime_ptime_naive_and_aware():
    aware = datetime.datetime(2024, 2, 29, 14, 0, 0, 123456,
                              tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    naive = datetime.datetime(2024, 2, 29, 12, 0, 0, 123456)
    for dt in (aware, naive):
        _, (p,), _ = written(lambda w: w.send_raw3("S", "C", dt, 0, 0, [1]))
        assert p.ptime == PT


def test_sample_type_checks():
    w = PluginWriter(io.BytesIO())
    with pytest.raises(TypeError):
        w.send_raw3("S", "C", PT, 0, 0, [1.5, 2.0])
    with pytest.raises(ValueError):
        w.send_raw3("S", "C", PT, 0, 0, np.array([2 ** 31], dtype=np.int64))
    _, (p,), _ = written(lambda w: w.send_raw3("S", "C", PT, 0, 0,
                                               np.array([-2 ** 31, 2 ** 31 - 1], np.int64)))
    assert p.samples.tolist() == [-2 ** 31, 2 ** 31 - 1]


def test_long_names_are_truncated_like_strncpy():
    _, (p,), data = written(lambda w: w.send_flush3("ABCDEFGHIJKLMN", "CHANNEL_NAME_X"))
    assert (p.station, p.channel) == ("ABCDEFGHIJ", "CHANNEL_NA")
    assert data[4:24] == b"ABCDEFGHIJCHANNEL_NA"   # no NUL terminators
    _, (q,), data = written(lambda w: w.send_flush3("GE.APE", b"Z"))
    assert data[4:14] == b"GE.APE\0\0\0\0" and q.channel == "Z"


# -- send_raw_depoch -------------------------------------------------------------

def test_send_raw_depoch_truncates_fraction():
    # 1700000000.1 is stored as 1700000000.0999999046..., so C gets 99999 µs.
    _, (p,), _ = written(lambda w: w.send_raw_depoch("S", "C", 1700000000.1, 0, 100, [1]))
    assert p.ptime == (2023, 318, 22, 13, 20, 99999)
    _, (q,), _ = written(lambda w: w.send_raw_depoch("S", "C", 1709208000.5, 0, 100, [1]))
    assert q.ptime == (2024, 60, 12, 0, 0, 500000)
    _, (r,), _ = written(lambda w: w.send_raw_depoch("S", "C", 1700000000.000001, 0, 100, [1]))
    assert r.ptime[5] == 0   # 0.95 µs after the second in double: truncated, not rounded


# -- flush, mseed, log --------------------------------------------------------------

def test_flush():
    result, (p,), data = written(lambda w: w.send_flush3("GE.APE", "HHZ"))
    assert result == 0 and len(data) == 60
    assert (p.type, p.data_size, p.ptime, p.usec_correction, p.timing_quality) == \
        (RAW_DATA_FLUSH, 0, (0,) * 6, 0, 0)


def test_mseed_only_512_bytes():
    rec = bytes(range(256)) * 2
    result, (p,), _ = written(lambda w: w.send_mseed("GE.APE", rec))
    assert result == 512
    assert (p.type, p.channel, p.timing_quality, p.payload) == (MSEED, "", 0, rec)
    for bad in (rec[:511], rec + b"x"):
        result, pkts, data = written(lambda w: w.send_mseed("GE.APE", bad))
        assert (result, data) == (0, b"")


def test_mseed2_channel_and_sequence():
    rec = b"\x01" * 512
    result, (p,), _ = written(lambda w: w.send_mseed2("GE.APE", "HHZ", 4711, rec))
    assert result == 512 and (p.channel, p.timing_quality) == ("HHZ", 4711)
    assert written(lambda w: w.send_mseed2("GE.APE", "HHZ", 1, rec[:100]))[2] == b""


def test_log_formatting_and_crlf():
    result, (p,), _ = written(lambda w: w.send_log3("GE.APE", PT, "gps %s, %d sats\n\r\n", "ok", 7))
    assert p.payload == b"gps ok, 7 sats\r\n" and result == len(p.payload)
    assert (p.type, p.ptime, p.channel, p.usec_correction, p.timing_quality) == \
        (LOG, PT, "", 0, 0)
    _, (q,), _ = written(lambda w: w.send_log3("GE.APE", PT, "100% plain"))
    assert q.payload == b"100% plain\r\n"
    _, (r,), _ = written(lambda w: w.send_log3("GE.APE", PT, "\r\n\n"))
    assert r.payload == b"\r\n"


def test_log_clipped_to_445_bytes_before_crlf():
    _, (p,), _ = written(lambda w: w.send_log3("S", PT, "%s", "a" * 1000))
    assert p.data_size == 447 and p.payload == b"a" * 445 + b"\r\n"
    # CR/LF stripping happens after clipping: a newline at byte 445 is cut first.
    _, (q,), _ = written(lambda w: w.send_log3("S", PT, "b" * 444 + "\n\n\n"))
    assert q.payload == b"b" * 444 + b"\r\n"
    _, (r,), _ = written(lambda w: w.send_log3("S", PT, "c" * 445))
    assert r.payload == b"c" * 445 + b"\r\n"


def test_log_without_time_sends_nothing():
    assert written(lambda w: w.send_log3("S", None, "x")) == (0, [], b"")


# -- the transport ------------------------------------------------------------------

class Trickle(io.RawIOBase):
    """A file object that accepts at most 7 bytes per write()."""

    def __init__(self):
        self.data = bytearray()
        self.calls = 0

    def writable(self):
        return True

    def write(self, b):
        self.calls += 1
        chunk = bytes(b[:7])
        self.data += chunk
        return len(chunk)


def test_partial_writes_are_completed():
    sink = Trickle()
    PluginWriter(sink).send_raw3("S", "C", PT, 0, 0, np.arange(1200))
    pkts = PluginStreamParser().feed(bytes(sink.data))
    assert [p.data_size for p in pkts] == [1000, 200]
    assert sink.calls > 600


def _drain(fd, out):
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        out.append(chunk)
        time.sleep(0.0005)   # a slow reader, so the pipe fills up


@pytest.mark.parametrize("nonblocking", [False, True])
def test_real_pipe_with_explicit_fd(nonblocking, monkeypatch):
    waits = []
    real_select = plugin.select.select

    def counting_select(*args):
        waits.append(1)
        return real_select(*args)

    monkeypatch.setattr(plugin.select, "select", counting_select)
    rfd, wfd = os.pipe()
    try:
        if nonblocking:
            flags = fcntl.fcntl(wfd, fcntl.F_GETFL)
            fcntl.fcntl(wfd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        chunks = []
        reader = threading.Thread(target=_drain, args=(rfd, chunks))
        reader.start()
        samples = np.arange(60000, dtype=np.int32)   # 240 kB, far above the pipe size
        w = PluginWriter(wfd)
        assert w.send_raw3("GE.APE", "Z", PT, 0, 100, samples) == 240000
        w.send_log3("GE.APE", PT, "done")
        os.close(wfd)
        wfd = -1
        reader.join(10)
        assert not reader.is_alive()
        pkts = PluginStreamParser().feed(b"".join(chunks))
        assert len(pkts) == 61 and pkts[-1].payload == b"done\r\n"
        assert np.array_equal(np.concatenate([p.samples for p in pkts[:-1]]), samples)
        # A non-blocking fd must be waited on, not given up on or spun on.
        assert bool(waits) == nonblocking
    finally:
        if wfd >= 0:
            os.close(wfd)
        os.close(rfd)


def test_module_functions_write_to_fd_63():
    try:
        os.fstat(plugin.PLUGIN_FD)
        pytest.skip("fd 63 is in use in this process")
    except OSError:
        pass
    rfd, wfd = os.pipe()
    if plugin.PLUGIN_FD in (rfd, wfd):
        # earlier tests of this process may hold fds up to 62: move the pipe
        moved = os.dup(rfd), os.dup(wfd)
        os.close(rfd)
        os.close(wfd)
        rfd, wfd = moved
    try:
        os.dup2(wfd, plugin.PLUGIN_FD)
        rec = b"M" * 512
        assert plugin.send_raw3("S", "Z", PT, 0, 100, [1, 2, 3]) == 12
        assert plugin.send_raw_depoch("S", "Z", 1.5, 0, 100, [4]) == 4
        assert plugin.send_flush3("S", "Z") == 0
        assert plugin.send_mseed("S", rec) == 512
        assert plugin.send_mseed2("S", "HHZ", 9, rec) == 512
        assert plugin.send_log3("S", PT, "n=%d", 3) == 5
        os.close(plugin.PLUGIN_FD)
        os.close(wfd)
        wfd = -1
        data = b""
        while True:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        for fd in (plugin.PLUGIN_FD, wfd):
            try:
                if fd >= 0:
                    os.close(fd)
            except OSError:
                pass
        os.close(rfd)
    pkts = PluginStreamParser().feed(data)
    assert [p.type for p in pkts] == [RAW_DATA_TIME, RAW_DATA_TIME, RAW_DATA_FLUSH,
                                      MSEED, MSEED, LOG]
    assert pkts[1].ptime == (1970, 1, 0, 0, 1, 500000)
    assert pkts[4].timing_quality == 9 and pkts[5].payload == b"n=3\r\n"


def test_header_layout_is_native_60_bytes():
    _, _, data = written(lambda w: w.send_raw3("AB", "Z", (1, 2, 3, 4, 5, 6), 7, 8, [9]))
    fields = struct.unpack("=i10s10s6iiii", data[:60])
    assert fields == (8, b"AB" + b"\0" * 8, b"Z" + b"\0" * 9, 1, 2, 3, 4, 5, 6, 7, 8, 1)
    assert data[60:] == struct.pack("=i", 9)
