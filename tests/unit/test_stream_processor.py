"""The stream processor: golden replays, chunk invariance, FIR trees against
the numpy model, timing, gap policy, and bad input."""
import collections
import io
import logging
import pathlib

import numpy as np
import pytest

from conftest import SHARED, golden_case
from reference.fir_ref import fir_outputs
from seedlink_fast import cli, mseed
from seedlink_fast.errors import PluginProtocolError
from seedlink_fast.firfile import default_filters_path, load_filters
from seedlink_fast.inifile import parse_ini
from seedlink_fast.plugin import PluginWriter
from seedlink_fast.streamproc import StreamProcessor
from seedlink_fast.streamsxml import parse_streams

FILTERS = load_filters(default_filters_path())
T0 = (2024, 60, 12, 0, 0, 0)                       # 2024-02-29T12:00:00
T0_NS = 1709208000 * 10**9


# -- helpers ------------------------------------------------------------------

def golden_ini(case_dir, tmp_path):
    """The case's seedlink.ini with its placeholders filled in."""
    text = (case_dir / "seedlink.ini").read_text()
    text = (text.replace("@FILTERS@", str(SHARED / "reference" / "seiscomp-filters.fir"))
                .replace("@STREAMS@", str(case_dir / "streams.xml"))
                .replace("@FILEBASE@", str(tmp_path / "buffer"))
                .replace("@PORT@", "18000").replace("@PLUGIN@", "true"))
    path = tmp_path / "seedlink.ini"
    path.write_text(text)
    return path


def expected_by_sequence(case_dir):
    """{SeedLink sequence: record} of the daemon's capture (one station per case)."""
    raw = (case_dir / "expected.sl").read_bytes()
    return {int(raw[i + 2:i + 8], 16): raw[i + 8:i + 520] for i in range(0, len(raw), 520)}


def split_records(data):
    return [data[i:i + 512] for i in range(0, len(data), 512)]


INI = """[seedlink]
network = XX
encoding = {encoding}
proc_gap_warn = {warn}
proc_gap_flush = {flush}
proc_gap_reset = {reset}
station XX.TEST name = TEST network = XX proc = test
"""


def processor(tree_xml, rate="100", encoding="steim2", warn=10, flush=100000, reset=1000000,
              **kw):
    streams = parse_streams(
        '<streams><proc name="test"><tree>'
        '<input name="Z" channel="Z" location="00" rate="%s"/>%s</tree></proc></streams>'
        % (rate, tree_xml), "test.xml", FILTERS)
    config = parse_ini(INI.format(encoding=encoding, warn=warn, flush=flush, reset=reset),
                       "test.ini")
    return StreamProcessor(config, filters=FILTERS, streams=streams, **kw)


def packets(samples, chunk=100, t0=T0, corr=0, tq=100, time_every=None):
    """Plugin bytes for samples of channel Z, the first packet timed."""
    out = io.BytesIO()
    w = PluginWriter(out)
    for i in range(0, len(samples), chunk):
        timed = i == 0 or (time_every and i % time_every == 0)
        w.send_raw3("XX.TEST", "Z", _ptime_after(t0, i, 100) if timed else None, corr, tq,
                    samples[i:i + chunk])
    return out.getvalue()


def _ptime_after(t0, n, rate):
    year, yday, hh, mm, ss, us = t0
    total = ((hh * 60 + mm) * 60 + ss) * 10**6 + us + n * 10**6 // rate
    sec, us = divmod(total, 10**6)
    return (year, yday, sec // 3600, sec // 60 % 60, sec % 60, us)


def by_channel(records):
    out = collections.defaultdict(list)
    for rec in mseed.unpack(b"".join(records)):
        out[rec.channel].append(rec)
    return out


def signal(n, seed=1):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(0, 300, n)).astype(np.int32)


# -- golden replays ----------------------------------------------------------------

@pytest.mark.parametrize("case", ["stream100_steim2", "highrate_4000", "mseed_passthrough"])
def test_replay_matches_seiscomp_byte_for_byte(case, tmp_path):
    case_dir = golden_case(case)
    ini = golden_ini(case_dir, tmp_path)
    out = tmp_path / "out"
    assert cli.main(["replay", "-f", str(ini), str(case_dir / "input.plugin"),
                     "-o", str(out)]) == 0
    wanted = expected_by_sequence(case_dir)
    (path,) = out.glob("*.mseed")
    ours = split_records(path.read_bytes())
    # every record the daemon delivered is ours, with the same sequence number
    for seq, rec in wanted.items():
        assert ours[seq] == rec, "%s record %d differs" % (path.stem, seq)
    # the daemon stores two undeliverable records in mseed_passthrough
    assert len(ours) - len(wanted) == (2 if case == "mseed_passthrough" else 0)


def test_replay_is_independent_of_read_sizes(tmp_path):
    case_dir = golden_case("highrate_4000")
    ini = golden_ini(case_dir, tmp_path)
    data = (case_dir / "input.plugin").read_bytes()
    config = parse_ini(ini.read_text(), str(ini))
    one_shot = StreamProcessor(config)
    one_shot.feed(data)
    expected = one_shot.drain()
    rng = np.random.default_rng(3)
    for _ in range(2):
        chunked = StreamProcessor(config)
        pos = 0
        while pos < len(data):
            step = int(rng.integers(1, 9000))
            chunked.feed(data[pos:pos + step])
            pos += step
        assert chunked.drain() == expected


def test_tiny_reads_equal_one_shot(tmp_path):
    case_dir = golden_case("stream100_steim2")
    ini = golden_ini(case_dir, tmp_path)
    data = (case_dir / "input.plugin").read_bytes()[:1_000_000]
    config = parse_ini(ini.read_text(), str(ini))
    a, b = StreamProcessor(config), StreamProcessor(config)
    a.feed(data)
    rng = np.random.default_rng(5)
    pos = 0
    while pos < len(data):
        step = int(rng.integers(1, 130))
        b.feed(data[pos:pos + step])
        pos += step
    a.shutdown()
    b.shutdown()
    assert a.drain() == b.drain()


# -- FIR trees against the numpy model ---------------------------------------------

TREE = ('<node stream="HH"/>'
        '<node filter="FS2D5" stream="BH"><node filter="F96C"><node filter="ULP" stream="LH"/>'
        '</node></node><node filter="F96CM" stream="XM"><node filter="FS2D5M" stream="XL"/></node>')


def test_tree_outputs_equal_numpy_model():
    x = signal(60000)
    sp = processor(TREE)
    sp.feed(packets(x, chunk=1000))
    sp.shutdown()
    got = by_channel(sp.drain()["XX.TEST"])

    def model(name, data):
        f = FILTERS[name]
        return fir_outputs(data, f.taps, f.decimation, f.gain)

    bh = model("FS2D5", x)
    lh = model("ULP", model("F96C", bh))
    xm = model("F96CM", x)
    xl = model("FS2D5M", xm)
    for chan, values in [("HHZ", x), ("BHZ", bh), ("LHZ", lh), ("XMZ", xm), ("XLZ", xl)]:
        decoded = np.concatenate([r.samples for r in got[chan]])
        np.testing.assert_array_equal(decoded, np.trunc(values).astype(np.int32), err_msg=chan)


def test_first_output_times_follow_filter_phase():
    x = signal(20000)
    sp = processor(TREE)
    sp.feed(packets(x, chunk=1000))
    sp.shutdown()
    got = by_channel(sp.drain()["XX.TEST"])
    # zero phase: centre of the first window; minimum phase: its oldest sample
    assert got["HHZ"][0].starttime_ns == T0_NS
    assert got["BHZ"][0].starttime_ns == T0_NS + 795 * 10**6          # 79.5 x 10 ms
    assert got["XMZ"][0].starttime_ns == T0_NS
    assert got["XLZ"][0].starttime_ns == T0_NS
    # F96C then ULP: + 47.5 x 50 ms + 199.5 x 100 ms
    assert got["LHZ"][0].starttime_ns == T0_NS + (795 + 2375 + 19950) * 10**6
    for recs in got.values():
        for a, b in zip(recs, recs[1:]):
            span = a.num_samples * 10**9 / a.sample_rate
            assert abs(b.starttime_ns - a.starttime_ns - span) <= 1000    # 1 us floors


def test_steim1_and_corrections_reach_the_records():
    x = signal(3000)
    sp = processor('<node stream="HH"/>', encoding="steim1")
    sp.feed(packets(x, corr=-1234, tq=55))
    sp.shutdown()
    recs = mseed.unpack(b"".join(sp.drain()["XX.TEST"]))
    assert {r.encoding for r in recs} == {10}
    assert {r.timing_quality for r in recs} == {55}
    assert {r.time_correction for r in recs} == {-12}                  # -1234 us -> -12
    np.testing.assert_array_equal(np.concatenate([r.samples for r in recs]), x)
    sp = processor('<node stream="HH"/>')
    sp.feed(packets(x, tq=-1))
    sp.shutdown()
    assert {r.timing_quality for r in mseed.unpack(b"".join(sp.drain()["XX.TEST"]))} == {None}


# -- gaps and time jumps -----------------------------------------------------------

def _jump_input(x, split, jump_us):
    """x[:split] from T0, then x[split:] with its time shifted by jump_us."""
    out = io.BytesIO()
    w = PluginWriter(out)
    w.send_raw3("XX.TEST", "Z", T0, 0, 100, x[:split])
    t = T0_NS + split * 10**7 + jump_us * 1000
    w.send_raw_depoch("XX.TEST", "Z", t / 1e9, 0, 100, x[split:])
    return out.getvalue()


def test_small_time_jump_flushes_but_keeps_filter_history(caplog):
    x = signal(4000)
    sp = processor('<node stream="HH"/><node filter="FS2D5" stream="BH"/>')
    with caplog.at_level(logging.WARNING):
        sp.feed(_jump_input(x, 1000, 500000))            # 0.5 s: flush, no reset
    sp.shutdown()
    assert "time gap 0.5 seconds (detected)" in caplog.text
    got = by_channel(sp.drain()["XX.TEST"])
    # a record ends exactly at the jump, and the next starts at the new time
    ends = [r for r in got["HHZ"] if r.starttime_ns + r.num_samples * 10**7 == T0_NS + 10**10]
    assert ends
    assert any(r.starttime_ns == T0_NS + 10**10 + 5 * 10**8 for r in got["HHZ"])
    # filter history kept: BH equals the model over the whole input
    f = FILTERS["FS2D5"]
    bh = np.trunc(fir_outputs(x, f.taps, f.decimation, f.gain)).astype(np.int32)
    np.testing.assert_array_equal(np.concatenate([r.samples for r in got["BHZ"]]), bh)


def test_large_time_jump_resets_filters():
    x = signal(4000)
    sp = processor('<node filter="FS2D5" stream="BH"/>')
    sp.feed(_jump_input(x, 1000, 2000000))               # 2 s >= proc_gap_reset
    sp.shutdown()
    got = by_channel(sp.drain()["XX.TEST"])["BHZ"]
    f = FILTERS["FS2D5"]
    before = np.trunc(fir_outputs(x[:1000], f.taps, 5, f.gain)).astype(np.int32)
    after = np.trunc(fir_outputs(x[1000:], f.taps, 5, f.gain)).astype(np.int32)
    np.testing.assert_array_equal(np.concatenate([r.samples for r in got]),
                                  np.concatenate([before, after]))
    # the first output after the reset is stamped from the new time
    restart = T0_NS + 10**10 + 2 * 10**9 + 795 * 10**6
    assert any(r.starttime_ns == restart for r in got)


def test_gap_packet_advances_time_and_flushes(caplog):
    x = signal(2000)
    out = io.BytesIO()
    w = PluginWriter(out)
    w.send_raw3("XX.TEST", "Z", T0, 0, 100, x[:1000])
    w.send_raw3("XX.TEST", "Z", None, 0, 100, None, 50)   # 50 missing samples = 0.5 s
    w.send_raw3("XX.TEST", "Z", None, 0, 100, x[1000:])
    sp = processor('<node stream="HH"/>')
    with caplog.at_level(logging.WARNING):
        sp.feed(out.getvalue())
    sp.shutdown()
    assert "(explicit)" in caplog.text
    got = by_channel(sp.drain()["XX.TEST"])["HHZ"]
    assert any(r.starttime_ns == T0_NS + 10**10 + 5 * 10**8 for r in got)
    np.testing.assert_array_equal(np.concatenate([r.samples for r in got]), x)


def test_flush_packet_closes_partial_records():
    x = signal(250)
    out = io.BytesIO()
    w = PluginWriter(out)
    w.send_raw3("XX.TEST", "Z", T0, 0, 100, x)
    w.send_flush3("XX.TEST", "Z")
    sp = processor('<node stream="HH"/>', flush_on_shutdown=False)
    sp.feed(out.getvalue())
    recs = mseed.unpack(b"".join(sp.drain()["XX.TEST"]))
    assert sum(r.num_samples for r in recs) == 250


def test_shutdown_flush_is_optional():
    x = signal(250)
    kept = processor('<node stream="HH"/>')
    lost = processor('<node stream="HH"/>', flush_on_shutdown=False)
    for sp in (kept, lost):
        sp.feed(packets(x))
        sp.shutdown()
    assert sum(r.num_samples for r in mseed.unpack(b"".join(kept.drain()["XX.TEST"]))) == 250
    assert lost.drain() == {}            # SeisComP's behaviour: the partial record is lost


# -- logs, pass-through records, bad input -------------------------------------------

def test_log_and_mseed_packets_are_stored_in_order():
    rec = mseed.pack(np.arange(100, dtype=np.int32), network="XX", station="TEST",
                     location="", channel="HHN", starttime_ns=T0_NS, sample_rate=100)
    out = io.BytesIO()
    w = PluginWriter(out)
    w.send_log3("XX.TEST", (2024, 60, 12, 0, 0, 123456), "hello %s", "world")
    w.send_mseed("XX.TEST", rec)
    sp = processor('<node stream="HH"/>')
    sp.feed(out.getvalue())
    log_rec, stored = sp.drain()["XX.TEST"]
    assert stored == rec
    parsed = mseed.unpack(log_rec)[0]
    assert parsed.channel == "LOG" and parsed.text == b"hello world\r\n"
    assert log_rec[20:30] == bytes([0x07, 0xE8, 0, 60, 12, 0, 0, 0, 0x04, 0xD3])   # .1235


def test_bad_packets_end_the_stream_but_keep_records(tmp_path):
    x = signal(3000)
    good = packets(x, chunk=1000)
    sp = processor('<node stream="HH"/>')
    more = packets(x[:500], t0=_ptime_after(T0, 3000, 100))
    sp.feed(good + more[:30])                           # a partial packet waits
    assert sp.engine.buffered == 30
    bad_type = bytearray(60)
    bad_type[0] = 99
    with pytest.raises(PluginProtocolError, match="invalid data type 99"):
        sp.feed(more[30:] + bytes(bad_type) + more)
    sp.shutdown()
    assert sum(r.num_samples for r in mseed.unpack(b"".join(sp.drain()["XX.TEST"]))) == 3500
    with pytest.raises(PluginProtocolError):            # the stream stays ended
        sp.feed(more)

    for header_size, reason in [(4004, "invalid data size"), (511, "Mini-SEED packet size")]:
        hdr = bytearray(60)
        hdr[0] = 13 if header_size == 511 else 12
        hdr[4:11] = b"XX.TEST"
        hdr[56:60] = header_size.to_bytes(4, "little")
        sp = processor('<node stream="HH"/>')
        with pytest.raises(PluginProtocolError, match=reason):
            sp.feed(good + bytes(hdr) + bytes(header_size))

    # replay writes what came before the error and reports it
    ini = tmp_path / "s.ini"
    streams = tmp_path / "streams.xml"
    streams.write_text('<streams><proc name="test"><tree><input name="Z" channel="Z" '
                       'location="" rate="100"/><node stream="HH"/></tree></proc></streams>')
    ini.write_text(INI.format(encoding="steim2", warn=10, flush=0, reset=0).replace(
        "station", 'streams = "%s"\nstation' % streams))
    data = tmp_path / "in.plugin"
    data.write_bytes(good + bytes(bad_type))
    assert cli.main(["replay", "-f", str(ini), str(data), "-o", str(tmp_path / "o")]) == 1
    recs = mseed.unpack((tmp_path / "o" / "XX.TEST.mseed").read_bytes())
    assert sum(r.num_samples for r in recs) == 3000


def test_unknown_station_and_channel_are_logged_once(caplog):
    out = io.BytesIO()
    w = PluginWriter(out)
    for _ in range(3):
        w.send_raw3("XX.NONE", "Z", T0, 0, 100, np.arange(10))
        w.send_raw3("XX.TEST", "Q", T0, 0, 100, np.arange(10))
    sp = processor('<node stream="HH"/>')
    with caplog.at_level(logging.WARNING):
        sp.feed(out.getvalue())
    assert caplog.text.count("station XX.NONE is not configured") == 1
    assert caplog.text.count("channel Q ignored") == 1
    assert sp.drain() == {}
